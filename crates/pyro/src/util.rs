//! Small shared helpers.

use std::io::Write;
use std::path::Path;

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Float Unix seconds, the timestamp format of every payload.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Write a file so readers see the old or the new content, never a mix: temp file in the
/// same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// First 12 hex chars of a random UUID4, the id format of VMs, workspaces and shells.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Last `n` non-empty lines of a text file (console logs in boot errors).
pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Is a process alive (and not a zombie we could reap)?
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let alive = unsafe { libc::kill(pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        return false;
    }
    // A zombie still answers kill(0): look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => false,
    }
}

/// Log something the guest sent that the host refused (a hostile or broken guest): on stderr
/// and in `<dir>/guest-refused.log`, which stops growing at [`GUEST_REFUSAL_LOG_CAP`] so a
/// guest cannot fill the host disk through it.
pub fn log_guest_refusal(dir: &Path, message: &str) {
    eprintln!("[warn] guest: {message}");
    let path = dir.join(GUEST_REFUSAL_LOG);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= GUEST_REFUSAL_LOG_CAP {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let line: String = message.chars().take(512).collect();
        let _ = writeln!(f, "{:.3} {}", now_f64(), line.replace(['\n', '\r'], " "));
    }
}

/// File name of the refusal log in a workspace directory.
pub const GUEST_REFUSAL_LOG: &str = "guest-refused.log";
/// Size past which the refusal log is no longer appended to.
pub const GUEST_REFUSAL_LOG_CAP: u64 = 64 * 1024;

/// Who a pid was when it was recorded: the pid, its start time (clock ticks since boot,
/// field 22 of `/proc/<pid>/stat`) and the boot it belongs to. A pid alone names a
/// different process after it is reused (or after a reboot, when a stale pid file names
/// whatever got that number): anything that signals a recorded pid checks all three first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_ticks: u64,
    pub boot_id: String,
}

impl ProcessIdentity {
    /// The identity of a live process now; `None` if it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        if pid == 0 {
            return None;
        }
        Some(ProcessIdentity { pid, start_ticks: process_start_ticks(pid)?, boot_id: boot_id()? })
    }

    /// This process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id())
    }

    /// Is the recorded process still running (same boot, same start time, not a zombie)?
    pub fn is_alive(&self) -> bool {
        pid_alive(self.pid) && Self::of(self.pid).as_ref() == Some(self)
    }

    /// Send `signal` to the recorded process, never to another one that reuses its pid.
    /// The pid is pinned with a pidfd first, then its identity checked, then the signal goes
    /// through the pidfd: a process that exits in between is not replaced by a newcomer.
    /// True when the signal was delivered.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        if self.pid <= 1 {
            return false;
        }
        // SAFETY: pidfd_open(2) with a pid and no flags; returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        if fd < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) && self.is_alive() {
                // Kernels before 5.3 have no pidfds: the identity check just made is the
                // best there is (the window to the kill is microseconds).
                // SAFETY: kill(2) on a pid whose identity was just verified.
                return unsafe { libc::kill(self.pid as libc::pid_t, signal) } == 0;
            }
            return false;
        }
        // SAFETY: the fd was just returned to us and is owned from here on.
        let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // The pidfd refers to whatever held the pid when it was opened; if that is the
        // recorded process, the identity check after opening it still matches.
        if !self.is_alive() {
            return false;
        }
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal(2) on our pidfd, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        rc == 0
    }
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it are
    // counted from its last ')'. Field 3 is the first after it, so field 22 is the 20th.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
}

/// Create a directory (and missing parents) readable by its owner only, whatever the umask:
/// `mkdir`'s mode is masked by the umask, so each directory created here is chmod'ed to
/// 0700 explicitly. Directories that already existed are left as they are.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.is_dir() {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Make an existing file or directory owner-only (0600 files, 0700 directories).
pub fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_matches_only_the_same_process() {
        let me = ProcessIdentity::current().expect("own identity");
        assert!(me.is_alive());
        let wrong_start = ProcessIdentity { start_ticks: me.start_ticks + 1, ..me.clone() };
        assert!(!wrong_start.is_alive());
        let wrong_boot = ProcessIdentity { boot_id: "00000000-0000-0000-0000-000000000000".into(), ..me.clone() };
        assert!(!wrong_boot.is_alive());
    }

    #[test]
    fn signal_refuses_a_process_with_another_start_time() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let real = ProcessIdentity::of(child.id()).unwrap();
        let stale = ProcessIdentity { start_ticks: real.start_ticks.saturating_sub(1), ..real.clone() };
        assert!(!stale.signal(libc::SIGKILL));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(child.try_wait().unwrap().is_none(), "a stale identity killed an unrelated process");
        assert!(real.signal(libc::SIGKILL));
        assert!(child.wait().unwrap().code().is_none());
    }

    #[test]
    fn private_dirs_ignore_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        // SAFETY: umask only changes this process's file creation mask; restored below.
        let old = unsafe { libc::umask(0) };
        let r = create_private_dir(&deep);
        unsafe { libc::umask(old) };
        r.unwrap();
        for p in [tmp.path().join("a"), tmp.path().join("a/b"), deep] {
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700, "{}", p.display());
        }
    }
}
