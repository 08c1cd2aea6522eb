//! Background commands: `exec` that answers at once with a command id and runs on in the
//! guest, whoever is connected. The guest agent runs each under a runner and keeps its state
//! and a bounded output log in tmpfs (`pyro_protocol::command`); the host keeps a small record
//! per command (`background/<id>.json`: the redacted command text, host times, and once the
//! command ended, how it ended and its history entry).
//!
//! A command that ended is recorded in the workspace history (like an exec, secrets redacted)
//! by the first call that sees it ended: status, read, wait, kill, or the stop of the
//! workspace, which kills what still runs and records it as `killed`.

use super::store::WorkspaceDir;
use super::{secrets, WorkspaceExecOptions, WORKSPACE_PATH};
use crate::util::now_f64;
use crate::{Error, ExecutionMode, Pyro, Result};
pub use pyro_protocol::command::CommandStatus;
use pyro_protocol::command::{
    CommandOutput, CommandRequest, CommandResponse, CommandState, COMMAND_LOG_KEPT_BYTES, MAX_COMMAND_READ_BYTES,
    MAX_COMMAND_WAIT_MS, MAX_RUNNING_COMMANDS,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Longest `wait_workspace_command` may wait, in seconds.
pub const MAX_COMMAND_WAIT_SECONDS: u64 = 3600;
/// Most output bytes one `read_workspace_command` returns.
pub const MAX_COMMAND_READ: u64 = MAX_COMMAND_READ_BYTES;
/// Most background commands running at once in one workspace.
pub const MAX_RUNNING: usize = MAX_RUNNING_COMMANDS;
/// Output of one command kept in the guest (both streams together); older output is dropped.
pub const OUTPUT_KEPT_BYTES: u64 = COMMAND_LOG_KEPT_BYTES;
/// Host records of ended commands kept per workspace; older ones are forgotten first.
const MAX_HOST_RECORDS: usize = 64;
/// Time between TERM and KILL when a command is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Round-trip allowance of a command request on top of any wait it asks for.
const CALL_SLACK: Duration = Duration::from_secs(30);

/// Payload of the background command calls: what a command is and how it is doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceCommandInfo {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Id of the command in this workspace (for status, read, wait and kill).
    pub command_id: String,
    /// The command as run under `/bin/sh -lc`, secret values redacted.
    pub command: String,
    /// Directory it runs in: always `/workspace`.
    pub cwd: String,
    /// `running`, `exited`, `killed` (a kill, or a workspace stop) or `timed_out`.
    pub state: CommandStatus,
    /// Exit code once ended: the command's own, 124 on timeout, 128+N when killed by signal N.
    pub exit_code: Option<i32>,
    /// When it started, Unix seconds (host clock).
    pub started_at: f64,
    /// When it ended, same clock; `null` while it runs.
    pub ended_at: Option<f64>,
    /// Run time so far (or in total once ended), in milliseconds.
    pub duration_ms: u64,
    /// The command is killed (`timed_out`, exit code 124) after this many seconds.
    pub timeout_seconds: u64,
    /// Output bytes it wrote so far, both streams (the cursor at the end of its output).
    pub output_bytes: u64,
    /// Its position in the workspace history once recorded there (after it ended).
    pub sequence: Option<u64>,
    /// `guest_vsock`: it runs in the guest through pyro's agent.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `read_workspace_command`: a slice of a command's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceCommandOutput {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Id of the command.
    pub command_id: String,
    /// The command's state when the slice was taken.
    pub state: CommandStatus,
    /// Its exit code once ended.
    pub exit_code: Option<i32>,
    /// Where this slice starts: the requested cursor, moved forward when older output was
    /// dropped (see `dropped_bytes`). Cursors count output bytes of both streams together.
    pub cursor: u64,
    /// The cursor to read from next.
    pub next_cursor: u64,
    /// Standard output in the slice (UTF-8, invalid bytes replaced, secret values redacted).
    pub stdout: String,
    /// Standard error in the slice, like `stdout`.
    pub stderr: String,
    /// More output is already there past `next_cursor`.
    pub has_more: bool,
    /// Output bytes between the requested cursor and the oldest still kept (dropped).
    pub dropped_bytes: u64,
    /// Output bytes written so far.
    pub output_bytes: u64,
}

/// The host's record of one background command.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostRecord {
    command_id: String,
    command: String,
    started_at: f64,
    timeout_seconds: u64,
    /// Set once the command ended and was recorded in the history.
    #[serde(default)]
    ended: Option<Ended>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ended {
    state: CommandStatus,
    exit_code: Option<i32>,
    ended_at: f64,
    duration_ms: u64,
    output_bytes: u64,
    sequence: Option<u64>,
}

fn records_dir(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("background")
}

fn record_path(dir: &WorkspaceDir, id: &str) -> PathBuf {
    records_dir(dir).join(format!("{id}.json"))
}

fn validate_command_id(id: &str) -> Result<()> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("invalid command id {id:?}: command ids are 12 lowercase hex characters")))
    }
}

fn load(dir: &WorkspaceDir, id: &str) -> Result<HostRecord> {
    validate_command_id(id)?;
    let text = std::fs::read(record_path(dir, id))
        .map_err(|_| Error::NotFound(format!("unknown background command '{id}' in workspace '{}'", dir.id)))?;
    serde_json::from_slice(&text).map_err(|e| Error::unreadable(format_args!("background command record {id}"), e))
}

fn save(dir: &WorkspaceDir, rec: &HostRecord) -> Result<()> {
    crate::util::create_private_dir(&records_dir(dir)).map_err(|e| Error::io("creating the background dir", e))?;
    let path = record_path(dir, &rec.command_id);
    crate::util::write_atomic(&path, &serde_json::to_vec_pretty(rec).expect("serialisable"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Forget the oldest ended records beyond [`MAX_HOST_RECORDS`].
fn prune(dir: &WorkspaceDir) {
    let Ok(rd) = std::fs::read_dir(records_dir(dir)) else { return };
    let mut ended: Vec<(f64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let rec: HostRecord = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((rec.ended?.ended_at, e.path()))
        })
        .collect();
    ended.sort_by(|a, b| a.0.total_cmp(&b.0));
    let excess = ended.len().saturating_sub(MAX_HOST_RECORDS);
    for (_, p) in ended.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

/// Drop every host record (reset: the history they point into is gone too).
pub(crate) fn forget_all(dir: &WorkspaceDir) {
    let _ = std::fs::remove_dir_all(records_dir(dir));
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn info_of(
    dir: &WorkspaceDir,
    rec: &HostRecord,
    live: Option<&CommandState>,
    mode: ExecutionMode,
) -> WorkspaceCommandInfo {
    let mut info = WorkspaceCommandInfo {
        workspace_id: dir.id.clone(),
        command_id: rec.command_id.clone(),
        command: rec.command.clone(),
        cwd: WORKSPACE_PATH.into(),
        state: CommandStatus::Running,
        exit_code: None,
        started_at: rec.started_at,
        ended_at: None,
        duration_ms: ((now_f64() - rec.started_at).max(0.0) * 1000.0) as u64,
        timeout_seconds: rec.timeout_seconds,
        output_bytes: live.map(|s| s.output_bytes).unwrap_or(0),
        sequence: None,
        execution_mode: mode,
        resumed_from_pause: false,
    };
    if let Some(e) = &rec.ended {
        info.state = e.state;
        info.exit_code = e.exit_code;
        info.ended_at = Some(e.ended_at);
        info.duration_ms = e.duration_ms;
        info.output_bytes = info.output_bytes.max(e.output_bytes);
        info.sequence = e.sequence;
    } else if let Some(s) = live {
        info.state = s.state;
        info.exit_code = s.exit_code;
        if s.state != CommandStatus::Running {
            // Guest times are the guest's word: the host only trusts the span, and bounds it.
            let span = (s.ended_at.unwrap_or(s.started_at) - s.started_at).max(0.0);
            let span = span.min((now_f64() - rec.started_at).max(0.0));
            info.duration_ms = (span * 1000.0) as u64;
            info.ended_at = Some(rec.started_at + span);
        }
    }
    info
}

/// Check a guest state against the command asked about (the guest is hostile).
fn checked(state: CommandState, id: &str) -> Result<CommandState> {
    if state.command_id != id {
        return Err(Error::Guest(format!("the guest answered about command {:?}, not '{id}'", state.command_id)));
    }
    Ok(state)
}

fn state_of(r: CommandResponse, id: &str) -> Result<CommandState> {
    match r {
        CommandResponse::State(s) => checked(s, id),
        _ => Err(Error::Guest("the guest answered a background command request with the wrong kind".into())),
    }
}

fn output_of(r: CommandResponse, id: &str, cursor: u64, max_bytes: u64) -> Result<CommandOutput> {
    let CommandResponse::Output(o) = r else {
        return Err(Error::Guest("the guest answered a read with the wrong kind".into()));
    };
    let len = (o.stdout.len() + o.stderr.len()) as u64;
    if o.state.command_id != id
        || len > max_bytes
        || o.cursor < cursor
        || o.next_cursor != o.cursor.saturating_add(len)
        || o.dropped_bytes != o.cursor - cursor
        || o.next_cursor > o.state.output_bytes.max(o.next_cursor)
    {
        return Err(Error::Guest(format!("the guest's answer to reading the output of '{id}' is inconsistent")));
    }
    Ok(o)
}

impl Pyro {
    /// Start `command` in `/workspace` in the background and answer at once with its id.
    /// It runs on whoever stays connected, until it ends, times out (`opts.timeout_seconds`,
    /// exit code 124), is killed, or the workspace stops. Its output is kept in the guest (the
    /// newest [`OUTPUT_KEPT_BYTES`]); once it ended, it is recorded in the history like an
    /// exec. `opts.sync` is not supported (run `sync` in the command).
    pub async fn start_workspace_command(
        &self,
        workspace_id: &str,
        command: &str,
        opts: &WorkspaceExecOptions,
    ) -> Result<WorkspaceCommandInfo> {
        crate::limits::validate_exec_timeout(opts.timeout_seconds)?;
        if command.trim().is_empty() {
            return Err(Error::InvalidInput("command must not be empty".into()));
        }
        if opts.sync {
            return Err(Error::InvalidInput(
                "sync is not supported for a background command; end the command with `sync` instead".into(),
            ));
        }
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "exec").await?;
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let env = match opts.secret_env.as_ref() {
            Some(map) => secrets::env_for(map, &secret_values)?,
            None => Default::default(),
        };
        let command_id = crate::util::new_id();
        let rec = HostRecord {
            command_id: command_id.clone(),
            command: secrets::redact(command, &secret_values),
            started_at: now_f64(),
            timeout_seconds: opts.timeout_seconds,
            ended: None,
        };
        let req = CommandRequest::Start {
            command_id: command_id.clone(),
            command: command.to_string(),
            cwd: WORKSPACE_PATH.into(),
            env,
            timeout_ms: opts.timeout_seconds * 1000,
        };
        let state = dir
            .machine()
            .command(req, CALL_SLACK)
            .await
            .map_err(|e| secrets::redact_error(e, &secret_values))
            .and_then(|r| state_of(r, &command_id))?;
        save(&dir, &rec)?;
        prune(&dir);
        super::ops::touch_activity(&dir)?;
        super::events::record(
            &dir,
            super::events::Event::BackgroundCommand(super::events::BackgroundCommandEvent {
                command_id: command_id.clone(),
                command: rec.command.clone(),
                status: "started".into(),
                exit_code: None,
            }),
        );
        let mut info = info_of(&dir, &rec, Some(&state), record.execution_mode);
        info.resumed_from_pause = resumed.is_some();
        Ok(info)
    }

    /// The state of a background command (and, once it ended, its history entry).
    pub async fn status_workspace_command(&self, workspace_id: &str, command_id: &str) -> Result<WorkspaceCommandInfo> {
        self.command_call(workspace_id, command_id, |id| CommandRequest::Status { command_id: id }, Duration::ZERO)
            .await
    }

    /// Wait up to `timeout_seconds` (0..=[`MAX_COMMAND_WAIT_SECONDS`]) for a background
    /// command to end; answers its state either way (`running` at the timeout: it is not
    /// killed).
    pub async fn wait_workspace_command(
        &self,
        workspace_id: &str,
        command_id: &str,
        timeout_seconds: u64,
    ) -> Result<WorkspaceCommandInfo> {
        if timeout_seconds > MAX_COMMAND_WAIT_SECONDS {
            return Err(Error::InvalidInput(format!(
                "timeout_seconds must be at most {MAX_COMMAND_WAIT_SECONDS} (got {timeout_seconds})"
            )));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_seconds);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = left.min(Duration::from_millis(MAX_COMMAND_WAIT_MS));
            let info = self
                .command_call(
                    workspace_id,
                    command_id,
                    |id| CommandRequest::Wait { command_id: id, timeout_ms: chunk.as_millis() as u64 },
                    chunk,
                )
                .await?;
            if info.state != CommandStatus::Running || tokio::time::Instant::now() >= deadline {
                return Ok(info);
            }
        }
    }

    /// Kill a background command's process group (TERM, KILL after 2 s); it ends `killed`
    /// and is recorded in the history. Killing an ended command changes nothing.
    pub async fn kill_workspace_command(&self, workspace_id: &str, command_id: &str) -> Result<WorkspaceCommandInfo> {
        self.command_call(
            workspace_id,
            command_id,
            |id| CommandRequest::Kill { command_id: id, grace_ms: KILL_GRACE.as_millis() as u64 },
            KILL_GRACE + Duration::from_secs(10),
        )
        .await
    }

    /// Output of a background command from `cursor` (0 = its start; then the previous
    /// answer's `next_cursor`), at most `max_bytes` (1..=[`MAX_COMMAND_READ`]) of both streams
    /// together. A cursor past the output written so far is refused; one before the oldest
    /// output kept is moved forward (`dropped_bytes`). Secret values are redacted per slice,
    /// so a value split across two reads is not.
    pub async fn read_workspace_command(
        &self,
        workspace_id: &str,
        command_id: &str,
        cursor: u64,
        max_bytes: u64,
    ) -> Result<WorkspaceCommandOutput> {
        if max_bytes == 0 || max_bytes > MAX_COMMAND_READ {
            return Err(Error::InvalidInput(format!(
                "max_bytes must be between 1 and {MAX_COMMAND_READ} (got {max_bytes})"
            )));
        }
        let dir = self.ws_dir(workspace_id)?;
        let rec = load(&dir, command_id)?;
        let (_life, record, _) = self.enter_started_call_resuming(&dir, "reading a background command").await?;
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let req = CommandRequest::Read { command_id: command_id.to_string(), cursor, max_bytes };
        let answer = match dir.machine().command(req, CALL_SLACK).await {
            Err(pyro_vmm::Error::Guest { kind: pyro_protocol::ErrorKind::NotFound, .. }) => {
                let seq = rec.ended.as_ref().and_then(|e| e.sequence);
                return Err(Error::InvalidState(format!(
                    "the output of background command '{command_id}' is no longer kept in the guest (the workspace was stopped, or newer commands replaced it){}",
                    seq.map(|s| format!("; what was recorded is history entry {s} (`pyro workspace logs`)")).unwrap_or_default()
                )));
            }
            other => other.map_err(Error::from)?,
        };
        let o = output_of(answer, command_id, cursor, max_bytes)?;
        let rec = settle(&dir, rec, &o.state, record.execution_mode, &secret_values).await?;
        let info = info_of(&dir, &rec, Some(&o.state), record.execution_mode);
        Ok(WorkspaceCommandOutput {
            workspace_id: dir.id.clone(),
            command_id: command_id.to_string(),
            state: info.state,
            exit_code: info.exit_code,
            cursor: o.cursor,
            next_cursor: o.next_cursor,
            stdout: secrets::redact(&lossy(&o.stdout), &secret_values),
            stderr: secrets::redact(&lossy(&o.stderr), &secret_values),
            has_more: o.next_cursor < o.state.output_bytes,
            dropped_bytes: o.dropped_bytes,
            output_bytes: o.state.output_bytes.max(o.next_cursor),
        })
    }

    /// One state request about a command, and the history entry if it ended.
    async fn command_call(
        &self,
        workspace_id: &str,
        command_id: &str,
        req: impl FnOnce(String) -> CommandRequest,
        wait: Duration,
    ) -> Result<WorkspaceCommandInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let rec = load(&dir, command_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "a background command call").await?;
        let mode = record.execution_mode;
        if rec.ended.is_some() {
            let mut info = info_of(&dir, &rec, None, mode);
            info.resumed_from_pause = resumed.is_some();
            return Ok(info);
        }
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let state = match dir.machine().command(req(command_id.to_string()), wait + CALL_SLACK).await {
            // The guest forgot it (a stop, or a crash of the VM): it ended without a word.
            Err(pyro_vmm::Error::Guest { kind: pyro_protocol::ErrorKind::NotFound, .. }) => CommandState {
                command_id: command_id.to_string(),
                state: CommandStatus::Killed,
                pid: None,
                exit_code: None,
                started_at: 0.0,
                ended_at: Some(0.0),
                output_bytes: 0,
            },
            other => state_of(other?, command_id)?,
        };
        let rec = settle(&dir, rec, &state, mode, &secret_values).await?;
        let mut info = info_of(&dir, &rec, Some(&state), mode);
        info.resumed_from_pause = resumed.is_some();
        Ok(info)
    }
}

/// If `state` says the command ended and nobody recorded it yet, record it in the
/// history with the output the guest kept. The host record's `ended` is the claim: a
/// second caller finds it set (records are written under the workspace's record lock
/// through the claim file).
async fn settle(
    dir: &WorkspaceDir,
    rec: HostRecord,
    state: &CommandState,
    mode: ExecutionMode,
    secret_values: &[(String, String)],
) -> Result<HostRecord> {
    if rec.ended.is_some() || state.state == CommandStatus::Running {
        return Ok(rec);
    }
    let claim = records_dir(dir).join(format!("{}.recording", rec.command_id));
    match std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
        .open(&claim)
    {
        Ok(_) => {}
        // Another call records it: report what the guest said.
        Err(_) => return Ok(rec),
    }
    let (stdout, stderr) = collect_output(dir, &rec.command_id).await;
    let mut info = info_of(dir, &rec, Some(state), mode);
    let exit_code = info.exit_code.unwrap_or(128 + 9);
    let (mut stdout, mut stderr) = (lossy(&stdout), lossy(&stderr));
    if state.started_at == 0.0 {
        stderr.push_str("the workspace stopped before the command's end was seen\n");
    }
    stdout = secrets::redact(&stdout, secret_values);
    stderr = secrets::redact(&stderr, secret_values);
    let sequence = super::ops::record_history(dir, &rec.command, mode, exit_code, info.duration_ms, &stdout, &stderr);
    let _ = std::fs::remove_file(&claim);
    let sequence = sequence?;
    info.sequence = Some(sequence);
    let rec = HostRecord {
        ended: Some(Ended {
            state: info.state,
            exit_code: Some(exit_code),
            ended_at: info.ended_at.unwrap_or_else(now_f64),
            duration_ms: info.duration_ms,
            output_bytes: info.output_bytes,
            sequence: Some(sequence),
        }),
        ..rec
    };
    save(dir, &rec)?;
    // The summary's record of its end: `killed` covers kills and stops; a timeout is an exit
    // (code 124), as in the history.
    let status = if info.state == CommandStatus::Killed { "killed" } else { "exited" };
    super::events::record(
        dir,
        super::events::Event::BackgroundCommand(super::events::BackgroundCommandEvent {
            command_id: rec.command_id.clone(),
            command: rec.command.clone(),
            status: status.into(),
            exit_code: Some(exit_code),
        }),
    );
    Ok(rec)
}

/// Everything the guest kept of a command's output, for the history.
async fn collect_output(dir: &WorkspaceDir, id: &str) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut cursor = 0;
    let vm = dir.machine();
    while ((out.len() + err.len()) as u64) < COMMAND_LOG_KEPT_BYTES + MAX_COMMAND_READ_BYTES {
        let req = CommandRequest::Read { command_id: id.to_string(), cursor, max_bytes: MAX_COMMAND_READ_BYTES };
        let Ok(answer) = vm.command(req, CALL_SLACK).await else { break };
        let Ok(o) = output_of(answer, id, cursor, MAX_COMMAND_READ_BYTES) else { break };
        if o.next_cursor == o.cursor {
            break;
        }
        out.extend_from_slice(&o.stdout);
        err.extend_from_slice(&o.stderr);
        cursor = o.next_cursor;
    }
    (out, err)
}

/// Record every background command that ended on its own and nobody has seen since, so the
/// history (`logs_workspace`) lists it. Best effort: a guest that does not answer adds none.
pub(crate) async fn settle_ended(dir: &WorkspaceDir) {
    let Ok(rd) = std::fs::read_dir(records_dir(dir)) else { return };
    let pending = rd.flatten().any(|e| {
        std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<HostRecord>(&b).ok())
            .is_some_and(|r| r.ended.is_none())
    });
    if !pending {
        return;
    }
    let Ok(CommandResponse::List { commands }) = dir.machine().command(CommandRequest::List, CALL_SLACK).await else {
        return;
    };
    let Ok(record) = dir.load() else { return };
    let secret_values = secrets::load(dir, &record.secrets).unwrap_or_default();
    for state in commands
        .into_iter()
        .filter(|s| s.state != CommandStatus::Running)
        .take(2 * MAX_RUNNING + pyro_protocol::command::MAX_ENDED_COMMANDS)
    {
        let Ok(rec) = load(dir, &state.command_id) else { continue };
        let _ = settle(dir, rec, &state, record.execution_mode, &secret_values).await;
    }
}

/// Kill every background command still running and record each (workspace stop or expiry):
/// they end `killed`. Best effort: the VM goes down anyway.
pub(crate) async fn end_all(dir: &WorkspaceDir) {
    let vm = dir.machine();
    let req = CommandRequest::KillAll { grace_ms: KILL_GRACE.as_millis() as u64 };
    let Ok(CommandResponse::List { commands }) = vm.command(req, KILL_GRACE * 2 + CALL_SLACK).await else { return };
    let Ok(record) = dir.load() else { return };
    let secret_values = secrets::load(dir, &record.secrets).unwrap_or_default();
    for state in commands.into_iter().take(2 * MAX_RUNNING + pyro_protocol::command::MAX_ENDED_COMMANDS) {
        let Ok(rec) = load(dir, &state.command_id) else { continue };
        let _ = settle(dir, rec, &state, record.execution_mode, &secret_values).await;
    }
}
