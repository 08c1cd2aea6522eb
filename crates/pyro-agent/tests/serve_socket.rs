//! The agent service end to end over `pyro-agent serve --socket`, with a client speaking the
//! real framing and encoding.

use futures::{SinkExt, StreamExt};
use pyro_protocol::session::{ReadinessProbe, ServiceRequest, ServiceResponse, ServiceState, ServiceStatus};
use pyro_protocol::{
    codec, decode, encode, ExecRequest, Request, RequestFrame, Response, ResponseFrame, SupervisorRequest,
    PROTOCOL_VERSION, READY_FRAME_ID,
};
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
    framed: Framed<UnixStream, LengthDelimitedCodec>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_pyro-agent"))
        .args(["serve", "--socket"])
        .arg(&sock)
        .env("PYRO_AGENT_SERVICES_DIR", dir.path().join("services"))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(&sock).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("agent never listened: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    Agent { child, _dir: dir, framed: Framed::new(stream, codec()) }
}

impl Agent {
    async fn send(&mut self, id: u64, request: Request) {
        let body = encode(&RequestFrame { id, request }).unwrap();
        self.framed.send(body).await.unwrap();
    }

    async fn recv(&mut self) -> ResponseFrame {
        let buf = tokio::time::timeout(Duration::from_secs(10), self.framed.next())
            .await
            .expect("no answer within 10 s")
            .expect("agent closed the connection")
            .unwrap();
        decode(&buf).unwrap()
    }

    async fn call(&mut self, id: u64, request: Request) -> Response {
        self.send(id, request).await;
        let frame = self.recv().await;
        assert_eq!(frame.id, id);
        frame.response
    }

    async fn ready(&mut self) {
        let frame = self.recv().await;
        assert_eq!(frame.id, READY_FRAME_ID);
        match frame.response {
            Response::Ready { agent_version, protocol_version, .. } => {
                assert_eq!(protocol_version, PROTOCOL_VERSION);
                assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
            }
            other => panic!("first frame is not Ready: {other:?}"),
        }
    }
}

fn exec(command: &str, timeout_ms: u64) -> Request {
    Request::Exec(ExecRequest {
        command: command.into(),
        cwd: None,
        env: BTreeMap::new(),
        timeout_ms,
        output_cap_bytes: 1 << 20,
    })
}

fn error_kind(r: &Response) -> &str {
    match r {
        Response::Error(e) => e.kind.as_str(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn ready_hello_and_simple_requests() {
    let mut a = start().await;
    a.ready().await;
    let hello = Request::Hello { protocol_version: PROTOCOL_VERSION, host_version: "test".into() };
    match a.call(1, hello).await {
        Response::Hello(info) => {
            assert_eq!(info.protocol_version, PROTOCOL_VERSION);
            let uname = Command::new("uname").arg("-r").output().unwrap();
            assert_eq!(info.kernel_release, String::from_utf8_lossy(&uname.stdout).trim());
        }
        other => panic!("{other:?}"),
    }
    let old = Request::Hello { protocol_version: PROTOCOL_VERSION + 1, host_version: "future".into() };
    assert_eq!(error_kind(&a.call(2, old).await), "version_mismatch");
    assert!(matches!(a.call(3, Request::Ping).await, Response::Pong));
    assert!(matches!(a.call(4, Request::Sync).await, Response::Ok));
    let sup = Request::Supervisor(SupervisorRequest::Status);
    assert_eq!(error_kind(&a.call(5, sup).await), "unsupported");
    match a.call(6, exec("printf 'a\\377'; echo e >&2; exit 3", 5000)).await {
        Response::Exec(r) => {
            assert_eq!(r.stdout, b"a\xff");
            assert_eq!(r.stderr, b"e\n");
            assert_eq!(r.exit_code, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn undecodable_requests_get_bad_request_with_their_id() {
    let mut a = start().await;
    a.ready().await;
    let mut request = BTreeMap::new();
    request.insert("type".to_string(), "teleport".to_string());
    let body = pyro_protocol::encode_with_id(77, &request).unwrap();
    a.framed.send(body).await.unwrap();
    let frame = a.recv().await;
    assert_eq!(frame.id, 77);
    assert_eq!(error_kind(&frame.response), "bad_request");
    // The connection is still usable.
    assert!(matches!(a.call(78, Request::Ping).await, Response::Pong));
}

#[tokio::test]
async fn requests_are_served_concurrently() {
    let mut a = start().await;
    a.ready().await;
    let t = Instant::now();
    a.send(10, exec("sleep 1; echo slow", 10_000)).await;
    a.send(11, exec("echo fast", 10_000)).await;
    let first = a.recv().await;
    assert_eq!(first.id, 11, "the fast exec answers first");
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    let second = a.recv().await;
    assert_eq!(second.id, 10);
    match second.response {
        Response::Exec(r) => assert_eq!(r.stdout, b"slow\n"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_and_timeout_over_the_wire() {
    let mut a = start().await;
    a.ready().await;
    a.send(20, exec("sleep 30", 60_000)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send(21, Request::Cancel { request_id: 20 }).await;
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let f = a.recv().await;
        got.insert(f.id, f.response);
    }
    assert!(matches!(got[&21], Response::Ok));
    assert_eq!(error_kind(&got[&20]), "cancelled");
    // Cancelling something unknown is fine too.
    let unknown = Request::Cancel { request_id: 999 };
    assert!(matches!(a.call(22, unknown).await, Response::Ok));
    let t = Instant::now();
    match a.call(23, exec("echo before; sleep 30", 1000)).await {
        Response::Exec(r) => {
            assert!(r.timed_out);
            assert_eq!(r.exit_code, 124);
            assert_eq!(r.stdout, b"before\n");
            assert_eq!(r.stderr, b"command timed out after 1s");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn poweroff_in_socket_mode_only_ends_the_service() {
    let mut a = start().await;
    a.ready().await;
    assert!(matches!(a.call(30, Request::Poweroff).await, Response::Ok));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "agent still running after Poweroff");
        std::thread::sleep(Duration::from_millis(20));
    }
    // This test process (the agent's parent) is still alive, so nothing was killed.
    assert!(a.framed.next().await.is_none());
}

#[tokio::test]
async fn a_vanished_client_ends_the_service() {
    let mut a = start().await;
    a.ready().await;
    a.send(40, exec("sleep 30", 60_000)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Closing our end: the agent kills the running exec and exits.
    let Agent { child, framed, .. } = &mut a;
    drop(std::mem::replace(framed, {
        let (x, _y) = UnixStream::pair().unwrap();
        Framed::new(x, codec())
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "agent still running after the client left");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn service_start(name: &str, command: &str, readiness: Option<ReadinessProbe>, timeout_ms: u64) -> Request {
    Request::Service(ServiceRequest::Start {
        name: name.into(),
        command: command.into(),
        cwd: "/".into(),
        env: BTreeMap::from([("GREETING".to_string(), "hello-from-env".to_string())]),
        readiness,
        ready_timeout_ms: timeout_ms,
        ready_interval_ms: 50,
    })
}

fn state_of(r: Response) -> ServiceState {
    match r {
        Response::Service(ServiceResponse::State(s)) => s,
        other => panic!("not a service state: {other:?}"),
    }
}

/// Services run as real process groups under the runner: readiness, env, logs, TERM stop,
/// readiness timeout (service stopped, logs kept), exit before ready, and a readiness wait
/// that does not hold up other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_start_wait_log_and_stop() {
    let mut agent = start().await;
    agent.ready().await;
    let dir = agent._dir.path().to_path_buf();
    let marker = dir.join("ready-marker");
    let cmd = format!("echo out-$GREETING; echo err-line >&2; sleep 0.3; touch {}; exec sleep 100", marker.display());
    let probe = ReadinessProbe::File { path: marker.display().to_string() };
    let s = state_of(agent.call(2, service_start("web", &cmd, Some(probe), 10_000)).await);
    assert_eq!(s.state, ServiceStatus::Running);
    assert!(s.ready_at.is_some());
    // Already running: refused.
    match agent.call(3, service_start("web", "true", None, 1000)).await {
        Response::Error(e) => assert!(e.message.contains("already running"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    let logs =
        match agent.call(4, Request::Service(ServiceRequest::Logs { name: "web".into(), tail_lines: Some(200) })).await
        {
            Response::Service(ServiceResponse::Logs(l)) => l,
            other => panic!("{other:?}"),
        };
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out-hello-from-env\n");
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "err-line\n");
    let pid = s.pid.unwrap();
    let stopped =
        state_of(agent.call(5, Request::Service(ServiceRequest::Stop { name: "web".into(), grace_ms: 5000 })).await);
    assert_eq!(stopped.state, ServiceStatus::Stopped);
    assert_eq!(stopped.stop_reason.as_deref(), Some("sigterm"));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap().contains(") Z")
    );

    // Readiness that never comes: a slow wait runs while other requests are answered.
    agent
        .send(6, service_start("never", "sleep 100", Some(ReadinessProbe::Tcp { address: "127.0.0.1:1".into() }), 1500))
        .await;
    let began = Instant::now();
    agent.send(7, Request::Ping).await;
    let first = agent.recv().await;
    assert_eq!(first.id, 7, "ping waited for the readiness loop");
    assert!(began.elapsed() < Duration::from_millis(1000));
    let failed = agent.recv().await;
    assert_eq!(failed.id, 6);
    let failed = state_of(failed.response);
    assert_eq!(failed.state, ServiceStatus::Failed);
    assert_eq!(failed.stop_reason.as_deref(), Some("readiness_timeout"));
    assert!(failed.readiness_error.unwrap().contains("127.0.0.1:1"));

    // Exits before ready.
    let gone = state_of(
        agent
            .call(8, service_start("quick", "exit 3", Some(ReadinessProbe::File { path: "/nonexistent".into() }), 5000))
            .await,
    );
    assert_eq!(gone.state, ServiceStatus::Failed);
    assert_eq!(gone.stop_reason.as_deref(), Some("process_exited_before_ready"));
    assert_eq!(gone.exit_code, Some(3));

    // A plain service that exits by itself is reported exited with its code.
    state_of(agent.call(9, service_start("job", "exit 5", None, 1000)).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let job = state_of(agent.call(10, Request::Service(ServiceRequest::Status { name: "job".into() })).await);
    assert_eq!((job.state, job.exit_code), (ServiceStatus::Exited, Some(5)));
    match agent.call(11, Request::Service(ServiceRequest::List)).await {
        Response::Service(ServiceResponse::List { services }) => {
            let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["job", "never", "quick", "web"]);
        }
        other => panic!("{other:?}"),
    }
    // The runtime files live in the configured directory, nowhere else.
    assert!(dir.join("services/web.stdout").exists());
}
