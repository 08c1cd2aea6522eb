//! PTY shells and background services in real guests (issue 5 acceptance), through the CLI.

mod common;

use common::{fail, file_contains, free_port, http_get, ok, start_site_service, stderr, stdout, TestHome};
use std::time::{Duration, Instant};

fn create(home: &TestHome, args: &[&str]) -> String {
    let mut all = vec!["workspace", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    ok(home, &all)["workspace_id"].as_str().unwrap().to_string()
}

fn shell_read(home: &TestHome, id: &str, shell: &str, cursor: u64, plain: bool) -> serde_json::Value {
    let cursor = cursor.to_string();
    let mut args = vec!["workspace", "shell", "read", id, shell, "--cursor", &cursor, "--wait-for-idle-ms", "300"];
    if plain {
        args.push("--plain");
    }
    args.push("--json");
    ok(home, &args)
}

/// Read until `needle` shows up (a slow TCG guest may take more than one idle window).
fn read_until(home: &TestHome, id: &str, shell: &str, cursor: u64, plain: bool, needle: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = shell_read(home, id, shell, cursor, plain);
        if r["output"].as_str().unwrap().contains(needle) || Instant::now() > deadline {
            return r;
        }
    }
}

/// Guest processes whose command line starts with `prefix`. The listing must work and show
/// the agent, so a missing or broken `ps` can never read as "no such process".
fn guest_procs(home: &TestHome, id: &str, prefix: &str) -> usize {
    let ps = ok(home, &["workspace", "exec", id, "--json", "--", "ps", "-eo", "args"]);
    assert_eq!(ps["exit_code"], 0, "{ps}");
    let listing = ps["stdout"].as_str().unwrap();
    assert!(listing.contains("pyro-agent"), "ps shows no agent: {listing}");
    listing.lines().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn shell_keeps_state_renders_plain_text_and_takes_signals() {
    let home = TestHome::new();
    let id = create(&home, &["debian:12"]);
    let o = home.run(&["workspace", "shell", "open", &id, "--id-only"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shell = stdout(&o).trim().to_string();
    assert_eq!(shell.len(), 12);

    // State survives across separate calls (separate CLI processes).
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "cd /tmp", "--json"]);
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "export X=1", "--json"]);
    let w = ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "pwd; echo \"x=$X\"", "--json"]);
    assert_eq!(w["input_length"], 16);
    assert_eq!(w["append_newline"], true);
    let r = read_until(&home, &id, &shell, 0, false, "x=1");
    let raw = r["output"].as_str().unwrap();
    assert!(raw.contains("/tmp\r\nx=1"), "{raw:?}");
    let cursor = r["next_cursor"].as_u64().unwrap();
    assert!(cursor > 0);

    // `ls --color=always` rendered plain: the names are there, no escape sequence is.
    ok(
        &home,
        &["workspace", "shell", "write", &id, &shell, "--input", "mkdir -p d1 && ls --color=always /tmp", "--json"],
    );
    let raw_read = read_until(&home, &id, &shell, cursor, false, "d1");
    assert!(raw_read["output"].as_str().unwrap().contains('\x1b'), "ls did not colour: {raw_read}");
    let plain = shell_read(&home, &id, &shell, cursor, true);
    let text = plain["output"].as_str().unwrap();
    assert!(text.contains("d1"), "{text:?}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "escape sequences left: {text:?}");
    assert_eq!(plain["plain"], true);
    assert_eq!(plain["wait_for_idle_ms"], 300);
    let cursor = plain["next_cursor"].as_u64().unwrap();

    // INT interrupts a foreground `sleep 100` promptly.
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "sleep 100; echo slept", "--json"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(guest_procs(&home, &id, "sleep 100"), 1, "the foreground sleep is not running");
    let began = Instant::now();
    ok(&home, &["workspace", "shell", "signal", &id, &shell, "--signal", "INT", "--json"]);
    ok(&home, &["workspace", "shell", "write", &id, &shell, "--input", "echo after-int", "--json"]);
    let r = read_until(&home, &id, &shell, cursor, true, "after-int");
    assert!(r["output"].as_str().unwrap().contains("after-int"), "{r}");
    assert!(began.elapsed() < Duration::from_secs(20));
    assert_eq!(guest_procs(&home, &id, "sleep 100"), 0, "sleep survived INT");

    // Close ends it: the bash process is gone and the id is unknown afterwards.
    assert_eq!(guest_procs(&home, &id, "/bin/bash --noprofile"), 1);
    let c = ok(&home, &["workspace", "shell", "close", &id, &shell, "--json"]);
    assert_eq!(c["closed"], true);
    assert_eq!(guest_procs(&home, &id, "/bin/bash --noprofile"), 0, "shell process survived close");
    let e = fail(&home, &["workspace", "shell", "read", &id, &shell]);
    assert!(e.contains(&format!("unknown shell '{shell}'")), "{e}");

    // Bad input: specific errors, nothing changes.
    let e = fail(&home, &["workspace", "shell", "write", &id, "0123456789ab", "--input", "x"]);
    assert!(e.contains("unknown shell"), "{e}");
    let o = home.run(&["workspace", "shell", "signal", &id, &shell, "--signal", "USR1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = fail(&home, &["workspace", "shell", "open", &id, "--cwd", "/etc"]);
    assert!(e.contains("/workspace"), "{e}");
    let e = fail(&home, &["workspace", "shell", "open", &id, "--cwd", "missing-dir"]);
    assert!(e.contains("does not exist"), "{e}");
    let e = fail(&home, &["workspace", "shell", "open", &id, "--secret-env", "NOPE"]);
    assert!(e.contains("unknown workspace secret 'NOPE'"), "{e}");
    let e = fail(&home, &["workspace", "shell", "open", &id, "--secret-env", "NOPE=1BAD"]);
    assert!(e.contains("1BAD"), "{e}");
    let e = fail(&home, &["workspace", "service", "start", &id, "s", "--secret-env", "bad-name", "--", "true"]);
    assert!(e.contains("bad-name"), "{e}");
    let s2 = ok(&home, &["workspace", "shell", "open", &id, "--json"]);
    let s2 = s2["shell_id"].as_str().unwrap();
    let e = fail(&home, &["workspace", "shell", "read", &id, s2, "--wait-for-idle-ms", "20000"]);
    assert!(e.contains("wait_for_idle_ms must be between 1 and 10000"), "{e}");
    // Published ports need the egress+published-ports policy.
    let e = fail(&home, &["workspace", "service", "start", &id, "web", "--publish", "8000", "--", "sleep", "5"]);
    assert!(e.contains("egress+published-ports"), "{e}");
    assert_eq!(ok(&home, &["workspace", "service", "list", &id, "--json"])["count"], 0);

    // Stop ends the open shell; after start it is unknown.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    ok(&home, &["workspace", "start", &id, "--json"]);
    let e = fail(&home, &["workspace", "shell", "read", &id, s2]);
    assert!(e.contains("unknown shell"), "{e}");
    ok(&home, &["workspace", "delete", &id, "--json"]);
    home.assert_clean();
}

#[test]
fn service_becomes_ready_is_published_on_loopback_and_never_blocks_other_calls() {
    let home = TestHome::new();
    let id = create(&home, &["debian:12-build", "--network-policy", "egress+published-ports"]);
    ok(&home, &["workspace", "file", "write", &id, "site/index.html", "--text", "hello from the guest", "--json"]);
    let port = free_port();
    let s = start_site_service(&home, &id, port);
    assert_eq!(s["state"], "running", "{s}");
    assert!(s["ready_at"].as_f64().is_some());
    assert_eq!(s["readiness"], serde_json::json!({"type": "http", "url": "http://127.0.0.1:8000/"}));
    assert_eq!(
        s["published_ports"],
        serde_json::json!([{"host": "127.0.0.1", "host_port": port, "guest_port": 8000, "protocol": "tcp"}])
    );
    // The host fetches the page through the published port.
    let page = http_get(port, "/index.html").unwrap();
    assert!(page.starts_with("HTTP/1.0 200") && page.contains("hello from the guest"), "{page}");
    // Loopback only: the forward is not bound on any other host address.
    let ss = std::process::Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]).output().unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout).to_string();
    assert!(listening.contains(&format!("127.0.0.1:{port}")), "{listening}");
    assert!(
        !listening.contains(&format!("0.0.0.0:{port}")) && !listening.contains(&format!("*:{port}")),
        "{listening}"
    );

    let st = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!((st["service_count"].as_u64(), st["running_service_count"].as_u64()), (Some(1), Some(1)));

    // Bad input while it runs: duplicate name, two readiness flags, a taken port, a low port.
    let e = fail(&home, &["workspace", "service", "start", &id, "web", "--", "sleep", "1"]);
    assert!(e.contains("service 'web' is already running"), "{e}");
    let o =
        home.run(&["workspace", "service", "start", &id, "x", "--ready-file", "a", "--ready-tcp", "h:1", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let e = fail(
        &home,
        &["workspace", "service", "start", &id, "dup", "--publish", &format!("{port}:9000"), "--", "sleep", "30"],
    );
    assert!(e.contains(&format!("host port {port}")) && e.contains("not available"), "{e}");
    let e = fail(&home, &["workspace", "service", "start", &id, "low", "--publish", "80:9000", "--", "sleep", "30"]);
    assert!(e.contains("1025..65535"), "{e}");
    let e = fail(&home, &["workspace", "service", "start", &id, "bad/name", "--", "true"]);
    assert!(e.contains("service name"), "{e}");
    let e = fail(&home, &["workspace", "service", "status", &id, "ghost"]);
    assert!(e.contains("unknown service 'ghost'"), "{e}");
    // None of the refused starts left a service behind.
    let names: Vec<String> = ok(&home, &["workspace", "service", "list", &id, "--json"])["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web"]);

    // A 10 s readiness wait runs while an exec on the same workspace completes.
    let slow = {
        let mut c = home.cmd();
        c.args([
            "workspace",
            "service",
            "start",
            &id,
            "slow",
            "--ready-file",
            "never-there",
            "--ready-timeout-seconds",
            "10",
            "--json",
            "--",
            "sh",
            "-c",
            "echo slow-started; exec sleep 300",
        ]);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(1500));
    let began = Instant::now();
    let ex = ok(&home, &["workspace", "exec", &id, "--json", "--", "echo", "concurrent"]);
    let exec_time = began.elapsed();
    assert_eq!(ex["stdout"], "concurrent\n");
    assert!(exec_time < Duration::from_secs(5), "exec waited {exec_time:?} behind a readiness wait");
    let out = slow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains("did not become ready within 10 s") && msg.contains("never-there"), "{msg}");
    // ...the service was stopped and its logs kept.
    let st = ok(&home, &["workspace", "service", "status", &id, "slow", "--json"]);
    assert_eq!((st["state"].as_str(), st["stop_reason"].as_str()), (Some("failed"), Some("readiness_timeout")));
    let logs = ok(&home, &["workspace", "service", "logs", &id, "slow", "--json"]);
    assert_eq!(logs["stdout"], "slow-started\n");
    assert_eq!(guest_procs(&home, &id, "sleep 300"), 0, "the timed-out service still runs");

    // Stop: TERM ends python; the host port is free again.
    let stopped = ok(&home, &["workspace", "service", "stop", &id, "web", "--json"]);
    assert_eq!((stopped["state"].as_str(), stopped["stop_reason"].as_str()), (Some("stopped"), Some("sigterm")));
    assert_eq!(stopped["published_ports"], serde_json::json!([]));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} still taken after stop");
    let logs = ok(&home, &["workspace", "service", "logs", &id, "web", "--tail-lines", "1", "--json"]);
    assert!(logs["stderr"].as_str().unwrap().contains("GET /index.html"), "{logs}");
    assert_eq!(logs["truncated"], true);
    assert_eq!(logs["stderr"].as_str().unwrap().lines().count(), 1);

    // Restarting a stopped name works; workspace stop ends it and its forward.
    let port2 = free_port();
    let publish2 = format!("{port2}:8000");
    ok(
        &home,
        &[
            "workspace",
            "service",
            "start",
            &id,
            "web",
            "--cwd",
            "site",
            "--ready-tcp",
            "127.0.0.1:8000",
            "--publish",
            &publish2,
            "--json",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
    assert!(http_get(port2, "/").unwrap().contains("200"));
    // A service that ends on its own takes its published port with it, with no pyro call
    // in between (the VM's supervisor watches).
    ok(&home, &["workspace", "exec", &id, "--json", "--", "sh", "-c", "pkill -f 'http[.]server 8000'; true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(("127.0.0.1", port2)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(std::net::TcpListener::bind(("127.0.0.1", port2)).is_ok(), "forward outlived its service");
    let web = ok(&home, &["workspace", "service", "status", &id, "web", "--json"]);
    assert_eq!((web["state"].as_str(), web["published_ports"].as_array().map(Vec::len)), (Some("exited"), Some(0)));
    // And workspace stop ends services and their forwards.
    let port3 = free_port();
    let publish3 = format!("{port3}:8000");
    ok(
        &home,
        &[
            "workspace",
            "service",
            "start",
            &id,
            "web2",
            "--cwd",
            "site",
            "--ready-tcp",
            "127.0.0.1:8000",
            "--publish",
            &publish3,
            "--json",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
    ok(&home, &["workspace", "stop", &id, "--json"]);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port3)).is_ok());
    let st = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!((st["service_count"].as_u64(), st["running_service_count"].as_u64()), (Some(0), Some(0)));
    ok(&home, &["workspace", "delete", &id, "--json"]);
    home.assert_clean();
}

#[test]
fn secrets_are_redacted_from_shells_services_and_every_payload() {
    let home = TestHome::new();
    let value = "Zq7-s3cr3t-4f1d0";
    let id = create(&home, &["debian:12", "--secret", &format!("API_TOKEN={value}")]);
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keep = |what: &str, o: &std::process::Output| {
        let mut bytes = o.stdout.clone();
        bytes.extend_from_slice(&o.stderr);
        seen.push((what.to_string(), bytes));
    };

    // exec sees it; the payload does not.
    let check = format!("[ \"$TOK\" = '{value}' ] && echo visible; echo \"$TOK\"");
    let o = home.run(&["workspace", "exec", &id, "--secret-env", "API_TOKEN=TOK", "--json", "--", "sh", "-c", &check]);
    assert!(stdout(&o).contains("visible"), "{}", stdout(&o));
    keep("exec", &o);

    // A shell with the secret in its env prints it, split into two writes of output.
    let s = ok(&home, &["workspace", "shell", "open", &id, "--secret-env", "API_TOKEN=TOK", "--json"]);
    let shell = s["shell_id"].as_str().unwrap().to_string();
    ok(
        &home,
        &[
            "workspace",
            "shell",
            "write",
            &id,
            &shell,
            "--input",
            "printf '%s' \"${TOK%%-*}\"; sleep 0.1; printf '%s\\n' \"-${TOK#*-}\"; echo shell-marker-$((6*7))",
            "--json",
        ],
    );
    let o = home.run(&["workspace", "shell", "read", &id, &shell, "--wait-for-idle-ms", "500", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut r = r;
    while !r["output"].as_str().unwrap().contains("shell-marker-42") && Instant::now() < deadline {
        r = shell_read(&home, &id, &shell, 0, false);
    }
    assert!(r["output"].as_str().unwrap().contains("[REDACTED]"), "{r}");
    keep("shell read", &o);
    keep("shell read plain", &home.run(&["workspace", "shell", "read", &id, &shell, "--plain", "--json"]));

    // A service that logs it.
    let o = home.run(&[
        "workspace",
        "service",
        "start",
        &id,
        "leaky",
        "--secret-env",
        "API_TOKEN",
        "--json",
        "--",
        "sh",
        "-c",
        "echo \"out $API_TOKEN\"; echo \"err $API_TOKEN\" >&2; echo service-marker-77; exec sleep 300",
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
    keep("service start", &o);
    std::thread::sleep(Duration::from_millis(500));
    let o = home.run(&["workspace", "service", "logs", &id, "leaky", "--all", "--json"]);
    let logs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(logs["stdout"], "out [REDACTED]\nservice-marker-77\n", "{logs}");
    assert_eq!(logs["stderr"], "err [REDACTED]\n");
    keep("service logs", &o);
    keep("service logs human", &home.run(&["workspace", "service", "logs", &id, "leaky"]));
    keep("service status", &home.run(&["workspace", "service", "status", &id, "leaky", "--json"]));
    // An error message that would quote it.
    let o = home.run(&[
        "workspace",
        "exec",
        &id,
        "--secret-env",
        "API_TOKEN=TOK",
        "--",
        "sh",
        "-c",
        "echo \"$TOK\" >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    keep("failing exec", &o);
    for args in [
        vec!["workspace", "logs", &id, "--json"],
        vec!["workspace", "status", &id, "--json"],
        vec!["workspace", "diff", &id, "--json"],
        vec!["workspace", "list", "--json"],
    ] {
        keep(&args.join(" "), &home.run(&args));
    }
    let export = home.path().join("exported");
    keep("export", &home.run(&["workspace", "export", &id, ".", "--output", &export.display().to_string(), "--json"]));

    // Stop ends the service and the shell: no secret, shell or service byte on the disk.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let img = home.path().join("workspaces").join(&id).join("runtime/rootfs.ext4");
    for needle in [value, "service-marker-77", "shell-marker-42"] {
        assert!(!file_contains(&img, needle.as_bytes()), "{needle} is on the stopped disk");
    }
    let disk_export = home.path().join("disk.ext4");
    keep(
        "disk export",
        &home.run(&["workspace", "disk", "export", &id, "--output", &disk_export.display().to_string(), "--json"]),
    );
    assert!(!file_contains(&disk_export, value.as_bytes()));
    keep("disk list", &home.run(&["workspace", "disk", "list", &id, "/run", "--recursive", "--json"]));

    for (what, bytes) in &seen {
        assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "the secret leaked into {what}");
    }
    for entry in walk(&export) {
        assert!(!file_contains(&entry, value.as_bytes()), "{entry:?}");
    }
    for entry in walk(&home.path().join("workspaces").join(&id)) {
        if entry.ends_with("API_TOKEN.secret") || entry.extension().is_some_and(|e| e == "ext4") {
            continue;
        }
        assert!(!file_contains(&entry, value.as_bytes()), "host state file {entry:?} holds the secret");
    }
    ok(&home, &["workspace", "delete", &id, "--json"]);
    home.assert_clean();
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                for e in std::fs::read_dir(&p).unwrap().flatten() {
                    stack.push(e.path());
                }
            }
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}
