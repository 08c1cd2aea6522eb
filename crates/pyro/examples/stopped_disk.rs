//! Stop a workspace, inspect its disk without booting it, start it again: stop -> list and
//! read the stopped disk -> start -> exec -> delete (also when a step fails).
//!
//! `cargo run -p pyro --example stopped_disk` (needs `scripts/build.sh` and `debian:12`).

use pyro::workspace::CreateWorkspaceOptions;
use pyro::Pyro;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stopped_disk failed [{}]: {e}", e.code());
            ExitCode::FAILURE
        }
    }
}

async fn run() -> pyro::Result<()> {
    let pyro = Pyro::from_env()?;
    let ws = pyro.create_workspace(CreateWorkspaceOptions::new("debian:12")).await?;
    let id = ws.workspace_id.clone();
    println!("created workspace {id}");

    // Whatever happens in between, the workspace is deleted afterwards.
    let outcome = stop_inspect_start(&pyro, &id).await;
    let deleted = pyro.delete_workspace(&id).await;
    if let Ok(d) = &deleted {
        println!("deleted workspace {}: {}", d.workspace_id, d.deleted);
    }
    outcome?;
    deleted.map(|_| ())
}

async fn stop_inspect_start(pyro: &Pyro, id: &str) -> pyro::Result<()> {
    pyro.write_workspace_file(id, "notes.md", "written before stop\n").await?;
    let stopped = pyro.stop_workspace(id).await?;
    println!("stopped: state {}", stopped.state);

    // No VM runs now: these read the workspace's ext4 image directly.
    let listing = pyro.list_workspace_disk(id, "/workspace", true).await?;
    println!("disk listing of {} ({} entries):", listing.path, listing.entries.len());
    for e in &listing.entries {
        println!("  {} [{}] {} bytes", e.path, e.artifact_type, e.size_bytes);
    }
    let note = pyro.read_workspace_disk(id, "notes.md", 4096).await?;
    print!("disk read {} ({} bytes): {}", note.path, note.size_bytes, note.content);

    // Start boots the same disk again: /workspace is as it was.
    let started = pyro.start_workspace(id).await?;
    println!("started: state {}", started.state);
    let r = pyro.exec_workspace(id, "cat notes.md", 30, None).await?;
    print!("after start, `cat notes.md` -> exit {}: {}", r.exit_code, r.stdout);
    if r.exit_code != 0 {
        return Err(pyro::Error::InvalidState(format!("cat failed: {}", r.stderr)));
    }
    Ok(())
}
