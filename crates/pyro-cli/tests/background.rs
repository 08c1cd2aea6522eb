//! Background commands (issue 14, item 6) in real guests, through separate CLI processes:
//! `workspace exec --background`, then `workspace command status|read|wait|kill`.

mod common;

use common::{fail, ok, stderr, stdout, TestHome};

fn create(home: &TestHome) -> String {
    ok(home, &["workspace", "create", "debian:12", "--json"])["workspace_id"].as_str().unwrap().to_string()
}

/// Guest processes whose command line starts with `prefix`; the listing must show the agent.
fn guest_procs(home: &TestHome, id: &str, prefix: &str) -> usize {
    let ps = ok(home, &["workspace", "exec", id, "--json", "--", "ps", "-eo", "args"]);
    assert_eq!(ps["exit_code"], 0, "{ps}");
    let listing = ps["stdout"].as_str().unwrap();
    assert!(listing.contains("pyro-agent"), "ps shows no agent: {listing}");
    listing.lines().filter(|l| l.starts_with(prefix)).count()
}

fn start(home: &TestHome, id: &str, command: &str) -> String {
    let o = home.run(&["workspace", "exec", "--background", id, "--", "sh", "-c", command]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cmd = stdout(&o).trim().to_string();
    assert_eq!(cmd.len(), 12, "{cmd}");
    cmd
}

/// The acceptance scenario: a 10-minute command started in the background is read, waited
/// on and killed from separate CLI calls; nothing of it is left in the guest.
#[test]
fn ten_minute_command_is_read_waited_on_and_killed_from_separate_calls() {
    let home = TestHome::new();
    let id = create(&home);
    let cmd = start(&home, &id, "echo started; echo to-stderr >&2; sleep 600; echo done");

    let s = ok(&home, &["workspace", "command", "status", &id, &cmd, "--json"]);
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["timeout_seconds"], 3600);
    assert!(s["exit_code"].is_null());

    // Read by cursor, across calls: first one byte, then the rest from next_cursor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ok(&home, &["workspace", "command", "status", &id, &cmd, "--json"])["output_bytes"].as_u64().unwrap() < 18 {
        assert!(std::time::Instant::now() < deadline, "no output");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r1 = ok(&home, &["workspace", "command", "read", &id, &cmd, "--max-bytes", "1", "--json"]);
    assert_eq!((r1["cursor"].as_u64(), r1["next_cursor"].as_u64()), (Some(0), Some(1)), "{r1}");
    assert_eq!(r1["has_more"], true);
    let next = r1["next_cursor"].as_u64().unwrap().to_string();
    let r2 = ok(&home, &["workspace", "command", "read", &id, &cmd, "--cursor", &next, "--json"]);
    let out = format!("{}{}", r1["stdout"].as_str().unwrap(), r2["stdout"].as_str().unwrap());
    assert_eq!(out, "started\n", "{r1} {r2}");
    assert_eq!(r2["stderr"], "to-stderr\n");
    assert_eq!(r2["has_more"], false);
    assert_eq!(r2["next_cursor"], 18);

    // A short wait answers `running` at its timeout and does not kill it.
    let t = std::time::Instant::now();
    let w = ok(&home, &["workspace", "command", "wait", &id, &cmd, "--timeout-seconds", "2", "--json"]);
    assert_eq!(w["state"], "running", "{w}");
    assert!(t.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(guest_procs(&home, &id, "sleep 600"), 1);

    let k = ok(&home, &["workspace", "command", "kill", &id, &cmd, "--json"]);
    assert_eq!(k["state"], "killed", "{k}");
    assert!(k["exit_code"].as_i64().unwrap() > 128, "{k}");
    let seq = k["sequence"].as_u64().expect("recorded in the history");
    assert_eq!(guest_procs(&home, &id, "sleep 600"), 0, "the process group is gone");
    assert_eq!(guest_procs(&home, &id, "sh -c echo started"), 0);

    // It is in the history with its output; status afterwards says the same.
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    let entry = logs["entries"].as_array().unwrap().iter().find(|e| e["sequence"] == seq).unwrap().clone();
    assert_eq!(entry["stdout"], "started\n", "{entry}");
    assert_eq!(entry["exit_code"], k["exit_code"]);
    let s = ok(&home, &["workspace", "command", "status", &id, &cmd, "--json"]);
    assert_eq!((s["state"].as_str(), s["sequence"].as_u64()), (Some("killed"), Some(seq)));
    // Killing an ended command changes nothing.
    assert_eq!(ok(&home, &["workspace", "command", "kill", &id, &cmd, "--json"])["sequence"], seq);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn a_short_command_lands_in_history_and_bad_input_is_refused() {
    let home = TestHome::new();
    let id = create(&home);
    let cmd = start(&home, &id, "echo out; echo err >&2; exit 3");
    let w = ok(&home, &["workspace", "command", "wait", &id, &cmd, "--timeout-seconds", "60", "--json"]);
    assert_eq!((w["state"].as_str(), w["exit_code"].as_i64()), (Some("exited"), Some(3)), "{w}");
    let seq = w["sequence"].as_u64().unwrap();
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    let entry = logs["entries"].as_array().unwrap().iter().find(|e| e["sequence"] == seq).unwrap().clone();
    assert_eq!((entry["stdout"].as_str(), entry["stderr"].as_str()), (Some("out\n"), Some("err\n")));
    assert_eq!(entry["exit_code"], 3);
    assert_eq!(logs["count"], 1, "recorded once: {logs}");
    ok(&home, &["workspace", "command", "status", &id, &cmd, "--json"]);
    assert_eq!(ok(&home, &["workspace", "logs", &id, "--json"])["count"], 1);
    // One that ends on its own with nobody asking is in the history all the same.
    start(&home, &id, "echo later");
    ok(&home, &["workspace", "exec", &id, "--json", "--", "sleep", "3"]);
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    assert!(logs["entries"].as_array().unwrap().iter().any(|e| e["stdout"] == "later\n"), "{logs}");
    assert_eq!(logs["count"], 3, "{logs}");

    // A timeout ends it `timed_out` with exit code 124.
    let t = home.run(&["workspace", "exec", "--background", "--timeout-seconds", "1", &id, "--", "sleep", "30"]);
    let t = stdout(&t).trim().to_string();
    let w = ok(&home, &["workspace", "command", "wait", &id, &t, "--timeout-seconds", "30", "--json"]);
    assert_eq!((w["state"].as_str(), w["exit_code"].as_i64()), (Some("timed_out"), Some(124)), "{w}");

    // Bad input: unknown id, malformed id, cursor past the end, max_bytes out of range, over limit.
    let e = fail(&home, &["workspace", "command", "status", &id, "0123456789ab"]);
    assert!(e.contains("unknown background command '0123456789ab'"), "{e}");
    let e = fail(&home, &["workspace", "command", "read", &id, "../x"]);
    assert!(e.contains("invalid command id"), "{e}");
    let e = fail(&home, &["workspace", "command", "read", &id, &cmd, "--cursor", "999"]);
    assert!(e.contains("cursor 999 is past the end"), "{e}");
    let e = fail(&home, &["workspace", "command", "read", &id, &cmd, "--max-bytes", "0"]);
    assert!(e.contains("max_bytes must be between 1 and"), "{e}");
    let e = fail(&home, &["workspace", "command", "wait", &id, &cmd, "--timeout-seconds", "3601"]);
    assert!(e.contains("at most 3600"), "{e}");
    let o = home.run(&["workspace", "exec", "--background", "--sync", &id, "--", "true"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let running: Vec<String> = (0..8).map(|_| start(&home, &id, "sleep 600")).collect();
    let e = fail(&home, &["workspace", "exec", "--background", &id, "--", "sleep", "600"]);
    assert!(e.contains("the most one workspace runs at once (8)"), "{e}");
    assert_eq!(guest_procs(&home, &id, "sleep 600"), 8);

    // Stop ends them all, each recorded as killed.
    let before = ok(&home, &["workspace", "logs", &id, "--json"])["count"].as_u64().unwrap();
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    assert_eq!(logs["count"].as_u64().unwrap(), before + 8, "{logs}");
    ok(&home, &["workspace", "start", &id, "--json"]);
    let s = ok(&home, &["workspace", "command", "status", &id, &running[0], "--json"]);
    assert_eq!(s["state"], "killed", "{s}");
    let e = fail(&home, &["workspace", "command", "read", &id, &running[0]]);
    assert!(e.contains("no longer kept in the guest"), "{e}");
    assert_eq!(guest_procs(&home, &id, "sleep 600"), 0);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

/// The idle pause freezes a workspace nobody calls; a running background command is work in
/// progress, so it keeps the workspace up; once the command ends, the idle pause applies.
#[test]
fn a_running_background_command_keeps_an_idle_workspace_from_pausing() {
    use std::time::{Duration, Instant};
    let home = TestHome::new();
    let id = create(&home);
    let state =
        |home: &TestHome| ok(home, &["workspace", "status", &id, "--json"])["state"].as_str().unwrap().to_string();
    let cmd = start(&home, &id, "sleep 600");
    ok(&home, &["workspace", "update", &id, "--idle-pause-seconds", "2", "--json"]);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(state(&home), "started", "paused with a background command running");
    let k = ok(&home, &["workspace", "command", "kill", &id, &cmd, "--json"]);
    assert_eq!(k["state"], "killed", "{k}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while state(&home) != "paused" {
        assert!(Instant::now() < deadline, "not paused 90 s after its command ended");
        std::thread::sleep(Duration::from_millis(500));
    }
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
