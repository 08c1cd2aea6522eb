//! The supervisor process (`pyro-supervisor --vm-dir DIR`): spawns QEMU under the egress
//! filter, drains its console, owns the agent channel and the port registry, and routes
//! clients' requests to the guest by frame id.

use super::{LaunchSpec, PidRecord, ReadyLine};
use crate::ports::Ports;
use crate::util::{pid_alive, tail_lines};
use crate::VmDir;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pyro_protocol::{
    codec, decode, encode, FrameId, Request, RequestFrame, Response, ResponseFrame, SupervisorRequest, SupervisorStatus,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

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
    ports: Ports,
    to_agent: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    next_conn: AtomicU64,
    vmm_pid: u32,
    agent_version: String,
    ready_ms: u64,
    shutdown_tx: mpsc::UnboundedSender<ShutdownCause>,
    /// A pause is under way: new guest requests are refused.
    pausing: AtomicBool,
    /// When the last client request arrived (idle pause).
    last_request: Mutex<Instant>,
    /// The idle pause in force: after how long without a request, and the lock a call in
    /// progress holds. Set at launch, changed by `SetIdlePause`.
    idle_pause: Mutex<Option<(Duration, PathBuf)>>,
}

#[derive(Debug)]
enum ShutdownCause {
    Requested {
        timeout: Duration,
        reply: Option<(ClientTx, u64)>,
    },
    /// Save the VM's state and end it; on failure it keeps running. `lock` is held (idle
    /// pause) until the pause is over.
    Pause {
        timeout: Duration,
        reply: Option<(ClientTx, u64)>,
        lock: Option<pyro_sys::FileLock>,
    },
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
/// (the engine also unpublishes them on `service stop`; a rule already gone is harmless).
async fn watch_ports(shared: Arc<Shared>) {
    use pyro_protocol::session::{ServiceRequest, ServiceResponse, ServiceStatus};
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if shared.ports.services().is_empty() || shared.pausing.load(Ordering::SeqCst) {
            continue;
        }
        let answer = shared.ask_guest(Request::Service(ServiceRequest::List), Duration::from_secs(5)).await;
        let Some(Response::Service(ServiceResponse::List { services })) = answer else { continue };
        let running: std::collections::HashSet<&str> =
            services.iter().filter(|s| s.state == ServiceStatus::Running).map(|s| s.name.as_str()).collect();
        if let Err(e) = shared.ports.retain_services(&running).await {
            eprintln!("supervisor: dropping the published ports of ended services: {e}");
        }
    }
}

/// Entry point of the `pyro-supervisor` binary: run the VM whose `launch.json` is in
/// `vm_dir` until it stops; returns the process exit code.
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
    rt.block_on(run(VmDir::new(vm_dir)))
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
            restored: false,
            error_kind: None,
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

async fn run(vm: VmDir) -> i32 {
    let started = Instant::now();
    // One supervisor per directory, ever: a predecessor still finishing would otherwise
    // remove this one's pid record and sockets in its cleanup. `spawn` waits for the lock to
    // be free; a supervisor that still finds it held leaves every file alone.
    let _lifetime_lock = match pyro_sys::try_lock(&vm.supervisor_lock(), pyro_sys::LockMode::Exclusive) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            print_ready(&ReadyLine::failed("another supervisor of this VM is still running".into()));
            return 1;
        }
        Err(e) => {
            print_ready(&ReadyLine::failed(format!("cannot lock {}: {e}", vm.supervisor_lock().display())));
            return 1;
        }
    };
    let spec: LaunchSpec = match std::fs::read_to_string(vm.launch_spec())
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            print_ready(&ReadyLine::failed(format!("cannot read {}: {e}", vm.launch_spec().display())));
            return 1;
        }
    };
    vm.clean_stale_files();
    // A provisional record (no VMM yet) before QEMU exists: whoever spawned this supervisor
    // may be killed from here on, and the orphan sweep finds a VM only through this record.
    // Without it, a start killed just after QEMU appeared left a VM no sweep could see.
    let _ =
        pyro_sys::write_atomic(&vm.pid_record(), serde_json::to_vec(&PidRecord::for_current(0)).unwrap().as_slice());

    let (mut vmm, console) = match spawn_vmm(&spec, &vm) {
        Ok(c) => c,
        Err(e) => {
            print_ready(&ReadyLine::failed(e));
            finish(&vm, &spec, false);
            return 1;
        }
    };
    let vmm_pid = vmm.id().unwrap_or(0);
    let _ = pyro_sys::write_atomic(
        &vm.pid_record(),
        serde_json::to_vec(&PidRecord::for_current(vmm_pid)).unwrap().as_slice(),
    );

    let boot_timeout = Duration::from_millis(spec.boot_timeout_ms);
    // Set while QEMU reads a memory state: a VMM that dies then could not load it.
    let loading = std::cell::Cell::new(false);
    let connected = tokio::select! {
        r = start_guest(&vm, &spec, boot_timeout, &loading) => r,
        st = vmm.wait() => Err(format!("the VMM exited during {} ({})",
            if spec.restore_from.is_some() { "the restore" } else { "boot" },
            st.map(|s| s.to_string()).unwrap_or_default())),
    };
    let corrupt_state = loading.get();
    // QEMU made these with the supervisor's umask (0077) already; say it explicitly too.
    for socket in [vm.agent_socket(), vm.qmp_socket()] {
        let _ = pyro_sys::make_private(&socket);
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
            let console = crate::console::tail(&vm.console_log(), 15);
            let vmm_log = tail_lines(&vm.vmm_log(), 5);
            let mut msg = e;
            if !vmm_log.is_empty() {
                msg.push_str(&format!("; VMM said: {vmm_log}"));
            }
            if !console.is_empty() {
                msg.push_str(&format!("; last console lines:\n{console}"));
            }
            let mut line = ReadyLine::failed(msg);
            if let (true, Some(state)) = (corrupt_state, &spec.restore_from) {
                line.error = Some(format!(
                    "QEMU could not load the memory state {} (truncated or damaged?): {}",
                    state.display(),
                    line.error.unwrap_or_default()
                ));
                line.error_kind = Some("corrupt_state".into());
            }
            print_ready(&line);
            finish(&vm, &spec, false);
            return 1;
        }
    };

    let (agent_sink, mut agent_stream) = framed.split();
    let (to_agent, agent_rx) = mpsc::unbounded_channel::<Bytes>();
    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel();
    let ready_ms = started.elapsed().as_millis() as u64;
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        ports: Ports::new(vm.clone(), spec.publish_ports),
        to_agent,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        vmm_pid,
        agent_version: agent_version.clone(),
        ready_ms,
        shutdown_tx,
        pausing: AtomicBool::new(false),
        last_request: Mutex::new(Instant::now()),
        idle_pause: Mutex::new(match (spec.idle_pause_ms, spec.lock_path.clone()) {
            (Some(ms), Some(lock)) if ms > 0 => Some((Duration::from_millis(ms), lock)),
            _ => None,
        }),
    });

    tokio::spawn(write_agent(agent_sink, agent_rx));

    let listener = match UnixListener::bind(vm.supervisor_socket()) {
        Ok(l) => {
            let _ = pyro_sys::make_private(&vm.supervisor_socket());
            l
        }
        Err(e) => {
            let _ = vmm.start_kill();
            let _ = vmm.wait().await;
            print_ready(&ReadyLine::failed(format!("cannot listen on {}: {e}", vm.supervisor_socket().display())));
            finish(&vm, &spec, false);
            return 1;
        }
    };
    if !spec.restore_ports.is_empty() {
        // QEMU's hostfwd rules are not in the migration stream: publish them again (each
        // rule is removed first, so this holds whether or not one survived).
        if let Err(e) = shared.ports.republish(&spec.restore_ports).await {
            eprintln!("supervisor: publishing the restored VM's ports again: {e}");
        }
    }
    print_ready(&ReadyLine {
        ok: true,
        error: None,
        supervisor_pid: std::process::id(),
        vmm_pid,
        ready_ms,
        agent_version,
        guest_boot_ms,
        restored: spec.restore_from.is_some(),
        error_kind: None,
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

    tokio::spawn(watch_ports(shared.clone()));

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

    tokio::spawn(watch_idle(shared.clone()));

    let mut reply_to: Option<(ClientTx, u64)> = None;
    // The lock an idle pause took: held until this process exits, so no call (which holds
    // the lock while it works) can start a new VM in this directory while this supervisor
    // is still cleaning it up after the pause.
    let mut _held_idle_lock: Option<pyro_sys::FileLock> = None;
    let mut paused: Option<crate::Paused> = None;
    let mut stop_reason = "the VM stopped".to_string();
    let mut router = router;
    loop {
        tokio::select! {
            st = vmm.wait() => {
                eprintln!("supervisor: VMM exited: {st:?}");
            }
            why = &mut router => {
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
                if let Some(ShutdownCause::Pause { timeout, reply, lock }) = cause {
                    let idle = lock.is_some();
                    let result = pause_vm(&shared, &vm, &mut vmm, timeout).await;
                    match result {
                        Ok(p) => {
                            _held_idle_lock = lock;
                            eprintln!(
                                "supervisor: {}paused: {} bytes of state in {} ms",
                                if idle { "idle; " } else { "" },
                                p.state_bytes,
                                p.pause_ms
                            );
                            paused = Some(p);
                            reply_to = reply;
                            stop_reason = "the VM was paused".into();
                        }
                        Err(e) => {
                            eprintln!("supervisor: pause failed, the VM keeps running: {}", e.message);
                            if let Some((client, id)) = reply {
                                if let Ok(b) = encode(&ResponseFrame { id, response: Response::error(e.kind, e.message) }) {
                                    let _ = client.send(b);
                                }
                            }
                            continue;
                        }
                    }
                } else {
                    eprintln!("supervisor: shutdown: {cause:?}");
                    let timeout = match cause {
                        Some(ShutdownCause::Requested { timeout, reply }) => { reply_to = reply; timeout }
                        // Nobody is waiting for this VM's data: be quick.
                        _ => Duration::from_millis(0),
                    };
                    clean_shutdown(&shared, &mut vmm, timeout).await;
                }
            }
        }
        break;
    }
    accept.abort();
    if fail_all_pending(&shared, &stop_reason) > 0 {
        // Let the connection tasks deliver the reason before the process ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((client, id)) = reply_to {
        let response = match paused {
            Some(p) => Response::Paused { state_bytes: p.state_bytes, pause_ms: p.pause_ms },
            None => Response::Ok,
        };
        if let Ok(bytes) = encode(&ResponseFrame { id, response }) {
            let _ = client.send(bytes);
            // Let the connection task flush the answer before the process ends.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    finish(&vm, &spec, paused.is_some());
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

/// `paused`: the directory holds a saved state, which outlives this supervisor whatever
/// `remove_dir_on_exit` says.
fn finish(vm: &VmDir, spec: &LaunchSpec, paused: bool) {
    vm.clean_stale_files();
    if spec.remove_dir_on_exit && !paused {
        let _ = std::fs::remove_dir_all(vm.path());
    }
}

/// Start the VMM with its two guards: the egress filter (every connect/sendto QEMU makes
/// for the guest is checked by a supervisor thread, crate::netfilter) and the bounded
/// console log (a supervisor thread drains the serial console, crate::console). Returns the
/// child and the console drain thread, which ends when QEMU does.
fn spawn_vmm(
    spec: &LaunchSpec,
    vm: &VmDir,
) -> std::result::Result<(tokio::process::Child, std::thread::JoinHandle<()>), String> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(vm.vmm_log()).map_err(|e| format!("creating vmm.log: {e}"))?;
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
        .current_dir(vm.path())
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
    let console_path = vm.console_log();
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
async fn connect_agent(vm: &VmDir, timeout: Duration) -> std::result::Result<(AgentFramed, String, u64), String> {
    let deadline = Instant::now() + timeout;
    let path = vm.agent_socket();
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
        let kind = buf.get(pyro_protocol::FRAME_ID_BYTES..).and_then(pyro_protocol::request_type);
        if kind != Some("supervisor") || shared.pending.lock().unwrap().values().any(|p| p.local.is_none()) {
            *shared.last_request.lock().unwrap() = Instant::now();
        }
        // Requests for the guest go on as they came, only their id swapped: the agent decodes
        // (bounds-checked) and answers them, so a multi-MiB payload is not decoded and
        // encoded again here. Only the supervisor's own requests are decoded.
        let for_guest = buf
            .get(pyro_protocol::FRAME_ID_BYTES..)
            .and_then(pyro_protocol::request_type)
            .is_some_and(|kind| kind != "supervisor");
        if let (true, Some(client_id)) = (for_guest, pyro_protocol::frame_id(&buf)) {
            if shared.pausing.load(Ordering::SeqCst) {
                refuse_while_pausing(&client_tx, client_id);
                continue;
            }
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
                    backend: shared.spec.backend.as_str().to_string(),
                    accel: shared.spec.accel.as_str().to_string(),
                    agent_version: shared.agent_version.clone(),
                    ready_ms: shared.ready_ms,
                    state: if shared.pausing.load(Ordering::SeqCst) { "pausing" } else { "running" }.into(),
                };
                if let Ok(b) = encode(&ResponseFrame { id: frame.id, response: Response::Supervisor(status) }) {
                    let _ = client_tx.send(b);
                }
            }
            Request::Supervisor(SupervisorRequest::Pause { .. }) if shared.pausing.load(Ordering::SeqCst) => {
                refuse_while_pausing(&client_tx, frame.id);
            }
            Request::Supervisor(SupervisorRequest::Pause { .. }) if shared.spec.fingerprint.is_empty() => {
                let response = Response::error(
                    "invalid_state",
                    "this VM was started by an older pyro that cannot pause it; stop and start it first",
                );
                if let Ok(b) = encode(&ResponseFrame { id: frame.id, response }) {
                    let _ = client_tx.send(b);
                }
            }
            Request::Supervisor(SupervisorRequest::Pause { timeout_ms }) => {
                // Set here, not when the main loop gets to it: from this request on, nothing
                // new reaches the guest.
                shared.pausing.store(true, Ordering::SeqCst);
                let _ = shared.shutdown_tx.send(ShutdownCause::Pause {
                    timeout: Duration::from_millis(timeout_ms),
                    reply: Some((client_tx.clone(), frame.id)),
                    lock: None,
                });
            }
            Request::Supervisor(SupervisorRequest::SetIdlePause { after_ms, lock_path }) => {
                let setting = (after_ms > 0).then(|| (Duration::from_millis(after_ms), PathBuf::from(lock_path)));
                eprintln!("supervisor: idle pause set to {after_ms} ms");
                *shared.idle_pause.lock().unwrap() = setting;
                // The new idle time counts from now, not from the last request.
                *shared.last_request.lock().unwrap() = Instant::now();
                reply(&client_tx, frame.id, Ok(()));
            }
            Request::Supervisor(SupervisorRequest::Publish { .. } | SupervisorRequest::Unpublish { .. })
                if shared.pausing.load(Ordering::SeqCst) =>
            {
                refuse_while_pausing(&client_tx, frame.id);
            }
            Request::Supervisor(SupervisorRequest::Publish { service, ports }) => {
                let answer = shared.ports.publish(&service, &ports).await;
                reply(&client_tx, frame.id, answer);
            }
            Request::Supervisor(SupervisorRequest::Unpublish { ports }) => {
                let answer = shared.ports.unpublish(&ports).await;
                reply(&client_tx, frame.id, answer);
            }
            Request::Supervisor(SupervisorRequest::Shutdown { timeout_ms }) => {
                let _ = shared.shutdown_tx.send(ShutdownCause::Requested {
                    timeout: Duration::from_millis(timeout_ms),
                    reply: Some((client_tx.clone(), frame.id)),
                });
            }
            _ if shared.pausing.load(Ordering::SeqCst) => refuse_while_pausing(&client_tx, frame.id),
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

/// Answer a supervisor request handled here: `Ok`, or an error whose kind says whose
/// fault it was.
fn reply(client: &ClientTx, id: u64, answer: crate::Result<()>) {
    use pyro_protocol::ErrorKind;
    let response = match answer {
        Ok(()) => Response::Ok,
        Err(e) => {
            let kind = match &e {
                crate::Error::InvalidInput(_) => ErrorKind::BadRequest,
                crate::Error::NotRunning(_) => ErrorKind::InvalidState,
                crate::Error::Guest { kind, .. } => kind.clone(),
                _ => ErrorKind::Io,
            };
            Response::error(kind, e.to_string())
        }
    };
    if let Ok(b) = encode(&ResponseFrame { id, response }) {
        let _ = client.send(b);
    }
}

/// The answer to a guest request that arrives while the VM is being paused.
fn refuse_while_pausing(client: &ClientTx, id: u64) {
    let response = Response::error(
        "invalid_state",
        "the VM is pausing: its memory is being saved, so it takes no new requests (resume it and retry)",
    );
    if let Ok(b) = encode(&ResponseFrame { id, response }) {
        let _ = client.send(b);
    }
}

/// Boot the guest (wait for the agent's Ready, handshake) or, for a restore, load the memory
/// state and tell the agent it is a new machine. Either way a hostname in the launch spec is
/// applied. Returns the agent channel, the agent's version and the guest's boot time.
async fn start_guest(
    vm: &VmDir,
    spec: &LaunchSpec,
    timeout: Duration,
    loading: &std::cell::Cell<bool>,
) -> std::result::Result<(AgentFramed, String, u64), String> {
    let deadline = Instant::now() + timeout;
    match &spec.restore_from {
        None => {
            let (mut framed, version, boot_ms) = connect_agent(vm, timeout).await?;
            if spec.hostname.is_some() {
                renew_identity(&mut framed, spec.hostname.clone(), deadline).await?;
            }
            Ok((framed, version, boot_ms))
        }
        Some(state) => {
            load_state(vm, state, spec.consume_state, deadline, loading).await?;
            let path = vm.agent_socket();
            let stream =
                UnixStream::connect(&path).await.map_err(|e| format!("cannot reach {}: {e}", path.display()))?;
            // The agent sent its Ready frame to the host that booted it, long ago: no Ready
            // comes now. The first exchange is the new-machine request.
            let mut framed = Framed::new(stream, codec());
            let info = renew_identity(&mut framed, spec.hostname.clone(), deadline).await?;
            Ok((framed, info.agent_version, 0))
        }
    }
}

/// Tell the agent it is a new machine: host wall clock, fresh entropy (the kernel RNG is
/// reseeded), hostname. Frames with other ids (answers a previous host never read) are
/// skipped.
async fn renew_identity(
    framed: &mut AgentFramed,
    hostname: Option<String>,
    deadline: Instant,
) -> std::result::Result<pyro_protocol::HelloInfo, String> {
    const RENEW_ID: u64 = u64::MAX - 1;
    let entropy = crate::snapshot::host_entropy(64).map_err(|e| format!("reading host entropy: {e}"))?;
    let host_unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let frame = RequestFrame { id: RENEW_ID, request: Request::Restored { host_unix_ms, entropy, hostname } };
    framed.send(encode(&frame).map_err(|e| e.to_string())?).await.map_err(|e| format!("agent channel: {e}"))?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(5));
    tokio::time::timeout(left, async {
        while let Some(item) = framed.next().await {
            let buf = item.map_err(|e| format!("agent channel: {e}"))?;
            if pyro_protocol::frame_id(&buf) != Some(RENEW_ID) {
                continue;
            }
            return match decode::<ResponseFrame>(&buf).map(|f| f.response) {
                Ok(Response::Hello(info)) if info.protocol_version == pyro_protocol::PROTOCOL_VERSION => Ok(info),
                Ok(Response::Hello(info)) => Err(format!(
                    "guest agent speaks protocol {}, this host speaks {}",
                    info.protocol_version,
                    pyro_protocol::PROTOCOL_VERSION
                )),
                Ok(Response::Error(e)) => Err(format!("the guest agent refused the new identity: {}", e.message)),
                other => Err(format!("unexpected answer to the new identity: {other:?}")),
            };
        }
        Err("the agent channel closed before the guest took its new identity".to_string())
    })
    .await
    .map_err(|_| "the guest agent did not answer after the restore".to_string())?
}

/// Load `state` into a QEMU started with `-S -incoming defer`, retire the state when it is
/// being resumed in place (`consume`: from the first guest instruction on, the disk moves
/// past what the state's page cache believes), then let the guest run.
async fn load_state(
    vm: &VmDir,
    state: &std::path::Path,
    consume: bool,
    deadline: Instant,
    loading: &std::cell::Cell<bool>,
) -> std::result::Result<(), String> {
    use crate::qmp::Session;
    use std::os::fd::AsFd;
    let file =
        std::fs::File::open(state).map_err(|e| format!("cannot open the memory state {}: {e}", state.display()))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let mut qmp = Session::connect(&vm.qmp_socket(), left).await.map_err(|e| e.to_string())?;
    qmp.send_fd("pyro-state", file.as_fd()).await.map_err(|e| e.to_string())?;
    loading.set(true);
    qmp.execute("migrate-incoming", serde_json::json!({ "uri": "fd:pyro-state" })).await.map_err(|e| e.to_string())?;
    drop(file);
    loop {
        if Instant::now() >= deadline {
            return Err(format!("loading the memory state {} did not finish in time", state.display()));
        }
        let (status, why) = qmp.migration_status().await.map_err(|e| e.to_string())?;
        match status.as_str() {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(format!("loading the memory state {} failed: {}", state.display(), why.unwrap_or(status)))
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    loading.set(false);
    if consume {
        crate::MemoryState::discard(vm).map_err(|e| format!("retiring the resumed memory state: {e}"))?;
    }
    qmp.execute("cont", serde_json::Value::Null).await.map_err(|e| e.to_string())?;
    loop {
        match qmp.run_state().await.map_err(|e| e.to_string())?.as_str() {
            "running" => return Ok(()),
            _ if Instant::now() >= deadline => return Err("the restored guest did not start running".into()),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// A pause that did not happen: its error kind on the wire and why.
struct PauseError {
    kind: &'static str,
    message: String,
}

impl PauseError {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        PauseError { kind, message: message.into() }
    }
}

/// How long the guest's `sync` before a pause may take.
const PAUSE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writing the state may take once the guest is stopped.
const PAUSE_SAVE_TIMEOUT: Duration = Duration::from_secs(540);
/// Migration bandwidth during a pause: unlimited in practice. QEMU 7.2 defaults to 32 MiB/s,
/// which would make saving a 1 GiB guest take half a minute.
const PAUSE_BANDWIDTH: u64 = 1 << 40;

/// Quiesce, sync, save the state, commit its record and end QEMU. On any failure before the
/// record is written, the guest runs again and no state is left.
async fn pause_vm(
    shared: &Arc<Shared>,
    vm: &VmDir,
    vmm: &mut tokio::process::Child,
    timeout: Duration,
) -> std::result::Result<crate::Paused, PauseError> {
    let started = Instant::now();
    shared.pausing.store(true, Ordering::SeqCst);
    let result = pause_steps(shared, vm, vmm, timeout, started).await;
    if result.is_err() {
        shared.pausing.store(false, Ordering::SeqCst);
        *shared.last_request.lock().unwrap() = Instant::now();
    }
    result
}

async fn pause_steps(
    shared: &Arc<Shared>,
    vm: &VmDir,
    vmm: &mut tokio::process::Child,
    timeout: Duration,
    started: Instant,
) -> std::result::Result<crate::Paused, PauseError> {
    let spec = &shared.spec;
    // 1. Requests in flight finish first (bounded); new ones are refused meanwhile.
    let deadline = started + timeout;
    loop {
        let in_flight = shared.pending.lock().unwrap().len();
        if in_flight == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(PauseError::new(
                "invalid_state",
                format!(
                    "{in_flight} request(s) still running in the guest after {} ms; the pause was abandoned and the VM keeps running",
                    timeout.as_millis()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 2. Room for the state: at most the guest's memory plus framing.
    match crate::snapshot::check_pause_space(vm.path(), spec.mem_mib) {
        Ok(()) => {}
        Err(crate::snapshot::SpaceCheck::Short(why)) => return Err(PauseError::new("host_requirement", why)),
        Err(crate::snapshot::SpaceCheck::Unknown(why)) => return Err(PauseError::new("io", why)),
    }
    // 3. The guest's dirty page cache goes to the disk. Best effort: the state carries the
    //    page cache anyway, so a guest that does not answer (hung, hostile) cannot keep
    //    itself from being paused; it only leaves the disk alone less current.
    match shared.ask_guest(Request::Sync, PAUSE_SYNC_TIMEOUT).await {
        Some(Response::Ok) => {}
        other => eprintln!("supervisor: the guest did not sync before the pause ({other:?}); pausing anyway"),
    }
    // 4. Stop, save, commit. No other monitor session meanwhile (ports take the same lock).
    let _monitor = shared.ports.lock_monitor().await;
    let mut qmp = crate::qmp::Session::connect(&vm.qmp_socket(), Duration::from_secs(10))
        .await
        .map_err(|e| PauseError::new("io", e.to_string()))?;
    qmp.execute("stop", serde_json::Value::Null).await.map_err(|e| PauseError::new("io", e.to_string()))?;
    let saved = save_state(&mut qmp, vm).await;
    let committed = match saved {
        Ok(state_bytes) => commit_state(shared, vm, state_bytes, started).await,
        Err(e) => Err(e),
    };
    let paused = match committed {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(vm.memory_state_partial());
            if vm.memory_meta().exists() {
                // Never leave a record naming a state that is going away.
                let _ = std::fs::remove_file(vm.memory_meta());
            }
            let _ = std::fs::remove_file(vm.memory_state());
            if let Err(cont) = qmp.execute("cont", serde_json::Value::Null).await {
                eprintln!("supervisor: resuming the guest after a failed pause: {cont}");
            }
            return Err(e);
        }
    };
    // 5. The state is durable: end QEMU (its disk was flushed when the migration completed).
    let _ = qmp.execute("quit", serde_json::Value::Null).await;
    if tokio::time::timeout(Duration::from_secs(5), vmm.wait()).await.is_err() {
        let _ = vmm.start_kill();
        let _ = vmm.wait().await;
    }
    Ok(paused)
}

/// Migrate the stopped guest into `memory.state.partial` (a file QEMU receives as a
/// descriptor) and make it durable. Returns its size.
async fn save_state(qmp: &mut crate::qmp::Session, vm: &VmDir) -> std::result::Result<u64, PauseError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |what: &str, e: std::io::Error| PauseError::new("io", format!("{what}: {e}"));
    let partial = vm.memory_state_partial();
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| io(&format!("creating {}", partial.display()), e))?;
    let channel = |e: crate::Error| PauseError::new("io", format!("saving the memory state: {e}"));
    qmp.execute("migrate-set-parameters", serde_json::json!({ "max-bandwidth": PAUSE_BANDWIDTH }))
        .await
        .map_err(channel)?;
    qmp.send_fd("pyro-state", file.as_fd()).await.map_err(channel)?;
    qmp.execute("migrate", serde_json::json!({ "uri": "fd:pyro-state" })).await.map_err(channel)?;
    let deadline = Instant::now() + PAUSE_SAVE_TIMEOUT;
    loop {
        let (status, why) = qmp.migration_status().await.map_err(channel)?;
        match status.as_str() {
            "completed" => break,
            "failed" | "cancelled" => {
                return Err(PauseError::new(
                    "io",
                    format!("QEMU could not save the memory state: {}", why.unwrap_or(status)),
                ))
            }
            _ if Instant::now() >= deadline => {
                let _ = qmp.execute("migrate_cancel", serde_json::Value::Null).await;
                return Err(PauseError::new(
                    "io",
                    format!("saving the memory state took over {} s; abandoned", PAUSE_SAVE_TIMEOUT.as_secs()),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
    file.sync_all().map_err(|e| io("syncing the memory state", e))?;
    let size = file.metadata().map_err(|e| io("reading the memory state's size", e))?.len();
    std::fs::rename(&partial, vm.memory_state()).map_err(|e| io("placing the memory state", e))?;
    crate::snapshot::fsync_dir(vm.path()).map_err(|e| PauseError::new("io", e.to_string()))?;
    Ok(size)
}

/// Write `memory.json`, the record that makes the saved state valid.
async fn commit_state(
    shared: &Arc<Shared>,
    vm: &VmDir,
    state_bytes: u64,
    started: Instant,
) -> std::result::Result<crate::Paused, PauseError> {
    let spec = &shared.spec;
    let pause_ms = started.elapsed().as_millis() as u64;
    let meta = crate::MemoryMeta {
        format: crate::MEMORY_FORMAT,
        fingerprint: spec.fingerprint.clone(),
        state_bytes,
        mem_mib: spec.mem_mib,
        vcpu_count: spec.vcpu_count,
        network: spec.network,
        disk_format: spec.disk_format,
        saved_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        pause_ms,
        disk: spec.disk.clone(),
        published: shared.ports.recorded_ports(),
    };
    let bytes = serde_json::to_vec_pretty(&meta).expect("memory meta serializes");
    pyro_sys::write_atomic(&vm.memory_meta(), &bytes)
        .map_err(|e| PauseError::new("io", format!("writing {}: {e}", vm.memory_meta().display())))?;
    crate::snapshot::fsync_dir(vm.path()).map_err(|e| PauseError::new("io", e.to_string()))?;
    Ok(crate::Paused { state_bytes, pause_ms })
}

/// Does the guest run a background command? A guest that does not answer runs none.
async fn background_command_running(shared: &Shared) -> bool {
    use pyro_protocol::command::{CommandRequest, CommandResponse, CommandStatus};
    let answer = shared.ask_guest(Request::Command(CommandRequest::List), Duration::from_secs(5)).await;
    matches!(answer, Some(Response::Command(CommandResponse::List { commands }))
        if commands.iter().any(|c| c.state == CommandStatus::Running))
}

/// Idle pause: once no client request has arrived for the idle time in force (and none is
/// in flight), take the VM's lock without waiting (held = a call is in progress: try again
/// later) and pause. With no idle pause in force it only looks again each second (a
/// `SetIdlePause` may turn it on).
async fn watch_idle(shared: Arc<Shared>) {
    loop {
        let current = shared.idle_pause.lock().unwrap().clone();
        let Some((after, lock_path)) = current else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tokio::time::sleep((after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))).await;
        if shared.pausing.load(Ordering::SeqCst) {
            continue;
        }
        if shared.pending.lock().unwrap().values().any(|p| p.local.is_none()) {
            *shared.last_request.lock().unwrap() = Instant::now();
            continue;
        }
        let idle = shared.last_request.lock().unwrap().elapsed();
        if idle < after {
            continue;
        }
        // A running background command is work in progress, not idleness: freezing it
        // would stop a build or test run nobody is waiting on a call for.
        if background_command_running(&shared).await {
            *shared.last_request.lock().unwrap() = Instant::now();
            continue;
        }
        match pyro_sys::try_lock(&lock_path, pyro_sys::LockMode::Exclusive) {
            Ok(Some(lock)) => {
                eprintln!("supervisor: no request for {} ms; pausing the idle VM", idle.as_millis());
                // Counted as activity: a pause that fails is tried again only after `after`.
                *shared.last_request.lock().unwrap() = Instant::now();
                shared.pausing.store(true, Ordering::SeqCst);
                let cause = ShutdownCause::Pause { timeout: Duration::from_secs(5), reply: None, lock: Some(lock) };
                if shared.shutdown_tx.send(cause).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("supervisor: idle pause: cannot take {}: {e}", lock_path.display()),
        }
    }
}
