//! `pyro workspace summary` against a real guest: every kind of operation shows up in its
//! group, the diff stat is `workspace diff`'s, the text fits 80 columns, a reset starts a
//! new period, and a stopped workspace still summarises (without a diff).

mod common;

use common::{fail, ok, stdout, TestHome};

#[test]
fn summary_reports_every_operation_and_matches_the_diff() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(seed.join("gone.txt"), "bye\n").unwrap();
    let w = ok(&home, &["workspace", "create", "debian:12", "--seed-path", &seed.display().to_string(), "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();

    let fresh = ok(&home, &["workspace", "summary", &id, "--json"]);
    assert_eq!(fresh["since_kind"], "create");
    assert_eq!(fresh["since"], w["created_at"]);
    assert_eq!(fresh["commands"]["total"], 0);
    assert_eq!(fresh["diff"]["changed"], false, "{fresh}");

    // One of each operation.
    let e = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "rm gone.txt; exit 3"]);
    assert_eq!(e.status.code(), Some(3));
    ok(&home, &["workspace", "exec", &id, "--json", "--", "true"]);
    ok(&home, &["workspace", "file", "write", &id, "new.txt", "--text", "x\ny\n", "--json"]);
    let patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
    ok(&home, &["workspace", "patch", "apply", &id, "--patch", patch, "--json"]);
    let extra = home.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("cfg"), "k=v\n").unwrap();
    ok(&home, &["workspace", "sync", "push", &id, &extra.display().to_string(), "--dest", "conf", "--json"]);
    ok(&home, &["workspace", "snapshot", "create", &id, "s1", "--json"]);
    ok(&home, &["workspace", "snapshot", "delete", &id, "s1", "--json"]);
    let out = home.path().join("a-out.txt");
    ok(&home, &["workspace", "export", &id, "a.txt", "--output", &out.display().to_string(), "--json"]);
    ok(&home, &["workspace", "service", "start", &id, "app", "--json", "--", "sleep", "300"]);
    ok(&home, &["workspace", "service", "stop", &id, "app", "--json"]);
    // A failed call records nothing.
    fail(&home, &["workspace", "patch", "apply", &id, "--patch", "--- a/nope\n+++ b/nope\n@@ -1 +1 @@\n-a\n+b\n"]);

    let s = ok(&home, &["workspace", "summary", &id, "--json"]);
    let d = ok(&home, &["workspace", "diff", &id, "--json"]);
    assert_eq!(s["diff"]["summary"], d["summary"], "the summary's diff stat is workspace diff's");
    let entries: Vec<(String, String)> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().into(), e["status"].as_str().unwrap().into()))
        .collect();
    let mine: Vec<(String, String)> = s["diff"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().into(), e["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(mine, entries);
    // a.txt: -1 +1; new.txt: +2; gone.txt: -1; conf/cfg: +1.
    assert_eq!(
        (s["diff"]["lines_added"].as_u64(), s["diff"]["lines_removed"].as_u64()),
        (Some(4), Some(2)),
        "{}",
        s["diff"]
    );
    assert_eq!(s["commands"]["total"], 2);
    assert_eq!(s["commands"]["failed"], 1);
    assert_eq!(s["commands"]["entries"][0]["exit_code"], 3);
    assert_eq!(s["file_writes"][0]["path"], "/workspace/new.txt");
    assert_eq!(s["patches"].as_array().unwrap().len(), 1, "the failed patch is not recorded");
    assert_eq!(s["patches"][0]["paths"][0], "/workspace/a.txt");
    assert_eq!(s["syncs"][0]["destination"], "/workspace/conf");
    assert_eq!(s["snapshots"]["created"][0]["snapshot_name"], "s1");
    assert_eq!(s["snapshots"]["deleted"][0]["snapshot_name"], "s1");
    assert_eq!(s["exports"][0]["output_path"], out.display().to_string());
    assert_eq!(s["services"]["started"][0]["service_name"], "app");
    assert_eq!(s["services"]["started"][0]["command"], "sleep 300");
    assert_eq!(s["services"]["stopped"][0]["service_name"], "app");
    assert_eq!(s["events_complete"], true);

    let text = stdout(&home.run(&["workspace", "summary", &id]));
    for line in text.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line:?}");
    }
    assert!(text.contains("Commands: 2 run, 1 failed"), "{text}");
    assert!(text.contains("Changes: 4 path(s): 2 added, 1 modified, 1 deleted; +4 -2 lines"), "{text}");
    assert!(text.contains("D gone.txt") && text.contains("A new.txt"), "{text}");

    // A reset starts a new period: only the reset itself.
    ok(&home, &["workspace", "reset", &id, "--json"]);
    let r = ok(&home, &["workspace", "summary", &id, "--json"]);
    assert_eq!(r["since_kind"], "reset");
    assert_eq!(r["reset"]["snapshot_name"], "baseline");
    for group in ["syncs", "file_writes", "patches", "exports"] {
        assert_eq!(r[group], serde_json::json!([]), "{group} after reset");
    }
    assert_eq!(r["commands"]["total"], 0);
    assert_eq!(r["diff"]["changed"], false);

    // Stopped: the journal and history still answer, the diff says why it is missing.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let st = ok(&home, &["workspace", "summary", &id, "--json"]);
    assert_eq!(st["state"], "stopped");
    assert!(st["diff"].is_null());
    assert!(st["diff_error"].as_str().unwrap().contains("stopped"), "{st}");
    let text = stdout(&home.run(&["workspace", "summary", &id]));
    assert!(text.contains("Changes: unknown (workspace is stopped"), "{text}");

    let e = fail(&home, &["workspace", "summary", "000000000000"]);
    assert!(e.contains("does not exist"), "{e}");
    ok(&home, &["workspace", "delete", &id, "--json"]);
    home.assert_clean();
}

#[test]
fn mcp_serve_refuses_a_mode_that_does_not_fit_the_profile() {
    let home = TestHome::new();
    let o = home.run(&["mcp", "serve", "--mode", "inspect", "--profile", "workspace-core"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--mode inspect does not fit --profile workspace-core") && e.contains("workspace_disk_list"),
        "{e}"
    );
    let o = home.run(&["mcp", "serve", "--mode", "nope"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown mode");
    assert!(String::from_utf8_lossy(&o.stderr).contains("repro-fix"));
}
