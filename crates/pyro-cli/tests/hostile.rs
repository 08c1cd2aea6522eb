//! The guest is hostile: the real engine, supervisor, CLI and MCP server against the hostile
//! test agent (`pyro-hostile-agent`, the real agent built with feature `hostile` by
//! scripts/build-agent.sh). It boots like the real agent in a real QEMU guest; an exec of
//! `pyro-hostile:<scenario>` makes it answer with crafted frames (see
//! crates/pyro-agent/src/hostile.rs).
//!
//! Every call must end with exit code 1 and a clear `[error]` (or succeed with the crafted
//! parts dropped), never panic, never write outside `PYRO_HOME`, and keep the supervisor and
//! the CLI/MCP processes under the stated memory limits.

mod common;

use common::{stderr, stdout, TestHome};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Peak RSS allowed for the VM supervisor: it holds at most one frame (40 MiB) plus buffers.
const SUPERVISOR_PEAK_RSS_KIB: u64 = 160 * 1024;
/// Peak RSS allowed for a CLI call or the MCP server: one frame, its decoded answer (exec
/// output capped at 16 MiB per stream) and the JSON rendering of it.
const CLIENT_PEAK_RSS_KIB: u64 = 256 * 1024;

fn hostile_agent() -> PathBuf {
    let p = common::pyro_bin().parent().unwrap().join("pyro-hostile-agent");
    assert!(p.exists(), "{} is missing: run scripts/build-agent.sh", p.display());
    p
}

/// A started workspace whose guest runs the hostile agent.
struct Hostile {
    home: TestHome,
    id: String,
}

impl Hostile {
    fn new() -> Self {
        let home = TestHome::new();
        let mut h = Hostile { home, id: String::new() };
        let o = h.run(&["workspace", "create", "debian:12", "--json"]);
        assert!(o.status.success(), "create failed: {}", stderr(&o));
        h.id = common::json(&o)["workspace_id"].as_str().unwrap().to_string();
        h
    }

    fn cmd(&self) -> Command {
        let mut c = self.home.cmd();
        c.env("PYRO_AGENT_BIN", hostile_agent());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("pyro runs")
    }

    fn ws_dir(&self) -> PathBuf {
        self.home.path().join("workspaces").join(&self.id)
    }

    fn scenario(&self, s: &str) {
        let o = self.run(&["workspace", "exec", &self.id, "--", &format!("pyro-hostile:{s}")]);
        assert!(o.status.success(), "switching to {s} failed: {}", stderr(&o));
        assert!(stdout(&o).contains("hostile scenario"), "{}", stdout(&o));
    }

    /// Expect exit code 1, a clear `[error]` containing `needle`, and no panic.
    fn fails_with(&self, args: &[&str], needle: &str) -> String {
        let o = self.run(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?} should fail: stdout={} stderr={e}", stdout(&o));
        assert!(e.contains("[error]") && e.contains(needle), "{args:?}: expected an error about {needle:?}, got: {e}");
        no_panic(&e);
        e
    }

    fn succeeds(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: stdout={} stderr={}", stdout(&o), stderr(&o));
        no_panic(&stderr(&o));
        o
    }

    fn supervisor_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.ws_dir().join("runtime/supervisor.json")).expect("supervisor.json");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["supervisor_pid"].as_u64().unwrap() as u32
    }

    fn state(&self) -> String {
        let o = self.succeeds(&["workspace", "status", &self.id, "--json"]);
        common::json(&o)["state"].as_str().unwrap().to_string()
    }

    fn stop(&self) {
        self.succeeds(&["workspace", "stop", &self.id]);
    }
}

fn no_panic(text: &str) {
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace", "memory allocation of", "capacity overflow"] {
        assert!(!text.contains(bad), "panic/abort text {bad:?} in: {text}");
    }
}

/// Peak resident set of a live process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Largest peak RSS among the children this test process has waited for (the CLI calls), in KiB.
fn children_peak_rss_kib() -> u64 {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss as u64
    }
}

/// Every file path under `dir` (to show nothing appeared outside the test's home).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn guest_chosen_names_never_become_host_paths() {
    let h = Hostile::new();
    // `../../../../canary` from <home>/workspaces/<id>/services/ is <home>/../canary.json;
    // the absolute name points into a directory of its own.
    let outside = h.home.path().parent().unwrap().to_path_buf();
    let traversal_targets: Vec<PathBuf> =
        ["canary.json", "canary.txt", "b.json", "b.txt"].iter().map(|n| outside.join(n)).collect();
    let preexisting: Vec<bool> = traversal_targets.iter().map(|p| p.exists()).collect();
    let abs_dir = tempfile::Builder::new().prefix("pyro-canary-").tempdir_in("/tmp").unwrap();
    let abs = abs_dir.path().join("abs");
    h.scenario(&format!("names:{}", abs.display()));

    // Service records: every crafted name dropped and logged, nothing written for them.
    let o = h.succeeds(&["workspace", "service", "list", &h.id, "--json"]);
    let listed = common::json(&o);
    assert_eq!(listed["count"].as_u64(), Some(0), "{listed}");
    assert!(stderr(&o).contains("dropped a guest service record"), "{}", stderr(&o));
    h.succeeds(&["workspace", "status", &h.id]);
    // An answer about a different, crafted name is refused outright.
    h.fails_with(&["workspace", "service", "status", &h.id, "web"], "not a valid service name");
    let services_dir = h.ws_dir().join("services");
    assert_eq!(files_under(&services_dir), Vec::<PathBuf>::new(), "service records were written");
    let log = std::fs::read_to_string(h.ws_dir().join("guest-refused.log")).unwrap();
    assert!(log.contains("../../../../canary") && log.contains(&abs.display().to_string()), "{log}");

    // File list entries: only the plain one under /workspace is passed on.
    let o = h.succeeds(&["workspace", "file", "list", &h.id, "/workspace", "--json"]);
    let paths: Vec<String> = common::json(&o)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, vec!["/workspace/ok.txt".to_string()]);

    // Export, diff and snapshot of a tar whose members are `../../../../canary.txt`,
    // `a/../../b.txt`, `<abs>.txt`: refused, nothing materialised, nothing kept.
    let out = h.home.path().join("exported");
    h.fails_with(
        &["workspace", "export", &h.id, ".", "--output", out.to_str().unwrap()],
        "archive member must stay inside the tree",
    );
    assert!(!out.exists());
    h.fails_with(&["workspace", "diff", &h.id], "archive member must stay inside the tree");
    h.fails_with(&["workspace", "snapshot", "create", &h.id, "evil"], "archive member must stay inside the tree");
    let kept = files_under(&h.ws_dir().join("snapshots"));
    assert!(kept.is_empty(), "snapshot files kept: {kept:?}");

    // Stopping sends CloseAll/StopAll, answered with crafted names too.
    h.stop();
    assert_eq!(h.state(), "stopped");
    for (p, existed) in traversal_targets.iter().zip(preexisting) {
        assert!(existed || !p.exists(), "{} was written outside PYRO_HOME", p.display());
    }
    assert_eq!(files_under(abs_dir.path()), Vec::<PathBuf>::new(), "files appeared at the absolute name");
    let leftovers: Vec<PathBuf> = files_under(h.home.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".pyro-")))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn guest_chosen_sizes_and_floods_end_with_clear_errors_and_bounded_memory() {
    let h = Hostile::new();
    let out = |name: &str| h.home.path().join(name).display().to_string();

    // Declared sizes: refused before anything is read or allocated.
    h.scenario("export-size:max");
    h.fails_with(&["workspace", "export", &h.id, ".", "--output", &out("a")], "pyro brings at most 4294967296 bytes");
    h.fails_with(&["workspace", "diff", &h.id], "18446744073709551615 bytes");
    h.scenario("export-size:5000000000");
    h.fails_with(&["workspace", "snapshot", "create", &h.id, "big"], "5000000000 bytes");
    // Answers longer than what was asked for.
    h.scenario("export-long");
    h.fails_with(
        &["workspace", "export", &h.id, ".", "--output", &out("b")],
        "answered a read of 1000 bytes with 4194304",
    );
    // 200 MB streamed through a spool file, not memory.
    h.scenario("export-size:200000000");
    let o = h.succeeds(&["workspace", "export", &h.id, ".", "--output", &out("c"), "--json"]);
    assert_eq!(common::json(&o)["entry_count"].as_u64(), Some(0), "counts must be the host's, not the guest's");

    // Frames of ~30 MiB: 30 M empty strings, 30 M nested arrays, a 4 G element count.
    for (kind, needle) in [
        ("strings", "more than 1000000 values in one frame"),
        ("deep", "nested deeper than 32 levels"),
        ("lie", "declares 4294967295 values"),
    ] {
        h.scenario(&format!("flood:{kind}"));
        h.fails_with(&["workspace", "service", "list", &h.id], needle);
        h.fails_with(&["workspace", "exec", &h.id, "--", "true"], needle);
    }

    // The same through the MCP server (stdio, raw JSON-RPC lines).
    h.scenario("flood:strings");
    let mcp_peak = mcp_calls_fail_cleanly(&h, "more than 1000000 values in one frame");

    // 30 MiB of stdout where 16 MiB were asked for: cut by the host.
    h.scenario("stdout:30");
    let o = h.succeeds(&["workspace", "exec", &h.id, "--json", "--", "true"]);
    let r = common::json(&o);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 16 * 1024 * 1024);
    assert_eq!(r["stdout_truncated"], serde_json::json!(true));

    let sup_peak = peak_rss_kib(h.supervisor_pid());
    let cli_peak = children_peak_rss_kib();
    eprintln!("peak RSS: supervisor {sup_peak} KiB, CLI {cli_peak} KiB, MCP server {mcp_peak} KiB");
    assert!(sup_peak < SUPERVISOR_PEAK_RSS_KIB, "supervisor peaked at {sup_peak} KiB");
    assert!(cli_peak < CLIENT_PEAK_RSS_KIB, "a CLI call peaked at {cli_peak} KiB");
    assert!(mcp_peak < CLIENT_PEAK_RSS_KIB, "the MCP server peaked at {mcp_peak} KiB");

    // The supervisor still serves.
    h.scenario("off");
    let o = h.succeeds(&["workspace", "exec", &h.id, "--", "echo", "still-serving"]);
    assert!(stdout(&o).contains("still-serving"));

    // A 90 MiB frame or a 4 GiB length header breaks the channel: the VM stops, the call
    // says why, and the workspace starts again.
    for s in ["stdout:90", "bad-length"] {
        h.scenario(s);
        h.fails_with(&["workspace", "exec", &h.id, "--", "true"], "frames are limited to 41943040 bytes");
        // The supervisor answers first, then finishes its cleanup and exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while h.state() != "stopped" && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(h.state(), "stopped");
        h.succeeds(&["workspace", "start", &h.id]);
    }
    h.stop();
}

/// Run `pyro mcp serve` on stdio, call service_list and workspace_exec against the current
/// scenario, check both are tool errors mentioning `needle` and the server keeps serving;
/// returns the server's peak RSS (KiB).
fn mcp_calls_fail_cleanly(h: &Hostile, needle: &str) -> u64 {
    let mut child = h
        .cmd()
        .args(["mcp", "serve", "--profile", "workspace-full", "--no-project"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcp serve starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut call = move |id: u64, method: &str, params: serde_json::Value| -> serde_json::Value {
        let msg = match method {
            "notifications/initialized" => serde_json::json!({"jsonrpc": "2.0", "method": method}),
            _ => serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        };
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        if msg.get("id").is_none() {
            return serde_json::Value::Null;
        }
        loop {
            let line = lines.next().expect("an answer").expect("readable");
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON-RPC line");
            if v["id"].as_u64() == Some(id) {
                return v;
            }
        }
    };
    let init = call(
        1,
        "initialize",
        serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "hostile-test", "version": "1"}}),
    );
    assert!(init["result"].is_object(), "{init}");
    call(0, "notifications/initialized", serde_json::Value::Null);
    for (i, (tool, args)) in [
        ("service_list", serde_json::json!({"workspace_id": h.id})),
        ("workspace_exec", serde_json::json!({"workspace_id": h.id, "command": "true"})),
        ("workspace_status", serde_json::json!({"workspace_id": h.id})),
    ]
    .into_iter()
    .enumerate()
    {
        let r = call(10 + i as u64, "tools/call", serde_json::json!({"name": tool, "arguments": args}));
        let text = r.to_string();
        if tool == "workspace_status" {
            // Status needs no answer the flood can spoil beyond the service refresh.
            assert!(r["result"].is_object() || r["error"].is_object(), "{text}");
        } else {
            assert_eq!(r["result"]["isError"], serde_json::json!(true), "{tool}: {text}");
            assert!(text.contains(needle), "{tool}: {text}");
        }
    }
    let peak = peak_rss_kib(child.id());
    drop(call);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    no_panic(&err);
    assert!(status.success(), "mcp serve ended with {status}: {err}");
    peak
}

#[test]
fn wrong_ids_slow_drip_and_silence_end_with_timeouts_and_the_supervisor_survives() {
    let h = Hostile::new();
    // Answers under ids nobody asked for: the call times out (1 s command + 15 s slack).
    h.scenario("wrong-ids");
    h.fails_with(&["workspace", "exec", &h.id, "--timeout-seconds", "1", "--", "true"], "did not answer within 16 s");
    // An unknown id, then the real answer twice: the call gets exactly one.
    h.scenario("duplicate-ids");
    let o = h.succeeds(&["workspace", "exec", &h.id, "--", "true"]);
    assert!(stdout(&o).contains("duplicate"), "{}", stdout(&o));
    h.scenario("silence");
    h.fails_with(&["workspace", "exec", &h.id, "--timeout-seconds", "1", "--", "true"], "did not answer within 16 s");
    let supervisor = h.supervisor_pid();
    h.scenario("drip");
    h.fails_with(&["workspace", "exec", &h.id, "--timeout-seconds", "1", "--", "true"], "did not answer within 16 s");
    // Same supervisor, still alive, and it ends cleanly on stop.
    assert_eq!(h.supervisor_pid(), supervisor);
    assert!(Path::new(&format!("/proc/{supervisor}")).exists());
    h.stop();
    assert_eq!(h.state(), "stopped");
}
