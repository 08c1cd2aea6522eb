//! A small manual client for a booted guest's agent channel (QEMU's chardev socket) or for
//! `pyro-agent serve --socket`: waits for Ready, says Hello, runs the commands given on the
//! command line, then powers the guest off.
//!
//! `cargo run -p pyro-agent --example agent_client -- SOCKET [--since-epoch-ms MS] [CMD...]`

use futures::{SinkExt, StreamExt};
use pyro_protocol::{codec, decode, encode, ExecRequest, Request, RequestFrame, Response, ResponseFrame};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

type Conn = Framed<UnixStream, LengthDelimitedCodec>;

fn now_epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn recv(conn: &mut Conn, within: Duration) -> ResponseFrame {
    let buf = tokio::time::timeout(within, conn.next())
        .await
        .expect("no frame in time")
        .expect("channel closed")
        .expect("channel error");
    decode(&buf).expect("undecodable frame")
}

async fn call(conn: &mut Conn, id: u64, request: Request) -> Response {
    conn.send(encode(&RequestFrame { id, request }).unwrap()).await.unwrap();
    loop {
        let f = recv(conn, Duration::from_secs(120)).await;
        if f.id == id {
            return f.response;
        }
        if f.id == pyro_protocol::READY_FRAME_ID {
            // A restarted agent: whatever was in flight is lost.
            println!("(agent restarted: {:?})", f.response);
            return f.response;
        }
        println!("(frame for id {} while waiting for {id})", f.id);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let socket = args.remove(0);
    let mut since = now_epoch_ms();
    if args.first().map(String::as_str) == Some("--since-epoch-ms") {
        since = args[1].parse().unwrap();
        args.drain(..2);
    }
    let stream = loop {
        match UnixStream::connect(&socket).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let connected = now_epoch_ms();
    let mut conn = Framed::new(stream, codec());
    let ready = recv(&mut conn, Duration::from_secs(30)).await;
    let ready_at = now_epoch_ms();
    println!(
        "ready: id={} {:?}; connected after {} ms, Ready after {} ms",
        ready.id,
        ready.response,
        connected - since,
        ready_at - since
    );
    let hello = Request::Hello { protocol_version: pyro_protocol::PROTOCOL_VERSION, host_version: "manual".into() };
    println!("hello: {:?}", call(&mut conn, 1, hello).await);
    let t = Instant::now();
    println!("ping: {:?} in {:?}", call(&mut conn, 2, Request::Ping).await, t.elapsed());
    for (i, command) in args.iter().enumerate() {
        let req = ExecRequest {
            command: command.clone(),
            cwd: None,
            env: Default::default(),
            timeout_ms: 5000,
            output_cap_bytes: 1 << 20,
        };
        let t = Instant::now();
        match call(&mut conn, 100 + i as u64, Request::Exec(req)).await {
            Response::Exec(r) => {
                println!(
                    "$ {command}\n  exit={} timed_out={} agent={}ms round-trip={:?}",
                    r.exit_code,
                    r.timed_out,
                    r.duration_ms,
                    t.elapsed()
                );
                for line in String::from_utf8_lossy(&r.stdout).lines() {
                    println!("  | {line}");
                }
                for line in String::from_utf8_lossy(&r.stderr).lines() {
                    println!("  ! {line}");
                }
            }
            other => println!("$ {command}\n  {other:?}"),
        }
    }
    println!("sync: {:?}", call(&mut conn, 3, Request::Sync).await);
    let t = Instant::now();
    println!("poweroff: {:?} after {:?}", call(&mut conn, 4, Request::Poweroff).await, t.elapsed());
    let end = tokio::time::timeout(Duration::from_secs(10), conn.next()).await;
    println!(
        "channel after poweroff: {} after {:?}",
        if matches!(end, Ok(None)) { "closed" } else { "??" },
        t.elapsed()
    );
}
