//! Long-lived guest processes: PTY shells and background services.
//!
//! Shells live in the agent process (their PTY masters and output rings are in its memory);
//! services are detached process groups whose state and logs are files under
//! `/run/pyro-services` (tmpfs), so they outlive an agent restart and never reach the disk.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a secret value is replaced with, by the host and (in shell output) by the guest.
pub const REDACTED: &str = "[REDACTED]";
/// Guest directory of shell state (tmpfs).
pub const SHELLS_DIR: &str = "/run/pyro-shells";
/// Guest directory of service state and logs (tmpfs).
pub const SERVICES_DIR: &str = "/run/pyro-services";
/// Characters of output each shell keeps; older output is dropped (and reported as dropped).
pub const SHELL_RING_CHARS: u64 = 1024 * 1024;
/// Longest a `wait_for_idle_ms` read may wait in total, however chatty the shell is.
pub const SHELL_IDLE_WAIT_CAP_MS: u64 = 30_000;
/// Bytes of each service log stream kept per generation; one older generation is kept, so a
/// stream never takes more than twice this in the guest's tmpfs.
pub const SERVICE_LOG_GENERATION_BYTES: u64 = 4 * 1024 * 1024;

/// An operation on a PTY shell. Answered with [`ShellResponse::Status`] unless noted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShellRequest {
    /// Start `bash --noprofile --norc -i` (or `/bin/sh -i`) on a fresh PTY.
    Open {
        /// Names the shell in later requests; chosen by the host.
        shell_id: String,
        /// Working directory of the shell.
        cwd: String,
        /// Terminal width in columns.
        cols: u16,
        /// Terminal height in rows.
        rows: u16,
        /// Extra environment on top of the agent's base environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Values replaced by `[REDACTED]` before output enters the ring, also when a value
        /// arrives split across reads.
        #[serde(default)]
        redact: Vec<String>,
    },
    /// Output from character offset `cursor`. With `wait_for_idle_ms`, first wait until the
    /// shell has been quiet that long (or exited, or `max_chars` are available).
    /// Answer: [`ShellResponse::Output`].
    Read {
        /// The shell to read.
        shell_id: String,
        /// Character offset to read from (the previous answer's `next_cursor`).
        cursor: u64,
        /// Characters to return at most.
        max_chars: u64,
        /// Quiet time to wait for first (capped at [`SHELL_IDLE_WAIT_CAP_MS`]); `None`
        /// answers at once with what is there.
        wait_for_idle_ms: Option<u64>,
    },
    /// Type `input` into the shell's terminal.
    Write {
        /// The shell to write to.
        shell_id: String,
        /// Bytes for the PTY, as typed (include the newline to run a line).
        input: String,
    },
    /// `signal` is a signal number; it goes to the shell's foreground process group.
    Signal {
        /// The shell to signal.
        shell_id: String,
        /// A signal number, e.g. 2 for SIGINT.
        signal: i32,
    },
    /// HUP to the session, KILL after a grace period; the shell is forgotten.
    /// Answer: [`ShellResponse::Closed`].
    Close {
        /// The shell to close.
        shell_id: String,
    },
    /// Close every shell (workspace stop, reset). Answer: [`ShellResponse::Closed`].
    CloseAll,
}

/// What the agent knows about one shell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellStatus {
    /// The shell's id.
    pub shell_id: String,
    /// The shell process has not exited.
    pub running: bool,
    /// Exit code, or 128 + signal; `None` while running.
    pub exit_code: Option<i32>,
}

/// A slice of a shell's output, with where to continue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellOutput {
    /// The shell's state when the slice was taken.
    pub status: ShellStatus,
    /// The cursor the slice starts at (the request's, moved forward if that output was dropped).
    pub cursor: u64,
    /// The cursor to read from next.
    pub next_cursor: u64,
    /// The output between `cursor` and `next_cursor`, secrets redacted.
    pub output: String,
    /// More output exists past `next_cursor`.
    pub truncated: bool,
    /// Characters between the requested cursor and the oldest one still kept.
    pub dropped_chars: u64,
}

/// The answers to [`ShellRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShellResponse {
    /// The shell's state after the request.
    Status(ShellStatus),
    /// Answer to [`ShellRequest::Read`].
    Output(ShellOutput),
    /// Answer to [`ShellRequest::Close`] and [`ShellRequest::CloseAll`].
    Closed {
        /// The shells closed.
        shell_ids: Vec<String>,
    },
}

/// How the agent decides a service is ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReadinessProbe {
    /// The guest path exists.
    File {
        /// Guest path to look for.
        path: String,
    },
    /// `HOST:PORT` accepts a TCP connection within 1 s.
    Tcp {
        /// `HOST:PORT` in the guest's network namespace.
        address: String,
    },
    /// `GET url` answers 200-399 within 2 s (`http://` only).
    Http {
        /// The URL to fetch.
        url: String,
    },
    /// `sh -lc command` in the service cwd exits 0 within 10 s.
    Command {
        /// The shell command to run.
        command: String,
    },
}

/// An operation on background services. Answered with [`ServiceResponse::State`] unless
/// noted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServiceRequest {
    /// Start the service and wait (in this request only) for readiness.
    Start {
        /// Names the service; unique in the workspace.
        name: String,
        /// The shell command line; runs in its own process group under the agent's
        /// service runner, which records its exit status.
        command: String,
        /// Working directory of the service.
        cwd: String,
        /// Extra environment on top of the agent's base environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// How to tell the service is ready; `None` = ready once started.
        readiness: Option<ReadinessProbe>,
        /// Give up (and stop the service) when not ready after this long.
        ready_timeout_ms: u64,
        /// Pause between two probes.
        ready_interval_ms: u64,
    },
    /// The service's current state.
    Status {
        /// The service to describe.
        name: String,
    },
    /// Every service the guest knows. Answer: [`ServiceResponse::List`].
    List,
    /// Both streams; `tail_lines: None` = everything kept. Answer: [`ServiceResponse::Logs`].
    Logs {
        /// The service whose logs to read.
        name: String,
        /// Keep only the last lines of each stream.
        tail_lines: Option<u64>,
    },
    /// TERM to the process group, KILL after `grace_ms`.
    Stop {
        /// The service to stop.
        name: String,
        /// Time between TERM and KILL.
        grace_ms: u64,
    },
    /// Stop every running service (workspace stop, reset). Answer: [`ServiceResponse::List`].
    StopAll {
        /// Time between TERM and KILL, for each service.
        grace_ms: u64,
    },
}

/// Where a service is in its life (`state` of [`ServiceState`]): on the wire, and in the
/// host's payloads, its snake_case name. A guest sending any other value is refused at decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// The process runs (and passed its readiness check, if it has one).
    Running,
    /// The process ended on its own.
    Exited,
    /// It was stopped: `stop_service`, or a workspace stop or reset.
    Stopped,
    /// It never became ready: it exited first, or its readiness check timed out.
    Failed,
}

impl ServiceStatus {
    /// Every state.
    pub const ALL: [ServiceStatus; 4] =
        [ServiceStatus::Running, ServiceStatus::Exited, ServiceStatus::Stopped, ServiceStatus::Failed];

    /// The wire name: `running`, `exited`, `stopped` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Running => "running",
            ServiceStatus::Exited => "exited",
            ServiceStatus::Stopped => "stopped",
            ServiceStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"type": "string", "enum": [...]}`, inlined: pyro's payloads report the state as the plain
/// string it always was, now with its list of values.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ServiceStatus {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ServiceStatus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = ServiceStatus::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// The guest's record of a service (the source of truth while the VM runs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceState {
    /// The service's name.
    pub name: String,
    /// The command it runs.
    pub command: String,
    /// Its working directory.
    pub cwd: String,
    /// `running`, `exited`, `stopped` or `failed`.
    pub state: ServiceStatus,
    /// Pid (and process group id) of the service's runner; `None` if it never started.
    pub pid: Option<i32>,
    /// Exit code once ended, when the runner recorded one.
    pub exit_code: Option<i32>,
    /// The probe it was started with.
    pub readiness: Option<ReadinessProbe>,
    /// Start time, seconds since the Unix epoch (guest clock).
    pub started_at: f64,
    /// When readiness was first seen, same clock.
    pub ready_at: Option<f64>,
    /// When it was seen ended, same clock.
    pub ended_at: Option<f64>,
    /// `process_exited_before_ready`, `readiness_timeout`, `sigterm`, `sigkill`, ...
    pub stop_reason: Option<String>,
    /// Why readiness failed, for the error message.
    #[serde(default)]
    pub readiness_error: Option<String>,
}

/// A service's state and the output it kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceLogs {
    /// The service's current state.
    pub state: ServiceState,
    /// Standard output still kept (at most two generations).
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// Standard error still kept (at most two generations).
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Either stream was cut to `tail_lines`, or older output was rotated away.
    pub truncated: bool,
}

/// The answers to [`ServiceRequest`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceResponse {
    /// One service's state after the request.
    State(ServiceState),
    /// Answer to [`ServiceRequest::List`] and [`ServiceRequest::StopAll`].
    List {
        /// The services, each in its state after the request.
        services: Vec<ServiceState>,
    },
    /// Answer to [`ServiceRequest::Logs`].
    Logs(ServiceLogs),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service state is the plain string it was before it had a type, so agents and hosts
    /// of either kind understand each other; anything else a guest sends does not decode.
    #[test]
    fn service_status_is_a_plain_string_on_the_wire() {
        for s in ServiceStatus::ALL {
            let wire = rmp_serde::to_vec_named(&s).unwrap();
            assert_eq!(rmp_serde::from_slice::<String>(&wire).unwrap(), s.as_str());
            assert_eq!(rmp_serde::from_slice::<ServiceStatus>(&wire).unwrap(), s);
        }
        let bogus = rmp_serde::to_vec_named("paused").unwrap();
        assert!(rmp_serde::from_slice::<ServiceStatus>(&bogus).is_err());
    }
}
