//! Workspace benchmark (`cargo bench -p pyro --bench workspace_path`).
//!
//! Prints, in one run on one machine:
//! - workspace create time, seeded with a 50 MiB repository (boot + seed import + baseline);
//! - exec round trip (`true`) on a running workspace;
//! - sync push and export throughput for that 50 MiB tree, against the raw agent channel's
//!   throughput (`Echo` of the same number of bytes in 4 MiB frames) measured in the same run.
//!
//! Needs: scripts/build.sh release, an installed debian:12.

use pyro::workspace::CreateWorkspaceOptions;
use pyro::{Paths, Pyro};
use pyro_protocol::{Request, Response};
use pyro_vmm::{Machine, VmDir};
use std::path::Path;
use std::time::Instant;

const REPO_BYTES: usize = 50 * 1024 * 1024;

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

        for _ in 0..5 {
            pyro.exec_workspace(&id, "true", 30, None).await.unwrap();
        }
        let mut rtt = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            pyro.exec_workspace(&id, "true", 30, None).await.unwrap();
            rtt.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("workspace exec `true` round trip: {:.1} ms median of 50 (history recorded)", median(rtt));

        // The workspace's VM directory (`<workspace>/runtime`), attached from outside the engine.
        let vm = Machine::attach(VmDir::new(paths.workspaces_dir().join(&id).join("runtime")));
        // Raw channel: echo the same number of bytes in 4 MiB frames.
        let chunk = vec![0xa5u8; 4 * 1024 * 1024];
        let t = Instant::now();
        let mut moved = 0;
        while moved < REPO_BYTES {
            match vm.call(Request::Echo { data: chunk.clone() }, None).await.unwrap() {
                Response::Echo { data } => assert_eq!(data.len(), chunk.len()),
                other => panic!("unexpected {other:?}"),
            }
            moved += chunk.len();
        }
        let echo_s = t.elapsed().as_secs_f64();
        // Each echo carries the bytes both ways; one-way throughput is twice the payload rate.
        let raw_one_way = mib_s(2 * moved, echo_s);
        println!("raw channel (Echo, 4 MiB frames): {raw_one_way:.0} MiB/s one-way");

        let t = Instant::now();
        let s = pyro.push_workspace_sync(&id, &repo, "/workspace/again").await.unwrap();
        let push_s = t.elapsed().as_secs_f64();
        let push = mib_s(s.workspace_sync.bytes_written as usize, push_s);
        println!(
            "sync push {} MiB: {:.2} s = {push:.0} MiB/s ({:.0}% of raw)",
            s.workspace_sync.bytes_written / (1024 * 1024),
            push_s,
            100.0 * push / raw_one_way
        );

        let out = work.path().join("export");
        let t = Instant::now();
        let x = pyro.export_workspace(&id, "/workspace/again", &out).await.unwrap();
        let export_s = t.elapsed().as_secs_f64();
        let export = mib_s(x.bytes_written as usize, export_s);
        println!(
            "export {} MiB: {:.2} s = {export:.0} MiB/s ({:.0}% of raw)",
            x.bytes_written / (1024 * 1024),
            export_s,
            100.0 * export / raw_one_way
        );
        pyro.delete_workspace(&id).await.unwrap();
    });
}
