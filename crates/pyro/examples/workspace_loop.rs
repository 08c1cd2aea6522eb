//! The agent loop on a persistent workspace: create it, then edit a file and run the test
//! until it passes, look at what changed against the create-time baseline, and delete the
//! workspace (also when a step fails).
//!
//! `cargo run -p pyro --example workspace_loop` (needs `scripts/build.sh` and `debian:12`).

use pyro::workspace::CreateWorkspaceOptions;
use pyro::Pyro;
use std::process::ExitCode;

/// The test the "agent" has to make pass.
const TEST: &str = r#"out=$(sh greet.sh world)
[ "$out" = "hello, world" ] && echo "PASS" || { echo "FAIL: got '$out'"; exit 1; }
"#;

/// Successive attempts at `greet.sh`, as an agent might write them.
const ATTEMPTS: &[&str] = &["echo hello\n", "echo \"hello $1\"\n", "echo \"hello, $1\"\n"];

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workspace_loop failed [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

async fn run() -> pyro::Result<()> {
    let pyro = Pyro::from_env()?;
    let mut opts = CreateWorkspaceOptions::new("debian:12");
    opts.name = Some("workspace-loop-example".into());
    let ws = pyro.create_workspace(opts).await?;
    let id = ws.workspace_id.clone();
    println!("created workspace {id} ({}, backend {})", ws.state, ws.backend);

    // Whatever happens in the loop, the workspace is deleted afterwards.
    let outcome = edit_run_loop(&pyro, &id).await;
    let deleted = pyro.delete_workspace(&id).await;
    if let Ok(d) = &deleted {
        println!("deleted workspace {}: {}", d.workspace_id, d.deleted);
    }
    outcome?;
    deleted.map(|_| ())
}

async fn edit_run_loop(pyro: &Pyro, id: &str) -> pyro::Result<()> {
    // Relative paths are taken under /workspace.
    pyro.write_workspace_file(id, "test.sh", TEST).await?;

    let mut passed = false;
    for (step, attempt) in ATTEMPTS.iter().enumerate() {
        let w = pyro.write_workspace_file(id, "greet.sh", attempt).await?;
        println!("step {}: wrote {} ({} bytes)", step + 1, w.path, w.bytes_written);
        // Commands run in /workspace under `/bin/sh -lc`; each one is kept in the history.
        let r = pyro.exec_workspace(id, "sh test.sh", 30, None).await?;
        print!("step {}: `sh test.sh` -> exit {}: {}", step + 1, r.exit_code, r.stdout);
        if r.exit_code == 0 {
            passed = true;
            break;
        }
    }
    if !passed {
        return Err(pyro::Error::InvalidState("no attempt made the test pass".into()));
    }

    // What the loop changed in /workspace, against the (empty) create-time baseline.
    let diff = pyro.diff_workspace(id).await?;
    let s = &diff.diff.summary;
    println!("diff: {} changed ({} added, {} modified, {} deleted)", s.total, s.added, s.modified, s.deleted);
    for e in &diff.diff.entries {
        println!("  {} {} ({})", e.status, e.path, e.artifact_type);
    }
    print!("{}", diff.diff.patch);

    let logs = pyro.logs_workspace(id).await?;
    println!("history: {} commands", logs.count);
    Ok(())
}
