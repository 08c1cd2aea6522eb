//! How much of a workspace's history and snapshots the host keeps on its disk.
//!
//! Everything here is written because of what the guest did (command output) or what an agent
//! asked for (snapshots), so without limits a workspace could fill the host's disk. Command
//! history keeps the newest entries within a count and an output budget; named snapshots are
//! refused past a count or a total size, with an error that says how to make room.

use crate::{Error, Result};
use std::path::Path;

/// Most command history entries kept per workspace (newest first); older ones are deleted.
pub const HISTORY_MAX_ENTRIES: usize = 1000;
/// Most bytes of recorded stdout + stderr kept per workspace. The newest entry is always
/// kept whole (one exec can record up to 2 × 16 MiB).
pub const HISTORY_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Most named snapshots per workspace (`baseline` not counted).
pub const MAX_NAMED_SNAPSHOTS: usize = 32;
/// Most bytes all named snapshot archives of one workspace may take together.
pub const MAX_NAMED_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Delete the oldest history entries of `commands_dir` (files `<seq>.json`, `.stdout`,
/// `.stderr`) so that at most `max_entries` remain and their outputs total at most
/// `max_output_bytes` (the newest entry always stays). What is kept is always the newest,
/// contiguous run of sequences. Returns how many entries were deleted.
pub fn prune_history(commands_dir: &Path, max_entries: usize, max_output_bytes: u64) -> std::io::Result<usize> {
    let mut seqs: Vec<u64> = match std::fs::read_dir(commands_dir) {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let (stem, ext) = name.split_once('.')?;
                matches!(ext, "json" | "stdout" | "stderr").then(|| stem.parse::<u64>().ok())?
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    seqs.dedup();
    let size = |seq: u64, ext: &str| {
        std::fs::symlink_metadata(commands_dir.join(format!("{seq:06}.{ext}"))).map(|m| m.len()).unwrap_or(0)
    };
    let mut kept_bytes = 0u64;
    let mut cut = None;
    // `kept` entries (the newest) are kept so far.
    for (kept, &seq) in seqs.iter().enumerate() {
        let bytes = size(seq, "stdout") + size(seq, "stderr");
        if kept > 0 && (kept >= max_entries || kept_bytes.saturating_add(bytes) > max_output_bytes) {
            cut = Some(kept);
            break;
        }
        kept_bytes += bytes;
    }
    let Some(cut) = cut else { return Ok(0) };
    for &seq in &seqs[cut..] {
        // The entry file first: a half-pruned entry is then invisible rather than outputless.
        for ext in ["json", "stdout", "stderr"] {
            match std::fs::remove_file(commands_dir.join(format!("{seq:06}.{ext}"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(seqs.len() - cut)
}

/// Count the named snapshots in `snapshots_dir` (their `.json` records) and the bytes of
/// their archives (`.tar`).
pub fn named_snapshot_usage(snapshots_dir: &Path) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(snapshots_dir) else { return (0, 0) };
    let (mut count, mut bytes) = (0usize, 0u64);
    for e in rd.flatten() {
        let p = e.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("json") => count += 1,
            Some("tar") => bytes += e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    (count, bytes)
}

/// Whether one more named snapshot of `new_bytes` fits next to `count` snapshots taking
/// `used_bytes`; the error names the limit and how to make room.
pub fn check_snapshot_room(workspace_id: &str, count: usize, used_bytes: u64, new_bytes: u64) -> Result<()> {
    let free = format!(
        "delete one with `pyro workspace snapshot delete {workspace_id} NAME` (MCP: snapshot_delete); \
         `pyro workspace snapshot list {workspace_id}` shows them"
    );
    if count >= MAX_NAMED_SNAPSHOTS {
        return Err(Error::InvalidState(format!(
            "workspace '{workspace_id}' already has {count} named snapshots, the most a workspace may keep \
             ({MAX_NAMED_SNAPSHOTS}); {free}"
        )));
    }
    if used_bytes.saturating_add(new_bytes) > MAX_NAMED_SNAPSHOT_BYTES {
        return Err(Error::InvalidState(format!(
            "the snapshot would take {new_bytes} bytes, but the named snapshots of workspace '{workspace_id}' \
             already take {used_bytes} of the {MAX_NAMED_SNAPSHOT_BYTES} bytes allowed; {free}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, seq: u64, out: usize) {
        std::fs::write(dir.join(format!("{seq:06}.json")), "{}").unwrap();
        std::fs::write(dir.join(format!("{seq:06}.stdout")), vec![b'x'; out]).unwrap();
        std::fs::write(dir.join(format!("{seq:06}.stderr")), b"").unwrap();
    }

    fn left(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn history_keeps_the_newest_entries_within_the_count() {
        let tmp = tempfile::tempdir().unwrap();
        for seq in 1..=12 {
            entry(tmp.path(), seq, 1);
        }
        assert_eq!(prune_history(tmp.path(), 10, u64::MAX).unwrap(), 2);
        let names = left(tmp.path());
        assert_eq!(names.len(), 30);
        assert_eq!(names[0], "000003.json");
        assert_eq!(prune_history(tmp.path(), 10, u64::MAX).unwrap(), 0, "already within the limit");
    }

    #[test]
    fn history_keeps_the_newest_entries_within_the_output_budget() {
        let tmp = tempfile::tempdir().unwrap();
        entry(tmp.path(), 1, 10);
        entry(tmp.path(), 2, 60);
        entry(tmp.path(), 3, 30);
        entry(tmp.path(), 4, 30);
        // 30 + 30 fit in 70; 60 more does not; entry 1 goes too (kept history is contiguous).
        assert_eq!(prune_history(tmp.path(), 100, 70).unwrap(), 2);
        assert_eq!(left(tmp.path())[0], "000003.json");
        // The newest entry stays even when it alone exceeds the budget.
        entry(tmp.path(), 5, 500);
        assert_eq!(prune_history(tmp.path(), 100, 70).unwrap(), 2);
        assert_eq!(left(tmp.path()), vec!["000005.json", "000005.stderr", "000005.stdout"]);
    }

    #[test]
    fn history_pruning_ignores_foreign_files_and_a_missing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(prune_history(&tmp.path().join("none"), 1, 1).unwrap(), 0);
        entry(tmp.path(), 1, 1);
        entry(tmp.path(), 2, 1);
        std::fs::write(tmp.path().join("notes.txt"), "x").unwrap();
        std::fs::write(tmp.path().join("000001.json.tmp"), "x").unwrap();
        assert_eq!(prune_history(tmp.path(), 1, u64::MAX).unwrap(), 1);
        assert!(tmp.path().join("notes.txt").exists());
        assert!(!tmp.path().join("000001.stdout").exists());
    }

    #[test]
    fn snapshot_room_is_refused_past_the_count_or_the_total_size() {
        assert!(check_snapshot_room("w", MAX_NAMED_SNAPSHOTS - 1, 0, 1).is_ok());
        let e = check_snapshot_room("w", MAX_NAMED_SNAPSHOTS, 0, 1).unwrap_err().to_string();
        assert!(e.contains("already has 32 named snapshots") && e.contains("snapshot delete w NAME"), "{e}");
        assert!(check_snapshot_room("w", 0, MAX_NAMED_SNAPSHOT_BYTES - 10, 10).is_ok());
        let e = check_snapshot_room("w", 0, MAX_NAMED_SNAPSHOT_BYTES - 10, 11).unwrap_err().to_string();
        assert!(e.contains(&format!("of the {MAX_NAMED_SNAPSHOT_BYTES} bytes allowed")), "{e}");
        assert!(check_snapshot_room("w", 0, u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn snapshot_usage_counts_records_and_archive_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(named_snapshot_usage(&tmp.path().join("none")), (0, 0));
        std::fs::write(tmp.path().join("a.json"), "{}").unwrap();
        std::fs::write(tmp.path().join("a.tar"), vec![0u8; 1024]).unwrap();
        std::fs::write(tmp.path().join("b.json"), "{}").unwrap();
        std::fs::write(tmp.path().join("b.tar"), vec![0u8; 512]).unwrap();
        assert_eq!(named_snapshot_usage(tmp.path()), (2, 1536));
    }
}
