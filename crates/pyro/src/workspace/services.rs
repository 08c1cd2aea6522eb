//! Background services in a started workspace, with readiness checks and
//! published ports.
//!
//! The guest is the source of truth for a service's process and logs (files under tmpfs
//! `/run/pyro-services`); the host mirrors each service into `services/<name>.json` with
//! what only the host knows: its published ports. A published port is a QEMU user-network
//! forward (`hostfwd`) bound to `127.0.0.1:HOST_PORT` on the host: no root, no proxy
//! process. The VM's supervisor adds it on request ([`pyro_vmm::Machine::publish`]), removes
//! it when the service is seen stopped, and it dies with the VM.

use super::store::{WorkspaceDir, WorkspaceRecord};
use super::{secrets, WORKSPACE_PATH};
use crate::{Error, ExecutionMode, Pyro, Result, ServiceStatus, WorkspaceState};
use pyro_protocol::session::{ReadinessProbe, ServiceRequest, ServiceResponse, ServiceState};
use pyro_tree::names::validate_service_name;
use pyro_tree::paths::normalize_destination;
use pyro_vmm::NetworkPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// TERM, then KILL after this long.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Round-trip allowance on top of a readiness wait or stop grace.
const SERVICE_CALL_SLACK: Duration = Duration::from_secs(30);
const LOOPBACK: &str = "127.0.0.1";

/// How pyro decides a service is ready (the `readiness` parameter of `start_service`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Readiness {
    /// A guest path (under `/workspace`) exists.
    File {
        /// Path in the guest, `/workspace` or below; relative paths are taken under `/workspace`.
        path: String,
    },
    /// `HOST:PORT` in the guest accepts a TCP connection.
    Tcp {
        /// `HOST:PORT` as seen from inside the guest, e.g. `127.0.0.1:8080`; port 1..=65535.
        address: String,
    },
    /// `GET` of an `http://` URL (from inside the guest) answers 200-399.
    Http {
        /// URL fetched from inside the guest, e.g. `http://127.0.0.1:8080/health`.
        url: String,
    },
    /// A shell command in the service cwd exits 0.
    Command {
        /// Shell command (`/bin/sh -lc`), run in the service's cwd with its environment.
        command: String,
    },
}

impl Readiness {
    /// The readiness of the reference's flat options (`ready_file`, `ready_tcp`,
    /// `ready_http`, `ready_command`): the first one given wins, in that order.
    pub fn first_of(
        file: Option<String>,
        tcp: Option<String>,
        http: Option<String>,
        command: Option<String>,
    ) -> Option<Readiness> {
        file.map(|path| Readiness::File { path })
            .or_else(|| tcp.map(|address| Readiness::Tcp { address }))
            .or_else(|| http.map(|url| Readiness::Http { url }))
            .or_else(|| command.map(|command| Readiness::Command { command }))
    }
}

/// A port to publish: `host_port` `None` picks a free one.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublishedPortSpec {
    /// TCP port the service listens on in the guest, 1..=65535.
    pub guest_port: u16,
    /// Port to bind on host `127.0.0.1`, 1025..=65535; `None` picks a free one.
    pub host_port: Option<u16>,
}

/// A published port as it is bound on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PublishedPort {
    /// Host address the port is bound on: always `127.0.0.1`.
    pub host: String,
    /// Port bound on the host; connect to `host:host_port` to reach the service.
    pub host_port: u16,
    /// The service's port in the guest.
    pub guest_port: u16,
    /// Always `tcp`.
    pub protocol: String,
}

/// Options of `start_service`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartServiceOptions {
    /// Shell command that runs the service (`/bin/sh -lc`); it should stay in the foreground.
    pub command: String,
    /// Working directory, `/workspace` or below (default `/workspace`); relative paths are taken
    /// under `/workspace`.
    pub cwd: String,
    /// How to tell the service is ready; `None` means ready as soon as it started.
    pub readiness: Option<Readiness>,
    /// How long to wait for readiness, in seconds (> 0, default 30).
    pub ready_timeout_seconds: u64,
    /// Pause between readiness checks, in milliseconds (> 0, default 500).
    pub ready_interval_ms: u64,
    /// {SECRET_NAME: ENV_VAR}.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// Guest ports to publish on host `127.0.0.1`; needs network policy `egress+published-ports`.
    /// Duplicates are refused.
    #[serde(default)]
    pub published_ports: Vec<PublishedPortSpec>,
}

impl StartServiceOptions {
    /// Options with the reference defaults: cwd `/workspace`, no readiness check, 30 s readiness
    /// timeout, 500 ms interval, no secrets, no published ports.
    pub fn new(command: impl Into<String>) -> Self {
        StartServiceOptions {
            command: command.into(),
            cwd: WORKSPACE_PATH.into(),
            readiness: None,
            ready_timeout_seconds: crate::defaults::READY_TIMEOUT_SECONDS,
            ready_interval_ms: crate::defaults::READY_INTERVAL_MS,
            secret_env: BTreeMap::new(),
            published_ports: Vec::new(),
        }
    }
}

/// Service payload (keys pinned in crates/pyro/tests/contract.rs; `backend` is pyro's
/// addition).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceInfo {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Name of the service (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`), unique in the workspace.
    pub service_name: String,
    /// `running`, `exited`, `stopped` or `failed`.
    pub state: ServiceStatus,
    /// The command the service runs.
    pub command: String,
    /// Its working directory in the guest.
    pub cwd: String,
    /// When it was started, Unix seconds (fractional).
    pub started_at: f64,
    /// When it was seen ended, Unix seconds; `None` while running.
    pub ended_at: Option<f64>,
    /// Exit status once the process has ended; `None` while it runs or when it is unknown.
    pub exit_code: Option<i32>,
    /// Guest pid of the service's runner (its process group id).
    pub pid: Option<i32>,
    /// `guest_vsock`.
    pub execution_mode: ExecutionMode,
    /// Backend that runs the VM: `qemu`.
    pub backend: String,
    /// The readiness check it was started with; `None` if none.
    pub readiness: Option<Readiness>,
    /// When the readiness check first passed, Unix seconds; `None` if it has not (yet).
    pub ready_at: Option<f64>,
    /// `process_exited_before_ready`, `readiness_timeout`, `sigterm`, `sigkill`,
    /// `workspace_stopped`, `published_port_failed`, or null.
    pub stop_reason: Option<String>,
    /// Ports published on the host while the service runs; empty once it stopped.
    pub published_ports: Vec<PublishedPort>,
    /// `true` when the workspace was paused and this call resumed it first (the key is
    /// absent otherwise; never stored).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed_from_pause: bool,
}

/// Payload of `list_services`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceList {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Number of services in the current boot.
    pub count: usize,
    /// Of those, services in state `running`.
    pub running_count: usize,
    /// Every service, refreshed from the guest.
    pub services: Vec<ServiceInfo>,
}

/// Payload of `logs_service`: the service's fields plus its output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceLogs {
    /// The service's status; its fields appear at the top level of the JSON payload.
    #[serde(flatten)]
    pub service: ServiceInfo,
    /// Standard output (the last `tail_lines` lines, or all that is kept), secret values redacted.
    pub stdout: String,
    /// Standard error, like `stdout`.
    pub stderr: String,
    /// `None` when `all` was asked for.
    pub tail_lines: Option<u64>,
    /// A stream was cut to `tail_lines`, or older output was rotated away (each stream keeps
    /// its last 4-8 MiB).
    pub truncated: bool,
}

fn services_dir(dir: &WorkspaceDir) -> PathBuf {
    dir.root.join("services")
}

/// The guest is hostile: a service name it reports becomes a host file name only if it is
/// exactly what [`validate_service_name`] accepts from a user. Others are dropped and logged
/// (on stderr and in the workspace's `guest-refused.log`).
fn guest_name_is_valid(dir: &WorkspaceDir, name: &str) -> bool {
    if validate_service_name(name).is_ok_and(|n| n == name) {
        return true;
    }
    crate::util::log_guest_refusal(&dir.root, &format!("dropped a guest service record named {name:?}"));
    false
}

fn record_path(dir: &WorkspaceDir, name: &str) -> PathBuf {
    services_dir(dir).join(format!("{name}.json"))
}

fn load(dir: &WorkspaceDir, name: &str) -> Option<ServiceInfo> {
    serde_json::from_slice(&std::fs::read(record_path(dir, name)).ok()?).ok()
}

fn load_all(dir: &WorkspaceDir) -> Vec<ServiceInfo> {
    let mut all: Vec<ServiceInfo> = std::fs::read_dir(services_dir(dir))
        .map(|rd| rd.flatten().filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()).collect())
        .unwrap_or_default();
    all.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    all
}

fn save(dir: &WorkspaceDir, info: &ServiceInfo) -> Result<()> {
    crate::util::create_private_dir(&services_dir(dir)).map_err(|e| Error::io("creating the services directory", e))?;
    let path = record_path(dir, &info.service_name);
    crate::util::write_atomic(&path, &serde_json::to_vec_pretty(info).expect("serialisable"))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Mirror the service counts into the workspace record (what `status` and `list` show).
fn sync_counts(dir: &WorkspaceDir) -> Result<()> {
    let all = load_all(dir);
    let running = all.iter().filter(|s| s.state == ServiceStatus::Running).count() as u64;
    dir.update(|r| {
        r.service_count = all.len() as u64;
        r.running_service_count = running;
        Ok(())
    })?;
    Ok(())
}

/// Forget every service (the VM that ran them is gone or being reset).
pub(crate) fn forget_all(dir: &WorkspaceDir, r: &mut WorkspaceRecord) {
    let _ = std::fs::remove_dir_all(services_dir(dir));
    r.service_count = 0;
    r.running_service_count = 0;
}

fn readiness_probe(r: &Readiness) -> ReadinessProbe {
    match r {
        Readiness::File { path } => ReadinessProbe::File { path: path.clone() },
        Readiness::Tcp { address } => ReadinessProbe::Tcp { address: address.clone() },
        Readiness::Http { url } => ReadinessProbe::Http { url: url.clone() },
        Readiness::Command { command } => ReadinessProbe::Command { command: command.clone() },
    }
}

fn readiness_of(p: &ReadinessProbe) -> Readiness {
    match p {
        ReadinessProbe::File { path } => Readiness::File { path: path.clone() },
        ReadinessProbe::Tcp { address } => Readiness::Tcp { address: address.clone() },
        ReadinessProbe::Http { url } => Readiness::Http { url: url.clone() },
        ReadinessProbe::Command { command } => Readiness::Command { command: command.clone() },
    }
}

/// Check a readiness spec and normalise its file path.
pub fn validate_readiness(r: &Readiness) -> Result<Readiness> {
    Ok(match r {
        Readiness::File { path } => Readiness::File { path: normalize_destination(path)? },
        Readiness::Tcp { address } => {
            let (host, port) = address.trim().rsplit_once(':').ok_or_else(|| {
                Error::InvalidInput(format!("readiness tcp address must be HOST:PORT, got '{address}'"))
            })?;
            let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
            if host.trim().is_empty() || !port_ok {
                return Err(Error::InvalidInput(format!(
                    "readiness tcp address must be HOST:PORT with a port in 1..65535, got '{address}'"
                )));
            }
            Readiness::Tcp { address: address.trim().to_string() }
        }
        Readiness::Http { url } => {
            let url = url.trim();
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(Error::InvalidInput(format!(
                    "readiness http URL must be an http:// URL reachable from inside the guest, got '{url}'"
                )));
            }
            Readiness::Http { url: url.to_string() }
        }
        Readiness::Command { command } => {
            if command.trim().is_empty() {
                return Err(Error::InvalidInput("readiness command must not be empty".into()));
            }
            Readiness::Command { command: command.clone() }
        }
    })
}

fn validate_ports(specs: &[PublishedPortSpec], network_policy: NetworkPolicy) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    if !network_policy.allows_published_ports() {
        return Err(Error::InvalidInput(format!(
            "published ports require workspace network_policy 'egress+published-ports' (this workspace has '{network_policy}')"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in specs {
        if p.guest_port == 0 {
            return Err(Error::InvalidInput("published guest_port must be in 1..65535".into()));
        }
        if let Some(h) = p.host_port {
            if h < 1025 {
                return Err(Error::InvalidInput(format!(
                    "published host_port must be in 1025..65535 (or omitted for a free port), got {h}"
                )));
            }
            if !seen.insert(h) {
                return Err(Error::InvalidInput(format!("host port {h} is published twice")));
            }
        }
    }
    Ok(())
}

/// Resolve the host side of each port: check a given port is free on 127.0.0.1, or pick one.
fn choose_host_ports(specs: &[PublishedPortSpec]) -> Result<Vec<PublishedPort>> {
    let mut out = Vec::new();
    for p in specs {
        let listener = std::net::TcpListener::bind((LOOPBACK, p.host_port.unwrap_or(0))).map_err(|e| {
            Error::InvalidInput(format!(
                "host port {} on {LOOPBACK} is not available: {e}",
                p.host_port.map(|h| h.to_string()).unwrap_or_else(|| "(any)".into())
            ))
        })?;
        let host_port = listener.local_addr().map_err(|e| Error::io("reading a bound port", e))?.port();
        out.push(PublishedPort { host: LOOPBACK.into(), host_port, guest_port: p.guest_port, protocol: "tcp".into() });
    }
    Ok(out)
}

/// The forward a published port asks the VM's supervisor for.
fn forward_of(p: &PublishedPort) -> pyro_protocol::PortForward {
    pyro_protocol::PortForward { host: p.host.clone(), host_port: p.host_port, guest_port: p.guest_port }
}

/// Ask the VM's supervisor to drop these forwards (best effort: a VM that is gone took
/// its forwards with it).
async fn unpublish(dir: &WorkspaceDir, ports: &[PublishedPort]) {
    if !ports.is_empty() {
        let _ = dir.machine().unpublish(ports.iter().map(forward_of).collect()).await;
    }
}

impl Pyro {
    /// Start a named background service and wait for its readiness check.
    ///
    /// A readiness wait occupies only this call: other calls on the same workspace go on.
    /// When readiness does not come in time the service is stopped, its logs are kept, and
    /// the call fails saying why.
    pub async fn start_service(
        &self,
        workspace_id: &str,
        service_name: &str,
        opts: StartServiceOptions,
    ) -> Result<ServiceInfo> {
        let name = validate_service_name(service_name)?;
        if opts.command.trim().is_empty() {
            return Err(Error::InvalidInput("service command must not be empty".into()));
        }
        let cwd = normalize_destination(&opts.cwd)?;
        if opts.ready_timeout_seconds == 0 || opts.ready_interval_ms == 0 {
            return Err(Error::InvalidInput(
                "ready_timeout_seconds and ready_interval_ms must be greater than 0".into(),
            ));
        }
        let readiness = opts.readiness.as_ref().map(validate_readiness).transpose()?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "starting a service").await?;
        validate_ports(&opts.published_ports, record.network_policy)?;
        let secret_values = secrets::load(&dir, &record.secrets)?;
        let env = secrets::env_for(&opts.secret_env, &secret_values)?;
        let vm = dir.machine();

        // A previous run of this name: refuse if it still runs, else drop its forwards.
        if let Some(old) = load(&dir, &name) {
            let current = guest_status(&dir, &name).await.ok();
            if current.as_ref().is_some_and(|s| s.state == ServiceStatus::Running) {
                return Err(Error::InvalidState(format!(
                    "service '{name}' is already running in workspace '{}'",
                    dir.id
                )));
            }
            unpublish(&dir, &old.published_ports).await;
        }
        let ports = choose_host_ports(&opts.published_ports)?;

        let req = ServiceRequest::Start {
            name: name.clone(),
            command: opts.command.clone(),
            cwd: cwd.clone(),
            env,
            readiness: readiness.as_ref().map(readiness_probe),
            ready_timeout_ms: opts.ready_timeout_seconds * 1000,
            ready_interval_ms: opts.ready_interval_ms,
        };
        let wait = Duration::from_secs(opts.ready_timeout_seconds) + STOP_GRACE * 2 + SERVICE_CALL_SLACK;
        let state = match vm.service(req, wait).await {
            Ok(ServiceResponse::State(s)) => s,
            Ok(other) => return Err(Error::Guest(format!("unexpected answer to service start: {other:?}"))),
            Err(e) => return Err(secrets::redact_error(e, &secret_values)),
        };
        let mut info = service_info(&dir, &record, &state, Vec::new());
        if state.state == ServiceStatus::Running && !ports.is_empty() {
            // The supervisor adds them all or none, and drops them once the service ends.
            if let Err(e) = vm.publish(&name, ports.iter().map(forward_of).collect()).await {
                let stop = ServiceRequest::Stop { name: name.clone(), grace_ms: STOP_GRACE.as_millis() as u64 };
                let _ = vm.service(stop, STOP_GRACE * 2 + SERVICE_CALL_SLACK).await;
                info.state = ServiceStatus::Failed;
                info.stop_reason = Some("published_port_failed".into());
                info.ended_at = Some(crate::util::now_f64());
                save(&dir, &info)?;
                sync_counts(&dir)?;
                return Err(Error::InvalidInput(format!("{e}; service '{name}' was stopped (its logs are kept)")));
            }
            info.published_ports = ports;
        }
        save(&dir, &info)?;
        sync_counts(&dir)?;
        super::ops::touch_activity(&dir)?;
        match state.stop_reason.as_deref() {
            Some("readiness_timeout") if state.state == ServiceStatus::Failed => Err(Error::InvalidState(
                secrets::redact(
                    &format!(
                        "service '{name}' did not become ready within {} s ({}); it was stopped and its logs are kept: `pyro workspace service logs {} {name}`",
                        opts.ready_timeout_seconds,
                        state.readiness_error.as_deref().unwrap_or("no readiness error recorded"),
                        dir.id
                    ),
                    &secret_values,
                ),
            )),
            Some("process_exited_before_ready") => Err(Error::InvalidState(format!(
                "service '{name}' exited (exit_code={}) before it became ready; its logs are kept: `pyro workspace service logs {} {name}`",
                state.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()),
                dir.id
            ))),
            _ => {
                super::events::record(
                    &dir,
                    super::events::Event::ServiceStart(super::events::ServiceEvent {
                        service_name: name.clone(),
                        command: Some(secrets::redact(&opts.command, &secret_values)),
                    }),
                );
                Ok(ServiceInfo { resumed_from_pause: resumed.is_some(), ..info })
            }
        }
    }

    /// Every service of the workspace, refreshed from the guest.
    pub async fn list_services(&self, workspace_id: &str) -> Result<ServiceList> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = self.enter_started(&dir).await?;
        let record = super::refresh_liveness(&dir)?;
        let services = if record.state == WorkspaceState::Started {
            refresh_services(&dir, &record).await?
        } else {
            load_all(&dir)
        };
        let running_count = services.iter().filter(|s| s.state == ServiceStatus::Running).count();
        Ok(ServiceList { workspace_id: dir.id.clone(), count: services.len(), running_count, services })
    }

    /// One service, refreshed from the guest.
    pub async fn status_service(&self, workspace_id: &str, service_name: &str) -> Result<ServiceInfo> {
        let name = validate_service_name(service_name)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "reading a service").await?;
        let state = guest_status(&dir, &name).await?;
        let info = mirror(&dir, &record, &state).await?;
        sync_counts(&dir)?;
        Ok(ServiceInfo { resumed_from_pause: resumed.is_some(), ..info })
    }

    /// Stop a service: TERM to its process group, KILL after 5 s; its published ports close.
    pub async fn stop_service(&self, workspace_id: &str, service_name: &str) -> Result<ServiceInfo> {
        let name = validate_service_name(service_name)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "stopping a service").await?;
        let req = ServiceRequest::Stop { name: name.clone(), grace_ms: STOP_GRACE.as_millis() as u64 };
        let state = match dir
            .machine()
            .service(req, STOP_GRACE * 2 + SERVICE_CALL_SLACK)
            .await
            .map_err(|e| unknown_service(e, &dir, &name))?
        {
            ServiceResponse::State(s) => s,
            other => return Err(Error::Guest(format!("unexpected answer to service stop: {other:?}"))),
        };
        let info = mirror(&dir, &record, &state).await?;
        sync_counts(&dir)?;
        super::events::record(
            &dir,
            super::events::Event::ServiceStop(super::events::ServiceEvent {
                service_name: name.clone(),
                command: None,
            }),
        );
        super::ops::touch_activity(&dir)?;
        Ok(ServiceInfo { resumed_from_pause: resumed.is_some(), ..info })
    }

    /// A service's stdout and stderr: the last `tail_lines` lines of each, or everything
    /// kept with `all`. Secret values are redacted.
    pub async fn logs_service(
        &self,
        workspace_id: &str,
        service_name: &str,
        tail_lines: u64,
        all: bool,
    ) -> Result<ServiceLogs> {
        let name = validate_service_name(service_name)?;
        let dir = self.ws_dir(workspace_id)?;
        let (_life, record, resumed) = self.enter_started_call_resuming(&dir, "reading service logs").await?;
        let tail = (!all).then_some(tail_lines);
        let req = ServiceRequest::Logs { name: name.clone(), tail_lines: tail };
        let logs =
            match dir.machine().service(req, SERVICE_CALL_SLACK).await.map_err(|e| unknown_service(e, &dir, &name))? {
                ServiceResponse::Logs(l) => l,
                other => return Err(Error::Guest(format!("unexpected answer to service logs: {other:?}"))),
            };
        let info = mirror(&dir, &record, &logs.state).await?;
        let secret_values = secrets::load(&dir, &record.secrets)?;
        Ok(ServiceLogs {
            service: ServiceInfo { resumed_from_pause: resumed.is_some(), ..info },
            stdout: secrets::redact(&String::from_utf8_lossy(&logs.stdout), &secret_values),
            stderr: secrets::redact(&String::from_utf8_lossy(&logs.stderr), &secret_values),
            tail_lines: tail,
            truncated: logs.truncated,
        })
    }
}

async fn guest_status(dir: &WorkspaceDir, name: &str) -> Result<ServiceState> {
    let req = ServiceRequest::Status { name: name.to_string() };
    match dir.machine().service(req, SERVICE_CALL_SLACK).await.map_err(|e| unknown_service(e, dir, name))? {
        ServiceResponse::State(s) => Ok(s),
        other => Err(Error::Guest(format!("unexpected answer to service status: {other:?}"))),
    }
}

fn unknown_service(e: impl Into<Error>, dir: &WorkspaceDir, name: &str) -> Error {
    match e.into() {
        Error::NotFound(_) => Error::NotFound(format!("unknown service '{name}' in workspace '{}'", dir.id)),
        other => other,
    }
}

/// Every service of a started workspace, asked from the guest and mirrored into the host
/// records and the workspace's service counts.
///
/// Takes no lifecycle lock: `status_workspace` uses it too and must not wait behind a stop
/// or reset; if the VM goes away midway the call fails and the caller keeps the records.
pub(crate) async fn refresh_services(dir: &WorkspaceDir, record: &WorkspaceRecord) -> Result<Vec<ServiceInfo>> {
    let guest = match dir.machine().service(ServiceRequest::List, SERVICE_CALL_SLACK).await? {
        ServiceResponse::List { services } => services,
        other => return Err(Error::Guest(format!("unexpected answer to service list: {other:?}"))),
    };
    let mut services = Vec::with_capacity(guest.len());
    for state in guest.iter().filter(|s| guest_name_is_valid(dir, &s.name)) {
        services.push(mirror(dir, record, state).await?);
    }
    sync_counts(dir)?;
    Ok(services)
}

/// Fold the guest's state into the host record; a service seen not running loses its
/// published ports.
async fn mirror(dir: &WorkspaceDir, record: &WorkspaceRecord, state: &ServiceState) -> Result<ServiceInfo> {
    if !guest_name_is_valid(dir, &state.name) {
        return Err(Error::Guest(format!(
            "the guest reported a service named {:?}, which is not a valid service name; its record was dropped",
            state.name
        )));
    }
    let old = load(dir, &state.name);
    let mut ports = old.as_ref().map(|o| o.published_ports.clone()).unwrap_or_default();
    if state.state != ServiceStatus::Running && !ports.is_empty() {
        unpublish(dir, &ports).await;
        ports.clear();
    }
    let mut info = service_info(dir, record, state, ports);
    // A host-side failure (published port) outranks the guest's plain `stopped`.
    if let Some(o) = old.filter(|o| o.stop_reason.as_deref() == Some("published_port_failed")) {
        info.state = o.state;
        info.stop_reason = o.stop_reason;
    }
    save(dir, &info)?;
    Ok(info)
}

fn service_info(
    dir: &WorkspaceDir,
    record: &WorkspaceRecord,
    s: &ServiceState,
    published_ports: Vec<PublishedPort>,
) -> ServiceInfo {
    ServiceInfo {
        workspace_id: dir.id.clone(),
        service_name: s.name.clone(),
        state: s.state,
        command: s.command.clone(),
        cwd: s.cwd.clone(),
        started_at: s.started_at,
        ended_at: s.ended_at,
        exit_code: s.exit_code,
        pid: s.pid,
        execution_mode: record.execution_mode,
        backend: record.backend.as_str().to_string(),
        readiness: s.readiness.as_ref().map(readiness_of),
        ready_at: s.ready_at,
        stop_reason: s.stop_reason.clone(),
        published_ports,
        resumed_from_pause: false,
    }
}

/// End every shell and service in the guest before the VM goes away or is reset: services
/// get TERM (KILL after the grace), shells HUP. Best effort: the VM is going down anyway.
pub(crate) async fn end_sessions(vm: &pyro_vmm::Machine, grace: Duration) {
    let stop = ServiceRequest::StopAll { grace_ms: grace.as_millis() as u64 };
    let close = pyro_protocol::session::ShellRequest::CloseAll;
    let _ =
        tokio::join!(vm.service(stop, grace * 2 + Duration::from_secs(5)), vm.shell(close, Duration::from_secs(10)),);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_validation() {
        assert!(validate_readiness(&Readiness::Tcp { address: "127.0.0.1:8080".into() }).is_ok());
        assert!(validate_readiness(&Readiness::Tcp { address: "8080".into() }).is_err());
        assert!(validate_readiness(&Readiness::Tcp { address: "h:0".into() }).is_err());
        assert!(validate_readiness(&Readiness::Http { url: "https://x".into() }).is_err());
        assert_eq!(
            validate_readiness(&Readiness::File { path: "ready".into() }).unwrap(),
            Readiness::File { path: "/workspace/ready".into() }
        );
        assert!(validate_readiness(&Readiness::File { path: "/etc/passwd".into() }).is_err());
        assert!(validate_readiness(&Readiness::Command { command: " ".into() }).is_err());
    }

    #[test]
    fn port_validation() {
        let p = |g, h| PublishedPortSpec { guest_port: g, host_port: h };
        let published = NetworkPolicy::EgressPublishedPorts;
        assert!(validate_ports(&[p(80, None)], NetworkPolicy::Egress).is_err());
        assert!(validate_ports(&[p(80, Some(80))], published).is_err());
        assert!(validate_ports(&[p(80, Some(8080)), p(81, Some(8080))], published).is_err());
        assert!(validate_ports(&[p(80, Some(8080)), p(81, None)], published).is_ok());
        assert!(validate_ports(&[], NetworkPolicy::Off).is_ok());
    }

    #[test]
    fn a_taken_host_port_is_refused_before_anything_starts() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = choose_host_ports(&[PublishedPortSpec { guest_port: 80, host_port: Some(port) }]).unwrap_err();
        assert!(err.to_string().contains(&format!("host port {port}")), "{err}");
    }
}
