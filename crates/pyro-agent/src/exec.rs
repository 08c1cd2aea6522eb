//! Running commands: `/bin/sh -lc` in its own process group, per-stream capture caps,
//! timeouts that kill the whole group, cancellation.

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

/// After the command exits, how long to keep reading output a background process may still
/// hold open before returning anyway.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Process groups of running execs, by request id, for `Cancel`.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<HashMap<u64, (i32, Arc<AtomicBool>)>>>);

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
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) of a process group we created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Why an exec produced no result.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecError {
    /// The command could not be started (bad cwd, no shell).
    Spawn(String),
    Cancelled,
}

#[derive(Default)]
struct Capture {
    kept: Vec<u8>,
    truncated: bool,
}

async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize, into: Arc<Mutex<Capture>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().unwrap();
                let room = cap.saturating_sub(c.kept.len());
                if n > room {
                    c.truncated = true;
                }
                let take = n.min(room);
                c.kept.extend_from_slice(&buf[..take]);
            }
        }
    }
}

fn take(c: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    let mut c = c.lock().unwrap();
    (std::mem::take(&mut c.kept), c.truncated)
}

/// `N` for whole seconds, `N.M` otherwise (matches the reference's message).
pub fn format_seconds(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{}", ms as f64 / 1000.0)
    }
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
    let out = Arc::new(Mutex::new(Capture::default()));
    let err = Arc::new(Mutex::new(Capture::default()));
    let out_task = tokio::spawn(read_capped(child.stdout.take().expect("piped"), cap, out.clone()));
    let err_task = tokio::spawn(read_capped(child.stderr.take().expect("piped"), cap, err.clone()));

    let timeout = Duration::from_millis(req.timeout_ms.max(1));
    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (exit_code_of(status), false),
        Ok(Err(_)) => (-1, false),
        Err(_) => {
            kill_group(pgid);
            let _ = child.wait().await;
            (124, true)
        }
    };
    if timed_out {
        // Every writer of the pipes is dead: readers finish at once.
        let _ = tokio::time::timeout(Duration::from_secs(2), out_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), err_task).await;
    } else {
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        let _ = tokio::time::timeout_at(deadline, out_task).await;
        let _ = tokio::time::timeout_at(deadline, err_task).await;
    }
    running.0.lock().unwrap().remove(&request_id);
    if cancelled.load(Ordering::SeqCst) {
        return Err(ExecError::Cancelled);
    }
    let (stdout, stdout_truncated) = take(&out);
    let (mut stderr, stderr_truncated) = take(&err);
    if timed_out {
        if !stderr.is_empty() && !stderr.ends_with(b"\n") {
            stderr.push(b'\n');
        }
        stderr.extend_from_slice(format!("command timed out after {}s", format_seconds(req.timeout_ms)).as_bytes());
    }
    Ok(ExecResult {
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        exit_code,
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &str, timeout_ms: u64, cap: u64) -> ExecRequest {
        ExecRequest { command: cmd.into(), cwd: None, env: Default::default(), timeout_ms, output_cap_bytes: cap }
    }

    #[tokio::test]
    async fn streams_and_exit_code_are_kept_apart() {
        let r = run(&req("echo out; echo err >&2; exit 7", 5000, 1024), 1, &Running::default()).await.unwrap();
        assert_eq!(r.stdout, b"out\n");
        assert_eq!(r.stderr, b"err\n");
        assert_eq!(r.exit_code, 7);
        assert!(!r.timed_out);
    }

    #[tokio::test]
    async fn output_past_the_cap_is_dropped_and_flagged() {
        let r = run(&req("head -c 100000 /dev/zero", 5000, 1000), 2, &Running::default()).await.unwrap();
        assert_eq!(r.stdout.len(), 1000);
        assert!(r.stdout_truncated);
        assert!(!r.stderr_truncated);
        assert_eq!(r.exit_code, 0);
    }

    #[tokio::test]
    async fn binary_output_is_returned_as_bytes() {
        let r = run(&req("printf '\\377\\000\\376'", 5000, 1024), 3, &Running::default()).await.unwrap();
        assert_eq!(r.stdout, vec![0xff, 0x00, 0xfe]);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let marker = format!("pyro-agent-test-{}", std::process::id());
        let cmd = format!("sh -c 'sleep 100; true {marker}' & sh -c 'sleep 100; true {marker}'");
        let t = Instant::now();
        let r = run(&req(&cmd, 500, 1024), 4, &Running::default()).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(r.exit_code, 124);
        assert!(r.timed_out);
        assert!(String::from_utf8_lossy(&r.stderr).ends_with("command timed out after 0.5s"));
        // The background sleep was in the same group: it must be gone too.
        std::thread::sleep(Duration::from_millis(100));
        let ps = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(ps.stdout.is_empty(), "survivors: {}", String::from_utf8_lossy(&ps.stdout));
    }

    #[tokio::test]
    async fn cancel_kills_a_running_exec() {
        let running = Running::default();
        let r2 = running.clone();
        let task = tokio::spawn(async move { run(&req("sleep 30", 60_000, 1024), 9, &r2).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(running.cancel(9));
        let out = tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap();
        assert_eq!(out, Err(ExecError::Cancelled));
        assert!(!running.cancel(9));
    }

    #[tokio::test]
    async fn cwd_and_env_are_applied() {
        let mut r = req("pwd; echo $FOO", 5000, 1024);
        r.cwd = Some("/tmp".into());
        r.env.insert("FOO".into(), "bar".into());
        let out = run(&r, 5, &Running::default()).await.unwrap();
        assert_eq!(out.stdout, b"/tmp\nbar\n");
        let mut r = req("true", 5000, 1024);
        r.cwd = Some("/nonexistent-dir".into());
        let e = run(&r, 6, &Running::default()).await.unwrap_err();
        assert!(matches!(e, ExecError::Spawn(m) if m.contains("/nonexistent-dir does not exist")));
    }

    #[test]
    fn seconds_format_like_the_reference() {
        assert_eq!(format_seconds(2000), "2");
        assert_eq!(format_seconds(500), "0.5");
    }
}
