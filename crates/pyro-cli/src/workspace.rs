//! `pyro workspace ...`: argument parsing and rendering only; every operation is one SDK call.

use crate::output::{print_json, Mode};
use clap::{Args, Subcommand};
use pyro::workspace::{CreateWorkspaceOptions, UpdateWorkspaceOptions, WorkspaceInfo};
use pyro::Pyro;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create and start a workspace, optionally seeded from a host directory or tar archive.
    Create(CreateArgs),
    /// List workspaces, most recently active first.
    List(JsonOnly),
    /// Change a workspace's name, labels or expiry.
    Update(UpdateArgs),
    /// Show a workspace.
    Status(IdArgs),
    /// Show the command history with outputs.
    Logs(IdArgs),
    /// Delete a workspace and everything it has on the host.
    Delete(IdArgs),
    /// Run a command in /workspace.
    Exec(ExecArgs),
    /// Push a host directory or archive into the workspace.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// List, read and write files in the workspace.
    #[command(subcommand)]
    File(FileCommand),
    /// Apply a unified diff (git diff output works) to /workspace.
    #[command(subcommand)]
    Patch(PatchCommand),
    /// Compare /workspace with the create-time baseline.
    Diff(IdArgs),
    /// Review a workspace in one screen: since its creation or last reset, the commands
    /// (exit codes, durations), the diff stat, and the syncs, writes, patches, exports,
    /// services and snapshots.
    Summary(IdArgs),
    /// Copy a file, directory or symlink out of the workspace to a new host path.
    Export(ExportArgs),
    /// Named snapshots of /workspace.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Rebuild the workspace and restore /workspace from a snapshot (default: baseline).
    Reset(ResetArgs),
    /// Stop the workspace's VM (clean guest shutdown); the disk is kept.
    Stop(IdArgs),
    /// Start a stopped workspace from the same disk (a paused one is resumed).
    Start(IdArgs),
    /// Pause a running workspace: save its guest's memory and end its VM (processes kept).
    Pause(IdArgs),
    /// Resume a paused workspace where it was paused.
    Resume(IdArgs),
    /// Make new workspaces from this one: copy-on-write disks, and from a running or paused
    /// workspace its memory too (processes, shells, services).
    Fork(ForkArgs),
    /// Inspect a STOPPED workspace's disk without booting it (secondary to the live tools).
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Interactive PTY shells in a started workspace.
    #[command(subcommand)]
    Shell(crate::sessions::ShellCommand),
    /// Named background services with readiness checks and published ports.
    #[command(subcommand)]
    Service(crate::sessions::ServiceCommand),
    /// Background commands started with `exec --background`: status, read, wait, kill.
    #[command(subcommand)]
    Command(crate::commands::CommandCommand),
}

#[derive(Subcommand)]
pub enum DiskCommand {
    /// List files on the stopped workspace's disk (default /workspace; absolute paths anywhere).
    List(DiskListArgs),
    /// Read a file from the stopped workspace's disk.
    Read(DiskReadArgs),
    /// Export the stopped workspace's raw ext4 image (sparse; refuses to overwrite).
    Export(DiskExportArgs),
}

#[derive(Args)]
pub struct DiskListArgs {
    workspace_id: String,
    #[arg(default_value = pyro::workspace::WORKSPACE_PATH)]
    path: String,
    #[arg(long)]
    recursive: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DiskReadArgs {
    workspace_id: String,
    path: String,
    #[arg(long, default_value_t = pyro::defaults::READ_MAX_BYTES)]
    max_bytes: u64,
    #[arg(long, conflicts_with = "json")]
    content_only: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DiskExportArgs {
    workspace_id: String,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct JsonOnly {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IdArgs {
    workspace_id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    environment: String,
    #[arg(long, default_value_t = pyro::defaults::VCPU_COUNT)]
    vcpu_count: u32,
    #[arg(long, default_value_t = pyro::defaults::MEM_MIB)]
    mem_mib: u32,
    #[arg(long, default_value_t = pyro::defaults::TTL_SECONDS)]
    ttl_seconds: u64,
    #[arg(long, default_value = pyro::defaults::NETWORK_POLICY)]
    network_policy: String,
    #[arg(long)]
    allow_host_compat: bool,
    /// Host directory or .tar/.tar.gz/.tgz archive to seed /workspace from, copied as it is
    /// (a Git checkout too: its .git, ignored and untracked files included).
    #[arg(long, conflicts_with = "project_path")]
    seed_path: Option<PathBuf>,
    /// Seed /workspace from this project directory by the rules of `pyro mcp serve`'s
    /// project: a Git checkout gives the files Git tracks (origin_kind git_checkout, origin_ref
    /// its HEAD); another directory is copied whole.
    #[arg(long, value_name = "DIR")]
    project_path: Option<PathBuf>,
    /// With --project-path: also seed untracked files that Git does not ignore.
    #[arg(long, requires = "project_path")]
    project_include_untracked: bool,
    #[arg(long)]
    name: Option<String>,
    /// KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// NAME=VALUE (repeatable): a secret for `--secret-env`, kept out of every output.
    #[arg(long = "secret", value_name = "NAME=VALUE", allow_hyphen_values = true)]
    secrets: Vec<String>,
    /// NAME=PATH (repeatable): a secret read from a host file (UTF-8, at most 64 KiB).
    #[arg(long = "secret-file", value_name = "NAME=PATH")]
    secret_files: Vec<String>,
    /// Pause the workspace after N seconds without a call (0: never, the default); the next
    /// call resumes it.
    #[arg(long, value_name = "N")]
    idle_pause_seconds: Option<u64>,
    #[arg(long, conflicts_with = "id_only")]
    json: bool,
    /// Print only the new workspace id.
    #[arg(long)]
    id_only: bool,
}

#[derive(Args)]
pub struct ForkArgs {
    workspace_id: String,
    /// How many workspaces to make (1-8).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Name of a new workspace (repeatable, in order; at most --count).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UpdateArgs {
    workspace_id: String,
    #[arg(long, conflicts_with = "clear_name")]
    name: Option<String>,
    #[arg(long)]
    clear_name: bool,
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[arg(long = "clear-label", value_name = "KEY")]
    clear_labels: Vec<String>,
    /// Expire this many seconds from now (60-3600).
    #[arg(long)]
    ttl_seconds: Option<u64>,
    /// Pause after N seconds without a call (0 turns it off); a running workspace applies it
    /// at once, counting from now.
    #[arg(long, value_name = "N")]
    idle_pause_seconds: Option<u64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    workspace_id: String,
    /// Kill the command after this many seconds (exit code 124); default 30, or 3600 with
    /// --background.
    #[arg(long)]
    timeout_seconds: Option<u64>,
    /// Start the command and print its id at once; it runs on after this process exits.
    /// Follow it with `pyro workspace command status|read|wait|kill WORKSPACE_ID COMMAND_ID`.
    #[arg(long, conflicts_with = "sync")]
    background: bool,
    /// SECRET[=ENV_VAR] (repeatable): expose a workspace secret to this command.
    #[arg(long = "secret-env", value_name = "SECRET[=ENV_VAR]")]
    secret_env: Vec<String>,
    /// Flush the guest's filesystems after the command, before answering: what it wrote
    /// survives even a VM crash right after. Without it, writes reach the disk within ~30 s
    /// or at `workspace stop`.
    #[arg(long)]
    sync: bool,
    #[arg(long)]
    json: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARG")]
    command: Vec<String>,
}

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Push SOURCE_PATH (directory or archive) into the workspace.
    Push(SyncPushArgs),
}

#[derive(Args)]
pub struct SyncPushArgs {
    workspace_id: String,
    source_path: PathBuf,
    #[arg(long, default_value = pyro::workspace::WORKSPACE_PATH)]
    dest: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum FileCommand {
    List(FileListArgs),
    Read(FileReadArgs),
    Write(FileWriteArgs),
}

#[derive(Args)]
pub struct FileListArgs {
    workspace_id: String,
    #[arg(default_value = pyro::workspace::WORKSPACE_PATH)]
    path: String,
    #[arg(long)]
    recursive: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct FileReadArgs {
    workspace_id: String,
    path: String,
    #[arg(long, default_value_t = pyro::defaults::READ_MAX_BYTES)]
    max_bytes: u64,
    #[arg(long, conflicts_with = "json")]
    content_only: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct FileWriteArgs {
    workspace_id: String,
    path: String,
    #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file", allow_hyphen_values = true)]
    text: Option<String>,
    #[arg(long)]
    text_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum PatchCommand {
    Apply(PatchApplyArgs),
}

#[derive(Args)]
pub struct PatchApplyArgs {
    workspace_id: String,
    #[arg(long, conflicts_with = "patch_file", required_unless_present = "patch_file", allow_hyphen_values = true)]
    patch: Option<String>,
    #[arg(long)]
    patch_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    workspace_id: String,
    path: String,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    Create(SnapshotNameArgs),
    List(IdArgs),
    Delete(SnapshotNameArgs),
}

#[derive(Args)]
pub struct SnapshotNameArgs {
    workspace_id: String,
    snapshot_name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ResetArgs {
    workspace_id: String,
    #[arg(long, default_value = pyro::defaults::RESET_SNAPSHOT)]
    snapshot: String,
    #[arg(long)]
    json: bool,
}

impl WorkspaceCommand {
    pub fn mode(&self) -> Mode {
        use WorkspaceCommand::*;
        Mode::from_json(match self {
            Create(a) => a.json,
            List(a) => a.json,
            Update(a) => a.json,
            Status(a) | Logs(a) | Delete(a) | Diff(a) | Summary(a) | Stop(a) | Start(a) | Pause(a) | Resume(a) => {
                a.json
            }
            Fork(a) => a.json,
            Exec(a) => a.json,
            Sync(SyncCommand::Push(a)) => a.json,
            File(FileCommand::List(a)) => a.json,
            File(FileCommand::Read(a)) => a.json,
            File(FileCommand::Write(a)) => a.json,
            Patch(PatchCommand::Apply(a)) => a.json,
            Export(a) => a.json,
            Snapshot(SnapshotCommand::Create(a)) | Snapshot(SnapshotCommand::Delete(a)) => a.json,
            Snapshot(SnapshotCommand::List(a)) => a.json,
            Reset(a) => a.json,
            Disk(DiskCommand::List(a)) => a.json,
            Disk(DiskCommand::Read(a)) => a.json,
            Disk(DiskCommand::Export(a)) => a.json,
            Shell(c) => c.json(),
            Service(c) => c.json(),
            Command(c) => c.json(),
        })
    }
}

/// `KEY=VALUE` → (KEY, VALUE), both non-empty after trimming; later duplicates win.
pub fn parse_labels(items: &[String]) -> pyro::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| pyro::Error::InvalidInput(format!("label must be KEY=VALUE (got '{item}')")))?;
        if k.trim().is_empty() || v.trim().is_empty() {
            return Err(pyro::Error::InvalidInput(format!(
                "label must be KEY=VALUE with both sides non-empty (got '{item}')"
            )));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `--secret NAME=VALUE` (value kept as given) then `--secret-file NAME=PATH`.
fn parse_secrets(literal: &[String], files: &[String]) -> pyro::Result<Vec<pyro::workspace::secrets::SecretSpec>> {
    use pyro::workspace::secrets::SecretSpec;
    let mut out = Vec::new();
    for item in literal {
        let (name, value) =
            item.split_once('=').ok_or_else(|| pyro::Error::InvalidInput("--secret must be NAME=VALUE".into()))?;
        out.push(SecretSpec { name: name.trim().to_string(), value: Some(value.to_string()), file_path: None });
    }
    for item in files {
        let (name, path) =
            item.split_once('=').ok_or_else(|| pyro::Error::InvalidInput("--secret-file must be NAME=PATH".into()))?;
        if path.trim().is_empty() {
            return Err(pyro::Error::InvalidInput("--secret-file must be NAME=PATH with a non-empty path".into()));
        }
        out.push(SecretSpec {
            name: name.trim().to_string(),
            value: None,
            file_path: Some(PathBuf::from(path.trim())),
        });
    }
    Ok(out)
}

/// `--secret-env SECRET[=ENV]` → {SECRET: ENV}; ENV defaults to the secret's name and a
/// secret may be mapped once.
pub fn parse_secret_env(items: &[String]) -> pyro::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (secret, var) = match item.split_once('=') {
            Some((s, v)) => (s.trim(), v.trim()),
            None => (item.trim(), item.trim()),
        };
        if out.insert(secret.to_string(), var.to_string()).is_some() {
            return Err(pyro::Error::InvalidInput(format!(
                "secret '{secret}' is mapped more than once in --secret-env"
            )));
        }
    }
    Ok(out)
}

fn read_host_text(path: &PathBuf, what: &str) -> pyro::Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|_| pyro::Error::InvalidInput(format!("{what} {} does not exist", path.display())))?;
    if meta.is_dir() {
        return Err(pyro::Error::InvalidInput(format!("{what} {} is a directory", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|e| pyro::Error::io(format!("reading {}", path.display()), e))?;
    String::from_utf8(bytes)
        .map_err(|_| pyro::Error::InvalidInput(format!("{what} {} is not UTF-8 text", path.display())))
}

fn summary(action: &str, w: &WorkspaceInfo) {
    println!("{action} ID: {}", w.workspace_id);
    if let Some(n) = &w.name {
        println!("Name: {n}");
    }
    if !w.labels.is_empty() {
        let l: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("Labels: {}", l.join(", "));
    }
    println!("Environment: {}", w.environment);
    println!("State: {}", w.state);
    println!("Workspace: {}", w.workspace_path);
    println!("Last activity at: {}", w.last_activity_at);
    println!("Expires at: {}", w.expires_at);
    println!("Network policy: {}", w.network_policy);
    let seed = &w.workspace_seed;
    match &seed.seed_path {
        Some(p) => println!("Workspace seed: {} from {p}", seed.mode),
        None => println!("Workspace seed: {}", seed.mode),
    }
    if seed.origin_kind == "git_checkout" || seed.origin_kind == "repo_url" {
        let at = seed.origin_ref.as_deref().unwrap_or("(no commit yet)");
        println!("Seed origin: {} at {at}", seed.origin_kind);
    }
    if seed.skipped_count > 0 {
        println!("Seed skipped: {} path(s)", seed.skipped_count);
        for s in seed.skipped.iter().take(5) {
            println!("  {}: {}", s.path, s.reason);
        }
        if seed.skipped_count > 5 {
            println!("  ... and {} more (--json lists up to 100)", seed.skipped_count - 5);
        }
    }
    if !w.secrets.is_empty() {
        let list: Vec<String> = w.secrets.iter().map(|s| format!("{} ({})", s.name, s.source_kind)).collect();
        println!("Secrets: {}", list.join(", "));
    }
    println!("Execution mode: {}", w.execution_mode);
    println!("Backend: {}", w.backend);
    println!("Resources: {} vCPU / {} MiB", w.vcpu_count, w.mem_mib);
    if let Some(s) = w.idle_pause_seconds {
        println!("Idle pause: after {s} s without a call");
    }
    if w.disk_format != "raw" {
        println!("Disk: {} (copy-on-write overlay)", w.disk_format);
    }
    println!("Command count: {}", w.command_count);
    println!("Reset count: {}", w.reset_count);
    if let Some(t) = w.last_reset_at {
        println!("Last reset at: {t}");
    }
    println!("Services: {}/{} running", w.running_service_count, w.service_count);
    if let Some(c) = &w.last_command {
        println!("Last command: {} (exit_code={})", c.command, c.exit_code);
    }
    if let Some(e) = &w.last_error {
        println!("Last error: {e}");
    }
}

/// How a paused workspace was brought back, when the call did that.
fn resume_line(w: &WorkspaceInfo) {
    if let Some(r) = &w.workspace_resume {
        println!("Resumed from pause: resume_ms={} state_bytes={}", r.resume_ms, r.state_bytes);
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Run one workspace command; returns the process exit code.
pub async fn run(pyro: &Pyro, cmd: WorkspaceCommand) -> pyro::Result<u8> {
    let mode = cmd.mode();
    let json = mode == Mode::Json;
    match cmd {
        WorkspaceCommand::Create(a) => {
            let labels = parse_labels(&a.labels)?;
            let secrets = parse_secrets(&a.secrets, &a.secret_files)?;
            let opts = CreateWorkspaceOptions {
                environment: a.environment,
                vcpu_count: a.vcpu_count,
                mem_mib: a.mem_mib,
                ttl_seconds: a.ttl_seconds,
                network_policy: a.network_policy,
                allow_host_compat: a.allow_host_compat,
                seed_path: a.seed_path,
                project: a
                    .project_path
                    .as_deref()
                    .map(|dir| pyro::project::Project::from_path(dir, a.project_include_untracked))
                    .transpose()?,
                name: a.name,
                labels,
                secrets,
                idle_pause_seconds: a.idle_pause_seconds,
            };
            let w = pyro.create_workspace(opts).await?;
            if a.id_only {
                println!("{}", w.workspace_id);
            } else if json {
                print_json(&w);
            } else {
                summary("Workspace", &w);
            }
        }
        WorkspaceCommand::List(_) => {
            let l = pyro.list_workspaces().await?;
            if json {
                print_json(&l);
            } else if l.workspaces.is_empty() {
                println!("No workspaces.");
            } else {
                for w in &l.workspaces {
                    let name = w.name.as_ref().map(|n| format!(" name='{n}'")).unwrap_or_default();
                    let labels = if w.labels.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " labels={}",
                            w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
                        )
                    };
                    println!(
                        "[workspace] workspace_id={}{name} state={} environment={}{labels} last_activity_at={} expires_at={} commands={} services={}/{}",
                        w.workspace_id, w.state, w.environment, w.last_activity_at, w.expires_at, w.command_count, w.running_service_count, w.service_count
                    );
                }
            }
        }
        WorkspaceCommand::Update(a) => {
            let opts = UpdateWorkspaceOptions {
                name: a.name,
                clear_name: a.clear_name,
                labels: parse_labels(&a.labels)?,
                clear_labels: a.clear_labels,
                ttl_seconds: a.ttl_seconds,
                idle_pause_seconds: a.idle_pause_seconds,
            };
            let w = pyro.update_workspace(&a.workspace_id, opts).await?;
            if json {
                print_json(&w)
            } else {
                summary("Updated workspace", &w)
            }
        }
        WorkspaceCommand::Status(a) => {
            let w = pyro.status_workspace(&a.workspace_id).await?;
            if json {
                print_json(&w)
            } else {
                summary("Workspace", &w)
            }
        }
        WorkspaceCommand::Logs(a) => {
            let l = pyro.logs_workspace(&a.workspace_id).await?;
            if json {
                print_json(&l);
            } else if l.entries.is_empty() {
                println!("No workspace logs found.");
            } else {
                for e in &l.entries {
                    println!("#{} exit_code={} duration_ms={} cwd={}", e.sequence, e.exit_code, e.duration_ms, e.cwd);
                    println!("$ {}", e.command);
                    print!("{}", with_newline(&e.stdout));
                    eprint!("{}", with_newline(&e.stderr));
                }
            }
        }
        WorkspaceCommand::Delete(a) => {
            let r = pyro.delete_workspace(&a.workspace_id).await?;
            if json {
                print_json(&r)
            } else {
                println!("Deleted workspace: {}", r.workspace_id)
            }
        }
        WorkspaceCommand::Exec(a) => {
            let command = crate::join_command(&a.command)?;
            let secret_env = parse_secret_env(&a.secret_env)?;
            let default_timeout =
                if a.background { pyro::defaults::BACKGROUND_TIMEOUT_SECONDS } else { pyro::defaults::TIMEOUT_SECONDS };
            let opts = pyro::workspace::WorkspaceExecOptions {
                timeout_seconds: a.timeout_seconds.unwrap_or(default_timeout),
                secret_env: (!secret_env.is_empty()).then_some(secret_env),
                sync: a.sync,
            };
            if a.background {
                return crate::commands::start(pyro, &a.workspace_id, &command, &opts, json).await;
            }
            let r = pyro.exec_workspace_with(&a.workspace_id, &command, &opts).await?;
            if json {
                print_json(&r);
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(r.stdout.as_bytes());
                let _ = out.flush();
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(r.stderr.as_bytes());
                let _ = writeln!(
                    err,
                    "[workspace-exec] workspace_id={} sequence={} cwd={} execution_mode={} exit_code={} duration_ms={}{}",
                    r.workspace_id,
                    r.sequence,
                    r.cwd,
                    r.execution_mode,
                    r.exit_code,
                    r.duration_ms,
                    if r.resumed_from_pause { " resumed_from_pause=yes" } else { "" }
                );
            }
            return Ok(crate::exit_code_byte(r.exit_code));
        }
        WorkspaceCommand::Sync(SyncCommand::Push(a)) => {
            let r = pyro.push_workspace_sync(&a.workspace_id, &a.source_path, &a.dest).await?;
            if json {
                print_json(&r);
            } else {
                let s = &r.workspace_sync;
                println!(
                    "[workspace-sync] workspace_id={} mode={} source={} destination={} entry_count={} bytes_written={} execution_mode={}",
                    r.workspace_id, s.mode, s.source_path, s.destination, s.entry_count, s.bytes_written, r.execution_mode
                );
            }
        }
        WorkspaceCommand::File(FileCommand::List(a)) => {
            let r = pyro.list_workspace_files(&a.workspace_id, &a.path, a.recursive).await?;
            if json {
                print_json(&r);
            } else {
                println!("Workspace path: {} (recursive={})", r.path, yes_no(r.recursive));
                let rows = r.entries.iter().map(|e| (&e.path, &e.artifact_type, e.size_bytes, &e.link_target));
                print_entries(rows, "No workspace entries found.");
            }
        }
        WorkspaceCommand::File(FileCommand::Read(a)) => {
            let r = pyro.read_workspace_file(&a.workspace_id, &a.path, a.max_bytes).await?;
            if json {
                print_json(&r);
            } else {
                let footer = read_footer("workspace-file-read", &r.workspace_id, &r.path, r.size_bytes, r.truncated);
                print_content(&r.content, a.content_only, &footer);
            }
        }
        WorkspaceCommand::File(FileCommand::Write(a)) => {
            let text = match (&a.text, &a.text_file) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => read_host_text(p, "text_file")?,
                (None, None) => unreachable!("clap requires one"),
            };
            let r = pyro.write_workspace_file(&a.workspace_id, &a.path, &text).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "[workspace-file-write] workspace_id={} path={} bytes_written={} execution_mode={}",
                    r.workspace_id, r.path, r.bytes_written, r.execution_mode
                );
            }
        }
        WorkspaceCommand::Patch(PatchCommand::Apply(a)) => {
            let patch = match (&a.patch, &a.patch_file) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => read_host_text(p, "patch_file")?,
                (None, None) => unreachable!("clap requires one"),
            };
            let r = pyro.apply_workspace_patch(&a.workspace_id, &patch).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "[workspace-patch] workspace_id={} total={} added={} modified={} deleted={} execution_mode={}",
                    r.workspace_id,
                    r.summary.total,
                    r.summary.added,
                    r.summary.modified,
                    r.summary.deleted,
                    r.execution_mode
                );
            }
        }
        WorkspaceCommand::Diff(a) => {
            let r = pyro.diff_workspace(&a.workspace_id).await?;
            if json {
                print_json(&r);
            } else if !r.diff.changed {
                println!("No workspace changes.");
            } else {
                let s = &r.diff.summary;
                println!(
                    "[workspace-diff] workspace_id={} total={} added={} modified={} deleted={} type_changed={} text_patched={} non_text={}",
                    r.workspace_id, s.total, s.added, s.modified, s.deleted, s.type_changed, s.text_patched, s.non_text
                );
                print!("{}", r.diff.patch);
            }
        }
        WorkspaceCommand::Summary(a) => {
            let r = pyro.summary_workspace(&a.workspace_id).await?;
            if json {
                print_json(&r);
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                for line in crate::summary::render(&r, now) {
                    println!("{line}");
                }
            }
        }
        WorkspaceCommand::Export(a) => {
            let r = pyro.export_workspace(&a.workspace_id, &a.path, &a.output).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "[workspace-export] workspace_id={} workspace_path={} output_path={} artifact_type={} entry_count={} bytes_written={} execution_mode={}",
                    r.workspace_id, r.workspace_path, r.output_path, r.artifact_type, r.entry_count, r.bytes_written, r.execution_mode
                );
            }
        }
        WorkspaceCommand::Snapshot(SnapshotCommand::Create(a)) => {
            let r = pyro.create_snapshot(&a.workspace_id, &a.snapshot_name).await?;
            if json {
                print_json(&r);
            } else {
                let s = &r.snapshot;
                println!(
                    "[workspace-snapshot-create] workspace_id={} snapshot_name={} kind={} entry_count={} bytes_written={}",
                    r.workspace_id, s.snapshot_name, s.kind, s.entry_count, s.bytes_written
                );
            }
        }
        WorkspaceCommand::Snapshot(SnapshotCommand::List(a)) => {
            let r = pyro.list_snapshots(&a.workspace_id).await?;
            if json {
                print_json(&r);
            } else {
                for s in &r.snapshots {
                    println!(
                        "{} [{}] entry_count={} bytes_written={} deletable={}",
                        s.snapshot_name,
                        s.kind,
                        s.entry_count,
                        s.bytes_written,
                        yes_no(s.deletable)
                    );
                }
            }
        }
        WorkspaceCommand::Snapshot(SnapshotCommand::Delete(a)) => {
            let r = pyro.delete_snapshot(&a.workspace_id, &a.snapshot_name).await?;
            if json {
                print_json(&r);
            } else {
                println!("Deleted workspace snapshot: {}", r.snapshot_name);
            }
        }
        WorkspaceCommand::Reset(a) => {
            let w = pyro.reset_workspace(&a.workspace_id, &a.snapshot).await?;
            if json {
                print_json(&w);
            } else {
                summary("Reset workspace", &w);
                if let Some(r) = &w.workspace_reset {
                    println!("Reset source: {} ({})", r.snapshot_name, r.kind);
                    println!(
                        "Reset restore: destination={} entry_count={} bytes_written={}",
                        r.destination, r.entry_count, r.bytes_written
                    );
                }
            }
        }
        WorkspaceCommand::Stop(a) => {
            let w = pyro.stop_workspace(&a.workspace_id).await?;
            if json {
                print_json(&w)
            } else {
                summary("Stopped workspace", &w);
                resume_line(&w);
            }
        }
        WorkspaceCommand::Disk(DiskCommand::List(a)) => {
            let r = pyro.list_workspace_disk(&a.workspace_id, &a.path, a.recursive).await?;
            if json {
                print_json(&r);
            } else {
                println!("Workspace disk path: {} (recursive={})", r.path, yes_no(r.recursive));
                let rows = r.entries.iter().map(|e| (&e.path, &e.artifact_type, e.size_bytes, &e.link_target));
                print_entries(rows, "No workspace disk entries found.");
            }
        }
        WorkspaceCommand::Disk(DiskCommand::Read(a)) => {
            let r = pyro.read_workspace_disk(&a.workspace_id, &a.path, a.max_bytes).await?;
            if json {
                print_json(&r);
            } else {
                let footer = read_footer("workspace-disk-read", &r.workspace_id, &r.path, r.size_bytes, r.truncated);
                print_content(&r.content, a.content_only, &footer);
            }
        }
        WorkspaceCommand::Disk(DiskCommand::Export(a)) => {
            let r = pyro.export_workspace_disk(&a.workspace_id, &a.output).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "[workspace-disk-export] workspace_id={} output_path={} disk_format={} bytes_written={}",
                    r.workspace_id, r.output_path, r.disk_format, r.bytes_written
                );
            }
        }
        WorkspaceCommand::Shell(c) => return crate::sessions::run_shell(pyro, c).await,
        WorkspaceCommand::Service(c) => return crate::sessions::run_service(pyro, c).await,
        WorkspaceCommand::Command(c) => return crate::commands::run(pyro, c).await,
        WorkspaceCommand::Start(a) => {
            let w = pyro.start_workspace(&a.workspace_id).await?;
            if json {
                print_json(&w)
            } else {
                summary("Started workspace", &w);
                resume_line(&w);
            }
        }
        WorkspaceCommand::Pause(a) => {
            let w = pyro.pause_workspace(&a.workspace_id).await?;
            if json {
                print_json(&w)
            } else {
                summary("Paused workspace", &w);
                if let Some(p) = &w.workspace_pause {
                    println!(
                        "Pause: state_bytes={} ({} MiB of {} MiB guest memory) pause_ms={}",
                        p.state_bytes,
                        p.state_bytes / (1024 * 1024),
                        p.mem_mib,
                        p.pause_ms
                    );
                }
            }
        }
        WorkspaceCommand::Resume(a) => {
            let w = pyro.resume_workspace(&a.workspace_id).await?;
            if json {
                print_json(&w)
            } else {
                summary("Resumed workspace", &w);
                resume_line(&w);
            }
        }
        WorkspaceCommand::Fork(a) => {
            let opts = pyro::workspace::ForkOptions { count: a.count, names: a.names };
            let r = pyro.fork_workspace(&a.workspace_id, &opts).await?;
            if json {
                print_json(&r);
            } else {
                for w in &r.workspaces {
                    let name = w.name.as_ref().map(|n| format!(" name='{n}'")).unwrap_or_default();
                    println!("[workspace-fork] workspace_id={}{name} state={}", w.workspace_id, w.state);
                }
                println!(
                    "Forked {} workspaces from {} (source_state={} memory_restored={} fork_ms={})",
                    r.count,
                    r.workspace_id,
                    r.source_state,
                    yes_no(r.memory_restored),
                    r.fork_ms
                );
            }
        }
    }
    Ok(0)
}

/// `PATH [type] size=N[ -> target]` rows (file list and disk list share the template).
fn print_entries<'a>(rows: impl Iterator<Item = (&'a String, &'a String, u64, &'a Option<String>)>, empty: &str) {
    let mut any = false;
    for (path, kind, size, link) in rows {
        any = true;
        let link = link.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        println!("{path} [{kind}] size={size}{link}");
    }
    if !any {
        println!("{empty}");
    }
}

fn read_footer(tag: &str, workspace_id: &str, path: &str, size: u64, truncated: bool) -> String {
    format!("[{tag}] workspace_id={workspace_id} path={path} size_bytes={size} truncated={}", yes_no(truncated))
}

/// Content on stdout (newline-terminated unless `--content-only`), footer on stderr.
fn print_content(content: &str, content_only: bool, footer: &str) {
    if content_only {
        print!("{content}");
    } else {
        print!("{}", with_newline(content));
        eprintln!("{footer}");
    }
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}
