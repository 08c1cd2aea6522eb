//! Host hygiene (issue 10, findings 8, 9, 11, 12, 13), against real QEMU guests:
//! - private state whatever the umask,
//! - a stale pid file never makes pyro signal an unrelated process,
//! - a workspace lock held for long never stalls the MCP server (2 runtime workers),
//! - a `workspace create` interrupted after boot (kill -9, Ctrl-C, MCP cancel) leaves no VM,
//! - disk tools hold the lifecycle lock while they read, so `start` cannot boot under them,
//! - a `start` waits for the previous supervisor to finish its cleanup.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Every file, directory and socket under `root` with a group or other permission bit set.
fn group_or_other_accessible(root: &Path) -> Vec<String> {
    let mut offenders = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            offenders.push(format!("{:o} {}", mode & 0o7777, p.display()));
        }
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    offenders.sort();
    offenders
}

/// `pyro ARGS` run through `sh -c 'umask 000; exec pyro ...'` with `PYRO_HOME=state`.
fn run_with_umask_000(state: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(pyro_bin())
        .args(args)
        .env("PYRO_HOME", state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?} failed: {} {}", stdout(&o), stderr(&o));
    json(&o)
}

/// Processes of this home that are VM supervisors.
fn supervisors(home: &TestHome) -> Vec<String> {
    home.leftover_processes().into_iter().filter(|p| p.contains("pyro-supervisor")).collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own, unreaped child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Is this child still running (not exited)?
fn running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// Start time (field 22 of /proc/<pid>/stat) of a process.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn create_workspace(home: &TestHome) -> String {
    let w = ok(home, &["workspace", "create", "debian:12", "--mem-mib", "512", "--json"]);
    w["workspace_id"].as_str().unwrap().to_string()
}

/// A `pyro mcp serve` child speaking newline-delimited JSON-RPC on stdio.
struct McpServer {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<serde_json::Value>,
    pending: Vec<serde_json::Value>,
}

impl McpServer {
    fn start(home: &TestHome, worker_threads: Option<usize>) -> Self {
        let mut cmd = home.cmd();
        // Outside any Git checkout: the server has no project, workspaces start empty.
        cmd.args(["mcp", "serve", "--profile", "workspace-full"])
            .current_dir(home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = worker_threads {
            cmd.env("TOKIO_WORKER_THREADS", n.to_string());
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut server = McpServer { child, stdin, lines, pending: Vec::new() };
        server.send(serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hygiene", "version": "0"}}}));
        server.response(0, Duration::from_secs(30)).expect("initialize answered");
        server.send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        server
    }

    fn send(&mut self, v: serde_json::Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn call(&mut self, id: u64, tool: &str, args: serde_json::Value) {
        self.send(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}));
    }

    /// The response with this id, or `None` if it did not come within `limit`.
    fn response(&mut self, id: u64, limit: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.pending.iter().position(|v| v["id"] == id) {
                return Some(self.pending.remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    if v.get("id").is_some() && v.get("method").is_none() {
                        self.pending.push(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The structured result of a successful tool call.
    fn result(&mut self, id: u64, limit: Duration) -> serde_json::Value {
        let r = self.response(id, limit).unwrap_or_else(|| panic!("no answer to call {id} within {limit:?}"));
        let result = &r["result"];
        assert_eq!(result["isError"], false, "call {id} failed: {r}");
        result["structuredContent"].clone()
    }

    fn close(mut self) {
        drop(self.stdin);
        let start = Instant::now();
        while running(&mut self.child) {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------
// 8. Private state whatever the umask
// ---------------------------------------------------------------------------------------

#[test]
fn state_files_dirs_and_sockets_are_private_with_umask_000() {
    let home = TestHome::new();
    // A PYRO_HOME that does not exist yet: pyro creates it.
    let state = home.path().join("state");
    let w = run_with_umask_000(&state, &["workspace", "create", "debian:12", "--mem-mib", "512", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    run_with_umask_000(&state, &["workspace", "exec", &id, "--json", "--", "sh", "-c", "echo hi > /workspace/f"]);
    // Shells and services keep host records too.
    run_with_umask_000(&state, &["workspace", "shell", "open", &id, "--json"]);
    run_with_umask_000(&state, &["workspace", "service", "start", &id, "app", "--json", "--", "sleep", "300"]);
    // While the VM runs: sockets, logs, pid files and the disk exist.
    let runtime = state.join("workspaces").join(&id).join("runtime");
    for f in ["supervisor.sock", "qmp.sock", "agent.sock", "console.log", "supervisor.log", "rootfs.ext4"] {
        assert!(runtime.join(f).exists(), "{f} should exist while the VM runs");
    }
    let offenders = group_or_other_accessible(&state);
    assert!(offenders.is_empty(), "group/other-accessible while running:\n{}", offenders.join("\n"));
    run_with_umask_000(&state, &["workspace", "stop", &id, "--json"]);
    run_with_umask_000(&state, &["workspace", "start", &id, "--json"]);
    run_with_umask_000(&state, &["workspace", "snapshot", "create", &id, "s1", "--json"]);
    let offenders = group_or_other_accessible(&state);
    assert!(offenders.is_empty(), "group/other-accessible after stop/start:\n{}", offenders.join("\n"));
    run_with_umask_000(&state, &["workspace", "delete", &id, "--json"]);
    // An ephemeral VM (its directory under vms/ goes when it ends; vms/ stays).
    run_with_umask_000(&state, &["run", "debian:12", "--mem-mib", "512", "--json", "--", "true"]);
    let offenders = group_or_other_accessible(&state);
    assert!(offenders.is_empty(), "group/other-accessible after delete:\n{}", offenders.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 9. PID reuse
// ---------------------------------------------------------------------------------------

#[test]
fn a_stale_pid_file_never_signals_an_unrelated_process() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let ws = home.path().join("workspaces").join(&id);
    let mut bystander =
        Bystander(Command::new("sleep").arg("600").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let pid = bystander.0.id();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    let wrong = serde_json::json!({"pid": pid, "start_ticks": start_ticks(pid) + 1, "boot_id": boot_id});
    // As after a reboot: the record says started and the pid file names a pid that now
    // belongs to an unrelated process. Once in an old-style pid file (pids only), once with
    // identities whose start time does not match.
    let pid_files = [
        serde_json::json!({"supervisor_pid": pid, "vmm_pid": pid}),
        serde_json::json!({"supervisor_pid": pid, "vmm_pid": pid, "supervisor": wrong, "vmm": wrong}),
    ];
    // The record claims a VM runs and the pid file names the bystander.
    let fake = |pid_file: &serde_json::Value| {
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ws.join("workspace.json")).unwrap()).unwrap();
        record["state"] = "started".into();
        std::fs::write(ws.join("workspace.json"), serde_json::to_vec(&record).unwrap()).unwrap();
        std::fs::write(ws.join("runtime/supervisor.json"), pid_file.to_string()).unwrap();
    };
    for pid_file in &pid_files {
        for step in ["status", "stop", "start"] {
            fake(pid_file);
            let out = ok(&home, &["workspace", step, &id, "--json"]);
            assert!(running(&mut bystander.0), "`workspace {step}` killed an unrelated process (pid file {pid_file})");
            match step {
                "status" => {
                    assert_eq!(out["state"], "stopped", "a stale pid file made the workspace look alive: {out}");
                    assert!(out["last_error"].as_str().unwrap_or("").contains("no longer running"), "{out}");
                }
                // The start saw through the stale record and really booted.
                "start" => assert_eq!(out["state"], "started", "{out}"),
                _ => assert_eq!(out["state"], "stopped", "{out}"),
            }
        }
        // The real VM is stopped through its real pid file.
        ok(&home, &["workspace", "stop", &id, "--json"]);
        assert!(running(&mut bystander.0));
    }
    fake(&pid_files[1]);
    ok(&home, &["workspace", "delete", &id, "--json"]);
    assert!(running(&mut bystander.0));
}

/// An unrelated process (killed when the test ends, pass or fail).
struct Bystander(Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------
// 11. No runtime worker blocks on a lock
// ---------------------------------------------------------------------------------------

#[test]
fn calls_waiting_on_a_workspace_lock_do_not_stall_the_mcp_server_with_2_workers() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    let mut mcp = McpServer::start(&home, Some(2));
    // The exec holds the workspace's shared lifecycle lock for 25 s; the two stops then wait
    // for the exclusive lock behind it.
    mcp.call(
        10,
        "workspace_exec",
        serde_json::json!({"workspace_id": id, "command": "sleep 25", "timeout_seconds": 60}),
    );
    std::thread::sleep(Duration::from_secs(2));
    mcp.call(11, "workspace_stop", serde_json::json!({"workspace_id": id}));
    mcp.call(12, "workspace_stop", serde_json::json!({"workspace_id": id}));
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    mcp.call(13, "workspace_list", serde_json::json!({}));
    let list = mcp.response(13, Duration::from_secs(8));
    assert!(
        list.is_some(),
        "workspace_list got no answer within 8 s while two calls waited for a workspace lock (the server is stalled)"
    );
    let list = list.unwrap();
    assert_eq!(list["result"]["structuredContent"]["count"], 1, "{list}");
    mcp.call(14, "workspace_status", serde_json::json!({"workspace_id": id}));
    assert!(mcp.response(14, Duration::from_secs(8)).is_some(), "workspace_status stalled");
    assert!(asked.elapsed() < Duration::from_secs(16));
    // The exec is still running: the answers did not just come after the lock was freed.
    assert!(mcp.response(10, Duration::ZERO).is_none(), "the exec should still be running");
    let exec = mcp.result(10, Duration::from_secs(90));
    assert_eq!(exec["exit_code"], 0, "{exec}");
    assert_eq!(mcp.result(11, Duration::from_secs(90))["state"], "stopped");
    assert_eq!(mcp.result(12, Duration::from_secs(90))["state"], "stopped");
    mcp.close();
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

// ---------------------------------------------------------------------------------------
// 12. Interrupted creates leave no VM
// ---------------------------------------------------------------------------------------

/// Start `workspace create` and return once its VM supervisor runs (the boot has started).
fn create_until_booting(home: &TestHome) -> Child {
    let mut child = home
        .cmd()
        .args(["workspace", "create", "debian:12", "--mem-mib", "512", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the VM supervisor of the create", Duration::from_secs(120), || {
        assert!(running(&mut child), "the create ended before its VM booted");
        !supervisors(home).is_empty()
    });
    child
}

fn workspace_count(home: &TestHome) -> u64 {
    ok(home, &["workspace", "list", "--json"])["count"].as_u64().unwrap()
}

#[test]
fn a_create_killed_with_sigkill_after_boot_is_reaped_by_the_next_list() {
    let home = TestHome::new();
    let mut create = create_until_booting(&home);
    signal(&create, libc::SIGKILL);
    create.wait().unwrap();
    // Nobody cleaned up: the VM runs on until a sweep finds it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!home.leftover_processes().is_empty(), "expected the orphaned VM to still run before the sweep");
    assert_eq!(workspace_count(&home), 0, "the half-created workspace should be reaped");
    wait_until("the orphaned VM to end", Duration::from_secs(10), || home.leftover_processes().is_empty());
    let left: Vec<_> = std::fs::read_dir(home.path().join("workspaces")).unwrap().flatten().collect();
    assert!(left.is_empty(), "workspace directories left behind: {left:?}");
}

#[test]
fn a_create_killed_later_in_boot_is_reaped_too() {
    // Killed once QEMU itself runs (the pid file exists), not just the supervisor.
    let home = TestHome::new();
    let mut create = create_until_booting(&home);
    wait_until("QEMU of the create", Duration::from_secs(60), || {
        home.leftover_processes().iter().any(|p| p.contains("qemu-system"))
    });
    signal(&create, libc::SIGKILL);
    create.wait().unwrap();
    // A status of the half-created workspace (its id is in the record) sweeps as well; list
    // shows nothing afterwards.
    assert_eq!(workspace_count(&home), 0);
    wait_until("the orphaned VM to end", Duration::from_secs(10), || home.leftover_processes().is_empty());
}

#[test]
fn a_create_interrupted_with_ctrl_c_after_boot_leaves_nothing() {
    let home = TestHome::new();
    let mut create = create_until_booting(&home);
    signal(&create, libc::SIGINT);
    let status = create.wait().unwrap();
    assert!(!status.success(), "an interrupted create must not report success");
    // The CLI cleaned up on its way out: no sweep needed.
    wait_until("the interrupted create's VM to end", Duration::from_secs(10), || home.leftover_processes().is_empty());
    let left: Vec<_> = std::fs::read_dir(home.path().join("workspaces")).unwrap().flatten().collect();
    assert!(left.is_empty(), "workspace directories left behind: {left:?}");
    assert_eq!(workspace_count(&home), 0);
}

#[test]
fn an_mcp_cancelled_create_after_boot_leaves_nothing() {
    let home = TestHome::new();
    let mut mcp = McpServer::start(&home, None);
    mcp.call(5, "workspace_create", serde_json::json!({"environment": "debian:12", "mem_mib": 512}));
    wait_until("the VM supervisor of the create", Duration::from_secs(120), || !supervisors(&home).is_empty());
    mcp.send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 5, "reason": "test cancels the create"}}));
    wait_until("the cancelled create's VM to end", Duration::from_secs(15), || {
        home.leftover_processes().iter().all(|p| !p.contains("pyro-supervisor") && !p.contains("qemu-system"))
    });
    // The cancelled call removes what it made once its VM is dead.
    let workspaces = home.path().join("workspaces");
    wait_until("the cancelled create's directories to go", Duration::from_secs(10), || {
        std::fs::read_dir(&workspaces).map(|rd| rd.count() == 0).unwrap_or(true)
    });
    mcp.call(6, "workspace_list", serde_json::json!({}));
    let list = mcp.result(6, Duration::from_secs(30));
    assert_eq!(list["count"], 0, "{list}");
    mcp.close();
}

#[test]
fn a_killed_mcp_server_mid_create_is_swept_when_the_next_server_starts() {
    let home = TestHome::new();
    let mut mcp = McpServer::start(&home, None);
    mcp.call(5, "workspace_create", serde_json::json!({"environment": "debian:12", "mem_mib": 512}));
    wait_until("the VM supervisor of the create", Duration::from_secs(120), || !supervisors(&home).is_empty());
    let _ = mcp.child.kill();
    let _ = mcp.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!supervisors(&home).is_empty(), "expected the orphaned VM to still run");
    let mcp = McpServer::start(&home, None);
    wait_until("the orphan to be swept at server start", Duration::from_secs(10), || {
        home.leftover_processes().iter().all(|p| !p.contains("pyro-supervisor") && !p.contains("qemu-system"))
    });
    mcp.close();
    assert_eq!(workspace_count(&home), 0);
}

#[test]
fn a_start_killed_after_boot_leaves_no_vm_running_behind_a_stopped_record() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let mut start = home.cmd().args(["workspace", "start", &id, "--json"]).stdout(Stdio::null()).spawn().unwrap();
    // Killed once QEMU runs (its pid file is written), before the record says started.
    wait_until("QEMU of the start", Duration::from_secs(60), || {
        assert!(running(&mut start), "the start ended before it could be interrupted");
        home.leftover_processes().iter().any(|p| p.contains("qemu-system"))
    });
    signal(&start, libc::SIGKILL);
    start.wait().unwrap();
    let list = ok(&home, &["workspace", "list", "--json"]);
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["workspaces"][0]["state"], "stopped", "{list}");
    wait_until("the interrupted start's VM to end", Duration::from_secs(10), || home.leftover_processes().is_empty());
    let status = ok(&home, &["workspace", "status", &id, "--json"]);
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(status["last_error"].as_str().unwrap_or("").contains("interrupted start"), "{status}");
    // And it starts again normally.
    assert_eq!(ok(&home, &["workspace", "start", &id, "--json"])["state"], "started");
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

/// A supervisor whose QEMU died answers its callers first and cleans up after, so the
/// workspace reads `stopped` while that supervisor still lives. A `start` then must wait for
/// it: its cleanup used to remove the new VM's pid record and sockets, and the workspace the
/// start had just reported `started` read as stopped at the next call. Here the old
/// supervisor is frozen (SIGSTOP) with its QEMU killed, thawed 2 s into the start (a boot
/// takes longer than that is not needed: the new supervisor writes its records at once).
#[test]
fn a_start_waits_for_the_previous_supervisor_to_finish_its_cleanup() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    let record_path = home.path().join("workspaces").join(&id).join("runtime/supervisor.json");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let pid_of = |key: &str| record[key].as_i64().unwrap_or_else(|| panic!("{key} in {record}")) as i32;
    let (supervisor, vmm) = (pid_of("supervisor_pid"), pid_of("vmm_pid"));
    let dead = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true)
    };
    // SAFETY: kill(2) on the supervisor and QEMU of this test's own workspace.
    unsafe {
        assert_eq!(libc::kill(supervisor, libc::SIGSTOP), 0);
        assert_eq!(libc::kill(vmm, libc::SIGKILL), 0);
    }
    wait_until("QEMU to die", Duration::from_secs(20), || dead(vmm));
    assert_eq!(ok(&home, &["workspace", "status", &id, "--json"])["state"], "stopped");
    assert!(!dead(supervisor), "the frozen supervisor is still there");

    let start = home.cmd().args(["workspace", "start", &id, "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: as above.
    unsafe {
        libc::kill(supervisor, libc::SIGCONT);
    }
    let o = start.wait_with_output().unwrap();
    assert!(o.status.success(), "start failed: {}", stdout(&o));
    assert_eq!(json(&o)["state"], "started");
    wait_until("the old supervisor to exit", Duration::from_secs(10), || dead(supervisor));
    // The new VM's records survived the old supervisor's cleanup.
    let o = home.cmd().args(["workspace", "exec", &id, "--", "echo", "still-here"]).output().unwrap();
    assert!(o.status.success() && stdout(&o).contains("still-here"), "{} {}", stdout(&o), stderr(&o));
    assert_eq!(ok(&home, &["workspace", "status", &id, "--json"])["state"], "started");
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn a_vm_whose_workspace_record_is_gone_is_reaped_by_the_next_list() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    // The workspace directory disappears under its running VM (removed by hand, or by a
    // tool that knows nothing of pyro): no record owns the VM any more.
    std::fs::remove_dir_all(home.path().join("workspaces").join(&id)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!supervisors(&home).is_empty(), "expected the unowned VM to still run");
    assert_eq!(workspace_count(&home), 0);
    wait_until("the unowned VM to end", Duration::from_secs(10), || home.leftover_processes().is_empty());
}

// ---------------------------------------------------------------------------------------
// 13. Disk tools vs start
// ---------------------------------------------------------------------------------------

/// Is this process copying `image` into `out_dir` (both open)? Earlier opens of the image
/// (the precheck's read-only look) do not count: the copy is what must not overlap a boot.
fn copying(pid: u32, image: &Path, out_dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let targets: Vec<PathBuf> = rd.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect();
    targets.iter().any(|t| t == image) && targets.iter().any(|t| t.starts_with(out_dir))
}

#[test]
fn start_waits_for_a_disk_export_reading_the_image() {
    let home = TestHome::new();
    let id = create_workspace(&home);
    ok(
        &home,
        &[
            "workspace",
            "exec",
            &id,
            "--json",
            "--",
            "sh",
            "-c",
            "head -c 64M /dev/urandom > /workspace/big && echo ok > /workspace/marker",
        ],
    );
    ok(&home, &["workspace", "stop", &id, "--json"]);
    let image = home.path().join("workspaces").join(&id).join("runtime/rootfs.ext4");
    let out_dir = tempfile::tempdir().unwrap();
    // Catch the export while it copies the image (it may be quick: retry a few times).
    let mut caught = None;
    for attempt in 0..20 {
        let out: PathBuf = out_dir.path().join(format!("disk-{attempt}.ext4"));
        let mut export = home
            .cmd()
            .args(["workspace", "disk", "export", &id, "--output", out.to_str().unwrap(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = export.id();
        let mut seen = false;
        while running(&mut export) {
            if copying(pid, &image, out_dir.path()) {
                signal(&export, libc::SIGSTOP);
                seen = true;
                break;
            }
        }
        if seen {
            caught = Some((export, out));
            break;
        }
        let _ = export.wait();
    }
    let (mut export, out) = caught.expect("never caught the export copying the image");
    // The export is frozen mid-read. A start now must wait for it: no VM may boot the disk.
    let mut start = home.cmd().args(["workspace", "start", &id, "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        let vms = supervisors(&home);
        if !vms.is_empty() {
            signal(&export, libc::SIGCONT);
            let _ = export.wait();
            let _ = start.wait();
            let _ = home.run(&["workspace", "delete", &id]);
            panic!("the VM was booted while a disk export was reading its image: {vms:?}");
        }
        assert!(running(&mut start), "start finished while a disk export was reading the image");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&export, libc::SIGCONT);
    let export = export.wait_with_output().unwrap();
    assert!(export.status.success(), "export failed: {}", stderr(&export));
    let start = start.wait_with_output().unwrap();
    assert!(start.status.success(), "start failed");
    assert_eq!(json(&start)["state"], "started");
    let fsck = Command::new("e2fsck").args(["-fn"]).arg(&out).output().unwrap();
    assert!(fsck.status.success(), "exported image is not clean: {}{}", stdout(&fsck), stderr(&fsck));
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
