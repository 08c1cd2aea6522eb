//! The per-VM supervisor: one small process per running VM that owns the VMM child, its
//! console log and the single agent channel, and serves any number of local clients (CLI
//! calls, MCP servers, SDK users) over a Unix socket in the VM's directory.
//!
//! Why a process of its own: a VM must outlive the CLI call that started it, and QEMU's
//! chardev socket serves one client at a time, so something long-lived has to multiplex.
//!
//! [`server`] is that process (the `pyro-supervisor` binary runs [`server::supervisor_main`]);
//! `client` is how a [`Machine`](crate::Machine) spawns it and talks to it. The two share
//! only the launch spec, the ready line and the pid record defined here, and the file names
//! of [`VmDir`](crate::VmDir).
//!
//! Startup handshake with the spawner: the supervisor prints exactly one JSON line on its
//! stdout, the ready line, once the guest agent answered (or with the reason it did not),
//! then detaches its stdout.

pub(crate) mod client;
pub mod server;

use crate::util::pid_alive;
use pyro_sys::ProcessIdentity;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the supervisor runs; written by the engine into `launch.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LaunchSpec {
    pub(crate) vm_id: String,
    pub(crate) vmm_bin: PathBuf,
    pub(crate) vmm_args: Vec<String>,
    pub(crate) backend: crate::Backend,
    pub(crate) accel: crate::Accel,
    pub(crate) boot_timeout_ms: u64,
    /// Ephemeral VMs die with the process that owns them (a killed `pyro run` leaves nothing).
    pub(crate) owner_pid: Option<u32>,
    /// Remove the whole VM directory when the VM ends (ephemeral VMs).
    pub(crate) remove_dir_on_exit: bool,
    /// The guest has a NIC (QEMU user network). Its egress is filtered (crate::netfilter);
    /// without a kernel that can filter, such a VM does not start.
    #[serde(default)]
    pub(crate) network: bool,
    /// Egress may also reach private ranges: `PYRO_NETWORK_ALLOW_PRIVATE=1` was set in the
    /// process that started the VM.
    #[serde(default)]
    pub(crate) allow_private_network: bool,
    /// Services may publish ports on the host (`egress+published-ports`): without it the
    /// supervisor refuses every publish request.
    #[serde(default)]
    pub(crate) publish_ports: bool,
    /// Load this memory state (QEMU was given `-incoming defer`) instead of booting.
    #[serde(default)]
    pub(crate) restore_from: Option<PathBuf>,
    /// `restore_from` is this VM's own state (a resume in place): it is discarded once
    /// loaded, before the guest runs.
    #[serde(default)]
    pub(crate) consume_state: bool,
    /// Ports to publish again once a restored guest answers.
    #[serde(default)]
    pub(crate) restore_ports: Vec<crate::PublishedPort>,
    /// The guest's hostname, applied through the agent.
    #[serde(default)]
    pub(crate) hostname: Option<String>,
    /// Pause by itself after this many ms without a client request.
    #[serde(default)]
    pub(crate) idle_pause_ms: Option<u64>,
    /// The lock an idle pause takes (exclusive, without waiting).
    #[serde(default)]
    pub(crate) lock_path: Option<PathBuf>,
    /// The machine's shape, recorded in `memory.json` by a pause.
    #[serde(default)]
    pub(crate) mem_mib: u32,
    #[serde(default)]
    pub(crate) vcpu_count: u32,
    #[serde(default)]
    pub(crate) disk: PathBuf,
    #[serde(default)]
    pub(crate) disk_format: crate::DiskFormat,
    /// [`crate::fingerprint`] of the VM, recorded in `memory.json` by a pause.
    #[serde(default)]
    pub(crate) fingerprint: String,
}

/// The one line the supervisor prints on stdout at startup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadyLine {
    pub(crate) ok: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) supervisor_pid: u32,
    #[serde(default)]
    pub(crate) vmm_pid: u32,
    /// Supervisor start to agent ready.
    #[serde(default)]
    pub(crate) ready_ms: u64,
    #[serde(default)]
    pub(crate) agent_version: String,
    /// Guest uptime when the agent sent Ready.
    #[serde(default)]
    pub(crate) guest_boot_ms: u64,
    /// The guest came from a memory state.
    #[serde(default)]
    pub(crate) restored: bool,
    /// `corrupt_state` when QEMU could not load the memory state.
    #[serde(default)]
    pub(crate) error_kind: Option<String>,
}

/// Pids of a running VM, for liveness checks and emergency kills, with who they were
/// (start time and boot id): after a reboot or pid reuse the same numbers name unrelated
/// processes, which must never be taken for the VM or signalled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    pub(crate) supervisor_pid: u32,
    pub(crate) vmm_pid: u32,
    /// Identities of both processes; `None` in records of older pyro versions (then the
    /// process must show the VM directory on its command line to count as the VM's).
    #[serde(default)]
    pub(crate) supervisor: Option<ProcessIdentity>,
    #[serde(default)]
    pub(crate) vmm: Option<ProcessIdentity>,
}

impl PidRecord {
    /// The record for this (supervisor) process and its VMM child.
    pub(crate) fn for_current(vmm_pid: u32) -> Self {
        let supervisor_pid = std::process::id();
        PidRecord {
            supervisor_pid,
            vmm_pid,
            supervisor: ProcessIdentity::of(supervisor_pid),
            vmm: ProcessIdentity::of(vmm_pid),
        }
    }

    /// The recorded processes that are still the VM's own (supervisor first).
    pub(crate) fn live_processes(&self, vm_dir: &Path) -> Vec<ProcessIdentity> {
        [(self.supervisor_pid, &self.supervisor), (self.vmm_pid, &self.vmm)]
            .into_iter()
            .filter_map(|(pid, id)| match id {
                Some(id) if id.pid == pid && id.is_alive() => Some(id.clone()),
                Some(_) => None,
                None => legacy_identity(pid, vm_dir),
            })
            .collect()
    }

    /// Is the supervisor named here alive and really this VM's supervisor?
    pub(crate) fn supervisor_alive(&self, vm_dir: &Path) -> bool {
        match &self.supervisor {
            Some(id) => id.pid == self.supervisor_pid && id.is_alive(),
            None => legacy_identity(self.supervisor_pid, vm_dir).is_some(),
        }
    }

    /// Is the VMM named here alive and really this VM's VMM?
    pub(crate) fn vmm_alive(&self, vm_dir: &Path) -> bool {
        match &self.vmm {
            Some(id) => id.pid == self.vmm_pid && id.is_alive(),
            None => legacy_identity(self.vmm_pid, vm_dir).is_some(),
        }
    }
}

/// A record without identities (older pyro): trust a pid only if that process names the VM
/// directory on its command line (the supervisor's `--vm-dir`, QEMU's socket paths).
fn legacy_identity(pid: u32, vm_dir: &Path) -> Option<ProcessIdentity> {
    if pid <= 1 || !pid_alive(pid) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = vm_dir.as_os_str().as_encoded_bytes();
    let mentions = !needle.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle);
    if mentions {
        ProcessIdentity::of(pid)
    } else {
        None
    }
}
