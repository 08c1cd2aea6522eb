//! Persistent workspaces: a VM that lives across many calls, with a `/workspace` tree, a
//! create-time baseline, history, snapshots and reset.
//!
//! Every operation follows the same shape: validate input first (nothing touched on bad
//! input), take the workspace's shared lifecycle lock (exclusive for stop/start/reset/
//! delete), check state and expiry, talk to the guest through the workspace's
//! [`pyro_vmm::Machine`], then update the record under the short record lock.

pub mod commands;
mod disk;
pub mod events;
mod ops;
mod pause;
mod reset;
pub mod retention;
pub mod secrets;
pub mod services;
pub mod shells;
pub(crate) mod store;
mod summary;

use crate::boot::BootRequest;
use crate::limits::validate_resources;
use crate::util::{new_id, now_f64};
use crate::{Error, ExecutionMode, Pyro, Result, WorkspaceState};
use pyro_tree::archive::SeedSource;
use pyro_vmm::{Backend, NetworkPolicy, VmDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
pub use store::{SeedInfo, SeedSkip};
use store::{WorkspaceDir, WorkspaceRecord, LAYOUT_VERSION};

pub use commands::*;
pub use disk::*;
pub use ops::*;
pub use pause::*;
pub use services::*;
pub use shells::*;
pub use summary::*;

/// Name prefix of a creation's staging directory (renamed to the id once the record is in).
const STAGING_PREFIX: &str = ".creating-";
/// At most this many skipped paths are listed in a seed payload (`skipped_count` has them all).
const MAX_SEED_SKIPS_SHOWN: usize = 100;
/// A staging directory this old whose lock is free belongs to a creator that died.
const STAGING_GRACE: Duration = Duration::from_secs(60);

/// Undoes a workspace creation that did not finish (error or cancellation): kills its VM
/// (identity-checked pids) and removes its directories. Synchronous, so it also runs when
/// the creating future is dropped.
struct CreationCleanup {
    dirs: Vec<PathBuf>,
    armed: bool,
}

impl Drop for CreationCleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for d in &self.dirs {
            reap_vm(&VmDir::new(d.join(store::RUNTIME_DIR)));
            remove_reaped_dir(d);
        }
    }
}

/// Kill the VM of a runtime directory however far its boot got: by its pid file
/// (identity-checked) and, if that is not written yet, by the supervisor's command line.
fn reap_vm(vm: &VmDir) {
    vm.reap();
}

/// Remove a directory whose VM was just killed: a dying QEMU may still create a file in it,
/// so a failed removal is retried briefly.
fn remove_reaped_dir(dir: &std::path::Path) -> bool {
    for _ in 0..20 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    false
}

/// The guest path of the work tree.
pub const WORKSPACE_PATH: &str = pyro_tree::paths::WORKSPACE_ROOT;
/// How long `stop` waits for a clean guest shutdown before killing the VMM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of `create_workspace` (reference defaults via [`CreateWorkspaceOptions::new`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateWorkspaceOptions {
    /// Environment to boot: `debian:12`, `debian:12-base` or `debian:12-build`. Installed first if
    /// missing.
    pub environment: String,
    /// Virtual CPUs, 1..=8 (default 1).
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..=32768 (default 1024).
    pub mem_mib: u32,
    /// Time to live in seconds, 60..=3600 (default 600). When it passes the workspace is stopped
    /// (its disk is kept); `update_workspace` with `ttl_seconds` extends it.
    pub ttl_seconds: u64,
    /// `off` (default, no network), `egress` (outbound access) or `egress+published-ports`
    /// (outbound access, and services may publish ports on host `127.0.0.1`). Trimmed,
    /// case-insensitive.
    pub network_policy: String,
    /// Accepted for compatibility; workspaces always need a VM backend, so host compatibility mode
    /// is never used for them (default `false`).
    pub allow_host_compat: bool,
    /// Host directory (its children are copied) or `.tar`/`.tar.gz`/`.tgz` archive unpacked into
    /// `/workspace`; it also becomes the `baseline` snapshot. `None` starts with an empty
    /// `/workspace`. Wins over `project`.
    pub seed_path: Option<PathBuf>,
    /// Seed from this project when `seed_path` is `None` (a Git checkout by Git's rules; see
    /// [`crate::project`]). `pyro mcp serve` sets it from its project; not serialised.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub project: Option<crate::project::Project>,
    /// Optional human-readable name: trimmed, non-empty, at most 120 characters. Not unique.
    pub name: Option<String>,
    /// Labels to attach: keys match `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, values are trimmed,
    /// non-empty, at most 120 characters and single-line.
    pub labels: BTreeMap<String, String>,
    /// Secrets available to commands via `secret_env` and at `/run/pyro-secrets/<NAME>`.
    #[serde(default)]
    pub secrets: Vec<secrets::SecretSpec>,
    /// Pause the workspace after this many seconds without a call (1..=86400; `None` or 0:
    /// never). The next call resumes it. See [`Pyro::pause_workspace`].
    #[serde(default)]
    pub idle_pause_seconds: Option<u64>,
}

impl CreateWorkspaceOptions {
    /// Options with the reference defaults: 1 vCPU, 1024 MiB, 600 s TTL, network policy `off`, no
    /// seed, name, labels or secrets.
    pub fn new(environment: impl Into<String>) -> Self {
        CreateWorkspaceOptions {
            environment: environment.into(),
            vcpu_count: crate::defaults::VCPU_COUNT,
            mem_mib: crate::defaults::MEM_MIB,
            ttl_seconds: crate::defaults::TTL_SECONDS,
            network_policy: crate::defaults::NETWORK_POLICY.into(),
            allow_host_compat: false,
            seed_path: None,
            project: None,
            name: None,
            labels: BTreeMap::new(),
            secrets: Vec::new(),
            idle_pause_seconds: None,
        }
    }
}

/// Options of `update_workspace`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateWorkspaceOptions {
    /// New name (trimmed, non-empty, at most 120 characters); `None` keeps the current one. Not
    /// together with `clear_name`.
    pub name: Option<String>,
    /// Remove the name.
    pub clear_name: bool,
    /// Labels to add or overwrite (same rules as at create); other labels stay.
    pub labels: BTreeMap<String, String>,
    /// Label keys to remove; keys that are not set are ignored.
    pub clear_labels: Vec<String>,
    /// Extend (or shorten) the expiry: the workspace now expires `ttl_seconds` from now.
    pub ttl_seconds: Option<u64>,
    /// New idle pause delay in seconds (1..=86400), `Some(0)` turns it off, `None` keeps it.
    /// A running workspace applies it at once (its supervisor is told), counting from now.
    #[serde(default)]
    pub idle_pause_seconds: Option<u64>,
}

/// Public workspace payload (keys pinned in crates/pyro/tests/contract.rs; `backend` and
/// `last_error` are pyro's additions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceInfo {
    /// Id of the workspace (12 lowercase hex characters).
    pub workspace_id: String,
    /// Human-readable name; `None` when not set.
    pub name: Option<String>,
    /// Labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Environment the workspace was created from, e.g. `debian:12`.
    pub environment: String,
    /// Version of that environment.
    pub environment_version: String,
    /// Virtual CPUs of the guest.
    pub vcpu_count: u32,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Time to live in seconds, from creation or from the last TTL update.
    pub ttl_seconds: u64,
    /// Creation time, Unix seconds (fractional).
    pub created_at: f64,
    /// Last time the workspace was used, Unix seconds: bumped by exec, patch apply, sync push,
    /// snapshot create/delete, reset, stop, start, pause, resume (also a call's transparent
    /// resume), update, shell open/write and service start/stop. Reads, status, list, diff,
    /// export, disk tools and the idle pause leave it alone.
    pub last_activity_at: f64,
    /// When the TTL runs out, Unix seconds. A workspace past it is stopped (disk kept) and refuses
    /// to start until its TTL is extended.
    pub expires_at: f64,
    /// `started` (the VM runs), `stopped` (no VM; the disk is kept), `paused` (no VM; memory
    /// and device state saved on the host, the next call resumes it) or `creating` (a
    /// `create_workspace` call is still booting it; if that call dies, the next list, status
    /// or create removes the workspace).
    pub state: WorkspaceState,
    /// `off`, `egress` or `egress+published-ports`.
    pub network_policy: String,
    /// Whether the guest has a network (`network_policy` is not `off`).
    pub network_enabled: bool,
    /// The `allow_host_compat` option given at create.
    pub allow_host_compat: bool,
    /// Guest address on its private user-mode network (`10.0.2.15`); `None` when the policy is
    /// `off`.
    pub guest_ip: Option<String>,
    /// Host TAP device; always `None` (QEMU user-mode networking needs none).
    pub tap_name: Option<String>,
    /// `pending` (never booted) or `guest_vsock` (commands run in the guest through pyro's agent).
    pub execution_mode: ExecutionMode,
    /// Backend that runs the VM: `qemu`; empty before the first boot.
    pub backend: String,
    /// Guest path of the work tree: always `/workspace`.
    pub workspace_path: String,
    /// What `/workspace` was seeded with at create.
    pub workspace_seed: SeedInfo,
    /// Declared secrets (names and kinds only, sorted by name).
    pub secrets: Vec<store::SecretRecord>,
    /// Commands in the history (`exec_workspace` calls since create or the last reset).
    pub command_count: u64,
    /// The most recent history entry; `None` when the history is empty.
    pub last_command: Option<store::LastCommand>,
    /// How many times the workspace was reset.
    pub reset_count: u64,
    /// Time of the last reset, Unix seconds; `None` if never reset.
    pub last_reset_at: Option<f64>,
    /// Services known in the current boot (0 after stop, start or reset).
    pub service_count: u64,
    /// Of those, services in state `running`.
    pub running_service_count: u64,
    /// Why the workspace last failed or was stopped unexpectedly (boot failure, VM died, TTL
    /// expired); `None` after a successful boot or stop.
    pub last_error: Option<String>,
    /// Backend details as strings: `backend_reason`, `accel` (`kvm`/`tcg`), `agent_version`,
    /// `boot_ms`, `rootfs_clone_mode`. Informational; keys may change.
    pub metadata: BTreeMap<String, String>,
    /// Set only in the payload of `reset_workspace`: what was restored.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workspace_reset: Option<ResetInfo>,
    /// Seconds without a call after which the workspace is paused; `None` when off.
    #[serde(default)]
    pub idle_pause_seconds: Option<u64>,
    /// How the root disk is stored: `raw`, or `qcow2` (a copy-on-write overlay on a frozen
    /// base shared with the workspaces forked from the same point).
    #[serde(default = "raw_disk_format")]
    pub disk_format: String,
    /// Set only in the payload of `pause_workspace`: what the pause saved.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workspace_pause: Option<PauseInfo>,
    /// Set only in payloads of calls that resumed a paused workspace (`resume_workspace`,
    /// `start_workspace`, `stop_workspace`): how the resume went.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workspace_resume: Option<ResumeInfo>,
}

fn raw_disk_format() -> String {
    "raw".into()
}

/// What `reset_workspace` restored into `/workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResetInfo {
    /// Snapshot restored: `baseline` or a named snapshot.
    pub snapshot_name: String,
    /// `baseline` or `named`.
    pub kind: String,
    /// Guest directory restored: `/workspace`.
    pub destination: String,
    /// Archive entries (files, directories, symlinks) restored.
    pub entry_count: u64,
    /// Bytes of regular-file content restored.
    pub bytes_written: u64,
}

/// One row of `list_workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceListItem {
    /// Id of the workspace.
    pub workspace_id: String,
    /// Human-readable name; `None` when not set.
    pub name: Option<String>,
    /// Labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Environment the workspace was created from.
    pub environment: String,
    /// `started`, `stopped`, `paused` or `creating` (see [`WorkspaceInfo::state`]).
    pub state: WorkspaceState,
    /// Creation time, Unix seconds.
    pub created_at: f64,
    /// Last activity, Unix seconds (see [`WorkspaceInfo::last_activity_at`]).
    pub last_activity_at: f64,
    /// When the TTL runs out, Unix seconds.
    pub expires_at: f64,
    /// Commands in the history.
    pub command_count: u64,
    /// Services known in the current boot.
    pub service_count: u64,
    /// Of those, services in state `running`.
    pub running_service_count: u64,
}

/// Payload of `list_workspaces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceList {
    /// Number of workspaces.
    pub count: usize,
    /// Every workspace, most recently active first (then newest, then by id).
    pub workspaces: Vec<WorkspaceListItem>,
}

/// Payload of `delete_workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteWorkspaceResult {
    /// Id of the deleted workspace.
    pub workspace_id: String,
    /// Always `true` on success.
    pub deleted: bool,
}

fn info_of(r: &WorkspaceRecord) -> WorkspaceInfo {
    let network_enabled = r.network_policy.has_nic();
    WorkspaceInfo {
        workspace_id: r.workspace_id.clone(),
        name: r.name.clone(),
        labels: r.labels.clone(),
        environment: r.environment.clone(),
        environment_version: r.environment_version.clone(),
        vcpu_count: r.vcpu_count,
        mem_mib: r.mem_mib,
        ttl_seconds: r.ttl_seconds,
        created_at: r.created_at,
        last_activity_at: r.last_activity_at,
        expires_at: r.expires_at,
        state: r.state,
        network_policy: r.network_policy.as_str().to_string(),
        network_enabled,
        allow_host_compat: r.allow_host_compat,
        guest_ip: network_enabled.then(|| pyro_vmm::USER_NET_GUEST_IP.to_string()),
        tap_name: None,
        execution_mode: r.execution_mode,
        backend: r.backend.as_str().to_string(),
        workspace_path: WORKSPACE_PATH.into(),
        workspace_seed: r.workspace_seed.clone().normalized(),
        secrets: r.secrets.clone(),
        command_count: r.command_count,
        last_command: r.last_command.clone(),
        reset_count: r.reset_count,
        last_reset_at: r.last_reset_at,
        service_count: r.service_count,
        running_service_count: r.running_service_count,
        last_error: r.last_error.clone(),
        metadata: r.metadata.clone(),
        workspace_reset: None,
        idle_pause_seconds: r.idle_pause_seconds,
        disk_format: r.disk_format.as_str().to_string(),
        workspace_pause: None,
        workspace_resume: None,
    }
}

/// The record, with a `started` workspace whose supervisor is gone settled: a valid memory
/// state left by it means the workspace was paused (the supervisor's idle pause, or a pause
/// whose caller died before recording it): `paused`. Otherwise (no state, or one that is
/// unusable: discarded) `stopped`, with `last_error` saying why; the disk is intact and
/// `start` boots it. An interrupted resume is settled first (see `pause.rs`).
pub(crate) fn refresh_liveness(dir: &WorkspaceDir) -> Result<WorkspaceRecord> {
    pause::settle_interrupted_resume(dir)?;
    let record = dir.load()?;
    if record.state != WorkspaceState::Started || dir.vm().is_running() {
        return Ok(record);
    }
    let saved = pyro_vmm::MemoryState::load(&dir.vm());
    if matches!(saved, Ok(Some(_))) && dir.vm().has_live_processes() {
        // The supervisor's idle pause saved the state and ended QEMU, and is finishing (it
        // holds the lifecycle lock until it exits, so no call gets here meanwhile): `paused`
        // once no process of it is left.
        return Ok(record);
    }
    let (record, _) = dir.update(|r| {
        if r.state != WorkspaceState::Started {
            return Ok(());
        }
        match &saved {
            Ok(Some(_)) => {
                r.state = WorkspaceState::Paused;
                r.last_error = None;
            }
            Ok(None) => {
                r.state = WorkspaceState::Stopped;
                r.last_error = Some("backing guest process is no longer running".into());
            }
            Err(e) => {
                r.state = WorkspaceState::Stopped;
                r.last_error = Some(pause::unusable_state_message(&dir.id, &e.to_string()));
            }
        }
        Ok(())
    })?;
    if saved.is_err() {
        pyro_vmm::MemoryState::discard(&dir.vm()).ok();
    }
    dir.vm().clean_stale_files();
    Ok(record)
}

/// Services and shells live exactly as long as the VM that runs them: a stop, start or
/// reset drops their host records.
pub(crate) fn forget_sessions(dir: &WorkspaceDir, r: &mut WorkspaceRecord) {
    services::forget_all(dir, r);
    shells::forget_all(dir);
}

/// Give services TERM (then KILL) and shells HUP before the guest powers off, so they end
/// the way `service stop` / `shell close` end them.
pub(crate) async fn end_sessions_if_running(dir: &WorkspaceDir) {
    let vm = dir.machine();
    if vm.is_running() {
        // Background commands first: each is recorded in the history as killed.
        commands::end_all(dir).await;
        services::end_sessions(&vm, services::STOP_GRACE).await;
    }
}

/// Copy what a successful boot decided (backend, mode, metadata) into the saved record.
pub(crate) fn mark_booted(r: &mut WorkspaceRecord, booted: &WorkspaceRecord) {
    r.state = WorkspaceState::Started;
    r.backend = booted.backend;
    r.accel = booted.accel.clone();
    r.execution_mode = booted.execution_mode;
    r.metadata = booted.metadata.clone();
    r.last_error = None;
}

fn list_item_of(r: &WorkspaceRecord) -> WorkspaceListItem {
    WorkspaceListItem {
        workspace_id: r.workspace_id.clone(),
        name: r.name.clone(),
        labels: r.labels.clone(),
        environment: r.environment.clone(),
        state: r.state,
        created_at: r.created_at,
        last_activity_at: r.last_activity_at,
        expires_at: r.expires_at,
        command_count: r.command_count,
        service_count: r.service_count,
        running_service_count: r.running_service_count,
    }
}

/// `off`, `egress`, `egress+published-ports` (trimmed, case-insensitive).
pub fn normalize_network_policy(p: &str) -> Result<NetworkPolicy> {
    NetworkPolicy::parse(p)
        .ok_or_else(|| Error::InvalidInput("network_policy must be one of: off, egress, egress+published-ports".into()))
}

/// Most running VMs at once: stopped workspaces cost nothing, so only running ones count.
/// Default from host memory (one slot per 512 MiB, at most 64); `PYRO_MAX_RUNNING_VMS`
/// overrides.
pub fn max_running_vms() -> usize {
    if let Some(n) = std::env::var("PYRO_MAX_RUNNING_VMS").ok().and_then(|v| v.trim().parse().ok()) {
        return n;
    }
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(4 * 1024 * 1024);
    ((mem_kib / 1024 / 512) as usize).clamp(1, 64)
}

impl Pyro {
    pub(crate) fn ws_dir(&self, workspace_id: &str) -> Result<WorkspaceDir> {
        let id = workspace_id.trim();
        // Ids are 12 hex chars; anything else can't name a workspace (and must never be
        // joined into a path).
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::NotFound(format!("workspace '{workspace_id}' does not exist")));
        }
        let dir = WorkspaceDir::new(&self.paths().workspaces_dir(), id);
        if !dir.exists() {
            return Err(Error::NotFound(format!("workspace '{id}' does not exist")));
        }
        Ok(dir)
    }

    fn all_workspace_dirs(&self) -> Vec<WorkspaceDir> {
        let root = self.paths().workspaces_dir();
        let Ok(rd) = std::fs::read_dir(&root) else { return Vec::new() };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str().map(|n| WorkspaceDir::new(&root, n)))
            // Staging directories of creations in progress (`.creating-<id>`) are no workspaces.
            .filter(|d| d.id.chars().all(|c| c.is_ascii_alphanumeric()))
            .filter(|d| d.exists())
            .collect()
    }

    /// Count VMs running right now (workspaces whose supervisor is alive or that are being
    /// created, + ephemeral VMs).
    fn running_vm_count(&self) -> usize {
        let ws = self
            .all_workspace_dirs()
            .iter()
            .filter(|d| d.vm().is_running() || d.load().is_ok_and(|r| r.state == WorkspaceState::Creating))
            .count();
        ws + self.inner.vms.lock().unwrap().values().filter(|e| e.info.state == "started").count()
    }

    /// Reap what interrupted calls left behind (run by list, status, create and at MCP server
    /// start; cheap when there is nothing to do):
    /// - a workspace still `creating` whose creator is gone (its lifecycle lock is free and
    ///   the recorded creator process no longer exists: kill -9 or a crash mid-create) is
    ///   deleted with its VM: the creator never returned its id, so nobody owns it, and its
    ///   `/workspace` may be half seeded;
    /// - a `stopped` workspace whose VM runs although nobody holds its lifecycle lock (a
    ///   `start` killed after boot) gets its VM stopped, with `last_error` saying why;
    /// - a staging directory of a creation killed before its record was placed is removed;
    /// - a supervisor running for a workspace directory that has no record is killed (its
    ///   VMM dies with it).
    ///
    /// Busy workspaces (lifecycle lock held) are never touched. Returns the ids reaped.
    pub async fn sweep_orphans(&self) -> Vec<String> {
        let root = self.paths().workspaces_dir();
        let Ok(rd) = std::fs::read_dir(&root) else { return Vec::new() };
        let mut reaped = Vec::new();
        for entry in rd.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let dir = WorkspaceDir::new(&root, &name);
            if let Some(id) = name.strip_prefix(STAGING_PREFIX) {
                // A creator places its record within milliseconds; an old staging dir whose
                // lock is free belongs to a creator that died.
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STAGING_GRACE);
                if old {
                    if let Ok(Some(_lock)) = dir.try_lifecycle_exclusive() {
                        reap_vm(&dir.vm());
                        if remove_reaped_dir(&dir.root) {
                            reaped.push(id.to_string());
                        }
                    }
                }
                continue;
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            let Ok(record) = dir.load() else { continue };
            match record.state {
                WorkspaceState::Creating => {
                    if record.creator.as_ref().is_some_and(|c| c.is_alive()) {
                        continue;
                    }
                    let Ok(Some(_lock)) = dir.try_lifecycle_exclusive() else { continue };
                    reap_vm(&dir.vm());
                    if remove_reaped_dir(&dir.root) {
                        reaped.push(dir.id.clone());
                    }
                }
                WorkspaceState::Stopped if dir.vm().is_running() => {
                    let Ok(Some(_lock)) = dir.try_lifecycle_exclusive() else { continue };
                    if !dir.vm().is_running() {
                        continue;
                    }
                    let _ = dir.machine().shutdown(Duration::ZERO).await;
                    let _ = dir.update(|r| {
                        forget_sessions(&dir, r);
                        r.last_error =
                            Some("a VM was left running by an interrupted start; it was stopped (disk kept)".into());
                        Ok(())
                    });
                    reaped.push(dir.id.clone());
                }
                _ => {}
            }
        }
        // A supervisor whose workspace has no record any more (its directory was removed
        // under it) belongs to nobody: nothing else would ever stop it.
        for (supervisor, vm) in pyro_vmm::supervisors_under(&root) {
            let Some(ws_root) = vm.path().parent() else { continue };
            let owned = vm.path().file_name() == Some(std::ffi::OsStr::new(store::RUNTIME_DIR))
                && ws_root.parent() == Some(root.as_path())
                && ws_root.join("workspace.json").exists();
            if !owned && supervisor.signal(libc::SIGKILL) {
                reaped.push(ws_root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
        }
        reaped
    }

    /// Create a workspace and boot it; `/workspace` is seeded and the baseline stored.
    /// On any failure nothing of it remains.
    pub async fn create_workspace(&self, opts: CreateWorkspaceOptions) -> Result<WorkspaceInfo> {
        validate_resources(opts.vcpu_count, opts.mem_mib, opts.ttl_seconds)?;
        let spec = crate::env::spec(&opts.environment)?;
        let network_policy = normalize_network_policy(&opts.network_policy)?;
        let name = opts.name.as_deref().map(pyro_tree::names::validate_workspace_name).transpose()?;
        let mut labels = BTreeMap::new();
        for (k, v) in &opts.labels {
            let (k, v) = pyro_tree::names::validate_label(k, v)?;
            labels.insert(k, v);
        }
        let prepared_secrets = secrets::prepare(&opts.secrets)?;
        pause::validate_idle_pause(opts.idle_pause_seconds)?;
        // Build the seed archive before anything exists, so a bad seed creates nothing.
        let (seed, seed_tar) = self.prepare_seed(&opts).await?;
        self.sweep_orphans().await;
        self.reap_expired_workspaces().await;
        let limit = max_running_vms();
        if self.running_vm_count() >= limit {
            return Err(Error::InvalidState(format!(
                "{limit} VMs are already running (the limit for this host; PYRO_MAX_RUNNING_VMS changes it); stop or delete a workspace first"
            )));
        }
        let env = self.ensure_environment(spec.name).await?;
        let id = new_id();
        let workspaces = self.paths().workspaces_dir();
        // $PYRO_HOME and everything in it is the user's alone, whatever the umask.
        crate::util::create_private_dir(&workspaces)
            .map_err(|e| Error::io(format!("creating {}", workspaces.display()), e))?;
        let dir = WorkspaceDir::new(&workspaces, &id);
        self.create_in_dir(&dir, &env, &opts, network_policy, name, labels, seed, seed_tar, prepared_secrets).await
    }

    /// The seed of a new workspace: `seed_path` when given, else the project, else empty.
    async fn prepare_seed(&self, opts: &CreateWorkspaceOptions) -> Result<(SeedInfo, Vec<u8>)> {
        let info = |mode: &str, seed_path: Option<String>, kind: crate::project::OriginKind| SeedInfo {
            mode: mode.into(),
            seed_path,
            destination: WORKSPACE_PATH.into(),
            entry_count: 0,
            bytes_written: 0,
            origin_kind: kind.as_str().into(),
            origin_ref: None,
            skipped_count: 0,
            skipped: vec![],
        };
        if let Some(p) = &opts.seed_path {
            let source = SeedSource::classify(p)?;
            let tar = source.to_tar()?;
            let seed_path = Some(source.path().display().to_string());
            return Ok((info(source.mode(), seed_path, crate::project::OriginKind::Path), tar));
        }
        let Some(project) = opts.project.clone() else {
            return Ok((info("empty", None, crate::project::OriginKind::Empty), pyro_tree::archive::empty_tar()));
        };
        self.progress().report("seed", format!("collecting the project's files ({})", project.describe()), Some(0.05));
        let seed = crate::blocking(move || project.seed()).await?;
        let mut out = info("directory", Some(seed.seed_path), seed.origin_kind);
        out.origin_ref = seed.origin_ref;
        out.skipped_count = seed.skipped.len() as u64;
        out.skipped = seed
            .skipped
            .into_iter()
            .take(MAX_SEED_SKIPS_SHOWN)
            .map(|s| store::SeedSkip { path: s.path, reason: s.reason })
            .collect();
        Ok((out, seed.tar))
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_in_dir(
        &self,
        dir: &WorkspaceDir,
        env: &crate::env::InstalledEnvironment,
        opts: &CreateWorkspaceOptions,
        network_policy: NetworkPolicy,
        name: Option<String>,
        labels: BTreeMap<String, String>,
        seed: SeedInfo,
        seed_tar: Vec<u8>,
        prepared_secrets: Vec<secrets::Prepared>,
    ) -> Result<WorkspaceInfo> {
        // Record first, boot second: the record (state `creating`, naming this process) is in
        // place before anything runs, under the exclusive lifecycle lock held until the
        // workspace is ready. It is staged in `.creating-<id>` and renamed into place, so a
        // workspace directory never lacks its record.
        let staging = WorkspaceDir::new(
            dir.root.parent().expect("workspace dirs have a parent"),
            &format!("{STAGING_PREFIX}{}", dir.id),
        );
        crate::util::create_private_dir(&staging.root)
            .map_err(|e| Error::io(format!("creating {}", staging.root.display()), e))?;
        let _life = staging.lifecycle_exclusive().await?;
        // Declared after the lock, so it runs before the lock is released: on any error, and
        // when this future is dropped (MCP cancel, Ctrl-C), the VM is killed and the
        // half-created workspace removed. A kill -9 skips it; the orphan sweep covers that.
        let mut cleanup = CreationCleanup { dirs: vec![staging.root.clone(), dir.root.clone()], armed: true };
        let now = now_f64();
        let idle_pause_seconds = opts.idle_pause_seconds.filter(|s| *s > 0);
        let mut record = WorkspaceRecord {
            layout_version: LAYOUT_VERSION,
            workspace_id: dir.id.clone(),
            environment: env.name.clone(),
            environment_version: crate::env::ENVIRONMENT_VERSION.into(),
            vcpu_count: opts.vcpu_count,
            mem_mib: opts.mem_mib,
            ttl_seconds: opts.ttl_seconds,
            created_at: now,
            expires_at: now + opts.ttl_seconds as f64,
            state: WorkspaceState::Creating,
            network_policy,
            allow_host_compat: opts.allow_host_compat,
            last_error: None,
            name,
            labels,
            last_activity_at: now,
            command_count: 0,
            last_command: None,
            workspace_seed: seed,
            secrets: vec![],
            reset_count: 0,
            last_reset_at: None,
            service_count: 0,
            running_service_count: 0,
            backend: Backend::NotChosen,
            accel: None,
            execution_mode: ExecutionMode::Pending,
            metadata: BTreeMap::new(),
            disk_format: pyro_vmm::DiskFormat::Raw,
            disk_base: None,
            idle_pause_seconds,
            creator: crate::util::ProcessIdentity::current(),
        };
        staging.save(&record)?;
        std::fs::rename(&staging.root, &dir.root)
            .map_err(|e| Error::io(format!("placing {}", dir.root.display()), e))?;
        for d in [dir.vm().path().to_path_buf(), dir.root.join("baseline"), dir.snapshots_dir(), dir.commands_dir()] {
            crate::util::create_private_dir(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        crate::util::write_atomic(&dir.baseline_tar(), &seed_tar).map_err(|e| Error::io("storing the baseline", e))?;
        record.secrets = secrets::store(dir, &prepared_secrets)?;
        self.progress().report("disk", "copying the environment's disk for the workspace", Some(0.1));
        let (source, image) = (env.rootfs_image.clone(), dir.disk_image());
        let clone_mode = crate::blocking(move || Ok(pyro_vmm::clone_disk(&source, &image)?)).await?;
        record.metadata.insert("rootfs_clone_mode".into(), clone_mode.into());
        self.boot_workspace(dir, env, &mut record).await?;
        self.progress().report("seed", format!("seeding /workspace ({} bytes of archive)", seed_tar.len()), Some(0.8));
        let (entries, bytes) = dir.machine().push_archive(&seed_tar[..], WORKSPACE_PATH).await?;
        self.progress().report("ready", "workspace started", Some(1.0));
        record.workspace_seed.entry_count = entries;
        record.workspace_seed.bytes_written = bytes;
        record.creator = None;
        dir.save(&record)?;
        cleanup.armed = false;
        Ok(info_of(&record))
    }

    /// Boot the workspace's disk and mark the record started (not saved here).
    async fn boot_workspace(
        &self,
        dir: &WorkspaceDir,
        env: &crate::env::InstalledEnvironment,
        record: &mut WorkspaceRecord,
    ) -> Result<()> {
        let disk = dir.disk_path(record);
        let format = record.disk_format;
        self.boot_workspace_disk(dir, env, record, &disk, format).await
    }

    /// [`Pyro::boot_workspace`] on another disk image (a reset boots its new disk before it
    /// replaces the old one).
    async fn boot_workspace_disk(
        &self,
        dir: &WorkspaceDir,
        env: &crate::env::InstalledEnvironment,
        record: &mut WorkspaceRecord,
        disk: &std::path::Path,
        disk_format: pyro_vmm::DiskFormat,
    ) -> Result<()> {
        self.progress().report("boot", "booting the workspace VM", Some(0.3));
        // A cold boot: a memory state left behind belongs to a disk that is about to move on
        // and must never be restored afterwards.
        pyro_vmm::MemoryState::discard(&dir.vm())?;
        let choice = self.choose_backend_for(env, record.allow_host_compat).await?;
        if choice.kind != Backend::Qemu {
            return Err(Error::HostRequirement(format!(
                "workspaces need a VM backend; {} is not supported for workspaces ({})",
                choice.kind.as_str(),
                choice.reason
            )));
        }
        let req = BootRequest {
            dir: dir.vm(),
            vm_id: dir.id.clone(),
            vcpu_count: record.vcpu_count,
            mem_mib: record.mem_mib,
            network: record.network_policy,
            disk: disk.to_path_buf(),
            snapshot: false,
            owner_pid: None,
            remove_dir_on_exit: false,
            disk_format,
            idle_pause: pause::idle_pause_of(dir, record),
            hostname: Some(pause::hostname_of(&dir.id)),
        };
        let launched = self.launch(env, &choice, req).await?;
        if !record.secrets.is_empty() {
            let values = secrets::load(dir, &record.secrets)?;
            secrets::install(&launched.machine, &values).await?;
        }
        record.state = WorkspaceState::Started;
        record.backend = choice.kind;
        record.accel = Some(launched.accel.as_str().into());
        record.execution_mode = ExecutionMode::GuestVsock;
        record.last_error = None;
        record.metadata.extend(launched.metadata);
        Ok(())
    }

    /// Stop every workspace whose TTL passed (disk kept; `last_error` says why).
    pub async fn reap_expired_workspaces(&self) -> Vec<String> {
        let now = now_f64();
        let mut stopped = Vec::new();
        for dir in self.all_workspace_dirs() {
            let Ok(r) = dir.load() else { continue };
            let running = matches!(r.state, WorkspaceState::Started | WorkspaceState::Paused) || dir.vm().is_running();
            if r.expires_at <= now && running && self.expire(&dir).await.is_ok() {
                stopped.push(dir.id.clone());
            }
        }
        stopped
    }

    async fn expire(&self, dir: &WorkspaceDir) -> Result<()> {
        let _life = dir.lifecycle_exclusive().await?;
        // A paused workspace is resumed so it stops like a running one (or, when its state
        // is unusable, the state is discarded: it is stopped either way, disk kept).
        let _ = self.resume_to_stop(dir).await;
        end_sessions_if_running(dir).await;
        dir.machine().shutdown(STOP_TIMEOUT).await?;
        dir.update(|r| {
            forget_sessions(dir, r);
            r.state = WorkspaceState::Stopped;
            r.last_error = Some(format!(
                "workspace expired at {:.0} (ttl_seconds {}); it was stopped and its disk kept: `pyro workspace update {} --ttl-seconds N` extends it and `pyro workspace start` boots it again",
                r.expires_at, r.ttl_seconds, r.workspace_id
            ));
            Ok(())
        })?;
        Ok(())
    }

    /// Enter an operation that needs the running VM: a workspace whose TTL passed is stopped
    /// first (under the exclusive lifecycle lock), then the shared lifecycle lock is taken
    /// and held by the caller for the whole operation, so no stop, reset or delete can pull
    /// the VM away midway.
    pub(crate) async fn enter_started(&self, dir: &WorkspaceDir) -> Result<store::FileLock> {
        if reset::has_intent(dir) {
            let _life = dir.lifecycle_exclusive().await?;
            reset::recover(dir).await?;
        }
        let record = dir.load()?;
        if record.expires_at <= now_f64() && matches!(record.state, WorkspaceState::Started | WorkspaceState::Paused) {
            self.expire(dir).await.ok();
        }
        dir.lifecycle_shared().await
    }

    /// The workspace's current record. A VM that died is reported `stopped` with `last_error`;
    /// service counts are refreshed from the guest (bounded to 5 s).
    pub async fn status_workspace(&self, workspace_id: &str) -> Result<WorkspaceInfo> {
        self.ws_dir(workspace_id)?;
        self.sweep_orphans().await;
        let dir = self.ws_dir(workspace_id)?;
        // A reset killed midway is settled here too, unless a reset is running right now.
        if reset::has_intent(&dir) {
            if let Some(_life) = dir.try_lifecycle_exclusive()? {
                reset::recover(&dir).await?;
            }
        }
        let record = refresh_liveness(&dir)?;
        if record.state == WorkspaceState::Started && record.service_count > 0 {
            // Services may have exited on their own since the last service call: ask the
            // guest, but never let a slow guest hold up a status.
            let refreshed =
                tokio::time::timeout(Duration::from_secs(5), services::refresh_services(&dir, &record)).await;
            if let Ok(Ok(_)) = refreshed {
                return Ok(info_of(&dir.load()?));
            }
        }
        Ok(info_of(&record))
    }

    /// Every workspace, most recently active first. Workspaces whose TTL passed are stopped first.
    pub async fn list_workspaces(&self) -> Result<WorkspaceList> {
        self.sweep_orphans().await;
        self.reap_expired_workspaces().await;
        // `refresh_liveness`: a workspace the supervisor paused while idle (or whose VM
        // died) is listed as it is, not as its record last said.
        let mut items: Vec<WorkspaceListItem> = self
            .all_workspace_dirs()
            .iter()
            .filter_map(|d| refresh_liveness(d).ok())
            .map(|r| list_item_of(&r))
            .collect();
        items.sort_by(|a, b| {
            b.last_activity_at
                .total_cmp(&a.last_activity_at)
                .then(b.created_at.total_cmp(&a.created_at))
                .then(a.workspace_id.cmp(&b.workspace_id))
        });
        Ok(WorkspaceList { count: items.len(), workspaces: items })
    }

    /// Change name, labels or TTL (works in any state). A new `ttl_seconds` makes the workspace
    /// expire that many seconds from now. Refused if nothing would change.
    pub async fn update_workspace(&self, workspace_id: &str, opts: UpdateWorkspaceOptions) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        if opts.name.is_some() && opts.clear_name {
            return Err(Error::InvalidInput("name and clear_name cannot be used together".into()));
        }
        let name = opts.name.as_deref().map(pyro_tree::names::validate_workspace_name).transpose()?;
        let mut labels = BTreeMap::new();
        for (k, v) in &opts.labels {
            let (k, v) = pyro_tree::names::validate_label(k, v)?;
            labels.insert(k, v);
        }
        let mut clear = Vec::new();
        for k in &opts.clear_labels {
            let k = k.trim();
            if k.is_empty() {
                return Err(Error::InvalidInput("label key to clear must not be empty".into()));
            }
            clear.push(k.to_string());
        }
        if let Some(ttl) = opts.ttl_seconds {
            validate_resources(1, 1024, ttl)?;
        }
        pause::validate_idle_pause(opts.idle_pause_seconds)?;
        let (record, _) = dir.update(|r| {
            let before = r.clone();
            if let Some(n) = &name {
                r.name = Some(n.clone());
            }
            if opts.clear_name {
                r.name = None;
            }
            for (k, v) in &labels {
                r.labels.insert(k.clone(), v.clone());
            }
            for k in &clear {
                r.labels.remove(k);
            }
            if let Some(ttl) = opts.ttl_seconds {
                r.ttl_seconds = ttl;
                r.expires_at = now_f64() + ttl as f64;
            }
            if let Some(idle) = opts.idle_pause_seconds {
                r.idle_pause_seconds = (idle > 0).then_some(idle);
            }
            if *r == before {
                return Err(Error::InvalidInput("workspace update requested no effective metadata change".into()));
            }
            r.last_activity_at = now_f64();
            Ok(())
        })?;
        if opts.idle_pause_seconds.is_some() && record.state == WorkspaceState::Started {
            // A running VM's supervisor takes the new idle time at once. Best effort: a VM
            // that just went away (stopped, paused) gets it from the record at its next
            // start or resume anyway.
            let _ = dir.machine().set_idle_pause(pause::idle_pause_of(&dir, &record).as_ref()).await;
        }
        Ok(info_of(&record))
    }

    /// Delete a workspace and everything it has on the host (any state, even expired).
    pub async fn delete_workspace(&self, workspace_id: &str) -> Result<DeleteWorkspaceResult> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = dir.lifecycle_exclusive().await?;
        dir.machine().shutdown(Duration::ZERO).await?;
        std::fs::remove_dir_all(&dir.root).map_err(|e| Error::io(format!("removing {}", dir.root.display()), e))?;
        // A base only this workspace used goes with it.
        self.remove_unused_bases();
        Ok(DeleteWorkspaceResult { workspace_id: dir.id, deleted: true })
    }

    /// Stop: clean guest shutdown (sync, unmount, poweroff) with a bounded wait, then the
    /// VMM is ended. Idempotent. The disk keeps `/workspace`.
    pub async fn stop_workspace(&self, workspace_id: &str) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = dir.lifecycle_exclusive().await?;
        reset::recover(&dir).await?;
        // Paused: resume it first, so its services and shells end and its filesystems are
        // unmounted as in any stop. An unusable state is discarded (stopped, disk kept).
        let (resumed, resume_error) = self.resume_to_stop(&dir).await;
        self.progress().report("sessions", "ending services (TERM, then KILL after 5 s) and shells", Some(0.1));
        end_sessions_if_running(&dir).await;
        self.progress().report("shutdown", "flushing and shutting the guest down", Some(0.5));
        let shut = dir.machine().shutdown(STOP_TIMEOUT).await;
        let (record, _) = dir.update(|r| {
            forget_sessions(&dir, r);
            r.state = WorkspaceState::Stopped;
            r.last_error = shut.as_ref().err().map(|e| e.to_string()).or_else(|| resume_error.clone());
            r.last_activity_at = now_f64();
            Ok(())
        })?;
        shut?;
        let mut info = info_of(&record);
        info.workspace_resume = resumed;
        Ok(info)
    }

    /// Start: boot the same disk again (a no-op on a started workspace). A paused workspace
    /// is resumed; when its memory state is unusable it is discarded and the disk boots cold.
    pub async fn start_workspace(&self, workspace_id: &str) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = dir.lifecycle_exclusive().await?;
        reset::recover(&dir).await?;
        let mut record = refresh_liveness(&dir)?;
        if record.state == WorkspaceState::Paused && record.expires_at > now_f64() {
            match self.resume_locked(&dir).await {
                Ok((record, resumed)) => {
                    let mut info = info_of(&record);
                    info.workspace_resume = Some(resumed);
                    return Ok(info);
                }
                // The state was unusable and is gone now: boot the disk cold below.
                Err(_) if dir.load()?.state == WorkspaceState::Stopped => record = dir.load()?,
                Err(e) => return Err(e),
            }
        }
        if record.state == WorkspaceState::Started && dir.vm().is_running() {
            let (record, _) = dir.update(|r| {
                r.last_activity_at = now_f64();
                Ok(())
            })?;
            return Ok(info_of(&record));
        }
        if record.expires_at <= now_f64() {
            return Err(Error::InvalidState(format!(
                "workspace '{}' has expired; extend it first with `pyro workspace update {} --ttl-seconds N`",
                dir.id, dir.id
            )));
        }
        // A VMM or supervisor killed earlier may have left pids and sockets behind.
        dir.machine().shutdown(Duration::ZERO).await.ok();
        let env = self.ensure_environment(&record.environment).await?;
        let booted = self.boot_workspace(&dir, &env, &mut record).await;
        let (record, _) = dir.update(|r| {
            forget_sessions(&dir, r);
            match &booted {
                Ok(()) => mark_booted(r, &record),
                Err(e) => {
                    r.state = WorkspaceState::Stopped;
                    r.last_error = Some(e.to_string());
                }
            }
            r.last_activity_at = now_f64();
            Ok(())
        })?;
        booted?;
        Ok(info_of(&record))
    }
}
