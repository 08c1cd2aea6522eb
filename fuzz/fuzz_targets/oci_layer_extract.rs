//! A layer blob comes from a registry: hostile input to `pyro_oci::layer::extract`. Each
//! input is written to a file and extracted twice into fresh directories: once selecting
//! every member under a counter name (`f0`, `f1`, ...) with a 1 MiB limit, once with the
//! engine's mapping (`vmlinux`, `rootfs.ext4`, `modules/<file name>`). Nothing may panic,
//! nothing may appear outside the destination (a sentinel directory beside it stays empty,
//! no other name appears in the parent), and every file written is within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_oci::layer::{extract, Extract};
use pyro_oci::ByteProgress;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MAX_ANY: u64 = 1 << 20;
const MAX_KERNEL: u64 = 256 << 10;
const MAX_MODULE: u64 = 64 << 10;
const MAX_ROOTFS: u64 = 1 << 20;

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Every entry under `dir` (relative path -> size), failing on anything but files and
/// directories: extraction never creates a symlink or a special file.
fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, u64>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{rel}{}", e.file_name().to_string_lossy());
        let meta = e.path().symlink_metadata().unwrap();
        if meta.is_dir() {
            walk(&e.path(), &format!("{name}/"), out);
        } else {
            assert!(meta.is_file(), "extraction created a non-regular file {name}");
            // A zero-block hole must not turn into more allocated bytes than the apparent size.
            assert!(meta.blocks() * 512 <= meta.len().next_multiple_of(4096) + 4096, "{name} over-allocated");
            out.insert(name, meta.len());
        }
    }
}

/// The engine's mapping of member names to fixed destinations.
fn engine_select(member: &str) -> Option<Extract> {
    let file = member.rsplit('/').next().unwrap_or(member);
    let parent = member.rsplit('/').nth(1);
    match file {
        "vmlinux" => Some(Extract { dest: "vmlinux".into(), max_bytes: MAX_KERNEL }),
        "rootfs.ext4" => Some(Extract { dest: "rootfs.ext4".into(), max_bytes: MAX_ROOTFS }),
        "order" if parent == Some("modules") => Some(Extract { dest: "modules/order".into(), max_bytes: MAX_MODULE }),
        f if parent == Some("modules") && f.ends_with(".ko") && !f.starts_with('.') => {
            Some(Extract { dest: PathBuf::from("modules").join(f), max_bytes: MAX_MODULE })
        }
        _ => None,
    }
}

fn limit_of(rel: &str) -> u64 {
    match rel {
        "vmlinux" => MAX_KERNEL,
        "rootfs.ext4" => MAX_ROOTFS,
        r if r.starts_with("modules/") => MAX_MODULE,
        _ => MAX_ANY,
    }
}

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().unwrap();
    let blob = root.path().join("blob");
    std::fs::write(&blob, data).unwrap();
    let sentinel = root.path().join("outside");
    std::fs::create_dir(&sentinel).unwrap();

    // Every member, each to its own counter name.
    let all = root.path().join("all");
    std::fs::create_dir(&all).unwrap();
    let mut n = 0usize;
    let mut select_all = |_: &str| {
        n += 1;
        Some(Extract { dest: PathBuf::from(format!("f{n}")), max_bytes: MAX_ANY })
    };
    let got = extract(&blob, &mut select_all, &all, &ByteProgress::silent());
    let mut files = BTreeMap::new();
    walk(&all, "", &mut files);
    for (name, size) in &files {
        assert!(*size <= MAX_ANY, "{name} is {size} bytes, over its limit");
    }
    if let Ok(got) = got {
        for e in &got {
            assert!(e.path.starts_with(&all), "{} written outside", e.path.display());
            assert_eq!(files.get(e.path.strip_prefix(&all).unwrap().to_str().unwrap()), Some(&e.size));
        }
    }

    // The engine's names; a second member with a name already written overwrites it.
    let engine = root.path().join("engine");
    std::fs::create_dir(&engine).unwrap();
    let got = extract(&blob, &mut engine_select, &engine, &ByteProgress::silent());
    let mut files = BTreeMap::new();
    walk(&engine, "", &mut files);
    for (name, size) in &files {
        assert!(name == "modules" || engine_select_dest_ok(name), "unexpected destination {name}");
        assert!(*size <= limit_of(name), "{name} is {size} bytes, over its limit");
    }
    if let Ok(got) = got {
        for e in &got {
            assert!(e.path.starts_with(&engine), "{} written outside", e.path.display());
        }
    }

    assert!(names_in(&sentinel).is_empty(), "a layer member escaped into a sibling directory");
    assert_eq!(names_in(root.path()), ["all", "blob", "engine", "outside"], "a member escaped into the parent");
});

fn engine_select_dest_ok(rel: &str) -> bool {
    rel == "vmlinux" || rel == "rootfs.ext4" || rel.strip_prefix("modules/").is_some_and(|f| !f.contains('/'))
}
