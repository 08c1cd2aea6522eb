//! Process identity: a pid plus what makes it unique over time, and signals that can only
//! reach the recorded process.

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no arguments, touches no memory and always succeeds.
    unsafe { libc::geteuid() }
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

/// Send `signal` to every process of the process group `pgid` (a command started as a group
/// leader, so it and everything it spawned go at once). Refused for `pgid <= 1`: 0 would be
/// the caller's own group, 1 init's, and kill(2) gives negative values other meanings.
/// True when the signal was delivered.
pub fn signal_process_group(pgid: i32, signal: libc::c_int) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Who a pid was when it was recorded: the pid, its start time (clock ticks since boot,
/// field 22 of `/proc/<pid>/stat`) and the boot it belongs to. A pid alone names a
/// different process after it is reused (or after a reboot, when a stale pid file names
/// whatever got that number): anything that signals a recorded pid checks all three first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot the process ran in.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_signal_reaches_the_leader_and_its_children() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let mut child =
            std::process::Command::new("sh").args(["-c", "sleep 30 & exec sleep 30"]).process_group(0).spawn().unwrap();
        let pgid = child.id() as i32;
        assert!(signal_process_group(pgid, libc::SIGKILL));
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        for reserved in [-5, 0, 1] {
            assert!(!signal_process_group(reserved, 0), "{reserved}");
        }
    }

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
}
