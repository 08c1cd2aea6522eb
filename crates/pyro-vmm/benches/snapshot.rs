//! Memory snapshot benchmark (`cargo bench -p pyro-vmm --bench snapshot`).
//!
//! Prints, in one run on one machine (one 1024 MiB, 1 vCPU guest of `debian:12`):
//! - cold boot (VMM start to agent ready, [`Machine::boot`]) against a resume in place
//!   ([`Machine::restore`]: QEMU start, state load, new-machine request answered), rounds
//!   interleaved so machine load hits both alike;
//! - pause time and state size for an idle guest and with 200 and 400 MiB of guest memory
//!   touched (random bytes in tmpfs: nothing for QEMU to skip).
//!
//! Each target prints one machine-readable line `RATIO <name> <value> <op> <target>`
//! (`scripts/bench.sh --check` fails when one misses).
//!
//! Needs: `cargo build --workspace --bins` in the bench's profile (`pyro`, `pyro-supervisor`),
//! an installed debian:12 (`PYRO_CACHE_DIR`).

#[path = "../tests/common/mod.rs"]
mod common;
use common::target_bin;
use pyro_vmm::{Machine, MemoryState};
use std::collections::BTreeMap;

use std::process::Command;
use std::time::{Duration, Instant};

const MEM_MIB: u32 = 1024;
const ROUNDS: usize = 3;
const TOUCHED_MIB: [u32; 3] = [0, 200, 400];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ratio(name: &str, value: f64, op: &str, target: f64) {
    println!("RATIO {name} {value:.3} {op} {target}");
}

async fn sh(machine: &Machine, script: &str) {
    let r = machine.exec(script, None, BTreeMap::new(), Duration::from_secs(300), 4096).await.unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&r.stderr));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let home = tempfile::Builder::new().prefix("pyro-snap-bench-").tempdir_in("/tmp").unwrap();
    let (id, spec) = common::stopped_workspace_spec(home.path(), MEM_MIB);
    let vm = spec.dir.clone();

    let (mut cold, mut resume) = (Vec::new(), Vec::new());
    let mut pauses: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for touched in TOUCHED_MIB {
            let started = Instant::now();
            let (machine, _) = Machine::boot(spec.clone()).await.unwrap();
            cold.push(started.elapsed().as_secs_f64() * 1000.0);
            if touched > 0 {
                sh(&machine, &format!("head -c {touched}M /dev/urandom > /dev/shm/fill")).await;
            }
            let started = Instant::now();
            let paused = machine.pause(Duration::from_secs(30)).await.unwrap();
            let pause_ms = started.elapsed().as_secs_f64() * 1000.0;
            pauses.entry(touched).or_default().push((pause_ms, paused.state_bytes as f64 / 1048576.0));
            let state = MemoryState::load(&vm).unwrap().unwrap();
            let started = Instant::now();
            let (machine, _) = Machine::restore(spec.clone(), &state).await.unwrap();
            resume.push(started.elapsed().as_secs_f64() * 1000.0);
            machine.kill();
        }
    }
    let (cold_ms, resume_ms) = (median(cold), median(resume));
    println!("cold boot to agent ready: {cold_ms:.0} ms (median of {})", ROUNDS * TOUCHED_MIB.len());
    println!("resume in place to agent ready: {resume_ms:.0} ms");
    for (touched, runs) in &pauses {
        let ms = median(runs.iter().map(|r| r.0).collect());
        let mib = median(runs.iter().map(|r| r.1).collect());
        println!("pause, {touched} MiB touched of {MEM_MIB} MiB: {ms:.0} ms, state {mib:.1} MiB");
        if *touched == 0 {
            ratio("snapshot_idle_state_vs_guest_memory", mib / f64::from(MEM_MIB), "<=", 0.25);
        }
    }
    ratio("snapshot_resume_vs_cold_boot", resume_ms / cold_ms, "<=", 0.333);
    let _ = Command::new(target_bin("pyro"))
        .args(["workspace", "delete", &id, "--json"])
        .env("PYRO_HOME", home.path())
        .output();
}
