//! Seeding from a list of paths (what `git ls-files -z` prints) instead of a whole directory.
//!
//! A project's working tree is messy: sockets and fifos left by a dev server, files only
//! root can read, hundreds of megabytes of ignored build output. The list decides what is
//! taken (so ignored output is never even opened); every listed path that cannot be archived
//! is *skipped with a reason* instead of failing the seed, because a seed that fails on junk
//! the user never meant to ship is worse than one that says what it left out.
//!
//! The archive obeys the same rules as every other seed ([`crate::archive`]): directories,
//! regular files and symlinks only; symlinks are stored as symlinks, never followed; members
//! are sorted, relative and free of `..`. A listed path below a symlink is skipped (a
//! symlinked directory is a link, not a directory to descend into).

use crate::archive::read_no_follow;
use crate::member::{member_name, MemberName};
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A listed path left out of the seed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path relative to the root, as listed.
    pub path: String,
    /// Why: `socket`, `fifo`, `unreadable: ...`, `missing from the working tree`, ...
    pub reason: String,
}

/// What [`build_tar_from_list`] produced.
#[derive(Debug, Default)]
pub struct ListedTar {
    /// The uncompressed, validated tar.
    pub tar: Vec<u8>,
    /// Members archived (directories, files, symlinks).
    pub entry_count: u64,
    /// Bytes of regular-file content archived.
    pub bytes: u64,
    /// Listed paths that were left out, in listing order.
    pub skipped: Vec<Skipped>,
}

/// Split NUL-terminated output (`git ls-files -z`) into paths, dropping empty records and
/// duplicates (an unmerged file is listed once per stage), sorted by bytes.
pub fn parse_nul_list(raw: &[u8]) -> Vec<PathBuf> {
    let set: BTreeSet<&[u8]> = raw.split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    set.into_iter().map(|s| PathBuf::from(std::ffi::OsStr::from_bytes(s))).collect()
}

/// Archive the listed paths below `root` (each relative to it). Parent directories are
/// added as needed with their host modes; a listed directory (a Git submodule) is added
/// empty with a note. Never fails because of one path; fails only when `root` is not a
/// readable directory or the archive cannot be written.
pub fn build_tar_from_list(root: &Path, paths: &[PathBuf]) -> Result<ListedTar> {
    let meta = fs::metadata(root).map_err(|e| Error::io(format!("reading {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", root.display())));
    }
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    sorted.dedup();
    let mut out = ListedTar::default();
    let mut builder = tar::Builder::new(Vec::new());
    // Directories already in the archive, and paths known not to be directories on the host.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut not_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for listed in sorted {
        let shown = listed.to_string_lossy().into_owned();
        let skip = |out: &mut ListedTar, reason: String| out.skipped.push(Skipped { path: shown.clone(), reason });
        let rel = match member_name(listed.as_os_str().as_bytes()) {
            Ok(MemberName::Path(p)) if !listed.is_absolute() => p,
            _ => {
                skip(&mut out, "not a relative path inside the project".into());
                continue;
            }
        };
        // Every ancestor must be a real directory on the host: never descend through a link.
        let mut ancestors: Vec<PathBuf> =
            rel.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()).map(Path::to_path_buf).collect();
        ancestors.reverse();
        let mut blocked = None;
        for a in &ancestors {
            if dirs.contains(a) {
                continue;
            }
            if not_dirs.contains(a) {
                blocked = Some(a.clone());
                break;
            }
            match fs::symlink_metadata(root.join(a)) {
                Ok(m) if m.file_type().is_dir() => {
                    append_dir(&mut builder, a, &m).map_err(|e| Error::io(format!("archiving {}", a.display()), e))?;
                    out.entry_count += 1;
                    dirs.insert(a.clone());
                }
                _ => {
                    not_dirs.insert(a.clone());
                    blocked = Some(a.clone());
                    break;
                }
            }
        }
        if let Some(a) = blocked {
            skip(&mut out, format!("below {}, which is not a directory (a symlink?)", a.display()));
            continue;
        }
        let full = root.join(&rel);
        let m = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                skip(&mut out, "missing from the working tree (deleted but not committed?)".into());
                continue;
            }
            Err(e) => {
                skip(&mut out, format!("unreadable: {e}"));
                continue;
            }
        };
        let ft = m.file_type();
        let mut header = header_of(&m);
        let written = if ft.is_symlink() {
            let target = match fs::read_link(&full) {
                Ok(t) => t,
                Err(e) => {
                    skip(&mut out, format!("unreadable link: {e}"));
                    continue;
                }
            };
            header.set_entry_type(tar::EntryType::Symlink);
            not_dirs.insert(rel.clone());
            builder.append_link(&mut header, &rel, &target)
        } else if ft.is_dir() {
            if dirs.contains(&rel) {
                continue;
            }
            skip(&mut out, "a directory (a Git submodule?): added empty, its contents are not seeded".into());
            dirs.insert(rel.clone());
            append_dir(&mut builder, &rel, &m)
        } else if ft.is_file() {
            // Read the whole file first so a file growing meanwhile cannot make the header lie.
            let data = match read_no_follow(&full) {
                Ok(d) => d,
                Err(Error::Io { source, .. }) => {
                    skip(&mut out, format!("unreadable: {source}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            out.bytes += data.len() as u64;
            not_dirs.insert(rel.clone());
            builder.append_data(&mut header, &rel, data.as_slice())
        } else {
            skip(&mut out, special_kind(&ft).into());
            continue;
        };
        written.map_err(|e| Error::io(format!("archiving {}", full.display()), e))?;
        out.entry_count += 1;
    }
    out.tar = builder.into_inner().map_err(|e| Error::io("finishing the archive", e))?;
    Ok(out)
}

fn header_of(m: &fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(m.mode() & 0o7777);
    header.set_mtime(m.mtime().max(0) as u64);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header
}

fn append_dir(builder: &mut tar::Builder<Vec<u8>>, rel: &Path, m: &fs::Metadata) -> std::io::Result<()> {
    let mut header = header_of(m);
    header.set_entry_type(tar::EntryType::Directory);
    builder.append_data(&mut header, rel, std::io::empty())
}

fn special_kind(ft: &fs::FileType) -> &'static str {
    if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{for_each_member, MemberKind};
    use std::os::unix::fs::PermissionsExt;

    fn members(tar: &[u8]) -> Vec<(String, MemberKind)> {
        let mut v = Vec::new();
        crate::archive::count_tar(tar).unwrap();
        for_each_member(tar, |m, _| {
            v.push((m.path_str(), m.kind.clone()));
            Ok(())
        })
        .unwrap();
        v
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn nul_lists_are_split_sorted_and_deduplicated() {
        let got = parse_nul_list(b"b\0a/x\0\0b\0a b\0");
        assert_eq!(got, paths(&["a b", "a/x", "b"]));
        assert!(parse_nul_list(b"").is_empty());
        // Non-UTF-8 names survive byte for byte.
        let odd = parse_nul_list(b"caf\xe9\0");
        assert_eq!(odd[0].as_os_str().as_bytes(), b"caf\xe9");
    }

    #[test]
    fn only_listed_paths_are_archived_with_parents_and_links() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/deep")).unwrap();
        fs::write(r.join("src/deep/a.rs"), "fn a() {}").unwrap();
        fs::write(r.join("README"), "hi").unwrap();
        fs::write(r.join("not-listed"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside", r.join("link")).unwrap();
        let t = build_tar_from_list(r, &paths(&["src/deep/a.rs", "README", "link"])).unwrap();
        assert!(t.skipped.is_empty(), "{:?}", t.skipped);
        let got = members(&t.tar);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["README", "link", "src", "src/deep", "src/deep/a.rs"]);
        assert_eq!(got[1].1, MemberKind::Symlink { target: "../outside".into() });
        assert_eq!((t.entry_count, t.bytes), (5, 11));
    }

    #[test]
    fn junk_is_skipped_with_a_reason_instead_of_failing() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("ok"), "x").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
        let fifo = std::ffi::CString::new(r.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        fs::write(r.join("secret"), "x").unwrap();
        fs::set_permissions(r.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        std::os::unix::fs::symlink("elsewhere", r.join("dirlink")).unwrap();
        fs::create_dir(r.join("sub")).unwrap();
        let list = paths(&["ok", "sock", "fifo", "secret", "gone", "dirlink/x", "sub", "/abs", "a/../b"]);
        let t = build_tar_from_list(r, &list).unwrap();
        let reasons: std::collections::BTreeMap<&str, &str> =
            t.skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
        assert_eq!(reasons["sock"], "socket");
        assert_eq!(reasons["fifo"], "fifo");
        assert!(reasons["gone"].starts_with("missing"), "{reasons:?}");
        assert!(reasons["dirlink/x"].starts_with("below dirlink"), "{reasons:?}");
        assert!(reasons["sub"].contains("submodule"), "{reasons:?}");
        assert!(reasons["/abs"].starts_with("not a relative path"), "{reasons:?}");
        assert!(reasons["a/../b"].starts_with("not a relative path"), "{reasons:?}");
        // root reads everything: the unreadable case only holds for other users.
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let names: Vec<String> = members(&t.tar).into_iter().map(|(n, _)| n).collect();
        if root {
            assert_eq!(names, ["ok", "secret", "sub"]);
        } else {
            assert!(reasons["secret"].starts_with("unreadable"), "{reasons:?}");
            assert_eq!(names, ["ok", "sub"]);
        }
    }

    #[test]
    fn root_must_be_a_directory() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), "x").unwrap();
        assert!(build_tar_from_list(&d.path().join("f"), &[]).is_err());
        assert!(build_tar_from_list(&d.path().join("missing"), &[]).is_err());
        let empty = build_tar_from_list(d.path(), &[]).unwrap();
        assert_eq!(empty.entry_count, 0);
        assert!(members(&empty.tar).is_empty());
    }
}
