//! `pyro workspace command ...` (background commands started by `workspace exec
//! --background`): argument parsing and output templates only; each is one SDK call.

use crate::output::{print_json, Mode};
use clap::{Args, Subcommand};
use pyro::workspace::{WorkspaceCommandInfo, WorkspaceExecOptions};
use pyro::Pyro;
use std::io::Write;

#[derive(Subcommand)]
pub enum CommandCommand {
    /// Show a background command's state (running, exited, killed, timed_out).
    Status(CommandIdArgs),
    /// Read a background command's output from a cursor (bytes of both streams together).
    Read(CommandReadArgs),
    /// Wait for a background command to end, at most --timeout-seconds (it is not killed).
    Wait(CommandWaitArgs),
    /// Kill a background command's process group (TERM, then KILL after 2 s).
    Kill(CommandIdArgs),
}

#[derive(Args)]
pub struct CommandIdArgs {
    workspace_id: String,
    command_id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CommandReadArgs {
    workspace_id: String,
    command_id: String,
    /// Where to read from: 0, or the previous read's next_cursor.
    #[arg(long, default_value_t = 0)]
    cursor: u64,
    /// Output bytes to return at most (1..=1048576).
    #[arg(long, default_value_t = pyro::defaults::COMMAND_READ_MAX_BYTES)]
    max_bytes: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CommandWaitArgs {
    workspace_id: String,
    command_id: String,
    /// Wait at most this long (0..=3600); the command's state is printed either way.
    #[arg(long, default_value_t = pyro::defaults::COMMAND_WAIT_SECONDS)]
    timeout_seconds: u64,
    #[arg(long)]
    json: bool,
}

impl CommandCommand {
    /// `--json` given.
    pub fn json(&self) -> bool {
        match self {
            CommandCommand::Status(a) | CommandCommand::Kill(a) => a.json,
            CommandCommand::Read(a) => a.json,
            CommandCommand::Wait(a) => a.json,
        }
    }
}

fn print_info(tag: &str, i: &WorkspaceCommandInfo) {
    let exit = i.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
    let seq = i.sequence.map(|s| format!(" sequence={s}")).unwrap_or_default();
    println!(
        "[{tag}] workspace_id={} command_id={} state={} exit_code={exit} duration_ms={} output_bytes={}{seq}",
        i.workspace_id, i.command_id, i.state, i.duration_ms, i.output_bytes
    );
}

/// `workspace exec --background`: print the command id (and its state) at once.
pub async fn start(
    pyro: &Pyro,
    workspace_id: &str,
    command: &str,
    opts: &WorkspaceExecOptions,
    json: bool,
) -> pyro::Result<u8> {
    let i = pyro.start_workspace_command(workspace_id, command, opts).await?;
    if json {
        print_json(&i);
    } else {
        println!("{}", i.command_id);
        eprintln!(
            "[workspace-exec] workspace_id={} command_id={} state={} timeout_seconds={} (background: `pyro workspace command status|read|wait|kill {} {}`)",
            i.workspace_id, i.command_id, i.state, i.timeout_seconds, i.workspace_id, i.command_id
        );
    }
    Ok(0)
}

/// Run one `workspace command` subcommand.
pub async fn run(pyro: &Pyro, cmd: CommandCommand) -> pyro::Result<u8> {
    let json = Mode::from_json(cmd.json()) == Mode::Json;
    match cmd {
        CommandCommand::Status(a) => {
            let i = pyro.status_workspace_command(&a.workspace_id, &a.command_id).await?;
            if json {
                print_json(&i)
            } else {
                print_info("workspace-command", &i)
            }
        }
        CommandCommand::Wait(a) => {
            let i = pyro.wait_workspace_command(&a.workspace_id, &a.command_id, a.timeout_seconds).await?;
            if json {
                print_json(&i)
            } else {
                print_info("workspace-command", &i)
            }
        }
        CommandCommand::Kill(a) => {
            let i = pyro.kill_workspace_command(&a.workspace_id, &a.command_id).await?;
            if json {
                print_json(&i)
            } else {
                print_info("workspace-command", &i)
            }
        }
        CommandCommand::Read(a) => {
            let o = pyro.read_workspace_command(&a.workspace_id, &a.command_id, a.cursor, a.max_bytes).await?;
            if json {
                print_json(&o);
            } else {
                let _ = std::io::stdout().lock().write_all(o.stdout.as_bytes());
                let _ = std::io::stderr().lock().write_all(o.stderr.as_bytes());
                let exit = o.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                eprintln!(
                    "[workspace-command] command_id={} state={} exit_code={exit} cursor={} next_cursor={} has_more={} dropped_bytes={}",
                    o.command_id, o.state, o.cursor, o.next_cursor, o.has_more, o.dropped_bytes
                );
            }
        }
    }
    Ok(0)
}
