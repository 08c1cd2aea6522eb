//! Pause, resume and fork: a workspace's guest memory and device state saved on the host
//! ([`pyro_vmm::Machine::pause`]) and brought back ([`pyro_vmm::Machine::restore`]) with its
//! processes as they were, and copy-on-write branches of one workspace.
//!
//! Crash safety, step by step:
//! - pause: the runtime writes the state atomically and only then ends QEMU; the record
//!   is updated last. A pyro killed in between leaves a dead supervisor with a valid state,
//!   which [`refresh_liveness`](super::refresh_liveness) reports `paused` (that is also how
//!   the supervisor's own idle pause shows up).
//! - resume: `resume.json` (naming the resuming process) is written before the restore and
//!   removed after the state was discarded and the record says `started`. A resume whose
//!   process died is settled by [`settle_interrupted_resume`]: a VM that runs is kept
//!   (`started`); without one the state is discarded (a VM may have run from it and moved
//!   the disk on) and the workspace is `stopped`, its disk kept.
//! - fork: the parent's disk is frozen into a read-only base in `$PYRO_HOME/bases/` and
//!   the parent continues on a qcow2 overlay of it (overlay placed, then record committed);
//!   children are staged like creations (`.creating-<id>`, swept if their creator dies).

use super::store::{WorkspaceDir, WorkspaceRecord};
use super::{info_of, WorkspaceInfo};
use crate::boot::BootRequest;
use crate::util::{new_id, now_f64};
use crate::{Error, Pyro, Result, WorkspaceState};
use pyro_vmm::{DiskFormat, MemoryState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a pause may take (quiesce, guest sync, RAM save) before it is given up (the VM
/// then keeps running).
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest `idle_pause_seconds` (one day).
pub const MAX_IDLE_PAUSE_SECONDS: u64 = 86_400;
/// Most children one `fork_workspace` call makes.
pub const MAX_FORK_COUNT: u32 = 8;

/// What `pause_workspace` saved (`workspace_pause` of its payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PauseInfo {
    /// Size of the saved memory and device state in bytes (only pages the guest touched
    /// cost bytes).
    pub state_bytes: u64,
    /// Wall time of the pause in milliseconds (quiesce, guest sync, save, QEMU end).
    pub pause_ms: u64,
    /// Guest memory in MiB, for comparison with `state_bytes`.
    pub mem_mib: u32,
}

/// How a paused workspace was brought back (`workspace_resume` of a payload).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResumeInfo {
    /// Wall time of the resume in milliseconds (QEMU start, state load, agent handshake).
    pub resume_ms: u64,
    /// Size of the memory state it was resumed from, in bytes.
    pub state_bytes: u64,
}

/// Options of [`Pyro::fork_workspace`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ForkOptions {
    /// How many workspaces to make, 1..=8 (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Names of the new workspaces, in order (at most `count`; the rest get none). Same rules
    /// as a workspace name.
    #[serde(default)]
    pub names: Vec<String>,
}

fn one() -> u32 {
    1
}

impl ForkOptions {
    /// One child, no name.
    pub fn new() -> Self {
        ForkOptions { count: 1, names: Vec::new() }
    }
}

impl Default for ForkOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Payload of `fork_workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ForkResult {
    /// Id of the workspace forked from.
    pub workspace_id: String,
    /// Its state when the fork began: `started` (it was paused for the fork and resumed
    /// after), `paused` (it stays paused) or `stopped` (children are made from its disk
    /// alone and are stopped too).
    pub source_state: WorkspaceState,
    /// Whether the children were restored from the parent's memory (running processes,
    /// shells and services included) rather than made from its disk alone.
    pub memory_restored: bool,
    /// Number of new workspaces.
    pub count: usize,
    /// The new workspaces, in the order of `names`.
    pub workspaces: Vec<WorkspaceInfo>,
    /// Wall time of the whole fork in milliseconds.
    pub fork_ms: u64,
}

/// 0 or absent: off; otherwise 1..=[`MAX_IDLE_PAUSE_SECONDS`].
pub(crate) fn validate_idle_pause(seconds: Option<u64>) -> Result<()> {
    match seconds {
        Some(s) if s > MAX_IDLE_PAUSE_SECONDS => Err(Error::InvalidInput(format!(
            "idle_pause_seconds must be between 1 and {MAX_IDLE_PAUSE_SECONDS} (0 turns the idle pause off)"
        ))),
        _ => Ok(()),
    }
}

/// The supervisor's idle pause for this workspace: it try-locks the lifecycle lock, so it
/// never pauses while a call holds it.
pub(crate) fn idle_pause_of(dir: &WorkspaceDir, record: &WorkspaceRecord) -> Option<pyro_vmm::IdlePause> {
    record
        .idle_pause_seconds
        .filter(|s| *s > 0)
        .map(|s| pyro_vmm::IdlePause { after: Duration::from_secs(s), lock_path: dir.lifecycle_lock_path() })
}

/// The guest hostname of a workspace: derived from its id, so every fork gets its own.
pub(crate) fn hostname_of(workspace_id: &str) -> String {
    format!("pyro-{workspace_id}")
}

/// `last_error` / error text for a memory state that cannot be used.
pub(crate) fn unusable_state_message(workspace_id: &str, why: &str) -> String {
    format!(
        "the saved memory state of workspace '{workspace_id}' cannot be used ({why}); it was discarded and the \
         workspace stopped with its disk kept: `pyro workspace start {workspace_id}` boots it from its disk"
    )
}

/// `resume.json`: who is resuming the workspace.
#[derive(Debug, Serialize, Deserialize)]
struct ResumeIntent {
    resumer: Option<crate::util::ProcessIdentity>,
}

fn write_resume_intent(dir: &WorkspaceDir) -> Result<()> {
    let intent = ResumeIntent { resumer: crate::util::ProcessIdentity::current() };
    crate::util::write_atomic(&dir.resume_intent(), &serde_json::to_vec(&intent).expect("intent serializes"))
        .map_err(|e| Error::io("writing the resume record", e))
}

fn remove_resume_intent(dir: &WorkspaceDir) {
    let _ = std::fs::remove_file(dir.resume_intent());
}

/// Settle a resume whose process died (kill -9 mid-resume). A resume in progress (its
/// process alive) is left alone.
pub(crate) fn settle_interrupted_resume(dir: &WorkspaceDir) -> Result<()> {
    let Ok(bytes) = std::fs::read(dir.resume_intent()) else { return Ok(()) };
    let intent: Option<ResumeIntent> = serde_json::from_slice(&bytes).ok();
    if intent.as_ref().and_then(|i| i.resumer.as_ref()).is_some_and(|p| p.is_alive()) {
        return Ok(());
    }
    let running = dir.vm().is_running();
    // Either way the state is spent: the VM that runs came from it, or one may have run
    // from it and written to the disk.
    MemoryState::discard(&dir.vm())?;
    dir.update(|r| {
        if r.state == WorkspaceState::Paused || r.state == WorkspaceState::Started {
            if running {
                r.state = WorkspaceState::Started;
                r.last_error = None;
            } else {
                r.state = WorkspaceState::Stopped;
                r.last_error = Some(format!(
                    "a resume of workspace '{}' was interrupted; its memory state was discarded and the workspace \
                     stopped with its disk kept: `pyro workspace start {}` boots it",
                    r.workspace_id, r.workspace_id
                ));
            }
        }
        Ok(())
    })?;
    if !running {
        dir.vm().clean_stale_files();
    }
    remove_resume_intent(dir);
    Ok(())
}

/// A base's sidecar (`<base>.json`): what it is backed by, so unused bases can be found.
#[derive(Debug, Serialize, Deserialize)]
struct BaseInfo {
    format: DiskFormat,
    backing: Option<PathBuf>,
    frozen_from: String,
    created_at: f64,
}

/// Most frozen bases under one disk. Every fork of a workspace puts its disk one base
/// deeper; past this the chain is first flattened into one raw disk (a copy, but only once
/// every so many forks), so reads never walk a long chain and the offline disk tools (16
/// backing files at most) can always read it.
pub(crate) const MAX_BASE_CHAIN: usize = 8;

/// How many bases lie under a disk whose record names `base` (following the sidecars).
fn chain_depth(base: Option<&Path>) -> usize {
    let mut depth = 0;
    let mut next = base.map(Path::to_path_buf);
    while let Some(b) = next {
        depth += 1;
        if depth > 64 {
            break;
        }
        next = std::fs::read(sidecar(&b))
            .ok()
            .and_then(|t| serde_json::from_slice::<BaseInfo>(&t).ok())
            .and_then(|i| i.backing);
    }
    depth
}

fn sidecar(base: &Path) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

impl Pyro {
    /// `$PYRO_HOME/bases`: frozen, read-only disk images forks share.
    fn bases_dir(&self) -> PathBuf {
        self.paths().home.join("bases")
    }

    fn bases_lock(&self) -> PathBuf {
        self.bases_dir().join(".lock")
    }

    /// Remove the bases no workspace uses any more (directly or as a base's backing). Skipped
    /// while a fork is freezing a disk (it holds the bases lock).
    pub(crate) fn remove_unused_bases(&self) {
        let dir = self.bases_dir();
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        let Ok(Some(_lock)) = pyro_sys::try_lock(&self.bases_lock(), pyro_sys::LockMode::Exclusive) else { return };
        let mut live: Vec<PathBuf> = Vec::new();
        if let Ok(ws) = std::fs::read_dir(self.paths().workspaces_dir()) {
            for e in ws.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
                let d = WorkspaceDir::new(&self.paths().workspaces_dir(), &name);
                if let Ok(r) = d.load() {
                    live.extend(r.disk_base);
                } else if d.root.is_dir() && d.root.join("workspace.json").exists() {
                    // A record that does not parse: keep every base rather than guess.
                    return;
                }
            }
        }
        let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
        while let Some(b) = live.pop() {
            if keep.insert(b.clone()) {
                let info = std::fs::read(sidecar(&b)).ok().and_then(|t| serde_json::from_slice::<BaseInfo>(&t).ok());
                live.extend(info.and_then(|i| i.backing));
            }
        }
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with(".json") {
                continue;
            }
            if !keep.contains(&p) {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(sidecar(&p));
            }
        }
    }

    /// Pause a running workspace: its guest memory and device state (processes, shells,
    /// services, `/run` with the secrets, open files) and a consistent disk are saved under
    /// the workspace directory and its VM ends: no process runs for it any more. `status`
    /// shows `paused`; [`resume_workspace`](Pyro::resume_workspace), or any call that needs
    /// the guest (exec, files, shells, services), brings it back. A pause that fails leaves
    /// the workspace running. A stopped workspace cannot be paused; pausing a paused one
    /// changes nothing.
    pub async fn pause_workspace(&self, workspace_id: &str) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = dir.lifecycle_exclusive().await?;
        super::reset::recover(&dir).await?;
        let record = super::refresh_liveness(&dir)?;
        if record.expires_at <= now_f64() && record.state == WorkspaceState::Started {
            drop(_life);
            self.expire(&dir).await.ok();
            return Err(Error::InvalidState(format!(
                "workspace '{}' expired and was stopped (disk kept); extend it with `pyro workspace update {} --ttl-seconds N`, then start it",
                dir.id, dir.id
            )));
        }
        match record.state {
            WorkspaceState::Started => {}
            WorkspaceState::Paused => {
                let mut info = info_of(&record);
                info.workspace_pause = MemoryState::load(&dir.vm()).ok().flatten().map(|s| PauseInfo {
                    state_bytes: s.meta.state_bytes,
                    pause_ms: s.meta.pause_ms,
                    mem_mib: record.mem_mib,
                });
                return Ok(info);
            }
            WorkspaceState::Stopped => {
                return Err(Error::InvalidState(format!(
                    "workspace '{}' is stopped: there is no running guest to pause (its disk is kept); \
                     `pyro workspace start {}` boots it",
                    dir.id, dir.id
                )))
            }
            WorkspaceState::Creating => {
                return Err(Error::InvalidState(format!("workspace '{}' is still being created", dir.id)))
            }
        }
        let (record, info) = self.pause_locked(&dir, true).await?;
        let mut out = info_of(&record);
        out.workspace_pause = Some(info);
        Ok(out)
    }

    /// The pause itself; the caller holds the exclusive lifecycle lock and checked the
    /// workspace runs.
    async fn pause_locked(&self, dir: &WorkspaceDir, activity: bool) -> Result<(WorkspaceRecord, PauseInfo)> {
        self.progress().report("pause", "saving the guest's memory and device state", Some(0.2));
        let paused = dir.machine().pause(PAUSE_TIMEOUT).await?;
        crate::workspace::ops::crash_point("pause:saved");
        let (record, _) = dir.update(|r| {
            r.state = WorkspaceState::Paused;
            r.last_error = None;
            if activity {
                r.last_activity_at = now_f64();
            }
            Ok(())
        })?;
        dir.vm().clean_stale_files();
        let info = PauseInfo { state_bytes: paused.state_bytes, pause_ms: paused.pause_ms, mem_mib: record.mem_mib };
        Ok((record, info))
    }

    /// Resume a paused workspace: its guest continues where it was paused (same processes,
    /// PIDs, shells, services, published ports). A running workspace is refused (nothing to
    /// resume), and so is a stopped one (`start_workspace` boots it). A memory state that
    /// cannot be used (truncated, made by another QEMU) is discarded: the workspace is then
    /// stopped with its disk kept, and the error says so.
    pub async fn resume_workspace(&self, workspace_id: &str) -> Result<WorkspaceInfo> {
        let dir = self.ws_dir(workspace_id)?;
        let _life = dir.lifecycle_exclusive().await?;
        super::reset::recover(&dir).await?;
        let record = super::refresh_liveness(&dir)?;
        match record.state {
            WorkspaceState::Paused => {}
            WorkspaceState::Started => {
                return Err(Error::InvalidState(format!(
                    "workspace '{}' is running, not paused: there is nothing to resume \
                     (`pyro workspace pause {}` pauses it)",
                    dir.id, dir.id
                )))
            }
            WorkspaceState::Stopped => {
                return Err(Error::InvalidState(format!(
                    "workspace '{}' is stopped, not paused: there is no saved memory to resume; \
                     `pyro workspace start {}` boots it from its disk",
                    dir.id, dir.id
                )))
            }
            WorkspaceState::Creating => {
                return Err(Error::InvalidState(format!("workspace '{}' is still being created", dir.id)))
            }
        }
        if record.expires_at <= now_f64() {
            drop(_life);
            self.expire(&dir).await.ok();
            return Err(Error::InvalidState(format!(
                "workspace '{}' expired and was stopped (disk kept); extend it with `pyro workspace update {} --ttl-seconds N`, then start it",
                dir.id, dir.id
            )));
        }
        let (record, resumed) = self.resume_locked(&dir).await?;
        let mut info = info_of(&record);
        info.workspace_resume = Some(resumed);
        Ok(info)
    }

    /// The resume itself; the caller holds the exclusive lifecycle lock and saw `paused`.
    /// An unusable state is discarded and the workspace marked stopped (then the error).
    pub(crate) async fn resume_locked(&self, dir: &WorkspaceDir) -> Result<(WorkspaceRecord, ResumeInfo)> {
        let record = dir.load()?;
        let vm = dir.vm();
        let state = match MemoryState::load(&vm) {
            Ok(Some(s)) => s,
            Ok(None) => {
                let message = unusable_state_message(&dir.id, "there is no saved memory state");
                self.mark_state_unusable(dir, &message)?;
                return Err(Error::InvalidState(message));
            }
            Err(e) => {
                let message = unusable_state_message(&dir.id, &e.to_string());
                self.mark_state_unusable(dir, &message)?;
                return Err(Error::InvalidState(message));
            }
        };
        let env = self.ensure_environment(&record.environment).await?;
        let choice = self.choose_backend_for(&env, record.allow_host_compat).await?;
        let req = self.request_for(dir, &record);
        self.progress().report("resume", "restoring the guest's memory and device state", Some(0.3));
        let started = Instant::now();
        write_resume_intent(dir)?;
        crate::workspace::ops::crash_point("resume:intent");
        let launched = match self.relaunch(&env, &choice, req, &state).await {
            Ok(l) => l,
            Err(e) => {
                remove_resume_intent(dir);
                // The state was refused (shape changed) or QEMU could not load it: it will
                // never load here. Anything else (a missing host tool) may pass: stay paused.
                if matches!(e, Error::InvalidState(_) | Error::Boot(_)) {
                    let message = unusable_state_message(&dir.id, &e.to_string());
                    self.mark_state_unusable(dir, &message)?;
                    return Err(Error::InvalidState(message));
                }
                return Err(e);
            }
        };
        crate::workspace::ops::crash_point("resume:restored");
        // The guest runs and will write to the disk: its old memory must never be loaded again.
        MemoryState::discard(&vm)?;
        let resume_ms = started.elapsed().as_millis() as u64;
        let (record, _) = dir.update(|r| {
            r.state = WorkspaceState::Started;
            r.backend = pyro_vmm::Backend::Qemu;
            r.accel = Some(launched.accel.as_str().into());
            r.execution_mode = crate::ExecutionMode::GuestVsock;
            r.last_error = None;
            r.last_activity_at = now_f64();
            r.metadata.insert("resume_ms".into(), resume_ms.to_string());
            Ok(())
        })?;
        remove_resume_intent(dir);
        Ok((record, ResumeInfo { resume_ms, state_bytes: state.meta.state_bytes }))
    }

    /// Discard an unusable memory state and mark the workspace stopped (disk kept).
    fn mark_state_unusable(&self, dir: &WorkspaceDir, message: &str) -> Result<()> {
        MemoryState::discard(&dir.vm())?;
        dir.vm().clean_stale_files();
        dir.update(|r| {
            super::forget_sessions(dir, r);
            r.state = WorkspaceState::Stopped;
            r.last_error = Some(message.to_string());
            Ok(())
        })?;
        Ok(())
    }

    /// A paused workspace about to be stopped (stop, TTL expiry): resume it so it stops
    /// cleanly. When it cannot be resumed its state is discarded (the disk, synced at pause,
    /// stays) and the reason is returned as the error, for `last_error`. The caller holds
    /// the exclusive lifecycle lock.
    pub(crate) async fn resume_to_stop(&self, dir: &WorkspaceDir) -> (Option<ResumeInfo>, Option<String>) {
        match super::refresh_liveness(dir) {
            Ok(r) if r.state == WorkspaceState::Paused => {}
            _ => return (None, None),
        }
        match self.resume_locked(dir).await {
            Ok((_, resumed)) => (Some(resumed), None),
            Err(e) => {
                MemoryState::discard(&dir.vm()).ok();
                let message = match e {
                    Error::InvalidState(m) => m,
                    other => unusable_state_message(&dir.id, &other.to_string()),
                };
                (None, Some(message))
            }
        }
    }

    /// The boot request of a workspace as recorded (disk, format, idle pause, hostname).
    fn request_for(&self, dir: &WorkspaceDir, record: &WorkspaceRecord) -> BootRequest {
        BootRequest {
            dir: dir.vm(),
            vm_id: dir.id.clone(),
            vcpu_count: record.vcpu_count,
            mem_mib: record.mem_mib,
            network: record.network_policy,
            disk: dir.disk_path(record),
            snapshot: false,
            owner_pid: None,
            remove_dir_on_exit: false,
            disk_format: record.disk_format,
            idle_pause: idle_pause_of(dir, record),
            hostname: Some(hostname_of(&dir.id)),
        }
    }

    /// Enter a call that needs the running guest, resuming a paused workspace first (under
    /// the exclusive lifecycle lock, then back to the shared one). Returns how the resume
    /// went when there was one, for the payload.
    pub(crate) async fn enter_started_call_resuming(
        &self,
        dir: &WorkspaceDir,
        op: &str,
    ) -> Result<(super::store::FileLock, WorkspaceRecord, Option<ResumeInfo>)> {
        let mut resumed = None;
        // A pause can slip in between the exclusive lock and the shared one (another
        // caller's pause, the idle pause): try a few times.
        for _ in 0..3 {
            let (life, record) = self.enter_started_call_inner(dir, op).await?;
            if record.state != WorkspaceState::Paused {
                return Ok((life, record, resumed));
            }
            drop(life);
            let exclusive = dir.lifecycle_exclusive().await?;
            if super::refresh_liveness(dir)?.state == WorkspaceState::Paused {
                self.progress().report("resume", "resuming the paused workspace", Some(0.1));
                let (_, r) = self.resume_locked(dir).await?;
                resumed = Some(r);
            }
            drop(exclusive);
        }
        Err(Error::InvalidState(format!(
            "workspace '{}' was paused again while {op} was resuming it; retry the call",
            dir.id
        )))
    }

    /// Fork a workspace into `count` new ones, each with its own copy-on-write disk and,
    /// from a running or paused workspace, its own copy of the guest's memory: processes,
    /// shells, services and files are as they were in the parent, and from then on every
    /// workspace is independent. Each child gets a new id, hostname and fresh kernel
    /// entropy before any command runs. A running parent is paused for the fork and resumed
    /// after; a paused one stays paused. A stopped parent gives stopped children made from
    /// its disk alone. Never copies a disk: the parent's disk is frozen into a read-only
    /// base shared by all of them (removed when no workspace uses it). Published ports are
    /// the parent's and are not carried over. A failure leaves no child behind.
    pub async fn fork_workspace(&self, workspace_id: &str, opts: &ForkOptions) -> Result<ForkResult> {
        if opts.count == 0 || opts.count > MAX_FORK_COUNT {
            return Err(Error::InvalidInput(format!("count must be between 1 and {MAX_FORK_COUNT}")));
        }
        if opts.names.len() > opts.count as usize {
            return Err(Error::InvalidInput(format!(
                "{} names given for {} new workspaces; give at most count names",
                opts.names.len(),
                opts.count
            )));
        }
        let names: Vec<String> = opts
            .names
            .iter()
            .map(|n| pyro_tree::names::validate_workspace_name(n))
            .collect::<std::result::Result<_, _>>()?;
        let parent = self.ws_dir(workspace_id)?;
        let started = Instant::now();
        let life = parent.lifecycle_exclusive().await?;
        super::reset::recover(&parent).await?;
        let record = super::refresh_liveness(&parent)?;
        if record.expires_at <= now_f64() {
            return Err(Error::InvalidState(format!(
                "workspace '{}' has expired; extend it first with `pyro workspace update {} --ttl-seconds N`",
                parent.id, parent.id
            )));
        }
        let source_state = record.state;
        if source_state == WorkspaceState::Creating {
            return Err(Error::InvalidState(format!("workspace '{}' is still being created", parent.id)));
        }
        let from_memory = matches!(source_state, WorkspaceState::Started | WorkspaceState::Paused);
        if from_memory {
            let limit = super::max_running_vms();
            if self.running_vm_count() + opts.count as usize > limit {
                return Err(Error::InvalidState(format!(
                    "forking {} running workspaces would pass the limit of {limit} running VMs for this host \
                     (PYRO_MAX_RUNNING_VMS changes it); stop or delete a workspace first, or fork fewer",
                    opts.count
                )));
            }
        }
        let env = self.ensure_environment(&record.environment).await?;
        let choice = self.choose_backend_for(&env, record.allow_host_compat).await?;
        if source_state == WorkspaceState::Started {
            self.progress().report("pause", "pausing the workspace to fork it", Some(0.1));
            self.pause_locked(&parent, false).await?;
        }
        let result = self.fork_paused_or_stopped(&parent, &env, &choice, from_memory, opts.count, &names).await;
        let mut resume_error = None;
        if source_state == WorkspaceState::Started {
            self.progress().report("resume", "resuming the forked workspace", Some(0.9));
            if let Err(e) = self.resume_locked(&parent).await {
                resume_error = Some(e);
            }
        }
        drop(life);
        let children = match result {
            Ok(c) => c,
            Err(e) => {
                self.remove_unused_bases();
                return Err(e);
            }
        };
        if let Some(e) = resume_error {
            // The children exist; the parent could not be brought back (its state is
            // discarded and it is stopped, disk kept): say so rather than hide it.
            return Err(Error::InvalidState(format!(
                "forked {} workspaces ({}), but resuming '{}' afterwards failed: {e}",
                children.len(),
                children.iter().map(|c| c.workspace_id.as_str()).collect::<Vec<_>>().join(", "),
                parent.id
            )));
        }
        Ok(ForkResult {
            workspace_id: parent.id.clone(),
            source_state,
            memory_restored: from_memory,
            count: children.len(),
            workspaces: children,
            fork_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The fork proper, with the parent paused (its state saved) or stopped, under its
    /// exclusive lifecycle lock.
    async fn fork_paused_or_stopped(
        &self,
        parent: &WorkspaceDir,
        env: &crate::env::InstalledEnvironment,
        choice: &pyro_vmm::BackendChoice,
        from_memory: bool,
        count: u32,
        names: &[String],
    ) -> Result<Vec<WorkspaceInfo>> {
        let state = if from_memory {
            match MemoryState::load(&parent.vm()) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    return Err(Error::InvalidState(format!("workspace '{}' has no saved memory state", parent.id)))
                }
                Err(e) => {
                    let message = unusable_state_message(&parent.id, &e.to_string());
                    self.mark_state_unusable(parent, &message)?;
                    return Err(Error::InvalidState(message));
                }
            }
        } else {
            None
        };
        let record = parent.load()?;
        // The state was saved with the parent's current disk; check it still fits this host
        // before anything is changed.
        if let Some(s) = &state {
            let spec = self.boot_spec(env, choice, &self.request_for(parent, &record))?;
            if pyro_vmm::fingerprint(&spec) != s.meta.fingerprint {
                return Err(Error::InvalidState(format!(
                    "the saved memory state of workspace '{}' was made by a different VM shape (QEMU, kernel, agent or \
                     resources changed); resume or stop it first",
                    parent.id
                )));
            }
        }
        let record = if chain_depth(record.disk_base.as_deref()) >= MAX_BASE_CHAIN {
            self.progress().report("flatten", "flattening a long chain of forks into one disk", Some(0.2));
            self.flatten_chain(parent, record)?
        } else {
            record
        };
        self.progress().report("freeze", "freezing the disk as a shared read-only base", Some(0.3));
        let (record, base, base_format) = self.freeze_disk(parent, record)?;
        // The parent's state now pairs with the overlay: same bytes for the guest, another
        // format on the host (the fingerprint covers the format).
        let state = match state {
            Some(s) => {
                let spec = self.boot_spec(env, choice, &self.request_for(parent, &record))?;
                let mut meta = s.meta.clone();
                meta.disk_format = DiskFormat::Qcow2;
                meta.disk = parent.disk_path(&record);
                meta.fingerprint = pyro_vmm::fingerprint(&spec);
                crate::util::write_atomic(
                    &parent.vm().memory_meta(),
                    &serde_json::to_vec_pretty(&meta).expect("memory meta serializes"),
                )
                .map_err(|e| Error::io("recording the memory state's new disk format", e))?;
                Some(MemoryState { path: s.path, meta })
            }
            None => None,
        };
        // The children are restored side by side: each reads the same state (never
        // modified) onto its own overlay.
        self.progress().report("fork", format!("making {count} workspaces"), Some(0.4));
        let made = futures::future::join_all((0..count as usize).map(|i| {
            let name = names.get(i).cloned();
            self.make_child(parent, &record, &base, base_format, state.as_ref(), env, choice, name)
        }))
        .await;
        let mut infos = Vec::new();
        let mut first_error = None;
        let mut dirs = Vec::new();
        for m in made {
            match m {
                Ok((dir, info)) => {
                    dirs.push(dir);
                    infos.push(info);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // All or nothing: a child that failed cleaned up after itself; the others go too.
        if let Some(e) = first_error {
            for d in &dirs {
                super::reap_vm(&d.vm());
                super::remove_reaped_dir(&d.root);
            }
            return Err(e);
        }
        Ok(infos)
    }

    /// Put the parent back on one standalone raw disk (its overlay and whole chain written
    /// out as `rootfs.ext4`), so the next freeze starts a new, short chain. Crash-safe: the
    /// raw disk is complete before the record names it, and the old overlay goes only after.
    fn flatten_chain(&self, parent: &WorkspaceDir, record: WorkspaceRecord) -> Result<WorkspaceRecord> {
        let current = parent.disk_path(&record);
        pyro_vmm::flatten_disk(&current, record.disk_format, &parent.vm().disk())?;
        crate::workspace::ops::crash_point("fork:flattened");
        let (record, _) = parent.update(|r| {
            r.disk_format = DiskFormat::Raw;
            r.disk_base = None;
            Ok(())
        })?;
        if current != parent.vm().disk() {
            let _ = std::fs::remove_file(&current);
        }
        Ok(record)
    }

    /// Freeze the parent's current disk as a base and put the parent on a qcow2 overlay of
    /// it. Returns the committed record, the base and its format.
    fn freeze_disk(
        &self,
        parent: &WorkspaceDir,
        record: WorkspaceRecord,
    ) -> Result<(WorkspaceRecord, PathBuf, DiskFormat)> {
        let bases = self.bases_dir();
        crate::util::create_private_dir(&bases).map_err(|e| Error::io(format!("creating {}", bases.display()), e))?;
        // Held until the record names the new base: no cleanup removes it meanwhile.
        let _bases = pyro_sys::lock(&self.bases_lock(), pyro_sys::LockMode::Shared)
            .map_err(|e| Error::io("locking the bases directory", e))?;
        let format = record.disk_format;
        let current = parent.disk_path(&record);
        let ext = match format {
            DiskFormat::Raw => "ext4",
            DiskFormat::Qcow2 => "qcow2",
        };
        let base = bases.join(format!("{}-{}.{ext}", parent.id, new_id()));
        let info = BaseInfo {
            format,
            backing: record.disk_base.clone(),
            frozen_from: parent.id.clone(),
            created_at: now_f64(),
        };
        crate::util::write_atomic(&sidecar(&base), &serde_json::to_vec_pretty(&info).expect("base info serializes"))
            .map_err(|e| Error::io("recording the base", e))?;
        // A second name for the disk's inode: the base is the disk as it is now, no copy.
        std::fs::hard_link(&current, &base)
            .map_err(|e| Error::io(format!("freezing {} as {}", current.display(), base.display()), e))?;
        let overlay = parent.vm().disk_overlay();
        let partial = overlay.with_extension("qcow2.partial");
        let _ = std::fs::remove_file(&partial);
        pyro_vmm::create_overlay(&base, format, &partial)?;
        if format == DiskFormat::Raw {
            // A new name: place it first, then the record switches to it.
            std::fs::rename(&partial, &overlay).map_err(|e| Error::io("placing the disk overlay", e))?;
        }
        crate::workspace::ops::crash_point("fork:overlay");
        let (record, _) = parent.update(|r| {
            r.disk_format = DiskFormat::Qcow2;
            r.disk_base = Some(base.clone());
            r.metadata.insert("rootfs_clone_mode".into(), "qcow2_overlay".into());
            Ok(())
        })?;
        crate::workspace::ops::crash_point("fork:record");
        match format {
            DiskFormat::Raw => {
                let _ = std::fs::remove_file(parent.vm().disk());
            }
            DiskFormat::Qcow2 => {
                // The old overlay lives on as the base; the new one takes its name.
                std::fs::rename(&partial, &overlay).map_err(|e| Error::io("placing the disk overlay", e))?;
                // A raw disk a fork killed after its record switched may have left behind.
                let _ = std::fs::remove_file(parent.vm().disk());
            }
        }
        // Read-only from now on: every overlay on it depends on its bytes.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o400))
            .map_err(|e| Error::io(format!("making {} read-only", base.display()), e))?;
        Ok((record, base, format))
    }

    /// One child: staged record, copied host state, overlay disk, restored (or stopped) VM.
    #[allow(clippy::too_many_arguments)]
    async fn make_child(
        &self,
        parent: &WorkspaceDir,
        record: &WorkspaceRecord,
        base: &Path,
        base_format: DiskFormat,
        state: Option<&MemoryState>,
        env: &crate::env::InstalledEnvironment,
        choice: &pyro_vmm::BackendChoice,
        name: Option<String>,
    ) -> Result<(WorkspaceDir, WorkspaceInfo)> {
        let _ = env;
        let workspaces = self.paths().workspaces_dir();
        let id = new_id();
        let child = WorkspaceDir::new(&workspaces, &id);
        let staging = WorkspaceDir::new(&workspaces, &format!("{}{id}", super::STAGING_PREFIX));
        crate::util::create_private_dir(&staging.root)
            .map_err(|e| Error::io(format!("creating {}", staging.root.display()), e))?;
        let _life = staging.lifecycle_exclusive().await?;
        let mut cleanup = super::CreationCleanup { dirs: vec![staging.root.clone(), child.root.clone()], armed: true };
        let now = now_f64();
        let mut r = record.clone();
        r.workspace_id = id.clone();
        r.name = name;
        r.created_at = now;
        r.expires_at = now + r.ttl_seconds as f64;
        r.last_activity_at = now;
        r.state = if state.is_some() { WorkspaceState::Creating } else { WorkspaceState::Stopped };
        r.command_count = 0;
        r.last_command = None;
        r.last_error = None;
        r.disk_format = DiskFormat::Qcow2;
        r.disk_base = Some(base.to_path_buf());
        r.metadata.insert("forked_from".into(), parent.id.clone());
        r.metadata.insert("rootfs_clone_mode".into(), "qcow2_overlay".into());
        if state.is_none() {
            // Services and shells live in memory: a child made from the disk alone has none.
            r.service_count = 0;
            r.running_service_count = 0;
        }
        r.creator = if state.is_some() { crate::util::ProcessIdentity::current() } else { None };
        staging.save(&r)?;
        copy_host_state(parent, &staging, &id, state.is_some())?;
        std::fs::rename(&staging.root, &child.root)
            .map_err(|e| Error::io(format!("placing {}", child.root.display()), e))?;
        for d in [child.vm().path().to_path_buf(), child.commands_dir()] {
            crate::util::create_private_dir(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        pyro_vmm::create_overlay(base, base_format, &child.vm().disk_overlay())?;
        if let Some(state) = state {
            let req = self.request_for(&child, &r);
            let launched = self.relaunch(env, choice, req, state).await?;
            r.state = WorkspaceState::Started;
            r.backend = choice.kind;
            r.accel = Some(launched.accel.as_str().into());
            r.execution_mode = crate::ExecutionMode::GuestVsock;
            r.metadata.insert("resume_ms".into(), launched.booted.ready_ms.to_string());
        }
        r.creator = None;
        child.save(&r)?;
        cleanup.armed = false;
        let info = info_of(&r);
        Ok((child, info))
    }
}

/// Copy what the host keeps for a workspace into a child: baseline, snapshots and secrets
/// (files that are never changed in place are hard-linked), and with a memory fork the
/// shell and service records (their processes live on in the child's memory). JSON records
/// naming the parent are rewritten to name the child.
fn copy_host_state(parent: &WorkspaceDir, child: &WorkspaceDir, child_id: &str, with_sessions: bool) -> Result<()> {
    let mut dirs = vec!["baseline", "snapshots", "secrets"];
    if with_sessions {
        dirs.extend(["shells", "services"]);
    }
    for d in dirs {
        let from = parent.root.join(d);
        let Ok(rd) = std::fs::read_dir(&from) else { continue };
        let to = child.root.join(d);
        crate::util::create_private_dir(&to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
        for e in rd.flatten() {
            let src = e.path();
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let dest = to.join(e.file_name());
            let is_json = src.extension().is_some_and(|x| x == "json");
            let rewritten = if is_json {
                std::fs::read(&src).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(
                    |mut v| {
                        let obj = v.as_object_mut()?;
                        if !obj.contains_key("workspace_id") {
                            return None;
                        }
                        obj.insert("workspace_id".into(), child_id.into());
                        // Host ports stay with the parent (its supervisor holds the
                        // forwards); the child's service runs on without any.
                        if d == "services" && obj.contains_key("published_ports") {
                            obj.insert("published_ports".into(), serde_json::Value::Array(Vec::new()));
                        }
                        Some(v)
                    },
                )
            } else {
                None
            };
            let res = match rewritten {
                Some(v) => crate::util::write_atomic(&dest, &serde_json::to_vec_pretty(&v).expect("serializes")),
                None => std::fs::hard_link(&src, &dest).or_else(|_| std::fs::copy(&src, &dest).map(|_| ())),
            };
            res.map_err(|e| Error::io(format!("copying {} to the new workspace", src.display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::store::tests::sample;

    fn engine(home: &Path) -> Pyro {
        Pyro::with_paths(crate::Paths { home: home.to_path_buf(), cache_dir: home.join("cache") })
    }

    fn workspace(pyro: &Pyro, id: &str, base: Option<PathBuf>, state: WorkspaceState) -> WorkspaceDir {
        let dir = WorkspaceDir::new(&pyro.paths().workspaces_dir(), id);
        std::fs::create_dir_all(dir.vm().path()).unwrap();
        let mut r = sample(id);
        r.state = state;
        r.disk_base = base;
        dir.save(&r).unwrap();
        dir
    }

    fn base(pyro: &Pyro, name: &str, backing: Option<PathBuf>) -> PathBuf {
        let dir = pyro.bases_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b"frozen").unwrap();
        let info = BaseInfo { format: DiskFormat::Raw, backing, frozen_from: "x".into(), created_at: 0.0 };
        std::fs::write(sidecar(&p), serde_json::to_vec(&info).unwrap()).unwrap();
        p
    }

    /// A base stays while a workspace uses it, directly or as the backing of a base in use;
    /// the last user's deletion removes it (with its sidecar).
    #[test]
    fn unused_bases_go_and_chains_in_use_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let pyro = engine(tmp.path());
        let first = base(&pyro, "a-1.ext4", None);
        let second = base(&pyro, "b-2.qcow2", Some(first.clone()));
        let orphan = base(&pyro, "c-3.ext4", None);
        let user = workspace(&pyro, "aaaaaaaaaaaa", Some(second.clone()), WorkspaceState::Stopped);
        pyro.remove_unused_bases();
        assert!(first.exists() && second.exists(), "a chain in use was removed");
        assert!(!orphan.exists() && !sidecar(&orphan).exists(), "an unused base was kept");
        std::fs::remove_dir_all(&user.root).unwrap();
        pyro.remove_unused_bases();
        assert!(!first.exists() && !second.exists());
        // A fork freezing a disk holds the bases lock: nothing is removed meanwhile.
        let pending = base(&pyro, "d-4.ext4", None);
        let _lock = pyro_sys::lock(&pyro.bases_lock(), pyro_sys::LockMode::Shared).unwrap();
        pyro.remove_unused_bases();
        assert!(pending.exists(), "a base being frozen was removed");
    }

    /// A resume whose process died with no VM running: the state is spent (a VM may have run
    /// from it), the workspace is stopped with its disk and says why. A live resumer is
    /// left alone.
    #[test]
    fn an_interrupted_resume_without_a_vm_leaves_a_stopped_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let pyro = engine(tmp.path());
        let dir = workspace(&pyro, "bbbbbbbbbbbb", None, WorkspaceState::Paused);
        // This process is alive: its resume is in progress.
        write_resume_intent(&dir).unwrap();
        settle_interrupted_resume(&dir).unwrap();
        assert_eq!(dir.load().unwrap().state, WorkspaceState::Paused);
        // A resumer that is gone.
        let gone = ResumeIntent {
            resumer: Some(crate::util::ProcessIdentity { pid: u32::MAX - 1, start_ticks: 1, boot_id: "x".into() }),
        };
        std::fs::write(dir.resume_intent(), serde_json::to_vec(&gone).unwrap()).unwrap();
        settle_interrupted_resume(&dir).unwrap();
        let r = dir.load().unwrap();
        assert_eq!(r.state, WorkspaceState::Stopped);
        assert!(r.last_error.unwrap().contains("a resume of workspace 'bbbbbbbbbbbb' was interrupted"));
        assert!(!dir.resume_intent().exists());
    }

    #[test]
    fn idle_pause_bounds_and_fork_defaults() {
        assert!(validate_idle_pause(None).is_ok() && validate_idle_pause(Some(0)).is_ok());
        assert!(validate_idle_pause(Some(MAX_IDLE_PAUSE_SECONDS)).is_ok());
        let e = validate_idle_pause(Some(MAX_IDLE_PAUSE_SECONDS + 1)).unwrap_err();
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(ForkOptions::default().count, 1);
        assert_eq!(serde_json::from_str::<ForkOptions>("{}").unwrap(), ForkOptions::new());
        assert_eq!(hostname_of("0123456789ab"), "pyro-0123456789ab");
    }
}
