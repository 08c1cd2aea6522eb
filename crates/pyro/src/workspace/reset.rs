//! Crash-safe reset: the intent record and the recovery of a reset that was interrupted
//! (pyro killed, host rebooted) at any point.
//!
//! A reset never touches the workspace's disk until its replacement is complete: it records
//! its intent (`reset.json`, phase `building`), builds the new disk beside the old one
//! (`runtime/rootfs.reset.ext4`), boots it and restores the snapshot into it (durable: the
//! agent syncs before answering), moves the intent to phase `ready`, then renames the new
//! disk over the old one (atomic; the running QEMU keeps its open file) and finally clears
//! the history, updates the record and removes the intent.
//!
//! Recovery, under the exclusive lifecycle lock, before anything else uses the workspace:
//! whatever VM runs belongs to the dead reset and is killed; in phase `building` the new disk
//! is dropped (the workspace is exactly as before the reset, stopped); in phase `ready` the
//! rename and the record update are finished (the workspace is fully reset, stopped).

use super::store::{WorkspaceDir, WorkspaceRecord};
use crate::util::now_f64;
use crate::{Error, Result, WorkspaceState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

const INTENT_FILE: &str = "reset.json";

/// `reset.json`: a reset in progress (or interrupted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ResetIntent {
    /// `building` (the old disk is authoritative) or `ready` (the new disk is complete and
    /// replaces the old one).
    pub phase: String,
    /// Snapshot being restored (`baseline` or a named one).
    pub snapshot_name: String,
    /// `reset_count` and `last_reset_at` the record gets: fixed up front, so finishing twice
    /// (a crash between the record update and the intent removal) counts one reset.
    pub reset_count: u64,
    pub reset_at: f64,
}

pub(crate) fn intent_path(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join(INTENT_FILE)
}

/// The new disk while it is built; renamed over the VM's disk to commit the reset.
pub(crate) fn new_disk_path(dir: &WorkspaceDir) -> PathBuf {
    dir.vm().staged_disk()
}

/// Is a reset in progress or interrupted?
pub(crate) fn has_intent(dir: &WorkspaceDir) -> bool {
    intent_path(dir).exists()
}

pub(crate) fn load_intent(dir: &WorkspaceDir) -> Result<Option<ResetIntent>> {
    match std::fs::read(intent_path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::unreadable(format_args!("reset record {}", intent_path(dir).display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading the reset record", e)),
    }
}

pub(crate) fn save_intent(dir: &WorkspaceDir, intent: &ResetIntent) -> Result<()> {
    crate::util::write_atomic(&intent_path(dir), &serde_json::to_vec_pretty(intent).expect("intent serializes"))
        .map_err(|e| Error::io("writing the reset record", e))?;
    sync_dir(&dir.root)
}

/// fsync a directory so a rename or removal in it survives a host crash too.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

/// Drop the new disk (and a partial copy of it) and the intent: the old disk stays.
pub(crate) fn discard(dir: &WorkspaceDir) -> Result<()> {
    let new_disk = new_disk_path(dir);
    let _ = std::fs::remove_file(new_disk.with_extension("ext4.partial"));
    match std::fs::remove_file(&new_disk) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing the unfinished reset disk", e)),
    }
    remove_intent(dir)
}

fn remove_intent(dir: &WorkspaceDir) -> Result<()> {
    match std::fs::remove_file(intent_path(dir)) {
        Ok(()) => sync_dir(&dir.root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing the reset record", e)),
    }
}

/// The commit point: the new disk replaces the old one in one rename. Idempotent (after a
/// crash the rename may already have happened).
pub(crate) fn swap_in_new_disk(dir: &WorkspaceDir) -> Result<()> {
    let new_disk = new_disk_path(dir);
    if new_disk.exists() {
        // Normally nothing left to write: the guest's flush after the restore made QEMU
        // fdatasync this very file. Makes the swap safe against a host crash too.
        std::fs::File::open(&new_disk)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("flushing the reset disk", e))?;
        std::fs::rename(&new_disk, dir.disk_image()).map_err(|e| Error::io("swapping in the reset disk", e))?;
    }
    sync_dir(dir.vm().path())
}

/// Everything after the commit point: empty history, record counters, intent removed.
/// Idempotent. `booted` is the record of the VM that runs the new disk (a live reset), or
/// `None` when recovering (the workspace ends stopped).
pub(crate) fn finish(
    dir: &WorkspaceDir,
    intent: &ResetIntent,
    booted: Option<&WorkspaceRecord>,
) -> Result<WorkspaceRecord> {
    let _ = std::fs::remove_dir_all(dir.commands_dir());
    super::commands::forget_all(dir);
    crate::util::create_private_dir(&dir.commands_dir()).map_err(|e| Error::io("recreating the history dir", e))?;
    // The summary covers "since the last reset": the journal goes with the history, and
    // the reset is its first event (recorded here so a recovered reset has it too).
    super::events::clear(dir);
    super::events::record(
        dir,
        super::events::Event::Reset(super::events::ResetEvent { snapshot_name: intent.snapshot_name.clone() }),
    );
    let (record, _) = dir.update(|r| {
        super::forget_sessions(dir, r);
        r.command_count = 0;
        r.last_command = None;
        r.reset_count = intent.reset_count;
        r.last_reset_at = Some(intent.reset_at);
        r.last_activity_at = now_f64();
        // A reset always builds a fresh raw disk: a fork's overlay (and its base) is left.
        r.disk_format = pyro_vmm::DiskFormat::Raw;
        r.disk_base = None;
        match booted {
            Some(b) => super::mark_booted(r, b),
            None => {
                r.state = WorkspaceState::Stopped;
                r.last_error = Some(format!(
                    "a reset to snapshot '{}' was interrupted after its new disk was complete; it was finished and the workspace stopped (`pyro workspace start` boots it)",
                    intent.snapshot_name
                ));
            }
        }
        Ok(())
    })?;
    crate::workspace::ops::crash_point("reset:record");
    let _ = std::fs::remove_file(dir.vm().disk_overlay());
    remove_intent(dir)?;
    Ok(record)
}

/// Finish or roll back a reset that did not complete. The caller holds the exclusive
/// lifecycle lock (so no live reset is running). Returns whether there was one.
pub(crate) async fn recover(dir: &WorkspaceDir) -> Result<bool> {
    let Some(intent) = load_intent(dir)? else { return Ok(false) };
    // Any VM still running was booted by the dead reset (on the new disk, or the old VM it
    // had not stopped yet): it has nothing acknowledged that is not already on disk.
    dir.machine().shutdown(Duration::ZERO).await?;
    if intent.phase == "ready" {
        swap_in_new_disk(dir)?;
        finish(dir, &intent, None)?;
    } else {
        discard(dir)?;
        dir.update(|r| {
            super::forget_sessions(dir, r);
            r.state = WorkspaceState::Stopped;
            r.last_error = Some(format!(
                "a reset to snapshot '{}' was interrupted before its new disk was complete; the workspace was left as it was, stopped (`pyro workspace start` boots it)",
                intent.snapshot_name
            ));
            Ok(())
        })?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::store::tests::sample;

    fn workspace() -> (tempfile::TempDir, WorkspaceDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkspaceDir::new(tmp.path(), "abc123def456");
        std::fs::create_dir_all(dir.vm().path()).unwrap();
        std::fs::create_dir_all(dir.commands_dir()).unwrap();
        let mut r = sample("abc123def456");
        r.command_count = 3;
        r.reset_count = 1;
        dir.save(&r).unwrap();
        std::fs::write(dir.disk_image(), "old").unwrap();
        std::fs::write(dir.commands_dir().join("000001.json"), "{}").unwrap();
        (tmp, dir)
    }

    fn intent(phase: &str) -> ResetIntent {
        ResetIntent { phase: phase.into(), snapshot_name: "s1".into(), reset_count: 2, reset_at: 5.0 }
    }

    #[tokio::test]
    async fn an_unfinished_build_is_rolled_back() {
        let (_t, dir) = workspace();
        save_intent(&dir, &intent("building")).unwrap();
        std::fs::write(new_disk_path(&dir), "new").unwrap();
        assert!(recover(&dir).await.unwrap());
        assert_eq!(std::fs::read_to_string(dir.disk_image()).unwrap(), "old");
        assert!(!new_disk_path(&dir).exists() && !has_intent(&dir));
        let r = dir.load().unwrap();
        assert_eq!((r.state, r.reset_count, r.command_count), (WorkspaceState::Stopped, 1, 3));
        assert!(dir.commands_dir().join("000001.json").exists());
        assert!(!recover(&dir).await.unwrap(), "nothing left to recover");
    }

    #[tokio::test]
    async fn a_ready_disk_is_swapped_in_and_counted_once() {
        for renamed in [false, true] {
            let (_t, dir) = workspace();
            save_intent(&dir, &intent("ready")).unwrap();
            std::fs::write(new_disk_path(&dir), "new").unwrap();
            if renamed {
                // Killed between the rename and the record update.
                swap_in_new_disk(&dir).unwrap();
            }
            assert!(recover(&dir).await.unwrap());
            assert_eq!(std::fs::read_to_string(dir.disk_image()).unwrap(), "new");
            assert!(!new_disk_path(&dir).exists() && !has_intent(&dir));
            let r = dir.load().unwrap();
            assert_eq!((r.state, r.reset_count, r.command_count), (WorkspaceState::Stopped, 2, 0));
            assert_eq!(r.last_reset_at, Some(5.0));
            assert_eq!(std::fs::read_dir(dir.commands_dir()).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn finishing_twice_counts_one_reset() {
        let (_t, dir) = workspace();
        let i = intent("ready");
        finish(&dir, &i, None).unwrap();
        save_intent(&dir, &i).unwrap();
        assert!(recover(&dir).await.unwrap());
        assert_eq!(dir.load().unwrap().reset_count, 2);
    }
}
