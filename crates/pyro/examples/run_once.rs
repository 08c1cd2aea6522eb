//! One command in a fresh, disposable VM: boot `debian:12`, run `git --version`, and the VM
//! is gone again (deleted by `run_in_vm` itself, on success and on error).
//!
//! `cargo run -p pyro --example run_once` (needs `scripts/build.sh`; the environment is
//! installed on first use, or use `pyro env pull debian:12` beforehand).

use pyro::{CreateVmOptions, Pyro};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("run_once failed [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

async fn run() -> pyro::Result<ExitCode> {
    // `$PYRO_HOME` / `$PYRO_CACHE_DIR` (or their defaults) decide where state and caches live.
    let pyro = Pyro::from_env()?;

    // Defaults: 1 vCPU, 1024 MiB, no network. 30 s is the command timeout.
    println!("running `git --version` in a fresh debian:12 VM ...");
    let run = pyro.run_in_vm(CreateVmOptions::new("debian:12"), "git --version", 30).await?;

    print!("stdout: {}", run.stdout);
    println!("exit code {} in {} ms (backend {}, {})", run.exit_code, run.duration_ms, run.backend, run.execution_mode);
    // The VM was deleted right after the command; `cleanup` says so.
    println!("vm {} deleted: {} ({})", run.cleanup.vm_id, run.cleanup.deleted, run.cleanup.reason);

    // A failing command is a result, not an error: turn it into this program's exit status.
    Ok(if run.exit_code == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
