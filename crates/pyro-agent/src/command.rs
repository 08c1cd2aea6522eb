//! Background commands (`pyro workspace exec --background`): each runs under a runner process
//! (`pyro-agent command-run`) that puts the command in a process group of its own, writes
//! both output streams into one bounded, framed log and records how the command ended. State
//! and logs are files under the commands directory (tmpfs `/run/pyro-commands` in a guest),
//! so a command outlives the request that started it, the host connection and an agent
//! restart, and never reaches the workspace disk.
//!
//! Files per command `ID`: `ID.state` (the [`CommandState`], MessagePack, written by the
//! agent), `ID.pgid` (the command's process group, written by the runner), `ID.status`
//! (`CODE REASON`, written by the runner when the command ended), `ID.killed` (a kill was
//! asked), `ID.log.N` (log generations; `N` is the output position the generation starts at).
//!
//! The log is a sequence of frames: 1 byte stream (1 stdout, 2 stderr), 4 bytes big-endian
//! length, the bytes. A generation is closed once it holds
//! [`COMMAND_LOG_GENERATION_BYTES`]; the runner keeps it and the current one.

use crate::exec::BASE_ENV;
use crate::service::{process_alive, record_codec};
use pyro_protocol::command::{
    valid_command_id, CommandOutput, CommandRequest, CommandResponse, CommandState, CommandStatus,
    COMMAND_LOG_GENERATION_BYTES, MAX_COMMAND_READ_BYTES, MAX_COMMAND_WAIT_MS, MAX_ENDED_COMMANDS,
    MAX_RUNNING_COMMANDS,
};
use pyro_protocol::Response;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest chunk in one log frame.
const FRAME_DATA_MAX: usize = 64 * 1024;
const FRAME_HEADER: usize = 5;
/// After the command's shell exits, how long the runner keeps draining pipes that a
/// background child may still hold before it records the exit anyway.
const RUNNER_DRAIN: Duration = Duration::from_millis(300);
/// Time between TERM and KILL when the runner's timeout ends a command.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn err(kind: &str, msg: impl Into<String>) -> Response {
    Response::error(kind, msg)
}

/// The background commands of one agent, kept as files in `dir`.
#[derive(Clone)]
pub struct Commands {
    dir: PathBuf,
}

impl Commands {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Commands { dir: dir.into() }
    }

    fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    fn load(&self, id: &str) -> Option<CommandState> {
        if !valid_command_id(id) {
            return None;
        }
        record_codec::from_slice(&std::fs::read(self.file(id, "state")).ok()?)
    }

    fn save(&self, state: &CommandState) {
        let tmp = self.file(&state.command_id, "state.tmp");
        if std::fs::write(&tmp, record_codec::to_vec(state)).is_ok() {
            let _ = std::fs::rename(&tmp, self.file(&state.command_id, "state"));
        }
    }

    /// `(code, reason)` from the runner's status file.
    fn exit_status(&self, id: &str) -> Option<(i32, String, f64)> {
        let path = self.file(id, "status");
        let text = std::fs::read_to_string(&path).ok()?;
        let mut parts = text.split_whitespace();
        let code = parts.next()?.parse().ok()?;
        let reason = parts.next().unwrap_or("exited").to_string();
        let at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(now);
        Some((code, reason, at))
    }

    /// Bring a `running` record up to date with its runner, and its output size.
    fn refresh(&self, mut state: CommandState) -> CommandState {
        if state.state == CommandStatus::Running {
            let killed = self.file(&state.command_id, "killed").exists();
            if let Some((code, reason, at)) = self.exit_status(&state.command_id) {
                state.state = if killed {
                    CommandStatus::Killed
                } else if reason == "timed_out" {
                    CommandStatus::TimedOut
                } else {
                    CommandStatus::Exited
                };
                state.exit_code = Some(code);
                state.ended_at = Some(at);
                self.save(&state);
            } else if !state.pid.is_some_and(process_alive) {
                // The runner itself was killed: nothing recorded how the command ended.
                state.state = CommandStatus::Killed;
                state.exit_code = Some(128 + libc::SIGKILL);
                state.ended_at = Some(now());
                self.save(&state);
            }
        }
        state.output_bytes = scan(&self.dir, &state.command_id, true).map(|s| s.end).unwrap_or(0);
        state
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".state")).map(String::from))
                    .filter(|n| valid_command_id(n))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn all(&self) -> Vec<CommandState> {
        self.ids().iter().filter_map(|id| self.load(id)).map(|s| self.refresh(s)).collect()
    }

    fn remove_artifacts(&self, id: &str) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            let prefix = format!("{id}.");
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    pub async fn handle(&self, req: CommandRequest) -> Response {
        let _ = std::fs::create_dir_all(&self.dir);
        let unknown = |id: &str| err("not_found", format!("unknown background command '{id}'"));
        match req {
            CommandRequest::Start { command_id, command, cwd, env, timeout_ms } => {
                self.start(&command_id, &command, &cwd, env, timeout_ms).await
            }
            CommandRequest::Status { command_id } => match self.load(&command_id) {
                Some(s) => Response::Command(CommandResponse::State(self.refresh(s))),
                None => unknown(&command_id),
            },
            CommandRequest::Read { command_id, cursor, max_bytes } => match self.load(&command_id) {
                Some(s) => {
                    let state = self.refresh(s);
                    let dir = self.dir.clone();
                    let max = max_bytes.min(MAX_COMMAND_READ_BYTES);
                    let read = tokio::task::spawn_blocking(move || read_output(&dir, &command_id, cursor, max)).await;
                    match read {
                        Ok(Ok((cursor, stdout, stderr, dropped_bytes))) => {
                            let next_cursor = cursor + (stdout.len() + stderr.len()) as u64;
                            Response::Command(CommandResponse::Output(CommandOutput {
                                state,
                                cursor,
                                next_cursor,
                                stdout,
                                stderr,
                                dropped_bytes,
                            }))
                        }
                        Ok(Err((kind, msg))) => err(kind, msg),
                        Err(e) => err("io", format!("reading the output: {e}")),
                    }
                }
                None => unknown(&command_id),
            },
            CommandRequest::Wait { command_id, timeout_ms } => {
                let Some(mut state) = self.load(&command_id) else { return unknown(&command_id) };
                let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(MAX_COMMAND_WAIT_MS));
                loop {
                    state = self.refresh(state);
                    if state.state != CommandStatus::Running || Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Response::Command(CommandResponse::State(state))
            }
            CommandRequest::Kill { command_id, grace_ms } => match self.load(&command_id) {
                Some(s) => {
                    let s = self.refresh(s);
                    Response::Command(CommandResponse::State(self.kill(s, Duration::from_millis(grace_ms)).await))
                }
                None => unknown(&command_id),
            },
            CommandRequest::KillAll { grace_ms } => {
                let grace = Duration::from_millis(grace_ms);
                let kills = self.all().into_iter().map(|s| self.kill(s, grace)).collect::<Vec<_>>();
                let commands = futures::future::join_all(kills).await;
                Response::Command(CommandResponse::List { commands })
            }
            CommandRequest::List => Response::Command(CommandResponse::List { commands: self.all() }),
        }
    }

    async fn start(
        &self,
        id: &str,
        command: &str,
        cwd: &str,
        env: std::collections::BTreeMap<String, String>,
        timeout_ms: u64,
    ) -> Response {
        if !valid_command_id(id) {
            return err("bad_request", format!("invalid command id {id:?}"));
        }
        if timeout_ms == 0 {
            return err("bad_request", "timeout_ms must be at least 1");
        }
        if self.load(id).is_some() {
            return err("exists", format!("background command '{id}' already exists"));
        }
        let all = self.all();
        let running = all.iter().filter(|s| s.state == CommandStatus::Running).count();
        if running >= MAX_RUNNING_COMMANDS {
            return err(
                "invalid_state",
                format!(
                    "{running} background commands are running, the most one workspace runs at once ({MAX_RUNNING_COMMANDS}); wait for one or kill one first"
                ),
            );
        }
        // Forget the oldest ended commands: the guest keeps a bounded number.
        let mut ended: Vec<&CommandState> = all.iter().filter(|s| s.state != CommandStatus::Running).collect();
        ended.sort_by(|a, b| a.ended_at.unwrap_or(0.0).total_cmp(&b.ended_at.unwrap_or(0.0)));
        let excess = (ended.len() + 1).saturating_sub(MAX_ENDED_COMMANDS);
        for s in ended.into_iter().take(excess) {
            self.remove_artifacts(&s.command_id);
        }
        if !Path::new(cwd).is_dir() {
            return err("not_found", format!("cwd {cwd} does not exist in the guest"));
        }
        self.remove_artifacts(id);
        let runner = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return err("spawn_failed", format!("cannot find the agent binary to run the command: {e}")),
        };
        let mut cmd = tokio::process::Command::new(runner);
        cmd.arg("command-run").arg(&self.dir).arg(id).arg(cwd).arg(timeout_ms.to_string()).arg(command);
        cmd.env_clear();
        for (k, v) in BASE_ENV {
            cmd.env(k, v);
        }
        cmd.envs(&env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return err("spawn_failed", format!("cannot start the command: {e}")),
        };
        let pid = child.id().map(|p| p as i32);
        // Reap the runner whenever it ends; how the command ended is in the status file.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let state = CommandState {
            command_id: id.to_string(),
            state: CommandStatus::Running,
            pid,
            exit_code: None,
            started_at: now(),
            ended_at: None,
            output_bytes: 0,
        };
        self.save(&state);
        Response::Command(CommandResponse::State(state))
    }

    /// TERM to the command's process group, KILL after `grace`; the runner records the exit.
    async fn kill(&self, state: CommandState, grace: Duration) -> CommandState {
        if state.state != CommandStatus::Running {
            return state;
        }
        let id = state.command_id.clone();
        let _ = std::fs::write(self.file(&id, "killed"), b"");
        let pgid = std::fs::read_to_string(self.file(&id, "pgid")).ok().and_then(|t| t.trim().parse::<i32>().ok());
        match pgid {
            Some(pgid) if pgid > 1 => {
                pyro_sys::signal_process_group(pgid, libc::SIGTERM);
                if !wait_group_gone(pgid, grace).await {
                    pyro_sys::signal_process_group(pgid, libc::SIGKILL);
                    wait_group_gone(pgid, Duration::from_secs(5)).await;
                }
            }
            // The runner has not started the command yet: end the runner's group.
            _ => {
                if let Some(pid) = state.pid.filter(|p| *p > 1) {
                    pyro_sys::signal_process_group(pid, libc::SIGKILL);
                }
            }
        }
        // The runner records the exit once the command's pipes are drained.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.exit_status(&id).is_none() && state.pid.is_some_and(process_alive) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut state = self.refresh(state);
        if state.state == CommandStatus::Running {
            state.state = CommandStatus::Killed;
            state.exit_code = Some(128 + libc::SIGKILL);
            state.ended_at = Some(now());
            self.save(&state);
        }
        state
    }
}

/// Any process of group `pgid` left (zombies count as gone).
fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())).any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else { return false };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // state ppid pgrp ...
            fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2].parse::<i32>().ok() == Some(pgid)
        })
    })
}

async fn wait_group_gone(pgid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The log of one command as read: where its kept output starts and ends, and its chunks.
struct Scan {
    first: u64,
    end: u64,
    /// (output position, stream, bytes)
    chunks: Vec<(u64, u8, Vec<u8>)>,
}

/// The generations of `id`'s log, oldest first, by the output position each starts at.
fn generations(dir: &Path, id: &str) -> Vec<u64> {
    let prefix = format!("{id}.log.");
    let mut gens: Vec<u64> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)?.parse::<u64>().ok()))
                .collect()
        })
        .unwrap_or_default();
    gens.sort_unstable();
    gens
}

/// Read the kept log (only the newest generation with `last_only`). A generation the runner
/// rotates away while it is read is read again from the new list.
fn scan(dir: &Path, id: &str, last_only: bool) -> std::io::Result<Scan> {
    let mut tries = 0;
    'again: loop {
        tries += 1;
        let mut gens = generations(dir, id);
        if last_only && gens.len() > 1 {
            gens.drain(..gens.len() - 1);
        }
        let Some(&first) = gens.first() else { return Ok(Scan { first: 0, end: 0, chunks: Vec::new() }) };
        let mut chunks = Vec::new();
        let mut end = first;
        for start in gens {
            let bytes = match std::fs::read(dir.join(format!("{id}.log.{start}"))) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => continue 'again,
                Err(e) => return Err(e),
            };
            let mut pos = start;
            let mut at = 0;
            // A frame the runner is still writing is left for the next read.
            while at + FRAME_HEADER <= bytes.len() {
                let stream = bytes[at];
                let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
                if at + FRAME_HEADER + len > bytes.len() {
                    break;
                }
                if !last_only {
                    chunks.push((pos, stream, bytes[at + FRAME_HEADER..at + FRAME_HEADER + len].to_vec()));
                }
                pos += len as u64;
                at += FRAME_HEADER + len;
            }
            end = pos;
        }
        return Ok(Scan { first, end, chunks });
    }
}

type ReadResult = (u64, Vec<u8>, Vec<u8>, u64);

/// Output from `cursor`: `(cursor moved past dropped output, stdout, stderr, dropped)`.
fn read_output(dir: &Path, id: &str, cursor: u64, max: u64) -> Result<ReadResult, (&'static str, String)> {
    let scan = scan(dir, id, false).map_err(|e| ("io", format!("reading the output of '{id}': {e}")))?;
    if cursor > scan.end {
        return Err((
            "bad_request",
            format!("cursor {cursor} is past the end of the output of '{id}' ({} bytes so far)", scan.end),
        ));
    }
    let (start, dropped) = if cursor < scan.first { (scan.first, scan.first - cursor) } else { (cursor, 0) };
    let (mut out, mut errs) = (Vec::new(), Vec::new());
    let mut budget = max as usize;
    for (pos, stream, data) in &scan.chunks {
        let chunk_end = pos + data.len() as u64;
        if chunk_end <= start || budget == 0 {
            continue;
        }
        let from = start.saturating_sub(*pos) as usize;
        let take = (data.len() - from).min(budget);
        let slice = &data[from..from + take];
        if *stream == 2 {
            errs.extend_from_slice(slice)
        } else {
            out.extend_from_slice(slice)
        }
        budget -= take;
    }
    Ok((start, out, errs, dropped))
}

// ---------------------------------------------------------------------------------------
// The runner process.
// ---------------------------------------------------------------------------------------

/// The framed, two-generation log the runner writes.
struct FrameLog {
    dir: PathBuf,
    id: String,
    gen_start: u64,
    prev_start: Option<u64>,
    gen_bytes: u64,
    total: u64,
    file: Option<std::fs::File>,
}

impl FrameLog {
    fn new(dir: PathBuf, id: &str) -> Self {
        let file = std::fs::File::create(dir.join(format!("{id}.log.0"))).ok();
        FrameLog { dir, id: id.to_string(), gen_start: 0, prev_start: None, gen_bytes: 0, total: 0, file }
    }

    fn write(&mut self, stream: u8, data: &[u8]) {
        for chunk in data.chunks(FRAME_DATA_MAX) {
            if self.gen_bytes >= COMMAND_LOG_GENERATION_BYTES {
                // Create the new generation first, so a reader never finds none.
                self.file = std::fs::File::create(self.dir.join(format!("{}.log.{}", self.id, self.total))).ok();
                if let Some(old) = self.prev_start.replace(self.gen_start) {
                    let _ = std::fs::remove_file(self.dir.join(format!("{}.log.{old}", self.id)));
                }
                self.gen_start = self.total;
                self.gen_bytes = 0;
            }
            let mut frame = Vec::with_capacity(FRAME_HEADER + chunk.len());
            frame.push(stream);
            frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            frame.extend_from_slice(chunk);
            if let Some(f) = self.file.as_mut() {
                let _ = f.write_all(&frame);
            }
            self.gen_bytes += frame.len() as u64;
            self.total += chunk.len() as u64;
        }
    }
}

/// `pyro-agent command-run DIR ID CWD TIMEOUT_MS COMMAND`: run `sh -lc COMMAND` in `CWD` in a
/// process group of its own, log its output, end it at the timeout and write how it ended.
/// The runner ignores TERM/INT/HUP, so it outlives a kill of the command to record it.
pub fn run_command(dir: &str, id: &str, cwd: &str, timeout_ms: &str, command: &str) -> i32 {
    let dir = PathBuf::from(dir);
    let timeout = Duration::from_millis(timeout_ms.parse().unwrap_or(1));
    // SAFETY: setting signal dispositions in a single-threaded process.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-lc").arg(command).current_dir(cwd).process_group(0);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec: the command gets default
    // signal handling back (ignored dispositions would otherwise be inherited).
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let status_path = dir.join(format!("{id}.status"));
    let write_status = |code: i32, reason: &str| {
        let tmp = dir.join(format!("{id}.status.tmp"));
        if std::fs::write(&tmp, format!("{code} {reason}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, &status_path);
        }
    };
    let log = Arc::new(Mutex::new(FrameLog::new(dir.clone(), id)));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log.lock().unwrap().write(2, format!("cannot start /bin/sh: {e}\n").as_bytes());
            write_status(127, "exited");
            return 1;
        }
    };
    let pgid = child.id() as i32;
    let _ = std::fs::write(dir.join(format!("{id}.pgid")), format!("{pgid}\n"));
    let copiers: Vec<_> = [
        (Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>, 1u8),
        (Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>, 2u8),
    ]
    .into_iter()
    .map(|(mut src, stream)| {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; FRAME_DATA_MAX];
            loop {
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => log.lock().unwrap().write(stream, &buf[..n]),
                }
            }
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if !timed_out && Instant::now() >= deadline {
            timed_out = true;
            pyro_sys::signal_process_group(pgid, libc::SIGTERM);
            let grace_end = Instant::now() + TIMEOUT_GRACE;
            while Instant::now() < grace_end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            pyro_sys::signal_process_group(pgid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let drain_end = Instant::now() + RUNNER_DRAIN;
    for c in copiers {
        while !c.is_finished() && Instant::now() < drain_end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if timed_out {
        let notice = format!("command timed out after {}s\n", timeout.as_secs());
        log.lock().unwrap().write(2, notice.as_bytes());
        write_status(124, "timed_out");
    } else {
        let code = match status {
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
            }
            None => -1,
        };
        write_status(code, "exited");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotates_and_reads_by_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = FrameLog::new(dir.path().to_path_buf(), "c");
        log.write(1, b"hello ");
        log.write(2, b"oops ");
        log.write(1, b"world");
        let (cur, out, errs, dropped) = read_output(dir.path(), "c", 0, 100).unwrap();
        assert_eq!((cur, &out[..], &errs[..], dropped), (0, &b"hello world"[..], &b"oops "[..], 0));
        let (cur, out, errs, _) = read_output(dir.path(), "c", 3, 5).unwrap();
        assert_eq!((cur, &out[..], &errs[..]), (3, &b"lo "[..], &b"oo"[..]));
        assert!(read_output(dir.path(), "c", 17, 5).is_err());
        assert!(read_output(dir.path(), "c", 16, 5).unwrap().1.is_empty());
        // Fill past two generations: the oldest is dropped and a cursor 0 moves forward.
        let chunk = vec![b'x'; FRAME_DATA_MAX];
        for _ in 0..(3 * COMMAND_LOG_GENERATION_BYTES as usize / FRAME_DATA_MAX) {
            log.write(1, &chunk);
        }
        assert_eq!(generations(dir.path(), "c").len(), 2);
        let (cur, _, _, dropped) = read_output(dir.path(), "c", 0, 10).unwrap();
        assert!(cur > 0 && dropped == cur, "{cur} {dropped}");
        assert_eq!(scan(dir.path(), "c", true).unwrap().end, log.total);
    }
}
