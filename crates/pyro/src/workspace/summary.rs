//! `summary_workspace`: one review payload of what happened to a workspace since it was
//! created or last reset: the operation journal (`events.rs`) grouped by kind, the command
//! history, and the diff stat of `/workspace` against the baseline.

use super::events::{self, Event, Timed};
use super::events::{
    BackgroundCommandEvent, ExportEvent, FileWriteEvent, PatchEvent, ResetEvent, ServiceEvent, SnapshotEvent, SyncEvent,
};
use crate::{Pyro, Result, WorkspaceState};
use serde::{Deserialize, Serialize};

/// One command of the history, without its output (`logs_workspace` has that).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummaryCommand {
    /// Position in the history, 1-based.
    pub sequence: u64,
    /// The command text, secret values redacted.
    pub command: String,
    /// Exit status; 124 when it timed out.
    pub exit_code: i32,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// When it finished, Unix seconds.
    pub recorded_at: f64,
}

/// The command history part of a summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummaryCommands {
    /// Commands run since the creation or last reset (history pruning does not lower it).
    pub total: u64,
    /// Of the kept entries, how many exited non-zero.
    pub failed: u64,
    /// The kept history entries, oldest first.
    pub entries: Vec<SummaryCommand>,
}

/// Services started and stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummaryServices {
    /// `start_service` calls, oldest first.
    pub started: Vec<Timed<ServiceEvent>>,
    /// `stop_service` calls, oldest first.
    pub stopped: Vec<Timed<ServiceEvent>>,
}

/// Snapshots created and deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummarySnapshots {
    /// Named snapshots created, oldest first.
    pub created: Vec<Timed<SnapshotEvent>>,
    /// Named snapshots deleted, oldest first.
    pub deleted: Vec<Timed<SnapshotEvent>>,
}

/// The diff stat of `/workspace` against the baseline: the same comparison as
/// `diff_workspace`, without the patch text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummaryDiff {
    /// Whether anything differs from the baseline.
    pub changed: bool,
    /// Counts, equal to `diff_workspace`'s `summary`.
    pub summary: pyro_tree::diff::DiffSummary,
    /// Lines added over all text patches.
    pub lines_added: u64,
    /// Lines removed over all text patches.
    pub lines_removed: u64,
    /// Every changed path with its status, sorted by path (as `diff_workspace`'s `entries`).
    pub entries: Vec<SummaryDiffEntry>,
}

/// One changed path of a [`SummaryDiff`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SummaryDiffEntry {
    /// Path relative to `/workspace` (as in `diff_workspace`).
    pub path: String,
    /// `added`, `modified`, `deleted` or `type_changed`.
    pub status: String,
}

/// Payload of `summary_workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceSummary {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Its name, if set.
    pub name: Option<String>,
    /// Its state: `started`, `stopped`, `paused` or `creating`.
    pub state: WorkspaceState,
    /// Start of the summarised period, Unix seconds: the last reset, else the creation.
    pub since: f64,
    /// `create` or `reset`: what `since` is.
    pub since_kind: String,
    /// `push_workspace_sync` calls, oldest first.
    pub syncs: Vec<Timed<SyncEvent>>,
    /// `write_workspace_file` calls, oldest first.
    pub file_writes: Vec<Timed<FileWriteEvent>>,
    /// Patches applied, oldest first.
    pub patches: Vec<Timed<PatchEvent>>,
    /// Exports to the host (paths and whole disks), oldest first.
    pub exports: Vec<Timed<ExportEvent>>,
    /// Services started and stopped.
    pub services: SummaryServices,
    /// Named snapshots created and deleted.
    pub snapshots: SummarySnapshots,
    /// The reset that opened the period, if any.
    pub reset: Option<Timed<ResetEvent>>,
    /// Background commands started, exited or killed, oldest first.
    pub background_commands: Vec<Timed<BackgroundCommandEvent>>,
    /// The command history.
    pub commands: SummaryCommands,
    /// The current diff stat; `None` when the workspace is not running (see `diff_error`).
    pub diff: Option<SummaryDiff>,
    /// Why `diff` is missing, e.g. the workspace is stopped.
    pub diff_error: Option<String>,
    /// `false` when the journal missed an operation (it could not be written) or dropped its
    /// oldest events to stay bounded (`events_dropped`).
    pub events_complete: bool,
    /// Oldest events dropped to keep the journal bounded.
    pub events_dropped: u64,
}

/// Lines added and removed in a concatenation of unified text patches: `+`/`-` lines inside
/// hunks only (file headers `---`/`+++` come before the first `@@` of each file).
pub fn count_patch_lines(patch: &str) -> (u64, u64) {
    let (mut added, mut removed, mut in_hunk) = (0, 0, false);
    for line in patch.lines() {
        if line.starts_with("diff ") {
            in_hunk = false;
        } else if line.starts_with("@@") {
            in_hunk = true;
        } else if in_hunk && line.starts_with('+') {
            added += 1;
        } else if in_hunk && line.starts_with('-') {
            removed += 1;
        }
    }
    (added, removed)
}

/// The kept history entries without their outputs (those can be 64 MiB; the entry files
/// hold the already redacted command text), oldest first.
fn history(dir: &super::store::WorkspaceDir) -> Vec<super::CommandEntry> {
    let mut entries: Vec<super::CommandEntry> = std::fs::read_dir(dir.commands_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    entries.sort_by_key(|e| e.sequence);
    entries
}

impl Pyro {
    /// One review payload since the workspace's creation or last reset: syncs, file writes,
    /// patches, exports, services, snapshots and background commands from the operation
    /// journal, the command history (exit codes, durations) and the current diff stat.
    /// Works in any state; the diff needs the workspace running (a paused one is not
    /// resumed for it: `diff` is then `None` with `diff_error`). Leaves
    /// `last_activity_at` alone.
    pub async fn summary_workspace(&self, workspace_id: &str) -> Result<WorkspaceSummary> {
        let dir = self.ws_dir(workspace_id)?;
        let record = dir.load()?;
        let journal = events::load(&dir);
        let history = history(&dir);
        let (diff, diff_error) = if record.state == WorkspaceState::Started {
            match self.diff_workspace(workspace_id).await {
                Ok(d) => {
                    let (lines_added, lines_removed) = count_patch_lines(&d.diff.patch);
                    let entries = d
                        .diff
                        .entries
                        .iter()
                        .map(|e| SummaryDiffEntry { path: e.path.clone(), status: e.status.clone() })
                        .collect();
                    (
                        Some(SummaryDiff {
                            changed: d.diff.changed,
                            summary: d.diff.summary,
                            lines_added,
                            lines_removed,
                            entries,
                        }),
                        None,
                    )
                }
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            let how = if record.state == WorkspaceState::Paused { "resume" } else { "start" };
            (None, Some(format!("workspace is {}; {how} it to see the diff", record.state.as_str())))
        };
        let mut s = WorkspaceSummary {
            workspace_id: dir.id.clone(),
            name: record.name.clone(),
            state: record.state,
            since: record.last_reset_at.unwrap_or(record.created_at),
            since_kind: if record.last_reset_at.is_some() { "reset" } else { "create" }.into(),
            syncs: vec![],
            file_writes: vec![],
            patches: vec![],
            exports: vec![],
            services: SummaryServices::default(),
            snapshots: SummarySnapshots::default(),
            reset: None,
            background_commands: vec![],
            commands: SummaryCommands {
                total: record.command_count,
                failed: history.iter().filter(|e| e.exit_code != 0).count() as u64,
                entries: history
                    .into_iter()
                    .map(|e| SummaryCommand {
                        sequence: e.sequence,
                        command: e.command,
                        exit_code: e.exit_code,
                        duration_ms: e.duration_ms,
                        recorded_at: e.recorded_at,
                    })
                    .collect(),
            },
            diff,
            diff_error,
            events_complete: !journal.gap && journal.dropped == 0,
            events_dropped: journal.dropped,
        };
        for Timed { at, event } in journal.events {
            match event {
                Event::SyncPush(event) => s.syncs.push(Timed { at, event }),
                Event::FileWrite(event) => s.file_writes.push(Timed { at, event }),
                Event::PatchApply(event) => s.patches.push(Timed { at, event }),
                Event::Export(event) => s.exports.push(Timed { at, event }),
                Event::ServiceStart(event) => s.services.started.push(Timed { at, event }),
                Event::ServiceStop(event) => s.services.stopped.push(Timed { at, event }),
                Event::SnapshotCreate(event) => s.snapshots.created.push(Timed { at, event }),
                Event::SnapshotDelete(event) => s.snapshots.deleted.push(Timed { at, event }),
                Event::Reset(event) => s.reset = Some(Timed { at, event }),
                Event::BackgroundCommand(event) => s.background_commands.push(Timed { at, event }),
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patch_lines_are_counted_inside_hunks_only() {
        let p = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-old\n+new\n ctx\n--- not a header\ndiff --git a/y b/y\n--- /dev/null\n+++ b/y\n@@ -0,0 +1 @@\n+y\n";
        assert_eq!(super::count_patch_lines(p), (2, 2));
    }
}
