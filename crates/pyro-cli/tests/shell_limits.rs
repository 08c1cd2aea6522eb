//! Shell geometry is bounded (real guest): a terminal larger than 1000×500 is refused at open
//! with the allowed range and leaves no shell behind; a full ring of short lines still renders
//! as `--plain` text, the oldest lines dropped past the renderer's bound and `truncated` set.

mod common;

use common::{fail, ok, TestHome};
use std::time::{Duration, Instant};

#[test]
fn shell_geometry_is_bounded_and_plain_reads_of_a_full_ring_are_bounded() {
    let home = TestHome::new();
    let id = ok(&home, &["workspace", "create", "debian:12", "--json"])["workspace_id"].as_str().unwrap().to_string();
    for (cols, rows) in [("1001", "30"), ("120", "501"), ("0", "30"), ("65535", "65535")] {
        let e = fail(&home, &["workspace", "shell", "open", &id, "--cols", cols, "--rows", rows]);
        assert!(e.contains("cols must be between 1 and 1000 and rows between 1 and 500"), "{e}");
    }
    let shells = home.path().join("workspaces").join(&id).join("shells");
    assert!(!shells.exists() || std::fs::read_dir(&shells).unwrap().next().is_none(), "a refused open left a shell");

    let opened = ok(&home, &["workspace", "shell", "open", &id, "--cols", "1000", "--rows", "500", "--json"]);
    let shell = opened["shell_id"].as_str().unwrap().to_string();
    // 300 000 short lines: far more than the 2097 lines a 1000-column rendering keeps.
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "seq 1 300000; echo DONE-MARK", "--json"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        let r = ok(
            &home,
            &[
                "workspace",
                "shell",
                "read",
                &id,
                &shell,
                "--plain",
                "--max-chars",
                "1048576",
                "--wait-for-idle-ms",
                "1000",
                "--json",
            ],
        );
        let out = r["output"].as_str().unwrap();
        if out.lines().any(|l| l == "DONE-MARK") || Instant::now() > deadline {
            break r;
        }
    };
    let out = r["output"].as_str().unwrap();
    assert!(out.lines().any(|l| l == "300000"), "newest lines are kept: {}", &out[out.len().saturating_sub(200)..]);
    assert!(!out.lines().any(|l| l == "1"), "the oldest lines were dropped");
    assert!(out.lines().count() <= 2 * 1024 * 1024 / 1000, "{} lines rendered", out.lines().count());
    assert_eq!(r["truncated"], true, "dropping lines is reported");
    ok(&home, &["workspace", "shell", "close", &id, &shell, "--json"]);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
