//! Workspace filesystem and archive operations inside the guest.
//!
//! Paths arrive absolute and already normalised by the host; the guest still refuses to walk
//! through a symlinked directory when writing, so no archive member, link or write can land
//! outside the directory it targets.
//!
//! Durability: every request that changes the tree answers only once the change is on the
//! disk (a VM killed right after the answer keeps it). A single-file write fsyncs the data,
//! renames, then fsyncs every directory whose entries changed; a delete fsyncs its
//! directory; an archive extraction (sync push, seed, snapshot restore) ends with a
//! `syncfs(2)` of the destination's filesystem, which writes back and commits everything at
//! once (cheaper than one fsync per member, and it covers directories too).

use pyro_protocol::fs::{FileEntry, FsRequest, FsResponse};
use pyro_protocol::Response;
use pyro_tree::archive::MemberKind;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

const TRANSFER_DIR: &str = "/var/tmp/pyro-transfer";

/// Serialises writes to the same upload; transfers are otherwise independent files.
#[derive(Clone, Default)]
pub struct FsState(Arc<Mutex<()>>);

#[derive(Debug)]
pub struct FsError {
    kind: &'static str,
    message: String,
}

fn err(kind: &'static str, message: impl Into<String>) -> FsError {
    FsError { kind, message: message.into() }
}

fn io_err(what: &str, e: std::io::Error) -> FsError {
    err("io", format!("{what}: {e}"))
}

type FsResult<T> = Result<T, FsError>;

pub async fn handle(req: FsRequest, state: &FsState) -> Response {
    let state = state.clone();
    let result = tokio::task::spawn_blocking(move || handle_blocking(req, &state)).await;
    match result {
        Ok(Ok(r)) => Response::Fs(r),
        Ok(Err(e)) => Response::error(e.kind, e.message),
        Err(e) => Response::error("io", format!("filesystem task failed: {e}")),
    }
}

fn transfer_path(id: &str) -> FsResult<PathBuf> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(err("bad_request", format!("invalid transfer id '{id}'")));
    }
    Ok(Path::new(TRANSFER_DIR).join(id))
}

fn handle_blocking(req: FsRequest, state: &FsState) -> FsResult<FsResponse> {
    match req {
        FsRequest::UploadChunk { transfer_id, offset, data } => {
            let _g = state.0.lock().unwrap();
            let path = transfer_path(&transfer_id)?;
            fs::create_dir_all(TRANSFER_DIR).map_err(|e| io_err("creating the transfer dir", e))?;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(offset == 0)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io_err("opening the upload", e))?;
            f.seek(SeekFrom::Start(offset)).map_err(|e| io_err("seeking the upload", e))?;
            f.write_all(&data).map_err(|e| io_err("writing the upload", e))?;
            Ok(FsResponse::Data { data: Vec::new() })
        }
        FsRequest::ExtractUpload { transfer_id, destination } => {
            let path = transfer_path(&transfer_id)?;
            let result = extract(&path, Path::new(&destination));
            // Removed before the sync, so the upload's own pages are dropped, not written.
            let _ = fs::remove_file(&path);
            let (entry_count, bytes_written) = result?;
            sync_filesystem(Path::new(&destination))
                .map_err(|e| io_err(&format!("flushing {destination} to disk"), e))?;
            Ok(FsResponse::Extracted { destination, entry_count, bytes_written })
        }
        FsRequest::Export { path } => export(Path::new(&path)),
        FsRequest::ReadTransfer { transfer_id, offset, len } => {
            let path = transfer_path(&transfer_id)?;
            let mut f = File::open(&path).map_err(|e| io_err("opening the transfer", e))?;
            f.seek(SeekFrom::Start(offset)).map_err(|e| io_err("seeking the transfer", e))?;
            // `len` may be far past the end of the file: size the buffer by what can come back.
            let mut data = Vec::with_capacity(len.min(pyro_protocol::fs::TRANSFER_CHUNK_BYTES as u64) as usize);
            f.take(len).read_to_end(&mut data).map_err(|e| io_err("reading the transfer", e))?;
            Ok(FsResponse::Data { data })
        }
        FsRequest::DiscardTransfer { transfer_id } => {
            let _ = fs::remove_file(transfer_path(&transfer_id)?);
            Ok(FsResponse::Data { data: Vec::new() })
        }
        FsRequest::List { path, recursive } => list(Path::new(&path), recursive),
        FsRequest::Read { path, max_bytes } => read(Path::new(&path), max_bytes),
        FsRequest::Write { path, data } => write(Path::new(&path), &data),
        FsRequest::InstallSecrets { secrets } => install_secrets(&secrets),
        FsRequest::Delete { path } => {
            let p = Path::new(&path);
            let meta = fs::symlink_metadata(p)
                .map_err(|_| err("not_found", format!("workspace path does not exist: {path}")))?;
            if meta.is_dir() {
                return Err(err("unsupported_type", format!("cannot delete a directory: {path}")));
            }
            fs::remove_file(p).map_err(|e| io_err(&format!("deleting {path}"), e))?;
            if let Some(parent) = p.parent() {
                sync_dir(parent).map_err(|e| io_err(&format!("flushing the delete of {path} to disk"), e))?;
            }
            Ok(FsResponse::Data { data: Vec::new() })
        }
    }
}

const SECRETS_DIR: &str = "/run/pyro-secrets";

/// Secrets live only on the tmpfs `/run`: never on the disk image the host can export.
fn install_secrets(secrets: &[pyro_protocol::fs::SecretFile]) -> FsResult<FsResponse> {
    if let Some(bad) = secrets.iter().find(|s| !pyro_tree::names::is_identifier(&s.name)) {
        return Err(err("bad_request", format!("invalid secret name '{}'", bad.name)));
    }
    let dir = Path::new(SECRETS_DIR);
    fs::create_dir_all(dir).map_err(|e| io_err("creating the secrets dir", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io_err("securing the secrets dir", e))?;
    for old in fs::read_dir(dir).map_err(|e| io_err("listing the secrets dir", e))?.flatten() {
        let _ = fs::remove_file(old.path());
    }
    for s in secrets {
        let path = dir.join(&s.name);
        let mut f = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_err("writing a secret", e))?;
        f.write_all(&s.value).map_err(|e| io_err("writing a secret", e))?;
    }
    Ok(FsResponse::Data { data: Vec::new() })
}

fn kind_of(meta: &fs::Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        Some("symlink")
    } else if ft.is_dir() {
        Some("directory")
    } else if ft.is_file() {
        Some("file")
    } else {
        None
    }
}

fn entry_of(path: &Path, meta: &fs::Metadata) -> FsResult<FileEntry> {
    let kind = kind_of(meta)
        .ok_or_else(|| err("unsupported_type", format!("unsupported workspace path type: {}", path.display())))?;
    let link_target =
        if kind == "symlink" { fs::read_link(path).ok().map(|t| t.to_string_lossy().into_owned()) } else { None };
    Ok(FileEntry {
        path: path.to_string_lossy().into_owned(),
        artifact_type: kind.to_string(),
        size_bytes: if kind == "directory" { 0 } else { meta.len() },
        link_target,
    })
}

fn sorted_children(dir: &Path) -> FsResult<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_err(&format!("listing {}", dir.display()), e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

fn list(path: &Path, recursive: bool) -> FsResult<FsResponse> {
    let meta = fs::symlink_metadata(path)
        .map_err(|_| err("not_found", format!("workspace path does not exist: {}", path.display())))?;
    let top = entry_of(path, &meta)?;
    let mut entries = Vec::new();
    if top.artifact_type != "directory" {
        entries.push(top.clone());
    } else {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut subdirs = Vec::new();
            for child in sorted_children(&dir)? {
                let Ok(m) = fs::symlink_metadata(&child) else { continue };
                let e = entry_of(&child, &m)?;
                if recursive && e.artifact_type == "directory" {
                    subdirs.push(child.clone());
                }
                entries.push(e);
            }
            stack.extend(subdirs.into_iter().rev());
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(FsResponse::Listing { path: path.to_string_lossy().into_owned(), artifact_type: top.artifact_type, entries })
}

fn read(path: &Path, max_bytes: u64) -> FsResult<FsResponse> {
    let meta = fs::symlink_metadata(path)
        .map_err(|_| err("not_found", format!("workspace path does not exist: {}", path.display())))?;
    if !meta.is_file() {
        return Err(err("unsupported_type", "workspace file read only supports regular files"));
    }
    let f = File::open(path).map_err(|e| io_err(&format!("opening {}", path.display()), e))?;
    let mut data = Vec::new();
    f.take(max_bytes).read_to_end(&mut data).map_err(|e| io_err("reading", e))?;
    Ok(FsResponse::FileData { path: path.to_string_lossy().into_owned(), size_bytes: meta.len(), data })
}

/// Refuse to go through a symlinked directory between `/` and `path`'s parent; create
/// missing parents. Returns the directories that gained an entry (the parent of each
/// directory created), which a durable write must fsync.
fn prepare_parents(path: &Path) -> FsResult<Vec<PathBuf>> {
    let parent = path.parent().ok_or_else(|| err("invalid_path", "path has no parent"))?;
    let mut changed = Vec::new();
    let mut cur = PathBuf::from("/");
    for comp in parent.components() {
        match comp {
            Component::RootDir => continue,
            Component::Normal(c) => cur.push(c),
            _ => return Err(err("invalid_path", format!("invalid path {}", path.display()))),
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err(
                    "invalid_path",
                    format!("workspace path would traverse through a symlinked parent: {}", path.display()),
                ))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(err("invalid_path", format!("a parent of {} is not a directory", path.display()))),
            Err(_) => {
                fs::create_dir(&cur).map_err(|e| io_err(&format!("creating {}", cur.display()), e))?;
                changed.push(cur.parent().unwrap_or(Path::new("/")).to_path_buf());
            }
        }
    }
    Ok(changed)
}

/// fsync a directory: makes the entries created, renamed or removed in it durable (fsync of
/// a file covers its data, not its name).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `syncfs(2)` on the filesystem holding `path`: every dirty page and inode written back,
/// the ext4 journal committed and the disk cache flushed (a virtio-blk FLUSH, which QEMU
/// turns into an fdatasync of the image) before it returns.
pub(crate) fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> FsResult<FsResponse> {
    let mut changed_dirs = prepare_parents(path)?;
    let mode = match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.mode() & 0o7777,
        Ok(_) => return Err(err("unsupported_type", "workspace file write only supports regular file targets")),
        Err(_) => 0o644,
    };
    let dir = path.parent().unwrap();
    let tmp = dir.join(format!(".pyro-write-{}-{}", std::process::id(), nanos()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().create_new(true).write(true).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(data)?;
        // Keep the existing file's mode (an executable stays executable), 0644 for new ones.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&format!("writing {}", path.display()), e));
    }
    // The rename is only durable once the directory holding it is, and a created parent only
    // once its own parent is: without these a crash after the answer loses the file.
    changed_dirs.push(dir.to_path_buf());
    changed_dirs.dedup();
    for d in &changed_dirs {
        sync_dir(d).map_err(|e| io_err(&format!("flushing {} to disk", d.display()), e))?;
    }
    Ok(FsResponse::Written {
        path: path.to_string_lossy().into_owned(),
        size_bytes: data.len() as u64,
        bytes_written: data.len() as u64,
    })
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A tree-rule refusal (bad member name or type, unreadable archive) is the request's
/// fault: the host maps `invalid_path` to `invalid_input`.
impl From<pyro_tree::Error> for FsError {
    fn from(e: pyro_tree::Error) -> Self {
        let kind = match e {
            pyro_tree::Error::Invalid(_) | pyro_tree::Error::InvalidTar(_) | pyro_tree::Error::InSeedArchive { .. } => {
                "invalid_path"
            }
            pyro_tree::Error::Io { .. } | pyro_tree::Error::UnexpectedExport(_) => "io",
        };
        err(kind, e.to_string())
    }
}

fn extract(archive: &Path, dest: &Path) -> FsResult<(u64, u64)> {
    prepare_parents(&dest.join("x"))?;
    match fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(err("invalid_path", format!("destination is not a directory: {}", dest.display())))
        }
        Ok(_) => {}
        Err(_) => fs::create_dir_all(dest).map_err(|e| io_err("creating the destination", e))?,
    }
    let file = File::open(archive).map_err(|e| io_err("opening the upload", e))?;
    let mut ar = tar::Archive::new(file);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    let (mut count, mut bytes) = (0u64, 0u64);
    for entry in ar.entries().map_err(pyro_tree::Error::InvalidTar)? {
        let mut entry = entry.map_err(pyro_tree::Error::InvalidTar)?;
        // The one member rule of host and guest: name, type, link target. `None` is the
        // root directory entry `./` (or a pax global header): nothing to create.
        let Some(member) = pyro_tree::archive::member_of(&entry)? else { continue };
        let rel = &member.path;
        let target = dest.join(rel);
        // Every parent must be a real directory inside dest (never a symlink).
        let mut cur = dest.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        for comp in &parts[..parts.len() - 1] {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(err(
                        "invalid_path",
                        format!("archive member would traverse through a symlinked path: {}", rel.display()),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(err(
                        "invalid_path",
                        format!("archive member {} is under a non-directory", rel.display()),
                    ))
                }
                Err(_) => fs::create_dir(&cur).map_err(|e| io_err(&format!("creating {}", cur.display()), e))?,
            }
        }
        let existing = fs::symlink_metadata(&target).ok();
        match &member.kind {
            MemberKind::Directory => {
                match &existing {
                    Some(m) if m.is_dir() && !m.file_type().is_symlink() => {}
                    Some(_) => {
                        return Err(err(
                            "invalid_path",
                            format!("archive directory {} conflicts with an existing non-directory", rel.display()),
                        ))
                    }
                    None => {
                        fs::create_dir(&target).map_err(|e| io_err(&format!("creating {}", target.display()), e))?
                    }
                }
                // All permission bits, set-id included: the guest is the tree's home.
                let _ = fs::set_permissions(&target, fs::Permissions::from_mode(member.mode));
            }
            MemberKind::File { size } => {
                if let Some(m) = &existing {
                    if !m.is_file() || m.file_type().is_symlink() {
                        return Err(err(
                            "invalid_path",
                            format!("archive file {} would replace a directory or symlink", rel.display()),
                        ));
                    }
                }
                bytes += size;
                entry.unpack(&target).map_err(|e| io_err(&format!("writing {}", target.display()), e))?;
            }
            MemberKind::Symlink { target: link } => {
                match &existing {
                    Some(m) if m.file_type().is_symlink() => {
                        fs::remove_file(&target).map_err(|e| io_err("replacing a symlink", e))?
                    }
                    Some(_) => {
                        return Err(err(
                            "invalid_path",
                            format!("archive symlink {} would replace a file or directory", rel.display()),
                        ))
                    }
                    None => {}
                }
                // The link is created, never followed.
                std::os::unix::fs::symlink(link, &target)
                    .map_err(|e| io_err(&format!("creating link {}", target.display()), e))?;
            }
        }
        count += 1;
    }
    Ok((count, bytes))
}

fn export(path: &Path) -> FsResult<FsResponse> {
    let meta = fs::symlink_metadata(path)
        .map_err(|_| err("not_found", format!("workspace path does not exist: {}", path.display())))?;
    let kind = kind_of(&meta)
        .ok_or_else(|| err("unsupported_type", format!("unsupported workspace path type: {}", path.display())))?;
    fs::create_dir_all(TRANSFER_DIR).map_err(|e| io_err("creating the transfer dir", e))?;
    let id = format!("export-{}-{}", std::process::id(), nanos());
    let out_path = transfer_path(&id)?;
    let out = File::create(&out_path).map_err(|e| io_err("creating the export", e))?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut add = |b: &mut tar::Builder<File>, full: &Path, name: &Path| -> FsResult<()> {
        let m = fs::symlink_metadata(full).map_err(|e| io_err(&format!("reading {}", full.display()), e))?;
        let ft = m.file_type();
        // Sockets and fifos (a service's runtime files) have no content to carry.
        if ft.is_socket() || ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
            return Ok(());
        }
        if ft.is_file() {
            bytes += m.len();
        }
        b.append_path_with_name(full, name).map_err(|e| io_err(&format!("archiving {}", full.display()), e))?;
        count += 1;
        Ok(())
    };
    if kind == "directory" {
        let mut stack: Vec<(PathBuf, PathBuf)> = sorted_children(path)?
            .into_iter()
            .rev()
            .map(|c| {
                let rel = PathBuf::from(c.file_name().unwrap());
                (c, rel)
            })
            .collect();
        while let Some((full, rel)) = stack.pop() {
            add(&mut b, &full, &rel)?;
            let m = fs::symlink_metadata(&full).map_err(|e| io_err("reading", e))?;
            if m.is_dir() {
                for c in sorted_children(&full)?.into_iter().rev() {
                    let r = rel.join(c.file_name().unwrap());
                    stack.push((c, r));
                }
            }
        }
    } else {
        let name = path.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("file"));
        add(&mut b, path, &name)?;
    }
    // No fsync: the transfer file is read back at once and deleted, never kept.
    b.into_inner().map_err(|e| io_err("finishing the export", e))?;
    let size = fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    Ok(FsResponse::Exported {
        transfer_id: id,
        size,
        artifact_type: kind.to_string(),
        entry_count: count,
        bytes_written: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("src/lib")).unwrap();
        fs::write(r.join("src/lib/x.txt"), "x\n").unwrap();
        fs::write(r.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(r.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../lib/x.txt", r.join("src/link")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("outside")).unwrap();
        t
    }

    #[test]
    fn export_then_extract_round_trips_modes_and_links() {
        let src = tree();
        let FsResponse::Exported { transfer_id, entry_count, .. } = export(src.path()).unwrap() else { panic!() };
        assert_eq!(entry_count, 6);
        let dst = tempfile::tempdir().unwrap();
        let target = dst.path().join("w");
        let (n, bytes) = extract(&transfer_path(&transfer_id).unwrap(), &target).unwrap();
        let _ = fs::remove_file(transfer_path(&transfer_id).unwrap());
        assert_eq!(n, 6);
        assert_eq!(bytes, 2 + 10);
        assert_eq!(fs::read_link(target.join("src/link")).unwrap(), Path::new("../lib/x.txt"));
        assert_eq!(fs::read_link(target.join("outside")).unwrap(), Path::new("/etc"));
        assert_eq!(fs::metadata(target.join("run.sh")).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn extraction_never_follows_a_link() {
        let dst = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // First archive plants a link to a directory outside; the second writes through it.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "escape", outside.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "escape/pwned", &b"bad"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let up = dst.path().join("up.tar");
        fs::write(&up, bytes).unwrap();
        let e = extract(&up, &dst.path().join("w")).unwrap_err();
        assert!(e.message.contains("symlinked path"), "{}", e.message);
        assert!(!outside.path().join("pwned").exists());
    }

    /// An archive with members named by raw bytes, bypassing the builder's own path checks.
    fn raw_tar(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// The member rule the agent shares with the host (`pyro_tree::member`, pinned there by
    /// `empty_names_skip_a_root_directory_and_refuse_anything_else`): the root directory
    /// entry `./` that `tar -C dir -cf x.tar .` writes is skipped; a file or link with no
    /// name is refused with the host's message.
    #[test]
    fn empty_member_names() {
        let dst = tempfile::tempdir().unwrap();
        let up = dst.path().join("up.tar");
        let d = tar::EntryType::Directory;
        let f = tar::EntryType::Regular;
        fs::write(&up, raw_tar(&[("./", d, b""), (".", d, b""), ("./a.txt", f, b"hi")])).unwrap();
        assert_eq!(extract(&up, &dst.path().join("w")).unwrap(), (1, 2));
        assert_eq!(fs::read(dst.path().join("w/a.txt")).unwrap(), b"hi");
        for name in [".", "./", ""] {
            fs::write(&up, raw_tar(&[(name, f, b"x")])).unwrap();
            let e = extract(&up, &dst.path().join("w2")).unwrap_err();
            assert_eq!((e.kind, e.message.as_str()), ("invalid_path", "archive member has an empty name"), "{name:?}");
        }
        fs::write(&up, raw_tar(&[("a/../../x", f, b"x")])).unwrap();
        let e = extract(&up, &dst.path().join("w3")).unwrap_err();
        assert_eq!(e.message, "archive member must stay inside the tree (no '..'): a/../../x");
        fs::write(&up, raw_tar(&[("a", f, b"x"), ("b", tar::EntryType::Link, b"")])).unwrap();
        let e = extract(&up, &dst.path().join("w4")).unwrap_err();
        assert!(e.message.starts_with("archive member b is a hard link"), "{}", e.message);
    }

    #[test]
    fn secret_names_follow_the_host_rule() {
        let secret = |name: &str| pyro_protocol::fs::SecretFile { name: name.into(), value: b"v".to_vec() };
        let e = install_secrets(&[secret("1BAD")]).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), ("bad_request", "invalid secret name '1BAD'"));
        assert!(install_secrets(&[secret(" PADDED")]).is_err(), "the agent never trims: the host already did");
    }

    #[test]
    fn write_keeps_mode_and_refuses_symlinked_parents() {
        let t = tree();
        let script = t.path().join("run.sh");
        write(&script, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(fs::metadata(&script).unwrap().mode() & 0o777, 0o755);
        let fresh = t.path().join("new/dir/file.txt");
        write(&fresh, b"x").unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o644);
        let e = write(&t.path().join("outside/passwd"), b"x").unwrap_err();
        assert!(e.message.contains("symlinked parent"), "{}", e.message);
    }

    #[test]
    fn created_parents_are_reported_for_fsync() {
        let t = tempfile::tempdir().unwrap();
        let changed = prepare_parents(&t.path().join("a/b/file.txt")).unwrap();
        assert_eq!(changed, vec![t.path().to_path_buf(), t.path().join("a")]);
        assert!(t.path().join("a/b").is_dir());
        assert!(prepare_parents(&t.path().join("a/b/other.txt")).unwrap().is_empty());
    }

    #[test]
    fn list_is_sorted_and_reports_links() {
        let t = tree();
        let FsResponse::Listing { entries, .. } = list(t.path(), true).unwrap() else { panic!() };
        let names: Vec<_> =
            entries.iter().map(|e| e.path.strip_prefix(&*t.path().to_string_lossy()).unwrap().to_string()).collect();
        assert_eq!(names, vec!["/outside", "/run.sh", "/src", "/src/lib", "/src/lib/x.txt", "/src/link"]);
        let link = entries.iter().find(|e| e.path.ends_with("/src/link")).unwrap();
        assert_eq!(link.link_target.as_deref(), Some("../lib/x.txt"));
        assert_eq!(link.artifact_type, "symlink");
    }
}
