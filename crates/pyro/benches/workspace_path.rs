//! Workspace benchmark (`cargo bench -p pyro --bench workspace_path`).
//!
//! Prints, in one run on one machine (one workspace, seeded with a 50 MiB repository):
//! - workspace create time, seeded and empty;
//! - the raw virtio-serial stream of that VM in each direction, measured the way `dd`/`cat`
//!   on the port would: guest to host, the agent writes one prebuilt 4 MiB frame over and
//!   over (`Bench::Blast`, nothing encoded per frame; timed on the host from request to
//!   answer); host to guest, the agent's reader times how long each 4 MiB frame takes to
//!   come off the port (`Bench::Sink`);
//! - the agent channel (SDK -> supervisor -> virtio-serial -> agent and back): `Echo` of
//!   4 MiB frames, and `Sink` of 4 MiB frames timed on the host (host to guest only);
//! - sync push and export of the 50 MiB tree;
//! - workspace exec round trip of `true` against the same command's in-guest cost
//!   (`Bench::ExecCost`: the agent's own exec path, spawn to result, timed in the guest).
//!
//! Rounds are interleaved so machine load hits the baseline and the measured path alike.
//! Each target prints one machine-readable line `RATIO <name> <value> <op> <target>`
//! (`scripts/bench.sh --check` fails when one misses).
//!
//! Needs: scripts/build.sh release, an installed debian:12.

use pyro::workspace::CreateWorkspaceOptions;
use pyro::{Paths, Pyro};
use pyro_protocol::{BenchRequest, BenchResponse, Request, Response};
use pyro_vmm::{Machine, VmDir};
use std::path::Path;
use std::time::{Duration, Instant};

const REPO_BYTES: usize = 50 * 1024 * 1024;
const FRAME: usize = 4 * 1024 * 1024;
/// Frames per channel measurement in one round.
const FRAMES: usize = 8;
const ROUNDS: usize = 3;
const EXEC_RUNS: usize = 40;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A repo-like tree: 400 files of ~128 KiB in 20 directories, incompressible content.
fn make_repo(root: &Path) {
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let files = 400;
    let per = REPO_BYTES / files;
    for i in 0..files {
        let dir = root.join(format!("pkg{:02}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..per / 8).flat_map(|_| next().to_le_bytes()).collect();
        std::fs::write(dir.join(format!("file{i:03}.bin")), data).unwrap();
    }
}

fn mib_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

fn ratio(name: &str, value: f64, op: &str, target: f64) {
    println!("RATIO {name} {value:.3} {op} {target}");
}

async fn bench_call(vm: &Machine, req: BenchRequest) -> BenchResponse {
    match vm.call(Request::Bench(req), Some(Duration::from_secs(300))).await.unwrap() {
        Response::Bench(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// Raw guest -> host: MiB/s of `FRAMES` prebuilt frames, host-timed request to answer.
async fn raw_up(vm: &Machine) -> f64 {
    let t = Instant::now();
    let r = bench_call(vm, BenchRequest::Blast { frames: FRAMES as u32, frame_bytes: FRAME as u32 }).await;
    let s = t.elapsed().as_secs_f64();
    assert!(matches!(r, BenchResponse::Blasted { bytes, .. } if bytes as usize == FRAMES * FRAME));
    mib_s(FRAMES * FRAME, s)
}

/// Host -> guest over the channel: (raw MiB/s as the agent's reader took the frames off the
/// port, channel MiB/s host-timed per call).
async fn sink(vm: &Machine) -> (f64, f64) {
    let data = vec![0xa5u8; FRAME];
    let (mut receive, mut total) = (0.0, 0.0);
    for _ in 0..FRAMES {
        let t = Instant::now();
        let r = bench_call(vm, BenchRequest::Sink { data: data.clone() }).await;
        total += t.elapsed().as_secs_f64();
        match r {
            BenchResponse::Received { bytes, receive_us } => {
                assert_eq!(bytes as usize, FRAME);
                receive += receive_us as f64 / 1e6;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (mib_s(FRAMES * FRAME, receive), mib_s(FRAMES * FRAME, total))
}

/// The channel both ways: `Echo` of 4 MiB frames, one-way MiB/s (each echo carries the
/// bytes there and back).
async fn echo(vm: &Machine) -> f64 {
    let chunk = vec![0xa5u8; FRAME];
    let t = Instant::now();
    for _ in 0..FRAMES {
        match vm.call(Request::Echo { data: chunk.clone() }, None).await.unwrap() {
            Response::Echo { data } => assert_eq!(data.len(), chunk.len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    mib_s(2 * FRAMES * FRAME, t.elapsed().as_secs_f64())
}

fn main() {
    let work = tempfile::Builder::new().prefix("pyro-wsbench-").tempdir_in("/tmp").unwrap();
    let repo = work.path().join("repo");
    make_repo(&repo);
    let mut paths = Paths::from_env().unwrap();
    paths.home = work.path().join("home");
    let pyro = Pyro::with_paths(paths.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        pyro.pull_environment("debian:12").await.expect("debian:12 installs");

        let mut opts = CreateWorkspaceOptions::new("debian:12");
        opts.seed_path = Some(repo.clone());
        let t = Instant::now();
        let w = pyro.create_workspace(opts).await.unwrap();
        let create_s = t.elapsed().as_secs_f64();
        let id = w.workspace_id.clone();
        println!(
            "workspace create seeded with {} MiB ({} entries): {:.2} s",
            REPO_BYTES / (1024 * 1024),
            w.workspace_seed.entry_count,
            create_s
        );
        let unseeded = {
            let t = Instant::now();
            let w2 = pyro.create_workspace(CreateWorkspaceOptions::new("debian:12")).await.unwrap();
            let s = t.elapsed().as_secs_f64();
            pyro.delete_workspace(&w2.workspace_id).await.unwrap();
            s
        };
        println!("workspace create, empty seed: {unseeded:.2} s");
        // The workspace's VM directory (`<workspace>/runtime`), attached from outside the engine.
        let vm = Machine::attach(VmDir::new(paths.workspaces_dir().join(&id).join("runtime")));

        // (a) channel vs raw stream, interleaved rounds.
        let (mut up, mut down, mut ch_echo, mut ch_down) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        echo(&vm).await; // warm-up
        for _ in 0..ROUNDS {
            up.push(raw_up(&vm).await);
            let (raw_down, channel_down) = sink(&vm).await;
            down.push(raw_down);
            ch_down.push(channel_down);
            ch_echo.push(echo(&vm).await);
        }
        let (up, down, ch_echo, ch_down) = (median(up), median(down), median(ch_echo), median(ch_down));
        // What a raw stream takes to move the echo's bytes there and back, as one-way MiB/s.
        let raw_round_trip = 2.0 / (1.0 / up + 1.0 / down);
        println!("raw virtio-serial stream, 4 MiB frames, median of {ROUNDS} rounds:");
        println!("  guest -> host (agent writes a prebuilt frame, like dd to the port): {up:.0} MiB/s");
        println!("  host -> guest (agent reads the port, like cat; timed in the guest): {down:.0} MiB/s");
        println!("  both ways, one after the other (one-way equivalent): {raw_round_trip:.0} MiB/s");
        println!("agent channel (SDK -> supervisor -> agent), 4 MiB frames:");
        println!("  Echo: {ch_echo:.0} MiB/s one-way");
        println!("  host -> guest (Sink, host-timed): {ch_down:.0} MiB/s");
        ratio("channel_echo_vs_raw_round_trip", ch_echo / raw_round_trip, ">=", 0.5);
        ratio("channel_down_vs_raw_down", ch_down / down, ">=", 0.5);
        println!("  (Echo against the guest->host stream alone: {:.2})", ch_echo / up);

        // (b) sync push and export against the channel.
        let t = Instant::now();
        let s = pyro.push_workspace_sync(&id, &repo, "/workspace/again").await.unwrap();
        let push_s = t.elapsed().as_secs_f64();
        let push = mib_s(s.workspace_sync.bytes_written as usize, push_s);
        println!("sync push {} MiB: {:.2} s = {push:.0} MiB/s", s.workspace_sync.bytes_written / (1024 * 1024), push_s);
        let out = work.path().join("export");
        let t = Instant::now();
        let x = pyro.export_workspace(&id, "/workspace/again", &out).await.unwrap();
        let export_s = t.elapsed().as_secs_f64();
        let export = mib_s(x.bytes_written as usize, export_s);
        println!("export {} MiB: {:.2} s = {export:.0} MiB/s", x.bytes_written / (1024 * 1024), export_s);
        // The channel again right after, so both sides of the ratio see the same load.
        let ch_after = echo(&vm).await;
        let channel = (ch_echo + ch_after) / 2.0;
        println!("  channel (Echo) around them: {channel:.0} MiB/s one-way");
        ratio("sync_push_vs_channel", push / channel, ">=", 0.5);
        ratio("export_vs_channel", export / channel, ">=", 0.5);

        // (c) exec round trip minus the in-guest cost of the same command.
        for _ in 0..5 {
            pyro.exec_workspace(&id, "true", 30, None).await.unwrap();
        }
        let mut rtt = Vec::new();
        let mut guest = Vec::new();
        let (mut ping, mut channel_exec) = (Vec::new(), Vec::new());
        let exec_request = Request::Exec(pyro_protocol::ExecRequest {
            command: "true".into(),
            cwd: Some("/workspace".into()),
            env: Default::default(),
            timeout_ms: 30_000,
            output_cap_bytes: 65536,
        });
        for _ in 0..EXEC_RUNS / 10 {
            for _ in 0..10 {
                let t = Instant::now();
                pyro.exec_workspace(&id, "true", 30, None).await.unwrap();
                rtt.push(t.elapsed().as_secs_f64() * 1e3);
                // Where the overhead is: the bare channel, and an exec without the
                // workspace's bookkeeping (record, lock, history).
                let t = Instant::now();
                vm.call(Request::Ping, None).await.unwrap();
                ping.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                vm.call(exec_request.clone(), None).await.unwrap();
                channel_exec.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let cost = BenchRequest::ExecCost { command: "true".into(), cwd: Some("/workspace".into()), runs: 10 };
            match bench_call(&vm, cost).await {
                BenchResponse::ExecCost { durations_us } => {
                    guest.extend(durations_us.iter().map(|us| *us as f64 / 1e3))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let (rtt, guest) = (median(rtt), median(guest));
        println!("workspace exec `true` round trip: {rtt:.2} ms median of {EXEC_RUNS} (history recorded)");
        println!("  same command in the guest (agent exec path, spawn to result): {guest:.2} ms median of {EXEC_RUNS}");
        println!(
            "  breakdown: Ping round trip {:.2} ms; the same exec sent straight to the supervisor (no workspace record, lock or history) {:.2} ms",
            median(ping),
            median(channel_exec)
        );
        ratio("exec_overhead_ms", rtt - guest, "<=", 3.0);
        pyro.delete_workspace(&id).await.unwrap();
    });
}
