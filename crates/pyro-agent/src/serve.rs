//! The agent service: owns the host channel and answers every request in its own task.
//!
//! One writer (a thread for the virtio-serial port, a task for a Unix socket) owns the
//! outgoing side; request tasks hand it whole frame bodies through a channel, so responses
//! never interleave and may leave in any order.

use crate::exec::{self, ExecError, Running};
use crate::sys;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use pyro_protocol::{
    codec, decode, BenchRequest, BenchResponse, Frame, FrameId, HelloInfo, Request, RequestFrame, Response,
    ResponseFrame, PROTOCOL_VERSION, READY_FRAME_ID,
};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::{Decoder, FramedRead};

/// Work for the writer, done strictly in order.
pub(crate) enum Outgoing {
    /// One whole frame as it goes on the wire, in two parts written one after the other (see
    /// [`ResponseFrame::into_wire_parts`]): the head, and a bulk payload (often empty) that
    /// goes to the transport straight from the buffer it was read or received into.
    Frame(Bytes, Vec<u8>),
    /// The same wire frame written `count` times (the raw stream of a `Blast`); the writer
    /// reports how long the writes took.
    Repeat { frame: Bytes, count: u32, done: oneshot::Sender<Duration> },
    /// Bytes written as they are, outside the framing (the hostile test agent's crafted
    /// frames: oversized, truncated, trickled).
    #[cfg(feature = "hostile")]
    Raw(Bytes),
    /// Acknowledged once every frame queued before it has been handed to the transport.
    Flush(oneshot::Sender<()>),
}

pub(crate) type OutTx = mpsc::UnboundedSender<Outgoing>;

/// One frame off the transport and how long taking it off took, from its length prefix to
/// its last byte (zero where the transport does not measure it).
pub(crate) struct Received {
    frame: BytesMut,
    receive: Duration,
}

/// What `Poweroff` does once its answer is out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PowerAction {
    /// In a guest: stop every process and power the machine off.
    Machine,
    /// Socket mode runs on the host: only stop serving; never signal the host's processes.
    StopServing,
}

/// Bound on waiting for the transport to take the `Poweroff` answer, so a vanished host can
/// not keep the guest up.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// How long the port may take to show up: modules load asynchronously and there is no udev.
const PORT_WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Find the virtio-serial port named `org.pyro.agent` (no udev makes
/// `/dev/virtio-ports/<name>`, so go through sysfs).
fn find_port() -> Option<PathBuf> {
    let rd = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in rd.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == pyro_protocol::AGENT_PORT_NAME {
            let dev = PathBuf::from("/dev").join(e.file_name());
            // devtmpfs creates the node a moment after sysfs shows the port.
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}

/// Serve the host over the virtio-serial port. Returns the process exit code (only when the
/// channel broke; PID 1 then starts a fresh agent).
pub fn serve_device() -> i32 {
    let deadline = Instant::now() + PORT_WAIT;
    let port = loop {
        if let Some(p) = find_port() {
            break p;
        }
        if Instant::now() > deadline {
            sys::console_log(&format!(
                "pyro-agent: no virtio-serial port named {} after {} s",
                pyro_protocol::AGENT_PORT_NAME,
                PORT_WAIT.as_secs()
            ));
            return 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A virtio-serial port can be opened only once: one open, then a dup for each direction.
    let open = std::fs::OpenOptions::new().read(true).write(true).open(&port).and_then(|f| Ok((f.try_clone()?, f)));
    let (reader, writer) = match open {
        Ok(pair) => pair,
        Err(e) => {
            sys::console_log(&format!("pyro-agent: opening {}: {e}", port.display()));
            return 1;
        }
    };
    // Frames of up to 4 MiB arrive and leave all the time: without this glibc maps and unmaps
    // each such buffer, and every page of it faults and is zeroed again (slow under TCG).
    // SAFETY: mallopt only tunes this process's allocator, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MALLOC_MMAP_THRESHOLD);
    }
    runtime().block_on(async move {
        // The port is a character device without readiness notifications worth relying on:
        // plain blocking I/O in two threads, bridged to the async side by channels. The
        // reader thread cuts the stream into frames itself, reading each body straight into
        // its own buffer.
        let (in_tx, in_rx) = mpsc::channel::<io::Result<Received>>(16);
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Outgoing>();
        std::thread::Builder::new()
            .name("port-read".into())
            .spawn(move || read_port(reader, in_tx))
            .expect("spawn reader thread");
        std::thread::Builder::new()
            .name("port-write".into())
            .spawn(move || write_port(writer, out_rx))
            .expect("spawn writer thread");
        let frames =
            Box::pin(futures::stream::unfold(in_rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
        serve(frames, out_tx, PowerAction::Machine).await;
    });
    1
}

/// Largest allocation glibc serves from its heap instead of a fresh mapping (its maximum):
/// transfer chunks (4 MiB) and most frames stay below it.
const MALLOC_MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;
/// Free space the reader keeps in its buffer before each read. A virtio-serial read returns
/// at most one 4 KiB port buffer, so this only has to hold several small frames.
const READ_ROOM: usize = 64 * 1024;

/// Read the port and cut it into frames with the protocol's codec (length limit included,
/// checked before the body is allocated). Bytes are read straight into the codec's buffer,
/// which holds a whole frame once its length is known, so a body is never copied on the way.
fn read_port(port: std::fs::File, tx: mpsc::Sender<io::Result<Received>>) {
    use std::os::fd::AsRawFd;
    let mut codec = codec();
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    // When the first bytes of the frame being assembled arrived.
    let mut frame_started: Option<Instant> = None;
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let receive = frame_started.take().map(|t| t.elapsed()).unwrap_or_default();
                    if !buf.is_empty() {
                        frame_started = Some(Instant::now());
                    }
                    if tx.blocking_send(Ok(Received { frame, receive })).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < READ_ROOM / 2 {
            buf.reserve(READ_ROOM);
        }
        let spare = buf.chunk_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the buffer's spare capacity,
        // which `spare` points at and which stays allocated and unaliased for the call.
        let n = unsafe { libc::read(port.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        match n {
            // No host on the other end yet (or it went away): the port reads EOF until one
            // connects, so poll gently instead of ending the stream. Whatever part of a frame
            // the old host sent is dropped: a new host (a restored VM's supervisor) starts at
            // a frame boundary.
            0 => {
                // (The codec may hold a length it already took off the buffer: reset both.)
                codec = pyro_protocol::codec();
                buf.clear();
                frame_started = None;
                std::thread::sleep(Duration::from_millis(20))
            }
            n if n > 0 => {
                frame_started.get_or_insert_with(Instant::now);
                // SAFETY: the kernel initialised exactly `n` bytes of the spare capacity.
                unsafe { buf.advance_mut(n as usize) };
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    }
}

fn write_port(mut port: std::fs::File, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    // Writes block while no host is connected, so the Ready frame waits for the host
    // instead of being lost.
    let mut write = |bytes: &[u8]| {
        if let Err(e) = port.write_all(bytes) {
            // Nothing can reach the host any more: let PID 1 start a fresh agent.
            sys::console_log(&format!("pyro-agent: writing to the host channel: {e}"));
            std::process::exit(1);
        }
    };
    while let Some(item) = rx.blocking_recv() {
        match item {
            Outgoing::Frame(head, payload) => {
                write(&head);
                write(&payload);
            }
            Outgoing::Repeat { frame, count, done } => {
                let started = Instant::now();
                for _ in 0..count {
                    write(&frame);
                }
                let _ = done.send(started.elapsed());
            }
            #[cfg(feature = "hostile")]
            Outgoing::Raw(bytes) => write(&bytes),
            Outgoing::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// Serve one Unix-socket client, then exit (host-side tests and tools).
pub fn serve_socket(path: &str) -> i32 {
    runtime().block_on(async move {
        let _ = std::fs::remove_file(path);
        let listener = match tokio::net::UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pyro-agent: cannot listen on {path}: {e}");
                return 1;
            }
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("pyro-agent: accept on {path}: {e}");
                return 1;
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(path);
        let (read, write) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut write = write;
            while let Some(item) = out_rx.recv().await {
                match item {
                    Outgoing::Frame(head, payload) => {
                        if write.write_all(&head).await.is_err() || write.write_all(&payload).await.is_err() {
                            return;
                        }
                    }
                    Outgoing::Repeat { frame, count, done } => {
                        let started = Instant::now();
                        for _ in 0..count {
                            if write.write_all(&frame).await.is_err() {
                                return;
                            }
                        }
                        let _ = done.send(started.elapsed());
                    }
                    #[cfg(feature = "hostile")]
                    Outgoing::Raw(bytes) => {
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Outgoing::Flush(ack) => {
                        let _ = ack.send(());
                    }
                }
            }
        });
        let frames =
            FramedRead::new(read, codec()).map(|item| item.map(|frame| Received { frame, receive: Duration::ZERO }));
        serve(frames, out_tx, PowerAction::StopServing).await;
        // Request tasks still hold senders; their groups were just killed, so they end soon.
        let _ = tokio::time::timeout(FLUSH_WAIT, writer).await;
        0
    })
}

/// State shared by the request tasks of one connection.
#[derive(Clone)]
struct Ctx {
    out: OutTx,
    running: Running,
    fs: crate::fs::FsState,
    shells: crate::shell::Shells,
    services: crate::service::Services,
    commands: crate::command::Commands,
    power: PowerAction,
    stop: Arc<Notify>,
}

pub(crate) fn send(out: &OutTx, id: u64, response: Response) {
    let (head, payload) = match (ResponseFrame { id, response }).into_wire_parts() {
        Ok(parts) => parts,
        // A frame the host would refuse desynchronises nothing but hangs its caller: say why.
        Err(pyro_protocol::ProtocolError::Refused(why)) => {
            let msg = format!("the response cannot be sent ({why}); lower output_cap_bytes");
            match (ResponseFrame { id, response: Response::error("too_large", msg) }).encode_wire() {
                Ok(frame) => (frame, Vec::new()),
                Err(_) => return,
            }
        }
        Err(e) => match (ResponseFrame { id, response: Response::error("io", e.to_string()) }).encode_wire() {
            Ok(frame) => (frame, Vec::new()),
            Err(_) => return,
        },
    };
    let _ = out.send(Outgoing::Frame(head, payload));
}

/// Where service state and logs live: tmpfs `/run/pyro-services` in a guest; socket mode
/// (host-side tests) may point it elsewhere so it never touches the host's `/run`.
fn services_dir() -> PathBuf {
    std::env::var_os("PYRO_AGENT_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(pyro_protocol::session::SERVICES_DIR))
}

/// Where background command state and logs live: tmpfs `/run/pyro-commands` in a guest;
/// socket mode (host-side tests) may point it elsewhere.
fn commands_dir() -> PathBuf {
    std::env::var_os("PYRO_AGENT_COMMANDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(pyro_protocol::command::COMMANDS_DIR))
}

fn ready_frame() -> Response {
    Response::Ready {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: PROTOCOL_VERSION,
        boot_ms: sys::uptime_ms(),
    }
}

async fn serve<S>(mut frames: S, out: OutTx, power: PowerAction)
where
    S: Stream<Item = io::Result<Received>> + Unpin,
{
    send(&out, READY_FRAME_ID, ready_frame());
    let ctx = Ctx {
        out,
        running: Running::default(),
        fs: crate::fs::FsState::default(),
        shells: crate::shell::Shells::default(),
        services: crate::service::Services::new(services_dir()),
        commands: crate::command::Commands::new(commands_dir()),
        power,
        stop: Arc::new(Notify::new()),
    };
    loop {
        let item = tokio::select! {
            item = frames.next() => item,
            _ = ctx.stop.notified() => break,
        };
        let (buf, receive) = match item {
            Some(Ok(Received { frame, receive })) => (frame, receive),
            Some(Err(e)) => {
                // A framing error leaves the stream unsynchronised: give up on it.
                let msg = format!("pyro-agent: host channel: {e}");
                match power {
                    PowerAction::Machine => sys::console_log(&msg),
                    PowerAction::StopServing => eprintln!("{msg}"),
                }
                break;
            }
            None => break,
        };
        let frame = match decode::<RequestFrame>(&buf) {
            Ok(f) => f,
            Err(e) => {
                let id = decode::<FrameId>(&buf).map(|f| f.id).unwrap_or(0);
                send(
                    &ctx.out,
                    id,
                    Response::error("bad_request", format!("the agent cannot decode this request: {e}")),
                );
                continue;
            }
        };
        tokio::spawn(handle(frame.id, frame.request, ctx.clone(), receive));
    }
    // Nobody is left to collect their results.
    ctx.running.cancel_all();
}

async fn handle(id: u64, request: Request, ctx: Ctx, receive: Duration) {
    #[cfg(feature = "hostile")]
    if crate::hostile::intercept(id, &request, &ctx.out) {
        return;
    }
    let response = match request {
        Request::Hello { protocol_version, .. } => hello(protocol_version),
        Request::Ping => Response::Pong,
        Request::Echo { data } => Response::Echo { data },
        // A cancelled exec answers with Error kind `cancelled`, not with a partial result.
        Request::Exec(req) => match exec::run(&req, id, &ctx.running).await {
            Ok(r) => Response::Exec(r),
            Err(ExecError::Spawn(m)) => Response::error("spawn_failed", m),
            Err(ExecError::Cancelled) => Response::error("cancelled", "the command was cancelled"),
        },
        Request::Cancel { request_id } => {
            ctx.running.cancel(request_id);
            Response::Ok
        }
        Request::Sync => {
            let _ = tokio::task::spawn_blocking(sys::sync).await;
            Response::Ok
        }
        Request::Poweroff => return poweroff(id, &ctx).await,
        Request::Fs(req) => crate::fs::handle(req, &ctx.fs).await,
        Request::Shell(req) => ctx.shells.handle(req).await,
        Request::Service(req) => ctx.services.handle(req).await,
        Request::Command(req) => ctx.commands.handle(req).await,
        Request::Supervisor(_) => Response::error("unsupported", "supervisor requests are handled on the host"),
        Request::Bench(req) => bench(req, id, &ctx, receive).await,
        Request::Restored { host_unix_ms, entropy, hostname } => {
            restored(host_unix_ms, entropy, hostname, ctx.power).await
        }
    };
    send(&ctx.out, id, response);
}

/// Timeout of each command of an `ExecCost` run.
const EXEC_COST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bench(req: BenchRequest, id: u64, ctx: &Ctx, receive: Duration) -> Response {
    match req {
        BenchRequest::Sink { data } => Response::Bench(BenchResponse::Received {
            bytes: data.len() as u64,
            receive_us: receive.as_micros() as u64,
        }),
        BenchRequest::Blast { frames, frame_bytes } => {
            let total = u64::from(frames) * u64::from(frame_bytes);
            if frame_bytes as usize > pyro_protocol::fs::TRANSFER_CHUNK_BYTES || total > pyro_protocol::MAX_BLAST_BYTES
            {
                return Response::error("bad_request", "blast is limited to 4 MiB frames and 1 GiB in total");
            }
            // Built once: what goes on the wire per frame afterwards is a plain write.
            let filler = Response::Echo { data: vec![0x5a; frame_bytes as usize] };
            let frame = match (ResponseFrame { id: pyro_protocol::UNROUTED_FRAME_ID, response: filler }).encode_wire() {
                Ok(frame) => frame,
                Err(e) => return Response::error("io", e.to_string()),
            };
            let (done, took) = oneshot::channel();
            if ctx.out.send(Outgoing::Repeat { frame, count: frames, done }).is_err() {
                return Response::error("io", "the writer is gone");
            }
            match took.await {
                Ok(took) => Response::Bench(BenchResponse::Blasted { bytes: total, write_us: took.as_micros() as u64 }),
                Err(_) => Response::error("io", "the writer is gone"),
            }
        }
        BenchRequest::ExecCost { command, cwd, runs } => {
            if runs == 0 || runs > pyro_protocol::MAX_EXEC_COST_RUNS {
                return Response::error("bad_request", "runs must be 1..=1000");
            }
            let req = pyro_protocol::ExecRequest {
                command,
                cwd,
                env: Default::default(),
                timeout_ms: EXEC_COST_TIMEOUT.as_millis() as u64,
                output_cap_bytes: 64 * 1024,
            };
            let mut durations_us = Vec::with_capacity(runs as usize);
            for _ in 0..runs {
                let started = Instant::now();
                match exec::run(&req, id, &ctx.running).await {
                    Ok(_) => durations_us.push(started.elapsed().as_micros() as u64),
                    Err(ExecError::Spawn(m)) => return Response::error("spawn_failed", m),
                    Err(ExecError::Cancelled) => return Response::error("cancelled", "the command was cancelled"),
                }
            }
            Response::Bench(BenchResponse::ExecCost { durations_us })
        }
    }
}

fn hello(host_protocol: u32) -> Response {
    if host_protocol != PROTOCOL_VERSION {
        return Response::error(
            "version_mismatch",
            format!(
                "the host speaks pyro protocol {host_protocol} but this guest agent speaks {PROTOCOL_VERSION}; \
                 rebuild the agent (scripts/build-agent.sh) from the same pyro version as the host"
            ),
        );
    }
    Response::Hello(HelloInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: sys::kernel_release(),
    })
}

/// The guest was restored from a memory state: take the host's time, fresh entropy and the
/// new hostname, then answer with the agent's identity. In socket mode (the agent runs on a
/// host, for tests) nothing of the host is touched.
async fn restored(host_unix_ms: u64, entropy: Vec<u8>, hostname: Option<String>, power: PowerAction) -> Response {
    use pyro_protocol::{MAX_RESTORE_ENTROPY_BYTES, MIN_RESTORE_ENTROPY_BYTES};
    if !(MIN_RESTORE_ENTROPY_BYTES..=MAX_RESTORE_ENTROPY_BYTES).contains(&entropy.len()) {
        return Response::error(
            "bad_request",
            format!("a restore carries {MIN_RESTORE_ENTROPY_BYTES}..={MAX_RESTORE_ENTROPY_BYTES} bytes of entropy"),
        );
    }
    if let Some(name) = &hostname {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Response::error("bad_request", format!("{name:?} is not a valid hostname"));
        }
    }
    if power == PowerAction::Machine {
        let renewed = tokio::task::spawn_blocking(move || -> io::Result<()> {
            sys::add_entropy_and_reseed(&entropy)?;
            sys::set_wall_clock(host_unix_ms)?;
            if let Some(name) = &hostname {
                sys::sethostname(name);
            }
            Ok(())
        })
        .await;
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Response::error("io", format!("taking the new machine identity: {e}")),
            Err(e) => return Response::error("io", format!("taking the new machine identity: {e}")),
        }
    }
    hello(PROTOCOL_VERSION)
}

async fn poweroff(id: u64, ctx: &Ctx) {
    send(&ctx.out, id, Response::Ok);
    let (ack, acked) = oneshot::channel();
    let _ = ctx.out.send(Outgoing::Flush(ack));
    let _ = tokio::time::timeout(FLUSH_WAIT, acked).await;
    match ctx.power {
        PowerAction::Machine => {
            let _ = tokio::task::spawn_blocking(|| sys::shutdown_machine()).await;
        }
        PowerAction::StopServing => ctx.stop.notify_one(),
    }
}
