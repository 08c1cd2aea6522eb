//! A guest writes its own disk, so a stopped workspace's ext4 image is hostile input to
//! `workspace disk list|read`. Each input mutates one of five small real images and then runs
//! pyro's own offline reader over it: a recursive list of `/`, then plain lists and capped
//! reads of a few entries. Nothing may panic, abort, hang or allocate past libFuzzer's limit.
//! The raw images are ext4 with metadata checksums, ext4 without, ext2 with block maps; the
//! qcow2 ones (made by `make_qcow2_seeds.sh`) are an overlay over the first raw image, whose
//! backing file name is `/proc/self/fd/1000` (kept open here), and a standalone image of
//! 512-byte clusters: their mutations hit the qcow2 header, L1/L2 tables and backing name.
//!
//! Input: one selector byte (which base image), then edits `[offset: u24 LE][len: u8][bytes]`
//! applied to the image (offset modulo its size), so a small input reaches any byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_diskimage::{self as diskimage, DiskImage, ImageFormat};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

const BASES: [(&[u8], ImageFormat); 5] = [
    (include_bytes!("../ext4/csum.img"), ImageFormat::Raw),
    (include_bytes!("../ext4/plain.img"), ImageFormat::Raw),
    (include_bytes!("../ext4/ext2.img"), ImageFormat::Raw),
    (include_bytes!("../ext4/overlay.qcow2"), ImageFormat::Qcow2),
    (include_bytes!("../ext4/standalone.qcow2"), ImageFormat::Qcow2),
];

/// The descriptor the overlay's backing file name (`/proc/self/fd/1000`) reaches.
const BACKING_FD: i32 = 1000;

/// The overlay's backing file: csum.img, unlinked, kept open as descriptor 1000.
fn backing() {
    static BACKING: OnceLock<()> = OnceLock::new();
    BACKING.get_or_init(|| {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(BASES[0].0, 0).unwrap();
        // SAFETY: dup2 onto a descriptor number nothing else in this process uses; the new
        // descriptor is never closed (it lives as long as the process).
        assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), BACKING_FD) }, BACKING_FD);
    });
}

/// One image file per fuzzing process, rewritten for every input (on tmpfs when there is one).
/// It is unlinked at once and reached as `/proc/self/fd/N` (libFuzzer exits without running
/// destructors, so a named file would be left behind by every run).
fn image() -> &'static (File, PathBuf) {
    static IMAGE: OnceLock<(File, PathBuf)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        let file = tempfile::tempfile_in(dir).unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (file, path)
    })
}

fn mutated(data: &[u8]) -> (Vec<u8>, ImageFormat) {
    let Some((&which, mut edits)) = data.split_first() else { return (BASES[0].0.to_vec(), ImageFormat::Raw) };
    let (base, format) = BASES[which as usize % BASES.len()];
    let mut image = base.to_vec();
    while edits.len() >= 4 {
        let offset = u32::from_le_bytes([edits[0], edits[1], edits[2], 0]) as usize % image.len();
        let len = edits[3] as usize;
        let bytes = &edits[4..(4 + len).min(edits.len())];
        let end = (offset + bytes.len()).min(image.len());
        image[offset..end].copy_from_slice(&bytes[..end - offset]);
        edits = &edits[(4 + len).min(edits.len())..];
    }
    (image, format)
}

fuzz_target!(|data: &[u8]| {
    let (bytes, format) = mutated(data);
    backing();
    let (file, path) = image();
    file.set_len(0).unwrap();
    file.write_all_at(&bytes, 0).unwrap();
    let path = &DiskImage::new(path, format);

    let listed = diskimage::list(path, "/", true);
    // Every base as it is must list (the overlay's backing descriptor included): else the
    // mutations of that base exercise only the first error.
    assert!(data.len() > 1 || listed.is_ok(), "unmutated base {data:?}: {listed:?}");
    let Ok(entries) = listed else {
        let _ = diskimage::read(path, "/workspace/README.md", 4096);
        return;
    };
    // Each call loads the image again, so only a few per input: the first directory and symlink,
    // and the first files (the corrupt ones are the interesting ones).
    for e in &entries {
        let hidden = |r: &str| e.path == r || e.path.strip_prefix(r).is_some_and(|rest| rest.starts_with('/'));
        assert!(!diskimage::RUNTIME_ONLY_PATHS.iter().any(|r| hidden(r)), "a runtime-only path was listed: {}", e.path);
    }
    let mut files = 0;
    let (mut dir_seen, mut link_seen) = (false, false);
    for entry in &entries {
        match entry.artifact_type.as_str() {
            "file" if files < 4 => {
                files += 1;
                let _ = diskimage::read(path, &entry.path, 64 << 10);
            }
            "directory" if !dir_seen => {
                dir_seen = true;
                let _ = diskimage::list(path, &entry.path, false);
            }
            "symlink" if !link_seen => {
                link_seen = true;
                let _ = diskimage::list(path, &entry.path, false);
                let _ = diskimage::read(path, &entry.path, 4096);
            }
            _ => {}
        }
    }
    assert!(diskimage::read(path, "/workspace/README.md", u64::MAX).is_err(), "max_bytes is capped");
});
