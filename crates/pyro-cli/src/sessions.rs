//! `pyro workspace shell ...` and `pyro workspace service ...`: argument parsing and output
//! templates only; every operation is one SDK call.

use crate::output::{print_json, Mode};
use clap::{Args, Subcommand};
use pyro::workspace::{
    OpenShellOptions, PublishedPortSpec, ReadShellOptions, Readiness, ServiceInfo, ShellInfo, StartServiceOptions,
};
use pyro::Pyro;
use std::io::Write;

#[derive(Subcommand)]
pub enum ShellCommand {
    /// Open an interactive shell (bash on a PTY) in the workspace.
    Open(ShellOpenArgs),
    /// Read shell output from a cursor (character offset).
    Read(ShellReadArgs),
    /// Type input into the shell (a newline is added unless --no-newline).
    Write(ShellWriteArgs),
    /// Send a signal to the shell's foreground job.
    Signal(ShellSignalArgs),
    /// Close the shell (HUP, then KILL).
    Close(ShellIdArgs),
}

#[derive(Args)]
pub struct ShellOpenArgs {
    workspace_id: String,
    #[arg(long, default_value = pyro::workspace::WORKSPACE_PATH)]
    cwd: String,
    /// Terminal width in columns, 1..=1000.
    #[arg(long, default_value_t = pyro::defaults::SHELL_COLS)]
    cols: u16,
    /// Terminal height in rows, 1..=500.
    #[arg(long, default_value_t = pyro::defaults::SHELL_ROWS)]
    rows: u16,
    /// SECRET[=ENV_VAR] (repeatable): export a workspace secret into the shell.
    #[arg(long = "secret-env", value_name = "SECRET[=ENV_VAR]")]
    secret_env: Vec<String>,
    #[arg(long, conflicts_with = "id_only")]
    json: bool,
    /// Print only the new shell's id.
    #[arg(long)]
    id_only: bool,
}

#[derive(Args)]
pub struct ShellReadArgs {
    workspace_id: String,
    shell_id: String,
    #[arg(long, default_value_t = 0)]
    cursor: u64,
    #[arg(long, default_value_t = pyro::defaults::SHELL_MAX_CHARS)]
    max_chars: u64,
    /// Render through a terminal emulator: plain text, no escape sequences.
    #[arg(long)]
    plain: bool,
    /// Return once output has been quiet this long (1-10000 ms).
    #[arg(long)]
    wait_for_idle_ms: Option<u64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShellWriteArgs {
    workspace_id: String,
    shell_id: String,
    #[arg(long, required = true, allow_hyphen_values = true)]
    input: String,
    #[arg(long)]
    no_newline: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShellSignalArgs {
    workspace_id: String,
    shell_id: String,
    #[arg(long, default_value = pyro::defaults::SHELL_SIGNAL, value_parser = ["HUP", "INT", "TERM", "KILL"])]
    signal: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShellIdArgs {
    workspace_id: String,
    shell_id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Start a named background service, optionally waiting for readiness.
    Start(ServiceStartArgs),
    /// List the workspace's services.
    List(ServiceListArgs),
    /// Show one service.
    Status(ServiceNameArgs),
    /// Show a service's stdout and stderr.
    Logs(ServiceLogsArgs),
    /// Stop a service (TERM, then KILL after 5 s).
    Stop(ServiceNameArgs),
}

#[derive(Args)]
pub struct ServiceStartArgs {
    workspace_id: String,
    service_name: String,
    #[arg(long, default_value = pyro::workspace::WORKSPACE_PATH)]
    cwd: String,
    /// Ready when this guest path exists.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["ready_tcp", "ready_http", "ready_command"])]
    ready_file: Option<String>,
    /// Ready when HOST:PORT (in the guest) accepts a connection.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["ready_http", "ready_command"])]
    ready_tcp: Option<String>,
    /// Ready when GET URL (from the guest) answers 200-399.
    #[arg(long, value_name = "URL", conflicts_with = "ready_command")]
    ready_http: Option<String>,
    /// Ready when this shell command exits 0.
    #[arg(long, value_name = "CMD")]
    ready_command: Option<String>,
    #[arg(long, default_value_t = pyro::defaults::READY_TIMEOUT_SECONDS)]
    ready_timeout_seconds: u64,
    #[arg(long, default_value_t = pyro::defaults::READY_INTERVAL_MS)]
    ready_interval_ms: u64,
    /// SECRET[=ENV_VAR] (repeatable).
    #[arg(long = "secret-env", value_name = "SECRET[=ENV_VAR]")]
    secret_env: Vec<String>,
    /// [HOST_PORT:]GUEST_PORT (repeatable): forward 127.0.0.1:HOST_PORT on the host to the
    /// guest port (needs --network-policy egress+published-ports).
    #[arg(long = "publish", value_name = "[HOST_PORT:]GUEST_PORT")]
    publish: Vec<String>,
    #[arg(long)]
    json: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARG")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ServiceListArgs {
    workspace_id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ServiceNameArgs {
    workspace_id: String,
    service_name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ServiceLogsArgs {
    workspace_id: String,
    service_name: String,
    #[arg(long, default_value_t = pyro::defaults::TAIL_LINES)]
    tail_lines: u64,
    /// Everything kept instead of the last --tail-lines lines.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

impl ShellCommand {
    pub fn json(&self) -> bool {
        match self {
            ShellCommand::Open(a) => a.json,
            ShellCommand::Read(a) => a.json,
            ShellCommand::Write(a) => a.json,
            ShellCommand::Signal(a) => a.json,
            ShellCommand::Close(a) => a.json,
        }
    }
}

impl ServiceCommand {
    pub fn json(&self) -> bool {
        match self {
            ServiceCommand::Start(a) => a.json,
            ServiceCommand::List(a) => a.json,
            ServiceCommand::Status(a) | ServiceCommand::Stop(a) => a.json,
            ServiceCommand::Logs(a) => a.json,
        }
    }
}

/// A `--publish` value: `GUEST_PORT` (the host port is chosen free) or
/// `HOST_PORT:GUEST_PORT`.
pub fn parse_publish(item: &str) -> pyro::Result<PublishedPortSpec> {
    let bad = || {
        pyro::Error::InvalidInput(format!(
            "--publish must be GUEST_PORT or HOST_PORT:GUEST_PORT with ports in 1..65535, got '{item}'"
        ))
    };
    let port = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
    match item.split_once(':') {
        Some((h, g)) => Ok(PublishedPortSpec { guest_port: port(g)?, host_port: Some(port(h)?) }),
        None => Ok(PublishedPortSpec { guest_port: port(item)?, host_port: None }),
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn shell_line(op: &str, s: &ShellInfo) {
    eprintln!(
        "[workspace-shell-{op}] workspace_id={} shell_id={} state={} cwd={} cols={} rows={} execution_mode={}",
        s.workspace_id, s.shell_id, s.state, s.cwd, s.cols, s.rows, s.execution_mode
    );
}

fn published(s: &ServiceInfo) -> String {
    s.published_ports
        .iter()
        .map(|p| format!("{}:{}->{}/{}", p.host, p.host_port, p.guest_port, p.protocol))
        .collect::<Vec<_>>()
        .join(",")
}

fn service_line(op: &str, s: &ServiceInfo) {
    let ports = if s.published_ports.is_empty() { String::new() } else { format!(" published_ports={}", published(s)) };
    eprintln!(
        "[workspace-service-{op}] workspace_id={} service_name={} state={} cwd={} execution_mode={}{ports}",
        s.workspace_id, s.service_name, s.state, s.cwd, s.execution_mode
    );
}

pub async fn run_shell(pyro: &Pyro, cmd: ShellCommand) -> pyro::Result<u8> {
    let json = Mode::from_json(cmd.json()) == Mode::Json;
    match cmd {
        ShellCommand::Open(a) => {
            let opts = OpenShellOptions {
                cwd: a.cwd,
                cols: a.cols,
                rows: a.rows,
                secret_env: crate::workspace::parse_secret_env(&a.secret_env)?,
            };
            let s = pyro.open_shell(&a.workspace_id, opts).await?;
            if a.id_only {
                println!("{}", s.shell_id);
            } else if json {
                print_json(&s);
            } else {
                shell_line("open", &s);
            }
        }
        ShellCommand::Read(a) => {
            let opts = ReadShellOptions {
                cursor: a.cursor,
                max_chars: a.max_chars,
                plain: a.plain,
                wait_for_idle_ms: a.wait_for_idle_ms,
            };
            let r = pyro.read_shell(&a.workspace_id, &a.shell_id, opts).await?;
            if json {
                print_json(&r);
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(r.output.as_bytes());
                if !r.output.is_empty() && !r.output.ends_with('\n') {
                    let _ = out.write_all(b"\n");
                }
                let _ = out.flush();
                let s = &r.shell;
                eprintln!(
                    "[workspace-shell-read] workspace_id={} shell_id={} state={} cursor={} next_cursor={} truncated={} plain={} wait_for_idle_ms={} execution_mode={}",
                    s.workspace_id,
                    s.shell_id,
                    s.state,
                    r.cursor,
                    r.next_cursor,
                    py_bool(r.truncated),
                    py_bool(r.plain),
                    r.wait_for_idle_ms.map(|v| v.to_string()).unwrap_or_else(|| "None".into()),
                    s.execution_mode
                );
            }
        }
        ShellCommand::Write(a) => {
            let r = pyro.write_shell(&a.workspace_id, &a.shell_id, &a.input, !a.no_newline).await?;
            if json {
                print_json(&r);
            } else {
                shell_line("write", &r.shell);
            }
        }
        ShellCommand::Signal(a) => {
            let r = pyro.signal_shell(&a.workspace_id, &a.shell_id, &a.signal).await?;
            if json {
                print_json(&r);
            } else {
                shell_line("signal", &r.shell);
            }
        }
        ShellCommand::Close(a) => {
            let r = pyro.close_shell(&a.workspace_id, &a.shell_id).await?;
            if json {
                print_json(&r);
            } else {
                shell_line("close", &r.shell);
            }
        }
    }
    Ok(0)
}

pub async fn run_service(pyro: &Pyro, cmd: ServiceCommand) -> pyro::Result<u8> {
    let json = Mode::from_json(cmd.json()) == Mode::Json;
    match cmd {
        ServiceCommand::Start(a) => {
            let command = crate::join_command(&a.command)?;
            // clap lets at most one through (conflicts_with).
            let readiness = Readiness::first_of(a.ready_file, a.ready_tcp, a.ready_http, a.ready_command);
            let published_ports = a.publish.iter().map(|p| parse_publish(p)).collect::<pyro::Result<Vec<_>>>()?;
            let opts = StartServiceOptions {
                command,
                cwd: a.cwd,
                readiness,
                ready_timeout_seconds: a.ready_timeout_seconds,
                ready_interval_ms: a.ready_interval_ms,
                secret_env: crate::workspace::parse_secret_env(&a.secret_env)?,
                published_ports,
            };
            let s = pyro.start_service(&a.workspace_id, &a.service_name, opts).await?;
            if json {
                print_json(&s);
            } else {
                service_line("start", &s);
            }
        }
        ServiceCommand::List(a) => {
            let l = pyro.list_services(&a.workspace_id).await?;
            if json {
                print_json(&l);
            } else if l.services.is_empty() {
                println!("No workspace services found.");
            } else {
                for s in &l.services {
                    let ports = if s.published_ports.is_empty() {
                        String::new()
                    } else {
                        format!(" published={}", published(s))
                    };
                    println!("{} [{}] cwd={}{ports}", s.service_name, s.state, s.cwd);
                }
            }
        }
        ServiceCommand::Status(a) => {
            let s = pyro.status_service(&a.workspace_id, &a.service_name).await?;
            if json {
                print_json(&s);
            } else {
                service_line("status", &s);
            }
        }
        ServiceCommand::Stop(a) => {
            let s = pyro.stop_service(&a.workspace_id, &a.service_name).await?;
            if json {
                print_json(&s);
            } else {
                service_line("stop", &s);
            }
        }
        ServiceCommand::Logs(a) => {
            let l = pyro.logs_service(&a.workspace_id, &a.service_name, a.tail_lines, a.all).await?;
            if json {
                print_json(&l);
            } else {
                print!("{}", l.stdout);
                let _ = std::io::stdout().flush();
                eprint!("{}", l.stderr);
                service_line("logs", &l.service);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        assert_eq!(parse_publish("8000").unwrap(), PublishedPortSpec { guest_port: 8000, host_port: None });
        assert_eq!(parse_publish("18080:80").unwrap(), PublishedPortSpec { guest_port: 80, host_port: Some(18080) });
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("70000").is_err());
    }
}
