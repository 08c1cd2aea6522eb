//! The agent service: owns the host channel and answers every request in its own task.
//!
//! One writer (a thread for the virtio-serial port, a task for a Unix socket) owns the
//! outgoing side; request tasks hand it whole frame bodies through a channel, so responses
//! never interleave and may leave in any order.

use crate::exec::{self, ExecError, Running};
use crate::sys;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, Stream, StreamExt};
use pyro_protocol::{
    codec, decode, encode, FrameId, HelloInfo, Request, RequestFrame, Response, ResponseFrame, MAX_FRAME_BYTES,
    PROTOCOL_VERSION, READY_FRAME_ID,
};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

/// Work for the writer, done strictly in order.
pub(crate) enum Outgoing {
    Frame(Bytes),
    /// Bytes written as they are, outside the framing (the hostile test agent's crafted
    /// frames: oversized, truncated, trickled).
    #[cfg(feature = "hostile")]
    Raw(Bytes),
    /// Acknowledged once every frame queued before it has been handed to the transport.
    Flush(oneshot::Sender<()>),
}

pub(crate) type OutTx = mpsc::UnboundedSender<Outgoing>;

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
    runtime().block_on(async move {
        // The port is a character device without readiness notifications worth relying on:
        // plain blocking I/O in two threads, bridged to the async side by channels.
        let (in_tx, in_rx) = mpsc::channel::<io::Result<Bytes>>(64);
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Outgoing>();
        std::thread::Builder::new()
            .name("port-read".into())
            .spawn(move || read_port(reader, in_tx))
            .expect("spawn reader thread");
        std::thread::Builder::new()
            .name("port-write".into())
            .spawn(move || write_port(writer, out_rx))
            .expect("spawn writer thread");
        let stream =
            Box::pin(futures::stream::unfold(in_rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
        let frames = FramedRead::new(tokio_util::io::StreamReader::new(stream), codec());
        serve(frames, out_tx, PowerAction::Machine).await;
    });
    1
}

fn read_port(mut port: std::fs::File, tx: mpsc::Sender<io::Result<Bytes>>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match port.read(&mut buf) {
            // No host on the other end yet (or it went away): the port reads EOF until one
            // connects, so poll gently instead of ending the stream.
            Ok(0) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => {
                if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

fn write_port(mut port: std::fs::File, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut codec = codec();
    let mut buf = BytesMut::new();
    // Writes block while no host is connected, so the Ready frame waits for the host
    // instead of being lost.
    while let Some(item) = rx.blocking_recv() {
        match item {
            Outgoing::Frame(body) => {
                buf.clear();
                if codec.encode(body, &mut buf).is_err() {
                    continue;
                }
                if let Err(e) = port.write_all(&buf) {
                    // Nothing can reach the host any more: let PID 1 start a fresh agent.
                    sys::console_log(&format!("pyro-agent: writing to the host channel: {e}"));
                    std::process::exit(1);
                }
            }
            #[cfg(feature = "hostile")]
            Outgoing::Raw(bytes) => {
                if port.write_all(&bytes).is_err() {
                    std::process::exit(1);
                }
            }
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
            let mut sink = FramedWrite::new(write, codec());
            while let Some(item) = out_rx.recv().await {
                match item {
                    Outgoing::Frame(b) => {
                        if sink.send(b).await.is_err() {
                            return;
                        }
                    }
                    #[cfg(feature = "hostile")]
                    Outgoing::Raw(bytes) => {
                        use tokio::io::AsyncWriteExt;
                        if sink.get_mut().write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Outgoing::Flush(ack) => {
                        let _ = ack.send(());
                    }
                }
            }
        });
        serve(FramedRead::new(read, codec()), out_tx, PowerAction::StopServing).await;
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
    power: PowerAction,
    stop: Arc<Notify>,
}

pub(crate) fn send(out: &OutTx, id: u64, response: Response) {
    let body = match encode(&ResponseFrame { id, response }) {
        Ok(b) if b.len() <= MAX_FRAME_BYTES => b,
        Ok(b) => {
            // A frame the host would refuse desynchronises nothing but hangs its caller: say why.
            let msg = format!(
                "the response ({} bytes) exceeds the {MAX_FRAME_BYTES}-byte frame limit; lower output_cap_bytes",
                b.len()
            );
            match encode(&ResponseFrame { id, response: Response::error("too_large", msg) }) {
                Ok(b) => b,
                Err(_) => return,
            }
        }
        Err(e) => match encode(&ResponseFrame { id, response: Response::error("io", e.to_string()) }) {
            Ok(b) => b,
            Err(_) => return,
        },
    };
    let _ = out.send(Outgoing::Frame(body));
}

/// Where service state and logs live: tmpfs `/run/pyro-services` in a guest; socket mode
/// (host-side tests) may point it elsewhere so it never touches the host's `/run`.
fn services_dir() -> PathBuf {
    std::env::var_os("PYRO_AGENT_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(pyro_protocol::session::SERVICES_DIR))
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
    S: Stream<Item = io::Result<BytesMut>> + Unpin,
{
    send(&out, READY_FRAME_ID, ready_frame());
    let ctx = Ctx {
        out,
        running: Running::default(),
        fs: crate::fs::FsState::default(),
        shells: crate::shell::Shells::default(),
        services: crate::service::Services::new(services_dir()),
        power,
        stop: Arc::new(Notify::new()),
    };
    loop {
        let item = tokio::select! {
            item = frames.next() => item,
            _ = ctx.stop.notified() => break,
        };
        let buf = match item {
            Some(Ok(buf)) => buf,
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
        tokio::spawn(handle(frame.id, frame.request, ctx.clone()));
    }
    // Nobody is left to collect their results.
    ctx.running.cancel_all();
}

async fn handle(id: u64, request: Request, ctx: Ctx) {
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
        Request::Supervisor(_) => Response::error("unsupported", "supervisor requests are handled on the host"),
    };
    send(&ctx.out, id, response);
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
