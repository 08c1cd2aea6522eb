//! `pyro run` acceptance tests: real QEMU guests (TCG here), real agent, real environments.

mod common;

use common::{json, stderr, stdout, TestHome};
use std::time::{Duration, Instant};

/// Keys of the `pyro run --json` payload (the SDK's run payload, pinned in
/// crates/pyro/tests/contract.rs).
const RUN_KEYS: &[&str] = &[
    "vm_id",
    "environment",
    "environment_version",
    "command",
    "stdout",
    "stderr",
    "exit_code",
    "duration_ms",
    "execution_mode",
    "cleanup",
    "backend",
];

#[test]
fn run_separates_streams_and_propagates_exit_code() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(stdout(&o), "out\n", "stderr: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.lines().any(|l| l == "err"), "guest stderr missing: {err}");
    assert!(err.contains("[run] phase=create environment=debian:12"), "{err}");
    assert!(err.contains("[run] phase=start vm_id="), "{err}");
    assert!(err.contains("[run] phase=execute vm_id="), "{err}");
    assert!(err.contains("exit_code=7"), "{err}");
    assert_eq!(o.status.code(), Some(7));
}

#[test]
fn run_json_payload_has_every_reference_key_and_backend() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12", "--json", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
    let v = json(&o);
    for k in RUN_KEYS {
        assert!(v.get(k).is_some(), "missing key {k} in {v}");
    }
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["backend"], "qemu");
    assert_eq!(v["execution_mode"], "guest_vsock");
    assert_eq!(v["truncated"], false);
    assert_eq!(v["cleanup"]["deleted"], true);
    assert_eq!(v["cleanup"]["reason"], "post_exec_cleanup");
    assert_eq!(v["command"], "sh -c 'echo out; echo err >&2; exit 7'");
}

#[test]
fn git_runs_in_debian_12() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12", "--", "git", "--version"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("git version 2."), "{}", stdout(&o));
}

#[test]
fn gcc_runs_in_debian_12_build() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12-build", "--", "gcc", "--version"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("gcc (Debian 12"), "{}", stdout(&o));
}

#[test]
fn timeout_returns_124_quickly() {
    let home = TestHome::new();
    let started = Instant::now();
    let o =
        home.run(&["run", "debian:12", "--timeout-seconds", "2", "--json", "--", "sh", "-c", "sleep 100 & sleep 100"]);
    let v = json(&o);
    assert_eq!(v["exit_code"], 124, "{v}");
    assert!(v["stderr"].as_str().unwrap().contains("command timed out after 2s"), "{v}");
    // The whole run (boot included) is bounded; the exec itself must end within 4 s.
    assert!(v["duration_ms"].as_u64().unwrap() < 4000, "{v}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(124));
}

#[test]
fn output_is_capped_at_16_mib_with_truncated_flag() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12", "--json", "--", "sh", "-c", "head -c 20971520 /dev/zero | tr '\\0' a"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 16 * 1024 * 1024);
    assert!(v["stdout"].as_str().unwrap().bytes().all(|b| b == b'a'));
}

#[test]
fn binary_output_does_not_break_the_call() {
    let home = TestHome::new();
    let o = home.run(&["run", "debian:12", "--json", "--", "sh", "-c", "head -c 1000 /dev/urandom; echo done >&2"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stderr"], "done\n");
    assert!(!v["stdout"].as_str().unwrap().is_empty());
}

#[test]
fn bad_input_is_rejected_before_anything_starts() {
    let home = TestHome::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "debian:99", "--", "true"],
            "unknown environment 'debian:99'; expected one of: debian:12, debian:12-base, debian:12-build",
        ),
        (&["run", "debian:12", "--vcpu-count", "9", "--", "true"], "vcpu_count must be between 1 and 8"),
        (&["run", "debian:12", "--mem-mib", "64", "--", "true"], "mem_mib must be between 256 and 32768"),
        (&["run", "debian:12", "--ttl-seconds", "5", "--", "true"], "ttl_seconds must be between 60 and 3600"),
        (&["run", "debian:12", "--timeout-seconds", "0", "--", "true"], "timeout_seconds must be positive"),
        (&["run", "debian:12", "--"], "command is required after `--`"),
    ];
    for (args, want) in cases {
        let o = home.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        let line = err.lines().find(|l| l.starts_with("[error] ")).unwrap_or_else(|| panic!("{args:?}: {err}"));
        assert!(line.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // JSON mode: structured error on stdout.
        let mut jargs = args.to_vec();
        jargs.insert(2, "--json");
        let o = home.run(&jargs);
        assert_eq!(o.status.code(), Some(1));
        let v = json(&o);
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
        assert!(v["code"].is_string());
    }
    // Usage errors exit 2.
    let o = home.run(&["run"]);
    assert_eq!(o.status.code(), Some(2));
    let o = home.run(&["run", "debian:12", "--vcpu-count", "many", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn interrupted_run_leaves_nothing_behind() {
    let home = TestHome::new();
    let mut child = home
        .cmd()
        .args(["run", "debian:12", "--", "sleep", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the guest is executing, then interrupt like a terminal's Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let procs = home.leftover_processes();
        if procs.iter().any(|p| p.contains("qemu-system")) {
            break;
        }
        assert!(Instant::now() < deadline, "the VM never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the pid is our
    // own child, not yet waited for, so it cannot have been reused.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    // TestHome's drop asserts no process, socket or VM dir remains.
}

#[test]
fn killed_cli_does_not_leak_its_vm() {
    let home = TestHome::new();
    let mut child = home
        .cmd()
        .args(["run", "debian:12", "--", "sleep", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !home.leftover_processes().iter().any(|p| p.contains("qemu-system")) {
        assert!(Instant::now() < deadline, "the VM never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The supervisor notices its owner is gone and removes the VM (TestHome's drop checks).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !home.leftover_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn missing_host_tools_are_named_with_their_package() {
    let home = TestHome::new();
    let empty = home.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    // No QEMU on PATH (pyro also looks in the sbin dirs, where QEMU never is).
    let o = home.cmd().env("PATH", &empty).args(["run", "debian:12", "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("qemu-system-x86_64 is not installed"), "{err}");
    assert!(err.contains("apt-get install"), "{err}");
    assert!(err.contains("--allow-host-compat"), "{err}");
}

#[test]
fn a_state_dir_too_deep_for_sockets_is_a_clear_error() {
    let home = TestHome::new();
    let deep = home.path().join("d".repeat(100));
    let o = home.cmd().env("PYRO_HOME", &deep).args(["run", "debian:12", "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("too deep for Unix sockets"), "{}", stderr(&o));
    assert!(std::fs::read_dir(deep.join("vms")).map(|d| d.count()).unwrap_or(0) == 0, "VM dir left behind");
}
