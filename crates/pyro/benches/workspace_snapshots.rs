//! Memory snapshot benchmark (`cargo bench -p pyro --bench workspace_snapshots`).
//!
//! Prints, in one run on one machine (one debian:12 workspace, 1024 MiB guest memory):
//! - resume of a paused workspace against `workspace start` of the same workspace from
//!   stopped (a cold boot of the same disk), rounds interleaved so load hits both alike;
//! - pause time and state size with the guest idle, and after it touched 256 MiB of
//!   incompressible memory (a tmpfs file of random bytes): only touched pages should cost
//!   bytes;
//! - fork of the running (idle) workspace into 4, against four cold boots of a workspace
//!   disk (the median `workspace start` above, times four: a create costs that plus a
//!   disk copy, so this baseline favours the cold path).
//!
//! Each target prints one machine-readable line `RATIO <name> <value> <op> <target>`
//! (`scripts/bench.sh --check` fails when one misses).
//!
//! Needs: scripts/build.sh release, an installed debian:12.

use pyro::workspace::{CreateWorkspaceOptions, ForkOptions};
use pyro::{Paths, Pyro};
use std::time::Instant;

const ROUNDS: usize = 3;
const TOUCH_MIB: u64 = 256;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ratio(name: &str, value: f64, op: &str, target: f64) {
    println!("RATIO {name} {value:.3} {op} {target}");
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let work = tempfile::Builder::new().prefix("pyro-snapbench-").tempdir_in("/tmp").unwrap();
    let mut paths = Paths::from_env().unwrap();
    paths.home = work.path().join("home");
    let pyro = Pyro::with_paths(paths);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        pyro.pull_environment("debian:12").await.expect("debian:12 installs");
        let t = Instant::now();
        let w = pyro.create_workspace(CreateWorkspaceOptions::new("debian:12")).await.unwrap();
        let create_s = t.elapsed().as_secs_f64();
        let id = w.workspace_id.clone();
        let mem_bytes = u64::from(w.mem_mib) * 1024 * 1024;
        println!("workspace create (cold boot + empty seed): {create_s:.2} s");

        // Resume against start of the same workspace, interleaved.
        let (mut resumes, mut starts, mut idle_pauses, mut idle_bytes) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let p = pyro.pause_workspace(&id).await.unwrap();
            let info = p.workspace_pause.unwrap();
            idle_pauses.push(info.pause_ms as f64 / 1000.0);
            idle_bytes.push(info.state_bytes as f64);
            let t = Instant::now();
            pyro.resume_workspace(&id).await.unwrap();
            let resume_s = t.elapsed().as_secs_f64();
            let r = pyro.exec_workspace(&id, "true", 30, None).await.unwrap();
            assert_eq!(r.exit_code, 0);
            pyro.stop_workspace(&id).await.unwrap();
            let t = Instant::now();
            pyro.start_workspace(&id).await.unwrap();
            let start_s = t.elapsed().as_secs_f64();
            println!(
                "round {round}: idle pause {:.3} s ({:.1} MiB state), resume {resume_s:.3} s, start {start_s:.3} s",
                info.pause_ms as f64 / 1000.0,
                mib(info.state_bytes)
            );
            resumes.push(resume_s);
            starts.push(start_s);
        }
        let (resume_s, start_s) = (median(resumes), median(starts));
        let (idle_pause_s, idle_state) = (median(idle_pauses), median(idle_bytes));
        println!("resume (median): {resume_s:.3} s; workspace start (median): {start_s:.3} s");
        println!(
            "idle guest: pause {idle_pause_s:.3} s, state {:.1} MiB of {} MiB guest memory",
            idle_state / (1024.0 * 1024.0),
            w.mem_mib
        );

        // Fork of 4 from the running (idle) workspace.
        let t = Instant::now();
        let f = pyro.fork_workspace(&id, &ForkOptions { count: 4, names: vec![] }).await.unwrap();
        let fork_s = t.elapsed().as_secs_f64();
        println!("fork of 4 (running parent, memory restored): {fork_s:.2} s ({:.2} s per child)", fork_s / 4.0);
        for c in &f.workspaces {
            let r = pyro.exec_workspace(&c.workspace_id, "true", 30, None).await.unwrap();
            assert_eq!(r.exit_code, 0);
            pyro.delete_workspace(&c.workspace_id).await.unwrap();
        }

        // Touch 256 MiB of incompressible guest memory, then pause.
        let touch = format!("dd if=/dev/urandom of=/dev/shm/touched bs=1M count={TOUCH_MIB} status=none");
        let r = pyro.exec_workspace(&id, &touch, 300, None).await.unwrap();
        assert_eq!(r.exit_code, 0, "{}", r.stderr);
        let p = pyro.pause_workspace(&id).await.unwrap().workspace_pause.unwrap();
        let grown = p.state_bytes.saturating_sub(idle_state as u64);
        println!(
            "after touching {TOUCH_MIB} MiB: pause {:.3} s, state {:.1} MiB (+{:.1} MiB over idle)",
            p.pause_ms as f64 / 1000.0,
            mib(p.state_bytes),
            mib(grown)
        );
        pyro.resume_workspace(&id).await.unwrap();
        pyro.exec_workspace(&id, "rm -f /dev/shm/touched", 30, None).await.unwrap();

        pyro.delete_workspace(&id).await.unwrap();

        ratio("resume_vs_start", resume_s / start_s, "<=", 0.333);
        ratio("idle_state_vs_guest_memory", idle_state / mem_bytes as f64, "<=", 0.25);
        ratio("state_growth_vs_touched", grown as f64 / (TOUCH_MIB * 1024 * 1024) as f64, "<=", 1.25);
        ratio("fork4_vs_4_cold_starts", fork_s / (4.0 * start_s), "<=", 0.5);
    });
}
