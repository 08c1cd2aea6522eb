//! Workspace operations that run against the started guest: exec and history, files,
//! patches, sync, diff, export, snapshots and reset.

use super::events::{self, Event};
use super::store::{LastCommand, WorkspaceDir};
use super::{info_of, ResetInfo, WorkspaceInfo, WORKSPACE_PATH};
use crate::util::now_f64;
use crate::{Error, ExecutionMode, Pyro, Result, WorkspaceState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Hard limit on texts moved by file read/write and patch results (SPECIFICATION.md,
/// "Limits").
pub const MAX_TEXT_BYTES: u64 = 1024 * 1024;

/// Payload of `exec_workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceExecResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Environment of the workspace, e.g. `debian:12`.
    pub environment: String,
    /// Version of that environment.
    pub environment_version: String,
    /// The command as run under `/bin/sh -lc`, with secret values replaced by `[REDACTED]`.
    pub command: String,
    /// Standard output, decoded as UTF-8 (invalid bytes replaced), secret values redacted, cut at
    /// [`OUTPUT_CAP_BYTES`](crate::vm::OUTPUT_CAP_BYTES).
    pub stdout: String,
    /// Standard error, like `stdout`. On a timeout it ends with `command timed out after Ns`.
    pub stderr: String,
    /// Exit status of the command; 124 when it timed out, 128+N when killed by signal N. A non-zero
    /// exit is a result, not an error.
    pub exit_code: i32,
    /// Wall time of the command in milliseconds.
    pub duration_ms: u64,
    /// `guest_vsock`: the command ran in the guest through pyro's agent.
    pub execution_mode: ExecutionMode,
    /// Backend that runs the VM: `qemu`.
    pub backend: String,
    /// Position of this command in the workspace history, 1-based.
    pub sequence: u64,
    /// Directory the command ran in: always `/workspace`.
    pub cwd: String,
    /// True when either stream hit the output cap.
    pub truncated: bool,
    /// True when stdout hit the output cap.
    pub stdout_truncated: bool,
    /// True when stderr hit the output cap.
    pub stderr_truncated: bool,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Options of [`Pyro::exec_workspace_with`] ([`WorkspaceExecOptions::new`] gives the defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceExecOptions {
    /// Kill the command after this many seconds (exit code 124); 1..=86400, default 30.
    pub timeout_seconds: u64,
    /// Workspace secret name -> environment variable name, for this one command.
    pub secret_env: Option<std::collections::BTreeMap<String, String>>,
    /// Flush the guest's filesystems (`sync`) after the command ends, before answering:
    /// everything the command wrote is then on the disk image. Default `false`.
    pub sync: bool,
}

impl WorkspaceExecOptions {
    /// 30 s timeout, no secrets, no sync.
    pub fn new() -> Self {
        WorkspaceExecOptions { timeout_seconds: crate::defaults::TIMEOUT_SECONDS, secret_env: None, sync: false }
    }
}

impl Default for WorkspaceExecOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// One history entry (`commands/<seq>.json`) with its output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandEntry {
    /// Position in the history, 1-based.
    pub sequence: u64,
    /// The command text, secret values redacted.
    pub command: String,
    /// Directory it ran in: always `/workspace`.
    pub cwd: String,
    /// Exit status; 124 when it timed out.
    pub exit_code: i32,
    /// Wall time of the command in milliseconds.
    pub duration_ms: u64,
    /// `guest_vsock` (ran in the guest through pyro's agent).
    pub execution_mode: ExecutionMode,
    /// When the command finished, Unix seconds (fractional).
    pub recorded_at: f64,
    /// Its standard output as recorded (redacted, capped like the exec result).
    #[serde(default)]
    pub stdout: String,
    /// Its standard error as recorded (redacted, capped like the exec result).
    #[serde(default)]
    pub stderr: String,
}

/// Payload of `logs_workspace`: the command history since create or the last reset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceLogs {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Number of entries.
    pub count: usize,
    /// The recorded commands still kept (the newest 1000 within 64 MiB of output), oldest first.
    pub entries: Vec<CommandEntry>,
}

/// What `push_workspace_sync` copied in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncInfo {
    /// `directory` (the children of a host directory) or `tar_archive` (a `.tar`/`.tar.gz`/`.tgz`
    /// file).
    pub mode: String,
    /// Absolute host path of the source.
    pub source_path: String,
    /// Guest directory it was unpacked into (`/workspace` or below).
    pub destination: String,
    /// Archive entries (files, directories, symlinks) unpacked.
    pub entry_count: u64,
    /// Bytes of regular-file content unpacked.
    pub bytes_written: u64,
}

/// Payload of `push_workspace_sync`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// What was copied.
    pub workspace_sync: SyncInfo,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `export_workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Guest path that was exported (normalised, `/workspace` or below).
    pub workspace_path: String,
    /// Absolute host path written (it did not exist before).
    pub output_path: String,
    /// What was exported: `file`, `directory` or `symlink`.
    pub artifact_type: String,
    /// Archive entries (files, directories, symlinks) exported.
    pub entry_count: u64,
    /// Bytes of regular-file content exported.
    pub bytes_written: u64,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// One entry of `list_workspace_files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileListEntry {
    /// Absolute guest path.
    pub path: String,
    /// `file`, `directory` or `symlink` (symlinks are not followed).
    pub artifact_type: String,
    /// Size in bytes; 0 for directories, the target length for symlinks.
    pub size_bytes: u64,
    /// Target of a symlink; `None` for files and directories.
    pub link_target: Option<String>,
}

/// Payload of `list_workspace_files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileListResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// The listed path, normalised to an absolute guest path.
    pub path: String,
    /// Whether subdirectories were listed too.
    pub recursive: bool,
    /// The children of a directory sorted by path (the whole subtree when `recursive`), or one
    /// entry when the path is not a directory.
    pub entries: Vec<FileListEntry>,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `read_workspace_file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileReadResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Absolute guest path read.
    pub path: String,
    /// Full size of the file in bytes.
    pub size_bytes: u64,
    /// The byte limit that was asked for.
    pub max_bytes: u64,
    /// The first `max_bytes` bytes (less if a UTF-8 character would be split), decoded as UTF-8
    /// with invalid bytes replaced. Not redacted.
    pub content: String,
    /// True when `content` is not the whole file.
    pub truncated: bool,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `write_workspace_file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileWriteResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Absolute guest path written.
    pub path: String,
    /// Size of the file after the write, in bytes.
    pub size_bytes: u64,
    /// Bytes written (the UTF-8 length of the text).
    pub bytes_written: u64,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Counts of files touched by `apply_workspace_patch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PatchSummary {
    /// Files in the patch.
    pub total: u64,
    /// Files created.
    pub added: u64,
    /// Files changed in place.
    pub modified: u64,
    /// Files removed.
    pub deleted: u64,
}

/// One file touched by `apply_workspace_patch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PatchEntry {
    /// Absolute guest path of the file.
    pub path: String,
    /// `added`, `modified` or `deleted`.
    pub status: String,
}

/// Payload of `apply_workspace_patch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PatchResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Whether any file was changed.
    pub changed: bool,
    /// Counts by status.
    pub summary: PatchSummary,
    /// One entry per file, sorted by path.
    pub entries: Vec<PatchEntry>,
    /// The patch text as given.
    pub patch: String,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// The comparison inside [`DiffResult`], defined with the diff rules in `pyro-tree`.
pub use pyro_tree::diff::{DiffEntry, DiffPayload, DiffSummary};

/// Payload of `diff_workspace`: `/workspace` now against the create-time baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiffResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// The comparison; its fields (`changed`, `summary`, `entries`, `patch`) appear at the top
    /// level of the JSON payload.
    #[serde(flatten)]
    pub diff: DiffPayload,
}

/// One snapshot of `/workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotInfo {
    /// Id of the workspace.
    pub workspace_id: String,
    /// `baseline`, or a name matching `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub snapshot_name: String,
    /// `baseline` or `named`.
    pub kind: String,
    /// When it was taken, Unix seconds; for `baseline` the workspace's creation time.
    pub created_at: f64,
    /// Archive entries (files, directories, symlinks) it holds.
    pub entry_count: u64,
    /// Bytes of regular-file content it holds.
    pub bytes_written: u64,
    /// `false` for `baseline`, `true` for named snapshots.
    pub deletable: bool,
}

/// Payload of `create_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotCreateResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// The new snapshot.
    pub snapshot: SnapshotInfo,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
}

/// Payload of `list_snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotList {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Number of snapshots, `baseline` included.
    pub count: usize,
    /// `baseline` first, then named snapshots newest first (ties by name).
    pub snapshots: Vec<SnapshotInfo>,
}

/// Payload of `delete_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotDeleteResult {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Name of the deleted snapshot.
    pub snapshot_name: String,
    /// Always `true` on success.
    pub deleted: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One history file, written whole under a temporary name and renamed into place (never
/// torn, owner-only like every `write_atomic` file). Not fsynced on its own: the record saved
/// right after it is (and on ext4 that commit carries these renames and their data too);
/// `logs` skips an entry whose files a host crash lost, and `command_count` stays true.
/// Three fsyncs less per exec.
fn write_history_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Append one entry (redacted command and output) to the history and bump `command_count`;
/// returns its sequence number. Shared by exec and background commands.
pub(crate) fn record_history(
    dir: &WorkspaceDir,
    command: &str,
    execution_mode: ExecutionMode,
    exit_code: i32,
    duration_ms: u64,
    stdout: &str,
    stderr: &str,
) -> Result<u64> {
    let (_, sequence) = dir.update(|rec| {
        let seq = rec.command_count + 1;
        let entry = CommandEntry {
            sequence: seq,
            command: command.to_string(),
            cwd: WORKSPACE_PATH.into(),
            exit_code,
            duration_ms,
            execution_mode,
            recorded_at: now_f64(),
            stdout: String::new(),
            stderr: String::new(),
        };
        let base = dir.commands_dir().join(format!("{seq:06}"));
        let write = |ext: &str, bytes: &[u8]| {
            write_history_file(&base.with_extension(ext), bytes)
                .map_err(|e| Error::io("recording the command history", e))
        };
        write("stdout", stdout.as_bytes())?;
        write("stderr", stderr.as_bytes())?;
        write("json", &serde_json::to_vec_pretty(&entry).expect("entry serializes"))?;
        rec.command_count = seq;
        rec.last_command = Some(LastCommand {
            sequence: seq,
            command: command.to_string(),
            cwd: WORKSPACE_PATH.into(),
            exit_code,
            duration_ms,
            execution_mode,
        });
        rec.last_activity_at = now_f64();
        // Keep the host's copy of the history bounded (command_count stays the true total).
        // A failure here costs disk, not the command's result: the next exec prunes again.
        let _ = super::retention::prune_history(
            &dir.commands_dir(),
            super::retention::HISTORY_MAX_ENTRIES,
            super::retention::HISTORY_MAX_OUTPUT_BYTES,
        );
        Ok(seq)
    })?;
    Ok(sequence)
}

pub(crate) fn touch_activity(dir: &WorkspaceDir) -> Result<()> {
    dir.update(|r| {
        r.last_activity_at = now_f64();
        Ok(())
    })
    .map(|_| ())
}

impl Pyro {
    /// Enter a call that needs the running VM: the shared lifecycle lock (held by the caller
    /// for the whole call, so no stop, reset or delete pulls the VM away midway) and the
    /// record, loaded once under it: an interrupted reset is settled, a workspace past its TTL
    /// is stopped and refused, a dead VM turns the workspace `stopped`. The liveness check
    /// reloads the record only when the supervisor is gone, so the common path loads it once.
    ///
    /// A paused workspace is resumed first (see
    /// [`enter_started_call_resuming`](Pyro::enter_started_call_resuming), which also says
    /// whether it was).
    pub(crate) async fn enter_started_call(
        &self,
        dir: &WorkspaceDir,
        op: &str,
    ) -> Result<(super::store::FileLock, super::store::WorkspaceRecord)> {
        let (life, record, _) = self.enter_started_call_resuming(dir, op).await?;
        Ok((life, record))
    }

    /// [`enter_started_call`](Pyro::enter_started_call) without the resume: a paused
    /// workspace comes back as it is, for the caller to resume.
    pub(crate) async fn enter_started_call_inner(
        &self,
        dir: &WorkspaceDir,
        op: &str,
    ) -> Result<(super::store::FileLock, super::store::WorkspaceRecord)> {
        if super::reset::has_intent(dir) {
            let _life = dir.lifecycle_exclusive().await?;
            super::reset::recover(dir).await?;
        }
        let life = dir.lifecycle_shared().await?;
        let mut record = dir.load()?;
        if record.expires_at <= now_f64() {
            if matches!(record.state, WorkspaceState::Started | WorkspaceState::Paused) {
                // Stopping takes the exclusive lock: let go of the shared one first.
                drop(life);
                self.expire(dir).await.ok();
            }
            return Err(Error::InvalidState(format!(
                "workspace '{}' expired and was stopped (disk kept); extend it with `pyro workspace update {} --ttl-seconds N`, then start it",
                dir.id, dir.id
            )));
        }
        if record.state == WorkspaceState::Started && !dir.vm().is_running() {
            record = super::refresh_liveness(dir)?;
        }
        if record.state != WorkspaceState::Started && record.state != WorkspaceState::Paused {
            return Err(Error::InvalidState(format!("workspace {} must be in 'started' state before {op}", dir.id)));
        }
        Ok((life, record))
    }

    /// Run a command in `/workspace`; recorded in the history. A paused workspace is resumed
    /// first (`resumed_from_pause` in the result), as for every file, shell and service call.
    ///
    /// `secret_env` maps workspace secret names to environment variable names for this one
    /// command. Secret values are redacted from the result and the history.
    ///
    /// What the command writes is the command's business: it reaches the disk with the guest
    /// kernel's writeback (ext4 commits every ~5 s, dirty data within ~30 s) or at a clean
    /// `stop`, so a VM killed right after the answer may lose it. Use
    /// [`exec_workspace_with`](Pyro::exec_workspace_with) with `sync`, or run `sync` in the
    /// command, to have it on disk before the answer.
    pub async fn exec_workspace(
        &self,
        workspace_id: &str,
        command: &str,
        timeout_seconds: u64,
        secret_env: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<WorkspaceExecResult> {
        let opts = WorkspaceExecOptions { timeout_seconds, secret_env: secret_env.cloned(), sync: false };
        self.exec_workspace_with(workspace_id, command, &opts).await
    }

    /// [`exec_workspace`](Pyro::exec_workspace) with every option; `sync` flushes the guest's
    /// filesystems after the command ends and before answering, so everything it wrote
    /// survives even a VM killed right after the answer.
    pub async fn exec_workspace_with(
        &self,
        workspace_id: &str,
        command: &str,
        opts: &WorkspaceExecOptions,
    ) -> Result<WorkspaceExecResult> {
        let (timeout_seconds, secret_env) = (opts.timeout_seconds, opts.secret_env.as_ref());
        crate::limits::validate_exec_timeout(timeout_seconds)?;
        if command.trim().is_empty() {
            return Err(Error::InvalidInput("command must not be empty".into()));
        }
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "exec").await?;
        let secret_values = super::secrets::load(&dir, &record.secrets)?;
        let env = match secret_env {
            Some(map) => super::secrets::env_for(map, &secret_values)?,
            None => Default::default(),
        };
        let r = dir
            .machine()
            .exec(command, Some(WORKSPACE_PATH), env, Duration::from_secs(timeout_seconds), crate::vm::OUTPUT_CAP_BYTES)
            .await
            .map_err(|e| super::secrets::redact_error(e, &secret_values))?;
        if opts.sync {
            dir.machine().sync().await.map_err(|e| {
                Error::Guest(format!(
                    "the command ended (exit code {}) but flushing the guest's filesystems failed: {e}",
                    r.exit_code
                ))
            })?;
        }
        let stdout = super::secrets::redact(&lossy(&r.stdout), &secret_values);
        let stderr = super::secrets::redact(&lossy(&r.stderr), &secret_values);
        // The command text may carry a value too; history and payload keep the redacted form.
        let shown_command = super::secrets::redact(command, &secret_values);
        let command = shown_command.as_str();
        let execution_mode = record.execution_mode;
        let sequence = record_history(&dir, command, execution_mode, r.exit_code, r.duration_ms, &stdout, &stderr)?;
        Ok(WorkspaceExecResult {
            workspace_id: dir.id.clone(),
            environment: record.environment,
            environment_version: record.environment_version,
            command: command.to_string(),
            stdout,
            stderr,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            execution_mode: record.execution_mode,
            backend: record.backend.as_str().to_string(),
            sequence,
            cwd: WORKSPACE_PATH.into(),
            truncated: r.stdout_truncated || r.stderr_truncated,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Command history with outputs: the newest kept entries, oldest first. The host keeps at
    /// most [`HISTORY_MAX_ENTRIES`](super::retention::HISTORY_MAX_ENTRIES) entries and
    /// [`HISTORY_MAX_OUTPUT_BYTES`](super::retention::HISTORY_MAX_OUTPUT_BYTES) of their output;
    /// older entries are deleted (the workspace's `command_count` still counts them).
    pub async fn logs_workspace(&self, workspace_id: &str) -> Result<WorkspaceLogs> {
        let dir = self.ws_dir(workspace_id)?;
        // Background commands that ended on their own belong in the history too. Only a
        // started workspace is asked (a paused one is not resumed for it), under the shared
        // lifecycle lock so no stop pulls the VM away midway.
        if let Ok(Some(_life)) = dir.try_lifecycle_shared() {
            if dir.load().is_ok_and(|r| r.state == WorkspaceState::Started) && dir.vm().is_running() {
                super::commands::settle_ended(&dir).await;
            }
        }
        let record = dir.load()?;
        let secret_values = super::secrets::load(&dir, &record.secrets)?;
        let mut entries = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir.commands_dir()) {
            let mut files: Vec<PathBuf> =
                rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
            files.sort();
            for f in files {
                let Ok(text) = std::fs::read_to_string(&f) else { continue };
                let Ok(mut entry) = serde_json::from_str::<CommandEntry>(&text) else { continue };
                let read = |ext: &str| std::fs::read(f.with_extension(ext)).map(|b| lossy(&b)).unwrap_or_default();
                entry.stdout = super::secrets::redact(&read("stdout"), &secret_values);
                entry.stderr = super::secrets::redact(&read("stderr"), &secret_values);
                entries.push(entry);
            }
        }
        // By number, not file name: `{seq:06}` grows a digit past 999999.
        entries.sort_by_key(|e| e.sequence);
        Ok(WorkspaceLogs { workspace_id: dir.id, count: entries.len(), entries })
    }

    /// List a path under `/workspace` in the running guest (relative paths are taken under
    /// `/workspace`; `..` is refused). Symlinks are listed, not followed.
    pub async fn list_workspace_files(
        &self,
        workspace_id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<FileListResult> {
        let path = pyro_tree::paths::normalize_workspace_path(path)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_file_list").await?;
        let (_, mut entries) = dir.machine().list_files(&path, recursive).await?;
        // Guest-reported paths are shown to users and agents, who may act on them: only
        // plain absolute paths at or under the listed path are passed on.
        entries.retain(|e| {
            let ok = pyro_tree::paths::is_plain_path_under(&e.path, &path);
            if !ok {
                crate::util::log_guest_refusal(&dir.root, &format!("dropped a file list entry {:?}", e.path));
            }
            ok
        });
        Ok(FileListResult {
            workspace_id: dir.id,
            path,
            recursive,
            entries: entries
                .into_iter()
                .map(|e| FileListEntry {
                    path: e.path,
                    artifact_type: e.artifact_type,
                    size_bytes: e.size_bytes,
                    link_target: e.link_target,
                })
                .collect(),
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Read a file; `max_bytes` 1..=1 MiB; truncation never splits a UTF-8 character.
    pub async fn read_workspace_file(&self, workspace_id: &str, path: &str, max_bytes: u64) -> Result<FileReadResult> {
        let path = pyro_tree::paths::normalize_workspace_path(path)?;
        if max_bytes == 0 {
            return Err(Error::InvalidInput("max_bytes must be positive".into()));
        }
        if max_bytes > MAX_TEXT_BYTES {
            return Err(Error::InvalidInput(format!("max_bytes must be at most {MAX_TEXT_BYTES} bytes")));
        }
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_file_read").await?;
        // Three bytes past the limit show whether the cut would split a character.
        let (size, data) = dir.machine().read_file(&path, max_bytes + 3).await?;
        let (content, cut) = pyro_tree::text::truncate_utf8(&data, max_bytes as usize);
        Ok(FileReadResult {
            workspace_id: dir.id,
            path,
            size_bytes: size,
            max_bytes,
            content,
            truncated: cut || size > max_bytes,
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Write a text file (≤ 1 MiB). An existing file keeps its mode; new files are 0644.
    pub async fn write_workspace_file(&self, workspace_id: &str, path: &str, text: &str) -> Result<FileWriteResult> {
        let path = pyro_tree::paths::normalize_workspace_path(path)?;
        if path == WORKSPACE_PATH {
            return Err(Error::InvalidInput("workspace file write only supports regular file targets".into()));
        }
        if text.len() as u64 > MAX_TEXT_BYTES {
            return Err(Error::InvalidInput(format!(
                "text is {} bytes; workspace file write accepts at most {MAX_TEXT_BYTES} bytes",
                text.len()
            )));
        }
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_file_write").await?;
        let (size, written) = dir.machine().write_file(&path, text.as_bytes().to_vec()).await?;
        events::record(&dir, Event::FileWrite(events::FileWriteEvent { path: path.clone(), bytes_written: written }));
        Ok(FileWriteResult {
            workspace_id: dir.id,
            path,
            size_bytes: size,
            bytes_written: written,
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Apply a unified/git diff to `/workspace`. Everything is checked before anything is
    /// written; a patch that does not apply changes nothing.
    pub async fn apply_workspace_patch(&self, workspace_id: &str, patch: &str) -> Result<PatchResult> {
        if patch.len() as u64 > MAX_TEXT_BYTES {
            return Err(Error::InvalidInput(format!("patch must be at most {MAX_TEXT_BYTES} bytes")));
        }
        let files = pyro_tree::patch::parse_patch(patch)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_patch_apply").await?;
        let vm = dir.machine();
        // Preflight: compute every result in memory.
        let mut plan: Vec<(String, Option<String>, Option<String>, &'static str)> = Vec::new();
        for fp in &files {
            let path = fp.path().to_string();
            let current = match vm.list_files(&path, false).await.map_err(Error::from) {
                Ok((kind, _)) if kind == "file" => {
                    let (size, data) = vm.read_file(&path, MAX_TEXT_BYTES + 1).await?;
                    if size > MAX_TEXT_BYTES {
                        return Err(Error::InvalidInput(format!(
                            "workspace patch only supports files up to 1 MiB: {path}"
                        )));
                    }
                    Some(String::from_utf8(data).map_err(|_| {
                        Error::InvalidInput(format!("workspace patch only supports UTF-8 text files: {path}"))
                    })?)
                }
                Ok(_) => {
                    return Err(Error::InvalidInput(format!("workspace patch only supports regular files: {path}")))
                }
                Err(Error::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let status = fp.status();
            match (status, &current) {
                ("added", Some(_)) => return Err(Error::InvalidInput(format!("cannot add an existing path: {path}"))),
                ("modified" | "deleted", None) => {
                    return Err(Error::InvalidInput(format!("cannot modify a missing path: {path}")))
                }
                _ => {}
            }
            let result = pyro_tree::patch::apply_file_patch(current.as_deref(), fp)?;
            if let Some(r) = &result {
                if r.len() as u64 > MAX_TEXT_BYTES {
                    return Err(Error::InvalidInput(format!("patched file would exceed 1 MiB: {path}")));
                }
            }
            plan.push((path, current, result, status));
        }
        // Write phase; on a failure, put back what was already changed.
        let mut done: Vec<(String, Option<String>)> = Vec::new();
        for (path, before, after, _) in &plan {
            let step = match after {
                Some(text) => vm.write_file(path, text.as_bytes().to_vec()).await.map(|_| ()),
                None => vm.delete_path(path).await,
            };
            if let Err(e) = step {
                for (p, b) in done.iter().rev() {
                    let _ = match b {
                        Some(t) => vm.write_file(p, t.as_bytes().to_vec()).await.map(|_| ()),
                        None => vm.delete_path(p).await,
                    };
                }
                return Err(e.into());
            }
            done.push((path.clone(), before.clone()));
        }
        touch_activity(&dir)?;
        let count = |s: &str| plan.iter().filter(|p| p.3 == s).count() as u64;
        if !plan.is_empty() {
            let mut paths: Vec<String> = plan.iter().map(|p| p.0.clone()).collect();
            paths.sort();
            events::record(
                &dir,
                Event::PatchApply(events::PatchEvent {
                    added: count("added"),
                    modified: count("modified"),
                    deleted: count("deleted"),
                    paths,
                }),
            );
        }
        Ok(PatchResult {
            workspace_id: dir.id,
            changed: !plan.is_empty(),
            summary: PatchSummary {
                total: plan.len() as u64,
                added: count("added"),
                modified: count("modified"),
                deleted: count("deleted"),
            },
            entries: plan.iter().map(|p| PatchEntry { path: p.0.clone(), status: p.3.to_string() }).collect(),
            patch: patch.to_string(),
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Push a host directory or tar archive into the workspace (default `/workspace`).
    pub async fn push_workspace_sync(&self, workspace_id: &str, source_path: &Path, dest: &str) -> Result<SyncResult> {
        let destination = pyro_tree::paths::normalize_destination(dest)?;
        let source = pyro_tree::archive::SeedSource::classify(source_path)?;
        let dir = self.ws_dir(workspace_id)?;
        let tar = source.to_tar()?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_sync_push").await?;
        let (entries, bytes) = dir.machine().push_archive(&tar[..], &destination).await?;
        events::record(
            &dir,
            Event::SyncPush(events::SyncEvent {
                source_path: source.path().display().to_string(),
                destination: destination.clone(),
                mode: source.mode().to_string(),
                entry_count: entries,
                bytes_written: bytes,
            }),
        );
        touch_activity(&dir)?;
        Ok(SyncResult {
            workspace_id: dir.id,
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
            workspace_sync: SyncInfo {
                mode: source.mode().to_string(),
                source_path: source.path().display().to_string(),
                destination,
                entry_count: entries,
                bytes_written: bytes,
            },
        })
    }

    /// Compare `/workspace` with the create-time baseline.
    pub async fn diff_workspace(&self, workspace_id: &str) -> Result<DiffResult> {
        let dir = self.ws_dir(workspace_id)?;
        let (_life, _record) = self.enter_started_call(&dir, "workspace_diff").await?;
        let baseline = std::fs::File::open(dir.baseline_tar()).map_err(|_| {
            Error::InvalidState(format!("workspace diff requires a baseline snapshot; workspace '{}' has none", dir.id))
        })?;
        let current = dir.machine().pull_archive(WORKSPACE_PATH, &dir.root).await?;
        let diff = pyro_tree::diff::diff_tar_streams(
            std::io::BufReader::new(baseline),
            std::io::BufReader::new(current.file.as_file()),
        )?;
        Ok(DiffResult { workspace_id: dir.id, diff })
    }

    /// Copy a file, directory or symlink out of the workspace to a new host path.
    pub async fn export_workspace(&self, workspace_id: &str, path: &str, output_path: &Path) -> Result<ExportResult> {
        let workspace_path = pyro_tree::paths::normalize_destination(path)?;
        let output = absolute_output(output_path)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "workspace_export").await?;
        let exported = dir.machine().pull_archive(&workspace_path, &dir.root).await?;
        if let Some(parent) = output.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        // Counts come from what was actually written, not from what the guest claimed.
        let (entry_count, bytes_written) = pyro_tree::archive::materialize_export_stream(
            std::io::BufReader::new(exported.file.as_file()),
            &exported.artifact_type,
            &output,
        )?;
        events::record(
            &dir,
            Event::Export(events::ExportEvent {
                workspace_path: Some(workspace_path.clone()),
                output_path: output.display().to_string(),
                artifact_type: exported.artifact_type.clone(),
                bytes_written,
            }),
        );
        Ok(ExportResult {
            workspace_id: dir.id,
            workspace_path,
            output_path: output.display().to_string(),
            artifact_type: exported.artifact_type,
            entry_count,
            bytes_written,
            execution_mode: record.execution_mode,
            resumed_from_pause: resumed.is_some(),
        })
    }

    /// Save the current `/workspace` tree under a name (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, not
    /// `baseline`, not already taken). Only `/workspace` is captured. A workspace keeps at most
    /// [`MAX_NAMED_SNAPSHOTS`](super::retention::MAX_NAMED_SNAPSHOTS) named snapshots taking at
    /// most [`MAX_NAMED_SNAPSHOT_BYTES`](super::retention::MAX_NAMED_SNAPSHOT_BYTES) together.
    pub async fn create_snapshot(&self, workspace_id: &str, snapshot_name: &str) -> Result<SnapshotCreateResult> {
        let name = pyro_tree::names::validate_snapshot_name(snapshot_name)?;
        if name == "baseline" {
            return Err(Error::InvalidInput("snapshot name 'baseline' is reserved".into()));
        }
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record) = self.enter_started_call(&dir, "snapshot_create").await?;
        let meta_path = dir.snapshots_dir().join(format!("{name}.json"));
        if meta_path.exists() {
            return Err(Error::InvalidInput(format!("snapshot '{name}' already exists in workspace '{}'", dir.id)));
        }
        // Checked before the (possibly large) pull and again with its size: the host disk must
        // not fill up with snapshots.
        let (count, used) = super::retention::named_snapshot_usage(&dir.snapshots_dir());
        super::retention::check_snapshot_room(&dir.id, count, used, 0)?;
        crate::util::create_private_dir(&dir.snapshots_dir())
            .map_err(|e| Error::io("creating the snapshots dir", e))?;
        let exported = dir.machine().pull_archive(WORKSPACE_PATH, &dir.snapshots_dir()).await?;
        super::retention::check_snapshot_room(&dir.id, count, used, exported.size)?;
        // The archive comes from the guest: every member is validated (names, types) before
        // it is kept, so a restore never meets a member it would refuse.
        pyro_tree::archive::for_each_member(std::io::BufReader::new(exported.file.as_file()), |_, _| Ok(()))?;
        let info = SnapshotInfo {
            workspace_id: dir.id.clone(),
            snapshot_name: name.clone(),
            kind: "named".into(),
            created_at: now_f64(),
            entry_count: exported.entry_count,
            bytes_written: exported.bytes_written,
            deletable: true,
        };
        exported.file.as_file().sync_all().map_err(|e| Error::io("storing the snapshot", e))?;
        exported
            .file
            .persist(dir.snapshots_dir().join(format!("{name}.tar")))
            .map_err(|e| Error::io("storing the snapshot", e.error))?;
        // The metadata file is written last: it is what makes the snapshot exist.
        crate::util::write_atomic(&meta_path, &serde_json::to_vec_pretty(&info).expect("serializes"))
            .map_err(|e| Error::io("storing the snapshot", e))?;
        events::record(&dir, Event::SnapshotCreate(events::SnapshotEvent { snapshot_name: name.clone() }));
        touch_activity(&dir)?;
        Ok(SnapshotCreateResult { workspace_id: dir.id, snapshot: info, execution_mode: record.execution_mode })
    }

    fn baseline_info(&self, dir: &WorkspaceDir) -> Result<SnapshotInfo> {
        let record = dir.load()?;
        let tar = std::fs::File::open(dir.baseline_tar()).map_err(|e| Error::io("reading the baseline", e))?;
        let (entries, bytes) = pyro_tree::archive::for_each_member(std::io::BufReader::new(tar), |_, _| Ok(()))?;
        Ok(SnapshotInfo {
            workspace_id: dir.id.clone(),
            snapshot_name: "baseline".into(),
            kind: "baseline".into(),
            created_at: record.created_at,
            entry_count: entries,
            bytes_written: bytes,
            deletable: false,
        })
    }

    /// The workspace's snapshots: `baseline` first, then named ones newest first. Works in any
    /// state.
    pub async fn list_snapshots(&self, workspace_id: &str) -> Result<SnapshotList> {
        let dir = self.ws_dir(workspace_id)?;
        let mut named = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir.snapshots_dir()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Some(info) =
                        std::fs::read_to_string(&p).ok().and_then(|t| serde_json::from_str::<SnapshotInfo>(&t).ok())
                    {
                        named.push(info);
                    }
                }
            }
        }
        named.sort_by(|a, b| b.created_at.total_cmp(&a.created_at).then(a.snapshot_name.cmp(&b.snapshot_name)));
        let mut snapshots = vec![self.baseline_info(&dir)?];
        snapshots.extend(named);
        Ok(SnapshotList { workspace_id: dir.id, count: snapshots.len(), snapshots })
    }

    /// Delete a named snapshot (`baseline` cannot be deleted). Works in any state.
    pub async fn delete_snapshot(&self, workspace_id: &str, snapshot_name: &str) -> Result<SnapshotDeleteResult> {
        let dir = self.ws_dir(workspace_id)?;
        let name = snapshot_name.trim();
        if name == "baseline" {
            return Err(Error::InvalidInput("cannot delete the baseline snapshot".into()));
        }
        let name = pyro_tree::names::validate_snapshot_name(name)?;
        let meta = dir.snapshots_dir().join(format!("{name}.json"));
        if !meta.exists() {
            return Err(Error::NotFound(format!("snapshot '{name}' does not exist in workspace '{}'", dir.id)));
        }
        std::fs::remove_file(&meta).map_err(|e| Error::io("deleting the snapshot", e))?;
        let _ = std::fs::remove_file(dir.snapshots_dir().join(format!("{name}.tar")));
        events::record(&dir, Event::SnapshotDelete(events::SnapshotEvent { snapshot_name: name.clone() }));
        touch_activity(&dir)?;
        Ok(SnapshotDeleteResult { workspace_id: dir.id, snapshot_name: name, deleted: true })
    }

    /// Rebuild the workspace from the environment and restore `/workspace` from a snapshot
    /// (default the baseline). History is cleared; snapshots, name and labels stay.
    ///
    /// Crash-safe (see `reset.rs`): the new disk is built, booted and restored beside the old
    /// one and swapped in with one rename only when complete. A reset that fails or is
    /// killed before that leaves the workspace as it was (stopped); one killed after it is
    /// finished by the next call that needs the workspace.
    pub async fn reset_workspace(&self, workspace_id: &str, snapshot: &str) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let snap = snapshot.trim();
        let (tar_path, kind) = if snap.is_empty() || snap == "baseline" {
            (dir.baseline_tar(), "baseline")
        } else {
            let name = pyro_tree::names::validate_snapshot_name(snap)?;
            let meta = dir.snapshots_dir().join(format!("{name}.json"));
            if !meta.exists() {
                return Err(Error::NotFound(format!("snapshot '{name}' does not exist in workspace '{}'", dir.id)));
            }
            (dir.snapshots_dir().join(format!("{name}.tar")), "named")
        };
        let snap_name = if kind == "baseline" { "baseline".to_string() } else { snap.to_string() };
        // Streamed at restore time, never loaded whole: a snapshot may be up to
        // MAX_PULLED_ARCHIVE_BYTES.
        let tar = std::fs::File::open(&tar_path).map_err(|e| Error::io(format!("reading snapshot {snap_name}"), e))?;
        let _life = dir.lifecycle_exclusive().await?;
        super::reset::recover(&dir).await?;
        let mut record = dir.load()?;
        if record.expires_at <= now_f64() {
            return Err(Error::InvalidState(format!(
                "workspace '{}' has expired; extend it first with `pyro workspace update {} --ttl-seconds N`",
                dir.id, dir.id
            )));
        }
        self.progress().report("shutdown", "stopping the workspace VM", Some(0.1));
        dir.machine().shutdown(Duration::ZERO).await?;
        // Whatever was paused is thrown away with the disk it belonged to.
        pyro_vmm::MemoryState::discard(&dir.vm())?;
        let intent = super::reset::ResetIntent {
            phase: "building".into(),
            snapshot_name: snap_name.clone(),
            reset_count: record.reset_count + 1,
            reset_at: now_f64(),
        };
        super::reset::save_intent(&dir, &intent)?;
        crash_point("reset:intent");
        let built = self.build_reset_disk(&dir, &mut record, tar, &snap_name).await;
        let (entries, bytes) = match built {
            Ok(counts) => counts,
            Err(e) => {
                // Nothing of the old workspace was touched: drop the new disk, keep the rest.
                dir.machine().shutdown(Duration::ZERO).await.ok();
                super::reset::discard(&dir)?;
                dir.update(|r| {
                    super::forget_sessions(&dir, r);
                    r.state = WorkspaceState::Stopped;
                    r.last_error = Some(format!(
                        "reset to '{snap_name}' failed, /workspace is as it was and the workspace stopped (`pyro workspace start` boots it): {e}"
                    ));
                    Ok(())
                })?;
                return Err(e);
            }
        };
        let intent = super::reset::ResetIntent { phase: "ready".into(), ..intent };
        super::reset::save_intent(&dir, &intent)?;
        crash_point("reset:ready");
        super::reset::swap_in_new_disk(&dir)?;
        crash_point("reset:swap");
        let record = super::reset::finish(&dir, &intent, Some(&record))?;
        self.remove_unused_bases();
        let mut info = info_of(&record);
        info.workspace_reset = Some(ResetInfo {
            snapshot_name: snap_name,
            kind: kind.into(),
            destination: WORKSPACE_PATH.into(),
            entry_count: entries,
            bytes_written: bytes,
        });
        Ok(info)
    }

    /// The new disk of a reset: a fresh copy of the environment's disk beside the old one,
    /// booted, with `/workspace` restored (durably) from the snapshot. `record` gets what
    /// the boot decided.
    async fn build_reset_disk(
        &self,
        dir: &WorkspaceDir,
        record: &mut super::store::WorkspaceRecord,
        tar: std::fs::File,
        snap_name: &str,
    ) -> Result<(u64, u64)> {
        let env = self.ensure_environment(&record.environment).await?;
        self.progress().report("disk", "preparing a fresh disk from the environment", Some(0.2));
        let new_disk = super::reset::new_disk_path(dir);
        let (image, disk2) = (env.rootfs_image.clone(), new_disk.clone());
        crate::blocking(move || Ok(pyro_vmm::clone_disk(&image, &disk2)?)).await?;
        crash_point("reset:disk");
        self.boot_workspace_disk(dir, &env, record, &new_disk, pyro_vmm::DiskFormat::Raw).await?;
        crash_point("reset:boot");
        self.progress().report("restore", format!("restoring /workspace from {snap_name}"), Some(0.8));
        let counts = dir.machine().push_archive(std::io::BufReader::new(tar), WORKSPACE_PATH).await?;
        crash_point("reset:restore");
        Ok(counts)
    }
}

/// Test hook: `PYRO_TEST_KILL_AT=<step>` SIGKILLs this process when a reset reaches that step
/// (`reset:intent`, `reset:disk`, `reset:boot`, `reset:restore`, `reset:ready`,
/// `reset:swap`, `reset:record`), so a test can show a reset killed at any point leaves a
/// workspace that starts. Harmless: it can only kill the process that was given it.
pub(crate) fn crash_point(step: &str) {
    if std::env::var("PYRO_TEST_KILL_AT").is_ok_and(|v| v == step) {
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(std::process::id() as i32, libc::SIGKILL);
        }
    }
}

/// An `--output` path: trimmed, non-empty, made absolute against the current directory.
pub(crate) fn resolve_output(p: &Path) -> Result<PathBuf> {
    let text = p.to_string_lossy();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidInput("output_path must not be empty".into()));
    }
    let p = PathBuf::from(trimmed);
    if p.is_absolute() {
        return Ok(p);
    }
    Ok(std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?.join(p))
}

/// [`resolve_output`], and not already there (a dangling symlink counts as there).
fn absolute_output(p: &Path) -> Result<PathBuf> {
    let abs = resolve_output(p)?;
    if std::fs::symlink_metadata(&abs).is_ok() {
        return Err(Error::InvalidInput(format!("output_path already exists: {}", abs.display())));
    }
    Ok(abs)
}
