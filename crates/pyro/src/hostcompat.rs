//! `host-compat`: commands run on the host, without isolation. Only ever used when the
//! caller opted in with `allow_host_compat` (never chosen silently).

use crate::{Error, Result};
use pyro_protocol::ExecResult;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

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
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let read_capped = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = (cap as usize).saturating_sub(kept.len());
                    if n > room {
                        truncated = true;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        (kept, truncated)
    };
    let out_task = tokio::spawn(read_capped(Box::new(out)));
    let err_task = tokio::spawn(read_capped(Box::new(err)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let (exit_code, timed_out) = match waited {
        Ok(Ok(st)) => (st.code().unwrap_or_else(|| 128 + st_signal(&st)), false),
        Ok(Err(e)) => return Err(Error::io("waiting for the host command", e)),
        Err(_) => {
            // SAFETY: kill(2) on the process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait().await;
            (124, true)
        }
    };
    let (stdout, stdout_truncated) = out_task.await.unwrap_or_default();
    let (mut stderr, stderr_truncated) = err_task.await.unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("command timed out after {}s", timeout.as_secs()).as_bytes());
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

fn st_signal(st: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.signal().unwrap_or(0)
}
