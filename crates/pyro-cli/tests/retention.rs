//! The host keeps a bounded amount of each workspace's history and snapshots (real guests):
//! the oldest command history is pruned past 64 MiB of output (the newest 1000 entries at
//! most), and named snapshots are refused past 32 per workspace, with an error that says how
//! to make room.

mod common;

use common::{fail, ok, TestHome};

fn create(home: &TestHome) -> String {
    let w = ok(home, &["workspace", "create", "debian:12", "--json"]);
    w["workspace_id"].as_str().unwrap().to_string()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum()
}

#[test]
fn command_history_is_pruned_to_its_output_budget_and_command_count_stays_true() {
    let home = TestHome::new();
    let id = create(&home);
    const MIB: u64 = 1024 * 1024;
    // Five commands of 15 MiB of stdout each: 75 MiB, over the 64 MiB the host keeps.
    for i in 1..=5 {
        let cmd = format!("head -c {} /dev/zero | tr '\\0' {}", 15 * MIB, (b'a' + i as u8) as char);
        let r = ok(&home, &["workspace", "exec", &id, "--json", "--", "sh", "-c", &cmd]);
        assert_eq!(r["sequence"], i);
        assert_eq!(r["stdout"].as_str().unwrap().len() as u64, 15 * MIB);
    }
    let commands = home.path().join("workspaces").join(&id).join("commands");
    let on_disk = dir_bytes(&commands);
    assert!(on_disk <= 64 * MIB + 64 * 1024, "history takes {on_disk} bytes on the host");
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    let seqs: Vec<u64> = logs["entries"].as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5], "the newest entries are kept, oldest first");
    assert!(logs["entries"][3]["stdout"].as_str().unwrap().starts_with("fff"), "newest output kept whole");
    let status = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(status["command_count"], 5, "command_count counts pruned commands too");
    // The next command still gets the next sequence number.
    let r = ok(&home, &["workspace", "exec", &id, "--json", "--", "true"]);
    assert_eq!(r["sequence"], 6);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn named_snapshots_are_capped_per_workspace_with_a_clear_error() {
    let home = TestHome::new();
    let id = create(&home);
    ok(&home, &["workspace", "exec", &id, "--json", "--", "sh", "-c", "echo v > f.txt"]);
    for i in 0..32 {
        ok(&home, &["workspace", "snapshot", "create", &id, &format!("s{i}"), "--json"]);
    }
    let snaps = home.path().join("workspaces").join(&id).join("snapshots");
    let before: Vec<_> = std::fs::read_dir(&snaps).unwrap().flatten().map(|e| e.file_name()).collect();
    let e = fail(&home, &["workspace", "snapshot", "create", &id, "one-too-many"]);
    assert!(e.contains("already has 32 named snapshots"), "{e}");
    assert!(e.contains(&format!("pyro workspace snapshot delete {id} NAME")), "{e}");
    let after: Vec<_> = std::fs::read_dir(&snaps).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before.len(), after.len(), "a refused snapshot leaves no file");
    let list = ok(&home, &["workspace", "snapshot", "list", &id, "--json"]);
    assert_eq!(list["count"], 33, "baseline + 32 named");
    // Deleting one makes room again.
    ok(&home, &["workspace", "snapshot", "delete", &id, "s0", "--json"]);
    ok(&home, &["workspace", "snapshot", "create", &id, "one-more", "--json"]);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
