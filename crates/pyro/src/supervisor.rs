//! The per-VM supervisor: one small process per running VM that owns the VMM child, its
//! console log and the single agent channel, and serves any number of local clients (CLI
//! calls, MCP servers, SDK users) over a Unix socket in the VM's directory.
//!
//! Why a process of its own: a VM must outlive the CLI call that started it, and QEMU's
//! chardev socket serves one client at a time, so something long-lived has to multiplex.
//!
//! Files in the VM directory: `launch.json` (what to run), `supervisor.sock` (clients),
//! `supervisor.json` (pids), `supervisor.log`, `vmm.log`, `console.log` and `console.log.1`
//! (guest serial, 1 MiB each at most, drained by the supervisor),
//! `agent.sock` and `qmp.sock` (QEMU's).
//!
//! Startup handshake with the spawner: the supervisor prints exactly one JSON line on its
//! stdout, [`ReadyLine`], once the guest agent answered (or with the reason it did not), then
//! detaches its stdout.

use crate::util::{pid_alive, tail_lines, ProcessIdentity};
use crate::{Error, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pyro_protocol::{
    codec, decode, encode, Frame, FrameId, Request, RequestFrame, Response, ResponseFrame, SupervisorRequest,
    SupervisorStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

pub const LAUNCH_FILE: &str = "launch.json";
pub const SOCKET_FILE: &str = "supervisor.sock";
pub const PID_FILE: &str = "supervisor.json";
pub const LOG_FILE: &str = "supervisor.log";
pub const CONSOLE_LOG: &str = "console.log";
pub const VMM_LOG: &str = "vmm.log";
pub const AGENT_SOCKET: &str = "agent.sock";
pub const QMP_SOCKET: &str = "qmp.sock";

/// What the supervisor runs; written by the engine into `launch.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub vm_id: String,
    pub vmm_bin: PathBuf,
    pub vmm_args: Vec<String>,
    pub backend: String,
    pub accel: String,
    pub boot_timeout_ms: u64,
    /// Ephemeral VMs die with the process that owns them (a killed `pyro run` leaves nothing).
    pub owner_pid: Option<u32>,
    /// Remove the whole VM directory when the VM ends (ephemeral VMs).
    pub remove_dir_on_exit: bool,
    /// The guest has a NIC (QEMU user network). Its egress is filtered (crate::netfilter);
    /// without a kernel that can filter, such a VM does not start.
    #[serde(default)]
    pub network: bool,
    /// Egress may also reach private ranges: `PYRO_NETWORK_ALLOW_PRIVATE=1` was set in the
    /// process that started the VM.
    #[serde(default)]
    pub allow_private_network: bool,
}

/// The one line the supervisor prints on stdout at startup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyLine {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub supervisor_pid: u32,
    #[serde(default)]
    pub vmm_pid: u32,
    /// Supervisor start to agent ready.
    #[serde(default)]
    pub ready_ms: u64,
    #[serde(default)]
    pub agent_version: String,
    /// Guest uptime when the agent sent Ready.
    #[serde(default)]
    pub guest_boot_ms: u64,
}

/// Pids of a running VM, for liveness checks and emergency kills, with who they were
/// (start time and boot id): after a reboot or pid reuse the same numbers name unrelated
/// processes, which must never be taken for the VM or signalled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PidRecord {
    pub supervisor_pid: u32,
    pub vmm_pid: u32,
    /// Identities of both processes; `None` in records of older pyro versions (then the
    /// process must show the VM directory on its command line to count as the VM's).
    #[serde(default)]
    pub supervisor: Option<ProcessIdentity>,
    #[serde(default)]
    pub vmm: Option<ProcessIdentity>,
}

impl PidRecord {
    /// The record for this (supervisor) process and its VMM child.
    pub fn for_current(vmm_pid: u32) -> Self {
        let supervisor_pid = std::process::id();
        PidRecord {
            supervisor_pid,
            vmm_pid,
            supervisor: ProcessIdentity::of(supervisor_pid),
            vmm: ProcessIdentity::of(vmm_pid),
        }
    }

    /// The recorded processes that are still the VM's own (supervisor first).
    fn live_processes(&self, vm_dir: &Path) -> Vec<ProcessIdentity> {
        [(self.supervisor_pid, &self.supervisor), (self.vmm_pid, &self.vmm)]
            .into_iter()
            .filter_map(|(pid, id)| match id {
                Some(id) if id.pid == pid && id.is_alive() => Some(id.clone()),
                Some(_) => None,
                None => legacy_identity(pid, vm_dir),
            })
            .collect()
    }

    /// Is the supervisor named here alive and really this VM's supervisor?
    fn supervisor_alive(&self, vm_dir: &Path) -> bool {
        match &self.supervisor {
            Some(id) => id.pid == self.supervisor_pid && id.is_alive(),
            None => legacy_identity(self.supervisor_pid, vm_dir).is_some(),
        }
    }

    /// Is the VMM named here alive and really this VM's VMM?
    fn vmm_alive(&self, vm_dir: &Path) -> bool {
        match &self.vmm {
            Some(id) => id.pid == self.vmm_pid && id.is_alive(),
            None => legacy_identity(self.vmm_pid, vm_dir).is_some(),
        }
    }
}

/// A record without identities (older pyro): trust a pid only if that process names the VM
/// directory on its command line (the supervisor's `--vm-dir`, QEMU's socket paths).
fn legacy_identity(pid: u32, vm_dir: &Path) -> Option<ProcessIdentity> {
    if pid <= 1 || !pid_alive(pid) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = vm_dir.as_os_str().as_encoded_bytes();
    let mentions = !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle);
    if mentions {
        ProcessIdentity::of(pid)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Engine side: spawning and talking to a supervisor.
// ---------------------------------------------------------------------------------------

/// Start a supervisor for the VM in `vm_dir` (which must hold `launch.json`) and wait until
/// the guest agent is ready. On failure nothing of the VM keeps running.
pub async fn spawn(supervisor_bin: &Path, vm_dir: &Path, wait: Duration) -> Result<ReadyLine> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(vm_dir.join(LOG_FILE))
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
    let mut boot_guard = BootGuard { pid: child.id(), vm_dir: vm_dir.to_path_buf() };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(wait, lines.next_line()).await;
    let fail = |msg: String| -> Error {
        let console = crate::console::tail(&vm_dir.join(CONSOLE_LOG), 15);
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
                Err(Error::Boot(ready.error.unwrap_or_else(|| "the VM did not start".into())))
            }
        }
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = child.wait().await.ok();
            boot_guard.pid = None;
            let log = tail_lines(&vm_dir.join(LOG_FILE), 10);
            Err(fail(format!("the VM supervisor exited during startup ({status:?}): {log}")))
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            boot_guard.pid = None;
            kill_from_pid_file(vm_dir);
            Err(fail(format!("guest did not become ready in {} s", wait.as_secs())))
        }
    }
}

/// Kills a supervisor still booting when [`spawn`] is dropped or fails.
struct BootGuard {
    /// Our unreaped child: its pid cannot be reused while this guard lives.
    pid: Option<u32>,
    vm_dir: PathBuf,
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // The VMM first (if the supervisor recorded it yet), then the supervisor.
            kill_from_pid_file(&self.vm_dir);
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
pub async fn call(vm_dir: &Path, request: Request, timeout: Option<Duration>) -> Result<Response> {
    let socket = vm_dir.join(SOCKET_FILE);
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::InvalidState(format!("the VM is not running (cannot reach {}: {e})", socket.display())))?;
    let mut framed = Framed::new(stream, codec());
    let frame = RequestFrame { id: 1, request };
    // Written as built (length prefix included) rather than through the codec, which would
    // copy a multi-MiB payload once more.
    let wire = frame.encode_wire().map_err(|e| Error::Guest(e.to_string()))?;
    {
        use tokio::io::AsyncWriteExt;
        framed
            .get_mut()
            .write_all(&wire)
            .await
            .map_err(|e| Error::Guest(format!("sending to the VM supervisor: {e}")))?;
    }
    let wait = async {
        match framed.next().await {
            Some(Ok(buf)) => {
                let resp: ResponseFrame =
                    decode(&buf).map_err(|e| Error::Guest(format!("unreadable answer from the VM: {e}")))?;
                Ok(resp.response)
            }
            Some(Err(e)) => Err(Error::Guest(format!("reading from the VM supervisor: {e}"))),
            None => Err(Error::Guest("the VM supervisor closed the connection (the VM exited?)".into())),
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .map_err(|_| Error::Guest(format!("the guest did not answer within {} s", t.as_secs())))?,
        None => wait.await,
    }
}

/// Read the pid record of a VM directory.
pub fn read_pids(vm_dir: &Path) -> Option<PidRecord> {
    let text = std::fs::read_to_string(vm_dir.join(PID_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Is the VM in this directory running (its recorded supervisor and VMM alive, and still the
/// same processes: a stale pid file naming a reused pid is not a running VM)? A VMM that
/// died (killed, crashed) leaves its supervisor alive for a moment while it cleans up: that
/// VM is not running, or a `start` right then would take it for a live one and boot nothing.
pub fn is_running(vm_dir: &Path) -> bool {
    read_pids(vm_dir).map(|p| p.supervisor_alive(vm_dir) && (p.vmm_pid == 0 || p.vmm_alive(vm_dir))).unwrap_or(false)
}

/// Last resort: SIGKILL the VMM and supervisor named in the pid file, each only if it is
/// still the process that was recorded (see [`ProcessIdentity::signal`]).
pub fn kill_from_pid_file(vm_dir: &Path) {
    if let Some(p) = read_pids(vm_dir) {
        let mut live = p.live_processes(vm_dir);
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
pub fn kill_vm_processes_of(vm_dir: &Path) {
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
pub fn supervisors_under(root: &Path) -> Vec<(ProcessIdentity, PathBuf)> {
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

/// Remove sockets, pid files and published-port rules a dead supervisor left behind (the
/// rules died with its QEMU).
pub fn clean_stale_files(vm_dir: &Path) {
    for f in [SOCKET_FILE, PID_FILE, AGENT_SOCKET, QMP_SOCKET, crate::qmp::PUBLISHED_FILE] {
        let _ = std::fs::remove_file(vm_dir.join(f));
    }
}

// ---------------------------------------------------------------------------------------
// Supervisor process side.
// ---------------------------------------------------------------------------------------

type ClientTx = mpsc::UnboundedSender<Bytes>;

struct Pending {
    client: ClientTx,
    client_conn: u64,
    client_id: u64,
    /// Set when the supervisor itself is waiting for this answer.
    local: Option<oneshot::Sender<Response>>,
}

struct Shared {
    spec: LaunchSpec,
    to_agent: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    vmm_pid: u32,
    agent_version: String,
    ready_ms: u64,
    shutdown_tx: mpsc::UnboundedSender<ShutdownCause>,
}

#[derive(Debug)]
enum ShutdownCause {
    Requested { timeout: Duration, reply: Option<(ClientTx, u64)> },
    OwnerGone,
    Signal,
}

impl Shared {
    fn alloc_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Ask the guest something on the supervisor's own behalf.
    async fn ask_guest(&self, request: Request, timeout: Duration) -> Option<Response> {
        let (tx, rx) = oneshot::channel();
        let id = self.alloc_id();
        let (dummy_tx, _dummy_rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap()
            .insert(id, Pending { client: dummy_tx, client_conn: 0, client_id: 0, local: Some(tx) });
        let bytes = encode(&RequestFrame { id, request }).ok()?;
        self.to_agent.send(bytes).ok()?;
        let answer = tokio::time::timeout(timeout, rx).await;
        // A guest that never answers must not grow the pending table.
        self.pending.lock().unwrap().remove(&id);
        answer.ok()?.ok()
    }
}

/// A published port lives exactly as long as its service: once a second, while any rule is
/// recorded, ask the agent which services still run and remove the rules of the others
/// (the engine also removes them on `service stop`; a rule already gone is harmless).
async fn watch_ports(shared: Arc<Shared>, vm_dir: PathBuf) {
    use pyro_protocol::session::{ServiceRequest, ServiceResponse};
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rules = crate::qmp::published(&vm_dir);
        if rules.is_empty() {
            continue;
        }
        let answer = shared.ask_guest(Request::Service(ServiceRequest::List), Duration::from_secs(5)).await;
        let Some(Response::Service(ServiceResponse::List { services })) = answer else { continue };
        let running: std::collections::HashSet<&str> =
            services.iter().filter(|s| s.state == "running").map(|s| s.name.as_str()).collect();
        let ended: Vec<_> = rules.into_iter().filter(|r| !running.contains(r.service.as_str())).collect();
        for rule in &ended {
            let _ = crate::qmp::human_command(&vm_dir, &rule.remove_command()).await;
        }
        if !ended.is_empty() {
            let _ = crate::qmp::edit_published(&vm_dir, |rules| rules.retain(|r| !ended.contains(r)));
        }
    }
}

/// Entry point of the `pyro-supervisor` binary.
pub fn supervisor_main(vm_dir: PathBuf) -> i32 {
    // Everything the supervisor and its VMM create (logs, QEMU's agent and QMP sockets: QMP
    // can run commands as the user) is the user's alone, whatever umask pyro was run with.
    // SAFETY: umask(2) only sets this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print_ready(&ReadyLine::failed(format!("supervisor runtime: {e}")));
            return 1;
        }
    };
    // current_thread: QEMU is spawned from this (main) thread, which lives as long as the
    // supervisor, so PR_SET_PDEATHSIG on the VMM fires exactly when the supervisor dies.
    rt.block_on(run(vm_dir))
}

impl ReadyLine {
    fn failed(error: String) -> Self {
        ReadyLine {
            ok: false,
            error: Some(error),
            supervisor_pid: std::process::id(),
            vmm_pid: 0,
            ready_ms: 0,
            agent_version: String::new(),
            guest_boot_ms: 0,
        }
    }
}

fn print_ready(line: &ReadyLine) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(line).unwrap_or_default());
    let _ = out.flush();
}

/// Point stdout at /dev/null so the spawner's pipe closes and later writes cannot fail.
fn detach_stdout() {
    if let Ok(devnull) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid open fd.
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 1);
        }
    }
}

async fn run(vm_dir: PathBuf) -> i32 {
    let started = Instant::now();
    let spec: LaunchSpec = match std::fs::read_to_string(vm_dir.join(LAUNCH_FILE))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            print_ready(&ReadyLine::failed(format!("cannot read {}: {e}", vm_dir.join(LAUNCH_FILE).display())));
            return 1;
        }
    };
    clean_stale_files(&vm_dir);

    let (mut vmm, console) = match spawn_vmm(&spec, &vm_dir) {
        Ok(c) => c,
        Err(e) => {
            print_ready(&ReadyLine::failed(e));
            finish(&vm_dir, &spec);
            return 1;
        }
    };
    let vmm_pid = vmm.id().unwrap_or(0);
    let _ = crate::util::write_atomic(
        &vm_dir.join(PID_FILE),
        serde_json::to_vec(&PidRecord::for_current(vmm_pid)).unwrap().as_slice(),
    );

    let boot_timeout = Duration::from_millis(spec.boot_timeout_ms);
    let connected = tokio::select! {
        r = connect_agent(&vm_dir, boot_timeout) => r,
        st = vmm.wait() => Err(format!("the VMM exited during boot ({})", st.map(|s| s.to_string()).unwrap_or_default())),
    };
    // QEMU made these with the supervisor's umask (0077) already; say it explicitly too.
    for socket in [AGENT_SOCKET, QMP_SOCKET] {
        let _ = crate::util::make_private(&vm_dir.join(socket));
    }
    let (framed, agent_version, guest_boot_ms) = match connected {
        Ok(v) => v,
        Err(e) => {
            let _ = vmm.start_kill();
            let _ = vmm.wait().await;
            // The drain ends once QEMU is gone; let it write the last lines first.
            for _ in 0..100 {
                if console.is_finished() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let console = crate::console::tail(&vm_dir.join(CONSOLE_LOG), 15);
            let vmm_log = tail_lines(&vm_dir.join(VMM_LOG), 5);
            let mut msg = e;
            if !vmm_log.is_empty() {
                msg.push_str(&format!("; VMM said: {vmm_log}"));
            }
            if !console.is_empty() {
                msg.push_str(&format!("; last console lines:\n{console}"));
            }
            print_ready(&ReadyLine::failed(msg));
            finish(&vm_dir, &spec);
            return 1;
        }
    };

    let (agent_sink, mut agent_stream) = framed.split();
    let (to_agent, agent_rx) = mpsc::unbounded_channel::<Bytes>();
    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel();
    let ready_ms = started.elapsed().as_millis() as u64;
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        to_agent,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        vmm_pid,
        agent_version: agent_version.clone(),
        ready_ms,
        shutdown_tx,
    });

    tokio::spawn(write_agent(agent_sink, agent_rx));

    let listener = match UnixListener::bind(vm_dir.join(SOCKET_FILE)) {
        Ok(l) => {
            let _ = crate::util::make_private(&vm_dir.join(SOCKET_FILE));
            l
        }
        Err(e) => {
            let _ = vmm.start_kill();
            let _ = vmm.wait().await;
            print_ready(&ReadyLine::failed(format!("cannot listen on {}: {e}", vm_dir.join(SOCKET_FILE).display())));
            finish(&vm_dir, &spec);
            return 1;
        }
    };
    print_ready(&ReadyLine {
        ok: true,
        error: None,
        supervisor_pid: std::process::id(),
        vmm_pid,
        ready_ms,
        agent_version,
        guest_boot_ms,
    });
    detach_stdout();

    // Route agent answers back to whoever asked, by the id in the frame header only: the
    // body the guest chose is forwarded untouched and decoded (bounded) by the client, never
    // here. Answers to unknown, finished or duplicate ids are dropped.
    let router = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let mut buf = match agent_stream.next().await {
                    Some(Ok(buf)) => buf,
                    Some(Err(e)) => {
                        return format!(
                            "the guest broke the agent channel ({e}; frames are limited to {} bytes), so the VM was stopped",
                            pyro_protocol::MAX_FRAME_BYTES
                        )
                    }
                    None => return "the agent channel closed".to_string(),
                };
                let Some(id) = pyro_protocol::frame_id(&buf) else { continue };
                let entry = shared.pending.lock().unwrap().remove(&id);
                let Some(p) = entry else { continue };
                if let Some(local) = p.local {
                    let response = decode::<ResponseFrame>(&buf).map(|f| f.response).unwrap_or_else(|e| {
                        Response::error("bad_response", format!("unreadable answer from the guest: {e}"))
                    });
                    let _ = local.send(response);
                } else if pyro_protocol::set_frame_id(&mut buf, p.client_id) {
                    let _ = p.client.send(buf.freeze());
                }
            }
        })
    };

    let accept = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_client(shared.clone(), stream));
            }
        })
    };

    tokio::spawn(watch_ports(shared.clone(), vm_dir.clone()));

    if let Some(owner) = spec.owner_pid {
        let tx = shared.shutdown_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !pid_alive(owner) {
                    let _ = tx.send(ShutdownCause::OwnerGone);
                    return;
                }
            }
        });
    }
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        let tx = shared.shutdown_tx.clone();
        tokio::spawn(async move {
            term.recv().await;
            let _ = tx.send(ShutdownCause::Signal);
        });
    }

    let mut reply_to: Option<(ClientTx, u64)> = None;
    let mut stop_reason = "the VM stopped".to_string();
    tokio::select! {
        st = vmm.wait() => {
            eprintln!("supervisor: VMM exited: {st:?}");
        }
        why = router => {
            let why = why.unwrap_or_else(|e| format!("the router failed: {e}"));
            eprintln!("supervisor: {why}; stopping the VM");
            stop_reason = why;
            // The channel closes when the guest powers off; give QEMU a moment to exit.
            if tokio::time::timeout(Duration::from_secs(3), vmm.wait()).await.is_err() {
                let _ = vmm.start_kill();
                let _ = vmm.wait().await;
            }
        }
        cause = shutdown_rx.recv() => {
            eprintln!("supervisor: shutdown: {cause:?}");
            let timeout = match cause {
                Some(ShutdownCause::Requested { timeout, reply }) => { reply_to = reply; timeout }
                // Nobody is waiting for this VM's data: be quick.
                Some(ShutdownCause::OwnerGone) | Some(ShutdownCause::Signal) | None => Duration::from_millis(0),
            };
            clean_shutdown(&shared, &mut vmm, timeout).await;
        }
    }
    accept.abort();
    if fail_all_pending(&shared, &stop_reason) > 0 {
        // Let the connection tasks deliver the reason before the process ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((client, id)) = reply_to {
        if let Ok(bytes) = encode(&ResponseFrame { id, response: Response::Ok }) {
            let _ = client.send(bytes);
            // Let the connection task flush the answer before the process ends.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    finish(&vm_dir, &spec);
    0
}

/// Sync, agent-driven poweroff, bounded wait; SIGKILL if the guest does not go down.
async fn clean_shutdown(shared: &Arc<Shared>, vmm: &mut tokio::process::Child, timeout: Duration) {
    if !timeout.is_zero() {
        let deadline = Instant::now() + timeout;
        let _ = shared.ask_guest(Request::Sync, timeout / 2).await;
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = shared.ask_guest(Request::Poweroff, left.min(Duration::from_secs(2))).await;
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, vmm.wait()).await.is_ok() {
            return;
        }
        eprintln!("supervisor: guest did not power off within {timeout:?}; killing the VMM");
    }
    let _ = vmm.start_kill();
    let _ = vmm.wait().await;
}

/// Answer every waiting request with `why`; returns how many there were.
fn fail_all_pending(shared: &Arc<Shared>, why: &str) -> usize {
    let drained: Vec<Pending> = shared.pending.lock().unwrap().drain().map(|(_, p)| p).collect();
    let count = drained.len();
    for p in drained {
        let resp = Response::error("vm_exited", why);
        if let Some(local) = p.local {
            let _ = local.send(resp);
        } else if let Ok(bytes) = encode(&ResponseFrame { id: p.client_id, response: resp }) {
            let _ = p.client.send(bytes);
        }
    }
    count
}

fn finish(vm_dir: &Path, spec: &LaunchSpec) {
    clean_stale_files(vm_dir);
    if spec.remove_dir_on_exit {
        let _ = std::fs::remove_dir_all(vm_dir);
    }
}

/// Start the VMM with its two guards: the egress filter (every connect/sendto QEMU makes
/// for the guest is checked by a supervisor thread, crate::netfilter) and the bounded
/// console log (a supervisor thread drains the serial console, crate::console). Returns the
/// child and the console drain thread, which ends when QEMU does.
fn spawn_vmm(
    spec: &LaunchSpec,
    vm_dir: &Path,
) -> std::result::Result<(tokio::process::Child, std::thread::JoinHandle<()>), String> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(vm_dir.join(VMM_LOG)).map_err(|e| format!("creating vmm.log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let console = crate::console::ConsolePipe::new().map_err(|e| format!("creating the console pipe: {e}"))?;
    // Every QEMU VM runs under the filter; only a VM without a NIC may run without one
    // (there is no slirp to steer), and never silently.
    let filter = match crate::netfilter::available() {
        Ok(()) => Some(crate::netfilter::Prepared::new().map_err(|e| format!("preparing the egress filter: {e}"))?),
        Err(why) if spec.network => return Err(format!("refusing to start a VM with network egress: {why}")),
        Err(why) => {
            eprintln!("supervisor: {why}; this VM has no network, starting it without the egress filter");
            None
        }
    };
    let filter_child = filter.as_ref().map(|f| f.child_handle());
    let console_fd = console.child_fd();
    let mut cmd = std::process::Command::new(&spec.vmm_bin);
    cmd.args(console.qemu_args())
        .args(&spec.vmm_args)
        .current_dir(vm_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: only async-signal-safe calls (prctl, fcntl, seccomp, sendmsg, close) on values
    // prepared before fork. The VMM must never outlive its supervisor: a SIGKILLed
    // supervisor takes its VM with it instead of leaving an unreachable guest.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            crate::console::keep_across_exec(console_fd)?;
            if let Some(handle) = filter_child {
                handle.install()?;
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", spec.vmm_bin.display()))?;
    let crate::console::ConsolePipe { read: console_read, write: console_write } = console;
    // Only QEMU holds the write end now: the drain sees EOF exactly when QEMU is gone.
    drop(console_write);
    if let Some(filter) = filter {
        // On error the child is dropped, and kill_on_drop ends it before its first connect
        // could wait forever for an answer.
        let listener = filter.receive_listener().map_err(|e| format!("receiving the egress filter listener: {e}"))?;
        let allow_private = spec.allow_private_network;
        std::thread::Builder::new()
            .name("egress-filter".into())
            .spawn(move || crate::netfilter::serve(listener, allow_private))
            .map_err(|e| format!("starting the egress filter thread: {e}"))?;
    }
    let console_path = vm_dir.join(CONSOLE_LOG);
    let drain = std::thread::Builder::new()
        .name("console-log".into())
        .spawn(move || {
            if let Err(e) = crate::console::drain(console_read, &console_path, crate::console::GENERATION_BYTES) {
                eprintln!("supervisor: console log: {e}");
            }
        })
        .map_err(|e| format!("starting the console log thread: {e}"))?;
    Ok((child, drain))
}

type AgentFramed = Framed<UnixStream, tokio_util::codec::LengthDelimitedCodec>;

/// Connect to QEMU's agent chardev, wait for the agent's Ready frame and do the handshake.
async fn connect_agent(vm_dir: &Path, timeout: Duration) -> std::result::Result<(AgentFramed, String, u64), String> {
    let deadline = Instant::now() + timeout;
    let path = vm_dir.join(AGENT_SOCKET);
    let stream = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("the VMM never opened {}: {e}", path.display()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let mut framed = Framed::new(stream, codec());
    let left = deadline.saturating_duration_since(Instant::now());
    let ready = tokio::time::timeout(left, async {
        while let Some(item) = framed.next().await {
            let buf = item.map_err(|e| format!("agent channel: {e}"))?;
            if let Ok(frame) = decode::<ResponseFrame>(&buf) {
                if let Response::Ready { agent_version, protocol_version, boot_ms } = frame.response {
                    return Ok((agent_version, protocol_version, boot_ms));
                }
            }
        }
        Err("the agent channel closed before the guest was ready".to_string())
    })
    .await
    .map_err(|_| format!("guest did not become ready in {} s", timeout.as_secs()))??;
    let (agent_version, protocol_version, boot_ms) = ready;
    if protocol_version != pyro_protocol::PROTOCOL_VERSION {
        return Err(format!(
            "guest agent speaks protocol {protocol_version}, this host speaks {}; rebuild the agent (scripts/build-agent.sh)",
            pyro_protocol::PROTOCOL_VERSION
        ));
    }
    let hello = RequestFrame {
        id: u64::MAX,
        request: Request::Hello {
            protocol_version: pyro_protocol::PROTOCOL_VERSION,
            host_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    };
    framed.send(encode(&hello).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
    let answer = tokio::time::timeout(left, framed.next())
        .await
        .map_err(|_| "guest agent did not answer the handshake".to_string())?;
    match answer {
        Some(Ok(buf)) => match decode::<ResponseFrame>(&buf).map(|f| f.response) {
            Ok(Response::Hello(_)) => Ok((framed, agent_version, boot_ms)),
            Ok(Response::Error(e)) => Err(format!("guest agent refused the handshake: {}", e.message)),
            other => Err(format!("unexpected handshake answer: {other:?}")),
        },
        _ => Err("agent channel closed during the handshake".into()),
    }
}

async fn write_agent(mut sink: futures::stream::SplitSink<AgentFramed, Bytes>, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(bytes) = rx.recv().await {
        if sink.send(bytes).await.is_err() {
            return;
        }
    }
}

async fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut source) = Framed::new(stream, codec()).split();
    let (client_tx, mut client_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(b) = client_rx.recv().await {
            if sink.send(b).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(mut buf)) = source.next().await {
        // Requests for the guest go on as they came, only their id swapped: the agent decodes
        // (bounds-checked) and answers them, so a multi-MiB payload is not decoded and
        // encoded again here. Only the supervisor's own requests are decoded.
        let for_guest = buf
            .get(pyro_protocol::FRAME_ID_BYTES..)
            .and_then(pyro_protocol::request_type)
            .is_some_and(|kind| kind != "supervisor");
        if let (true, Some(client_id)) = (for_guest, pyro_protocol::frame_id(&buf)) {
            let id = shared.alloc_id();
            shared
                .pending
                .lock()
                .unwrap()
                .insert(id, Pending { client: client_tx.clone(), client_conn: conn, client_id, local: None });
            pyro_protocol::set_frame_id(&mut buf, id);
            let _ = shared.to_agent.send(buf.freeze());
            continue;
        }
        let frame = match decode::<RequestFrame>(&buf) {
            Ok(f) => f,
            Err(e) => {
                let id = decode::<FrameId>(&buf).map(|f| f.id).unwrap_or(0);
                if let Ok(b) = encode(&ResponseFrame {
                    id,
                    response: Response::error("bad_request", format!("unreadable request: {e}")),
                }) {
                    let _ = client_tx.send(b);
                }
                continue;
            }
        };
        match frame.request {
            Request::Supervisor(SupervisorRequest::Status) => {
                let status = SupervisorStatus {
                    supervisor_pid: std::process::id(),
                    vmm_pid: shared.vmm_pid,
                    backend: shared.spec.backend.clone(),
                    accel: shared.spec.accel.clone(),
                    agent_version: shared.agent_version.clone(),
                    ready_ms: shared.ready_ms,
                    state: "running".into(),
                };
                if let Ok(b) = encode(&ResponseFrame { id: frame.id, response: Response::Supervisor(status) }) {
                    let _ = client_tx.send(b);
                }
            }
            Request::Supervisor(SupervisorRequest::Shutdown { timeout_ms }) => {
                let _ = shared.shutdown_tx.send(ShutdownCause::Requested {
                    timeout: Duration::from_millis(timeout_ms),
                    reply: Some((client_tx.clone(), frame.id)),
                });
            }
            other => {
                let id = shared.alloc_id();
                shared.pending.lock().unwrap().insert(
                    id,
                    Pending { client: client_tx.clone(), client_conn: conn, client_id: frame.id, local: None },
                );
                if let Ok(b) = encode(&RequestFrame { id, request: other }) {
                    let _ = shared.to_agent.send(b);
                }
            }
        }
    }
    // The client went away: whatever it was still waiting for is cancelled in the guest,
    // so an interrupted CLI call never leaves a command running.
    let orphaned: Vec<u64> = {
        let mut pending = shared.pending.lock().unwrap();
        let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.client_conn == conn).map(|(id, _)| *id).collect();
        for id in &ids {
            pending.remove(id);
        }
        ids
    };
    for request_id in orphaned {
        let id = shared.alloc_id();
        if let Ok(b) = encode(&RequestFrame { id, request: Request::Cancel { request_id } }) {
            let _ = shared.to_agent.send(b);
        }
    }
    drop(client_tx);
    let _ = writer.await;
}
