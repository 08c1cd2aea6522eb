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
use std::sync::atomic::{AtomicU64, Ordering};
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
/// (the engine also unpublishes them on `service stop`; a rule already gone is harmless).
async fn watch_ports(shared: Arc<Shared>) {
    use pyro_protocol::session::{ServiceRequest, ServiceResponse, ServiceStatus};
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if shared.ports.services().is_empty() {
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
            finish(&vm, &spec);
            return 1;
        }
    };
    let vmm_pid = vmm.id().unwrap_or(0);
    let _ = pyro_sys::write_atomic(
        &vm.pid_record(),
        serde_json::to_vec(&PidRecord::for_current(vmm_pid)).unwrap().as_slice(),
    );

    let boot_timeout = Duration::from_millis(spec.boot_timeout_ms);
    let connected = tokio::select! {
        r = connect_agent(&vm, boot_timeout) => r,
        st = vmm.wait() => Err(format!("the VMM exited during boot ({})", st.map(|s| s.to_string()).unwrap_or_default())),
    };
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
            print_ready(&ReadyLine::failed(msg));
            finish(&vm, &spec);
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
            finish(&vm, &spec);
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
    finish(&vm, &spec);
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

fn finish(vm: &VmDir, spec: &LaunchSpec) {
    vm.clean_stale_files();
    if spec.remove_dir_on_exit {
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
                    backend: shared.spec.backend.as_str().to_string(),
                    accel: shared.spec.accel.as_str().to_string(),
                    agent_version: shared.agent_version.clone(),
                    ready_ms: shared.ready_ms,
                    state: "running".into(),
                };
                if let Ok(b) = encode(&ResponseFrame { id: frame.id, response: Response::Supervisor(status) }) {
                    let _ = client_tx.send(b);
                }
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
