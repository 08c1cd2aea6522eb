//! Advisory `flock(2)` locks on lock files, held until the guard is dropped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `LOCK_SH`: any number of shared holders, no exclusive one.
    Shared,
    /// `LOCK_EX`: one holder.
    Exclusive,
}

impl LockMode {
    fn op(self) -> libc::c_int {
        match self {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        }
    }
}

/// A held `flock`; released when dropped (closing the descriptor releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Lock files are private to the user (0600, whatever the umask) and created if missing.
fn open_lock_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

/// Blocks until the lock on `path` is ours. Never call this on an async runtime thread; use
/// [`lock_async`] there.
pub fn lock(path: &Path, mode: LockMode) -> io::Result<FileLock> {
    let file = open_lock_file(path)?;
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), mode.op()) } == 0 {
            return Ok(FileLock { _file: file });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The lock if it is free right now; `None` when another holder has it (or a signal
/// interrupted the non-blocking call: callers treat that as "busy" and retry).
pub fn try_lock(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
    let file = open_lock_file(path)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), mode.op() | libc::LOCK_NB) } == 0 {
        return Ok(Some(FileLock { _file: file }));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(err),
    }
}

/// [`lock`] for async code, without ever blocking a runtime worker: a free lock is taken at
/// once; a held one is waited for on the blocking pool. (With a few workers, two calls
/// blocked in `flock` would otherwise stall every other call of an MCP server.) If the
/// caller is cancelled while waiting, the waiting thread still gets the lock and drops it.
#[cfg(feature = "async")]
pub async fn lock_async(path: &Path, mode: LockMode) -> io::Result<FileLock> {
    if let Some(held) = try_lock(path, mode)? {
        return Ok(held);
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || lock(&path, mode)).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("l");
        let ex = lock(&p, LockMode::Exclusive).unwrap();
        assert!(try_lock(&p, LockMode::Exclusive).unwrap().is_none());
        assert!(try_lock(&p, LockMode::Shared).unwrap().is_none());
        drop(ex);
        let sh = try_lock(&p, LockMode::Shared).unwrap().expect("free");
        assert!(try_lock(&p, LockMode::Shared).unwrap().is_some());
        assert!(try_lock(&p, LockMode::Exclusive).unwrap().is_none());
        drop(sh);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
