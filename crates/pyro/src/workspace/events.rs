//! The operation journal behind `summary_workspace`: what changed a workspace since its
//! creation or last reset, besides the command history (which has its own store).
//!
//! One JSON object a line in `events.jsonl` in the workspace directory, appended under
//! `events.lock` (its own lock: callers may hold the record lock). Bounded: at most
//! [`MAX_EVENTS`] lines and [`MAX_BYTES`] bytes; past either, the oldest half is dropped and
//! the number dropped is kept in the file's first line, so the summary says that it is
//! partial. A reset removes the journal (the summary covers "since the last reset").
//!
//! Recording never fails the operation that succeeded: a journal that cannot be written is
//! logged on stderr and marked by `events.gap`, which the summary reports as
//! `events_complete: false`.

use super::store::WorkspaceDir;
use crate::util::now_f64;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Lines kept at most in the journal.
pub const MAX_EVENTS: usize = 1000;
/// Bytes kept at most in the journal.
pub const MAX_BYTES: u64 = 256 * 1024;
/// Longest string field kept in an event, in characters (commands, paths).
const MAX_FIELD_CHARS: usize = 240;
/// Paths kept at most in one patch event.
pub const MAX_PATCH_PATHS: usize = 20;

/// `push_workspace_sync` copied a host directory or archive in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SyncEvent {
    /// Host path of the source.
    pub source_path: String,
    /// Guest directory it was unpacked into.
    pub destination: String,
    /// `directory` or `tar_archive`.
    pub mode: String,
    /// Archive entries unpacked.
    pub entry_count: u64,
    /// Bytes of regular-file content unpacked.
    pub bytes_written: u64,
}

/// `write_workspace_file` wrote a file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileWriteEvent {
    /// Absolute guest path written.
    pub path: String,
    /// Bytes written.
    pub bytes_written: u64,
}

/// `apply_workspace_patch` changed files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PatchEvent {
    /// Files created.
    pub added: u64,
    /// Files changed in place.
    pub modified: u64,
    /// Files removed.
    pub deleted: u64,
    /// The first paths of the patch, sorted (at most 20; the counts are complete).
    pub paths: Vec<String>,
}

/// `export_workspace` (a path) or `export_workspace_disk` (the whole disk) wrote to the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExportEvent {
    /// Guest path exported; `None` for a disk export.
    pub workspace_path: Option<String>,
    /// Host path written.
    pub output_path: String,
    /// `file`, `directory`, `symlink` or `disk`.
    pub artifact_type: String,
    /// Bytes written on the host.
    pub bytes_written: u64,
}

/// A service was started or stopped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceEvent {
    /// Service name.
    pub service_name: String,
    /// Its command (start only; secrets redacted by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// A named snapshot was created or deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SnapshotEvent {
    /// Snapshot name.
    pub snapshot_name: String,
}

/// The workspace was reset (the journal before it is gone; this is its first line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResetEvent {
    /// Snapshot restored: `baseline` or a named one.
    pub snapshot_name: String,
}

/// A background command changed state (started, exited, killed). Its exit code and duration
/// land in the command history like any exec; this records its life for the summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BackgroundCommandEvent {
    /// Id of the background command.
    pub command_id: String,
    /// Command text (secrets redacted by the caller).
    pub command: String,
    /// `started`, `exited` or `killed`.
    pub status: String,
    /// Exit code once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// One operation that changed a workspace, as recorded in its journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// `push_workspace_sync`.
    SyncPush(SyncEvent),
    /// `write_workspace_file`.
    FileWrite(FileWriteEvent),
    /// `apply_workspace_patch` that changed something.
    PatchApply(PatchEvent),
    /// `export_workspace` or `export_workspace_disk`.
    Export(ExportEvent),
    /// `start_service`.
    ServiceStart(ServiceEvent),
    /// `stop_service`.
    ServiceStop(ServiceEvent),
    /// `create_snapshot`.
    SnapshotCreate(SnapshotEvent),
    /// `delete_snapshot`.
    SnapshotDelete(SnapshotEvent),
    /// `reset_workspace`.
    Reset(ResetEvent),
    /// A background command (`exec --background`) started, exited or was killed.
    BackgroundCommand(BackgroundCommandEvent),
}

/// An event with the time it was recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Timed<T> {
    /// When it happened, Unix seconds (fractional).
    pub at: f64,
    /// The event.
    #[serde(flatten)]
    pub event: T,
}

/// The journal's first line after a trim: how many events were dropped so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DroppedLine {
    dropped: u64,
}

/// What the journal holds, for the summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    pub events: Vec<Timed<Event>>,
    /// Events trimmed away to keep the journal bounded.
    pub dropped: u64,
    /// A recording failed at least once since the last reset.
    pub gap: bool,
}

fn journal_path(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("events.jsonl")
}
fn lock_path(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("events.lock")
}
fn gap_path(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("events.gap")
}

fn clip(s: &mut String) {
    if s.chars().count() > MAX_FIELD_CHARS {
        *s = s.chars().take(MAX_FIELD_CHARS - 1).collect::<String>() + "…";
    }
}

/// Keep one line small whatever the caller passed (long commands, paths, patch lists).
fn clipped(mut event: Event) -> Event {
    match &mut event {
        Event::SyncPush(e) => {
            clip(&mut e.source_path);
            clip(&mut e.destination);
        }
        Event::FileWrite(e) => clip(&mut e.path),
        Event::PatchApply(e) => {
            e.paths.truncate(MAX_PATCH_PATHS);
            e.paths.iter_mut().for_each(clip);
        }
        Event::Export(e) => {
            e.workspace_path.iter_mut().for_each(clip);
            clip(&mut e.output_path);
        }
        Event::ServiceStart(e) | Event::ServiceStop(e) => e.command.iter_mut().for_each(clip),
        Event::SnapshotCreate(_) | Event::SnapshotDelete(_) | Event::Reset(_) => {}
        Event::BackgroundCommand(e) => clip(&mut e.command),
    }
    event
}

/// Record an operation that succeeded. Never fails: a journal that cannot be written is
/// reported on stderr and marked as having a gap.
pub(crate) fn record(dir: &WorkspaceDir, event: Event) {
    let line = Timed { at: now_f64(), event: clipped(event) };
    if let Err(e) = append(dir, &line) {
        eprintln!("[warn] workspace {}: could not record an event for the summary: {e}", dir.id);
        let _ = private_append(&gap_path(dir));
    }
}

/// Open for appending, creating it 0600 whatever the umask (state files are private).
fn private_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn append(dir: &WorkspaceDir, line: &Timed<Event>) -> std::io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    let _lock = pyro_sys::lock(&lock_path(dir), pyro_sys::LockMode::Exclusive)?;
    let path = journal_path(dir);
    let current = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let count = current.lines().count();
    if count < MAX_EVENTS && (current.len() + text.len()) as u64 <= MAX_BYTES {
        let mut f = private_append(&path)?;
        f.write_all(text.as_bytes())?;
        // On disk before the operation's answer: a host crash must not drop an event the
        // summary would then not know it lost (a failed sync leaves a gap marker, via `record`).
        return f.sync_data();
    }
    // Over a bound: keep the newest half (by count and bytes), count what is dropped.
    let (mut dropped, mut events) = (0u64, Vec::new());
    for l in current.lines() {
        match serde_json::from_str::<DroppedLine>(l) {
            Ok(d) => dropped += d.dropped,
            Err(_) => events.push(l),
        }
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut bytes = text.len() as u64;
    for l in events.iter().rev() {
        if kept.len() + 1 >= MAX_EVENTS / 2 || bytes + l.len() as u64 + 1 > MAX_BYTES / 2 {
            break;
        }
        bytes += l.len() as u64 + 1;
        kept.push(l);
    }
    dropped += (events.len() - kept.len()) as u64;
    let mut out = serde_json::to_string(&DroppedLine { dropped }).map_err(std::io::Error::other)? + "\n";
    for l in kept.iter().rev() {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&text);
    crate::util::write_atomic(&path, out.as_bytes())
}

/// Read the journal (an unreadable line is skipped and counted as a gap).
pub(crate) fn load(dir: &WorkspaceDir) -> Journal {
    let mut j = Journal { gap: gap_path(dir).exists(), ..Journal::default() };
    let text = match std::fs::read_to_string(journal_path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return j,
        Err(_) => {
            j.gap = true;
            return j;
        }
    };
    for l in text.lines() {
        if let Ok(e) = serde_json::from_str::<Timed<Event>>(l) {
            j.events.push(e);
        } else if let Ok(d) = serde_json::from_str::<DroppedLine>(l) {
            j.dropped += d.dropped;
        } else {
            j.gap = true;
        }
    }
    j
}

/// Forget everything recorded (a reset). Called after the reset's commit point.
pub(crate) fn clear(dir: &WorkspaceDir) {
    let _lock = pyro_sys::lock(&lock_path(dir), pyro_sys::LockMode::Exclusive);
    let _ = std::fs::remove_file(journal_path(dir));
    let _ = std::fs::remove_file(gap_path(dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, WorkspaceDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkspaceDir::new(tmp.path(), "abc123def456");
        std::fs::create_dir_all(&dir.root).unwrap();
        (tmp, dir)
    }

    fn write(path: &str) -> Event {
        Event::FileWrite(FileWriteEvent { path: path.into(), bytes_written: 3 })
    }

    #[test]
    fn events_round_trip_in_order_and_clear() {
        let (_t, dir) = ws();
        record(&dir, write("/workspace/a"));
        record(&dir, Event::SnapshotCreate(SnapshotEvent { snapshot_name: "s1".into() }));
        let j = load(&dir);
        assert_eq!(j.events.len(), 2);
        assert_eq!(j.events[0].event, write("/workspace/a"));
        assert!(!j.gap && j.dropped == 0);
        let line = std::fs::read_to_string(journal_path(&dir)).unwrap();
        assert!(line.starts_with("{\"at\":") && line.contains("\"kind\":\"file_write\""), "{line}");
        clear(&dir);
        assert!(load(&dir).events.is_empty());
    }

    #[test]
    fn the_journal_stays_bounded_and_counts_what_it_dropped() {
        let (_t, dir) = ws();
        for i in 0..(MAX_EVENTS + 10) {
            record(&dir, write(&format!("/workspace/{i}")));
        }
        let j = load(&dir);
        assert!(j.events.len() <= MAX_EVENTS);
        assert_eq!(j.events.len() as u64 + j.dropped, (MAX_EVENTS + 10) as u64);
        assert_eq!(j.events.last().unwrap().event, write(&format!("/workspace/{}", MAX_EVENTS + 9)));
        // Bytes: long fields are clipped, and the file never passes its byte bound.
        for _ in 0..2000 {
            record(&dir, write(&"x".repeat(10_000)));
        }
        assert!(std::fs::metadata(journal_path(&dir)).unwrap().len() <= MAX_BYTES);
        let j = load(&dir);
        assert_eq!(j.events.len() as u64 + j.dropped, (MAX_EVENTS + 2010) as u64);
    }

    #[test]
    fn a_failed_recording_is_a_gap_not_an_error() {
        let (_t, dir) = ws();
        // The journal path is a directory: appending fails.
        std::fs::create_dir(journal_path(&dir)).unwrap();
        record(&dir, write("/workspace/a"));
        assert!(load(&dir).gap);
    }
}
