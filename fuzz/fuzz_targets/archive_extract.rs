//! Archives from the guest (exports, diff trees) and from users (seeds): the host's safe
//! extraction rules. Each input is extracted into a fresh directory, exported as a file,
//! directory and symlink artifact, normalised, counted and diffed against itself and an empty
//! tree. Nothing may panic, and nothing may appear outside the destinations: a sentinel
//! directory beside them must stay empty, and no other name may appear in the parent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pyro_tree::{archive, diff};
use std::path::Path;

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let _ = archive::count_tar(data);
    let _ = archive::normalize_tar(data);
    let _ = diff::diff_trees(data, &archive::empty_tar());
    let _ = diff::diff_trees(&archive::empty_tar(), data);
    let _ = diff::diff_trees(data, data);

    let root = tempfile::tempdir().unwrap();
    let sentinel = root.path().join("outside");
    std::fs::create_dir(&sentinel).unwrap();
    let _ = archive::extract_tar_safely(data, &root.path().join("dest"));
    for kind in ["file", "directory", "symlink"] {
        let _ = archive::materialize_export(data, kind, &root.path().join(format!("out-{kind}")));
    }
    assert!(names_in(&sentinel).is_empty(), "an archive member escaped into a sibling directory");
    for name in names_in(root.path()) {
        assert!(
            ["dest", "outside", "out-file", "out-directory", "out-symlink"].contains(&name.as_str()),
            "an archive member or a temporary file escaped into the parent: {name}"
        );
    }
    // Extracted trees may hold read-only directories: make them removable again.
    make_writable(root.path());
});

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700));
            make_writable(&e.path());
        }
    }
}
