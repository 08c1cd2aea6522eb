//! Offline disk tools on qcow2 images and backing chains made with the real tools (mkfs.ext4
//! -d, debugfs -w, qemu-img, qemu-io), compared with the raw image each one is equivalent to,
//! and hostile qcow2 files. `cargo test -p pyro-diskimage --test qcow2`.

use pyro_diskimage::{self as diskimage, DiskEntry, DiskImage, Error};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const CHANGED: &str = "changed in layer 1\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

fn qemu_io(format: &str, image: &Path, op: &str) {
    run(Command::new("qemu-io").args(["-f", format, "-c", op]).arg(image));
}

fn debugfs_w(image: &Path, request: &str) {
    let out = run(Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(image));
    assert!(!out.contains("rror"), "{request}: {out}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cp(from: &Path, to: &Path) {
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
}

fn message(e: Error) -> String {
    e.to_string()
}

/// The tree of the base image: a few files, a deep one, symlinks, a 256 MiB sparse file.
fn build_tree(root: &Path) {
    let ws = root.join("workspace");
    std::fs::create_dir_all(ws.join("nested/deeper")).unwrap();
    std::fs::write(ws.join("small.txt"), "small file\n").unwrap();
    std::fs::write(ws.join("keep.txt"), "kept in every layer\n").unwrap();
    std::fs::write(ws.join("nested/deeper/file.txt"), "deep").unwrap();
    for i in 0..50 {
        std::fs::write(ws.join(format!("nested/f{i}")), format!("file {i} ").repeat(i * 20)).unwrap();
    }
    std::os::unix::fs::symlink("small.txt", ws.join("link")).unwrap();
    let big = std::fs::File::create(ws.join("big.img")).unwrap();
    big.write_all_at(b"BIG-HEAD", 0).unwrap();
    big.set_len(256 << 20).unwrap();
}

/// Writes into the qcow2 `overlay` (through qemu-io, as a guest's writes land) every run of
/// 4 KiB blocks where the raw image `new` differs from `old`, so that the overlay over a chain
/// showing `old` shows `new`, and holds only what changed.
fn write_difference(old: &Path, new: &Path, overlay: &Path, scratch: &Path) {
    const BLOCK: usize = 4096;
    let (a, b) = (std::fs::read(old).unwrap(), std::fs::read(new).unwrap());
    assert_eq!(a.len(), b.len());
    let differs = |i: usize| a[i * BLOCK..(i + 1) * BLOCK] != b[i * BLOCK..(i + 1) * BLOCK];
    let blocks = a.len() / BLOCK;
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    let (mut i, mut runs) = (0, 0);
    while i < blocks {
        if !differs(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < blocks && differs(i) {
            i += 1;
        }
        let data = scratch.join(format!("run-{start}"));
        std::fs::write(&data, &b[start * BLOCK..i * BLOCK]).unwrap();
        cmd.arg("-c").arg(format!("write -s {} {} {}", s(&data), start * BLOCK, (i - start) * BLOCK));
        runs += 1;
    }
    assert!(runs > 0, "{} and {} do not differ", old.display(), new.display());
    run(cmd.arg(overlay));
}

/// A chain and the raw image each of its layers is equivalent to:
/// `raw[0]` (base, raw) <- `layer[1]` (qcow2 v3, 4 KiB clusters) <- `layer[2]` (qcow2 v2,
/// 64 KiB clusters) <- `layer[3]` (qcow2 v3, default). Layers 1 and 2 hold file changes made
/// with debugfs on a raw copy, written into an empty overlay; layer 3 holds qemu-io writes:
/// data, zero clusters over lower data, a partial zero write, a cluster written then unmapped.
/// `converted` is `raw[1]` as `qemu-img convert -B raw[0]` stores it (all of its data).
struct Chain {
    _dir: tempfile::TempDir,
    raw: Vec<PathBuf>,
    layer: Vec<PathBuf>,
    converted: PathBuf,
}

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        build_tree(&d.join("tree"));
        let raw: Vec<PathBuf> = (0..4).map(|i| d.join(format!("raw{i}.ext4"))).collect();
        let layer: Vec<PathBuf> = (0..4).map(|i| d.join(format!("layer{i}.qcow2"))).collect();
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(d.join("tree")).arg(&raw[0]).arg("96M"));
        // Disk bytes in free space that the layers above hide (zero clusters over data).
        qemu_io("raw", &raw[0], "write -P 0x33 80M 512k");

        // Layer 1: file changes made with debugfs on a copy, stored as the difference.
        cp(&raw[0], &raw[1]);
        std::fs::write(d.join("changed.txt"), CHANGED).unwrap();
        debugfs_w(&raw[1], "rm /workspace/small.txt");
        debugfs_w(&raw[1], &format!("write {} /workspace/changed.txt", s(&d.join("changed.txt"))));
        debugfs_w(&raw[1], "mkdir /workspace/newdir");
        // Bytes in free space that no layer above touches: read from layer 1 through two layers.
        qemu_io("raw", &raw[1], "write -P 0x44 88M 64k");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "-F",
            "raw",
            "-b",
            s(&raw[0]),
            s(&layer[1]),
        ]);
        write_difference(&raw[0], &raw[1], &layer[1], d);
        let converted = d.join("converted.qcow2");
        qemu_img(&["convert", "-O", "qcow2", "-B", s(&raw[0]), "-F", "raw", s(&raw[1]), s(&converted)]);

        // Layer 2 (qcow2 v2) over layer 1.
        cp(&raw[1], &raw[2]);
        std::fs::write(d.join("deep2.txt"), "layer 2 wrote this\n".repeat(500)).unwrap();
        debugfs_w(&raw[2], &format!("write {} /workspace/newdir/deep2.txt", s(&d.join("deep2.txt"))));
        debugfs_w(&raw[2], "rm /workspace/nested/f7");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-F",
            "qcow2",
            "-b",
            s(&layer[1]),
            s(&layer[2]),
        ]);
        write_difference(&raw[1], &raw[2], &layer[2], d);

        // Layer 3: an empty overlay written through qemu-io, the same writes applied to a raw copy.
        cp(&raw[2], &raw[3]);
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", s(&layer[2]), s(&layer[3])]);
        for op in [
            "write -P 0x5a 70M 200k", // data, not cluster-aligned at the end
            "write -z 80M 128k",      // zero clusters over base data
            "write -z 81000k 8k",     // a partial-cluster zero write (qemu writes data)
            "write -P 0x77 90M 64k",  // one full cluster
            "write -z -u 90M 64k",    // ... then zeroed with unmap
        ] {
            qemu_io("qcow2", &layer[3], op);
            qemu_io("raw", &raw[3], op);
        }
        Chain { _dir: dir, raw, layer, converted }
    })
}

/// `layer[i]` as qcow2 (`i` = 4: `converted`, equivalent to `raw[1]`).
fn q(i: usize) -> DiskImage {
    if i == 4 {
        return DiskImage::qcow2(&chain().converted);
    }
    DiskImage::qcow2(&chain().layer[i])
}

fn raw_path(i: usize) -> &'static Path {
    &chain().raw[if i == 4 { 1 } else { i }]
}

fn r(i: usize) -> DiskImage {
    DiskImage::raw(raw_path(i))
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn every_layer_lists_and_reads_as_its_raw_equivalent() {
    // Reads fall through to every layer below (qemu-img's map says which layer holds each
    // range: depth 0 is the image itself).
    for (layer, depths) in [(3, vec![0, 1, 2, 3]), (2, vec![0, 1, 2]), (1, vec![0, 1])] {
        let map = run(Command::new("qemu-img").args(["map", "--output=json"]).arg(&chain().layer[layer]));
        let map: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
        for depth in depths {
            assert!(
                map.iter().any(|m| m["depth"] == depth && m["data"] == true),
                "no data at depth {depth} of layer {layer}: {map:?}"
            );
        }
    }
    for i in 1..5 {
        for path in ["/", "/workspace", "/workspace/nested"] {
            let want = diskimage::list(&r(i), path, true).unwrap();
            let got = diskimage::list(&q(i), path, true).unwrap();
            assert_eq!(got, want, "layer {i}: list {path}");
        }
        let entries: Vec<DiskEntry> = diskimage::list(&r(i), "/", true).unwrap();
        for e in entries.iter().filter(|e| e.artifact_type == "file") {
            let want = diskimage::read(&r(i), &e.path, 64 << 10).unwrap();
            let got = diskimage::read(&q(i), &e.path, 64 << 10).unwrap();
            assert_eq!(got, want, "layer {i}: read {}", e.path);
        }
    }
    // What each layer changed is what it shows.
    let small = diskimage::read(&q(1), "/workspace/small.txt", 100).unwrap_err();
    assert!(matches!(small, Error::PathNotFound { .. }), "{small:?}");
    assert_eq!(diskimage::read(&q(1), "/workspace/changed.txt", 100).unwrap().1, CHANGED.as_bytes());
    assert_eq!(diskimage::read(&q(3), "/workspace/keep.txt", 100).unwrap().1, b"kept in every layer\n");
    let (size, head) = diskimage::read(&q(3), "/workspace/big.img", 8).unwrap();
    assert_eq!((size, head.as_slice()), (256 << 20, b"BIG-HEAD".as_slice()));
    assert!(diskimage::list(&q(2), "/workspace/newdir/deep2.txt", false).is_ok());
    assert!(diskimage::list(&q(1), "/workspace/newdir/deep2.txt", false).is_err());
}

#[test]
fn export_writes_the_same_disk_as_qemu_img_and_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..5 {
        let out = dir.path().join(format!("export{i}.ext4"));
        let bytes = diskimage::export(&q(i), &out).unwrap();
        assert_eq!(bytes, std::fs::metadata(raw_path(i)).unwrap().len());
        // qemu-img's own reading of the chain, and the raw equivalent, byte for byte.
        let by_qemu = dir.path().join(format!("qemu{i}.raw"));
        qemu_img(&["convert", "-O", "raw", s(&q(i).path), s(&by_qemu)]);
        run(Command::new("cmp").arg(&out).arg(&by_qemu));
        run(Command::new("cmp").arg(&out).arg(raw_path(i)));
        run(Command::new("e2fsck").arg("-fn").arg(&out));
        // Holes stay holes: about what the raw equivalent allocates, far below the disk size.
        let (ours, raw) = (allocated(&out), allocated(raw_path(i)));
        assert!(ours <= raw + (1 << 20), "layer {i}: export allocates {ours} bytes, the raw image {raw}");
        assert!(ours < bytes / 4, "layer {i}: {ours} of {bytes} bytes allocated");
        // Never over anything.
        let e = diskimage::export(&q(i), &out).unwrap_err();
        assert!(matches!(e, Error::OutputExists { .. }), "{e:?}");
    }
    // The export of the qemu-io layer reads the zeroed areas as zeros and the data as written.
    let out = std::fs::File::open(dir.path().join("export3.ext4")).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    out.read_exact_at(&mut buf, 80 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a zero cluster over base data reads as zeros");
    out.read_exact_at(&mut buf, (80 << 20) + (256 << 10)).unwrap();
    assert!(buf.iter().all(|&b| b == 0x33), "base data below an untouched cluster shows through");
    out.read_exact_at(&mut buf, 70 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
    out.read_exact_at(&mut buf, 88 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0x44), "layer 1's data shows through layers 2 and 3");
}

#[test]
fn the_format_is_the_callers_never_the_files() {
    // A qcow2 file called raw is not ext4; a raw file called qcow2 has no qcow2 header.
    let e = diskimage::list(&DiskImage::raw(&chain().layer[1]), "/", false).unwrap_err();
    assert!(matches!(e, Error::NotExt4 { .. }), "{e:?}");
    let e = diskimage::list(&DiskImage::qcow2(&chain().raw[0]), "/", false).unwrap_err();
    assert!(matches!(e, Error::Qcow2 { .. }), "{e:?}");
    assert!(message(e).contains("no qcow2 magic"));
    // A raw disk whose first sector a guest made look like a qcow2 header naming a host file as
    // its backing: read as raw, that header is just bytes.
    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("forged.ext4");
    cp(&chain().raw[0], &forged);
    let header = std::fs::read(&chain().layer[3]).unwrap();
    std::fs::OpenOptions::new().write(true).open(&forged).unwrap().write_all_at(&header[..1024], 0).unwrap();
    assert_eq!(
        diskimage::list(&DiskImage::raw(&forged), "/workspace", false).unwrap(),
        diskimage::list(&r(0), "/workspace", false).unwrap()
    );
}

/// A one-layer overlay over the base, in `dir`, to be damaged by a test.
fn overlay(dir: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-F", "raw", "-b", s(&chain().raw[0])];
    args.extend_from_slice(opts);
    args.push(s(&path));
    qemu_img(&args);
    qemu_io("qcow2", &path, "write -P 0x11 70M 64k");
    path
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

fn be_u64_at(path: &Path, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, offset).unwrap();
    u64::from_be_bytes(b)
}

/// Every entry point refuses `image` with a qcow2 error containing `needle`; export leaves nothing.
fn refused(image: &Path, needle: &str) {
    let disk = DiskImage::qcow2(image);
    for e in [
        diskimage::list(&disk, "/workspace", true).unwrap_err(),
        diskimage::read(&disk, "/workspace/keep.txt", 100).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Qcow2 { .. }), "{}: {e:?}", image.display());
        let m = message(e);
        assert!(m.contains(needle), "{}: {m:?} does not say {needle:?}", image.display());
    }
    let out = image.with_extension("export");
    let e = diskimage::export(&disk, &out).unwrap_err();
    assert!(message(e).contains(needle));
    assert!(!out.exists());
    let dir = image.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("pyro-partial"))
        .collect();
    assert!(left.is_empty(), "export left {left:?}");
}

#[test]
fn hostile_headers_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = overlay(d, "good.qcow2", &[]);
    assert_eq!(
        diskimage::read(&DiskImage::qcow2(&good), "/workspace/keep.txt", 100).unwrap().1,
        b"kept in every layer\n"
    );
    let fresh = |name: &str| {
        let p = d.join(name);
        std::fs::copy(&good, &p).unwrap();
        p
    };

    let p = d.join("tiny.qcow2");
    std::fs::write(&p, &std::fs::read(&good).unwrap()[..50]).unwrap();
    refused(&p, "too small for a qcow2 header");

    let p = fresh("truncated.qcow2");
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(4096).unwrap();
    refused(&p, "past the end");

    let p = fresh("l1-beyond.qcow2");
    patch(&p, 40, &(1u64 << 40).to_be_bytes());
    refused(&p, "L1 table");

    let p = fresh("huge-l1.qcow2");
    patch(&p, 36, &u32::MAX.to_be_bytes());
    refused(&p, "l1_size 4294967295 is above");

    let p = fresh("huge-size.qcow2");
    patch(&p, 24, &(1u64 << 62).to_be_bytes());
    refused(&p, "too small for the");

    let p = fresh("cluster-bits.qcow2");
    patch(&p, 20, &40u32.to_be_bytes());
    refused(&p, "cluster_bits 40");

    let p = fresh("version.qcow2");
    patch(&p, 4, &9u32.to_be_bytes());
    refused(&p, "version 9");

    let p = fresh("l2-beyond.qcow2");
    let l1 = be_u64_at(&p, 40);
    patch(&p, l1, &((1u64 << 40) | (1 << 63)).to_be_bytes());
    refused(&p, "L2 table at 0x10000000000");

    // A dirty image (qemu killed with lazy refcounts) is read: only its refcounts may be stale.
    let p = fresh("dirty.qcow2");
    patch(&p, 72, &1u64.to_be_bytes());
    let disk = DiskImage::qcow2(&p);
    assert_eq!(diskimage::read(&disk, "/workspace/keep.txt", 100).unwrap().1, b"kept in every layer\n");

    let p = fresh("corrupt-bit.qcow2");
    patch(&p, 72, &2u64.to_be_bytes());
    refused(&p, "marked the image corrupt");

    let p = fresh("unknown-feature.qcow2");
    patch(&p, 72, &(1u64 << 20).to_be_bytes());
    refused(&p, "unknown incompatible features");

    // The backing file name, made relative (qemu-img rebase -u writes what it is given).
    let p = fresh("relative.qcow2");
    run(Command::new("qemu-img").args(["rebase", "-u", "-F", "raw", "-b", "raw0.ext4"]).arg(&p).current_dir(d));
    refused(&p, "is not an absolute path");

    // No backing format recorded: never probed.
    let p = fresh("no-format.qcow2");
    let header = std::fs::read(&p).unwrap();
    let ext = header.windows(4).position(|w| w == 0xe279_2acau32.to_be_bytes()).unwrap();
    patch(&p, ext as u64, &0x1234_5678u32.to_be_bytes());
    refused(&p, "no backing format is recorded");

    // A backing format other than raw or qcow2.
    let p = fresh("vmdk.qcow2");
    let fmt = header.windows(3).position(|w| w == b"raw").unwrap();
    patch(&p, fmt as u64, b"dmg");
    refused(&p, "has format dmg, not raw or qcow2");

    // A backing file that is not there, or is a directory.
    let p = fresh("missing.qcow2");
    run(Command::new("qemu-img").args(["rebase", "-u", "-F", "raw", "-b", "/nonexistent/base.raw"]).arg(&p));
    refused(&p, "cannot open the backing file");
    let p = fresh("dir.qcow2");
    run(Command::new("qemu-img").args(["rebase", "-u", "-F", "raw", "-b", "/tmp"]).arg(&p));
    refused(&p, "not a regular file");
}

#[test]
fn refused_qcow2_features_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Compressed clusters (qemu-img convert -c): met when a read reaches one.
    let comp = d.join("compressed.qcow2");
    qemu_img(&["convert", "-c", "-O", "qcow2", "-B", s(&chain().raw[0]), "-F", "raw", s(&chain().raw[1]), s(&comp)]);
    refused(&comp, "compressed");

    let p = overlay(d, "subclusters.qcow2", &["-o", "extended_l2=on"]);
    refused(&p, "extended L2");

    let data = d.join("data.raw");
    let p = d.join("external.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &format!("data_file={}", s(&data)), s(&p), "96M"]);
    refused(&p, "external data file");

    // crypt_method 2 (LUKS): patched rather than made with `qemu-img create -o encrypt.format=luks`,
    // whose key derivation calibration fails on a busy machine.
    let p = overlay(d, "luks.qcow2", &[]);
    patch(&p, 32, &2u32.to_be_bytes());
    refused(&p, "encrypted");
}

#[test]
fn backing_chains_are_bounded_and_loop_free() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A self loop, and a two-file loop.
    let a = overlay(d, "a.qcow2", &[]);
    run(Command::new("qemu-img").args(["rebase", "-u", "-F", "qcow2", "-b", s(&a)]).arg(&a));
    refused(&a, "loop");
    let b = overlay(d, "b.qcow2", &[]);
    let c = d.join("c.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", s(&b), s(&c)]);
    run(Command::new("qemu-img").args(["rebase", "-u", "-F", "qcow2", "-b", s(&c)]).arg(&b));
    refused(&c, "loop");

    // 16 backing files below the top one are read; 17 are refused.
    let mut below = chain().raw[0].clone();
    let mut format = "raw";
    for i in 0..diskimage::MAX_BACKING_DEPTH {
        let next = d.join(format!("depth{i}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-F", format, "-b", s(&below), s(&next)]);
        (below, format) = (next, "qcow2");
    }
    let top = DiskImage::qcow2(&below);
    assert_eq!(diskimage::read(&top, "/workspace/keep.txt", 100).unwrap().1, b"kept in every layer\n");
    assert_eq!(diskimage::list(&top, "/workspace", true).unwrap(), diskimage::list(&r(0), "/workspace", true).unwrap());
    let deeper = d.join("too-deep.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", s(&below), s(&deeper)]);
    refused(&deeper, "deeper than 16");
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn randomly_corrupted_qcow2_metadata_gives_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(&chain().layer[1]).unwrap();
    // Header, extensions, L1, refcount and the first L2 tables of a 4 KiB-cluster image.
    let span = good.len().min(64 << 10);
    let corrupt = d.join("corrupt.qcow2");
    let out = d.join("out.ext4");
    let mut seed = 0x51f1_5eed_0000_0001u64;
    for round in 0..200 {
        let mut bytes = good.clone();
        for _ in 0..(1 + round % 8) {
            let at = (next(&mut seed) as usize) % span;
            bytes[at] = next(&mut seed) as u8;
        }
        std::fs::write(&corrupt, &bytes).unwrap();
        let disk = DiskImage::qcow2(&corrupt);
        let _ = diskimage::list(&disk, "/", true);
        let _ = diskimage::read(&disk, "/workspace/changed.txt", 4096);
        if round % 20 == 0 && diskimage::export(&disk, &out).is_ok() {
            std::fs::remove_file(&out).unwrap();
        }
    }
}
