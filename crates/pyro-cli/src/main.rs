//! `pyro`: the command line. A thin adapter: parse arguments, call the `pyro` SDK, render
//! the payload (human text or `--json`). No engine logic lives here.

mod commands;
mod host;
mod output;
mod sessions;
mod summary;
mod workspace;

use clap::{Args, Parser, Subcommand};
use output::{emit_error, print_json, Mode};
use pyro::{CreateVmOptions, Pyro};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pyro", version, about = "Disposable, persistent Linux microVM workspaces for coding agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a fresh VM, then delete the VM.
    ///
    /// The VM is restored from its environment's template (a saved, booted guest; built on
    /// first use of each VM shape) unless PYRO_WARM_RUN=off forces a cold boot.
    Run(RunArgs),
    /// Report what this host can do: backends, KVM, host tools, environments.
    Doctor(DoctorArgs),
    /// Make the first real call of an environment fast: install it, probe KVM, build the
    /// initramfs and the warm-run template (skipping what is already done).
    Prepare(PrepareArgs),
    /// Manage guest environments (kernel + rootfs).
    #[command(subcommand)]
    Env(EnvCommand),
    /// Persistent workspaces: a VM that lives across many calls.
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCommand),
    /// Serve pyro's tools to MCP clients (Claude Code, Codex, OpenCode, ...).
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Connect agent clients (Claude Code, Codex, OpenCode, generic mcpServers JSON) to
    /// `pyro mcp serve`: print, write, check and repair their config entry.
    #[command(subcommand)]
    Host(host::HostCommand),
}

#[derive(Subcommand)]
enum McpCommand {
    /// Serve MCP on stdio (default) or Streamable HTTP (`--http 127.0.0.1:PORT`, path /mcp).
    Serve(McpServeArgs),
    /// Print the bearer token HTTP clients must send (`Authorization: Bearer TOKEN`), creating
    /// it under $PYRO_HOME (mode 0600) if there is none yet.
    Token,
}

#[derive(Args)]
struct McpServeArgs {
    /// Which tools to expose (default workspace-core). With --mode, only a profile holding
    /// every tool of the mode is accepted (the mode then decides the tools).
    #[arg(long, value_enum)]
    profile: Option<McpProfile>,
    /// Serve a task-shaped tool set instead of a profile: repro-fix, inspect (read-only),
    /// cold-start or review-eval. Smaller than a profile, with descriptions for the task.
    #[arg(long, value_enum)]
    mode: Option<McpMode>,
    /// Serve Streamable HTTP on this address instead of stdio. Every request needs
    /// `Authorization: Bearer TOKEN`: by default the token stored in $PYRO_HOME/mcp-token
    /// (`pyro mcp token` prints it), else $PYRO_MCP_TOKEN, --token-file or --token.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Read the HTTP bearer token from this file (first line; the file must be mode 0600).
    #[arg(long, value_name = "PATH", requires = "http", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// The HTTP bearer token itself. Prefer --token-file or $PYRO_MCP_TOKEN: a command-line
    /// value is visible to other local users in `ps`.
    #[arg(long, value_name = "TOKEN", requires = "http")]
    token: Option<String>,
    /// Let MCP clients ask for `allow_host_compat: true` (commands on this host without
    /// isolation when no VM backend works). Without it such calls are refused.
    #[arg(long)]
    allow_host_compat: bool,
    /// Default `idle_pause_seconds` of workspaces clients create without one (0: off, the
    /// default). Also from $PYRO_MCP_IDLE_PAUSE_SECONDS; the flag wins.
    #[arg(long, value_name = "N")]
    idle_pause_seconds: Option<u64>,
    /// The project: workspaces created without seed_path are seeded from this directory (a
    /// Git checkout by Git's rules: tracked files only). Default: the Git checkout containing
    /// the current directory, if any.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["repo_url", "no_project"])]
    project_path: Option<std::path::PathBuf>,
    /// The project is this Git repository, cloned (shallow where possible) once at start
    /// into a private directory under $PYRO_HOME.
    #[arg(long, value_name = "URL", conflicts_with = "no_project")]
    repo_url: Option<String>,
    /// Branch, tag or commit of --repo-url (default: its default branch).
    #[arg(long, value_name = "REF", requires = "repo_url")]
    repo_ref: Option<String>,
    /// Also seed the checkout's untracked files that Git does not ignore.
    #[arg(long, conflicts_with_all = ["repo_url", "no_project"])]
    project_include_untracked: bool,
    /// No project, even inside a Git checkout: workspaces without seed_path start empty.
    #[arg(long)]
    no_project: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum McpProfile {
    /// Only vm_run.
    VmRun,
    /// The everyday workspace tools.
    WorkspaceCore,
    /// Every tool: lifecycle, pause and fork, snapshots, disk tools, shells, services, secrets, VMs.
    WorkspaceFull,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum McpMode {
    /// Reproduce a failure and fix it: create, exec, files, patch, diff, summary, reset.
    ReproFix,
    /// Look at workspaces without changing them: read-only tools only.
    Inspect,
    /// Get a project running: environments, create, sync, exec, files, status.
    ColdStart,
    /// Review finished work: summary, diff, logs, files, exec for checks, export.
    ReviewEval,
}

impl From<McpMode> for pyro_mcp::Mode {
    fn from(m: McpMode) -> Self {
        match m {
            McpMode::ReproFix => pyro_mcp::Mode::ReproFix,
            McpMode::Inspect => pyro_mcp::Mode::Inspect,
            McpMode::ColdStart => pyro_mcp::Mode::ColdStart,
            McpMode::ReviewEval => pyro_mcp::Mode::ReviewEval,
        }
    }
}

impl From<McpProfile> for pyro_mcp::Profile {
    fn from(p: McpProfile) -> Self {
        match p {
            McpProfile::VmRun => pyro_mcp::Profile::VmRun,
            McpProfile::WorkspaceCore => pyro_mcp::Profile::WorkspaceCore,
            McpProfile::WorkspaceFull => pyro_mcp::Profile::WorkspaceFull,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Environment name, e.g. debian:12.
    environment: String,
    #[arg(long, default_value_t = pyro::defaults::VCPU_COUNT)]
    vcpu_count: u32,
    #[arg(long, default_value_t = pyro::defaults::MEM_MIB)]
    mem_mib: u32,
    #[arg(long, default_value_t = pyro::defaults::TIMEOUT_SECONDS)]
    timeout_seconds: u64,
    #[arg(long, default_value_t = pyro::defaults::TTL_SECONDS)]
    ttl_seconds: u64,
    /// Give the guest outbound network access (QEMU user-mode NAT).
    #[arg(long)]
    network: bool,
    /// Allow running on the host without isolation when no VM backend works.
    #[arg(long)]
    allow_host_compat: bool,
    #[arg(long)]
    json: bool,
    /// The command, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARG")]
    command: Vec<String>,
}

#[derive(Args)]
struct DoctorArgs {
    #[arg(long, default_value = pyro::env::PLATFORM)]
    platform: String,
    /// Also report how ready this environment is (`warm`, `cold`, `stale`,
    /// `not_installed`) and what `pyro prepare` would do.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PrepareArgs {
    /// Environment name.
    #[arg(default_value = "debian:12")]
    environment: String,
    /// Also prepare the template of `pyro run --network` (a NIC is part of the VM shape).
    #[arg(long)]
    network: bool,
    /// Rebuild the initramfs and templates even when they exist (an installed environment
    /// is kept).
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EnvCommand {
    /// List catalog environments and whether each is installed.
    List(JsonFlag),
    /// Install an environment: from the OCI image named after it when given, else from
    /// PYRO_ENV_REGISTRY when set, else built from Debian packages.
    ///
    /// With an image given, an install from elsewhere is replaced; the previous install stays
    /// until the new one is complete and verified.
    Pull(EnvPullArgs),
    /// Publish an installed environment as an OCI image (the one named after it, or
    /// PYRO_ENV_REGISTRY's default reference for it). Blobs the registry already has are not sent again.
    ///
    /// Credentials: PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD, else the Docker config
    /// file (`credHelpers`, `auths`, `credsStore`). Loopback registries and hosts in PYRO_REGISTRY_INSECURE use plain HTTP.
    Push(EnvPushArgs),
    /// Show one environment.
    Inspect(EnvName),
    /// Delete broken, partial or unknown cache entries; with NAMEs, those installs too.
    Prune(EnvPruneArgs),
}

#[derive(Args)]
struct JsonFlag {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnvName {
    environment: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnvPullArgs {
    /// Environment name, e.g. debian:12.
    environment: String,
    /// OCI image to install it from: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:...
    #[arg(value_name = "REFERENCE")]
    reference: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnvPushArgs {
    /// Installed environment name, e.g. debian:12.
    environment: String,
    /// Where to publish it: REGISTRY/REPOSITORY:TAG (default: from PYRO_ENV_REGISTRY).
    #[arg(value_name = "REFERENCE")]
    reference: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EnvPruneArgs {
    /// Installed environments to delete as well.
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("[error] cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(dispatch(cli));
    // Don't wait for stray blocking tasks (a progress reader, a probe) on the way out.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let (mode, result) = match cli.command {
        Command::Run(a) => (Mode::from_json(a.json), run(a).await),
        Command::Doctor(a) => (Mode::from_json(a.json), doctor(a).await),
        Command::Prepare(a) => (Mode::from_json(a.json), prepare(a).await),
        Command::Env(c) => env(c).await,
        Command::Mcp(McpCommand::Serve(a)) => (Mode::Human, mcp_serve(a).await),
        Command::Mcp(McpCommand::Token) => (Mode::Human, mcp_token()),
        Command::Host(c) => (c.mode(), host::run(c).await),
        Command::Workspace(c) => {
            let mode = c.mode();
            let result = match engine(mode, "workspace") {
                // Ctrl-C drops the call, so its cleanup runs (a create being booted is undone,
                // a running guest command is cancelled) instead of the process just dying.
                Ok(pyro) => tokio::select! {
                    r = workspace::run(&pyro, c) => r,
                    _ = tokio::signal::ctrl_c() => Err(pyro::Error::Cancelled("interrupted (Ctrl-C)".into())),
                },
                Err(e) => Err(e),
            };
            (mode, result)
        }
    };
    // A progress bar still drawn would be overwritten by the error or left half-drawn.
    output::clear_progress();
    match result {
        Ok(code) => code,
        Err(e) => {
            emit_error(mode, &e);
            1
        }
    }
}

fn engine(mode: Mode, label: &'static str) -> pyro::Result<Pyro> {
    let pyro = Pyro::from_env()?;
    if mode == Mode::Human {
        pyro.set_progress(output::terminal_progress(label));
    }
    Ok(pyro)
}

/// `pyro mcp serve`: stdout belongs to the protocol, so nothing else is printed there.
async fn mcp_serve(a: McpServeArgs) -> pyro::Result<u8> {
    let mode: Option<pyro_mcp::Mode> = a.mode.map(Into::into);
    let profile: Option<pyro_mcp::Profile> = a.profile.map(Into::into);
    if let (Some(m), Some(p)) = (mode, profile) {
        m.check_profile(p).map_err(pyro::Error::InvalidInput)?;
    }
    let pyro = Pyro::from_env()?;
    let home = pyro.paths().home.clone();
    let idle_pause = match a.idle_pause_seconds {
        Some(n) => Some(n),
        None => pyro_mcp::idle_pause_default_from_env().map_err(pyro::Error::InvalidInput)?,
    };
    let choice = pyro::project::ProjectChoice {
        project_path: a.project_path,
        repo_url: a.repo_url,
        repo_ref: a.repo_ref,
        include_untracked: a.project_include_untracked,
        no_project: a.no_project,
    };
    let cwd = std::env::current_dir().map_err(|e| pyro::Error::io("reading the current directory", e))?;
    let project = pyro::project::Project::resolve(&choice, &cwd, &home)?;
    // On stderr (stdout is the protocol); after the HTTP serving line, which clients wait for.
    let project_line = project.as_ref().map(|p| format!("[mcp] project: {}", p.describe()));
    let server = match mode {
        Some(m) => pyro_mcp::PyroMcp::with_mode(pyro, m),
        None => pyro_mcp::PyroMcp::new(pyro, profile.unwrap_or(pyro_mcp::Profile::WorkspaceCore)),
    };
    let serving = match mode {
        Some(m) => format!("mode {}", m.as_str()),
        None => format!("profile {}", server.profile().as_str()),
    };
    let server =
        server.with_host_compat_allowed(a.allow_host_compat).with_idle_pause_default(idle_pause)?.with_project(project);
    let served = match a.http {
        None => {
            if let Some(line) = &project_line {
                eprintln!("{line}");
            }
            pyro_mcp::serve_stdio(server).await
        }
        Some(addr) => {
            let token = pyro_mcp::token::resolve_http_token(&home, a.token_file.as_deref(), a.token)
                .map_err(|e| pyro::Error::InvalidInput(format!("MCP bearer token: {e}")))?;
            let source = token.source.clone();
            let opts = pyro_mcp::HttpOptions { addr, token };
            pyro_mcp::serve_http(server, opts, |local| {
                eprintln!("[mcp] serving {serving} on http://{local}/mcp (bearer token: {source})");
                if let Some(line) = &project_line {
                    eprintln!("{line}");
                }
            })
            .await
        }
    };
    served.map_err(|e| pyro::Error::Io(format!("MCP server: {e}")))?;
    Ok(0)
}

/// `pyro mcp token`: the stored HTTP bearer token on stdout (created on first use).
fn mcp_token() -> pyro::Result<u8> {
    let paths = pyro::config::Paths::from_env()?;
    let token = pyro_mcp::token::load_or_create_stored_token(&paths.home)
        .map_err(|e| pyro::Error::Io(format!("MCP bearer token: {e}")))?;
    println!("{token}");
    Ok(0)
}

/// Join trailing arguments the way the reference does (`shlex.join`); a leading `--` is
/// dropped.
fn join_command(args: &[String]) -> pyro::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).skip_while(|a| *a == "--").collect();
    if args.is_empty() {
        return Err(pyro::Error::InvalidInput("command is required after `--`".into()));
    }
    shlex::try_join(args.iter().copied())
        .map_err(|e| pyro::Error::InvalidInput(format!("command cannot be quoted for the shell: {e}")))
}

async fn run(a: RunArgs) -> pyro::Result<u8> {
    let mode = Mode::from_json(a.json);
    let command = join_command(&a.command)?;
    let pyro = engine(mode, "run")?;
    let opts = CreateVmOptions {
        environment: a.environment.clone(),
        vcpu_count: a.vcpu_count,
        mem_mib: a.mem_mib,
        ttl_seconds: a.ttl_seconds,
        network: a.network,
        allow_host_compat: a.allow_host_compat,
    };
    let flow = async {
        if mode == Mode::Json {
            return pyro.run_in_vm(opts, &command, a.timeout_seconds).await;
        }
        eprintln!("[run] phase=create environment={}", a.environment);
        let vm = pyro.create_vm(opts).await?;
        eprintln!("[run] phase=start vm_id={}", vm.vm_id);
        let started = match pyro.start_vm(&vm.vm_id).await {
            Ok(v) => v,
            Err(e) => {
                pyro.delete_all_vms("run_vm_error_cleanup").await;
                return Err(e);
            }
        };
        if let Some(mode) = started.metadata.get("start_mode") {
            let reason = started.metadata.get("start_reason").map(String::as_str).unwrap_or("");
            eprintln!("[run] phase=started vm_id={} start_mode={mode} start_reason={reason:?}", vm.vm_id);
        }
        eprintln!("[run] phase=execute vm_id={}", vm.vm_id);
        pyro.exec_vm(&vm.vm_id, &command, a.timeout_seconds).await
    };
    let result = tokio::select! {
        r = flow => r,
        _ = tokio::signal::ctrl_c() => {
            pyro.delete_all_vms("run_vm_error_cleanup").await;
            return Err(pyro::Error::Cancelled("interrupted; the VM was deleted".into()));
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            pyro.delete_all_vms("run_vm_error_cleanup").await;
            return Err(e);
        }
    };
    match mode {
        Mode::Json => print_json(&result),
        Mode::Human => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(result.stdout.as_bytes());
            let _ = out.flush();
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(result.stderr.as_bytes());
            if result.truncated {
                let _ = writeln!(err, "[run] output truncated at {} bytes per stream", pyro::vm::OUTPUT_CAP_BYTES);
            }
            let _ = writeln!(
                err,
                "[run] environment={} execution_mode={} backend={} exit_code={} duration_ms={}",
                result.environment, result.execution_mode, result.backend, result.exit_code, result.duration_ms
            );
        }
    }
    Ok(exit_code_byte(result.exit_code))
}

/// A guest exit code becomes ours; codes outside 1..=255 can't be, so they map to 1.
fn exit_code_byte(code: i32) -> u8 {
    match code {
        0 => 0,
        1..=255 => code as u8,
        _ => 1,
    }
}

async fn doctor(a: DoctorArgs) -> pyro::Result<u8> {
    let mode = Mode::from_json(a.json);
    if a.platform != pyro::env::PLATFORM {
        return Err(pyro::Error::InvalidInput(format!(
            "unsupported platform '{}'; expected {}",
            a.platform,
            pyro::env::PLATFORM
        )));
    }
    let pyro = Pyro::from_env()?;
    let report = match &a.environment {
        Some(name) => pyro.doctor_environment(name).await?,
        None => pyro.doctor().await?,
    };
    match mode {
        Mode::Json => print_json(&report),
        Mode::Human => output::print_doctor(&report),
    }
    Ok(0)
}

async fn prepare(a: PrepareArgs) -> pyro::Result<u8> {
    let mode = Mode::from_json(a.json);
    let pyro = engine(mode, "prepare")?;
    let opts = pyro::PrepareOptions { network: a.network, force: a.force };
    let result = tokio::select! {
        r = pyro.prepare_environment(&a.environment, &opts) => r?,
        _ = tokio::signal::ctrl_c() => return Err(pyro::Error::Cancelled("interrupted (Ctrl-C)".into())),
    };
    match mode {
        Mode::Json => print_json(&result),
        Mode::Human => output::print_prepare(&result),
    }
    Ok(if result.ok { 0 } else { 1 })
}

async fn env(c: EnvCommand) -> (Mode, pyro::Result<u8>) {
    let mode = Mode::from_json(match &c {
        EnvCommand::List(f) => f.json,
        EnvCommand::Prune(a) => a.json,
        EnvCommand::Pull(a) => a.json,
        EnvCommand::Push(a) => a.json,
        EnvCommand::Inspect(n) => n.json,
    });
    let label = if matches!(c, EnvCommand::Push(_)) { "push" } else { "pull" };
    let result = async {
        let pyro = engine(mode, label)?;
        match c {
            EnvCommand::List(_) => {
                let v = pyro.list_environments().await?;
                match mode {
                    Mode::Json => print_json(&v),
                    Mode::Human => output::print_env_list(&v),
                }
            }
            EnvCommand::Pull(a) => {
                if mode == Mode::Human {
                    match &a.reference {
                        Some(r) => eprintln!("[pull] phase=install environment={} reference={r}", a.environment),
                        None => eprintln!("[pull] phase=install environment={}", a.environment),
                    }
                }
                let pulled = match &a.reference {
                    Some(r) => pyro.pull_environment_from(&a.environment, r).await,
                    None => pyro.pull_environment(&a.environment).await,
                };
                output::clear_progress();
                let v = pulled?;
                match mode {
                    Mode::Json => print_json(&v),
                    Mode::Human => {
                        eprintln!("[pull] phase=ready environment={}", a.environment);
                        output::print_env_detail("Pulled", &v.environment, Some(&v));
                    }
                }
            }
            EnvCommand::Push(a) => {
                if mode == Mode::Human {
                    eprintln!("[push] phase=upload environment={}", a.environment);
                }
                let pushed = pyro.push_environment(&a.environment, a.reference.as_deref()).await;
                output::clear_progress();
                let v = pushed?;
                match mode {
                    Mode::Json => print_json(&v),
                    Mode::Human => {
                        eprintln!("[push] phase=done environment={}", a.environment);
                        output::print_push(&v);
                    }
                }
            }
            EnvCommand::Inspect(n) => {
                let v = pyro.inspect_environment(&n.environment).await?;
                match mode {
                    Mode::Json => print_json(&v),
                    Mode::Human => output::print_env_detail("Environment", &v, None),
                }
            }
            EnvCommand::Prune(a) => {
                let v = if a.names.is_empty() {
                    pyro.prune_environments().await?
                } else {
                    let names: Vec<&str> = a.names.iter().map(String::as_str).collect();
                    pyro.remove_environments(&names).await?
                };
                match mode {
                    Mode::Json => print_json(&v),
                    Mode::Human => output::print_prune(&v),
                }
            }
        }
        Ok(0)
    }
    .await;
    (mode, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_join_drops_leading_separator_and_quotes() {
        let args: Vec<String> = ["--", "sh", "-c", "echo out; exit 7"].iter().map(|s| s.to_string()).collect();
        assert_eq!(join_command(&args).unwrap(), "sh -c 'echo out; exit 7'");
        let e = join_command(&["--".to_string()]).unwrap_err().to_string();
        assert_eq!(e, "command is required after `--`");
    }

    #[test]
    fn exit_codes_outside_a_byte_map_to_one() {
        assert_eq!(exit_code_byte(7), 7);
        assert_eq!(exit_code_byte(124), 124);
        assert_eq!(exit_code_byte(-1), 1);
        assert_eq!(exit_code_byte(300), 1);
    }
}

/// The public CLI surface pinned by a contract test: every command path with its
/// positionals and long flags. A rename fails `cli_surface_is_pinned`.
#[cfg(test)]
mod surface {
    use clap::CommandFactory;

    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let path = if path.is_empty() { cmd.get_name().to_string() } else { format!("{path} {}", cmd.get_name()) };
        let mut args: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| match a.get_long() {
                Some(l) => format!("--{l}"),
                None => {
                    a.get_value_names().map(|v| v.join(" ")).unwrap_or_else(|| a.get_id().to_string().to_uppercase())
                }
            })
            .collect();
        args.sort();
        if cmd.get_subcommands().next().is_none() {
            out.push(format!("{path} {}", args.join(" ")).trim_end().to_string());
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, out);
        }
    }

    #[test]
    fn cli_surface_is_pinned() {
        let mut lines = Vec::new();
        walk(&super::Cli::command(), "", &mut lines);
        lines.sort();
        let actual = lines.join("\n") + "\n";
        let pinned_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli-surface.txt");
        if std::env::var_os("PYRO_UPDATE_SURFACE").is_some() {
            std::fs::write(pinned_path, &actual).unwrap();
        }
        let pinned = std::fs::read_to_string(pinned_path).unwrap_or_default();
        assert_eq!(
            actual, pinned,
            "the CLI surface changed; if intended, rerun with PYRO_UPDATE_SURFACE=1 and update CHANGELOG.md"
        );
    }
}
