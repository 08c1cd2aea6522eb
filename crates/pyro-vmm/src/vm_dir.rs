//! [`VmDir`]: the one owner of a VM directory's layout.

use std::path::{Path, PathBuf};

/// A VM's directory and the name of every file in it. Nothing outside this crate joins a
/// file name onto a VM directory: the product layer holds a `VmDir` (and the few paths
/// it hands out) instead.
///
/// | file | written by | what |
/// |---|---|---|
/// | `launch.json` | [`Machine::boot`](crate::Machine::boot) | what the supervisor runs |
/// | `supervisor.sock` | supervisor | clients' requests |
/// | `supervisor.json` | supervisor | pid record (pids + identities) |
/// | `supervisor.lock` | supervisor | held (`flock`) for the supervisor's whole life; kept |
/// | `supervisor.log` | supervisor | its stderr |
/// | `vmm.log` | QEMU | its stdout and stderr |
/// | `console.log`, `console.log.1` | supervisor | guest serial console, 1 MiB each at most |
/// | `agent.sock`, `qmp.sock` | QEMU | agent channel, monitor (the supervisor's alone) |
/// | `published.json` | supervisor | live published-port rules |
/// | `rootfs.ext4` | product (disk clone) | the VM's root disk, for persistent VMs |
/// | `rootfs.reset.ext4` | product (reset) | a replacement disk while it is being built |
/// | `rootfs.qcow2` | product ([`create_overlay`](crate::create_overlay)) | the VM's root disk when it is a qcow2 overlay |
/// | `memory.state` | supervisor (pause) | the guest's RAM and device state |
/// | `memory.state.partial` | supervisor (pause) | the state while it is written (stale once the pause ended) |
/// | `memory.json` | supervisor (pause) | the state's record; written last, it makes the state valid |
/// | `workdir/` | product | host-compat mode's working directory |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    root: PathBuf,
}

/// Files a VM's processes create and that mean nothing once they are gone.
const STALE_FILES: [&str; 6] = [SOCKET, PID_RECORD, AGENT_SOCKET, QMP_SOCKET, PUBLISHED, MEMORY_STATE_PARTIAL];

const LAUNCH_SPEC: &str = "launch.json";
const SOCKET: &str = "supervisor.sock";
const PID_RECORD: &str = "supervisor.json";
/// Never among the stale files: removing it while a supervisor holds it would let a second
/// one lock a new file of the same name.
const SUPERVISOR_LOCK: &str = "supervisor.lock";
const SUPERVISOR_LOG: &str = "supervisor.log";
const CONSOLE_LOG: &str = "console.log";
const VMM_LOG: &str = "vmm.log";
const AGENT_SOCKET: &str = "agent.sock";
const QMP_SOCKET: &str = "qmp.sock";
const PUBLISHED: &str = "published.json";
const DISK: &str = "rootfs.ext4";
const STAGED_DISK: &str = "rootfs.reset.ext4";
const HOST_COMPAT_WORKDIR: &str = "workdir";
const DISK_OVERLAY: &str = "rootfs.qcow2";
const MEMORY_STATE: &str = "memory.state";
const MEMORY_STATE_PARTIAL: &str = "memory.state.partial";
const MEMORY_META: &str = "memory.json";

/// Longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl VmDir {
    /// The VM directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        VmDir { root: root.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Create the directory (owner-only) if it is missing.
    pub fn create(&self) -> crate::Result<()> {
        pyro_sys::create_private_dir(&self.root)
            .map_err(|e| crate::Error::io(format!("creating {}", self.root.display()), e))
    }

    /// The root disk of a persistent VM (`rootfs.ext4`).
    pub fn disk(&self) -> PathBuf {
        self.root.join(DISK)
    }

    /// Where a replacement root disk is built before it is renamed over [`VmDir::disk`].
    pub fn staged_disk(&self) -> PathBuf {
        self.root.join(STAGED_DISK)
    }

    /// The root disk of a persistent VM when it is a qcow2 overlay (`rootfs.qcow2`).
    pub fn disk_overlay(&self) -> PathBuf {
        self.root.join(DISK_OVERLAY)
    }

    /// A paused VM's saved RAM and device state (`memory.state`).
    pub fn memory_state(&self) -> PathBuf {
        self.root.join(MEMORY_STATE)
    }

    /// The record of [`VmDir::memory_state`] (`memory.json`), written last.
    pub fn memory_meta(&self) -> PathBuf {
        self.root.join(MEMORY_META)
    }

    /// Where a pause writes the state before it is complete and durable.
    pub(crate) fn memory_state_partial(&self) -> PathBuf {
        self.root.join(MEMORY_STATE_PARTIAL)
    }

    /// The working directory of a VM in host-compat mode (no guest).
    pub fn host_compat_workdir(&self) -> PathBuf {
        self.root.join(HOST_COMPAT_WORKDIR)
    }

    pub(crate) fn launch_spec(&self) -> PathBuf {
        self.root.join(LAUNCH_SPEC)
    }
    pub(crate) fn supervisor_socket(&self) -> PathBuf {
        self.root.join(SOCKET)
    }
    pub(crate) fn pid_record(&self) -> PathBuf {
        self.root.join(PID_RECORD)
    }
    /// Held exclusively by the directory's supervisor from its first step to its exit (the
    /// kernel drops it even on SIGKILL): free means no supervisor of this VM is alive.
    pub(crate) fn supervisor_lock(&self) -> PathBuf {
        self.root.join(SUPERVISOR_LOCK)
    }
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.root.join(SUPERVISOR_LOG)
    }
    pub(crate) fn console_log(&self) -> PathBuf {
        self.root.join(CONSOLE_LOG)
    }
    pub(crate) fn vmm_log(&self) -> PathBuf {
        self.root.join(VMM_LOG)
    }
    pub(crate) fn agent_socket(&self) -> PathBuf {
        self.root.join(AGENT_SOCKET)
    }
    pub(crate) fn qmp_socket(&self) -> PathBuf {
        self.root.join(QMP_SOCKET)
    }
    pub(crate) fn published(&self) -> PathBuf {
        self.root.join(PUBLISHED)
    }

    /// Refuse a directory so deep that its sockets would not fit in `sun_path` (the bind
    /// would fail later with an opaque error).
    pub(crate) fn check_socket_paths(&self) -> crate::Result<()> {
        let longest = [self.supervisor_socket(), self.agent_socket(), self.qmp_socket()]
            .into_iter()
            .max_by_key(|p| p.as_os_str().len())
            .expect("three sockets");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(crate::Error::HostRequirement(format!(
                "the state directory is too deep for Unix sockets ({} is over {MAX_SOCKET_PATH} bytes); set PYRO_HOME to a shorter path",
                longest.display()
            )));
        }
        Ok(())
    }

    /// Is the VM in this directory running (its recorded supervisor and VMM alive, and
    /// still the same processes: a stale pid record naming a reused pid is not a running
    /// VM)? A VMM that died leaves its supervisor alive for a moment while it cleans up:
    /// that VM is not running.
    pub fn is_running(&self) -> bool {
        crate::supervisor::client::is_running(self)
    }

    /// Is any process of this VM (its supervisor or its VMM, as recorded and still the same
    /// process) alive? Unlike [`VmDir::is_running`], true while a supervisor whose QEMU is
    /// gone (after a pause, or a crash) is still cleaning up.
    pub fn has_live_processes(&self) -> bool {
        !crate::supervisor::client::live_processes(self).is_empty()
    }

    /// Last resort: SIGKILL the VMM and supervisor named in the pid record, each only if
    /// it is still the process that was recorded.
    pub fn kill(&self) {
        crate::supervisor::client::kill_from_pid_file(self);
    }

    /// Kill the VM however far its boot got: by its pid record and, when that is not
    /// written yet, by the command lines of `pyro-supervisor` / `qemu-system-*` processes
    /// naming exactly this directory (waits up to 2 s for them to be gone).
    pub fn reap(&self) {
        crate::supervisor::client::kill_from_pid_file(self);
        crate::supervisor::client::kill_vm_processes_of(self);
    }

    /// Remove the sockets, pid record and published-port rules a dead supervisor left
    /// behind (the rules died with its QEMU).
    pub fn clean_stale_files(&self) {
        for f in STALE_FILES {
            let _ = std::fs::remove_file(self.root.join(f));
        }
    }
}

/// Supervisors running for a VM directory somewhere under `root` (found by their
/// `--vm-dir` argument): their identity and VM directory.
pub fn supervisors_under(root: &Path) -> Vec<(pyro_sys::ProcessIdentity, VmDir)> {
    crate::supervisor::client::supervisors_under(root).into_iter().map(|(id, dir)| (id, VmDir::new(dir))).collect()
}

/// Give a VM its own raw copy of a root disk image (`dest` is [`VmDir::disk`] or
/// [`VmDir::staged_disk`]): reflinked where the host filesystem shares blocks (instant),
/// otherwise a sparse copy (only allocated blocks are written: ~0.3 s for a 2 GiB image
/// holding ~400 MB). Returns the clone mode used (`reflink` or `sparse_copy`).
pub fn clone_disk(source: &Path, dest: &Path) -> crate::Result<&'static str> {
    use crate::Error;
    let tmp = dest.with_extension("ext4.partial");
    let reflinked = std::process::Command::new("cp")
        .args(["--reflink=always", "--"])
        .arg(source)
        .arg(&tmp)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mode = if reflinked {
        "reflink"
    } else {
        let out = std::process::Command::new("cp")
            .args(["--sparse=always", "--"])
            .arg(source)
            .arg(&tmp)
            .output()
            .map_err(|e| Error::io("running cp", e))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(Error::io(
                format!("copying the disk image to {}", dest.display()),
                std::io::Error::other(stderr),
            ));
        }
        "sparse_copy"
    };
    // `cp` gives the copy the environment image's mode (world-readable in a shared cache);
    // a VM's own disk holds the user's work: owner only.
    pyro_sys::make_private(&tmp).map_err(|e| Error::io(format!("securing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(format!("placing {}", dest.display()), e))?;
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_files_go_and_the_disk_and_logs_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let vm = VmDir::new(tmp.path());
        for p in [vm.supervisor_socket(), vm.pid_record(), vm.qmp_socket(), vm.published(), vm.disk(), vm.console_log()]
        {
            std::fs::write(p, "x").unwrap();
        }
        vm.clean_stale_files();
        assert!(!vm.supervisor_socket().exists() && !vm.pid_record().exists() && !vm.published().exists());
        assert!(vm.disk().exists() && vm.console_log().exists());
        // A paused VM's state stays; a half-written one goes.
        for p in [vm.memory_state(), vm.memory_meta(), vm.memory_state_partial()] {
            std::fs::write(p, "x").unwrap();
        }
        vm.clean_stale_files();
        assert!(vm.memory_state().exists() && vm.memory_meta().exists() && !vm.memory_state_partial().exists());
    }

    #[test]
    fn a_directory_too_deep_for_sockets_is_refused_up_front() {
        assert!(VmDir::new("/tmp/short").check_socket_paths().is_ok());
        let deep = VmDir::new(format!("/tmp/{}", "d".repeat(100)));
        let e = deep.check_socket_paths().unwrap_err();
        assert!(matches!(e, crate::Error::HostRequirement(_)), "{e}");
    }
}
