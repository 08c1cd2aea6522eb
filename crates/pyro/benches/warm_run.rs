//! Warm run benchmark (`cargo bench -p pyro --bench warm_run`).
//!
//! Prints, measured in the same run on the same machine: warm `pyro run debian:12 -- true`
//! (restored from the environment's template) against cold (`PYRO_WARM_RUN=off`: a full
//! boot), both the real CLI process from start to VM deletion, interleaved, median of
//! [`RUNS`] each: ratio warm/cold, target <= 1/3 (under TCG). Also the template's build time
//! and its memory state size against the guest's memory.
//!
//! The template lives in a private cache dir whose `environments` and `probe` are the shared
//! cache's, so the bench neither uses nor disturbs the shared cache's templates.
//!
//! Needs: scripts/build.sh release (pyro, pyro-supervisor, pyro-agent side by side) and an
//! installed debian:12 (`PYRO_CACHE_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn release_dir() -> PathBuf {
    // target/release/deps/warm_run-<hash> → target/release
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// One `pyro run debian:12 -- true`; its wall time and the payload's start metadata.
fn run(pyro: &Path, home: &Path, cache: &Path, warm: bool) -> (f64, String, String) {
    let mut c = Command::new(pyro);
    c.args(["run", "debian:12", "--json", "--", "true"]).env("PYRO_HOME", home).env("PYRO_CACHE_DIR", cache);
    if warm {
        c.env_remove("PYRO_WARM_RUN");
    } else {
        c.env("PYRO_WARM_RUN", "off");
    }
    let t = Instant::now();
    let o = c.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let field = |k: &str| v["metadata"][k].as_str().unwrap_or("").to_string();
    (secs, field("start_mode"), field("start_reason"))
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let pyro = release_dir().join("pyro");
    assert!(pyro.is_file(), "build first: scripts/build.sh release ({} missing)", pyro.display());
    let shared = std::env::var_os("PYRO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pyro")))
        .expect("PYRO_CACHE_DIR or HOME");
    let work = tempfile::Builder::new().prefix("pyro-bench-").tempdir_in("/tmp").unwrap();
    let (home, cache) = (work.path().join("home"), work.path().join("cache"));
    std::fs::create_dir_all(&cache).unwrap();
    for d in ["environments", "probe"] {
        std::os::unix::fs::symlink(shared.join(d), cache.join(d)).unwrap();
    }

    // The first warm run builds the template (boot + save), then restores it.
    let (first, mode, reason) = run(&pyro, &home, &cache, true);
    assert_eq!(mode, "warm", "the first run builds the template and restores it: {reason}");
    println!("first run (builds the template, then restores it): {first:.3} s");
    let template = std::fs::read_dir(cache.join("templates"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .expect("a template")
        .path();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(template.join("template.json")).unwrap()).unwrap();
    let state_bytes = record["state_bytes"].as_u64().unwrap_or(0);
    let mem_mib = record["mem_mib"].as_u64().unwrap_or(0);
    println!(
        "template: built in {} ms, memory state {:.1} MiB for a {mem_mib} MiB guest ({:.1}%), disk overlay {:.1} MiB",
        record["build_ms"],
        state_bytes as f64 / 1048576.0,
        100.0 * state_bytes as f64 / (mem_mib.max(1) * 1048576) as f64,
        std::fs::metadata(template.join("rootfs.qcow2")).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
    );

    let mut warm = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..RUNS {
        let (s, mode, reason) = run(&pyro, &home, &cache, true);
        assert_eq!(mode, "warm", "{reason}");
        warm.push(s);
        let (s, mode, _) = run(&pyro, &home, &cache, false);
        assert_eq!(mode, "cold");
        cold.push(s);
    }
    let (w, c) = (median(warm), median(cold));
    println!("warm `pyro run debian:12 -- true`: {w:.3} s median of {RUNS}");
    println!("cold `pyro run debian:12 -- true`: {c:.3} s median of {RUNS}");
    println!("ratio warm/cold: {:.2} (target <= 0.33)", w / c);
    println!("RATIO warm_run_vs_cold_run {:.3} <= 0.333", w / c);
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(work.path()).status();
}
