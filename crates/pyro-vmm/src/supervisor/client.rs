//! The engine side of a supervisor: spawning one for a VM directory, sending it requests,
//! and finding or killing a VM's processes by their identity-checked pid record.

use super::{PidRecord, ReadyLine};
use crate::util::tail_lines;
use crate::{Error, Result, VmDir};
use futures::StreamExt;
use pyro_protocol::{codec, decode, Frame, Request, RequestFrame, Response, ResponseFrame};
use pyro_sys::ProcessIdentity;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Start a supervisor for the VM in `vm_dir` (which must hold `launch.json`) and wait until
/// the guest agent is ready. On failure nothing of the VM keeps running.
pub(crate) async fn spawn(supervisor_bin: &Path, vm: &VmDir, wait: Duration) -> Result<ReadyLine> {
    let vm_dir = vm.path();
    wait_for_previous_supervisor(vm).await?;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(vm.supervisor_log())
        .map_err(|e| Error::io("opening the supervisor log", e))?;
    let mut cmd = std::process::Command::new(supervisor_bin);
    cmd.arg("--vm-dir").arg(vm_dir).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from the caller's
    // session so a terminal's Ctrl-C or hangup does not reach the VM directly.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", supervisor_bin.display()), e))?;
    // Until the supervisor reports ready, this call owns it: if the call is dropped (MCP
    // cancel, Ctrl-C) the half-booted VM must not live on unseen. Killing the supervisor
    // takes its VMM with it (PR_SET_PDEATHSIG).
    let mut boot_guard = BootGuard { pid: child.id(), vm: vm.clone() };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(wait, lines.next_line()).await;
    let fail = |msg: String| -> Error {
        let console = crate::console::tail(&vm.console_log(), 15);
        if console.is_empty() {
            Error::Boot(msg)
        } else {
            Error::Boot(format!("{msg}; last console lines:\n{console}"))
        }
    };
    match line {
        Ok(Ok(Some(text))) => {
            let ready: ReadyLine = serde_json::from_str(&text)
                .map_err(|e| Error::Boot(format!("supervisor sent an unreadable ready line ({e}): {text}")))?;
            // The supervisor lives on in its own session (or cleans up after its own failed
            // boot); reap it in the background so it never lingers as our zombie.
            boot_guard.pid = None;
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            if ready.ok {
                Ok(ready)
            } else {
                let why = ready.error.unwrap_or_else(|| "the VM did not start".into());
                Err(match ready.error_kind.as_deref() {
                    Some("corrupt_state") => Error::CorruptState(why),
                    _ => Error::Boot(why),
                })
            }
        }
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = child.wait().await.ok();
            boot_guard.pid = None;
            let log = tail_lines(&vm.supervisor_log(), 10);
            Err(fail(format!("the VM supervisor exited during startup ({status:?}): {log}")))
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            boot_guard.pid = None;
            kill_from_pid_file(vm);
            Err(fail(format!("guest did not become ready in {} s", wait.as_secs())))
        }
    }
}

/// How long a predecessor may take to finish its cleanup before it is killed.
const PREDECESSOR_GRACE: Duration = Duration::from_secs(5);

/// Wait until no supervisor of `vm` is alive (its lifetime lock is free). A supervisor
/// whose VMM died answers its callers first and cleans up after, and a stopped VM's pid
/// record may already be gone, so "not running" does not mean "no supervisor": one still
/// finishing would remove its successor's pid record and sockets. Given
/// [`PREDECESSOR_GRACE`], then SIGKILLed (found by its command line).
async fn wait_for_previous_supervisor(vm: &VmDir) -> Result<()> {
    let lock_path = vm.supervisor_lock();
    let free = || -> Result<bool> {
        pyro_sys::try_lock(&lock_path, pyro_sys::LockMode::Exclusive)
            .map(|held| held.is_some())
            .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))
    };
    let deadline = Instant::now() + PREDECESSOR_GRACE;
    while !free()? {
        if Instant::now() >= deadline {
            let stale = vm.clone();
            tokio::task::spawn_blocking(move || kill_vm_processes_of(&stale)).await.ok();
            if free()? {
                break;
            }
            return Err(Error::Boot(format!(
                "a previous supervisor of the VM in {} is still running and could not be stopped",
                vm.path().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Kills a supervisor still booting when [`spawn`] is dropped or fails.
struct BootGuard {
    /// Our unreaped child: its pid cannot be reused while this guard lives.
    pid: Option<u32>,
    vm: VmDir,
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // The VMM first (if the supervisor recorded it yet), then the supervisor.
            kill_from_pid_file(&self.vm);
            // SAFETY: kill(2) on our own child, which has not been reaped (the Child handle
            // is still alive in `spawn`'s frame or has just been dropped unreaped).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Send one request to the VM's supervisor and wait for its answer. Dropping the returned
/// future closes the connection, which makes the supervisor cancel the request in the guest.
pub(crate) async fn call(vm: &VmDir, request: Request, timeout: Option<Duration>) -> Result<Response> {
    let socket = vm.supervisor_socket();
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::NotRunning(format!("the VM is not running (cannot reach {}: {e})", socket.display())))?;
    let mut framed = Framed::new(stream, codec());
    let frame = RequestFrame { id: 1, request };
    // Written as built (length prefix included) rather than through the codec, which would
    // copy a multi-MiB payload once more.
    let wire = frame.encode_wire().map_err(|e| Error::Channel(e.to_string()))?;
    {
        use tokio::io::AsyncWriteExt;
        framed
            .get_mut()
            .write_all(&wire)
            .await
            .map_err(|e| Error::Channel(format!("sending to the VM supervisor: {e}")))?;
    }
    let wait = async {
        match framed.next().await {
            Some(Ok(buf)) => {
                let resp: ResponseFrame =
                    decode(&buf).map_err(|e| Error::Channel(format!("unreadable answer from the VM: {e}")))?;
                Ok(resp.response)
            }
            Some(Err(e)) => Err(Error::Channel(format!("reading from the VM supervisor: {e}"))),
            None => Err(Error::Channel("the VM supervisor closed the connection (the VM exited?)".into())),
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .map_err(|_| Error::Channel(format!("the guest did not answer within {} s", t.as_secs())))?,
        None => wait.await,
    }
}

/// Read the pid record of a VM directory.
pub(crate) fn read_pids(vm: &VmDir) -> Option<PidRecord> {
    let text = std::fs::read_to_string(vm.pid_record()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Is the VM in this directory running (its recorded supervisor and VMM alive, and still the
/// same processes: a stale pid file naming a reused pid is not a running VM)? A VMM that
/// died (killed, crashed) leaves its supervisor alive for a moment while it cleans up: that
/// VM is not running, or a `start` right then would take it for a live one and boot nothing.
pub(crate) fn is_running(vm: &VmDir) -> bool {
    let vm_dir = vm.path();
    read_pids(vm).map(|p| p.supervisor_alive(vm_dir) && (p.vmm_pid == 0 || p.vmm_alive(vm_dir))).unwrap_or(false)
}

/// The VM's processes named in its pid record that are alive now (supervisor first).
pub(crate) fn live_processes(vm: &VmDir) -> Vec<ProcessIdentity> {
    read_pids(vm).map(|p| p.live_processes(vm.path())).unwrap_or_default()
}

/// Wait (at most `timeout`) until every process in `processes` has exited (a supervisor
/// that answered a pause removes its pid record and then exits).
pub(crate) async fn wait_gone(processes: &[ProcessIdentity], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while processes.iter().any(ProcessIdentity::is_alive) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Last resort: SIGKILL the VMM and supervisor named in the pid file, each only if it is
/// still the process that was recorded (see [`ProcessIdentity::signal`]).
pub(crate) fn kill_from_pid_file(vm: &VmDir) {
    if let Some(p) = read_pids(vm) {
        let mut live = p.live_processes(vm.path());
        // VMM first: it holds the disk.
        live.reverse();
        for id in live {
            id.signal(libc::SIGKILL);
        }
    }
}

/// SIGKILL every process of the VM in `vm_dir` found by its command line (the supervisor's
/// `--vm-dir <vm_dir>`, QEMU's socket paths inside `vm_dir`) and wait (bounded, 2 s) until
/// they are gone. For reaping a VM whose pid file may not exist yet: a creation
/// interrupted while its supervisor was still booting. Only `pyro-supervisor` and
/// `qemu-system-*` processes naming exactly this directory count.
pub(crate) fn kill_vm_processes_of(vm: &VmDir) {
    let vm_dir = vm.path();
    let Ok(rd) = std::fs::read_dir("/proc") else { return };
    let dir = vm_dir.as_os_str().as_encoded_bytes();
    let mut inside = dir.to_vec();
    inside.push(b'/');
    let mut killed = Vec::new();
    for entry in rd.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let Some(name) = args.first().and_then(|a0| a0.rsplit(|b| *b == b'/').next()) else { continue };
        let ours = if name == b"pyro-supervisor" {
            args.windows(2).any(|w| w[0] == b"--vm-dir" && w[1] == dir)
        } else if name.starts_with(b"qemu-system") {
            args.iter().any(|a| a.windows(inside.len()).any(|w| w == inside.as_slice()))
        } else {
            false
        };
        if ours {
            if let Some(id) = ProcessIdentity::of(pid) {
                if id.signal(libc::SIGKILL) {
                    killed.push(id);
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while killed.iter().any(|id| id.is_alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Supervisors running for a VM directory somewhere under `root` (found by their
/// `--vm-dir` argument): their identity and VM directory.
pub(crate) fn supervisors_under(root: &Path) -> Vec<(ProcessIdentity, PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in rd.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().and_then(|a0| a0.rsplit(|b| *b == b'/').next()) != Some(b"pyro-supervisor") {
            continue;
        }
        let Some(dir) =
            args.windows(2).find(|w| w[0] == b"--vm-dir").map(|w| PathBuf::from(std::ffi::OsStr::from_bytes(w[1])))
        else {
            continue;
        };
        if dir.starts_with(root) {
            if let Some(id) = ProcessIdentity::of(pid) {
                found.push((id, dir));
            }
        }
    }
    found
}
