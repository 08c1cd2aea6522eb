//! Running commands: `/bin/sh -lc` in its own process group, per-stream capture caps,
//! timeouts that kill the whole group, cancellation.
//!
//! Outcomes: a normal exit or death by signal gives an [`ExecResult`] (exit code, or 128 +
//! signal); a timeout kills the group and gives exit code 124 with `timed_out`; a `Cancel`
//! kills the group and gives [`ExecError::Cancelled`] (the agent answers Error kind
//! `cancelled`, never a partial result). Those result rules (codes, timeout notice, caps,
//! drain times) are `pyro_protocol::exec`, shared with the host-compat mode.

use pyro_protocol::exec::{self as semantics, CappedOutput, Ending};
use pyro_protocol::{ExecRequest, ExecResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Base environment of every command (the request's env is added on top).
pub const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("USER", "root"),
    ("LOGNAME", "root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm-256color"),
];

/// A running exec: its process group and whether it was cancelled.
type Entry = (i32, Arc<AtomicBool>);

/// Process groups of running execs, by request id, for `Cancel`.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<HashMap<u64, Entry>>>);

impl Running {
    /// Kill a running exec's process group; false if no such exec runs.
    pub fn cancel(&self, request_id: u64) -> bool {
        let entry = self.0.lock().unwrap().get(&request_id).cloned();
        match entry {
            Some((pgid, flag)) => {
                flag.store(true, Ordering::SeqCst);
                kill_group(pgid);
                true
            }
            None => false,
        }
    }

    /// Kill every running exec (the connection that wanted their results is gone).
    pub fn cancel_all(&self) {
        let entries: Vec<Entry> = self.0.lock().unwrap().values().cloned().collect();
        for (pgid, flag) in entries {
            flag.store(true, Ordering::SeqCst);
            kill_group(pgid);
        }
    }
}

fn kill_group(pgid: i32) {
    pyro_sys::signal_process_group(pgid, libc::SIGKILL);
}

/// Why an exec produced no result.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The command could not be started (bad cwd, no shell).
    Spawn(String),
    Cancelled,
}

struct Capture {
    output: CappedOutput,
    /// The result was taken: a background process still writing is drained, not stored.
    taken: bool,
}

impl Capture {
    fn new(cap: usize) -> Arc<Mutex<Capture>> {
        Arc::new(Mutex::new(Capture { output: CappedOutput::new(cap), taken: false }))
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin, into: Arc<Mutex<Capture>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().unwrap();
                if !c.taken {
                    c.output.push(&buf[..n]);
                }
            }
        }
    }
}

fn take(c: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    let mut c = c.lock().unwrap();
    c.taken = true;
    c.output.take()
}

pub async fn run(req: &ExecRequest, request_id: u64, running: &Running) -> Result<ExecResult, ExecError> {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-lc").arg(&req.command);
    cmd.current_dir(req.cwd.as_deref().unwrap_or("/"));
    cmd.env_clear();
    for (k, v) in BASE_ENV {
        cmd.env(k, v);
    }
    cmd.envs(&req.env);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        ExecError::Spawn(match &req.cwd {
            Some(cwd) if !std::path::Path::new(cwd).is_dir() => {
                format!("cannot run the command: working directory {cwd} does not exist")
            }
            _ => format!("cannot start /bin/sh: {e}"),
        })
    })?;
    let pgid = child.id().unwrap_or(0) as i32;
    let cancelled = Arc::new(AtomicBool::new(false));
    running.0.lock().unwrap().insert(request_id, (pgid, cancelled.clone()));

    let cap = req.output_cap_bytes as usize;
    let out = Capture::new(cap);
    let err = Capture::new(cap);
    let out_task = tokio::spawn(read_capped(child.stdout.take().expect("piped"), out.clone()));
    let err_task = tokio::spawn(read_capped(child.stderr.take().expect("piped"), err.clone()));

    let timeout = Duration::from_millis(req.timeout_ms.max(1));
    let ending = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ending::Exited(semantics::exit_code_of(status)),
        Ok(Err(_)) => Ending::Exited(-1),
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            Ending::TimedOut
        }
    };
    if ending == Ending::TimedOut {
        // Every writer of the pipes is dead: readers finish at once.
        let _ = tokio::time::timeout(semantics::KILLED_DRAIN_LIMIT, out_task).await;
        let _ = tokio::time::timeout(semantics::KILLED_DRAIN_LIMIT, err_task).await;
    } else {
        let deadline = tokio::time::Instant::now() + semantics::DRAIN_GRACE;
        let _ = tokio::time::timeout_at(deadline, out_task).await;
        let _ = tokio::time::timeout_at(deadline, err_task).await;
    }
    running.0.lock().unwrap().remove(&request_id);
    if cancelled.load(Ordering::SeqCst) {
        return Err(ExecError::Cancelled);
    }
    Ok(semantics::exec_result(take(&out), take(&err), ending, req.timeout_ms, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &str, timeout_ms: u64, cap: u64) -> ExecRequest {
        ExecRequest { command: cmd.into(), cwd: None, env: Default::default(), timeout_ms, output_cap_bytes: cap }
    }

    async fn run_ok(cmd: &str) -> ExecResult {
        run(&req(cmd, 10_000, 1 << 20), 1, &Running::default()).await.unwrap()
    }

    /// Live (non-zombie) processes whose process group is `pgid`.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // state ppid pgrp ...
            if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X" {
                found.push(format!("{head})"));
            }
        }
        found
    }

    fn wait_group_gone(pgid: i32) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let live = live_members(pgid);
            if live.is_empty() || Instant::now() > deadline {
                return live;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn streams_and_exit_code_are_kept_apart() {
        let r = run_ok("echo out; echo err >&2; exit 7").await;
        assert_eq!(r.stdout, b"out\n");
        assert_eq!(r.stderr, b"err\n");
        assert_eq!(r.exit_code, 7);
        assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);
    }

    #[tokio::test]
    async fn death_by_signal_is_128_plus_the_signal() {
        assert_eq!(run_ok("kill -9 $$").await.exit_code, 137);
        assert_eq!(run_ok("kill -TERM $$").await.exit_code, 143);
    }

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_and_flagged() {
        let r = run(&req("head -c 100000 /dev/zero; head -c 50 /dev/zero >&2", 5000, 1000), 2, &Running::default())
            .await
            .unwrap();
        assert_eq!(r.stdout.len(), 1000);
        assert!(r.stdout_truncated);
        assert_eq!(r.stderr.len(), 50);
        assert!(!r.stderr_truncated);
        assert_eq!(r.exit_code, 0);
    }

    #[tokio::test]
    async fn a_writer_far_past_the_cap_never_blocks() {
        // 20 MB through a 4 KiB cap: the pipe keeps being drained, so the command finishes.
        let t = Instant::now();
        let r =
            run(&req("head -c 20000000 /dev/zero; echo done >&2", 20_000, 4096), 3, &Running::default()).await.unwrap();
        assert_eq!(r.exit_code, 0);
        assert_eq!(r.stdout.len(), 4096);
        assert!(r.stdout_truncated);
        assert_eq!(r.stderr, b"done\n");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn commands_get_the_default_sigpipe() {
        // The agent ignores SIGPIPE (Rust does); a pipeline must still end when its reader does.
        let t = Instant::now();
        let r = run_ok("yes | head -c 6").await;
        assert_eq!(r.stdout, b"y\ny\ny\n");
        assert_eq!(r.exit_code, 0);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn binary_output_is_returned_as_bytes() {
        let r = run_ok("printf '\\377\\000\\376'; printf '\\303\\050' >&2").await;
        assert_eq!(r.stdout, vec![0xff, 0x00, 0xfe]);
        assert_eq!(r.stderr, vec![0xc3, 0x28]);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // $$ is the shell, the group leader (process_group(0)): its id is the pgid.
        let cmd = "echo $$; echo partial >&2; sleep 100 & sleep 100";
        let t = Instant::now();
        let r = run(&req(cmd, 2000, 1024), 4, &Running::default()).await.unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(2000) && took < Duration::from_millis(3000), "{took:?}");
        assert_eq!(r.exit_code, 124);
        assert!(r.timed_out);
        assert_eq!(String::from_utf8_lossy(&r.stderr), "partial\ncommand timed out after 2s");
        let pgid: i32 = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
        // SAFETY: signal 0 only checks for existence.
        let rc = unsafe { libc::kill(-pgid, 0) };
        let survivors = wait_group_gone(pgid);
        assert!(survivors.is_empty(), "survivors of group {pgid}: {survivors:?} (kill rc {rc})");
    }

    #[tokio::test]
    async fn fractional_timeouts_are_reported_as_such() {
        let r = run(&req("sleep 100", 500, 1024), 5, &Running::default()).await.unwrap();
        assert!(r.timed_out);
        assert_eq!(r.stderr, b"command timed out after 0.5s");
        assert_eq!(String::from_utf8_lossy(&r.stderr), semantics::timeout_message(500), "the notice host-compat gives");
    }

    #[tokio::test]
    async fn a_background_process_holding_the_pipes_does_not_hold_the_result() {
        let t = Instant::now();
        let r = run_ok("echo $$; sleep 30 & echo started").await;
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(r.exit_code, 0);
        assert!(!r.timed_out);
        let text = String::from_utf8_lossy(&r.stdout).to_string();
        assert!(text.ends_with("started\n"), "{text}");
        let pgid: i32 = text.lines().next().unwrap().parse().unwrap();
        // It is left running (that is the point of `&`); clean up after the test.
        assert!(!live_members(pgid).is_empty());
        kill_group(pgid);
        assert!(wait_group_gone(pgid).is_empty());
    }

    #[tokio::test]
    async fn cancel_kills_a_running_exec() {
        let running = Running::default();
        let r2 = running.clone();
        let task = tokio::spawn(async move { run(&req("sleep 30 & sleep 30", 60_000, 1024), 9, &r2).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pgid = running.0.lock().unwrap().get(&9).unwrap().0;
        let t = Instant::now();
        assert!(running.cancel(9));
        let out = tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(out, Err(ExecError::Cancelled));
        assert!(!running.cancel(9), "finished execs are forgotten");
        assert!(wait_group_gone(pgid).is_empty());
    }

    #[tokio::test]
    async fn cwd_and_env_are_applied() {
        let mut r = req("pwd; echo $FOO; echo $HOME $LANG; echo $PATH", 5000, 1024);
        r.cwd = Some("/tmp".into());
        r.env.insert("FOO".into(), "bar baz".into());
        r.env.insert("HOME".into(), "/home/x".into());
        let out = run(&r, 5, &Running::default()).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/tmp\nbar baz\n/home/x C.UTF-8\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        );
        let out = run_ok("pwd; cat </dev/stdin | wc -c").await;
        assert_eq!(out.stdout, b"/\n0\n", "default cwd is / and stdin is empty");
        let mut r = req("true", 5000, 1024);
        r.cwd = Some("/nonexistent-dir".into());
        let e = run(&r, 6, &Running::default()).await.unwrap_err();
        assert!(matches!(e, ExecError::Spawn(m) if m.contains("/nonexistent-dir does not exist")));
    }
}
