//! `pyro host`: connect agent clients to `pyro mcp serve`. The logic is in the pyro-host
//! crate; this file parses arguments and renders its payloads.

use crate::output::{print_json, Mode};
use crate::McpProfile;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum HostCommand {
    /// Print the config that makes CLIENT start `pyro mcp serve` (a whole file in the
    /// client's format, holding only that entry; `--json`: that text and the entry).
    PrintConfig(WriteArgs),
    /// Write the entry into CLIENT's config file, keeping every other byte of the file (a
    /// backup `FILE.pyro-backup-SECONDS` is made first).
    Connect(WriteArgs),
    /// Check CLIENT's entry: the file parses, the entry is well-formed, its command is an
    /// executable pyro, the profile is valid, the server starts and lists its tools.
    Doctor(DoctorArgs),
    /// Fix what `doctor` finds wrong in the entry (missing, malformed, wrong command, bad
    /// profile), keeping the rest of the file byte for byte (backup first).
    Repair(RepairArgs),
}

impl HostCommand {
    pub fn mode(&self) -> Mode {
        match self {
            HostCommand::PrintConfig(a) => Mode::from_json(a.json),
            HostCommand::Connect(a) => Mode::from_json(a.json),
            HostCommand::Doctor(a) => Mode::from_json(a.json),
            HostCommand::Repair(a) => Mode::from_json(a.json),
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ClientArg {
    /// Claude Code: `mcpServers` in ~/.claude.json (user) or .mcp.json (project).
    ClaudeCode,
    /// Codex: `[mcp_servers.NAME]` in ~/.codex/config.toml ($CODEX_HOME) or .codex/config.toml.
    Codex,
    /// OpenCode: `mcp` in ~/.config/opencode/opencode.json (user) or opencode.json (project).
    Opencode,
    /// Any client reading `{"mcpServers": {...}}` JSON: needs --config FILE.
    Generic,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    /// The user's config in the home directory.
    User,
    /// The current directory's project config.
    Project,
}

#[derive(Args)]
pub struct TargetArgs {
    /// The agent client.
    #[arg(value_enum)]
    client: ClientArg,
    /// Which of the client's config files.
    #[arg(long, value_enum, default_value = "user")]
    scope: ScopeArg,
    /// Use this config file instead of the client's default location.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The server's name in the config.
    #[arg(long, default_value = "pyro")]
    name: String,
}

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The profile the client's `pyro mcp serve` exposes.
    #[arg(long, value_enum, default_value = "workspace-core")]
    profile: McpProfile,
    #[arg(long)]
    json: bool,
    /// Further `pyro mcp serve` flags, after `--` (e.g. `-- --allow-host-compat`).
    #[arg(last = true, value_name = "SERVE_FLAG")]
    serve_flags: Vec<String>,
}

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RepairArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Also set this profile (default: keep a valid one, else workspace-core).
    #[arg(long, value_enum)]
    profile: Option<McpProfile>,
    #[arg(long)]
    json: bool,
}

fn target(a: &TargetArgs) -> pyro_host::Target {
    pyro_host::Target {
        client: match a.client {
            ClientArg::ClaudeCode => pyro_host::Client::ClaudeCode,
            ClientArg::Codex => pyro_host::Client::Codex,
            ClientArg::Opencode => pyro_host::Client::OpenCode,
            ClientArg::Generic => pyro_host::Client::Generic,
        },
        scope: match a.scope {
            ScopeArg::User => pyro_host::Scope::User,
            ScopeArg::Project => pyro_host::Scope::Project,
        },
        config: a.config.clone(),
        name: a.name.clone(),
    }
}

fn err(e: pyro_host::Error) -> pyro::Error {
    match e {
        pyro_host::Error::InvalidInput(m) => pyro::Error::InvalidInput(m),
        pyro_host::Error::Io(m) => pyro::Error::Io(m),
    }
}

fn serve_command(a: &WriteArgs) -> pyro::Result<pyro_host::ServeCommand> {
    let exe = pyro_host::ServeCommand::current_exe().map_err(err)?;
    pyro_host::ServeCommand::new(&exe, a.profile.into(), &a.serve_flags).map_err(err)
}

pub async fn run(c: HostCommand) -> pyro::Result<u8> {
    let mode = c.mode();
    match c {
        HostCommand::PrintConfig(a) => {
            let (t, cmd) = (target(&a.target), serve_command(&a)?);
            let text = pyro_host::print_config(&t, &cmd).map_err(err)?;
            match mode {
                Mode::Human => print!("{text}"),
                Mode::Json => print_json(&serde_json::json!({
                    "client": t.client.as_str(),
                    "name": t.name,
                    "config": text,
                    "entry": pyro_host::entry_value(t.client, &cmd),
                })),
            }
            Ok(0)
        }
        HostCommand::Connect(a) => {
            let report = pyro_host::connect(&target(&a.target), &serve_command(&a)?).map_err(err)?;
            print_write(mode, "connect", &report);
            Ok(0)
        }
        HostCommand::Repair(a) => {
            let exe = pyro_host::ServeCommand::current_exe().map_err(err)?;
            let report = pyro_host::repair(&target(&a.target), &exe, a.profile.map(Into::into)).map_err(err)?;
            print_write(mode, "repair", &report);
            Ok(0)
        }
        HostCommand::Doctor(a) => {
            let report = pyro_host::doctor(&target(&a.target)).await.map_err(err)?;
            match mode {
                Mode::Json => print_json(&report),
                Mode::Human => {
                    println!("{} {} ({})", report.client_name(), report.name, report.config_path.display());
                    for c in &report.checks {
                        println!("  [{}] {}: {}", c.status, c.name, c.detail);
                    }
                    println!("{}", if report.ok { "OK" } else { "NOT OK" });
                }
            }
            Ok(if report.ok { 0 } else { 1 })
        }
    }
}

fn print_write(mode: Mode, verb: &str, r: &pyro_host::WriteReport) {
    match mode {
        Mode::Json => print_json(r),
        Mode::Human => {
            let what = match (r.changed, r.created) {
                (false, _) => "already up to date; nothing written",
                (true, true) => "created",
                (true, false) => "updated",
            };
            println!("[{verb}] {} \"{}\" in {}: {what}", r.client_name(), r.name, r.config_path.display());
            for f in &r.fixed {
                println!("  fixed: {f}");
            }
            if let Some(b) = &r.backup {
                println!("  backup: {}", b.display());
            }
            if r.changed {
                println!("  check it with: pyro host doctor {}", r.client_name());
            }
        }
    }
}
