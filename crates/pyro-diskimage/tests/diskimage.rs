//! Offline disk tools against real ext4 images built with `mkfs.ext4 -d` (e2fsprogs), including
//! hostile and corrupt ones. `cargo test -p pyro-diskimage --test diskimage`.

use pyro_diskimage::{self as diskimage, DiskEntry, DiskImage, Error, ListLimits};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MARKER: &[u8] = b"PYRO-SECRET-MARKER-5d1e8c07a3";
const SMALL: &str = "small file\nsecond line\n";
const BIG_HEAD: &[u8] = b"BIG-FILE-HEAD";
const GIB: u64 = 1 << 30;

fn long_target() -> String {
    // 200 bytes: far past the 59 bytes that fit in the inode (a "slow" symlink).
    let t = format!("/workspace/{}", "long-target-segment/".repeat(9));
    let t = format!("{t}{}", "x".repeat(200 - t.len()));
    assert_eq!(t.len(), 200);
    t
}

fn raw(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

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

/// The source tree every test image is built from.
fn build_tree(root: &Path) {
    let ws = root.join("workspace");
    std::fs::create_dir_all(ws.join("nested/deeper/deepest")).unwrap();
    std::fs::write(ws.join("a b"), "space").unwrap();
    std::fs::write(ws.join("quote\"d"), "quote").unwrap();
    std::fs::write(ws.join("new\nline"), "newline").unwrap();
    std::fs::write(ws.join("tab\there"), "tab").unwrap();
    std::fs::write(ws.join("ünï"), "unicode").unwrap();
    std::fs::write(ws.join("back\\slash"), "backslash").unwrap();
    std::fs::write(ws.join(raw(b"bad\xff")), "not utf-8").unwrap();
    std::fs::write(ws.join("small.txt"), SMALL).unwrap();
    std::fs::write(ws.join("nested/deeper/deepest/file.txt"), "deep").unwrap();
    std::fs::write(ws.join("nested/top.txt"), "top").unwrap();
    std::os::unix::fs::symlink(long_target(), ws.join("longlink")).unwrap();
    std::os::unix::fs::symlink("a b", ws.join("short")).unwrap();
    std::os::unix::fs::symlink("nested", ws.join("dirlink")).unwrap();
    // A route into the runtime-only area through a symlink: must stay closed.
    std::os::unix::fs::symlink("/run/pyro-secrets", ws.join("sneaky")).unwrap();
    let big = std::fs::File::create(ws.join("big.img")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&big, BIG_HEAD, 0).unwrap();
    big.set_len(GIB).unwrap();
    // Runtime-only paths an old image might carry.
    std::fs::create_dir_all(root.join("run/pyro-secrets")).unwrap();
    std::fs::create_dir_all(root.join("run/pyro-shells/shell-1")).unwrap();
    std::fs::create_dir_all(root.join("run/other")).unwrap();
    let mut token = b"token=".to_vec();
    token.extend_from_slice(MARKER);
    std::fs::write(root.join("run/pyro-secrets/TOKEN"), &token).unwrap();
    std::fs::write(root.join("run/pyro-secrets/we\"ird\nname"), MARKER).unwrap();
    std::fs::write(root.join("run/pyro-shells/shell-1/log"), "shell output").unwrap();
    std::fs::write(root.join("run/other/keep"), "kept").unwrap();
}

fn mkfs(tree: &Path, image: &Path, size: &str) {
    run(Command::new("mkfs.ext4").arg("-q").arg("-F").arg("-d").arg(tree).arg(image).arg(size));
}

/// One image shared by the read-only tests; tests that change an image take a copy.
fn base_image() -> &'static Path {
    static IMAGE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &IMAGE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let tree = dir.path().join("tree");
            build_tree(&tree);
            let image = dir.path().join("rootfs.ext4");
            mkfs(&tree, &image, "64M");
            (dir, image)
        })
        .1
}

fn copy_image(dir: &Path) -> PathBuf {
    let copy = dir.join("copy.ext4");
    run(Command::new("cp").arg("--sparse=always").arg(base_image()).arg(&copy));
    copy
}

fn by_path<'a>(entries: &'a [DiskEntry], path: &str) -> &'a DiskEntry {
    entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("no {path:?} in {entries:#?}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    // Scan in chunks with an overlap for needles that
    // straddle two chunks.
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        let mut window = std::mem::take(&mut carry);
        window.extend_from_slice(&buf[..n]);
        if contains(&window, needle) {
            return true;
        }
        carry = window[window.len().saturating_sub(needle.len())..].to_vec();
    }
}

fn e2fsck_clean(image: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(image).output().unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// The raw-image tests call these: every image they build is raw.
fn list(image: &Path, path: &str, recursive: bool) -> Result<Vec<DiskEntry>, Error> {
    diskimage::list(&DiskImage::raw(image), path, recursive)
}

fn list_with_limits(image: &Path, path: &str, recursive: bool, limits: ListLimits) -> Result<Vec<DiskEntry>, Error> {
    diskimage::list_with_limits(&DiskImage::raw(image), path, recursive, limits)
}

fn read(image: &Path, path: &str, max_bytes: u64) -> Result<(u64, Vec<u8>), Error> {
    diskimage::read(&DiskImage::raw(image), path, max_bytes)
}

fn export(image: &Path, output: &Path) -> Result<u64, Error> {
    diskimage::export(&DiskImage::raw(image), output)
}

fn message(e: Error) -> String {
    e.to_string()
}

#[test]
fn list_shows_children_with_types_sizes_targets_and_escaped_names() {
    let entries = list(base_image(), "/workspace", false).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");

    let file = by_path(&entries, "/workspace/a b");
    assert_eq!((file.artifact_type.as_str(), file.size_bytes, file.link_target.as_deref()), ("file", 5, None));
    assert_eq!(by_path(&entries, "/workspace/quote\"d").size_bytes, 5);
    assert_eq!(by_path(&entries, "/workspace/ünï").size_bytes, 7);
    // Escaped: control characters, invalid UTF-8 and the backslash itself.
    assert_eq!(by_path(&entries, "/workspace/new\\nline").size_bytes, 7);
    assert_eq!(by_path(&entries, "/workspace/tab\\there").size_bytes, 3);
    assert_eq!(by_path(&entries, "/workspace/bad\\xff").size_bytes, 9);
    assert_eq!(by_path(&entries, "/workspace/back\\\\slash").size_bytes, 9);
    assert!(entries.iter().all(|e| !e.path.contains('\n') && !e.path.contains('\t')));

    let long = by_path(&entries, "/workspace/longlink");
    assert_eq!(long.artifact_type, "symlink");
    assert_eq!(long.size_bytes, 200);
    assert_eq!(long.link_target.as_deref(), Some(long_target().as_str()));
    assert_eq!(by_path(&entries, "/workspace/short").link_target.as_deref(), Some("a b"));

    let nested = by_path(&entries, "/workspace/nested");
    assert_eq!((nested.artifact_type.as_str(), nested.size_bytes), ("directory", 0));
    let big = by_path(&entries, "/workspace/big.img");
    assert_eq!((big.artifact_type.as_str(), big.size_bytes), ("file", GIB));
    assert!(!paths.iter().any(|p| p.starts_with("/workspace/nested/")), "not recursive");
}

#[test]
fn recursive_list_descends_directories_only() {
    let entries = list(base_image(), "/workspace", true).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for p in ["/workspace/nested/deeper", "/workspace/nested/deeper/deepest", "/workspace/nested/top.txt"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert_eq!(by_path(&entries, "/workspace/nested/deeper/deepest/file.txt").size_bytes, 4);
    assert_eq!(by_path(&entries, "/workspace/dirlink").artifact_type, "symlink");
    assert!(!paths.iter().any(|p| p.starts_with("/workspace/dirlink/") || p.starts_with("/workspace/sneaky/")));
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(entries.len(), 18, "{paths:#?}");
}

#[test]
fn list_of_a_file_a_symlink_and_a_missing_path() {
    let one = list(base_image(), "/workspace/small.txt", true).unwrap();
    assert_eq!(
        one,
        vec![DiskEntry {
            path: "/workspace/small.txt".into(),
            artifact_type: "file".into(),
            size_bytes: SMALL.len() as u64,
            link_target: None
        }]
    );
    let link = list(base_image(), "/workspace/dirlink", true).unwrap();
    assert_eq!((link.len(), link[0].link_target.as_deref()), (1, Some("nested")));
    // Intermediate symlinks are followed (as debugfs does); the path shown is the one asked for.
    let through = list(base_image(), "/workspace/dirlink/deeper", false).unwrap();
    assert_eq!(through[0].path, "/workspace/dirlink/deeper/deepest");
    let e = list(base_image(), "/workspace/nope", false).unwrap_err();
    assert!(matches!(e, Error::PathNotFound { .. }));
    assert_eq!(message(e), "workspace disk path does not exist: /workspace/nope");
    // A path as `list` shows it can be passed back.
    let bad = list(base_image(), "/workspace/bad\\xff", false).unwrap();
    assert_eq!(bad[0].path, "/workspace/bad\\xff");
    let nl = list(base_image(), "/workspace/new\nline", false).unwrap();
    assert_eq!(nl[0].path, "/workspace/new\\nline");
}

#[test]
fn runtime_only_paths_are_never_shown() {
    let all = list(base_image(), "/", true).unwrap();
    assert!(all.iter().any(|e| e.path == "/run/other/keep"));
    assert!(!all.iter().any(|e| e.path.starts_with("/run/pyro-")), "runtime paths listed");
    for p in ["/run/pyro-secrets", "/run/pyro-secrets/TOKEN", "/run/pyro-shells/shell-1", "/workspace/sneaky/TOKEN"] {
        let e = list(base_image(), p, false).unwrap_err();
        assert!(matches!(e, Error::PathNotFound { .. }), "{p}: {e:?}");
        let e = read(base_image(), p, 100).unwrap_err();
        assert!(matches!(e, Error::PathNotFound { .. }), "{p}: {e:?}");
    }
    // The symlink itself is an ordinary entry.
    let s = list(base_image(), "/workspace/sneaky", false).unwrap();
    assert_eq!(s[0].link_target.as_deref(), Some("/run/pyro-secrets"));
}

#[test]
fn read_returns_size_and_only_the_bytes_asked_for() {
    let t = Instant::now();
    let (size, data) = read(base_image(), "/workspace/big.img", 4096).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "4 KiB of a 1 GiB file took {:?}", t.elapsed());
    assert_eq!(size, GIB);
    assert_eq!(data.len(), 4096);
    assert_eq!(&data[..BIG_HEAD.len()], BIG_HEAD);
    assert!(data[BIG_HEAD.len()..].iter().all(|&b| b == 0));

    let (size, data) = read(base_image(), "/workspace/small.txt", 65536).unwrap();
    assert_eq!((size, data.as_slice()), (SMALL.len() as u64, SMALL.as_bytes()));
    let (size, data) = read(base_image(), "/workspace/small.txt", 5).unwrap();
    assert_eq!((size, data.as_slice()), (SMALL.len() as u64, &SMALL.as_bytes()[..5]));
    // Through a symlinked directory, and by an escaped name.
    let (_, deep) = read(base_image(), "/workspace/dirlink/deeper/deepest/file.txt", 100).unwrap();
    assert_eq!(deep, b"deep");
    assert_eq!(read(base_image(), "/workspace/bad\\xff", 100).unwrap().1, b"not utf-8");
}

#[test]
fn read_refuses_non_files_and_zero_max_bytes() {
    for p in ["/workspace/nested", "/workspace/short", "/workspace/dirlink", "/"] {
        let e = read(base_image(), p, 10).unwrap_err();
        assert_eq!(message(e), "workspace disk read only supports regular files", "{p}");
    }
    let e = read(base_image(), "/workspace/missing", 10).unwrap_err();
    assert_eq!(message(e), "workspace disk path does not exist: /workspace/missing");
    let e = read(base_image(), "/workspace/small.txt", 0).unwrap_err();
    assert!(matches!(e, Error::ZeroReadLimit));
    assert_eq!(message(e), "max_bytes must be positive");
}

#[test]
fn export_copies_sparsely_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/sub/disk.ext4");
    let written = export(base_image(), &out).unwrap();
    let src = std::fs::metadata(base_image()).unwrap();
    let dst = std::fs::metadata(&out).unwrap();
    assert_eq!((written, dst.len()), (src.len(), src.len()));
    assert!(
        dst.blocks() as f64 <= src.blocks() as f64 * 1.1,
        "allocated {} blocks for a source of {}",
        dst.blocks(),
        src.blocks()
    );
    assert_eq!(dst.mode() & 0o777, src.mode() & 0o777);
    e2fsck_clean(&out);
    let cat = run(Command::new("debugfs").arg("-R").arg("cat /workspace/small.txt").arg(&out));
    assert_eq!(cat, SMALL);
    assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1, "only the output is left");

    let e = export(base_image(), &out).unwrap_err();
    assert_eq!(message(e), format!("output_path already exists: {}", out.display()));
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/target", &dangling).unwrap();
    let e = export(base_image(), &dangling).unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }), "{e:?}");
    assert!(!Path::new("/nonexistent/target").exists());
}

#[test]
fn export_failure_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("plain-file");
    std::fs::write(&blocker, "x").unwrap();
    // Root can write anywhere, so force the failure with a parent that is a regular file.
    let e = export(base_image(), &blocker.join("disk.ext4")).unwrap_err();
    assert!(message(e).contains("cannot create the directory for output_path"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("plain-file")]);
    // A missing image fails before anything is created.
    let out = dir.path().join("out/disk.ext4");
    assert!(export(&dir.path().join("missing.ext4"), &out).is_err());
    assert!(!out.exists());
}

/// sha256 would do too; comparing whole files is fine for these small images.
fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn guest_planted_runtime_paths_are_hidden_and_the_image_is_never_written() {
    // pyro keeps the runtime-only paths on the guest's tmpfs /run; an image that has them on disk
    // was made so by the guest. The disk tools must not run a tool on it (no debugfs -w, no
    // e2fsck), must not change a byte of it, and must still hide those paths from list/read.
    let dir = tempfile::tempdir().unwrap();
    let image = copy_image(dir.path());
    let pristine = dir.path().join("pristine.ext4");
    run(Command::new("cp").arg("--sparse=always").arg(&image).arg(&pristine));
    assert!(file_contains(&image, MARKER), "the planted marker must be in the image");

    let all = list(&image, "/", true).unwrap();
    assert!(!all.iter().any(|e| e.path.starts_with("/run/pyro-")), "runtime paths listed");
    assert!(all.iter().any(|e| e.path == "/run/other/keep"));
    assert!(matches!(read(&image, "/run/pyro-secrets/TOKEN", 100), Err(Error::PathNotFound { .. })));
    let out = dir.path().join("exported.ext4");
    export(&image, &out).unwrap();

    assert!(same_bytes(&image, &pristine), "the disk tools changed the workspace image");
    // The raw export is the guest's disk as the guest wrote it, planted files included.
    assert!(same_bytes(&out, &pristine), "the export is not a byte copy of the image");
    e2fsck_clean(&out);
}

#[test]
fn a_symlinked_run_is_ordinary_data_but_runtime_names_stay_hidden() {
    // `/run` is a symlink here: `/run/pyro-*` on disk would be somebody else's directory.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("workspace/elsewhere/pyro-secrets")).unwrap();
    std::fs::write(tree.join("workspace/elsewhere/pyro-secrets/f"), "user data").unwrap();
    std::os::unix::fs::symlink("/workspace/elsewhere", tree.join("run")).unwrap();
    let image = dir.path().join("run-link.ext4");
    mkfs(&tree, &image, "16M");
    assert_eq!(read(&image, "/workspace/elsewhere/pyro-secrets/f", 100).unwrap().1, b"user data");
    // Asked for by its runtime-only name, it is still not shown.
    assert!(matches!(read(&image, "/run/pyro-secrets/f", 100), Err(Error::PathNotFound { .. })));
}

// ---- hostile and corrupt images -------------------------------------------------------------

fn small_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("workspace/d1/d2")).unwrap();
    for i in 0..40 {
        std::fs::write(tree.join(format!("workspace/d1/f{i}")), format!("file {i}")).unwrap();
    }
    std::fs::write(tree.join("workspace/d1/d2/x"), "x").unwrap();
    std::os::unix::fs::symlink("d1/f1", tree.join("workspace/link")).unwrap();
    std::os::unix::fs::symlink(long_target(), tree.join("workspace/slowlink")).unwrap();
    let image = dir.join("small.ext4");
    mkfs(&tree, &image, "8M");
    image
}

fn patch(image: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).unwrap();
}

#[test]
fn bad_superblocks_are_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    let good = std::fs::read(&image).unwrap();

    // s_log_block_size = 20 (1 GiB blocks): the crate would allocate gigabytes.
    patch(&image, 1024 + 24, &20u32.to_le_bytes());
    let e = list(&image, "/workspace", true).unwrap_err();
    assert!(matches!(e, Error::NotExt4 { .. }), "{e:?}");
    assert!(message(e).starts_with("workspace disk image is not a readable ext4 filesystem: "));

    // Random bytes over the whole superblock.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let junk: Vec<u8> = (0..1024).map(|_| next(&mut seed) as u8).collect();
    std::fs::write(&image, &good).unwrap();
    patch(&image, 1024, &junk);
    assert!(list(&image, "/", false).is_err());
    assert!(read(&image, "/workspace/d1/f1", 10).is_err());

    // Huge block count / blocks per group (the loader would allocate per group).
    std::fs::write(&image, &good).unwrap();
    patch(&image, 1024 + 4, &u32::MAX.to_le_bytes());
    patch(&image, 1024 + 0x20, &8u32.to_le_bytes());
    assert!(message(list(&image, "/", false).unwrap_err()).contains("not a readable ext4"));

    // Not an image at all; an empty file.
    std::fs::write(&image, b"hello").unwrap();
    assert!(list(&image, "/", false).is_err());
    std::fs::write(&image, b"").unwrap();
    assert!(read(&image, "/x", 1).is_err());
}

fn next(seed: &mut u64) -> u64 {
    // xorshift64*: deterministic corruption without a dependency.
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn randomly_corrupted_images_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    let good = std::fs::read(&image).unwrap();
    // Metadata lives in the first ~1 MiB of this small image.
    let span = good.len().min(1 << 20);
    let mut seed = 0x1234_5678_9abc_def1u64;
    let corrupt = dir.path().join("corrupt.ext4");
    for round in 0..150 {
        let mut bytes = good.clone();
        for _ in 0..(1 + round % 16) {
            let at = (next(&mut seed) as usize) % span;
            bytes[at] = next(&mut seed) as u8;
        }
        std::fs::write(&corrupt, &bytes).unwrap();
        // Any result is fine; a panic or abort fails the test.
        let _ = list(&corrupt, "/workspace", true);
        let _ = list(&corrupt, "/", true);
        let _ = read(&corrupt, "/workspace/d1/f3", 4096);
        let _ = read(&corrupt, "/workspace/link", 4096);
    }
}

fn debugfs_w(image: &Path, request: &str) {
    let out = run(Command::new("debugfs").arg("-w").arg("-R").arg(request).arg(image));
    assert!(!out.contains("rror"), "{request}: {out}");
}

#[test]
fn forged_huge_sizes_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // A symlink and a file claiming 1 TiB: ext4-view accepts the size and would allocate it for
    // the symlink target (an abort, not a panic).
    const TIB: u64 = 1 << 40;
    debugfs_w(&image, &format!("sif /workspace/slowlink size {TIB}"));
    debugfs_w(&image, &format!("sif /workspace/d1/f2 size {TIB}"));
    // One claiming more blocks than ext4-view accepts at all (a "corrupt" inode).
    debugfs_w(&image, "sif /workspace/d1/f3 size 0x7fffffffffff");
    let entries = list(&image, "/workspace", true).unwrap();
    let link = by_path(&entries, "/workspace/slowlink");
    assert_eq!((link.size_bytes, link.link_target.as_deref()), (TIB, None));
    assert_eq!(by_path(&entries, "/workspace/d1/f2").size_bytes, TIB);
    let bad = by_path(&entries, "/workspace/d1/f3");
    assert_eq!((bad.artifact_type.as_str(), bad.size_bytes), ("file", 0));
    assert_eq!(by_path(&entries, "/workspace/d1/f4").size_bytes, 6, "the rest is still listed");
    assert_eq!(list(&image, "/workspace/slowlink", false).unwrap()[0].link_target, None);
    // Following it as a directory is refused, not attempted.
    assert!(list(&image, "/workspace/slowlink/x", false).is_err());
    assert!(read(&image, "/workspace/slowlink/x", 10).is_err());
    let (size, data) = read(&image, "/workspace/d1/f2", 4096).unwrap();
    assert_eq!(size, TIB);
    assert!(data.len() <= 4096 && data.starts_with(b"file 2"));
    assert!(read(&image, "/workspace/d1/f3", 4096).is_err());
}

#[test]
fn directory_cycles_end_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // A hard link to a directory inside itself: only a corrupt image has one.
    debugfs_w(&image, "link /workspace/d1 /workspace/d1/d2/loop");
    let t = Instant::now();
    let e = list(&image, "/workspace", true).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(60), "took {:?}", t.elapsed());
    let m = message(e);
    assert!(m.contains("deeper than 256") || m.contains("too long"), "{m}");
    // Non-recursive listing of the same tree is fine.
    assert!(list(&image, "/workspace/d1/d2", false).is_ok());
}

#[test]
fn unfinished_journal_that_cannot_be_replayed_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("workspace")).unwrap();
    let image = dir.path().join("j.ext4");
    // A journal without the v3 checksums ext4-view needs for replay, marked as needing recovery.
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^metadata_csum,^64bit", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("16M"));
    debugfs_w(&image, "feature needs_recovery");
    let e = list(&image, "/workspace", false).unwrap_err();
    assert!(matches!(e, Error::UnfinishedJournal { .. }), "{e:?}");
    let m = message(e);
    assert!(m.contains("unfinished journal") && m.contains("`pyro workspace start`"), "{m}");
}

#[test]
fn escaping_round_trips() {
    let cases: [&[u8]; 8] = [
        b"plain",
        b"a b",
        b"quote\"d",
        "ünï".as_bytes(),
        b"new\nline\ttab\r",
        b"back\\slash\\n",
        b"\xff\xfe",
        b"\x1b[31m",
    ];
    for raw in cases {
        let shown = diskimage::escape_guest_bytes(raw);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(diskimage::unescape_guest_path(&shown).as_deref(), Some(raw), "{shown:?}");
    }
    assert_eq!(diskimage::escape_guest_bytes(b"a b\"c"), "a b\"c");
    assert_eq!(diskimage::escape_guest_bytes(b"x\xffy"), "x\\xffy");
    assert_eq!(diskimage::escape_guest_bytes("\u{202e}".as_bytes()), "\\u{202e}");
    assert_eq!(diskimage::unescape_guest_path("bad\\q"), None);
}

// ---- bounds: each one is reached with a small image (smaller limits) or a forged inode -------

fn limits(f: impl FnOnce(&mut ListLimits)) -> ListLimits {
    let mut l = ListLimits::default();
    f(&mut l);
    l
}

#[test]
fn default_bounds_are_the_documented_numbers() {
    let d = ListLimits::default();
    assert_eq!(
        (d.max_depth, d.max_entries, d.max_dir_entries, d.max_dir_bytes, d.max_total_dir_bytes),
        (256, 200_000, 100_000, 64 << 20, 1 << 30)
    );
    assert_eq!(diskimage::MAX_READ_BYTES, 16 << 20);
}

#[test]
fn a_directory_with_too_many_entries_stops_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // d1 has 41 entries (f0..f39 and d2).
    let l = limits(|l| l.max_dir_entries = 40);
    let m = message(list_with_limits(&image, "/workspace/d1", false, l).unwrap_err());
    assert!(m.contains("/workspace/d1 has more than 40 entries"), "{m}");
    let m = message(list_with_limits(&image, "/workspace", true, l).unwrap_err());
    assert!(m.contains("more than 40 entries"), "{m}");
    // At the limit it is fine.
    let l = limits(|l| l.max_dir_entries = 41);
    assert_eq!(list_with_limits(&image, "/workspace/d1", false, l).unwrap().len(), 41);
}

#[test]
fn a_listing_with_too_many_entries_in_total_stops() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // /workspace recursively: d1, 40 files, d2, x, link, slowlink = 45 entries.
    let all = list(&image, "/workspace", true).unwrap();
    assert_eq!(all.len(), 45);
    let l = limits(|l| l.max_entries = 44);
    let m = message(list_with_limits(&image, "/workspace", true, l).unwrap_err());
    assert!(m.contains("stopped at 44 entries"), "{m}");
    let l = limits(|l| l.max_entries = 45);
    assert_eq!(list_with_limits(&image, "/workspace", true, l).unwrap().len(), 45);
}

#[test]
fn nesting_deeper_than_the_depth_bound_stops_the_listing() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // /workspace -> d1 (depth 1) -> d2 (depth 2).
    let l = limits(|l| l.max_depth = 1);
    let m = message(list_with_limits(&image, "/workspace", true, l).unwrap_err());
    assert!(m.contains("deeper than 1 levels at /workspace/d1/d2"), "{m}");
    let l = limits(|l| l.max_depth = 2);
    assert!(list_with_limits(&image, "/workspace", true, l).is_ok());
}

#[test]
fn a_directory_claiming_a_huge_size_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // A forged directory size (1 TiB): reading it would walk 2^28 claimed blocks.
    debugfs_w(&image, &format!("sif /workspace/d1 size {}", 1u64 << 40));
    let t = Instant::now();
    let m = message(list(&image, "/workspace/d1", false).unwrap_err());
    assert!(m.contains("/workspace/d1 claims 1099511627776 bytes"), "{m}");
    let m = message(list(&image, "/workspace", true).unwrap_err());
    assert!(m.contains("claims 1099511627776 bytes"), "{m}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    // The directory itself is still listed by its parent.
    assert_eq!(by_path(&list(&image, "/workspace", false).unwrap(), "/workspace/d1").artifact_type, "directory");
}

#[test]
fn directory_bytes_read_by_one_listing_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    // /workspace, d1 and d2 are one block each.
    let mut sb = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&image).unwrap(), &mut sb, 1024 + 24).unwrap();
    let block = 1024u64 << u32::from_le_bytes(sb);
    let l = limits(|l| l.max_total_dir_bytes = 2 * block);
    let m = message(list_with_limits(&image, "/workspace", true, l).unwrap_err());
    assert!(m.contains(&format!("stopped after reading {} bytes of directories", 2 * block)), "{m}");
    let l = limits(|l| l.max_total_dir_bytes = 3 * block);
    assert!(list_with_limits(&image, "/workspace", true, l).is_ok());
}

#[test]
fn read_max_bytes_has_a_maximum() {
    let max = diskimage::MAX_READ_BYTES;
    for too_much in [max + 4, u64::MAX] {
        let e = read(base_image(), "/workspace/big.img", too_much).unwrap_err();
        assert!(matches!(e, Error::ReadLimitTooLarge { .. }), "{e:?}");
        assert!(message(e).contains("max_bytes must be at most 16777216 bytes (16 MiB)"));
    }
    let e = diskimage::check_read_limit(max + 1).unwrap_err();
    assert!(message(e).contains(&format!("(got {})", max + 1)));
    // The largest read allowed: 16 MiB of the 1 GiB sparse file (plus the UTF-8 slack).
    let (size, data) = read(base_image(), "/workspace/big.img", max + 3).unwrap();
    assert_eq!((size, data.len() as u64), (GIB, max + 3));
    assert!(data.starts_with(BIG_HEAD));
    assert!(diskimage::check_read_limit(max).is_ok());
}

#[test]
fn listing_walk_skips_checksums_that_resolving_and_reading_verify() {
    let dir = tempfile::tempdir().unwrap();
    let image = small_image(dir.path());
    let good = list(&image, "/workspace", true).unwrap();
    // Break the CRC32C in the tail of /workspace/d1's first directory block; its entries stay.
    let block_size: u64 = run(Command::new("dumpe2fs").arg("-h").arg(&image))
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let block: u64 = run(Command::new("debugfs").arg("-R").arg("blocks /workspace/d1").arg(&image))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tail = block * block_size + block_size - 4;
    let bytes = std::fs::read(&image).unwrap();
    let flipped: Vec<u8> = bytes[tail as usize..tail as usize + 4].iter().map(|b| !b).collect();
    patch(&image, tail, &flipped);

    // Resolving a path through it (read, and list of a path below it) verifies: corrupt.
    let e = read(&image, "/workspace/d1/f1", 100).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    assert!(message(e).contains("check it with `e2fsck -fn`"));
    assert!(matches!(list(&image, "/workspace/d1/f1", false), Err(Error::Corrupt { .. })));
    // The walk below the verified path shows the same entries as before.
    assert_eq!(list(&image, "/workspace", true).unwrap(), good);
}
