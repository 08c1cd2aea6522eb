//! A guest writes its own disk, so a stopped workspace's ext4 image is hostile input to
//! `workspace disk list|read`. Each input mutates one of three small real images (ext4 with
//! metadata checksums, ext4 without, ext2 with block maps) and then runs pyro's own offline
//! reader over it: a recursive list of `/`, then plain lists and capped reads of a few entries.
//! Nothing may panic, abort, hang or allocate past libFuzzer's limit.
//!
//! Input: one selector byte (which base image), then edits `[offset: u24 LE][len: u8][bytes]`
//! applied to the image (offset modulo its size), so a small input reaches any byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_diskimage as diskimage;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

const BASES: [&[u8]; 3] =
    [include_bytes!("../ext4/csum.img"), include_bytes!("../ext4/plain.img"), include_bytes!("../ext4/ext2.img")];

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

fn mutated(data: &[u8]) -> Vec<u8> {
    let Some((&which, mut edits)) = data.split_first() else { return BASES[0].to_vec() };
    let mut image = BASES[which as usize % BASES.len()].to_vec();
    while edits.len() >= 4 {
        let offset = u32::from_le_bytes([edits[0], edits[1], edits[2], 0]) as usize % image.len();
        let len = edits[3] as usize;
        let bytes = &edits[4..(4 + len).min(edits.len())];
        let end = (offset + bytes.len()).min(image.len());
        image[offset..end].copy_from_slice(&bytes[..end - offset]);
        edits = &edits[(4 + len).min(edits.len())..];
    }
    image
}

fuzz_target!(|data: &[u8]| {
    let bytes = mutated(data);
    let (file, path) = image();
    file.set_len(0).unwrap();
    file.write_all_at(&bytes, 0).unwrap();

    let Ok(entries) = diskimage::list(path, "/", true) else {
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
