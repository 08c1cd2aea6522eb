//! Pause, resume, fork and idle pause of workspaces in real guests (issue 12 acceptance),
//! through the `pyro` binary. Boots are few (TCG on 2 cores): one workspace carries the
//! pause/resume/fork assertions, one the bad-input and cold paths.

mod common;

use common::{fail, free_port, http_get, ok, processes_mentioning, start_site_service, stderr, stdout, TestHome};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn create(home: &TestHome, args: &[&str]) -> String {
    let mut all = vec!["workspace", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    ok(home, &all)["workspace_id"].as_str().unwrap().to_string()
}

/// Run and expect a clean failure with `--json`: the error code and message.
fn fail_json(home: &TestHome, args: &[&str]) -> (String, String) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = home.run(&all);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail: {}{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v["code"].as_str().unwrap().to_string(), v["error"].as_str().unwrap().to_string())
}

/// Run `script` in the workspace; (exit code, stdout, whole payload).
fn exec(home: &TestHome, id: &str, script: &str) -> (i64, String, serde_json::Value) {
    let r = ok(home, &["workspace", "exec", id, "--json", "--", "sh", "-c", script]);
    (r["exit_code"].as_i64().unwrap(), r["stdout"].as_str().unwrap().to_string(), r)
}

fn runtime(home: &TestHome, id: &str) -> PathBuf {
    home.path().join("workspaces").join(id).join("runtime")
}

fn state(home: &TestHome, id: &str) -> String {
    ok(home, &["workspace", "status", id, "--json"])["state"].as_str().unwrap().to_string()
}

/// Shell output until `needle` shows up (a slow TCG guest may need more than one idle window).
fn shell_output_until(home: &TestHome, id: &str, shell: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = String::new();
    let mut cursor = 0u64;
    loop {
        let c = cursor.to_string();
        let r = ok(
            home,
            &[
                "workspace",
                "shell",
                "read",
                id,
                shell,
                "--cursor",
                &c,
                "--wait-for-idle-ms",
                "300",
                "--plain",
                "--json",
            ],
        );
        all.push_str(r["output"].as_str().unwrap());
        cursor = r["next_cursor"].as_u64().unwrap();
        if all.contains(needle) || Instant::now() > deadline {
            return all;
        }
    }
}

/// (a) a shell and a published HTTP service survive pause/resume; (b) nothing of the VM
/// runs while paused and the state is far smaller than guest memory; (d) exec on a paused
/// workspace resumes it and says so; (c) fork into 3: shared past, separate futures, fresh
/// randomness and identity, and children that outlive their parent.
#[test]
fn pause_resume_keeps_shells_and_services_and_fork_makes_independent_children() {
    let home = TestHome::new();
    let id = create(&home, &["debian:12-build", "--network-policy", "egress+published-ports"]);
    ok(
        &home,
        &["workspace", "file", "write", &id, "site/index.html", "--text", "page from before the pause", "--json"],
    );
    let port = free_port();
    let svc = start_site_service(&home, &id, port);
    assert_eq!(svc["state"], "running", "{svc}");
    let pid = svc["pid"].as_i64().expect("service pid");
    let shell = ok(&home, &["workspace", "shell", "open", &id, "--json"])["shell_id"].as_str().unwrap().to_string();
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "cd /tmp; export X=1", "--json"]);

    // (b) Pause: no QEMU or supervisor of this workspace is left, the state is on disk.
    let p = ok(&home, &["workspace", "pause", &id, "--json"]);
    assert_eq!(p["state"], "paused", "{p}");
    let state_bytes = p["workspace_pause"]["state_bytes"].as_u64().unwrap();
    let mem_bytes = p["mem_mib"].as_u64().unwrap() * 1024 * 1024;
    eprintln!(
        "paused: state_bytes={state_bytes} ({} MiB) for mem_mib={} pause_ms={}",
        state_bytes >> 20,
        p["mem_mib"],
        p["workspace_pause"]["pause_ms"]
    );
    assert!(state_bytes < mem_bytes / 3, "state {state_bytes} bytes is not far smaller than {mem_bytes}");
    let on_disk = std::fs::metadata(runtime(&home, &id).join("memory.state")).unwrap().len();
    assert_eq!(on_disk, state_bytes);
    let vm_dir = runtime(&home, &id).display().to_string();
    assert_eq!(processes_mentioning(&vm_dir), Vec::<String>::new(), "VM processes left after pause");
    assert_eq!(state(&home, &id), "paused");
    assert!(http_get(port, "/index.html").is_err(), "the published port answers while paused");
    // Pausing a paused workspace changes nothing.
    assert_eq!(ok(&home, &["workspace", "pause", &id, "--json"])["state"], "paused");

    // (a) Resume: the shell's cwd and environment, the same service process, the same page
    // through the same published port, without restarting the service.
    let r = ok(&home, &["workspace", "resume", &id, "--json"]);
    assert_eq!(r["state"], "started", "{r}");
    eprintln!("resumed: resume_ms={}", r["workspace_resume"]["resume_ms"]);
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "echo \"at=$(pwd) x=$X\"", "--json"]);
    let out = shell_output_until(&home, &id, &shell, "at=/tmp x=1");
    assert!(out.contains("at=/tmp x=1"), "shell state lost: {out}");
    let s = ok(&home, &["workspace", "service", "status", &id, "web", "--json"]);
    assert_eq!((s["state"].as_str(), s["pid"].as_i64()), (Some("running"), Some(pid)), "{s}");
    let page = http_get(port, "/index.html").unwrap();
    assert!(page.starts_with("HTTP/1.0 200") && page.contains("page from before the pause"), "{page}");
    let (_, started_at, _) = exec(&home, &id, &format!("ps -o lstart= -p {pid}"));
    assert!(!started_at.trim().is_empty(), "service process {pid} is gone in the guest");
    // (e) Resuming a running workspace is refused, saying what to do.
    let (code, _) = fail_json(&home, &["workspace", "resume", &id]);
    assert_eq!(code, "invalid_state");
    let e = fail(&home, &["workspace", "resume", &id]);
    assert!(e.contains("not paused") && e.contains("workspace pause"), "{e}");

    // (d) exec on a paused workspace resumes it and says so; a second exec does not.
    ok(&home, &["workspace", "pause", &id, "--json"]);
    let (code, out, payload) = exec(&home, &id, "echo resumed-ok");
    assert_eq!((code, out.as_str()), (0, "resumed-ok\n"));
    assert_eq!(payload["resumed_from_pause"], true, "{payload}");
    let (_, _, payload) = exec(&home, &id, "true");
    assert!(payload.get("resumed_from_pause").is_none(), "{payload}");
    let o = home.run(&["workspace", "pause", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = home.run(&["workspace", "exec", &id, "--", "true"]);
    assert!(stderr(&o).contains("resumed_from_pause=yes"), "{}", stderr(&o));

    // Concurrent pause + exec: the exec holds the lifecycle lock, the pause waits for it;
    // both succeed and the command's output is not lost.
    let slow = home
        .cmd()
        .args(["workspace", "exec", &id, "--json", "--", "sh", "-c", "sleep 2; echo slow-done"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let mut slow = slow.unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let p = ok(&home, &["workspace", "pause", &id, "--json"]);
    assert_eq!(p["state"], "paused");
    assert!(slow.wait().unwrap().success());
    let logs = ok(&home, &["workspace", "logs", &id, "--json"]);
    let last = logs["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["stdout"], "slow-done\n", "{last}");

    // kill -9 of pyro mid-resume (the guest runs, its state not yet discarded) and right
    // after a pause saved its state (record not yet updated): never broken.
    let o = home.cmd().args(["workspace", "resume", &id]).env("PYRO_TEST_KILL_AT", "resume:restored").output().unwrap();
    assert!(!o.status.success());
    assert_eq!(state(&home, &id), "started", "an interrupted resume whose guest runs is started");
    assert!(!runtime(&home, &id).join("memory.state").exists(), "the spent state was kept");
    let (_, out, _) = exec(&home, &id, "echo after-kill");
    assert_eq!(out, "after-kill\n");
    let o = home.cmd().args(["workspace", "pause", &id]).env("PYRO_TEST_KILL_AT", "pause:saved").output().unwrap();
    assert!(!o.status.success());
    assert_eq!(state(&home, &id), "paused", "a pause killed after saving is paused");
    // Shell (and service) calls resume a paused workspace too, and say so.
    let w = ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "echo after-$((40+2))", "--json"]);
    assert_eq!(w["resumed_from_pause"], true, "{w}");
    let out = shell_output_until(&home, &id, &shell, "after-42");
    assert!(out.contains("after-42"), "{out}");
    let s = ok(&home, &["workspace", "service", "status", &id, "web", "--json"]);
    assert!(s.get("resumed_from_pause").is_none() && s["pid"].as_i64() == Some(pid), "{s}");

    // (c) Fork into 3 from the running workspace.
    let f = ok(&home, &["workspace", "fork", &id, "--count", "3", "--name", "first", "--json"]);
    assert_eq!((f["count"].as_u64(), f["memory_restored"].as_bool()), (Some(3), Some(true)), "{f}");
    eprintln!("fork of 3: fork_ms={}", f["fork_ms"]);
    let children: Vec<String> =
        f["workspaces"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(f["workspaces"][0]["name"], "first");
    assert_eq!(state(&home, &id), "started", "the parent is resumed after the fork");
    let mut randoms = Vec::new();
    for (i, c) in children.iter().enumerate() {
        let w = &f["workspaces"][i];
        assert_eq!((w["state"].as_str(), w["disk_format"].as_str()), (Some("started"), Some("qcow2")), "{w}");
        // The parent's files, and its shell with its state (processes live in memory).
        let (_, page, _) = exec(&home, c, "cat /workspace/site/index.html");
        assert_eq!(page, "page from before the pause");
        ok(&home, &["workspace", "shell", "write", c, &shell, "--input", "echo \"child at=$(pwd) x=$X\"", "--json"]);
        let out = shell_output_until(&home, c, &shell, "child at=/tmp x=1");
        assert!(out.contains("child at=/tmp x=1"), "child {c} shell state: {out}");
        let (_, host, _) = exec(&home, c, "hostname");
        assert_eq!(host.trim(), format!("pyro-{c}"));
        // The parent's service runs on in the child (same pid in its own guest), but the
        // host port stays the parent's: the child's record claims none.
        let s = ok(&home, &["workspace", "service", "status", c, "web", "--json"]);
        assert_eq!((s["state"].as_str(), s["pid"].as_i64()), (Some("running"), Some(pid)), "{s}");
        assert_eq!(s["published_ports"], serde_json::json!([]), "a child claims the parent's host port: {s}");
        let (_, r, _) = exec(&home, c, "head -c 16 /dev/urandom | od -An -tx1");
        randoms.push(r);
    }
    let (_, r, _) = exec(&home, &id, "head -c 16 /dev/urandom | od -An -tx1");
    randoms.push(r);
    let page = http_get(port, "/index.html").unwrap();
    assert!(page.contains("page from before the pause"), "the parent's published port after the fork: {page}");
    let distinct: std::collections::BTreeSet<&String> = randoms.iter().collect();
    assert_eq!(distinct.len(), randoms.len(), "random bytes repeat across forks: {randoms:?}");
    // A write in one child is invisible in the others and in the parent.
    let (_, seen, _) =
        exec(&home, &children[0], "echo mine > /workspace/only-in-first; sync; cat /workspace/only-in-first");
    assert_eq!(seen, "mine\n");
    for w in children[1..].iter().chain([&id]) {
        let (_, seen, _) = exec(&home, w, "test -e /workspace/only-in-first && echo seen || echo unseen");
        assert_eq!(seen, "unseen\n", "{w} sees the first child's write");
    }
    // A paused child forks too (its state is re-paired with its new overlay, a base over a
    // base) and stays paused; it resumes afterwards with its processes.
    let first = &children[0];
    ok(&home, &["workspace", "pause", first, "--json"]);
    let g = ok(&home, &["workspace", "fork", first, "--json"]);
    assert_eq!((g["source_state"].as_str(), g["memory_restored"].as_bool()), (Some("paused"), Some(true)), "{g}");
    let grandchild = g["workspaces"][0]["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(state(&home, first), "paused");
    let (_, seen, _) = exec(&home, &grandchild, "cat /workspace/only-in-first");
    assert_eq!(seen, "mine\n");
    let r = ok(&home, &["workspace", "resume", first, "--json"]);
    assert_eq!(r["state"], "started", "{r}");
    let (_, seen, _) = exec(&home, first, "cat /workspace/only-in-first; echo $((1+1))");
    assert_eq!(seen, "mine\n2\n");
    ok(&home, &["workspace", "delete", &grandchild, "--json"]);

    // The children outlive their parent; their shared base goes with the last of them.
    ok(&home, &["workspace", "delete", &id, "--json"]);
    for c in &children {
        let (code, out, _) = exec(&home, c, "cat /workspace/site/index.html");
        assert_eq!((code, out.as_str()), (0, "page from before the pause"));
    }
    let bases = home.path().join("bases");
    let base_files = |dir: &PathBuf| {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
            .unwrap_or(0)
    };
    assert!(base_files(&bases) > 0);
    // Delete works on a paused workspace too.
    ok(&home, &["workspace", "pause", &children[1], "--json"]);
    for c in &children {
        ok(&home, &["workspace", "delete", c, "--json"]);
    }
    assert_eq!(base_files(&bases), 0, "bases left after every workspace was deleted");
}

/// (e) bad input and the cold paths: pause/resume of a stopped workspace, fork of a
/// stopped one (stopped children from its disk), fork counts 0 and 9, a truncated memory
/// state; (f) the idle pause and the call that resumes it.
#[test]
fn bad_input_cold_fork_truncated_state_and_idle_pause() {
    let home = TestHome::new();
    let id = create(&home, &["debian:12"]);
    exec(&home, &id, "echo kept > /workspace/note");
    ok(&home, &["workspace", "stop", &id, "--json"]);

    assert_eq!(fail_json(&home, &["workspace", "pause", &id]).0, "invalid_state");
    let e = fail(&home, &["workspace", "pause", &id]);
    assert!(e.contains("is stopped") && e.contains("workspace start"), "{e}");
    let e = fail(&home, &["workspace", "resume", &id]);
    assert!(e.contains("stopped, not paused") && e.contains("workspace start"), "{e}");
    for bad in ["0", "9"] {
        let e = fail(&home, &["workspace", "fork", &id, "--count", bad]);
        assert!(e.contains("count must be between 1 and 8"), "{e}");
    }
    let e = fail(&home, &["workspace", "fork", &id, "--count", "1", "--name", "a", "--name", "b"]);
    assert!(e.contains("at most count names"), "{e}");
    assert_eq!(ok(&home, &["workspace", "list", "--json"])["count"], 1, "a refused fork created something");
    assert!(!home.path().join("bases").exists(), "a refused fork froze the disk");

    // A fork killed right after the parent moved onto its overlay leaves no child and a
    // parent that still works (checked below: it starts, pauses and boots cold).
    let o =
        home.cmd().args(["workspace", "fork", &id, "--count", "2"]).env("PYRO_TEST_KILL_AT", "fork:record").output();
    assert!(!o.unwrap().status.success());
    assert_eq!(ok(&home, &["workspace", "list", "--json"])["count"], 1, "a killed fork left a child");
    let st = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!((st["state"].as_str(), st["disk_format"].as_str()), (Some("stopped"), Some("qcow2")), "{st}");

    // A stopped parent forks from its disk alone: stopped children that boot.
    let f = ok(&home, &["workspace", "fork", &id, "--count", "2", "--json"]);
    assert_eq!((f["source_state"].as_str(), f["memory_restored"].as_bool()), (Some("stopped"), Some(false)), "{f}");
    let child = f["workspaces"][0]["workspace_id"].as_str().unwrap().to_string();
    for w in f["workspaces"].as_array().unwrap() {
        assert_eq!((w["state"].as_str(), w["disk_format"].as_str()), (Some("stopped"), Some("qcow2")), "{w}");
    }
    ok(&home, &["workspace", "start", &child, "--json"]);
    let (_, out, _) = exec(&home, &child, "cat /workspace/note; hostname");
    assert_eq!(out, format!("kept\npyro-{child}\n"));
    ok(&home, &["workspace", "delete", &child, "--json"]);
    ok(&home, &["workspace", "delete", f["workspaces"][1]["workspace_id"].as_str().unwrap(), "--json"]);

    // Every fork puts the parent one frozen base deeper; 17 more (past the 16 backing files
    // the offline disk tools read) and the chain is flattened on the way instead, so the
    // parent's and the last child's disks stay readable and bootable.
    let mut last = String::new();
    for _ in 0..17 {
        let f = ok(&home, &["workspace", "fork", &id, "--json"]);
        let c = f["workspaces"][0]["workspace_id"].as_str().unwrap().to_string();
        if !last.is_empty() {
            ok(&home, &["workspace", "delete", &last, "--json"]);
        }
        last = c;
    }
    for w in [&id, &last] {
        let l = ok(&home, &["workspace", "disk", "list", w, "--json"]);
        let names: Vec<&str> = l["entries"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with("/note")), "{w}: /workspace/note missing from {names:?}");
    }
    let r = ok(&home, &["workspace", "disk", "read", &last, "note", "--json"]);
    assert_eq!(r["content"], "kept\n");
    ok(&home, &["workspace", "delete", &last, "--json"]);

    // A truncated state: a clear error, the workspace stopped with its disk, `start` boots cold.
    ok(&home, &["workspace", "start", &id, "--json"]);
    ok(&home, &["workspace", "pause", &id, "--json"]);
    // Disk tools need a stopped workspace: a paused one is refused, saying what to do.
    let e = fail(&home, &["workspace", "disk", "list", &id]);
    assert!(e.contains("is paused") && e.contains("workspace stop"), "{e}");
    let state_file = runtime(&home, &id).join("memory.state");
    let len = std::fs::metadata(&state_file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&state_file).unwrap().set_len(len / 2).unwrap();
    let (code, e) = fail_json(&home, &["workspace", "resume", &id]);
    assert_eq!(code, "invalid_state");
    assert!(e.contains("cannot be used") && e.contains("workspace start"), "{e}");
    let st = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("cannot be used"), "{st}");
    assert!(!state_file.exists(), "the unusable state was kept");

    // (f) Idle pause: set it, boot cold, wait; the next call resumes and says so.
    ok(&home, &["workspace", "update", &id, "--idle-pause-seconds", "3", "--json"]);
    let w = ok(&home, &["workspace", "start", &id, "--json"]);
    assert_eq!((w["state"].as_str(), w["idle_pause_seconds"].as_u64()), (Some("started"), Some(3)), "{w}");
    let (_, out, _) = exec(&home, &id, "cat /workspace/note");
    assert_eq!(out, "kept\n");
    let deadline = Instant::now() + Duration::from_secs(90);
    while state(&home, &id) != "paused" {
        assert!(Instant::now() < deadline, "not paused 90 s after its last call");
        std::thread::sleep(Duration::from_millis(500));
    }
    let vm_dir = runtime(&home, &id).display().to_string();
    assert_eq!(processes_mentioning(&vm_dir), Vec::<String>::new(), "VM processes left after the idle pause");
    let (code, out, payload) = exec(&home, &id, "cat /workspace/note");
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    assert_eq!(payload["resumed_from_pause"], true, "{payload}");
    // A running workspace takes an update of its idle pause at once: turned off, it stays
    // up well past the old 3 s; turned on again, it pauses (the wait below).
    ok(&home, &["workspace", "update", &id, "--idle-pause-seconds", "0", "--json"]);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(state(&home, &id), "started", "paused although its idle pause was turned off");
    ok(&home, &["workspace", "update", &id, "--idle-pause-seconds", "2", "--json"]);
    // Stop of a paused workspace resumes it and shuts it down cleanly.
    let deadline = Instant::now() + Duration::from_secs(90);
    while state(&home, &id) != "paused" {
        assert!(Instant::now() < deadline, "not paused again 90 s after its last call");
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = ok(&home, &["workspace", "stop", &id, "--json"]);
    assert_eq!((s["state"].as_str(), s["last_error"].as_str()), (Some("stopped"), None), "{s}");
    assert!(s["workspace_resume"]["resume_ms"].as_u64().is_some(), "{s}");
    // TTL expiry of a paused workspace stops it as today (resumed, shut down cleanly, disk
    // kept). Time passing is simulated by moving `expires_at` back, as in workspace.rs.
    ok(&home, &["workspace", "update", &id, "--idle-pause-seconds", "0", "--json"]);
    ok(&home, &["workspace", "start", &id, "--json"]);
    ok(&home, &["workspace", "pause", &id, "--json"]);
    let record_path = home.path().join("workspaces").join(&id).join("workspace.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    r["expires_at"] = serde_json::json!(r["created_at"].as_f64().unwrap() - 1.0);
    std::fs::write(&record_path, serde_json::to_vec(&r).unwrap()).unwrap();
    let e = fail(&home, &["workspace", "exec", &id, "--", "true"]);
    assert!(e.contains("expired"), "{e}");
    let st = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(st["last_error"].as_str().unwrap().contains("expired"), "{st}");
    assert!(!runtime(&home, &id).join("memory.state").exists(), "an expired paused workspace kept its memory state");
    assert_eq!(processes_mentioning(&vm_dir), Vec::<String>::new(), "an expired paused workspace still runs");
    ok(&home, &["workspace", "update", &id, "--ttl-seconds", "600", "--json"]);
    ok(&home, &["workspace", "start", &id, "--json"]);
    let (_, out, _) = exec(&home, &id, "cat /workspace/note");
    assert_eq!(out, "kept\n", "the disk of an expired paused workspace lost its files");
    let o = home.run(&["workspace", "delete", &id]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
