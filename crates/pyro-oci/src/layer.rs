//! Tar layers: packing files into a deterministic, compressed tar, and extracting selected
//! members from a (possibly hostile) layer.
//!
//! Packing writes GNU tar headers that carry nothing of the host (mtime 0, owner 0:0, no
//! owner names, mode 0644 or 0755), in the caller's order, compressed with multithreaded
//! zstd at level 3. zstd's multithreaded format does not depend on the number of workers,
//! so the same files give the same bytes, hence the same digest, on any machine: a second
//! push finds every layer already in the registry. Holes of a sparse source are found with
//! `SEEK_DATA`/`SEEK_HOLE` and produced as zeros without reading the disk.
//!
//! Extraction detects the compression from the blob's magic bytes, walks the members one by
//! one, writes only the regular files the caller selects (to a path the caller chose, never
//! one from the tar), bounds each by the caller's limit before writing a byte, and writes
//! all-zero 4 KiB blocks as holes, so a sparse image stays sparse.

use crate::{ByteProgress, OciError, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// OCI media type of pyro's layers.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// zstd level of pyro's layers: fast to pack, within a few percent of level 9 on a rootfs.
const ZSTD_LEVEL: i32 = 3;
/// zstd worker threads. The multithreaded frame format is the same for any count >= 1
/// (not for 0, single-threaded), so this only changes speed, never the digest.
const ZSTD_WORKERS: u32 = 2;
/// Block size below which zeros are not worth a hole; the ext4 block size.
const BLOCK: usize = 4096;
/// All-zero block: comparing against it is one `memcmp`, fast in any build profile.
static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];
/// Copy buffer of extraction, a multiple of [`BLOCK`].
const COPY_BUF: usize = 1 << 20;
/// Progress is reported at most once per this many bytes.
const PROGRESS_STEP: u64 = 8 << 20;

/// One file to put in a layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// Path inside the tar (relative, `/`-separated), e.g. `modules/virtio_blk.ko`.
    pub name: String,
    /// The file on the host.
    pub source: PathBuf,
}

/// A packed layer blob on disk.
#[derive(Debug, Clone)]
pub struct PackedLayer {
    /// The compressed tar.
    pub path: PathBuf,
    /// `sha256:<hex>` of the compressed tar.
    pub digest: String,
    /// Size of the compressed tar.
    pub size: u64,
    /// Its media type ([`MEDIA_TYPE_TAR_ZSTD`]).
    pub media_type: String,
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a file front to back, producing the zeros of its holes without reading them: the
/// data regions come from `SEEK_DATA`/`SEEK_HOLE`, one pair of calls per region.
struct SparseReader<'a> {
    file: File,
    len: u64,
    pos: u64,
    /// `pos < region_end`: everything up to `region_end` is data (`true`) or a hole.
    region_end: u64,
    region_is_data: bool,
    progress: &'a ByteProgress,
    base: u64,
    total: u64,
    reported: u64,
}

impl SparseReader<'_> {
    /// Find the region that starts at `pos`. A filesystem without SEEK_DATA support reports
    /// the whole file as data, which is only slower.
    fn next_region(&mut self) -> std::io::Result<()> {
        let fd = self.file.as_raw_fd();
        let at = self.pos as libc::off_t;
        // SAFETY: lseek on an owned, open descriptor; the offset is checked below.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        let data = if data < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // No data at or after `pos`: the rest is a hole.
                Some(libc::ENXIO) => self.len,
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    self.region_end = self.len;
                    self.region_is_data = true;
                    return Ok(());
                }
                _ => return Err(e),
            }
        } else {
            data as u64
        };
        if data > self.pos {
            self.region_end = data.min(self.len);
            self.region_is_data = false;
            return Ok(());
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, at, libc::SEEK_HOLE) };
        self.region_end = if hole < 0 { self.len } else { (hole as u64).min(self.len) };
        self.region_is_data = true;
        if self.region_end <= self.pos {
            // A file that changed under us; read it as data so progress is made.
            self.region_end = self.len;
        }
        Ok(())
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.region_end {
            self.next_region()?;
        }
        let want = (buf.len() as u64).min(self.region_end - self.pos) as usize;
        let n = if self.region_is_data {
            let n = self.file.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                // Shrunk while packing: the tar header already promised `len` bytes.
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while being packed"));
            }
            n
        } else {
            buf[..want].fill(0);
            want
        };
        self.pos += n as u64;
        let done = self.base + self.pos;
        if done - self.reported >= PROGRESS_STEP || self.pos == self.len {
            self.reported = done;
            self.progress.report(done, Some(self.total));
        }
        Ok(n)
    }
}

/// Pack `files` (in the given order) into a zstd-compressed tar at `out`. Deterministic:
/// headers carry no time, owner or host-specific mode; holes of sparse files are read as
/// zeros without reading the disk. `progress` gets input bytes consumed.
pub fn pack(files: &[LayerFile], out: &Path, progress: &ByteProgress) -> Result<PackedLayer> {
    let mut sources = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        check_member_name(&f.name)?;
        let file = File::open(&f.source).map_err(|e| OciError::io(format!("opening {}", f.source.display()), e))?;
        let meta = file.metadata().map_err(|e| OciError::io(format!("reading {}", f.source.display()), e))?;
        if !meta.is_file() {
            return Err(OciError::Artifact(format!("{} is not a regular file", f.source.display())));
        }
        total += meta.len();
        sources.push((f, file, meta));
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".pack-")
        .tempfile_in(dir)
        .map_err(|e| OciError::io(format!("creating a temporary file in {}", dir.display()), e))?;
    let ctx = || format!("writing {}", out.display());
    let sink = HashingWriter {
        inner: std::io::BufWriter::with_capacity(
            1 << 20,
            tmp.as_file().try_clone().map_err(|e| OciError::io(ctx(), e))?,
        ),
        hash: Sha256::new(),
        written: 0,
    };
    let mut enc = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(|e| OciError::io(ctx(), e))?;
    enc.multithread(ZSTD_WORKERS).map_err(|e| OciError::io(ctx(), e))?;
    // A content checksum in the frame: a corrupted layer fails on extraction even where the
    // digest was not checked (a blob copied by hand into the cache).
    enc.include_checksum(true).map_err(|e| OciError::io(ctx(), e))?;
    let mut builder = tar::Builder::new(enc);
    let mut base = 0u64;
    for (f, file, meta) in sources {
        use std::os::unix::fs::PermissionsExt;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        header.set_mode(if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let len = meta.len();
        let reader = SparseReader {
            file,
            len,
            pos: 0,
            region_end: 0,
            region_is_data: false,
            progress,
            base,
            total,
            reported: base,
        };
        builder
            .append_data(&mut header, &f.name, reader)
            .map_err(|e| OciError::io(format!("packing {} into {}", f.source.display(), out.display()), e))?;
        base += len;
    }
    let enc = builder.into_inner().map_err(|e| OciError::io(ctx(), e))?;
    let mut sink = enc.finish().map_err(|e| OciError::io(ctx(), e))?;
    sink.flush().map_err(|e| OciError::io(ctx(), e))?;
    let HashingWriter { inner, hash, written: size } = sink;
    drop(inner);
    let digest = format!("sha256:{}", hex::encode(hash.finalize()));
    tmp.as_file().sync_all().map_err(|e| OciError::io(ctx(), e))?;
    tmp.persist(out).map_err(|e| OciError::io(ctx(), e.error))?;
    progress.report(total, Some(total));
    Ok(PackedLayer { path: out.to_path_buf(), digest, size, media_type: MEDIA_TYPE_TAR_ZSTD.to_string() })
}

/// A member name pyro writes: relative, `/`-separated, no empty, `.` or `..` component.
fn check_member_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(OciError::Artifact(format!("invalid layer member name '{name}'")))
    }
}

/// What to do with one tar member: where to write it (a plain relative path under the
/// destination dir, chosen by the caller) and the most bytes it may have.
#[derive(Debug, Clone)]
pub struct Extract {
    /// Relative destination path under the destination directory (no `..`, not absolute).
    pub dest: PathBuf,
    /// Largest size accepted for this member.
    pub max_bytes: u64,
}

/// A member that was extracted.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The member's normalized path in the tar (no leading `./` or `/`).
    pub member: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Its size (apparent; zero blocks are holes on disk).
    pub size: u64,
}

/// Counts blob bytes read, for progress.
struct CountingReader<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    progress: &'a ByteProgress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= PROGRESS_STEP || (n == 0 && self.done != self.reported) {
            self.reported = self.done;
            self.progress.report(self.done, Some(self.total));
        }
        Ok(n)
    }
}

/// A tar member path without leading `/` and `./` components (and without a trailing `/`).
fn normalize_member(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut s: &str = &s;
    loop {
        if let Some(rest) = s.strip_prefix("./") {
            s = rest;
        } else if let Some(rest) = s.strip_prefix('/') {
            s = rest;
        } else {
            break;
        }
    }
    s.trim_end_matches('/').to_string()
}

/// Extract the regular-file members of the layer blob at `blob` for which `select` returns
/// `Some`, into `dest_dir`. The compression (none, gzip, zstd) is detected from the blob's
/// first bytes, not trusted from a media type. Everything else in the tar is skipped
/// without being written. Zero 4 KiB blocks become holes. `progress` gets blob bytes read.
pub fn extract(
    blob: &Path,
    select: &mut dyn FnMut(&str) -> Option<Extract>,
    dest_dir: &Path,
    progress: &ByteProgress,
) -> Result<Vec<Extracted>> {
    let mut file = File::open(blob).map_err(|e| OciError::io(format!("opening layer {}", blob.display()), e))?;
    let total = file.metadata().map_err(|e| OciError::io(format!("reading layer {}", blob.display()), e))?.len();
    let mut magic = [0u8; 4];
    let got =
        read_up_to(&mut file, &mut magic).map_err(|e| OciError::io(format!("reading layer {}", blob.display()), e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| OciError::io(format!("reading layer {}", blob.display()), e))?;
    let counted =
        CountingReader { inner: BufReader::with_capacity(1 << 20, file), done: 0, reported: 0, total, progress };
    let magic = &magic[..got];
    let (kind, reader): (&str, Box<dyn Read + '_>) = if magic.starts_with(&[0x1f, 0x8b]) {
        ("tar+gzip", Box::new(flate2::read::MultiGzDecoder::new(counted)))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let d = zstd::stream::read::Decoder::new(counted)
            .map_err(|e| OciError::Artifact(format!("layer {} is not valid zstd: {e}", blob.display())))?;
        ("tar+zstd", Box::new(d))
    } else {
        ("tar", Box::new(counted))
    };
    let corrupt =
        |e: std::io::Error| OciError::Artifact(format!("layer {} is not a valid {kind} archive: {e}", blob.display()));
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let member = normalize_member(&entry.path_bytes());
        if member.is_empty() {
            continue;
        }
        let Some(want) = select(&member) else { continue };
        let kind_of = entry.header().entry_type();
        if !matches!(kind_of, tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse) {
            return Err(OciError::Artifact(format!(
                "member {member} of layer {} is a {}, not a regular file",
                blob.display(),
                entry_kind(kind_of)
            )));
        }
        let dest = safe_dest(dest_dir, &want.dest)?;
        let size = entry.size();
        if size > want.max_bytes {
            return Err(OciError::TooLarge { what: format!("layer member {member}"), size, limit: want.max_bytes });
        }
        let written = write_sparse(&mut entry, &dest, size, want.max_bytes, &member, &corrupt).inspect_err(|_| {
            let _ = std::fs::remove_file(&dest);
        })?;
        out.push(Extracted { member, path: dest, size: written });
    }
    Ok(out)
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `dest_dir/rel` after checking `rel` is plain and relative, with its parent directories
/// created; none of them (nor the file) may be a symlink, so the write lands under `dest_dir`.
fn safe_dest(dest_dir: &Path, rel: &Path) -> Result<PathBuf> {
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || rel.as_os_str().is_empty() {
        return Err(OciError::Artifact(format!(
            "extraction destination {} must be a relative path without '..'",
            rel.display()
        )));
    }
    let mut at = dest_dir.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(OciError::Artifact(format!(
                    "{} is a symbolic link; refusing to write through it",
                    at.display()
                )))
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(OciError::Artifact(format!("{} is not a directory", at.display())))
            }
            Ok(_) => {}
            Err(_) if i + 1 < parts.len() => {
                std::fs::create_dir(&at).map_err(|e| OciError::io(format!("creating {}", at.display()), e))?
            }
            Err(_) => {}
        }
    }
    Ok(at)
}

/// Copy `size` bytes of `src` into a new `dest`, leaving all-zero 4 KiB blocks as holes.
fn write_sparse(
    src: &mut impl Read,
    dest: &Path,
    size: u64,
    max_bytes: u64,
    member: &str,
    corrupt: &dyn Fn(std::io::Error) -> OciError,
) -> Result<u64> {
    let ctx = || format!("writing {}", dest.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| OciError::io(ctx(), e))?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut pos = 0u64;
    loop {
        let n = read_up_to(src, &mut buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > max_bytes {
            return Err(OciError::TooLarge {
                what: format!("layer member {member}"),
                size: pos + n as u64,
                limit: max_bytes,
            });
        }
        let chunk = &buf[..n];
        // Write each run of non-zero blocks with one call; zero blocks stay holes.
        let mut i = 0;
        while i < n {
            let end = (i + BLOCK).min(n);
            if chunk[i..end] == ZERO_BLOCK[..end - i] {
                i = end;
                continue;
            }
            let start = i;
            while i < n {
                let end = (i + BLOCK).min(n);
                if chunk[i..end] == ZERO_BLOCK[..end - i] {
                    break;
                }
                i = end;
            }
            file.write_all_at(&chunk[start..i], pos + start as u64).map_err(|e| OciError::io(ctx(), e))?;
        }
        pos += n as u64;
    }
    if pos != size {
        return Err(OciError::Artifact(format!("layer member {member} ended after {pos} of {size} bytes")));
    }
    file.set_len(pos).map_err(|e| OciError::io(ctx(), e))?;
    file.sync_all().map_err(|e| OciError::io(ctx(), e))?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(path: &Path) -> String {
        let mut h = Sha256::new();
        let mut f = File::open(path).unwrap();
        std::io::copy(&mut f, &mut h).unwrap();
        hex::encode(h.finalize())
    }

    fn blocks(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// A 64 MiB file with 3 data islands (one not block-aligned) and holes between.
    fn sparse_source(dir: &Path) -> PathBuf {
        let p = dir.join("disk.img");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[7u8; 100_000], 4096).unwrap();
        f.write_all_at(&[9u8; 3000], (20 << 20) + 123).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        f.sync_all().unwrap();
        p
    }

    fn files(dir: &Path) -> Vec<LayerFile> {
        let small = dir.join("order");
        std::fs::write(&small, "a.ko\nb.ko\n").unwrap();
        vec![
            LayerFile { name: "modules/order".into(), source: small },
            LayerFile { name: "rootfs.ext4".into(), source: sparse_source(dir) },
        ]
    }

    fn select_all(dest: &'static str) -> impl FnMut(&str) -> Option<Extract> {
        move |m| (m == "rootfs.ext4").then(|| Extract { dest: PathBuf::from(dest), max_bytes: 1 << 30 })
    }

    #[test]
    fn pack_is_deterministic_and_round_trips_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let fs = files(dir.path());
        let a = pack(&fs, &dir.path().join("a.tar.zst"), &ByteProgress::silent()).unwrap();
        // Different mtime and mode bits must not change the output.
        std::fs::write(&fs[0].source, "a.ko\nb.ko\n").unwrap();
        let b = pack(&fs, &dir.path().join("b.tar.zst"), &ByteProgress::silent()).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.digest, format!("sha256:{}", sha(&a.path)));
        assert_eq!(a.size, std::fs::metadata(&a.path).unwrap().len());
        assert!(a.size < 1 << 20, "64 MiB of mostly holes compresses small: {}", a.size);

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let got = extract(&a.path, &mut select_all("sub/root.img"), &out, &ByteProgress::silent()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].member, "rootfs.ext4");
        let dest = out.join("sub/root.img");
        assert_eq!(sha(&dest), sha(&fs[1].source));
        assert!(blocks(&dest) <= blocks(&fs[1].source) + 16 * 4096, "{} vs {}", blocks(&dest), blocks(&fs[1].source));
        // The order file was not selected, so not written.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    }

    /// Build a plain tar with raw headers (the tar crate refuses to write some of these).
    fn raw_tar(entries: &[(&str, tar::EntryType, u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, size, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let n = &mut h.as_old_mut().name;
                n[..name.len()].copy_from_slice(name.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_size(*size);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend([0u8; 1024]);
        out
    }

    fn run_extract(dir: &Path, blob: &[u8], max: u64) -> Result<Vec<Extracted>> {
        let p = dir.join("blob");
        std::fs::write(&p, blob).unwrap();
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir(&out).unwrap();
        let mut sel = |m: &str| {
            let name = m.rsplit('/').next().unwrap().to_string();
            Some(Extract { dest: PathBuf::from(name), max_bytes: max })
        };
        extract(&p, &mut sel, &out, &ByteProgress::silent())
    }

    fn entries_under(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn hostile_layers_give_errors_and_write_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A member path with `..`: the name is only matched, the destination is the caller's.
        let t = raw_tar(&[("../x", tar::EntryType::Regular, 3, b"abc")]);
        let got = run_extract(d, &t, 100).unwrap();
        assert_eq!(got[0].path, d.join("out/x"));
        assert!(!d.join("x").exists());

        // A caller destination with `..` is refused.
        std::fs::write(d.join("blob"), &t).unwrap();
        let mut sel = |_: &str| Some(Extract { dest: PathBuf::from("../escape"), max_bytes: 100 });
        let e = extract(&d.join("blob"), &mut sel, &d.join("out"), &ByteProgress::silent()).unwrap_err();
        assert!(matches!(e, OciError::Artifact(ref m) if m.contains("relative")), "{e}");
        assert!(!d.join("escape").exists());

        // A header announcing more than the limit: refused before writing.
        let t = raw_tar(&[("big", tar::EntryType::Regular, 1 << 40, b"")]);
        let e = run_extract(d, &t, 1 << 20).unwrap_err();
        assert!(matches!(e, OciError::TooLarge { size, .. } if size == 1 << 40), "{e}");
        assert!(entries_under(&d.join("out")).is_empty());

        // A header announcing more than the blob has: truncated archive.
        let t = raw_tar(&[("short", tar::EntryType::Regular, 1 << 20, b"only this")]);
        let t = &t[..512 + 512];
        let e = run_extract(d, t, 1 << 30).unwrap_err();
        assert!(matches!(e, OciError::Artifact(_)), "{e}");
        assert!(entries_under(&d.join("out")).is_empty(), "partial file removed");

        // A selected symlink is an error, never followed or created.
        let t = raw_tar(&[("vmlinux", tar::EntryType::Symlink, 0, b"")]);
        let e = run_extract(d, &t, 100).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(entries_under(&d.join("out")).is_empty());

        // Truncated zstd.
        let fs = files(d);
        let packed = pack(&fs, &d.join("p.tar.zst"), &ByteProgress::silent()).unwrap();
        let bytes = std::fs::read(&packed.path).unwrap();
        let e = run_extract(d, &bytes[..bytes.len() / 2], 1 << 30).unwrap_err();
        assert!(matches!(e, OciError::Artifact(ref m) if m.contains("tar+zstd")), "{e}");
        // Corrupted zstd (a flipped byte in the middle).
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(run_extract(d, &bad, 1 << 30).is_err());

        // Garbage, gzip garbage, empty.
        assert!(matches!(run_extract(d, &[0x55u8; 3000], 100).unwrap_err(), OciError::Artifact(_)));
        let e = run_extract(d, &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8], 100).unwrap_err();
        assert!(matches!(e, OciError::Artifact(ref m) if m.contains("tar+gzip")), "{e}");
        assert!(run_extract(d, b"", 100).unwrap().is_empty());
        assert!(entries_under(&d.join("out")).is_empty());
        assert_eq!(entries_under(d), ["blob", "disk.img", "order", "out", "p.tar.zst"]);
    }

    #[test]
    fn gzip_and_plain_tars_extract_with_normalized_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t = raw_tar(&[
            ("./a/dir/", tar::EntryType::Directory, 0, b""),
            ("./a/dir/vmlinux", tar::EntryType::Regular, 5, b"hello"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let gz = gz.finish().unwrap();
        for blob in [t.clone(), gz] {
            let p = d.join("blob");
            std::fs::write(&p, &blob).unwrap();
            let out = d.join("o");
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir(&out).unwrap();
            let mut seen = Vec::new();
            let mut sel = |m: &str| {
                seen.push(m.to_string());
                m.ends_with("vmlinux").then(|| Extract { dest: "k/vmlinux".into(), max_bytes: 5 })
            };
            let got = extract(&p, &mut sel, &out, &ByteProgress::silent()).unwrap();
            assert_eq!(seen, ["a/dir", "a/dir/vmlinux"]);
            assert_eq!(got[0].member, "a/dir/vmlinux");
            assert_eq!(std::fs::read(out.join("k/vmlinux")).unwrap(), b"hello");
        }
    }
}
