//! Persistent workspace acceptance tests: real guests, real agent, the `pyro` CLI.

mod common;

use common::{fail, ok, stderr, stdout, TestHome};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A small repo: nested dirs, an executable, in-tree relative links, a binary file.
fn make_repo(root: &Path) {
    std::fs::create_dir_all(root.join("src/lib")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/pkg/bin")).unwrap();
    std::fs::create_dir_all(root.join("node_modules/.bin")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("README.md"), "hello\n").unwrap();
    std::fs::write(root.join("src/lib/x.py"), "print('x')\n").unwrap();
    std::fs::write(root.join("src/main.py"), "import lib\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("node_modules/pkg/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(root.join("node_modules/pkg/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../pkg/bin/tool", root.join("node_modules/.bin/tool")).unwrap();
    std::os::unix::fs::symlink("../lib/x.py", root.join("src/link.py")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(root.join("blob.bin"), binary).unwrap();
}

/// Byte-for-byte tree comparison: file contents, modes, link targets, directories.
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().unwrap();
    assert!(out.status.success(), "trees differ:\n{}", String::from_utf8_lossy(&out.stdout));
    let list = |root: &Path| {
        let out = Command::new("find").arg(".").arg("-printf").arg("%p %y %m %l\n").current_dir(root).output().unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(list(a), list(b));
}

#[test]
fn readme_walkthrough_runs_end_to_end() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    make_repo(&seed);
    let seed_s = seed.display().to_string();
    let w = ok(
        &home,
        &[
            "workspace",
            "create",
            "debian:12",
            "--seed-path",
            &seed_s,
            "--name",
            "demo",
            "--label",
            "team=core",
            "--json",
        ],
    );
    let id = w["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(w["state"], "started");
    assert_eq!(w["backend"], "qemu");
    assert_eq!(w["workspace_seed"]["mode"], "directory");
    assert_eq!(w["labels"]["team"], "core");

    let l = ok(&home, &["workspace", "list", "--json"]);
    assert_eq!(l["count"], 1);
    assert_eq!(l["workspaces"][0]["name"], "demo");

    let u = ok(&home, &["workspace", "update", &id, "--label", "stage=dev", "--name", "demo2", "--json"]);
    assert_eq!(u["name"], "demo2");
    assert_eq!(u["labels"]["stage"], "dev");

    let extra = home.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("notes.txt"), "synced\n").unwrap();
    let s = ok(&home, &["workspace", "sync", "push", &id, &extra.display().to_string(), "--dest", "docs", "--json"]);
    assert_eq!(s["workspace_sync"]["destination"], "/workspace/docs");
    let r = ok(&home, &["workspace", "file", "read", &id, "docs/notes.txt", "--json"]);
    assert_eq!(r["content"], "synced\n");

    let patch = "--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n hello\n+world\n";
    let p = ok(&home, &["workspace", "patch", "apply", &id, "--patch", patch, "--json"]);
    assert_eq!(p["summary"]["modified"], 1);

    let e = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "cat README.md; ./run.sh; node_modules/.bin/tool"]);
    assert_eq!(stdout(&e), "hello\nworld\nran\ntool\n", "{}", stderr(&e));

    ok(&home, &["workspace", "snapshot", "create", &id, "checkpoint", "--json"]);
    ok(&home, &["workspace", "exec", &id, "--json", "--", "rm", "-f", "README.md"]);
    let snaps = ok(&home, &["workspace", "snapshot", "list", &id, "--json"]);
    assert_eq!(snaps["snapshots"][0]["snapshot_name"], "baseline");
    assert_eq!(snaps["snapshots"][1]["snapshot_name"], "checkpoint");
    let reset = ok(&home, &["workspace", "reset", &id, "--snapshot", "checkpoint", "--json"]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "checkpoint");
    assert_eq!(reset["command_count"], 0);
    assert_eq!(reset["reset_count"], 1);
    let r = ok(&home, &["workspace", "file", "read", &id, "README.md", "--json"]);
    assert_eq!(r["content"], "hello\nworld\n");

    let out = home.path().join("out");
    let x =
        ok(&home, &["workspace", "export", &id, "/workspace/src", "--output", &out.display().to_string(), "--json"]);
    assert_eq!(x["artifact_type"], "directory");
    assert_eq!(std::fs::read_link(out.join("link.py")).unwrap(), Path::new("../lib/x.py"));
    // Refuses to overwrite.
    let e = fail(&home, &["workspace", "export", &id, "/workspace/src", "--output", &out.display().to_string()]);
    assert!(e.contains("output_path already exists"), "{e}");

    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    assert_eq!(logs["count"], 0, "reset clears the history");
    ok(&home, &["workspace", "delete", &id, "--json"]);
    let e = fail(&home, &["workspace", "status", &id]);
    assert!(e.contains(&format!("workspace '{id}' does not exist")), "{e}");
}

#[test]
fn seed_round_trips_byte_for_byte_through_export() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    make_repo(&seed);
    let w = ok(&home, &["workspace", "create", "debian:12", "--seed-path", &seed.display().to_string(), "--json"]);
    let id = w["workspace_id"].as_str().unwrap();
    assert_eq!(w["workspace_seed"]["entry_count"], 16);
    let out = home.path().join("export");
    ok(&home, &["workspace", "export", id, "/workspace", "--output", &out.display().to_string(), "--json"]);
    assert_same_tree(&seed, &out);
    // A link that points outside is kept as a link and never followed.
    assert_eq!(std::fs::read_link(out.join("outside")).unwrap(), Path::new("/etc/passwd"));
    ok(&home, &["workspace", "delete", id, "--json"]);
}

#[test]
fn diff_counts_changes_and_its_patch_applies_with_git() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    make_repo(&seed);
    let w = ok(&home, &["workspace", "create", "debian:12", "--seed-path", &seed.display().to_string(), "--json"]);
    let id = w["workspace_id"].as_str().unwrap();
    let change = "echo new > added.txt; printf 'print(1)\\n' >> src/main.py; rm README.md; rm src/lib/x.py; ln -s main.py src/lib/x.py; printf 'no newline' > tail.txt";
    ok(&home, &["workspace", "exec", id, "--json", "--", "sh", "-c", change]);
    let d = ok(&home, &["workspace", "diff", id, "--json"]);
    let s = &d["summary"];
    assert_eq!(s["added"], 2, "{d}");
    assert_eq!(s["modified"], 1, "{d}");
    assert_eq!(s["deleted"], 1, "{d}");
    assert_eq!(s["type_changed"], 1, "{d}");
    assert_eq!(s["total"], 5, "{d}");
    // git apply accepts the text patch against the baseline tree.
    let repo = home.path().join("repo");
    Command::new("cp").arg("-a").arg(&seed).arg(&repo).status().unwrap();
    std::fs::write(home.path().join("p.diff"), d["patch"].as_str().unwrap()).unwrap();
    let git = Command::new("git")
        .args(["apply", "--check", "-v"])
        .arg(home.path().join("p.diff"))
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(git.status.success(), "git apply --check: {}", String::from_utf8_lossy(&git.stderr));
    ok(&home, &["workspace", "delete", id, "--json"]);
}

#[test]
fn git_style_patches_and_failed_patches() {
    let home = TestHome::new();
    let w = ok(&home, &["workspace", "create", "debian:12", "--json"]);
    let id = w["workspace_id"].as_str().unwrap();
    ok(&home, &["workspace", "file", "write", id, "a.txt", "--text", "one\ntwo", "--json"]);
    ok(&home, &["workspace", "file", "write", id, "gone.txt", "--text", "bye\n", "--json"]);
    let patch = "diff --git a/a.txt b/a.txt\nindex 1111111..2222222 100644\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n one\n-two\n\\ No newline at end of file\n+two\n\
diff --git a/new.txt b/new.txt\nnew file mode 100644\nindex 0000000..3333333\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+fresh\n\
diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\nindex 4444444..0000000\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
    let p = ok(&home, &["workspace", "patch", "apply", id, "--patch", patch, "--json"]);
    assert_eq!(p["summary"]["added"], 1);
    assert_eq!(p["summary"]["modified"], 1);
    assert_eq!(p["summary"]["deleted"], 1);
    let r = ok(&home, &["workspace", "file", "read", id, "a.txt", "--json"]);
    assert_eq!(r["content"], "one\ntwo\n");
    // A patch whose second file does not apply changes nothing, and says which hunk failed.
    let bad =
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-one\n+ONE\n--- a/new.txt\n+++ b/new.txt\n@@ -1 +1 @@\n-nope\n+x\n";
    let e = fail(&home, &["workspace", "patch", "apply", id, "--patch", bad]);
    assert!(e.contains("new.txt") && e.contains("hunk"), "{e}");
    let r = ok(&home, &["workspace", "file", "read", id, "a.txt", "--json"]);
    assert_eq!(r["content"], "one\ntwo\n", "a failed patch must change nothing");
    ok(&home, &["workspace", "delete", id, "--json"]);
}

#[test]
fn file_write_keeps_modes_and_reads_never_split_characters() {
    let home = TestHome::new();
    let seed = home.path().join("seed");
    make_repo(&seed);
    let w = ok(&home, &["workspace", "create", "debian:12", "--seed-path", &seed.display().to_string(), "--json"]);
    let id = w["workspace_id"].as_str().unwrap();
    ok(&home, &["workspace", "file", "write", id, "run.sh", "--text", "#!/bin/sh\necho changed\n", "--json"]);
    ok(&home, &["workspace", "file", "write", id, "fresh/new.txt", "--text", "ünï", "--json"]);
    let e = home.run(&["workspace", "exec", id, "--", "sh", "-c", "./run.sh; stat -c %a run.sh fresh/new.txt"]);
    assert_eq!(stdout(&e), "changed\n755\n644\n", "{}", stderr(&e));
    // "ünï" is 5 bytes; 2 bytes would split "ü".
    let r = ok(&home, &["workspace", "file", "read", id, "fresh/new.txt", "--max-bytes", "2", "--json"]);
    assert_eq!(r["content"], "ü");
    assert_eq!(r["truncated"], true);
    let r = ok(&home, &["workspace", "file", "read", id, "fresh/new.txt", "--max-bytes", "1", "--json"]);
    assert_eq!(r["content"], "");
    ok(&home, &["workspace", "delete", id, "--json"]);
}

#[test]
fn bad_input_changes_nothing() {
    let home = TestHome::new();
    let e = fail(&home, &["workspace", "status", "nope12345678"]);
    assert!(e.contains("workspace 'nope12345678' does not exist"), "{e}");
    let e = fail(&home, &["workspace", "create", "debian:12", "--seed-path", "/definitely/missing"]);
    assert!(e.contains("does not exist"), "{e}");
    let e = fail(&home, &["workspace", "create", "debian:12", "--label", "bad key=v"]);
    assert!(e.contains("label"), "{e}");
    let e = fail(&home, &["workspace", "create", "debian:12", "--name", "   "]);
    assert!(e.contains("name must not be empty"), "{e}");
    let l = ok(&home, &["workspace", "list", "--json"]);
    assert_eq!(l["count"], 0, "failed creates left a workspace behind");

    let w = ok(&home, &["workspace", "create", "debian:12", "--json"]);
    let id = w["workspace_id"].as_str().unwrap();
    let e = fail(&home, &["workspace", "file", "write", id, "../etc/passwd", "--text", "x"]);
    assert!(e.contains("must stay inside /workspace"), "{e}");
    let e = fail(&home, &["workspace", "file", "read", id, "/etc/passwd"]);
    assert!(e.contains("must stay inside /workspace"), "{e}");
    let big = home.path().join("big.txt");
    std::fs::write(&big, "x".repeat(1024 * 1024 + 1)).unwrap();
    let e = fail(&home, &["workspace", "file", "write", id, "big.txt", "--text-file", &big.display().to_string()]);
    assert!(e.contains("1048576"), "{e}");
    let e = fail(&home, &["workspace", "snapshot", "delete", id, "nosuch"]);
    assert!(e.contains("snapshot 'nosuch' does not exist"), "{e}");
    let e = fail(&home, &["workspace", "reset", id, "--snapshot", "nosuch"]);
    assert!(e.contains("snapshot 'nosuch' does not exist"), "{e}");
    let exists = home.path().join("exists");
    std::fs::write(&exists, "keep").unwrap();
    let e = fail(&home, &["workspace", "export", id, "/workspace", "--output", &exists.display().to_string()]);
    assert!(e.contains("output_path already exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&exists).unwrap(), "keep");
    let d = ok(&home, &["workspace", "diff", id, "--json"]);
    assert_eq!(d["changed"], false, "bad input changed the workspace: {d}");
    ok(&home, &["workspace", "stop", id, "--json"]);
    let e = fail(&home, &["workspace", "exec", id, "--", "true"]);
    assert!(e.contains("must be in 'started' state"), "{e}");
    ok(&home, &["workspace", "delete", id, "--json"]);
}

#[test]
fn concurrent_processes_lose_no_update() {
    let home = TestHome::new();
    let w = ok(&home, &["workspace", "create", "debian:12", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    const PROCS: usize = 8;
    const OPS: usize = 50;
    let workers: Vec<_> = (0..PROCS)
        .map(|p| {
            let bin = common::pyro_bin();
            let home_dir = home.path().to_path_buf();
            let id = id.clone();
            std::thread::spawn(move || {
                let mut execs = 0;
                for i in 0..OPS {
                    let mut c = Command::new(&bin);
                    c.env("PYRO_HOME", &home_dir);
                    if p % 2 == 0 {
                        c.args(["workspace", "exec", &id, "--json", "--", "echo", &format!("{p}-{i}")]);
                        execs += 1;
                    } else {
                        c.args([
                            "workspace",
                            "file",
                            "write",
                            &id,
                            &format!("p{p}/f{i}.txt"),
                            "--text",
                            &format!("{i}"),
                            "--json",
                        ]);
                    }
                    let o = c.output().unwrap();
                    assert!(o.status.success(), "op {p}/{i} failed: {}", String::from_utf8_lossy(&o.stderr));
                }
                execs
            })
        })
        .collect();
    let execs: usize = workers.into_iter().map(|t| t.join().unwrap()).sum();
    let s = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(s["command_count"], execs as u64);
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    assert_eq!(logs["count"], execs as u64);
    let files = ok(&home, &["workspace", "file", "list", &id, "--recursive", "--json"]);
    let written = files["entries"].as_array().unwrap().iter().filter(|e| e["artifact_type"] == "file").count();
    assert_eq!(written, (PROCS / 2) * OPS);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

/// Expiry stops a workspace and keeps its disk; extending the TTL and starting brings it
/// back with /workspace intact. (Time passing is simulated by moving `expires_at` back.)
#[test]
fn expiry_stops_but_never_deletes() {
    let home = TestHome::new();
    let w = ok(&home, &["workspace", "create", "debian:12", "--ttl-seconds", "60", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    ok(&home, &["workspace", "file", "write", &id, "keep.txt", "--text", "precious", "--json"]);
    let record = home.path().join("workspaces").join(&id).join("workspace.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    r["expires_at"] = serde_json::json!(r["created_at"].as_f64().unwrap() - 1.0);
    std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();

    let e = fail(&home, &["workspace", "exec", &id, "--", "true"]);
    assert!(e.contains("expired"), "{e}");
    let s = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(s["state"], "stopped");
    assert!(s["last_error"].as_str().unwrap().contains("expired"), "{s}");
    assert!(home.leftover_processes().is_empty(), "an expired workspace still runs");
    let e = fail(&home, &["workspace", "start", &id]);
    assert!(e.contains("--ttl-seconds"), "{e}");

    let u = ok(&home, &["workspace", "update", &id, "--ttl-seconds", "600", "--json"]);
    assert!(u["expires_at"].as_f64().unwrap() > u["last_activity_at"].as_f64().unwrap() + 500.0);
    ok(&home, &["workspace", "start", &id, "--json"]);
    let r = ok(&home, &["workspace", "file", "read", &id, "keep.txt", "--json"]);
    assert_eq!(r["content"], "precious");
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
