//! PTY shells: `bash --noprofile --norc -i` on a fresh pseudo-terminal, its output decoded,
//! redacted and kept in a bounded ring addressed by character offsets (cursors).
//!
//! One blocking thread per shell reads the PTY master; another waits for the shell to exit.
//! Readers are woken through a [`Notify`] so `wait_for_idle_ms` reads cost nothing while idle.

use crate::exec::BASE_ENV;
use pyro_protocol::session::{
    ShellOutput, ShellRequest, ShellResponse, ShellStatus, REDACTED, SHELLS_DIR, SHELL_IDLE_WAIT_CAP_MS,
    SHELL_RING_CHARS,
};
use pyro_protocol::{ErrorInfo, Response};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Held-back output that might be the start of a secret is released after this much quiet:
/// a prompt ending in a secret's first letters must not hang forever.
const REDACT_HOLD: Duration = Duration::from_millis(200);
/// How long `Close` waits after HUP before it kills the session.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Every shell of this agent, by id.
#[derive(Clone, Default)]
pub struct Shells(Arc<Mutex<HashMap<String, Arc<Shell>>>>);

struct Shell {
    id: String,
    pid: i32,
    /// Kept for writes, window size and the foreground process group.
    master: OwnedFd,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    ring: VecDeque<char>,
    /// Character offset of `ring[0]` in the whole output.
    ring_start: u64,
    /// Trailing bytes of an incomplete UTF-8 sequence.
    utf8_carry: Vec<u8>,
    /// Decoded text not yet in the ring because it may be the start of a secret.
    held: String,
    redact: Vec<String>,
    last_output: Instant,
    exit_code: Option<i32>,
}

impl State {
    fn end(&self) -> u64 {
        self.ring_start + self.ring.len() as u64
    }

    fn push_text(&mut self, text: &str) {
        self.ring.extend(text.chars());
        let over = self.ring.len().saturating_sub(SHELL_RING_CHARS as usize);
        if over > 0 {
            self.ring.drain(..over);
            self.ring_start += over as u64;
        }
    }

    /// Feed raw PTY bytes: decode, redact, and move what is safe into the ring.
    fn feed(&mut self, bytes: &[u8]) {
        self.last_output = Instant::now();
        let mut data = std::mem::take(&mut self.utf8_carry);
        data.extend_from_slice(bytes);
        let keep = incomplete_utf8_tail(&data);
        self.utf8_carry = data.split_off(data.len() - keep);
        self.held.push_str(&String::from_utf8_lossy(&data));
        let (ready, held) = redact_stream(&self.held, &self.redact);
        self.held = held;
        self.push_text(&ready);
    }

    /// Release held-back text once the shell has been quiet (or is gone).
    fn release_held(&mut self, force: bool) {
        if !self.held.is_empty() && (force || self.last_output.elapsed() >= REDACT_HOLD) {
            let mut held = std::mem::take(&mut self.held);
            if !self.utf8_carry.is_empty() {
                held.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.utf8_carry)));
            }
            self.push_text(&held);
        }
    }
}

/// Bytes at the end of `data` that start a UTF-8 sequence still missing bytes.
fn incomplete_utf8_tail(data: &[u8]) -> usize {
    for back in 1..=3.min(data.len()) {
        let b = data[data.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Replace every secret in `text`; split off a tail that could still grow into one.
/// Returns (text safe to publish, text to hold back).
pub fn redact_stream(text: &str, secrets: &[String]) -> (String, String) {
    if secrets.is_empty() {
        return (text.to_string(), String::new());
    }
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    // The longest suffix of `out` that is a proper prefix of some secret.
    let mut hold_from = out.len();
    for s in secrets {
        let max = (s.len().saturating_sub(1)).min(out.len());
        for len in (1..=max).rev() {
            let start = out.len() - len;
            if start < hold_from && out.is_char_boundary(start) && s.starts_with(&out[start..]) {
                hold_from = start;
                break;
            }
        }
    }
    let held = out.split_off(hold_from);
    (out, held)
}

fn status_of(shell: &Shell) -> ShellStatus {
    let st = shell.state.lock().unwrap();
    ShellStatus { shell_id: shell.id.clone(), running: st.exit_code.is_none(), exit_code: st.exit_code }
}

fn err(kind: &str, msg: String) -> ErrorInfo {
    ErrorInfo { kind: kind.into(), message: msg }
}

impl Shells {
    fn get(&self, id: &str) -> Result<Arc<Shell>, ErrorInfo> {
        self.0.lock().unwrap().get(id).cloned().ok_or_else(|| err("not_found", format!("unknown shell '{id}'")))
    }

    pub async fn handle(&self, req: ShellRequest) -> Response {
        let result = match req {
            ShellRequest::Open { shell_id, cwd, cols, rows, env, redact } => {
                self.open(shell_id, &cwd, cols, rows, env, redact).await
            }
            ShellRequest::Read { shell_id, cursor, max_chars, wait_for_idle_ms } => {
                self.read(&shell_id, cursor, max_chars, wait_for_idle_ms).await
            }
            ShellRequest::Write { shell_id, input } => self.write(&shell_id, input).await,
            ShellRequest::Signal { shell_id, signal } => self.signal(&shell_id, signal),
            ShellRequest::Close { shell_id } => self.close(&shell_id).await,
            ShellRequest::CloseAll => {
                let ids: Vec<String> = self.0.lock().unwrap().keys().cloned().collect();
                for id in &ids {
                    let _ = self.close(id).await;
                }
                Ok(ShellResponse::Closed { shell_ids: ids })
            }
        };
        match result {
            Ok(r) => Response::Shell(r),
            Err(e) => Response::Error(e),
        }
    }

    async fn open(
        &self,
        id: String,
        cwd: &str,
        cols: u16,
        rows: u16,
        env: std::collections::BTreeMap<String, String>,
        mut redact: Vec<String>,
    ) -> Result<ShellResponse, ErrorInfo> {
        if self.0.lock().unwrap().contains_key(&id) {
            return Err(err("exists", format!("shell '{id}' already exists")));
        }
        if cols == 0 || rows == 0 {
            return Err(err("bad_request", "cols and rows must be greater than 0".into()));
        }
        if !std::path::Path::new(cwd).is_dir() {
            return Err(err("not_found", format!("shell cwd {cwd} does not exist in the guest")));
        }
        redact.retain(|s| !s.is_empty());
        redact.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let (master, slave) = open_pty(cols, rows).map_err(|e| err("io", format!("cannot open a PTY: {e}")))?;
        let shell_path = if std::path::Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
        let mut cmd = std::process::Command::new(shell_path);
        if shell_path.ends_with("bash") {
            cmd.args(["--noprofile", "--norc", "-i"]);
        } else {
            cmd.arg("-i");
        }
        cmd.current_dir(cwd).env_clear();
        for (k, v) in BASE_ENV {
            cmd.env(k, v);
        }
        // History stays in tmpfs with the rest of the shell's runtime state, never on the disk.
        cmd.env("PS1", "pyro$ ").env("PROMPT_COMMAND", "").env("HISTFILE", format!("{SHELLS_DIR}/{id}.history"));
        cmd.envs(&env);
        let stdio = |fd: &OwnedFd| fd.try_clone().map(std::process::Stdio::from);
        let io_err = |e: std::io::Error| err("io", format!("cannot set up the PTY: {e}"));
        cmd.stdin(stdio(&slave).map_err(io_err)?)
            .stdout(stdio(&slave).map_err(io_err)?)
            .stderr(stdio(&slave).map_err(io_err)?);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| err("spawn_failed", format!("cannot start {shell_path}: {e}")))?;
        drop(slave);
        let pid = child.id() as i32;
        let reader = master.try_clone().map_err(io_err)?;
        let shell = Arc::new(Shell {
            id: id.clone(),
            pid,
            master,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                ring_start: 0,
                utf8_carry: Vec::new(),
                held: String::new(),
                redact,
                last_output: Instant::now(),
                exit_code: None,
            }),
            changed: Notify::new(),
        });
        self.0.lock().unwrap().insert(id.clone(), shell.clone());
        let _ = std::fs::create_dir_all(SHELLS_DIR);
        let meta = format!("{{\"shell_id\":\"{id}\",\"pid\":{pid},\"cols\":{cols},\"rows\":{rows}}}\n");
        let _ = std::fs::write(format!("{SHELLS_DIR}/{id}.json"), meta);

        let for_reader = shell.clone();
        std::thread::Builder::new()
            .name(format!("shell-{id}"))
            .spawn(move || {
                let mut file = std::fs::File::from(reader);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match file.read(&mut buf) {
                        // EIO: every holder of the slave side is gone.
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            for_reader.state.lock().unwrap().feed(&buf[..n]);
                            for_reader.changed.notify_waiters();
                        }
                    }
                }
            })
            .map_err(|e| err("io", format!("cannot start the shell reader: {e}")))?;
        let for_waiter = shell.clone();
        std::thread::Builder::new()
            .name(format!("shell-wait-{id}"))
            .spawn(move || {
                let code = match child.wait() {
                    Ok(status) => {
                        use std::os::unix::process::ExitStatusExt;
                        status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
                    }
                    Err(_) => -1,
                };
                // Let the reader take the last output before the shell counts as ended.
                std::thread::sleep(Duration::from_millis(50));
                let mut st = for_waiter.state.lock().unwrap();
                st.release_held(true);
                st.exit_code = Some(code);
                drop(st);
                for_waiter.changed.notify_waiters();
            })
            .map_err(|e| err("io", format!("cannot start the shell waiter: {e}")))?;
        Ok(ShellResponse::Status(status_of(&shell)))
    }

    async fn read(
        &self,
        id: &str,
        cursor: u64,
        max_chars: u64,
        wait_for_idle_ms: Option<u64>,
    ) -> Result<ShellResponse, ErrorInfo> {
        if max_chars == 0 {
            return Err(err("bad_request", "max_chars must be greater than 0".into()));
        }
        let shell = self.get(id)?;
        if let Some(idle_ms) = wait_for_idle_ms {
            let idle = Duration::from_millis(idle_ms);
            let began = Instant::now();
            let cap = began + Duration::from_millis(SHELL_IDLE_WAIT_CAP_MS);
            loop {
                // Register interest before looking, so no notification slips between.
                let notified = shell.changed.notified();
                let wait_for = {
                    let mut st = shell.state.lock().unwrap();
                    st.release_held(false);
                    let quiet_since = st.last_output.max(began);
                    let available = st.end().saturating_sub(cursor.max(st.ring_start));
                    if st.exit_code.is_some() || available >= max_chars || Instant::now() >= cap {
                        None
                    } else {
                        let quiet = quiet_since.elapsed();
                        if quiet >= idle {
                            None
                        } else {
                            Some((idle - quiet).min(cap.saturating_duration_since(Instant::now())))
                        }
                    }
                };
                match wait_for {
                    None => break,
                    Some(d) => {
                        let _ = tokio::time::timeout(d.max(Duration::from_millis(1)), notified).await;
                    }
                }
            }
        }
        let mut st = shell.state.lock().unwrap();
        let ended = st.exit_code.is_some();
        st.release_held(ended);
        let start = cursor.max(st.ring_start).min(st.end());
        let dropped_chars = st.ring_start.saturating_sub(cursor);
        let from = (start - st.ring_start) as usize;
        let take = (max_chars as usize).min(st.ring.len() - from);
        let output: String = st.ring.range(from..from + take).collect();
        let next_cursor = start + take as u64;
        let truncated = next_cursor < st.end();
        let status = ShellStatus { shell_id: id.to_string(), running: st.exit_code.is_none(), exit_code: st.exit_code };
        Ok(ShellResponse::Output(ShellOutput { status, cursor: start, next_cursor, output, truncated, dropped_chars }))
    }

    async fn write(&self, id: &str, input: String) -> Result<ShellResponse, ErrorInfo> {
        let shell = self.get(id)?;
        if shell.state.lock().unwrap().exit_code.is_some() {
            return Err(err("invalid_state", format!("shell '{id}' has exited; open a new one")));
        }
        let fd = shell.master.try_clone().map_err(|e| err("io", format!("writing to shell '{id}': {e}")))?;
        let written = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::from(fd);
            f.write_all(input.as_bytes())
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(ShellResponse::Status(status_of(&shell))),
            Ok(Err(e)) => Err(err("io", format!("writing to shell '{id}': {e}"))),
            Err(e) => Err(err("io", format!("writing to shell '{id}': {e}"))),
        }
    }

    fn signal(&self, id: &str, signal: i32) -> Result<ShellResponse, ErrorInfo> {
        let shell = self.get(id)?;
        if ![libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGKILL].contains(&signal) {
            return Err(err("bad_request", format!("signal {signal} is not one of HUP, INT, TERM, KILL")));
        }
        if shell.state.lock().unwrap().exit_code.is_some() {
            return Err(err("invalid_state", format!("shell '{id}' has exited")));
        }
        // The foreground job (e.g. `sleep 100` typed at the prompt) is its own process group
        // under an interactive bash; signal it, not only the shell.
        // SAFETY: tcgetpgrp on a PTY master we own; kill(2) of groups of our session.
        unsafe {
            let fg = libc::tcgetpgrp(shell.master.as_raw_fd());
            if fg > 1 {
                libc::kill(-fg, signal);
            }
            if fg != shell.pid {
                libc::kill(-shell.pid, signal);
            }
        }
        Ok(ShellResponse::Status(status_of(&shell)))
    }

    async fn close(&self, id: &str) -> Result<ShellResponse, ErrorInfo> {
        let shell = self.get(id)?;
        let running = shell.state.lock().unwrap().exit_code.is_none();
        if running {
            // SAFETY: signals to the session we created.
            unsafe {
                let fg = libc::tcgetpgrp(shell.master.as_raw_fd());
                if fg > 1 {
                    libc::kill(-fg, libc::SIGHUP);
                }
                libc::kill(-shell.pid, libc::SIGHUP);
            }
            let deadline = Instant::now() + CLOSE_GRACE;
            while shell.state.lock().unwrap().exit_code.is_none() && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(50), shell.changed.notified()).await;
            }
            if shell.state.lock().unwrap().exit_code.is_none() {
                // SAFETY: kill(2) takes plain integers and touches no memory; the group is the
                // shell's session, which this agent created and still tracks.
                unsafe {
                    libc::kill(-shell.pid, libc::SIGKILL);
                }
            }
        }
        self.0.lock().unwrap().remove(id);
        let _ = std::fs::remove_file(format!("{SHELLS_DIR}/{id}.json"));
        Ok(ShellResponse::Closed { shell_ids: vec![id.to_string()] })
    }
}

fn open_pty(cols: u16, rows: u16) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds we then own.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: set close-on-exec on fds we own, so other children never inherit them.
        unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_holds_back_a_possible_secret_prefix() {
        let secrets = vec!["hunter2".to_string()];
        let (ready, held) = redact_stream("pass: hun", &secrets);
        assert_eq!(ready, "pass: ");
        assert_eq!(held, "hun");
        let (ready, held) = redact_stream(&format!("{held}ter2 ok"), &secrets);
        assert_eq!(ready, "[REDACTED] ok");
        assert_eq!(held, "");
    }

    #[test]
    fn split_secret_never_reaches_the_ring() {
        let mut st = State {
            ring: VecDeque::new(),
            ring_start: 0,
            utf8_carry: Vec::new(),
            held: String::new(),
            redact: vec!["s3cr3t-välue".into()],
            last_output: Instant::now(),
            exit_code: None,
        };
        let whole = "x s3cr3t-välue y".as_bytes();
        // Feed byte by byte, splitting the multibyte character too.
        for b in whole {
            st.feed(std::slice::from_ref(b));
        }
        st.release_held(true);
        let text: String = st.ring.iter().collect();
        assert_eq!(text, "x [REDACTED] y");
    }

    #[test]
    fn ring_drops_oldest_and_counts_it() {
        let mut st = State {
            ring: VecDeque::new(),
            ring_start: 0,
            utf8_carry: Vec::new(),
            held: String::new(),
            redact: vec![],
            last_output: Instant::now(),
            exit_code: None,
        };
        let big = "a".repeat(SHELL_RING_CHARS as usize + 10);
        st.feed(big.as_bytes());
        assert_eq!(st.ring_start, 10);
        assert_eq!(st.end(), SHELL_RING_CHARS + 10);
    }

    #[test]
    fn utf8_tail_detection() {
        assert_eq!(incomplete_utf8_tail("ä".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"ä".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shell_keeps_state_and_interrupts() {
        let shells = Shells::default();
        let Response::Shell(_) = shells
            .handle(ShellRequest::Open {
                shell_id: "t1".into(),
                cwd: "/".into(),
                cols: 80,
                rows: 24,
                env: Default::default(),
                redact: vec!["topsecret".into()],
            })
            .await
        else {
            panic!("open failed")
        };
        let w = |s: &str| ShellRequest::Write { shell_id: "t1".into(), input: s.into() };
        shells.handle(w("cd /tmp; export X=41; echo topsecret\n")).await;
        shells.handle(w("pwd; echo val=$((X+1))\n")).await;
        let read = shells
            .handle(ShellRequest::Read {
                shell_id: "t1".into(),
                cursor: 0,
                max_chars: 65536,
                wait_for_idle_ms: Some(300),
            })
            .await;
        let Response::Shell(ShellResponse::Output(out)) = read else { panic!("{read:?}") };
        assert!(out.output.contains("/tmp"), "{}", out.output);
        assert!(out.output.contains("val=42"), "{}", out.output);
        assert!(!out.output.contains("topsecret"), "{}", out.output);
        assert!(out.output.contains("[REDACTED]"), "{}", out.output);
        shells.handle(w("sleep 100\n")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        shells.handle(ShellRequest::Signal { shell_id: "t1".into(), signal: libc::SIGINT }).await;
        shells.handle(w("echo after-int\n")).await;
        let read = shells
            .handle(ShellRequest::Read {
                shell_id: "t1".into(),
                cursor: out.next_cursor,
                max_chars: 65536,
                wait_for_idle_ms: Some(300),
            })
            .await;
        let Response::Shell(ShellResponse::Output(out2)) = read else { panic!() };
        assert!(out2.output.contains("after-int"), "{}", out2.output);
        assert!(began.elapsed() < Duration::from_secs(5));
        let closed = shells.handle(ShellRequest::Close { shell_id: "t1".into() }).await;
        assert!(matches!(closed, Response::Shell(ShellResponse::Closed { .. })));
        assert!(matches!(
            shells.handle(ShellRequest::Write { shell_id: "t1".into(), input: "x".into() }).await,
            Response::Error(_)
        ));
    }
}
