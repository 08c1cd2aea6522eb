//! Tar archives: the member rule every archive pyro reads obeys, and (feature `host`) the
//! host's seed sources, archive building, normalisation, safe extraction and exports.
//!
//! Rules shared by every archive pyro reads (seed, sync, snapshot, export, diff, and the
//! guest agent's extraction of what the host uploads):
//! - member names are relative and have no `..` segment (see [`crate::member`]: a leading
//!   `./` is dropped, the bare `./` root directory entry that `tar -C dir -cf x.tar .`
//!   writes is skipped, any other member without a name is refused);
//! - only directories, regular files and symlinks; hard links and special files are refused;
//! - symlinks are kept as symlinks whatever they point at (a link pointing outside the tree
//!   is kept but never followed). Safety comes from extraction, which never writes through a
//!   link, not from rejecting links.
//!
//! The guest agent writes members with its own code (it keeps set-id bits and syncs the
//! filesystem once at the end) but takes every member from [`member_of`], so host and guest
//! accept exactly the same archives.

use crate::member::member_path;
use crate::{Error, Result};
#[cfg(feature = "host")]
use std::collections::HashMap;
#[cfg(feature = "host")]
use std::fs;
use std::io::Read;
#[cfg(feature = "host")]
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
#[cfg(feature = "host")]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permission bits kept for files written on the host. Set-id bits are dropped: a file
/// exported from a guest must not become a set-uid program of the host user.
#[cfg(feature = "host")]
const HOST_FILE_MODE_MASK: u32 = 0o777;
/// Permission bits kept for directories written on the host (sticky is harmless).
#[cfg(feature = "host")]
const HOST_DIR_MODE_MASK: u32 = 0o1777;

/// Where a seed or sync archive comes from.
#[cfg(feature = "host")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSource {
    /// A host directory; its children are archived.
    Directory(PathBuf),
    /// A `.tar`, `.tar.gz` or `.tgz` file (compression is detected from the content).
    Archive(PathBuf),
}

#[cfg(feature = "host")]
impl SeedSource {
    /// Classify a host path as a directory or tar archive; the stored path is absolute and resolved.
    pub fn classify(path: impl AsRef<Path>) -> Result<SeedSource> {
        let given = expand_home(path.as_ref());
        if given.as_os_str().is_empty() {
            return Err(Error::Invalid("seed_path must not be empty".into()));
        }
        let abs = std::path::absolute(&given).map_err(|e| Error::io("resolving seed_path", e))?;
        let meta = match fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Invalid(format!("seed_path {} does not exist", abs.display())))
            }
            Err(e) => return Err(Error::io(format!("reading seed_path {}", abs.display()), e)),
        };
        let resolved = fs::canonicalize(&abs).map_err(|e| Error::io(format!("resolving {}", abs.display()), e))?;
        if meta.is_dir() {
            return Ok(SeedSource::Directory(resolved));
        }
        // The name the user typed counts as well as the resolved one, so a symlink named
        // `seed.tgz` pointing at a content-addressed blob still works.
        if meta.is_file() && (has_tar_suffix(&abs) || has_tar_suffix(&resolved)) {
            return Ok(SeedSource::Archive(resolved));
        }
        Err(Error::Invalid("seed_path must be a directory or a .tar/.tar.gz/.tgz archive".into()))
    }

    /// The payload `mode`: `directory` or `tar_archive`.
    pub fn mode(&self) -> &'static str {
        match self {
            SeedSource::Directory(_) => "directory",
            SeedSource::Archive(_) => "tar_archive",
        }
    }

    /// The absolute, resolved host path.
    pub fn path(&self) -> &Path {
        match self {
            SeedSource::Directory(p) | SeedSource::Archive(p) => p,
        }
    }

    /// Produce the validated, uncompressed tar that is sent to the guest.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        match self {
            SeedSource::Directory(dir) => build_tar_from_dir(dir),
            SeedSource::Archive(file) => {
                let f = fs::File::open(file).map_err(|e| Error::io(format!("opening {}", file.display()), e))?;
                normalize_tar(f).map_err(|e| match e {
                    Error::Invalid(_) | Error::InvalidTar(_) => {
                        Error::InSeedArchive { path: file.clone(), source: Box::new(e) }
                    }
                    other => other,
                })
            }
        }
    }
}

#[cfg(feature = "host")]
fn has_tar_suffix(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// `~` and `~/x` mean the user's home, as the reference's `expanduser` does.
#[cfg(feature = "host")]
fn expand_home(p: &Path) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    if bytes == b"~" || bytes.starts_with(b"~/") {
        if let Some(home) = std::env::var_os("HOME") {
            let rest = bytes[1..].strip_prefix(b"/").unwrap_or(&[]);
            return PathBuf::from(home).join(std::ffi::OsStr::from_bytes(rest));
        }
    }
    p.to_path_buf()
}

/// The kind of one archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A directory.
    Directory,
    /// A regular file of `size` bytes.
    File {
        /// Content length in bytes.
        size: u64,
    },
    /// A symbolic link; the target is stored verbatim and never resolved.
    Symlink {
        /// The link target exactly as archived.
        target: PathBuf,
    },
}

/// One validated archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Normalised relative path: no leading `./`, no empty or `.` segments, never `..`.
    pub path: PathBuf,
    /// What the member is.
    pub kind: MemberKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

impl Member {
    /// The member path as text (lossy for names that are not UTF-8).
    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Read an uncompressed tar, validate every member and call `visit` with it and its content; returns (entry_count, bytes_written).
///
/// `entry_count` counts all members; `bytes_written` sums regular file sizes. The content
/// reader yields the file's bytes (nothing for directories and symlinks).
pub fn for_each_member<R: Read>(
    input: R,
    visit: impl FnMut(&Member, &mut dyn Read) -> Result<()>,
) -> Result<(u64, u64)> {
    try_for_each_member(input, visit)
}

/// [`for_each_member`] for a visitor with its own error type (the guest agent's), into which
/// the archive's own errors convert.
pub fn try_for_each_member<R: Read, E: From<Error>>(
    input: R,
    mut visit: impl FnMut(&Member, &mut dyn Read) -> std::result::Result<(), E>,
) -> std::result::Result<(u64, u64), E> {
    let mut archive = tar::Archive::new(input);
    let (mut count, mut bytes) = (0u64, 0u64);
    for entry in archive.entries().map_err(Error::InvalidTar)? {
        let mut entry = entry.map_err(Error::InvalidTar)?;
        let Some(member) = member_of(&entry)? else { continue };
        count += 1;
        if let MemberKind::File { size } = member.kind {
            bytes += size;
        }
        visit(&member, &mut entry)?;
    }
    Ok((count, bytes))
}

/// Validate one tar entry as an archive member: its name ([`crate::member::member_path`]),
/// its type (directory, regular file or symlink with a target) and its mode.
///
/// `Ok(None)` for entries that are not members: a pax global header (metadata for the whole
/// archive; `git archive` writes one) and the root directory entry `./`. This is the one
/// member rule of pyro: the host's readers and the guest agent's extraction both call it.
pub fn member_of<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Option<Member>> {
    let entry_type = entry.header().entry_type();
    if entry_type == tar::EntryType::XGlobalHeader {
        return Ok(None);
    }
    let raw_name = entry.path_bytes();
    let shown = || String::from_utf8_lossy(&raw_name).into_owned();
    let Some(path) = member_path(&raw_name, entry_type == tar::EntryType::Directory)? else {
        return Ok(None);
    };
    let kind = match entry_type {
        tar::EntryType::Directory => MemberKind::Directory,
        tar::EntryType::Regular | tar::EntryType::Continuous => MemberKind::File { size: entry.size() },
        tar::EntryType::Symlink => {
            let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            if target.is_empty() {
                return Err(Error::Invalid(format!("archive symlink {} has an empty target", shown())));
            }
            MemberKind::Symlink { target: PathBuf::from(std::ffi::OsString::from_vec(target)) }
        }
        tar::EntryType::Link => {
            return Err(Error::Invalid(format!(
                "archive member {} is a hard link; hard links are not supported (store it as a regular file)",
                shown()
            )))
        }
        other => {
            return Err(Error::Invalid(format!(
                "archive member {} has unsupported type {}; only directories, regular files and symlinks are allowed",
                shown(),
                type_name(other)
            )))
        }
    };
    Ok(Some(Member {
        path,
        kind,
        mode: entry.header().mode().map_err(Error::InvalidTar)? & 0o7777,
        mtime: entry.header().mtime().unwrap_or(0),
    }))
}

fn type_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "fifo".into(),
        tar::EntryType::GNUSparse => "GNU sparse file".into(),
        other => format!("{other:?}"),
    }
}

/// Whether a symlink at `member` with `target` resolves (lexically) inside the archive root.
///
/// Informational only: links that leave the tree are kept (never followed), so nothing is
/// rejected on this basis; callers may use it to report such links.
pub fn link_stays_inside(member: &Path, target: &Path) -> bool {
    let t = target.as_os_str().as_bytes();
    if t.starts_with(b"/") {
        return false;
    }
    // Start from the directory holding the link, then walk the target's segments.
    let mut depth: Vec<&[u8]> = member.as_os_str().as_bytes().split(|b| *b == b'/').filter(|s| !s.is_empty()).collect();
    depth.pop();
    for seg in t.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            s => depth.push(s),
        }
    }
    true
}

/// An empty tar archive (the baseline of an unseeded workspace).
pub fn empty_tar() -> Vec<u8> {
    // Two zero blocks are the end-of-archive marker; that is all an empty tar holds.
    vec![0u8; 1024]
}

/// Count the members (all) and regular-file bytes of an uncompressed tar, validating it.
pub fn count_tar(tar: &[u8]) -> Result<(u64, u64)> {
    for_each_member(tar, |_, _| Ok(()))
}

/// Archive the children of `dir` (sorted, recursive, links not followed) into an uncompressed tar.
#[cfg(feature = "host")]
pub fn build_tar_from_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_tar_from_dir(dir, &mut out)?;
    Ok(out)
}

/// Like [`build_tar_from_dir`] but streams into `out`; returns (entry_count, bytes_written).
#[cfg(feature = "host")]
pub fn write_tar_from_dir<W: Write>(dir: &Path, out: W) -> Result<(u64, u64)> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", dir.display())));
    }
    let mut builder = tar::Builder::new(out);
    let (mut count, mut bytes) = (0u64, 0u64);
    // Depth-first in name order: a stack of (host path, member path), pushed in reverse.
    let mut stack: Vec<(PathBuf, PathBuf)> = Vec::new();
    push_children(&mut stack, dir, Path::new(""))?;
    while let Some((full, rel)) = stack.pop() {
        let m = fs::symlink_metadata(&full).map_err(|e| Error::io(format!("reading {}", full.display()), e))?;
        let ft = m.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mode(m.mode() & 0o7777);
        header.set_mtime(m.mtime().max(0) as u64);
        header.set_uid(0);
        header.set_gid(0);
        let written = if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| Error::io(format!("reading link {}", full.display()), e))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &rel, &target)
        } else if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            let r = builder.append_data(&mut header, &rel, std::io::empty());
            push_children(&mut stack, &full, &rel)?;
            r
        } else if ft.is_file() {
            // Read the whole file first: a file that grows while being archived would
            // otherwise make the header's size lie and corrupt the archive. Hard links are
            // read like any other file, so they are stored as regular files.
            let data = read_no_follow(&full)?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            bytes += data.len() as u64;
            builder.append_data(&mut header, &rel, data.as_slice())
        } else {
            return Err(Error::Invalid(format!(
                "cannot archive {}: it is a {}; only directories, regular files and symlinks are supported",
                full.display(),
                special_kind(&ft)
            )));
        };
        written.map_err(|e| Error::io(format!("archiving {}", full.display()), e))?;
        count += 1;
    }
    builder.into_inner().map_err(|e| Error::io("finishing the archive", e))?;
    Ok((count, bytes))
}

#[cfg(feature = "host")]
fn push_children(stack: &mut Vec<(PathBuf, PathBuf)>, dir: &Path, rel: &Path) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names.into_iter().rev() {
        stack.push((dir.join(&name), rel.join(&name)));
    }
    Ok(())
}

/// Read a regular file without following a final symlink.
#[cfg(feature = "host")]
pub(crate) fn read_no_follow(p: &Path) -> Result<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    Ok(data)
}

#[cfg(feature = "host")]
fn special_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Read a tar or gzip-compressed tar, validate it and re-emit it as a plain tar.
///
/// Compression is detected from the gzip magic bytes, not the file name. Besides the member
/// rules, the tree must be consistent (nothing stored below a file or symlink, no path that
/// is both a directory and a file), so a bad seed fails on the host before any VM work.
#[cfg(feature = "host")]
pub fn normalize_tar<R: Read>(input: R) -> Result<Vec<u8>> {
    let mut input = BufReader::new(input);
    let head = input.fill_buf().map_err(|e| Error::io("reading the archive", e))?;
    let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(input)) } else { Box::new(input) };
    let mut builder = tar::Builder::new(Vec::new());
    let mut seen = TreeCheck::default();
    for_each_member(reader, |m, data| {
        seen.add(m)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(m.mode);
        header.set_mtime(m.mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let written = match &m.kind {
            MemberKind::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, &m.path, std::io::empty())
            }
            MemberKind::File { size } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                builder.append_data(&mut header, &m.path, data)
            }
            MemberKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, &m.path, target)
            }
        };
        written.map_err(|e| Error::Invalid(format!("archive member {}: {e}", m.path_str())))
    })?;
    builder.into_inner().map_err(|e| Error::io("finishing the archive", e))
}

/// Tracks what each path of an archive is, to catch trees that cannot be extracted.
#[cfg(feature = "host")]
#[derive(Default)]
struct TreeCheck {
    /// `true` for directories (explicit or implied by a child), `false` for files and links.
    is_dir: HashMap<PathBuf, bool>,
}

#[cfg(feature = "host")]
impl TreeCheck {
    fn add(&mut self, m: &Member) -> Result<()> {
        let mut ancestor = m.path.parent();
        while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
            match self.is_dir.get(a) {
                Some(false) => {
                    return Err(Error::Invalid(format!(
                        "archive member {} is inside {}, which the archive stores as a file or symlink",
                        m.path_str(),
                        a.display()
                    )))
                }
                Some(true) => {}
                None => {
                    self.is_dir.insert(a.to_path_buf(), true);
                }
            }
            ancestor = a.parent();
        }
        let dir = m.kind == MemberKind::Directory;
        match self.is_dir.insert(m.path.clone(), dir) {
            Some(prev) if prev != dir => Err(Error::Invalid(format!(
                "archive member {} appears both as a directory and as a file or symlink",
                m.path_str()
            ))),
            _ => Ok(()),
        }
    }
}

/// Extract an uncompressed tar into `dest` on the host without ever following a symlink; returns (entry_count, bytes_written).
///
/// `dest` is created if missing and must not be a symlink. Each member's parents are
/// checked with `lstat` one component at a time: a symlinked parent is refused, so no
/// member can land outside `dest`. Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
/// links are created as links, directory modes and mtimes are applied last (so a read-only
/// directory does not block its own children).
#[cfg(feature = "host")]
pub fn extract_tar_safely(tar: &[u8], dest: &Path) -> Result<(u64, u64)> {
    extract_tar_stream(tar, dest)
}

/// [`extract_tar_safely`] from a stream (an archive spooled to disk).
#[cfg(feature = "host")]
pub fn extract_tar_stream<R: Read>(tar: R, dest: &Path) -> Result<(u64, u64)> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::Invalid(format!("extraction destination is a symlink: {}", dest.display())))
        }
        Ok(m) if !m.is_dir() => {
            return Err(Error::Invalid(format!("extraction destination is not a directory: {}", dest.display())))
        }
        Ok(_) => {}
        Err(_) => fs::create_dir_all(dest).map_err(|e| Error::io(format!("creating {}", dest.display()), e))?,
    }
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let counts = for_each_member(tar, |m, data| {
        let target = dest.join(&m.path);
        prepare_parents(dest, m)?;
        let existing = fs::symlink_metadata(&target).ok();
        match &m.kind {
            MemberKind::Directory => {
                match &existing {
                    Some(e) if e.is_dir() => {}
                    Some(_) => {
                        return Err(Error::Invalid(format!(
                            "archive directory {} conflicts with an existing non-directory",
                            m.path_str()
                        )))
                    }
                    None => {
                        fs::create_dir(&target).map_err(|e| Error::io(format!("creating {}", target.display()), e))?
                    }
                }
                dirs.push((target, m.mode, m.mtime));
            }
            MemberKind::File { .. } => {
                if let Some(e) = &existing {
                    if !e.file_type().is_file() {
                        return Err(Error::Invalid(format!(
                            "archive file {} would replace a directory or symlink",
                            m.path_str()
                        )));
                    }
                    // unlink never follows a link, and the check above excluded links anyway.
                    fs::remove_file(&target).map_err(|e| Error::io(format!("replacing {}", target.display()), e))?;
                }
                write_member_file(&target, m, data)?;
            }
            MemberKind::Symlink { target: link } => {
                match &existing {
                    Some(e) if e.file_type().is_symlink() => {
                        fs::remove_file(&target).map_err(|e| Error::io(format!("replacing {}", target.display()), e))?
                    }
                    Some(_) => {
                        return Err(Error::Invalid(format!(
                            "archive symlink {} would replace a file or directory",
                            m.path_str()
                        )))
                    }
                    None => {}
                }
                std::os::unix::fs::symlink(link, &target)
                    .map_err(|e| Error::io(format!("creating link {}", target.display()), e))?;
                let t = filetime::FileTime::from_unix_time(m.mtime as i64, 0);
                // Best effort: some filesystems cannot time-stamp links; the link itself is what matters.
                let _ = filetime::set_symlink_file_times(&target, t, t);
            }
        }
        Ok(())
    })?;
    // Deepest first, so setting a parent's mtime is not undone by touching a child.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (path, mode, mtime) in dirs {
        // Re-check: only ever chmod a real directory, never through a link.
        if fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & HOST_DIR_MODE_MASK))
                .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))?;
            let _ = filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(mtime as i64, 0));
        }
    }
    Ok(counts)
}

/// Make sure every parent of the member exists as a real directory inside `dest`.
#[cfg(feature = "host")]
fn prepare_parents(dest: &Path, m: &Member) -> Result<()> {
    let mut cur = dest.to_path_buf();
    let parent = m.path.parent().unwrap_or(Path::new(""));
    for comp in parent.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::Invalid(format!(
                    "archive member would traverse through a symlinked path: {}",
                    m.path_str()
                )))
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Error::Invalid(format!("archive member {} is under a non-directory", m.path_str()))),
            Err(_) => fs::create_dir(&cur).map_err(|e| Error::io(format!("creating {}", cur.display()), e))?,
        }
    }
    Ok(())
}

#[cfg(feature = "host")]
fn write_member_file(target: &Path, m: &Member, data: &mut dyn Read) -> Result<()> {
    let io = |e| Error::io(format!("writing {}", target.display()), e);
    // O_EXCL refuses any existing entry, including a symlink planted at this name.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
        .map_err(io)?;
    std::io::copy(data, &mut f).map_err(io)?;
    f.set_permissions(fs::Permissions::from_mode(m.mode & HOST_FILE_MODE_MASK)).map_err(io)?;
    let t = filetime::FileTime::from_unix_time(m.mtime as i64, 0);
    let _ = filetime::set_file_handle_times(&f, Some(t), Some(t));
    Ok(())
}

/// Write a guest export (`artifact_type` file, directory or symlink) to the new host path `output`; returns (entry_count, bytes_written).
///
/// `output` must not exist. The result appears all at once: it is built under a hidden
/// temporary name beside `output` and renamed into place without replacing anything, so a
/// failure never leaves a partial export behind.
#[cfg(feature = "host")]
pub fn materialize_export(tar: &[u8], artifact_type: &str, output: &Path) -> Result<(u64, u64)> {
    materialize_export_stream(tar, artifact_type, output)
}

/// [`materialize_export`] from a stream (an archive spooled to disk).
#[cfg(feature = "host")]
pub fn materialize_export_stream<R: Read>(tar: R, artifact_type: &str, output: &Path) -> Result<(u64, u64)> {
    if fs::symlink_metadata(output).is_ok() {
        return Err(Error::Invalid(format!("output_path already exists: {}", output.display())));
    }
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match artifact_type {
        "directory" => {
            let tmp = temp_sibling(parent);
            let result =
                extract_tar_stream(tar, &tmp).and_then(|counts| rename_no_replace(&tmp, output).map(|_| counts));
            if result.is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
            result
        }
        "file" => {
            let tmp = temp_sibling(parent);
            let mut found = None;
            let counts = for_each_member(tar, |m, data| {
                if found.is_some() || !matches!(m.kind, MemberKind::File { .. }) {
                    return Err(Error::UnexpectedExport("file export must contain exactly one regular file".into()));
                }
                write_member_file(&tmp, m, data)?;
                found = Some(());
                Ok(())
            });
            let result = counts.and_then(|c| match found {
                Some(()) => rename_no_replace(&tmp, output).map(|_| c),
                None => Err(Error::UnexpectedExport("file export must contain exactly one regular file".into())),
            });
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        }
        "symlink" => {
            let mut made = false;
            let counts = for_each_member(tar, |m, _| match &m.kind {
                MemberKind::Symlink { target } if !made => {
                    // symlink() itself refuses an existing path, so it never replaces anything.
                    std::os::unix::fs::symlink(target, output)
                        .map_err(|e| Error::io(format!("creating link {}", output.display()), e))?;
                    made = true;
                    Ok(())
                }
                _ => Err(Error::UnexpectedExport("symlink export must contain exactly one symlink".into())),
            });
            match counts {
                Ok(c) if made => Ok(c),
                Ok(_) => Err(Error::UnexpectedExport("symlink export must contain exactly one symlink".into())),
                Err(e) => {
                    if made {
                        let _ = fs::remove_file(output);
                    }
                    Err(e)
                }
            }
        }
        other => Err(Error::UnexpectedExport(format!("unexpected export artifact type '{other}'"))),
    }
}

#[cfg(feature = "host")]
fn temp_sibling(parent: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    parent.join(format!(".pyro-export-{}-{nanos}", std::process::id()))
}

/// `rename` that fails instead of replacing an existing `to` (a directory rename would
/// otherwise silently replace an empty directory created meanwhile).
#[cfg(feature = "host")]
fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    pyro_sys::rename_noreplace(from, to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Invalid(format!("output_path already exists: {}", to.display()))
        } else {
            Error::io(format!("moving the export to {}", to.display()), e)
        }
    })
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Append a member with a raw name, bypassing the builder's own path checks, so tests
    /// can produce the hostile archives an attacker would.
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8], link: &str) {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    /// (name, type, content, link target) of a test member.
    type Spec<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

    fn tar_of(members: &[Spec]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in members {
            raw(&mut b, name, *kind, data, link);
        }
        b.into_inner().unwrap()
    }

    fn err_msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    use tar::EntryType as T;

    #[test]
    fn classify_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir(d.join("src")).unwrap();
        for name in ["a.tar", "b.TAR.GZ", "c.tgz", "d.zip", "e.gz"] {
            fs::write(d.join(name), b"").unwrap();
        }
        let src = SeedSource::classify(d.join("src")).unwrap();
        assert_eq!(src.mode(), "directory");
        assert!(src.path().is_absolute());
        for name in ["a.tar", "b.TAR.GZ", "c.tgz"] {
            assert_eq!(SeedSource::classify(d.join(name)).unwrap().mode(), "tar_archive", "{name}");
        }
        for name in ["d.zip", "e.gz"] {
            assert_eq!(
                err_msg(SeedSource::classify(d.join(name))),
                "seed_path must be a directory or a .tar/.tar.gz/.tgz archive"
            );
        }
        let missing = d.join("nope");
        assert_eq!(err_msg(SeedSource::classify(&missing)), format!("seed_path {} does not exist", missing.display()));
        // A relative path is reported absolute.
        let rel = err_msg(SeedSource::classify("definitely-missing-dir-xyz"));
        assert!(rel.starts_with("seed_path /") && rel.ends_with("/definitely-missing-dir-xyz does not exist"), "{rel}");
    }

    #[test]
    fn seed_archive_errors_name_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("bad.tar");
        fs::write(&bad, tar_of(&[("../x", T::Regular, b"x", "")])).unwrap();
        let e = SeedSource::classify(&bad).unwrap().to_tar().unwrap_err();
        let want = format!("{}: archive member must stay inside the tree (no '..'): ../x", bad.display());
        assert_eq!(e.to_string(), want);
        assert!(matches!(&e, Error::InSeedArchive { source, .. } if matches!(**source, Error::Invalid(_))));
        let garbage = tmp.path().join("garbage.tgz");
        fs::write(&garbage, [0x1f, 0x8b, 1, 2, 3]).unwrap();
        let e = SeedSource::classify(&garbage).unwrap().to_tar().unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: invalid tar archive: ", garbage.display())), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }

    fn sample_tree(d: &Path) {
        fs::create_dir_all(d.join("src/lib")).unwrap();
        fs::create_dir_all(d.join("empty")).unwrap();
        fs::create_dir_all(d.join("node_modules/.bin")).unwrap();
        fs::create_dir_all(d.join("node_modules/pkg/bin")).unwrap();
        fs::write(d.join("src/a.py"), b"print('a')\n").unwrap();
        fs::write(d.join("src/lib/x.py"), b"x = 1\n").unwrap();
        fs::write(d.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(d.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(d.join("node_modules/pkg/bin/tool"), b"tool").unwrap();
        symlink("../run.sh", d.join("src/up_link")).unwrap(); // leaves src/, stays in the tree
        symlink("../pkg/bin/tool", d.join("node_modules/.bin/tool")).unwrap();
        symlink("/etc/passwd", d.join("abs_link")).unwrap();
        symlink("../../outside", d.join("src/escape")).unwrap();
        fs::hard_link(d.join("src/a.py"), d.join("hard.py")).unwrap();
        filetime::set_file_mtime(d.join("src/a.py"), filetime::FileTime::from_unix_time(1_500_000_000, 0)).unwrap();
    }

    fn names(tar: &[u8]) -> Vec<(String, MemberKind, u32)> {
        let mut out = Vec::new();
        for_each_member(tar, |m, _| {
            out.push((m.path_str(), m.kind.clone(), m.mode));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn build_is_sorted_keeps_links_modes_and_stores_hard_links_as_files() {
        let tmp = tempfile::tempdir().unwrap();
        sample_tree(tmp.path());
        let tar = build_tar_from_dir(tmp.path()).unwrap();
        let list = names(&tar);
        let paths: Vec<&str> = list.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "abs_link",
                "empty",
                "hard.py",
                "node_modules",
                "node_modules/.bin",
                "node_modules/.bin/tool",
                "node_modules/pkg",
                "node_modules/pkg/bin",
                "node_modules/pkg/bin/tool",
                "run.sh",
                "src",
                "src/a.py",
                "src/escape",
                "src/lib",
                "src/lib/x.py",
                "src/up_link",
            ]
        );
        let get = |p: &str| list.iter().find(|(n, _, _)| n == p).unwrap().clone();
        assert_eq!(get("abs_link").1, MemberKind::Symlink { target: "/etc/passwd".into() });
        assert_eq!(get("hard.py").1, MemberKind::File { size: 11 });
        assert_eq!(get("run.sh").2, 0o755);
        let (count, bytes) = count_tar(&tar).unwrap();
        assert_eq!(count, 16);
        assert_eq!(bytes, 11 + 11 + 6 + 18 + 4);
        // A plain tar round-trips through normalize unchanged in content.
        assert_eq!(names(&normalize_tar(tar.as_slice()).unwrap()), list);
    }

    #[test]
    fn build_refuses_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let msg = err_msg(build_tar_from_dir(tmp.path()));
        assert!(msg.contains(&fifo.display().to_string()) && msg.contains("fifo"), "{msg}");
    }

    #[test]
    fn long_names_and_link_targets_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(90)).join("e".repeat(90));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f".repeat(120)), b"x").unwrap();
        let long_target = format!("{}/{}", "t".repeat(100), "u".repeat(100));
        symlink(&long_target, tmp.path().join("l")).unwrap();
        let tar = build_tar_from_dir(tmp.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        extract_tar_safely(&tar, &out.path().join("x")).unwrap();
        let rel = Path::new(&"d".repeat(90)).join("e".repeat(90)).join("f".repeat(120));
        assert_eq!(fs::read(out.path().join("x").join(rel)).unwrap(), b"x");
        assert_eq!(fs::read_link(out.path().join("x/l")).unwrap(), Path::new(&long_target));
    }

    #[test]
    fn gzip_is_detected_by_content_and_root_entry_skipped() {
        let tar = tar_of(&[
            ("./", T::Directory, b"", ""),
            ("./a.txt", T::Regular, b"hello", ""),
            ("./d/", T::Directory, b"", ""),
            ("d/l", T::Symlink, b"", "../a.txt"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let plain = normalize_tar(gz.as_slice()).unwrap();
        let list = names(&plain);
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].0, "a.txt");
        assert_eq!(list[2], ("d/l".into(), MemberKind::Symlink { target: "../a.txt".into() }, 0o644));
        assert_eq!(count_tar(&plain).unwrap(), (3, 5));
    }

    #[test]
    fn validation_rejects_bad_members() {
        let cases: &[(&[Spec], &str)] = &[
            (&[("/etc/passwd", T::Regular, b"x", "")], "archive member must be a relative path: /etc/passwd"),
            (&[("a/../../x", T::Regular, b"x", "")], "archive member must stay inside the tree (no '..'): a/../../x"),
            (&[("..", T::Directory, b"", "")], "must stay inside the tree"),
            (&[("a", T::Regular, b"x", ""), ("b", T::Link, b"", "a")], "archive member b is a hard link"),
            (&[("p", T::Fifo, b"", "")], "archive member p has unsupported type fifo"),
            (&[("dev", T::Char, b"", "")], "unsupported type character device"),
            (&[("l", T::Symlink, b"", "")], "archive symlink l has an empty target"),
            (&[(".", T::Regular, b"x", "")], "archive member has an empty name"),
        ];
        for (members, want) in cases {
            let tar = tar_of(members);
            let msg = err_msg(normalize_tar(tar.as_slice()));
            assert!(msg.contains(want), "{msg} !~ {want}");
        }
    }

    #[test]
    fn normalize_rejects_inconsistent_trees_but_keeps_escaping_links() {
        let under_file = tar_of(&[("a", T::Regular, b"x", ""), ("a/b", T::Regular, b"y", "")]);
        assert!(err_msg(normalize_tar(under_file.as_slice())).contains("inside a, which the archive stores as a file"));
        let under_link = tar_of(&[("a", T::Symlink, b"", "/etc"), ("a/passwd", T::Regular, b"y", "")]);
        assert!(err_msg(normalize_tar(under_link.as_slice())).contains("a/passwd is inside a"));
        let both = tar_of(&[("a/b", T::Regular, b"x", ""), ("a", T::Regular, b"y", "")]);
        assert!(err_msg(normalize_tar(both.as_slice())).contains("both as a directory and as a file"));
        // Promised to users: links that leave the tree, or are absolute, are kept as links.
        let links = tar_of(&[("up", T::Symlink, b"", "../../etc"), ("abs", T::Symlink, b"", "/etc/shadow")]);
        assert_eq!(names(&normalize_tar(links.as_slice()).unwrap()).len(), 2);
    }

    #[test]
    fn link_containment_is_lexical() {
        let inside = |m: &str, t: &str| link_stays_inside(Path::new(m), Path::new(t));
        assert!(inside("src/a", "../lib/x"));
        assert!(inside("node_modules/.bin/tool", "../pkg/bin/tool"));
        assert!(inside("a", "b/./c"));
        assert!(!inside("a", "../x"));
        assert!(!inside("src/a", "../../x"));
        assert!(!inside("src/a", "/etc/passwd"));
        assert!(!inside("a/b", "../../a/../.."));
    }

    fn assert_nothing_outside(root: &Path) {
        // The sandbox holds only `dest`; anything else means a write escaped.
        let names: Vec<_> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("dest")], "something was written outside dest");
    }

    #[test]
    fn extraction_never_writes_through_links() {
        let hostile: &[(&[Spec], &str)] = &[
            (
                &[("a", T::Symlink, b"", "/etc"), ("a/passwd", T::Regular, b"pwned", "")],
                "archive member would traverse through a symlinked path: a/passwd",
            ),
            (
                &[("a", T::Symlink, b"", ".."), ("a/x", T::Regular, b"pwned", "")],
                "archive member would traverse through a symlinked path: a/x",
            ),
            (
                &[("d", T::Directory, b"", ""), ("d/a", T::Symlink, b"", "../.."), ("d/a/b/c", T::Regular, b"p", "")],
                "traverse through a symlinked path: d/a/b/c",
            ),
            (&[("../x", T::Regular, b"pwned", "")], "must stay inside the tree"),
            (&[("/tmp/x", T::Regular, b"pwned", "")], "must be a relative path"),
            (
                &[("f", T::Symlink, b"", "../outside-file"), ("f", T::Regular, b"pwned", "")],
                "archive file f would replace a directory or symlink",
            ),
            (
                &[("d", T::Symlink, b"", ".."), ("d", T::Directory, b"", "")],
                "archive directory d conflicts with an existing non-directory",
            ),
        ];
        for (members, want) in hostile {
            let sandbox = tempfile::tempdir().unwrap();
            let dest = sandbox.path().join("dest");
            let msg = err_msg(extract_tar_safely(&tar_of(members), &dest));
            assert!(msg.contains(want), "{msg} !~ {want}");
            assert_nothing_outside(sandbox.path());
        }
    }

    #[test]
    fn extraction_keeps_links_modes_and_mtimes() {
        let src = tempfile::tempdir().unwrap();
        sample_tree(src.path());
        fs::set_permissions(src.path().join("empty"), fs::Permissions::from_mode(0o500)).unwrap();
        let tar = build_tar_from_dir(src.path()).unwrap();
        let sandbox = tempfile::tempdir().unwrap();
        let dest = sandbox.path().join("dest");
        let (count, bytes) = extract_tar_safely(&tar, &dest).unwrap();
        assert_eq!((count, bytes), count_tar(&tar).unwrap());
        assert_eq!(fs::read_link(dest.join("abs_link")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(fs::read_link(dest.join("src/escape")).unwrap(), Path::new("../../outside"));
        assert_eq!(fs::read_link(dest.join("node_modules/.bin/tool")).unwrap(), Path::new("../pkg/bin/tool"));
        assert_eq!(fs::read(dest.join("node_modules/.bin/tool")).unwrap(), b"tool", "in-tree link resolves");
        let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("src/a.py"), 0o644);
        assert_eq!(mode("empty"), 0o500);
        assert_eq!(fs::metadata(dest.join("src/a.py")).unwrap().mtime(), 1_500_000_000);
        assert!(!fs::symlink_metadata(dest.join("hard.py")).unwrap().file_type().is_symlink());
        fs::set_permissions(dest.join("empty"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(src.path().join("empty"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn extraction_refuses_a_symlinked_destination() {
        let sandbox = tempfile::tempdir().unwrap();
        symlink("/tmp", sandbox.path().join("dest")).unwrap();
        let tar = tar_of(&[("x", T::Regular, b"x", "")]);
        assert!(err_msg(extract_tar_safely(&tar, &sandbox.path().join("dest"))).contains("is a symlink"));
    }

    #[test]
    fn export_materializes_each_artifact_type_without_overwriting() {
        let sandbox = tempfile::tempdir().unwrap();
        let out = |n: &str| sandbox.path().join("out").join(n);
        fs::create_dir(sandbox.path().join("out")).unwrap();

        let dir_tar = tar_of(&[("a.txt", T::Regular, b"hello", ""), ("l", T::Symlink, b"", "/etc")]);
        assert_eq!(materialize_export(&dir_tar, "directory", &out("tree")).unwrap(), (2, 5));
        assert_eq!(fs::read(out("tree/a.txt")).unwrap(), b"hello");
        assert_eq!(fs::read_link(out("tree/l")).unwrap(), Path::new("/etc"));

        let file_tar = tar_of(&[("main.py", T::Regular, b"print(1)\n", "")]);
        assert_eq!(materialize_export(&file_tar, "file", &out("copy.py")).unwrap(), (1, 9));
        assert_eq!(fs::read(out("copy.py")).unwrap(), b"print(1)\n");

        let link_tar = tar_of(&[("cfg", T::Symlink, b"", "../shared/cfg")]);
        assert_eq!(materialize_export(&link_tar, "symlink", &out("cfg")).unwrap(), (1, 0));
        assert_eq!(fs::read_link(out("cfg")).unwrap(), Path::new("../shared/cfg"));

        assert!(err_msg(materialize_export(&file_tar, "file", &out("copy.py"))).contains("already exists"));
        assert!(err_msg(materialize_export(&dir_tar, "directory", &out("tree"))).contains("already exists"));

        // A failing export leaves nothing behind, not even its temporary.
        let bad = tar_of(&[("a", T::Symlink, b"", "/etc"), ("a/passwd", T::Regular, b"x", "")]);
        assert!(materialize_export(&bad, "directory", &out("bad")).is_err());
        assert!(materialize_export(&dir_tar, "file", &out("bad2")).is_err());
        let mut left: Vec<_> = fs::read_dir(sandbox.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["cfg", "copy.py", "tree"]);
    }

    #[test]
    fn empty_tar_is_valid() {
        assert_eq!(count_tar(&empty_tar()).unwrap(), (0, 0));
        let sandbox = tempfile::tempdir().unwrap();
        assert_eq!(extract_tar_safely(&empty_tar(), &sandbox.path().join("e")).unwrap(), (0, 0));
        assert!(sandbox.path().join("e").is_dir());
    }
}
