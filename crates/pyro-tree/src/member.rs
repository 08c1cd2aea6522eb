//! The safe tar member-path rule, shared by every archive reader of the host and the guest.
//!
//! A member name is untrusted input (a user's seed archive, or a guest's export): it must
//! not name anything outside the directory it is extracted into. The rule is lexical and
//! strict: the name is relative, and no segment is `..`. Empty and `.` segments are dropped,
//! so `./a//b` is `a/b`.
//!
//! A name with no segment left (`""`, `.`, `./`) names the destination itself. A
//! *directory* entry with such a name is what `tar -C dir -cf x.tar .` writes first; it is
//! skipped, because the destination already exists (extraction creates it) and refusing it
//! would refuse the most common way to make an archive. Any other entry with such a name
//! (a file or a link) would have to replace the destination itself: it is an error, never
//! silently dropped, since dropping it would lose content without a word.

use crate::{Error, Result};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What a validated member name refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberName {
    /// The destination itself (`""`, `.`, `./`): only a directory entry may have it, and it
    /// creates nothing.
    Root,
    /// A normalised relative path: no leading `./`, no empty or `.` segment, never `..`.
    Path(PathBuf),
}

/// Validate a raw member name (the bytes stored in the archive).
///
/// Errors: an absolute name, or any `..` segment. See the module docs for [`MemberName::Root`].
pub fn member_name(raw: &[u8]) -> Result<MemberName> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.starts_with(b"/") {
        return Err(Error::Invalid(format!("archive member must be a relative path: {}", shown())));
    }
    let mut out = PathBuf::new();
    for seg in raw.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Invalid(format!("archive member must stay inside the tree (no '..'): {}", shown())))
            }
            s => out.push(OsStr::from_bytes(s)),
        }
    }
    Ok(if out.as_os_str().is_empty() { MemberName::Root } else { MemberName::Path(out) })
}

/// The member rule as extraction applies it: `Ok(None)` for a directory entry naming the
/// destination itself (skipped), the relative path otherwise; an error for a bad name or a
/// non-directory entry with no name.
pub fn member_path(raw: &[u8], is_directory: bool) -> Result<Option<PathBuf>> {
    match member_name(raw)? {
        MemberName::Path(p) => Ok(Some(p)),
        MemberName::Root if is_directory => Ok(None),
        MemberName::Root => Err(Error::Invalid("archive member has an empty name".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<Option<PathBuf>>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn names_are_normalised_relative_paths() {
        assert_eq!(member_path(b"a/b", false).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(member_path(b"./a//./b/", true).unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(member_path(b"a..b/..c", false).unwrap(), Some(PathBuf::from("a..b/..c")));
        assert_eq!(member_path(b"\xff\xfe", false).unwrap(), Some(PathBuf::from(OsStr::from_bytes(b"\xff\xfe"))));
    }

    #[test]
    fn escapes_are_refused() {
        assert_eq!(msg(member_path(b"/etc/passwd", false)), "archive member must be a relative path: /etc/passwd");
        for bad in [&b".."[..], b"../x", b"a/../../x", b"a/..", b"./.."] {
            assert!(msg(member_path(bad, true)).contains("must stay inside the tree (no '..')"), "{bad:?}");
        }
    }

    /// The pinned decision for a name with no segment: a directory entry is the root entry
    /// `tar -C dir -cf x.tar .` writes and is skipped; anything else is an error. The agent
    /// pins the same on its side (`crates/pyro-agent/src/fs.rs`, `empty_member_names`).
    #[test]
    fn empty_names_skip_a_root_directory_and_refuse_anything_else() {
        for root in [&b""[..], b".", b"./", b".//./"] {
            assert_eq!(member_name(root).unwrap(), MemberName::Root, "{root:?}");
            assert_eq!(member_path(root, true).unwrap(), None, "{root:?}");
            assert_eq!(msg(member_path(root, false)), "archive member has an empty name", "{root:?}");
        }
    }
}
