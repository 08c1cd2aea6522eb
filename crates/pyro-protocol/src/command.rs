//! Background commands: a workspace command that outlives the request that started it.
//!
//! Each runs under the agent's runner process (`pyro-agent command-run`), which leads the
//! command's process group, writes both output streams into one bounded log and records how
//! the command ended. State and logs are files under [`COMMANDS_DIR`] (tmpfs), so they outlive
//! an agent restart and a disconnected host, and never reach the workspace disk.
//!
//! Output positions (`cursor`) count output bytes of both streams together, in the order the
//! guest received them: byte `n` of the command's output is at cursor `n`, whichever stream
//! it came from. Older output beyond [`COMMAND_LOG_KEPT_BYTES`] is dropped, oldest first.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Guest directory of background command state and logs (tmpfs).
pub const COMMANDS_DIR: &str = "/run/pyro-commands";
/// Log bytes (output plus 5 bytes of framing per chunk) in one log generation; the runner
/// keeps the current generation and one older one.
pub const COMMAND_LOG_GENERATION_BYTES: u64 = 4 * 1024 * 1024;
/// Most output of one command kept in the guest (two generations).
pub const COMMAND_LOG_KEPT_BYTES: u64 = 2 * COMMAND_LOG_GENERATION_BYTES;
/// Most background commands running at once in one guest.
pub const MAX_RUNNING_COMMANDS: usize = 8;
/// Most ended commands whose record and output the guest keeps; starting a command forgets
/// the oldest ended ones beyond this.
pub const MAX_ENDED_COMMANDS: usize = 16;
/// Most output bytes one read returns.
pub const MAX_COMMAND_READ_BYTES: u64 = 1024 * 1024;
/// Longest one `Wait` request waits in the guest; the host waits longer in several requests.
pub const MAX_COMMAND_WAIT_MS: u64 = 30_000;
/// Longest a command id may be (`[a-z0-9-]`, chosen by the host).
pub const MAX_COMMAND_ID_LEN: usize = 64;

/// True for a command id the guest accepts as a file name part.
pub fn valid_command_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_COMMAND_ID_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An operation on background commands. Answered with [`CommandResponse::State`] unless noted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommandRequest {
    /// Start `sh -lc command` in its own process group and answer at once.
    Start {
        /// Names the command in later requests; chosen by the host, see [`valid_command_id`].
        command_id: String,
        /// The shell command line.
        command: String,
        /// Working directory.
        cwd: String,
        /// Extra environment on top of the agent's base environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// The runner kills the group after this long (state `timed_out`, exit code 124).
        timeout_ms: u64,
    },
    /// The command's current state.
    Status {
        /// The command to describe.
        command_id: String,
    },
    /// Output from `cursor`. Answer: [`CommandResponse::Output`].
    Read {
        /// The command to read.
        command_id: String,
        /// Output position to read from (a previous answer's `next_cursor`, or 0).
        cursor: u64,
        /// Output bytes to return at most (at most [`MAX_COMMAND_READ_BYTES`]).
        max_bytes: u64,
    },
    /// Wait until the command ends or `timeout_ms` passes (at most [`MAX_COMMAND_WAIT_MS`]);
    /// answers its state either way, never kills it.
    Wait {
        /// The command to wait for.
        command_id: String,
        /// How long to wait at most.
        timeout_ms: u64,
    },
    /// TERM to the process group, KILL after `grace_ms`.
    Kill {
        /// The command to kill.
        command_id: String,
        /// Time between TERM and KILL.
        grace_ms: u64,
    },
    /// Kill every running command (workspace stop, reset). Answer: [`CommandResponse::List`].
    KillAll {
        /// Time between TERM and KILL.
        grace_ms: u64,
    },
    /// Every command the guest keeps. Answer: [`CommandResponse::List`].
    List,
}

/// Where a background command is in its life: on the wire and in payloads its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Still running.
    Running,
    /// Ended on its own; `exit_code` says how.
    Exited,
    /// Killed on request (a kill call, a workspace stop or reset).
    Killed,
    /// Killed by the runner at its timeout (exit code 124).
    TimedOut,
}

impl CommandStatus {
    /// Every state.
    pub const ALL: [CommandStatus; 4] =
        [CommandStatus::Running, CommandStatus::Exited, CommandStatus::Killed, CommandStatus::TimedOut];

    /// The wire name: `running`, `exited`, `killed` or `timed_out`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Running => "running",
            CommandStatus::Exited => "exited",
            CommandStatus::Killed => "killed",
            CommandStatus::TimedOut => "timed_out",
        }
    }
}

impl std::fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"type": "string", "enum": [...]}`, inlined, like the service states.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for CommandStatus {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CommandStatus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = CommandStatus::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// The guest's record of a background command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandState {
    /// The command's id.
    pub command_id: String,
    /// `running`, `exited`, `killed` or `timed_out`.
    pub state: CommandStatus,
    /// Pid (and process group id) of the command's runner.
    pub pid: Option<i32>,
    /// Exit code once ended: the command's own, 124 on timeout, 128+signal when killed.
    pub exit_code: Option<i32>,
    /// Start time, seconds since the Unix epoch (guest clock).
    pub started_at: f64,
    /// When it was seen ended, same clock.
    pub ended_at: Option<f64>,
    /// Output bytes written so far, both streams (the end cursor).
    pub output_bytes: u64,
}

/// A slice of a command's output, with where to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The command's state when the slice was taken.
    pub state: CommandState,
    /// Where the slice starts: the request's cursor, moved forward past dropped output.
    pub cursor: u64,
    /// Where to read next: `cursor` plus the bytes in `stdout` and `stderr`.
    pub next_cursor: u64,
    /// Standard output bytes in the slice.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Standard error bytes in the slice.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Output bytes between the requested cursor and the oldest one still kept.
    pub dropped_bytes: u64,
}

/// The answers to [`CommandRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandResponse {
    /// One command's state after the request.
    State(CommandState),
    /// Answer to [`CommandRequest::Read`].
    Output(CommandOutput),
    /// Answer to [`CommandRequest::List`] and [`CommandRequest::KillAll`].
    List {
        /// The commands, each in its state after the request.
        commands: Vec<CommandState>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids() {
        assert!(valid_command_id("a1b2-c3"));
        for bad in ["", "A", "a/b", "..", "a.b", &"a".repeat(65)] {
            assert!(!valid_command_id(bad), "{bad}");
        }
    }

    #[test]
    fn status_is_a_plain_string_on_the_wire() {
        for s in CommandStatus::ALL {
            let wire = rmp_serde::to_vec_named(&s).unwrap();
            assert_eq!(rmp_serde::from_slice::<String>(&wire).unwrap(), s.as_str());
        }
    }
}
