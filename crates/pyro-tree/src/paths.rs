//! Guest path normalisation for the live file tools, archive destinations and disk tools.
//!
//! All of this is lexical: the host never resolves a guest path against a real filesystem.
//! Rejecting `..` outright (instead of resolving it) is what keeps a live-file or archive
//! path from naming anything outside `/workspace`, whatever the guest's symlinks look like.

use crate::{Error, Result};

/// The guest path of the work tree.
pub const WORKSPACE_ROOT: &str = "/workspace";

/// Normalise a live-file path (`file list/read/write`, patch targets) to an absolute guest path under `/workspace`.
pub fn normalize_workspace_path(path: &str) -> Result<String> {
    inside_workspace(path, "workspace path")
}

/// Normalise an archive destination (`--dest`, export path, service/shell cwd, readiness file).
pub fn normalize_destination(path: &str) -> Result<String> {
    inside_workspace(path, "workspace destination")
}

/// Normalise a path for the stopped-disk tools: absolute paths may name anything in the guest filesystem.
pub fn normalize_disk_path(path: &str) -> Result<String> {
    let p = path.trim();
    if p.is_empty() {
        return Err(Error::Invalid("workspace disk path must not be empty".into()));
    }
    reject_nul(p, "workspace disk path")?;
    if !p.starts_with('/') {
        // Relative disk paths mean "in the work tree", with the live-file rules.
        return normalize_workspace_path(p);
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            // `..` at the root stays at the root, as the kernel resolves it.
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Shared rules of the live-file and destination paths; `what` names the path in messages.
fn inside_workspace(path: &str, what: &str) -> Result<String> {
    let p = path.trim();
    if p.is_empty() {
        return Err(Error::Invalid(format!("{what} must not be empty")));
    }
    reject_nul(p, what)?;
    let outside = || Error::Invalid(format!("{what} must stay inside {WORKSPACE_ROOT}"));
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    if segments.contains(&"..") {
        return Err(outside());
    }
    let absolute =
        if p.starts_with('/') { format!("/{}", segments.join("/")) } else { join_root(WORKSPACE_ROOT, &segments) };
    if absolute == WORKSPACE_ROOT || absolute.starts_with("/workspace/") {
        Ok(absolute)
    } else {
        Err(outside())
    }
}

/// Whether a path the guest reported is a plain absolute path (no NUL, no empty, `.` or `..`
/// segment) equal to or under `base` (a normalised absolute path). The guest is hostile:
/// what fails is dropped, never repaired.
pub fn is_plain_path_under(path: &str, base: &str) -> bool {
    let plain = path.starts_with('/')
        && !path.contains('\0')
        && (path == "/" || path[1..].split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    let under = path == base || base == "/" || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
    plain && under
}

fn join_root(root: &str, segments: &[&str]) -> String {
    if segments.is_empty() {
        root.to_string()
    } else {
        format!("{root}/{}", segments.join("/"))
    }
}

/// A NUL can never be part of a Linux path; catching it here gives a clear message instead
/// of a confusing failure deep in the guest.
fn reject_nul(p: &str, what: &str) -> Result<()> {
    if p.contains('\0') {
        return Err(Error::Invalid(format!("{what} must not contain NUL characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn guest_paths_must_be_plain_and_under_the_base() {
        assert!(super::is_plain_path_under("/workspace/a/b.txt", "/workspace"));
        assert!(super::is_plain_path_under("/workspace", "/workspace"));
        for bad in [
            "../../x",
            "/workspace/../etc",
            "/workspace/a/./b",
            "/etc/passwd",
            "/workspacex",
            "/workspace/a\0b",
            "/workspace//a",
            "relative",
        ] {
            assert!(!super::is_plain_path_under(bad, "/workspace"), "{bad:?}");
        }
    }

    use super::*;

    fn msg(r: Result<String>) -> String {
        match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn workspace_paths_are_absolute_and_inside() {
        assert_eq!(normalize_workspace_path("src/a.py").unwrap(), "/workspace/src/a.py");
        assert_eq!(normalize_workspace_path(" ./src//./a.py/ ").unwrap(), "/workspace/src/a.py");
        assert_eq!(normalize_workspace_path("/workspace").unwrap(), "/workspace");
        assert_eq!(normalize_workspace_path("/workspace/").unwrap(), "/workspace");
        assert_eq!(normalize_workspace_path(".").unwrap(), "/workspace");
        assert_eq!(normalize_workspace_path("//workspace//x").unwrap(), "/workspace/x");
        assert_eq!(normalize_workspace_path("dir with space/f").unwrap(), "/workspace/dir with space/f");
    }

    #[test]
    fn workspace_paths_reject_escapes() {
        assert_eq!(msg(normalize_workspace_path("  ")), "workspace path must not be empty");
        let outside = "workspace path must stay inside /workspace";
        for bad in ["..", "../x", "a/../b", "/workspace/../etc", "/etc/x", "/", "/workspace2/x", "/workspacex"] {
            assert_eq!(msg(normalize_workspace_path(bad)), outside, "{bad}");
        }
        assert!(normalize_workspace_path("a\0b").is_err());
        // `..` as part of a longer name is an ordinary name.
        assert_eq!(normalize_workspace_path("a..b/..c").unwrap(), "/workspace/a..b/..c");
    }

    #[test]
    fn destinations_use_their_own_messages() {
        assert_eq!(normalize_destination("/workspace").unwrap(), "/workspace");
        assert_eq!(normalize_destination("vendor/lib").unwrap(), "/workspace/vendor/lib");
        assert_eq!(msg(normalize_destination("")), "workspace destination must not be empty");
        assert_eq!(msg(normalize_destination("../x")), "workspace destination must stay inside /workspace");
        assert_eq!(msg(normalize_destination("/tmp")), "workspace destination must stay inside /workspace");
    }

    #[test]
    fn disk_paths_may_leave_the_workspace_when_absolute() {
        assert_eq!(normalize_disk_path("/etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(normalize_disk_path("/").unwrap(), "/");
        assert_eq!(normalize_disk_path("/../..").unwrap(), "/");
        assert_eq!(normalize_disk_path("/workspace/../etc/./hosts/").unwrap(), "/etc/hosts");
        assert_eq!(normalize_disk_path("/a/b/../../../c").unwrap(), "/c");
        assert_eq!(normalize_disk_path("src/main.rs").unwrap(), "/workspace/src/main.rs");
        assert_eq!(msg(normalize_disk_path("../etc")), "workspace path must stay inside /workspace");
        assert_eq!(msg(normalize_disk_path(" ")), "workspace disk path must not be empty");
    }
}
