//! The one product-level boot path, shared by ephemeral VMs (`vm.rs`) and workspaces:
//! choose the backend (cached KVM probe), build the environment's initramfs, hand a
//! [`BootSpec`] to [`Machine::boot`] and describe the result as payload metadata.

use crate::config::find_own_binary;
use crate::env::{initramfs_for, InstalledEnvironment};
use crate::{Error, Pyro, Result};
use pyro_vmm::backend::{self, ProbeGuest, SelectInput};
use pyro_vmm::{Accel, Backend, BackendChoice, BootSpec, Machine, NetworkPolicy, VmDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to boot: the VM's directory and resources; the environment comes separately.
pub(crate) struct BootRequest {
    pub(crate) dir: VmDir,
    pub(crate) vm_id: String,
    pub(crate) vcpu_count: u32,
    pub(crate) mem_mib: u32,
    pub(crate) network: NetworkPolicy,
    /// The root disk: the environment's image itself (with `snapshot`) or the VM's own copy.
    pub(crate) disk: PathBuf,
    pub(crate) snapshot: bool,
    pub(crate) owner_pid: Option<u32>,
    pub(crate) remove_dir_on_exit: bool,
    /// How `disk` is stored (recorded by the host, never sniffed).
    pub(crate) disk_format: pyro_vmm::DiskFormat,
    /// Let the supervisor pause the VM after this long without a call.
    pub(crate) idle_pause: Option<pyro_vmm::IdlePause>,
    /// The guest's hostname (derived from the workspace id).
    pub(crate) hostname: Option<String>,
}

/// A booted VM and what the payloads report about it.
pub(crate) struct Launched {
    pub(crate) machine: Machine,
    pub(crate) accel: Accel,
    pub(crate) booted: pyro_vmm::Booted,
    /// `backend_reason`, `accel`, `agent_version`, `boot_ms`, `agent_transport`.
    pub(crate) metadata: BTreeMap<String, String>,
}

/// The initramfs for this environment and the current agent binary (cached). A cache dir
/// this user cannot write (a shared, root-built environment cache) falls back to
/// `$PYRO_HOME/cache`.
pub(crate) fn initramfs(env: &InstalledEnvironment, cache_dir: &Path) -> Result<PathBuf> {
    let agent = find_own_binary(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN")?;
    match initramfs_for(env, &agent, cache_dir) {
        Ok(p) => Ok(p),
        Err(first) => {
            let fallback = crate::config::Paths::from_env().map(|p| p.home.join("cache"));
            match fallback {
                Ok(dir) if dir != cache_dir => initramfs_for(env, &agent, &dir).map_err(|_| first),
                _ => Err(first),
            }
        }
    }
}

/// Pick the backend for a VM of this environment (runs the cached KVM probe if needed).
/// Blocking: a first probe boots a guest.
pub(crate) fn choose_backend(
    env: Option<&InstalledEnvironment>,
    cache_dir: &Path,
    allow_host_compat: bool,
) -> Result<BackendChoice> {
    let forced = match std::env::var("PYRO_BACKEND") {
        Ok(v) if !v.trim().is_empty() => Some(Backend::parse(&v)?),
        _ => None,
    };
    let build_initrd = || match env {
        Some(e) => initramfs(e, cache_dir).map_err(|e| pyro_vmm::Error::Initramfs(Box::new(e))),
        None => Err(pyro_vmm::Error::Initramfs(Box::new(Error::Environment(
            "no environment to build a probe initramfs from".into(),
        )))),
    };
    let probe_guest = env.map(|e| ProbeGuest {
        kernel: &e.kernel_image,
        kernel_release: &e.kernel_release,
        initramfs: &build_initrd,
    });
    Ok(backend::select(&SelectInput { forced, allow_host_compat, cache_dir, probe_guest })?)
}

impl Pyro {
    /// [`choose_backend`] off the async runtime.
    pub(crate) async fn choose_backend_for(
        &self,
        env: &InstalledEnvironment,
        allow_host_compat: bool,
    ) -> Result<BackendChoice> {
        let (env, cache_dir) = (env.clone(), self.paths().cache_dir.clone());
        tokio::task::spawn_blocking(move || choose_backend(Some(&env), &cache_dir, allow_host_compat))
            .await
            .map_err(|e| Error::Io(format!("backend selection task: {e}")))?
    }

    /// The [`BootSpec`] of `req` under `choice` (QEMU; TCG unless KVM was chosen): the
    /// environment's kernel and current initramfs (also what a saved memory state's
    /// fingerprint is computed from).
    pub(crate) fn boot_spec(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: &BootRequest,
    ) -> Result<BootSpec> {
        self.boot_spec_with(env, choice, req, initramfs(env, &self.paths().cache_dir)?)
    }

    /// [`Pyro::boot_spec`] with a given initramfs path, built or not: `pyro doctor
    /// --environment` computes a template's key without building anything.
    pub(crate) fn boot_spec_with(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: &BootRequest,
        initramfs: PathBuf,
    ) -> Result<BootSpec> {
        if choice.kind != Backend::Qemu {
            return Err(Error::HostRequirement(format!(
                "the {} backend cannot boot a VM in this build ({})",
                choice.kind.as_str(),
                choice.reason
            )));
        }
        Ok(BootSpec {
            dir: req.dir.clone(),
            vm_id: req.vm_id.clone(),
            accel: choice.accel.unwrap_or(Accel::Tcg),
            vcpu_count: req.vcpu_count,
            mem_mib: req.mem_mib,
            network: req.network,
            kernel: env.kernel_image.clone(),
            initramfs,
            disk: req.disk.clone(),
            disk_format: req.disk_format,
            snapshot: req.snapshot,
            owner_pid: req.owner_pid,
            remove_dir_on_exit: req.remove_dir_on_exit,
            supervisor_bin: find_own_binary("pyro-supervisor", "PYRO_SUPERVISOR_BIN")?,
            idle_pause: req.idle_pause.clone(),
            hostname: req.hostname.clone(),
        })
    }

    /// Boot `req` under the QEMU backend `choice` selected, and wait for its agent.
    pub(crate) async fn launch(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: BootRequest,
    ) -> Result<Launched> {
        let spec = self.boot_spec(env, choice, &req)?;
        let accel = spec.accel;
        let (machine, booted) = Machine::boot(spec).await?;
        Ok(launched(choice, accel, machine, booted))
    }

    /// [`Pyro::launch`], but from a saved memory state instead of a boot: the guest goes on
    /// where it was saved.
    pub(crate) async fn relaunch(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: BootRequest,
        state: &pyro_vmm::MemoryState,
    ) -> Result<Launched> {
        let spec = self.boot_spec(env, choice, &req)?;
        let accel = spec.accel;
        let (machine, booted) = Machine::restore(spec, state).await?;
        Ok(launched(choice, accel, machine, booted))
    }
}

fn launched(choice: &BackendChoice, accel: Accel, machine: Machine, booted: pyro_vmm::Booted) -> Launched {
    {
        let metadata = BTreeMap::from([
            ("backend_reason".to_string(), choice.reason.clone()),
            ("accel".to_string(), accel.as_str().to_string()),
            ("agent_version".to_string(), booted.agent_version.clone()),
            ("boot_ms".to_string(), booted.ready_ms.to_string()),
            ("agent_transport".to_string(), booted.transport.to_string()),
        ]);
        Launched { machine, accel, booted, metadata }
    }
}
