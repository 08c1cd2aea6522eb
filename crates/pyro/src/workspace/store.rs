//! Persisted workspace records and the locks that make concurrent pyro processes safe.
//!
//! Layout of `$PYRO_HOME/workspaces/<id>/`: `workspace.json` (the record), `record.lock`
//! (held briefly around every read-modify-write of the record and history), `lifecycle.lock`
//! (shared by operations that use the running VM, exclusive for stop/start/reset/delete),
//! `runtime/` (the VM directory: disk, sockets, logs), `baseline/workspace.tar`,
//! `snapshots/`, `commands/`.

use crate::{Error, ExecutionMode, Result, WorkspaceState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the VM directory inside a workspace directory.
pub const RUNTIME_DIR: &str = "runtime";

/// Version of the on-disk record layout; bump on incompatible changes.
pub const LAYOUT_VERSION: u32 = 1;

/// The most recent `exec_workspace` command of a workspace (`last_command` of
/// [`WorkspaceInfo`](crate::workspace::WorkspaceInfo)).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LastCommand {
    /// Position in the history, 1-based; equals `command_count` when it was recorded.
    pub sequence: u64,
    /// The command text, with secret values replaced by `[REDACTED]`.
    pub command: String,
    /// Directory it ran in: always `/workspace`.
    pub cwd: String,
    /// Exit status; 124 when it timed out.
    pub exit_code: i32,
    /// Wall time of the command in milliseconds.
    pub duration_ms: u64,
    /// `guest_vsock` (ran in the guest through pyro's agent).
    pub execution_mode: ExecutionMode,
}

/// What `/workspace` was seeded with at create (`workspace_seed`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SeedInfo {
    /// `empty`, `directory` or `tar_archive` (a project seed is a `directory`).
    pub mode: String,
    /// Absolute host path of the seed directory or archive (for a `repo_url` seed, the
    /// repository URL without credentials); `None` for an empty seed.
    pub seed_path: Option<String>,
    /// Guest directory the seed was unpacked into: `/workspace`.
    pub destination: String,
    /// Archive entries (files, directories, symlinks) unpacked.
    pub entry_count: u64,
    /// Bytes of regular-file content unpacked.
    pub bytes_written: u64,
    /// Where the seed came from: `empty`, `path` (a directory or archive named by
    /// `seed_path`, or a project directory that is not a Git checkout), `git_checkout` (a
    /// local checkout, seeded by Git's rules) or `repo_url` (a cloned repository).
    #[serde(default)]
    pub origin_kind: String,
    /// The commit the seed sits on (`HEAD` of the checkout or clone; the content is the
    /// working tree's, uncommitted edits included); `None` for `empty` and `path` seeds and
    /// for a repository without commits.
    #[serde(default)]
    pub origin_ref: Option<String>,
    /// How many listed paths of a Git seed were left out (sockets, fifos, unreadable or
    /// missing files); 0 for other seeds.
    #[serde(default)]
    pub skipped_count: u64,
    /// The first of those (at most 100), each with the reason.
    #[serde(default)]
    pub skipped: Vec<SeedSkip>,
}

/// A path a seed left out instead of failing (`workspace_seed.skipped`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SeedSkip {
    /// The path relative to the project root.
    pub path: String,
    /// Why it was left out, e.g. `socket`, `unreadable: Permission denied (os error 13)`.
    pub reason: String,
}

impl SeedInfo {
    /// Records written before `origin_kind` existed: derive it from `mode`.
    pub(crate) fn normalized(mut self) -> Self {
        if self.origin_kind.is_empty() {
            self.origin_kind = if self.mode == "empty" { "empty" } else { "path" }.into();
        }
        self
    }
}

/// A secret as shown in payloads: its name and kind, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SecretRecord {
    /// Secret name (`[A-Za-z_][A-Za-z0-9_]{0,63}`); the guest file is `/run/pyro-secrets/<name>`.
    pub name: String,
    /// `literal` or `file`.
    pub source_kind: String,
}

/// `workspace.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkspaceRecord {
    pub layout_version: u32,
    pub workspace_id: String,
    pub environment: String,
    pub environment_version: String,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    pub ttl_seconds: u64,
    pub created_at: f64,
    pub expires_at: f64,
    /// `creating` (recorded before the first boot, see `creator`), `started` or `stopped`.
    pub state: WorkspaceState,
    /// `off`, `egress` or `egress+published-ports`.
    pub network_policy: pyro_vmm::NetworkPolicy,
    pub allow_host_compat: bool,
    pub last_error: Option<String>,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub last_activity_at: f64,
    pub command_count: u64,
    pub last_command: Option<LastCommand>,
    pub workspace_seed: SeedInfo,
    #[serde(default)]
    pub secrets: Vec<SecretRecord>,
    pub reset_count: u64,
    pub last_reset_at: Option<f64>,
    /// Services of the current boot (mirrored from the guest on every service call and
    /// status; zero after stop, start, reset).
    #[serde(default)]
    pub service_count: u64,
    #[serde(default)]
    pub running_service_count: u64,
    /// `qemu` (or `""` before the first boot).
    pub backend: pyro_vmm::Backend,
    /// `kvm` / `tcg` for QEMU.
    pub accel: Option<String>,
    /// `pending` before the first boot, then `guest_vsock` (through the guest agent).
    pub execution_mode: ExecutionMode,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// How the root disk is stored: `raw` (`rootfs.ext4`, the default for records written
    /// before forks existed) or `qcow2` (`rootfs.qcow2`, a copy-on-write overlay on
    /// `disk_base`). Always recorded by the host, never sniffed from the file: a guest
    /// controls a raw disk's first sector.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub disk_format: pyro_vmm::DiskFormat,
    /// The frozen, read-only base image in `$PYRO_HOME/bases/` a `qcow2` disk is backed by
    /// (shared with the workspaces forked from the same point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_base: Option<PathBuf>,
    /// Pause the workspace after this many seconds without a call (`None`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_pause_seconds: Option<u64>,
    /// While `creating`: the process creating the workspace. It also holds the exclusive
    /// lifecycle lock; when that lock is free and this process is gone, the creation was
    /// interrupted (kill -9, crash) and the orphan sweep reaps the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub creator: Option<crate::util::ProcessIdentity>,
}

pub use pyro_sys::FileLock;
use pyro_sys::LockMode;

fn lock_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("locking {}", path.display()), e)
}

fn flock(path: &Path, mode: LockMode) -> Result<FileLock> {
    pyro_sys::lock(path, mode).map_err(|e| lock_error(path, e))
}

/// The lock if it is free right now; `None` when another holder has it.
fn try_flock(path: &Path, mode: LockMode) -> Result<Option<FileLock>> {
    pyro_sys::try_lock(path, mode).map_err(|e| lock_error(path, e))
}

async fn flock_async(path: &Path, mode: LockMode) -> Result<FileLock> {
    pyro_sys::lock_async(path, mode).await.map_err(|e| lock_error(path, e))
}

/// Access to one workspace directory.
#[derive(Debug, Clone)]
pub struct WorkspaceDir {
    pub id: String,
    pub root: PathBuf,
}

impl WorkspaceDir {
    pub fn new(workspaces_dir: &Path, id: &str) -> Self {
        WorkspaceDir { id: id.to_string(), root: workspaces_dir.join(id) }
    }

    pub fn record_path(&self) -> PathBuf {
        self.root.join("workspace.json")
    }
    /// The workspace's VM directory (`runtime/`): its layout belongs to [`pyro_vmm::VmDir`].
    pub fn vm(&self) -> pyro_vmm::VmDir {
        pyro_vmm::VmDir::new(self.root.join(RUNTIME_DIR))
    }
    /// The workspace's VM, running or not.
    pub fn machine(&self) -> pyro_vmm::Machine {
        pyro_vmm::Machine::attach(self.vm())
    }
    pub fn baseline_tar(&self) -> PathBuf {
        self.root.join("baseline").join("workspace.tar")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn commands_dir(&self) -> PathBuf {
        self.root.join("commands")
    }
    pub fn disk_image(&self) -> PathBuf {
        self.vm().disk()
    }
    /// The root disk the record names: the raw image, or the qcow2 overlay of a fork.
    pub fn disk_path(&self, record: &WorkspaceRecord) -> PathBuf {
        match record.disk_format {
            pyro_vmm::DiskFormat::Raw => self.vm().disk(),
            pyro_vmm::DiskFormat::Qcow2 => self.vm().disk_overlay(),
        }
    }
    /// Marker of a resume in progress (see `pause.rs`): present while a VM may be running
    /// from the saved memory state that is about to be discarded.
    pub fn resume_intent(&self) -> PathBuf {
        self.root.join("resume.json")
    }

    /// Does a record exist (the workspace was fully created)?
    pub fn exists(&self) -> bool {
        self.record_path().is_file()
    }

    /// Short exclusive lock for read-modify-write of the record and history.
    pub fn lock_record(&self) -> Result<FileLock> {
        flock(&self.root.join("record.lock"), LockMode::Exclusive)
    }

    /// The lifecycle lock file (the supervisor's idle pause try-locks it too).
    pub fn lifecycle_lock_path(&self) -> PathBuf {
        self.root.join("lifecycle.lock")
    }

    /// Shared lifecycle lock: the VM stays as it is while held. Blocking: only for code on
    /// the blocking pool (disk tools); async code uses [`WorkspaceDir::lifecycle_shared`].
    pub fn lock_lifecycle_shared(&self) -> Result<FileLock> {
        flock(&self.lifecycle_lock_path(), LockMode::Shared)
    }

    /// Shared lifecycle lock, awaited without blocking a runtime worker.
    pub async fn lifecycle_shared(&self) -> Result<FileLock> {
        flock_async(&self.lifecycle_lock_path(), LockMode::Shared).await
    }

    /// Exclusive lifecycle lock (stop, start, reset, delete, create), awaited without
    /// blocking a runtime worker.
    pub async fn lifecycle_exclusive(&self) -> Result<FileLock> {
        flock_async(&self.lifecycle_lock_path(), LockMode::Exclusive).await
    }

    /// The exclusive lifecycle lock if nobody holds the lifecycle lock right now (the
    /// orphan sweep: a busy workspace is someone's, not an orphan).
    pub fn try_lifecycle_exclusive(&self) -> Result<Option<FileLock>> {
        try_flock(&self.lifecycle_lock_path(), LockMode::Exclusive)
    }

    /// The shared lifecycle lock if no stop, start, reset or delete holds it right now.
    pub fn try_lifecycle_shared(&self) -> Result<Option<FileLock>> {
        try_flock(&self.lifecycle_lock_path(), LockMode::Shared)
    }

    pub fn load(&self) -> Result<WorkspaceRecord> {
        let text = std::fs::read_to_string(self.record_path()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("workspace '{}' does not exist", self.id))
            } else {
                Error::io(format!("reading {}", self.record_path().display()), e)
            }
        })?;
        let record: WorkspaceRecord = serde_json::from_str(&text)
            .map_err(|e| Error::unreadable(format_args!("workspace record {}", self.record_path().display()), e))?;
        if record.layout_version > LAYOUT_VERSION {
            return Err(Error::InvalidState(format!(
                "workspace '{}' was written by a newer pyro (layout {}; this pyro reads up to {LAYOUT_VERSION})",
                self.id, record.layout_version
            )));
        }
        Ok(record)
    }

    /// Save atomically (temp file + rename): a crash never leaves a torn record.
    pub fn save(&self, record: &WorkspaceRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record).expect("record serializes");
        crate::util::write_atomic(&self.record_path(), &bytes)
            .map_err(|e| Error::io(format!("writing {}", self.record_path().display()), e))
    }

    /// Load, change and save under the record lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut WorkspaceRecord) -> Result<T>) -> Result<(WorkspaceRecord, T)> {
        let _lock = self.lock_record()?;
        let mut record = self.load()?;
        let out = f(&mut record)?;
        self.save(&record)?;
        Ok((record, out))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(id: &str) -> WorkspaceRecord {
        WorkspaceRecord {
            layout_version: LAYOUT_VERSION,
            workspace_id: id.into(),
            environment: "debian:12".into(),
            environment_version: "1.0.0".into(),
            vcpu_count: 1,
            mem_mib: 1024,
            ttl_seconds: 600,
            created_at: 1.0,
            expires_at: 601.0,
            state: WorkspaceState::Started,
            network_policy: pyro_vmm::NetworkPolicy::Off,
            allow_host_compat: false,
            last_error: None,
            name: None,
            labels: BTreeMap::new(),
            last_activity_at: 1.0,
            command_count: 0,
            last_command: None,
            workspace_seed: SeedInfo {
                mode: "empty".into(),
                seed_path: None,
                destination: "/workspace".into(),
                entry_count: 0,
                bytes_written: 0,
                origin_kind: "empty".into(),
                origin_ref: None,
                skipped_count: 0,
                skipped: vec![],
            },
            secrets: vec![],
            reset_count: 0,
            last_reset_at: None,
            service_count: 0,
            running_service_count: 0,
            backend: pyro_vmm::Backend::Qemu,
            accel: Some("tcg".into()),
            execution_mode: ExecutionMode::GuestVsock,
            metadata: BTreeMap::new(),
            disk_format: pyro_vmm::DiskFormat::Raw,
            disk_base: None,
            idle_pause_seconds: None,
            creator: None,
        }
    }

    #[test]
    fn seeds_recorded_before_origin_kind_get_one_from_their_mode() {
        for (mode, kind) in [("empty", "empty"), ("directory", "path"), ("tar_archive", "path")] {
            let old = serde_json::json!({"mode": mode, "seed_path": null, "destination": "/workspace",
                "entry_count": 0, "bytes_written": 0});
            let seed: SeedInfo = serde_json::from_value(old).unwrap();
            assert_eq!(seed.normalized().origin_kind, kind, "{mode}");
        }
        let mut git = sample("a").workspace_seed;
        git.origin_kind = "git_checkout".into();
        assert_eq!(git.clone().normalized(), git, "a recorded kind is kept");
    }

    #[test]
    fn concurrent_updates_from_many_threads_lose_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkspaceDir::new(tmp.path(), "abc123def456");
        std::fs::create_dir_all(&dir.root).unwrap();
        dir.save(&sample("abc123def456")).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        dir.update(|r| {
                            r.command_count += 1;
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(dir.load().unwrap().command_count, 400);
    }

    /// States and modes are types now; on disk they stay the strings earlier versions wrote.
    #[test]
    fn states_are_stored_as_their_contract_strings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkspaceDir::new(tmp.path(), "abc123def456");
        std::fs::create_dir_all(&dir.root).unwrap();
        let mut record = sample("abc123def456");
        record.last_command = Some(LastCommand {
            sequence: 1,
            command: "true".into(),
            cwd: "/workspace".into(),
            exit_code: 0,
            duration_ms: 1,
            execution_mode: ExecutionMode::GuestVsock,
        });
        dir.save(&record).unwrap();
        let text: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.record_path()).unwrap()).unwrap();
        assert_eq!(text["state"], "started");
        assert_eq!(text["execution_mode"], "guest_vsock");
        assert_eq!(text["last_command"]["execution_mode"], "guest_vsock");
        // A record as an earlier pyro wrote it, mid-create.
        let mut old = text;
        old["state"] = "creating".into();
        old["execution_mode"] = "pending".into();
        std::fs::write(dir.record_path(), old.to_string()).unwrap();
        let loaded = dir.load().unwrap();
        assert_eq!((loaded.state, loaded.execution_mode), (WorkspaceState::Creating, ExecutionMode::Pending));
    }

    #[test]
    fn missing_record_is_a_clear_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = WorkspaceDir::new(tmp.path(), "nope00000000");
        let e = dir.load().unwrap_err();
        assert_eq!(e.to_string(), "workspace 'nope00000000' does not exist");
        assert_eq!(e.code(), "not_found");
    }
}
