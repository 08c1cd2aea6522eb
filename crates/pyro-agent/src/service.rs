//! Background services: each runs under a small runner process (`pyro-agent service-run`)
//! that leads the service's process group, writes bounded logs and records the exit code.
//! State lives in files under the services directory (tmpfs `/run/pyro-services` in a guest),
//! so it survives an agent restart and never reaches the workspace disk.
//!
//! Files per service `NAME`: `NAME.state` (the [`ServiceState`], MessagePack), `NAME.stdout[.1]`,
//! `NAME.stderr[.1]` (current and previous log generation), `NAME.status` (exit code,
//! written by the runner), `NAME.dropped` (older log generations were discarded).

use crate::exec::BASE_ENV;
use pyro_protocol::session::{
    ReadinessProbe, ServiceLogs, ServiceRequest, ServiceResponse, ServiceState, ServiceStatus,
    SERVICE_LOG_GENERATION_BYTES,
};
use pyro_protocol::Response;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TCP_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the service process exits, how long the runner keeps draining pipes that a
/// background child may still hold before it records the exit anyway.
const RUNNER_DRAIN: Duration = Duration::from_millis(300);

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn err(kind: &str, msg: impl Into<String>) -> Response {
    Response::error(kind, msg)
}

/// The services of one agent, kept as files in `dir`.
#[derive(Clone)]
pub struct Services {
    dir: PathBuf,
}

impl Services {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Services { dir: dir.into() }
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    fn load(&self, name: &str) -> Option<ServiceState> {
        let text = std::fs::read(self.file(name, "state")).ok()?;
        record_codec::from_slice(&text)
    }

    fn save(&self, state: &ServiceState) {
        let tmp = self.file(&state.name, "state.tmp");
        if std::fs::write(&tmp, record_codec::to_vec(state)).is_ok() {
            let _ = std::fs::rename(&tmp, self.file(&state.name, "state"));
        }
    }

    fn exit_status(&self, name: &str) -> Option<(i32, f64)> {
        let path = self.file(name, "status");
        let text = std::fs::read_to_string(&path).ok()?;
        let code = text.trim().parse().ok()?;
        let at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(now);
        Some((code, at))
    }

    /// Bring a `running` record up to date with the process it names.
    fn refresh(&self, mut state: ServiceState) -> ServiceState {
        if state.state != ServiceStatus::Running {
            return state;
        }
        if let Some((code, at)) = self.exit_status(&state.name) {
            state.state = ServiceStatus::Exited;
            state.exit_code = Some(code);
            state.ended_at = Some(at);
            self.save(&state);
        } else if !state.pid.is_some_and(process_alive) {
            state.state = ServiceStatus::Exited;
            state.ended_at = Some(now());
            self.save(&state);
        }
        state
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".state")).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn remove_artifacts(&self, name: &str) {
        for ext in ["state", "stdout", "stdout.1", "stderr", "stderr.1", "status", "dropped"] {
            let _ = std::fs::remove_file(self.file(name, ext));
        }
    }

    pub async fn handle(&self, req: ServiceRequest) -> Response {
        let _ = std::fs::create_dir_all(&self.dir);
        match req {
            ServiceRequest::Start { name, command, cwd, env, readiness, ready_timeout_ms, ready_interval_ms } => {
                self.start(&name, &command, &cwd, env, readiness, ready_timeout_ms, ready_interval_ms).await
            }
            ServiceRequest::Status { name } => match self.load(&name) {
                Some(s) => Response::Service(ServiceResponse::State(self.refresh(s))),
                None => err("not_found", format!("unknown service '{name}'")),
            },
            ServiceRequest::List => {
                let services = self.names().iter().filter_map(|n| self.load(n)).map(|s| self.refresh(s)).collect();
                Response::Service(ServiceResponse::List { services })
            }
            ServiceRequest::Logs { name, tail_lines } => match self.load(&name) {
                Some(s) => {
                    let state = self.refresh(s);
                    let (stdout, cut_out) = self.read_log(&name, "stdout", tail_lines);
                    let (stderr, cut_err) = self.read_log(&name, "stderr", tail_lines);
                    let dropped = self.file(&name, "dropped").exists();
                    Response::Service(ServiceResponse::Logs(ServiceLogs {
                        state,
                        stdout,
                        stderr,
                        truncated: cut_out || cut_err || dropped,
                    }))
                }
                None => err("not_found", format!("unknown service '{name}'")),
            },
            ServiceRequest::Stop { name, grace_ms } => match self.load(&name) {
                Some(s) => {
                    let state = self.stop(self.refresh(s), Duration::from_millis(grace_ms), None).await;
                    Response::Service(ServiceResponse::State(state))
                }
                None => err("not_found", format!("unknown service '{name}'")),
            },
            ServiceRequest::StopAll { grace_ms } => {
                let grace = Duration::from_millis(grace_ms);
                let stops = self
                    .names()
                    .iter()
                    .filter_map(|n| self.load(n))
                    .map(|s| self.stop(self.refresh(s), grace, Some("workspace_stopped")))
                    .collect::<Vec<_>>();
                let services = futures::future::join_all(stops).await;
                Response::Service(ServiceResponse::List { services })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        &self,
        name: &str,
        command: &str,
        cwd: &str,
        env: std::collections::BTreeMap<String, String>,
        readiness: Option<ReadinessProbe>,
        ready_timeout_ms: u64,
        ready_interval_ms: u64,
    ) -> Response {
        if let Some(existing) = self.load(name) {
            if self.refresh(existing).state == ServiceStatus::Running {
                return err("invalid_state", format!("service '{name}' is already running"));
            }
        }
        if !Path::new(cwd).is_dir() {
            return err("not_found", format!("service cwd {cwd} does not exist in the guest"));
        }
        self.remove_artifacts(name);
        let runner = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => return err("spawn_failed", format!("cannot find the agent binary to run the service: {e}")),
        };
        let mut cmd = tokio::process::Command::new(runner);
        cmd.arg("service-run").arg(&self.dir).arg(name).arg(cwd).arg(command);
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
            Err(e) => return err("spawn_failed", format!("cannot start service '{name}': {e}")),
        };
        let pid = child.id().map(|p| p as i32);
        // Reap the runner whenever it ends; its exit is read from the status file.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let started_at = now();
        let mut state = ServiceState {
            name: name.to_string(),
            command: command.to_string(),
            cwd: cwd.to_string(),
            state: ServiceStatus::Running,
            pid,
            exit_code: None,
            readiness: readiness.clone(),
            started_at,
            ready_at: None,
            ended_at: None,
            stop_reason: None,
            readiness_error: None,
        };
        self.save(&state);
        let Some(probe) = readiness else {
            state.ready_at = Some(started_at);
            self.save(&state);
            return Response::Service(ServiceResponse::State(state));
        };
        let deadline = Instant::now() + Duration::from_millis(ready_timeout_ms);
        let interval = Duration::from_millis(ready_interval_ms.max(1));
        loop {
            state = self.refresh(state);
            if state.state != ServiceStatus::Running {
                state.state = ServiceStatus::Failed;
                state.stop_reason = Some("process_exited_before_ready".into());
                self.save(&state);
                break;
            }
            match probe_once(&probe, cwd, &env).await {
                Ok(()) => {
                    state.ready_at = Some(now());
                    self.save(&state);
                    break;
                }
                Err(why) => state.readiness_error = Some(why),
            }
            if Instant::now() >= deadline {
                let why = state.readiness_error.take();
                state = self.stop(state, Duration::from_secs(5), Some("readiness_timeout")).await;
                state.state = ServiceStatus::Failed;
                state.readiness_error = why;
                self.save(&state);
                break;
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
        Response::Service(ServiceResponse::State(state))
    }

    /// TERM to the group, KILL after `grace`. `reason` overrides sigterm/sigkill.
    async fn stop(&self, mut state: ServiceState, grace: Duration, reason: Option<&str>) -> ServiceState {
        if state.state != ServiceStatus::Running {
            return state;
        }
        let Some(pid) = state.pid else { return state };
        signal_group(pid, libc::SIGTERM);
        let mut how = "sigterm";
        if !wait_gone(pid, grace).await {
            how = "sigkill";
            signal_group(pid, libc::SIGKILL);
            wait_gone(pid, Duration::from_secs(5)).await;
        }
        state.state = ServiceStatus::Stopped;
        state.stop_reason = Some(reason.unwrap_or(how).to_string());
        state.ended_at = Some(now());
        state.exit_code = self.exit_status(&state.name).map(|(c, _)| c).or(Some(128 + libc::SIGKILL));
        self.save(&state);
        state
    }

    fn read_log(&self, name: &str, stream: &str, tail_lines: Option<u64>) -> (Vec<u8>, bool) {
        let mut data = std::fs::read(self.file(name, &format!("{stream}.1"))).unwrap_or_default();
        data.extend(std::fs::read(self.file(name, stream)).unwrap_or_default());
        match tail_lines {
            None => (data, false),
            Some(n) => tail(data, n as usize),
        }
    }
}

/// The last `n` lines of `data` (a final line without a newline counts).
pub fn tail(data: Vec<u8>, n: usize) -> (Vec<u8>, bool) {
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return (data[i + 1..].to_vec(), true);
            }
        }
    }
    if n == 0 && !data.is_empty() {
        return (Vec::new(), true);
    }
    (data, false)
}

/// Alive and not a zombie (a dead runner stays a zombie until its parent reaps it).
pub(crate) fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
            None => false,
        },
        Err(_) => false,
    }
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) of the process group the runner leads.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

async fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe_once(
    probe: &ReadinessProbe,
    cwd: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    match probe {
        ReadinessProbe::File { path } => {
            if Path::new(path).exists() {
                Ok(())
            } else {
                Err(format!("{path} does not exist yet"))
            }
        }
        ReadinessProbe::Tcp { address } => {
            match tokio::time::timeout(TCP_PROBE_TIMEOUT, tokio::net::TcpStream::connect(address.as_str())).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connecting to {address}: {e}")),
                Err(_) => Err(format!("connecting to {address} took over 1 s")),
            }
        }
        ReadinessProbe::Http { url } => match tokio::time::timeout(HTTP_PROBE_TIMEOUT, http_status(url)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("GET {url} answered {code}")),
            Ok(Err(e)) => Err(format!("GET {url}: {e}")),
            Err(_) => Err(format!("GET {url} took over 2 s")),
        },
        ReadinessProbe::Command { command } => {
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-lc").arg(command).current_dir(cwd).env_clear();
            for (k, v) in BASE_ENV {
                cmd.env(k, v);
            }
            cmd.envs(env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|e| format!("cannot run the readiness command: {e}"))?;
            let pgid = child.id().map(|p| p as i32);
            match tokio::time::timeout(COMMAND_PROBE_TIMEOUT, child.wait()).await {
                Ok(Ok(s)) if s.success() => Ok(()),
                Ok(Ok(s)) => Err(format!("readiness command exited with {s}")),
                Ok(Err(e)) => Err(format!("readiness command: {e}")),
                Err(_) => {
                    if let Some(p) = pgid {
                        signal_group(p, libc::SIGKILL);
                    }
                    Err("readiness command took over 10 s".into())
                }
            }
        }
    }
}

/// Split an `http://host[:port]/path` URL. Only what a readiness probe needs.
pub fn split_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("readiness URL {url} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().map_err(|_| format!("bad port in readiness URL {url}"))?)
        }
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        return Err(format!("readiness URL {url} has no host"));
    }
    Ok((host, port, path.to_string()))
}

/// The status code of `GET url` over HTTP/1.0. A readiness probe needs only the status line;
/// an HTTP client crate would add most of its size to the static guest agent.
async fn http_status(url: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port, path) = split_http_url(url)?;
    let mut stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pyro-readiness\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("sending: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("reading: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// The runner process.
// ---------------------------------------------------------------------------------------

/// `pyro-agent service-run DIR NAME CWD COMMAND`: run `sh -lc COMMAND` in `CWD` with this
/// process's environment, append its output to bounded logs and write its exit code.
/// The runner ignores TERM/INT/HUP so that a group-wide TERM ends the service while the
/// runner lives on to record how it ended; only KILL ends the runner itself.
pub fn run_service(dir: &str, name: &str, cwd: &str, command: &str) -> i32 {
    let dir = PathBuf::from(dir);
    // SAFETY: setting signal dispositions in a single-threaded process.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-lc").arg(command).current_dir(cwd);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec: the service gets default
    // signal handling back (ignored dispositions would otherwise be inherited).
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let status_path = dir.join(format!("{name}.status"));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::write(dir.join(format!("{name}.stderr")), format!("cannot start /bin/sh: {e}\n"));
            let _ = std::fs::write(&status_path, "127\n");
            return 1;
        }
    };
    let copiers: Vec<_> = [
        (Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>, "stdout"),
        (Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>, "stderr"),
    ]
    .into_iter()
    .map(|(src, stream)| {
        let log = LogWriter::new(dir.clone(), name, stream);
        std::thread::spawn(move || copy_log(src, log))
    })
    .collect();
    let code = match child.wait() {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => -1,
    };
    let deadline = Instant::now() + RUNNER_DRAIN;
    for c in copiers {
        while !c.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let tmp = dir.join(format!("{name}.status.tmp"));
    if std::fs::write(&tmp, format!("{code}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, &status_path);
    }
    0
}

/// A log stream kept in two generations of at most [`SERVICE_LOG_GENERATION_BYTES`] each.
struct LogWriter {
    dir: PathBuf,
    name: String,
    stream: &'static str,
    file: Option<std::fs::File>,
    written: u64,
}

impl LogWriter {
    fn new(dir: PathBuf, name: &str, stream: &'static str) -> Self {
        LogWriter { dir, name: name.to_string(), stream, file: None, written: 0 }
    }

    fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{}{}", self.name, self.stream, suffix))
    }

    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.written >= SERVICE_LOG_GENERATION_BYTES {
                self.file = None;
                if self.path(".1").exists() {
                    let _ = std::fs::write(self.dir.join(format!("{}.dropped", self.name)), b"");
                }
                let _ = std::fs::rename(self.path(""), self.path(".1"));
                self.written = 0;
            }
            if self.file.is_none() {
                self.file = std::fs::OpenOptions::new().create(true).append(true).open(self.path("")).ok();
            }
            let room = (SERVICE_LOG_GENERATION_BYTES - self.written) as usize;
            let (now, later) = data.split_at(room.min(data.len()));
            if let Some(f) = self.file.as_mut() {
                let _ = f.write_all(now);
            }
            self.written += now.len() as u64;
            data = later;
        }
    }
}

fn copy_log(mut src: Box<dyn Read + Send>, mut log: LogWriter) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => log.write(&buf[..n]),
        }
    }
}

/// Service records are MessagePack with named fields, the protocol's own encoding: one
/// serialisation format inside the guest, no JSON crate in the static agent.
pub(crate) mod record_codec {
    pub fn to_vec<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap_or_default()
    }
    pub fn from_slice<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
        rmp_serde::from_slice(b).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines() {
        assert_eq!(tail(b"a\nb\nc\n".to_vec(), 2), (b"b\nc\n".to_vec(), true));
        assert_eq!(tail(b"a\nb\nc".to_vec(), 2), (b"b\nc".to_vec(), true));
        assert_eq!(tail(b"a\nb\n".to_vec(), 5), (b"a\nb\n".to_vec(), false));
    }

    #[test]
    fn http_urls() {
        assert_eq!(split_http_url("http://127.0.0.1:8000/x?y").unwrap(), ("127.0.0.1".into(), 8000, "/x?y".into()));
        assert_eq!(split_http_url("http://localhost").unwrap(), ("localhost".into(), 80, "/".into()));
        assert!(split_http_url("https://x").is_err());
    }

    #[test]
    fn log_writer_rotates_and_marks_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::new(dir.path().to_path_buf(), "s", "stdout");
        let chunk = vec![b'x'; (SERVICE_LOG_GENERATION_BYTES / 2) as usize];
        for _ in 0..5 {
            w.write(&chunk);
        }
        let cur = std::fs::metadata(dir.path().join("s.stdout")).unwrap().len();
        let old = std::fs::metadata(dir.path().join("s.stdout.1")).unwrap().len();
        assert!(cur <= SERVICE_LOG_GENERATION_BYTES && old == SERVICE_LOG_GENERATION_BYTES);
        assert!(dir.path().join("s.dropped").exists());
    }
}
