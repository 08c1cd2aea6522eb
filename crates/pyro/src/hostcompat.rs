//! `host-compat`: commands run on the host, without isolation. Only ever used when the
//! caller opted in with `allow_host_compat` (never chosen silently).
//!
//! The result follows the guest agent's rules exactly (`pyro_protocol::exec`: exit 124 and
//! the same timeout notice, 128 + signal, per-stream caps, the whole process group killed on
//! timeout, a short drain when a background process keeps the output open); only the shell
//! (`bash -lc`), the environment and the working directory differ.

use crate::{Error, Result};
use pyro_protocol::exec::{self as semantics, CappedOutput, Ending};
use pyro_protocol::ExecResult;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Run `bash -lc COMMAND` in `workdir` with a reduced environment, same timeout and cap
/// semantics as the guest agent.
pub async fn exec(workdir: &Path, command: &str, timeout: Duration, cap: u64) -> Result<ExecResult> {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-lc")
        .arg(command)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .env("HOME", workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Error::io("starting bash on the host", e))?;
    let pgid = child.id().unwrap_or(0) as i32;
    let out = Arc::new(Mutex::new(CappedOutput::new(cap as usize)));
    let err = Arc::new(Mutex::new(CappedOutput::new(cap as usize)));
    let out_task = tokio::spawn(read_capped(child.stdout.take().expect("piped"), out.clone()));
    let err_task = tokio::spawn(read_capped(child.stderr.take().expect("piped"), err.clone()));
    let ending = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ending::Exited(semantics::exit_code_of(status)),
        Ok(Err(e)) => return Err(Error::io("waiting for the host command", e)),
        Err(_) => {
            pyro_sys::signal_process_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            Ending::TimedOut
        }
    };
    let drain = if ending == Ending::TimedOut { semantics::KILLED_DRAIN_LIMIT } else { semantics::DRAIN_GRACE };
    let deadline = tokio::time::Instant::now() + drain;
    let _ = tokio::time::timeout_at(deadline, out_task).await;
    let _ = tokio::time::timeout_at(deadline, err_task).await;
    // A reader still running (a background process holds the pipe) keeps draining into its
    // buffer after this; what was kept so far is the result.
    let stdout = out.lock().unwrap_or_else(|p| p.into_inner()).take();
    let stderr = err.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(semantics::exec_result(stdout, stderr, ending, timeout.as_millis() as u64, started.elapsed()))
}

/// Read a stream to its end, keeping what the cap allows.
async fn read_capped(mut r: impl AsyncRead + Unpin, into: Arc<Mutex<CappedOutput>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host-compat and the guest agent report a timeout identically: both build the result
    /// with `pyro_protocol::exec::exec_result` (the agent's side is pinned by its unit tests
    /// and by `crates/pyro/tests/guest_exec.rs` on a real guest).
    #[tokio::test]
    async fn timeout_matches_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let r =
            exec(dir.path(), "echo $$; printf partial >&2; sleep 100 & sleep 100", Duration::from_millis(1500), 1024)
                .await
                .unwrap();
        assert_eq!((r.exit_code, r.timed_out), (124, true));
        assert_eq!(String::from_utf8_lossy(&r.stderr), format!("partial\n{}", semantics::timeout_message(1500)));
        assert_eq!(String::from_utf8_lossy(&r.stderr), "partial\ncommand timed out after 1.5s");
        let pgid: i32 = String::from_utf8_lossy(&r.stdout).trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !live_members(pgid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(live_members(pgid), Vec::<String>::new(), "the whole group was killed");
    }

    /// Pids of live (not zombie) processes in process group `pgid`.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
            let Some((_, rest)) = stat.rsplit_once(')') else { continue };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // state ppid pgrp ...
            if f.len() > 2 && f[2] == pgid.to_string() && !matches!(f[0], "Z" | "X") {
                found.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        found
    }

    #[tokio::test]
    async fn caps_signals_and_background_processes_follow_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let run = |c: &'static str, cap| exec(dir.path(), c, Duration::from_secs(10), cap);
        let r = run("head -c 5000 /dev/zero; echo e >&2; exit 3", 1000).await.unwrap();
        assert_eq!(
            (r.stdout.len(), r.stdout_truncated, r.stderr.as_slice(), r.exit_code),
            (1000, true, &b"e\n"[..], 3)
        );
        assert_eq!(run("kill -9 $$", 100).await.unwrap().exit_code, 137);
        // A background process holding the pipes does not hold the result.
        let t = Instant::now();
        let r = run("echo $$; sleep 30 & echo started", 1024).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let text = String::from_utf8_lossy(&r.stdout).to_string();
        assert!(text.ends_with("started\n") && !r.timed_out, "{text}");
        let pgid: i32 = text.lines().next().unwrap().parse().unwrap();
        pyro_sys::signal_process_group(pgid, libc::SIGKILL);
    }
}
