//! Stop a workspace, inspect its disk without booting it, start it again.
//! `cargo run -p pyro --example stopped_disk` (needs scripts/build.sh and debian:12).

use pyro::workspace::CreateWorkspaceOptions;

#[tokio::main]
async fn main() -> pyro::Result<()> {
    let pyro = pyro::Pyro::from_env()?;
    let ws = pyro.create_workspace(CreateWorkspaceOptions::new("debian:12")).await?;
    let id = ws.workspace_id.clone();
    pyro.write_workspace_file(&id, "notes.md", "written before stop\n").await?;
    pyro.stop_workspace(&id).await?;

    // No VM runs now: these read the ext4 image directly.
    let listing = pyro.list_workspace_disk(&id, "/workspace", true).await?;
    for e in &listing.entries {
        println!("{} [{}] {} bytes", e.path, e.artifact_type, e.size_bytes);
    }
    let note = pyro.read_workspace_disk(&id, "notes.md", 4096).await?;
    print!("notes.md: {}", note.content);

    pyro.start_workspace(&id).await?;
    let r = pyro.exec_workspace(&id, "cat notes.md", 30, None).await?;
    print!("after start: {}", r.stdout);
    pyro.delete_workspace(&id).await?;
    Ok(())
}
