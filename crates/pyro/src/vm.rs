//! Ephemeral VMs (`vm_*`, `pyro run`): owned by the process that created them, gone after
//! one exec. Records live in memory; the VM directory lives under `$PYRO_HOME/vms/<id>` and
//! its supervisor kills the VM if the owning process disappears.

use crate::boot::BootRequest;
use crate::limits::{validate_exec_timeout, validate_resources};
use crate::{Error, ExecutionMode, Result};
use pyro_vmm::{Backend, BackendChoice, Machine, NetworkPolicy, VmDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Payload of `create_vm`, `start_vm`, `stop_vm`, `status_vm` (the reference
/// implementation's keys, kept for its clients, plus `backend`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VmInfo {
    /// Id of the VM (12 lowercase hex characters); pass it to the other `*_vm` methods.
    pub vm_id: String,
    /// Environment the VM boots, e.g. `debian:12`.
    pub environment: String,
    /// Version of that environment (`1.0.0` for every catalog environment).
    pub environment_version: String,
    /// Virtual CPUs given to the guest (1..=8).
    pub vcpu_count: u32,
    /// Guest memory in MiB (256..=32768).
    pub mem_mib: u32,
    /// Time to live in seconds (60..=3600), counted from `created_at`.
    pub ttl_seconds: u64,
    /// Creation time, Unix seconds (fractional).
    pub created_at: f64,
    /// `created_at + ttl_seconds`, Unix seconds. A VM past this time is deleted on its next access
    /// or reap.
    pub expires_at: f64,
    /// `created`, `started` or `stopped`.
    pub state: String,
    /// Whether the guest has a network interface with outbound access (user-mode NAT).
    pub network_enabled: bool,
    /// Whether the VM may fall back to running commands on the host without isolation when no VM
    /// can boot.
    pub allow_host_compat: bool,
    /// Guest address on its private network; `None` without a network or before start.
    pub guest_ip: Option<String>,
    /// Host TAP device of the VM; always `None` with the QEMU backend (user-mode networking needs
    /// no TAP).
    pub tap_name: Option<String>,
    /// `pending`, `guest_vsock` (commands run in the guest through pyro's agent) or `host_compat`.
    pub execution_mode: ExecutionMode,
    /// `qemu`, `firecracker` or `host-compat`; empty until started.
    pub backend: String,
    /// Backend details as strings, set at start: `backend_reason`, `vm_dir`, and for QEMU `accel`
    /// (`kvm`/`tcg`), `agent_version`, `boot_ms`, `vmm_pid`, `supervisor_pid`, `agent_transport`,
    /// `start_mode` (`warm`: restored from the environment's template; `cold`: booted),
    /// `start_reason`, and for warm starts `template` and `restore_ms`. Informational; keys may
    /// change.
    pub metadata: BTreeMap<String, String>,
}

/// Options of `create_vm` / `run_in_vm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateVmOptions {
    /// Environment to boot: `debian:12`, `debian:12-base` or `debian:12-build`. Installed first if
    /// missing.
    pub environment: String,
    /// Virtual CPUs, 1..=8 (default 1).
    pub vcpu_count: u32,
    /// Guest memory in MiB, 256..=32768 (default 1024).
    pub mem_mib: u32,
    /// Time to live in seconds, 60..=3600 (default 600); the VM is deleted once it has passed.
    pub ttl_seconds: u64,
    /// Give the guest outbound network access (default `false`).
    pub network: bool,
    /// Allow running commands directly on the host, with no isolation, when no VM backend can boot
    /// (default `false`).
    pub allow_host_compat: bool,
}

impl CreateVmOptions {
    /// The reference defaults: 1 vCPU, 1024 MiB, 600 s TTL, no network, no host compat.
    pub fn new(environment: impl Into<String>) -> Self {
        CreateVmOptions {
            environment: environment.into(),
            vcpu_count: crate::defaults::VCPU_COUNT,
            mem_mib: crate::defaults::MEM_MIB,
            ttl_seconds: crate::defaults::TTL_SECONDS,
            network: crate::defaults::NETWORK,
            allow_host_compat: false,
        }
    }
}

/// `cleanup` block of a run payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Cleanup {
    /// Id of the VM that was deleted.
    pub vm_id: String,
    /// `true` once the VM and its host files are gone.
    pub deleted: bool,
    /// Why it was deleted: `post_exec_cleanup` after `exec_vm`/`run_in_vm`.
    pub reason: String,
}

/// Payload of `exec_vm` / `run_in_vm` (keys pinned in crates/pyro/tests/contract.rs;
/// `backend` and the truncation flags are pyro's additions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RunResult {
    /// Id of the VM the command ran in (already deleted, see `cleanup`).
    pub vm_id: String,
    /// Environment the VM booted, e.g. `debian:12`.
    pub environment: String,
    /// Version of that environment.
    pub environment_version: String,
    /// The command as given; it ran under `/bin/sh -lc` in the guest.
    pub command: String,
    /// Standard output, decoded as UTF-8 (invalid bytes replaced), cut at [`OUTPUT_CAP_BYTES`].
    pub stdout: String,
    /// Standard error, decoded as UTF-8 (invalid bytes replaced), cut at [`OUTPUT_CAP_BYTES`]. On
    /// timeout: `command timed out after Ns`.
    pub stderr: String,
    /// Exit status of the command; 124 when it timed out, 128+N when killed by signal N.
    pub exit_code: i32,
    /// Wall time of the command in milliseconds (not counting the boot).
    pub duration_ms: u64,
    /// `guest_vsock` (ran in the guest through pyro's agent) or `host_compat` (ran on the host).
    pub execution_mode: ExecutionMode,
    /// Backend that ran the VM: `qemu` or `host-compat`.
    pub backend: String,
    /// True when either stream hit the output cap.
    pub truncated: bool,
    /// True when stdout hit the output cap.
    pub stdout_truncated: bool,
    /// True when stderr hit the output cap.
    pub stderr_truncated: bool,
    /// How the VM was deleted after the command.
    pub cleanup: Cleanup,
    /// Details of the VM the command ran in, as strings: the VM's `metadata` at start
    /// (`start_mode` `warm` when it was restored from its environment's template, `cold`
    /// when it booted; `start_reason` says why; `boot_ms`, `accel`, ...). Informational;
    /// keys may change.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Payload of `delete_vm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteVmResult {
    /// Id of the deleted VM.
    pub vm_id: String,
    /// Always `true` on success.
    pub deleted: bool,
    /// `explicit_delete`, `post_exec_cleanup`, `run_vm_error_cleanup` or `expired`.
    pub reason: String,
}

/// Payload of `reap_expired`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReapResult {
    /// Ids of the expired VMs that were deleted.
    pub deleted_vm_ids: Vec<String>,
    /// Number of VMs deleted.
    pub count: usize,
}

/// Per-stream output cap of exec: 16 MiB by default (SPECIFICATION.md, "Limits").
pub const OUTPUT_CAP_BYTES: u64 = pyro_protocol::DEFAULT_OUTPUT_CAP_BYTES;

pub(crate) struct VmEntry {
    pub info: VmInfo,
    pub choice: Option<BackendChoice>,
}

impl crate::Pyro {
    fn vm_dir(&self, vm_id: &str) -> VmDir {
        VmDir::new(self.paths().vms_dir().join(vm_id))
    }

    fn vm_machine(&self, vm_id: &str) -> Machine {
        Machine::attach(self.vm_dir(vm_id))
    }

    fn vm_get(&self, vm_id: &str) -> Result<VmInfo> {
        self.inner
            .vms
            .lock()
            .unwrap()
            .get(vm_id)
            .map(|e| e.info.clone())
            .ok_or_else(|| Error::NotFound(format!("vm '{vm_id}' does not exist")))
    }

    /// Raise the reference's expiry error (after deleting) when the VM's TTL has passed.
    async fn vm_check_expiry(&self, vm_id: &str) -> Result<VmInfo> {
        let info = self.vm_get(vm_id)?;
        if info.expires_at <= crate::util::now_f64() {
            self.delete_vm_with_reason(vm_id, "expired").await?;
            return Err(Error::InvalidState(format!("vm '{vm_id}' expired and was automatically deleted")));
        }
        Ok(info)
    }

    /// Create an ephemeral VM record (installs the environment first if needed). Not booted.
    pub async fn create_vm(&self, opts: CreateVmOptions) -> Result<VmInfo> {
        validate_resources(opts.vcpu_count, opts.mem_mib, opts.ttl_seconds)?;
        let spec = crate::env::spec(&opts.environment)?;
        self.reap_expired().await?;
        self.ensure_environment(spec.name).await?;
        let vm_id = crate::util::new_id();
        let now = crate::util::now_f64();
        let info = VmInfo {
            vm_id: vm_id.clone(),
            environment: spec.name.to_string(),
            environment_version: crate::env::ENVIRONMENT_VERSION.to_string(),
            vcpu_count: opts.vcpu_count,
            mem_mib: opts.mem_mib,
            ttl_seconds: opts.ttl_seconds,
            created_at: now,
            expires_at: now + opts.ttl_seconds as f64,
            state: "created".into(),
            network_enabled: opts.network,
            allow_host_compat: opts.allow_host_compat,
            guest_ip: None,
            tap_name: None,
            execution_mode: ExecutionMode::Pending,
            backend: String::new(),
            metadata: BTreeMap::new(),
        };
        self.inner.vms.lock().unwrap().insert(vm_id, VmEntry { info: info.clone(), choice: None });
        Ok(info)
    }

    /// Boot a created (or stopped) VM and wait for its guest agent.
    pub async fn start_vm(&self, vm_id: &str) -> Result<VmInfo> {
        let info = self.vm_check_expiry(vm_id).await?;
        if info.state == "started" {
            return Ok(info);
        }
        let env = self.ensure_environment(&info.environment).await?;
        let choice = self.choose_backend_for(&env, info.allow_host_compat).await?;
        // The directory is created by whoever fills it (the host-compat work dir below, or the
        // boot/restore that starts its supervisor at once), not earlier: building a template
        // first can take seconds, and a `pyro run` killed meanwhile must leave no empty VM dir.
        let dir = self.vm_dir(vm_id);
        let result = match choice.kind {
            Backend::HostCompat => crate::util::create_private_dir(&dir.host_compat_workdir())
                .map_err(|e| Error::io("creating the host-compat work dir", e))
                .map(|()| {
                    (ExecutionMode::HostCompat, BTreeMap::from([("backend_reason".to_string(), choice.reason.clone())]))
                }),
            _ => {
                let req = BootRequest {
                    dir: dir.clone(),
                    vm_id: vm_id.to_string(),
                    vcpu_count: info.vcpu_count,
                    mem_mib: info.mem_mib,
                    network: if info.network_enabled { NetworkPolicy::Egress } else { NetworkPolicy::Off },
                    disk: env.rootfs_image.clone(),
                    snapshot: true,
                    owner_pid: Some(std::process::id()),
                    remove_dir_on_exit: true,
                    disk_format: pyro_vmm::DiskFormat::Raw,
                    idle_pause: None,
                    hostname: None,
                };
                self.launch_ephemeral(&env, &choice, req).await.map(|(launched, start)| {
                    let mut metadata = launched.metadata;
                    metadata.insert("start_mode".into(), start.mode.to_string());
                    metadata.insert("start_reason".into(), start.reason);
                    if let Some(t) = start.template {
                        metadata.insert("template".into(), t.display().to_string());
                    }
                    metadata.insert("vmm_pid".into(), launched.booted.vmm_pid.to_string());
                    metadata.insert("supervisor_pid".into(), launched.booted.supervisor_pid.to_string());
                    (ExecutionMode::GuestVsock, metadata)
                })
            }
        };
        let (mode, mut metadata) = match result {
            Ok(v) => v,
            Err(e) => {
                Machine::attach(dir.clone()).kill();
                let _ = std::fs::remove_dir_all(dir.path());
                return Err(e);
            }
        };
        metadata.insert("vm_dir".to_string(), dir.path().display().to_string());
        let mut vms = self.inner.vms.lock().unwrap();
        let entry = vms.get_mut(vm_id).ok_or_else(|| Error::NotFound(format!("vm '{vm_id}' does not exist")))?;
        entry.info.state = "started".into();
        entry.info.execution_mode = mode;
        entry.info.backend = choice.kind.as_str().into();
        if entry.info.network_enabled && choice.kind == Backend::Qemu {
            entry.info.guest_ip = Some(pyro_vmm::USER_NET_GUEST_IP.into());
        }
        entry.info.metadata = metadata;
        entry.choice = Some(choice);
        Ok(entry.info.clone())
    }

    /// Run one command in a started VM, then delete the VM, whether the command succeeded,
    /// failed or timed out.
    pub async fn exec_vm(&self, vm_id: &str, command: &str, timeout_seconds: u64) -> Result<RunResult> {
        let outcome = self.exec_vm_keep(vm_id, command, timeout_seconds).await;
        let cleanup = self.delete_vm_with_reason(vm_id, "post_exec_cleanup").await;
        let mut result = outcome?;
        let cleanup = cleanup?;
        result.cleanup = Cleanup { vm_id: cleanup.vm_id, deleted: cleanup.deleted, reason: cleanup.reason };
        Ok(result)
    }

    async fn exec_vm_keep(&self, vm_id: &str, command: &str, timeout_seconds: u64) -> Result<RunResult> {
        validate_exec_timeout(timeout_seconds)?;
        if command.trim().is_empty() {
            return Err(Error::InvalidInput("command must not be empty".into()));
        }
        let info = self.vm_check_expiry(vm_id).await?;
        if info.state != "started" {
            return Err(Error::InvalidState(format!(
                "vm '{vm_id}' must be in 'started' state before exec (it is '{}')",
                info.state
            )));
        }
        let dir = self.vm_dir(vm_id);
        let timeout = Duration::from_secs(timeout_seconds);
        let r = if info.execution_mode == ExecutionMode::HostCompat {
            crate::hostcompat::exec(&dir.host_compat_workdir(), command, timeout, OUTPUT_CAP_BYTES).await?
        } else {
            Machine::attach(dir).exec(command, None, BTreeMap::new(), timeout, OUTPUT_CAP_BYTES).await?
        };
        Ok(RunResult {
            vm_id: vm_id.to_string(),
            environment: info.environment.clone(),
            environment_version: info.environment_version.clone(),
            command: command.to_string(),
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            execution_mode: info.execution_mode,
            backend: info.backend.clone(),
            truncated: r.stdout_truncated || r.stderr_truncated,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            cleanup: Cleanup { vm_id: vm_id.to_string(), deleted: false, reason: String::new() },
            metadata: info.metadata.clone(),
        })
    }

    /// Stop a VM (the guest is shut down; the record stays until deleted).
    pub async fn stop_vm(&self, vm_id: &str) -> Result<VmInfo> {
        let info = self.vm_get(vm_id)?;
        if info.state == "started" {
            self.vm_machine(vm_id).shutdown(Duration::from_secs(5)).await?;
        }
        let mut vms = self.inner.vms.lock().unwrap();
        let entry = vms.get_mut(vm_id).ok_or_else(|| Error::NotFound(format!("vm '{vm_id}' does not exist")))?;
        entry.info.state = "stopped".into();
        Ok(entry.info.clone())
    }

    /// Delete a VM: kill it if running and remove everything it had on the host.
    pub async fn delete_vm(&self, vm_id: &str) -> Result<DeleteVmResult> {
        self.delete_vm_with_reason(vm_id, "explicit_delete").await
    }

    pub(crate) async fn delete_vm_with_reason(&self, vm_id: &str, reason: &str) -> Result<DeleteVmResult> {
        self.vm_get(vm_id)?;
        let dir = self.vm_dir(vm_id);
        // Ephemeral disks are thrown away: no need for a clean guest shutdown.
        Machine::attach(dir.clone()).shutdown(Duration::ZERO).await?;
        let dir = dir.path();
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        }
        self.inner.vms.lock().unwrap().remove(vm_id);
        Ok(DeleteVmResult { vm_id: vm_id.to_string(), deleted: true, reason: reason.to_string() })
    }

    /// Current record of a VM. Fails (after deleting it) when its TTL has passed.
    pub async fn status_vm(&self, vm_id: &str) -> Result<VmInfo> {
        self.vm_check_expiry(vm_id).await
    }

    /// Network facts of a VM (the `vm_network_info` payload).
    pub async fn network_info_vm(&self, vm_id: &str) -> Result<NetworkInfo> {
        let info = self.vm_check_expiry(vm_id).await?;
        let enabled = info.network_enabled;
        Ok(NetworkInfo {
            vm_id: vm_id.to_string(),
            network_enabled: enabled,
            outbound_connectivity_expected: enabled,
            guest_network: enabled.then(|| GuestNetwork {
                tap_name: None,
                guest_ip: pyro_vmm::USER_NET_GUEST_IP.to_string(),
                gateway_ip: pyro_vmm::USER_NET_GATEWAY.to_string(),
                subnet_cidr: pyro_vmm::USER_NET_SUBNET.to_string(),
                mac_address: None,
                dns_servers: vec![pyro_vmm::USER_NET_DNS.to_string()],
                mode: "qemu-user".to_string(),
            }),
            reason: (!enabled).then(|| "network configuration is unavailable for this VM".to_string()),
        })
    }

    /// Delete every ephemeral VM whose TTL has passed.
    pub async fn reap_expired(&self) -> Result<ReapResult> {
        let now = crate::util::now_f64();
        let expired: Vec<String> = self
            .inner
            .vms
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.info.expires_at <= now)
            .map(|e| e.info.vm_id.clone())
            .collect();
        for id in &expired {
            self.delete_vm_with_reason(id, "expired").await?;
        }
        Ok(ReapResult { count: expired.len(), deleted_vm_ids: expired })
    }

    /// create + start + exec (+ delete). On any failure after create the VM is deleted
    /// (reason `run_vm_error_cleanup`) and the error returned.
    pub async fn run_in_vm(&self, opts: CreateVmOptions, command: &str, timeout_seconds: u64) -> Result<RunResult> {
        validate_exec_timeout(timeout_seconds)?;
        if command.trim().is_empty() {
            return Err(Error::InvalidInput("command is required".into()));
        }
        let info = self.create_vm(opts).await?;
        let guard = VmGuard { pyro: self.clone(), vm_id: Some(info.vm_id.clone()) };
        let started = self.start_vm(&info.vm_id).await;
        if let Err(e) = started {
            self.delete_vm_with_reason(&info.vm_id, "run_vm_error_cleanup").await.ok();
            guard.disarm();
            return Err(e);
        }
        let result = self.exec_vm(&info.vm_id, command, timeout_seconds).await;
        guard.disarm();
        result
    }
}

/// Deletes a VM if the future driving `run_in_vm` is dropped midway (Ctrl-C, cancellation).
struct VmGuard {
    pyro: crate::Pyro,
    vm_id: Option<String>,
}

impl VmGuard {
    fn disarm(mut self) {
        self.vm_id = None;
    }
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        if let Some(id) = self.vm_id.take() {
            let dir = self.pyro.vm_dir(&id);
            dir.kill();
            let _ = std::fs::remove_dir_all(dir.path());
            self.pyro.inner.vms.lock().unwrap().remove(&id);
        }
    }
}

impl crate::Pyro {
    /// Delete every ephemeral VM this engine owns (Ctrl-C in `pyro run`, server shutdown).
    pub async fn delete_all_vms(&self, reason: &str) -> Vec<DeleteVmResult> {
        let ids: Vec<String> = self.inner.vms.lock().unwrap().keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(r) = self.delete_vm_with_reason(&id, reason).await {
                out.push(r);
            }
        }
        out
    }
}

/// Payload of `network_info_vm` (keys pinned by `tests/contract.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NetworkInfo {
    /// Id of the VM.
    pub vm_id: String,
    /// Whether the guest has a network (`network` at create).
    pub network_enabled: bool,
    /// Whether the guest can reach the outside: the same as `network_enabled`.
    pub outbound_connectivity_expected: bool,
    /// With networking: the guest's network (its keys are inlined in the payload).
    #[serde(flatten)]
    pub guest_network: Option<GuestNetwork>,
    /// Without networking: why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The network of a VM created with `network` (QEMU user-mode networking).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GuestNetwork {
    /// Host TAP device: always null (user-mode networking needs none).
    pub tap_name: Option<String>,
    /// Guest address (`10.0.2.15`).
    pub guest_ip: String,
    /// Gateway address (`10.0.2.2`).
    pub gateway_ip: String,
    /// The private subnet (`10.0.2.0/24`).
    pub subnet_cidr: String,
    /// Guest MAC address: always null (QEMU assigns it).
    pub mac_address: Option<String>,
    /// DNS servers the guest uses.
    pub dns_servers: Vec<String>,
    /// `qemu-user`.
    pub mode: String,
}
