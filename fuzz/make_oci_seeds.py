#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the registry targets under corpus/ (run once; the
fuzzers grow the corpora).

oci_layer_extract: layer blobs in pyro's and the reference's layouts (plain tar, gzip, zstd),
and hostile ones: `..` and absolute member names, a symlink and a hard link named like a
selected file, a GNU sparse member, a size header far past the limit, a file where a
directory is expected. oci_manifest: one selector byte (Content-Type, whether an index may be
followed) then an OCI manifest (pyro's artifact), an OCI index (arm64 + amd64), a Docker
manifest list, a Docker v2 manifest, an image config. Needs the `zstd` command.
"""
import gzip, io, json, os, subprocess, tarfile

from seed_tar import tar

# Records of one block: no 10 KiB of zero padding per seed.
tarfile.RECORDSIZE = 512
HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)




def octal(n, width):
    return (b"%0*o" % (width - 1, n)) + b"\0"


def raw_header(name, kind, size_field, extra=b""):
    """A GNU header with a raw size field and optional bytes at offset 345 on (prefix/GNU area)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = octal(0o644, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = size_field
    h[136:148] = octal(0, 12)
    h[156:157] = kind
    h[257:265] = b"ustar  \0"
    h[345:345 + len(extra)] = extra
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(data):
    return data + b"\0" * ((512 - len(data) % 512) % 512)


# A small rootfs: a data block, a zero block (a hole on extraction), a tail.
rootfs = b"\x53\xef" * 2048 + b"\0" * 4096 + b"end"
pyro_layout = tar([("vmlinux", "file", b"Linux version 6.1.0 (fuzz)\n"), ("modules/order", "file", b"virtio_blk.ko\n"),
                   ("modules/virtio_blk.ko", "file", b"\x7fELF" + b"\1" * 60), ("rootfs.ext4", "file", rootfs)])
write("oci_layer_extract", "pyro-plain", pyro_layout)
write("oci_layer_extract", "pyro-gzip", gzip.compress(pyro_layout, mtime=0))
write("oci_layer_extract", "pyro-zstd",
      subprocess.run(["zstd", "-q", "-3", "--check", "-c"], input=pyro_layout, capture_output=True, check=True).stdout)
write("oci_layer_extract", "reference-gzip", gzip.compress(tar([
    ("./", "dir", None), ("./boot/", "dir", None), ("./boot/vmlinux", "file", b"Linux version 6.1\n"),
    ("./images/rootfs.ext4", "file", rootfs[:4100]), ("./README", "file", b"x")]), mtime=0))
write("oci_layer_extract", "traversal", tar([("../vmlinux", "file", b"k"), ("/rootfs.ext4", "file", b"r"),
                                             ("modules/../../escape.ko", "file", b"m"), ("./././modules/a.ko", "file", b"a")]))
write("oci_layer_extract", "symlink", tar([("vmlinux", "sym", "/etc/passwd"), ("rootfs.ext4", "hard", "../../etc/shadow"),
                                           ("modules", "sym", "/tmp"), ("modules/x.ko", "file", b"x")]))
write("oci_layer_extract", "conflict", tar([("modules", "file", b"not a dir"), ("modules/a.ko", "file", b"a"),
                                            ("vmlinux", "dir", None), ("vmlinux", "file", b"k")]))
# GNU sparse member: real size 8192, one 512-byte data region at offset 4096.
sparse_map = octal(4096, 12) + octal(512, 12) + b"\0" * 72   # 4 entries of offset+numbytes
gnu_area = b"\0" * (386 - 345) + sparse_map + b"\0" + octal(8192, 12)  # ..., isextended, realsize
write("oci_layer_extract", "gnu-sparse",
      raw_header(b"rootfs.ext4", b"S", octal(512, 12), gnu_area) + pad(b"\xaa" * 512) + b"\0" * 1024)
# Size headers far past any limit: octal 8 GiB - 1 and base-256 1 TiB, no data behind them.
write("oci_layer_extract", "huge-octal", raw_header(b"rootfs.ext4", b"0", octal(8**11 - 1, 12)) + b"\0" * 1024)
write("oci_layer_extract", "huge-base256",
      raw_header(b"vmlinux", b"0", b"\x80" + (1 << 40).to_bytes(11, "big")) + b"\0" * 1024)
long = "modules/" + "d" * 150 + "/virtio_net.ko"
write("oci_layer_extract", "long-name", tar([(long, "file", b"\x7fELF")]))

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def doc(selector, value):
    return bytes([selector]) + json.dumps(value, separators=(",", ":")).encode()


# Selector: low 3 bits = Content-Type (0 none, 1 OCI manifest, 2 OCI index, 3 Docker manifest,
# 4 Docker list, 5 application/json, 6 octet-stream, 7 text/html); bit 3 set = nested (no index).
pyro_artifact = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.pyro.environment.v1",
                 "config": {"mediaType": "application/vnd.pyro.environment.config.v1+json", "digest": A, "size": 321},
                 "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": B, "size": 9000,
                             "annotations": {"org.opencontainers.image.title": "kernel"}},
                            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": C, "size": 80000,
                             "annotations": {"org.opencontainers.image.title": "rootfs"}}]}
write("oci_manifest", "pyro-artifact", doc(1, pyro_artifact))
oci_image = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": A, "size": 2},
             "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": B, "size": 7}]}
write("oci_manifest", "oci-manifest-no-media-type", doc(5, oci_image))
write("oci_manifest", "oci-index", doc(2, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    {"mediaType": OCI_MANIFEST, "digest": A, "size": 500, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"mediaType": OCI_MANIFEST, "digest": B, "size": 501, "platform": {"os": "linux", "architecture": "amd64"}}]}))
write("oci_manifest", "docker-list", doc(4, {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
    {"mediaType": DOCKER_MANIFEST, "digest": C, "size": 428, "platform": {"os": "linux", "architecture": "x86_64"}},
    {"mediaType": DOCKER_MANIFEST, "digest": A, "size": 428, "platform": {"os": "windows", "architecture": "amd64"}}]}))
write("oci_manifest", "docker-manifest", doc(3, {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": A, "size": 1469},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": B, "size": 29124181}]}))
write("oci_manifest", "nested-index", doc(8 | 2, {"schemaVersion": 2, "manifests": [
    {"digest": A, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]}))
write("oci_manifest", "config", doc(0, {"architecture": "amd64", "os": "linux", "name": "debian-12-base",
                                        "platform": "linux-x86_64", "rootfs": {"type": "layers"}}))
