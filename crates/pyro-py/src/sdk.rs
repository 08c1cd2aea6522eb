//! The `Pyro` class: every method of the reference Python SDK plus pyro's
//! additions, each one SDK call. Arguments are converted (see `convert.rs`), the call runs
//! with the GIL released (see `runtime.rs`), the payload comes back as plain Python data.
//!
//! Defaults appear as literals in each `#[pyo3(signature = ...)]` because pyo3 can only
//! show literal defaults in `__text_signature__` (`inspect.signature`, the stubs); the
//! `const` block below fails the build if any of them drifts from `pyro::defaults`.

use crate::convert::{from_py, to_py, unsigned, unsigned_opt, Shape};
use crate::errors::to_pyerr;
use crate::runtime;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyro::workspace::secrets::SecretSpec;
use pyro::workspace::{
    ForkOptions, OpenShellOptions, PublishedPortSpec, ReadShellOptions, Readiness, StartServiceOptions,
    UpdateWorkspaceOptions,
};
use pyro::CreateVmOptions;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

/// `a == b` for `&str` in a `const` context.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// Every literal default of the signatures below (and of the `text_signature`s of the methods
// with a `str` default, which the abi3 build must take as `String` built from the engine's
// constant), checked against the engine's constant.
const _: () = {
    assert!(pyro::defaults::VCPU_COUNT == 1);
    assert!(pyro::defaults::MEM_MIB == 1024);
    assert!(pyro::defaults::TTL_SECONDS == 600);
    assert!(pyro::defaults::TIMEOUT_SECONDS == 30);
    assert!(!pyro::defaults::NETWORK);
    assert!(same(pyro::defaults::NETWORK_POLICY, "off"));
    assert!(pyro::defaults::READ_MAX_BYTES == 65536);
    assert!(same(pyro::defaults::RESET_SNAPSHOT, "baseline"));
    assert!(pyro::defaults::SHELL_MAX_CHARS == 65536);
    assert!(pyro::defaults::SHELL_COLS == 120);
    assert!(pyro::defaults::SHELL_ROWS == 30);
    assert!(same(pyro::defaults::SHELL_SIGNAL, "INT"));
    assert!(pyro::defaults::READY_TIMEOUT_SECONDS == 30);
    assert!(pyro::defaults::READY_INTERVAL_MS == 500);
    assert!(pyro::defaults::TAIL_LINES == 200);
    assert!(same(pyro::workspace::WORKSPACE_PATH, "/workspace"));
    assert!(pyro::defaults::BACKGROUND_TIMEOUT_SECONDS == 3600);
    assert!(pyro::defaults::COMMAND_READ_MAX_BYTES == 65536);
    assert!(pyro::defaults::COMMAND_WAIT_SECONDS == 30);
};

/// Default `profile` of `create_server`: the reference's, every tool (pinned by
/// crates/pyro-py/tests/test_surface.py).
const DEFAULT_PROFILE: &str = "workspace-full";

const SECRETS: &str = "a list of {\"name\", \"value\"} or {\"name\", \"file_path\"} dicts";
const STR_MAP: &str = "a dict of str to str";
const SECRET_ENV: &str = "a dict of secret name to environment variable name (str to str)";
const STR_LIST: &str = "a list of str";
const READINESS: &str =
    "None or one of {\"type\": \"file\", \"path\"}, {\"type\": \"tcp\", \"address\": \"HOST:PORT\"}, \
                         {\"type\": \"http\", \"url\"}, {\"type\": \"command\", \"command\"}";
const PORTS: &str = "a list of {\"guest_port\": int, \"host_port\": int or None} dicts";

/// The pyro engine in this process: disposable, persistent Linux microVM workspaces.
///
/// base_dir is the engine's state directory (workspaces, VM run directories; default
/// $PYRO_HOME, else ~/.local/share/pyro); cache_dir holds environments and runtime files
/// (default $PYRO_CACHE_DIR, else ~/.cache/pyro). manager must be None (pyro has no separate
/// manager object) and backend_name None or "qemu" (the only backend). max_active_vms is
/// accepted for compatibility and must be at least 1, but limits nothing: pyro caps running
/// VMs host-wide, across processes (one per 512 MiB of host memory, at most 64;
/// $PYRO_MAX_RUNNING_VMS overrides). progress: long work (environment builds and pulls)
/// reports "[pyro] stage: message" lines on sys.stderr when it is a terminal (None, the
/// default), always (True) or never (False); a callable gets each event as a dict
/// {"stage", "message", "fraction"} instead.
///
/// Every method returns plain dicts (a list for list_environments), releases the GIL while it
/// waits, and can be interrupted with Ctrl-C (KeyboardInterrupt), which cancels its work
/// like dropping the Rust SDK's future. Engine errors raise PyroError subclasses.
#[pyclass(name = "Pyro", module = "pyro_sdk", frozen)]
pub(crate) struct PyPyro {
    pyro: pyro::Pyro,
}

impl PyPyro {
    /// The Rust SDK engine behind this object (for `bench.rs`'s Rust-side loop).
    #[allow(dead_code, reason = "used by bench.rs, which the stubs branch fills in")]
    pub(crate) fn engine(&self) -> &pyro::Pyro {
        &self.pyro
    }

    /// Run one SDK call (GIL released, Ctrl-C polled) and return its payload as Python data.
    fn call<T, F>(&self, py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
    where
        T: Serialize + Send,
        F: Future<Output = pyro::Result<T>> + Send,
    {
        match runtime::wait(py, fut)? {
            Ok(payload) => to_py(py, &payload),
            Err(e) => Err(to_pyerr(py, &e)),
        }
    }
}

fn vm_options(
    py: Python<'_>,
    environment: String,
    vcpu_count: i64,
    mem_mib: i64,
    ttl_seconds: i64,
    network: bool,
    allow_host_compat: bool,
) -> PyResult<CreateVmOptions> {
    Ok(CreateVmOptions {
        environment,
        vcpu_count: unsigned(py, vcpu_count, "vcpu_count")?,
        mem_mib: unsigned(py, mem_mib, "mem_mib")?,
        ttl_seconds: unsigned(py, ttl_seconds, "ttl_seconds")?,
        network,
        allow_host_compat,
    })
}

#[pymethods]
impl PyPyro {
    #[new]
    #[pyo3(
        signature = (manager=None, *, backend_name=None, base_dir=None, cache_dir=None, max_active_vms=4, progress=None)
    )]
    #[allow(clippy::too_many_arguments, reason = "the Python constructor's keyword arguments")]
    fn new(
        py: Python<'_>,
        manager: Option<&Bound<'_, PyAny>>,
        backend_name: Option<String>,
        base_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
        max_active_vms: i64,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        if manager.is_some_and(|m| !m.is_none()) {
            return Err(PyTypeError::new_err(
                "manager must be None: pyro has no VmManager object; configure the engine with base_dir and cache_dir",
            ));
        }
        if let Some(name) = backend_name.as_deref() {
            if name != "qemu" {
                return Err(PyValueError::new_err(format!(
                    "unknown backend_name '{name}'; available: qemu (or None for the default, qemu)"
                )));
            }
        }
        if max_active_vms < 1 {
            return Err(crate::errors::invalid_input(
                py,
                format!("max_active_vms must be at least 1, got {max_active_vms}"),
            ));
        }
        let paths = match (base_dir, cache_dir) {
            (Some(home), Some(cache_dir)) => pyro::Paths { home, cache_dir },
            (home, cache_dir) => {
                let env = pyro::Paths::from_env().map_err(|e| to_pyerr(py, &e))?;
                pyro::Paths { home: home.unwrap_or(env.home), cache_dir: cache_dir.unwrap_or(env.cache_dir) }
            }
        };
        let progress = crate::progress::sink(py, progress)?;
        crate::install_bundle(&paths.cache_dir).map_err(|e| to_pyerr(py, &e))?;
        let pyro = pyro::Pyro::with_paths(paths);
        pyro.set_progress(progress);
        Ok(PyPyro { pyro })
    }

    fn __repr__(&self) -> String {
        let paths = self.pyro.paths();
        format!("Pyro(base_dir={:?}, cache_dir={:?})", paths.home.display(), paths.cache_dir.display())
    }

    // ---- environments --------------------------------------------------------------------

    /// Every catalog environment (debian:12, debian:12-base, debian:12-build) with its
    /// packages and install state: a list of inspect_environment payloads.
    #[pyo3(signature = ())]
    fn list_environments(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match runtime::wait(py, self.pyro.list_environments())? {
            Ok(list) => to_py(py, &list.environments),
            Err(e) => Err(to_pyerr(py, &e)),
        }
    }

    /// Install an environment: from the OCI image reference when given
    /// (REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:..., replacing an install from
    /// elsewhere once the new one is complete and verified), else from PYRO_ENV_REGISTRY when
    /// set, else built locally. Then make sure its warm-start template for the default VM
    /// shape exists (booted and saved once, so run_in_vm restores instead of booting; best
    /// effort).
    #[pyo3(signature = (environment, *, reference=None))]
    fn pull_environment(&self, py: Python<'_>, environment: String, reference: Option<String>) -> PyResult<Py<PyAny>> {
        match reference {
            Some(r) => self.call(py, async move { self.pyro.pull_environment_from(&environment, &r).await }),
            None => self.call(py, self.pyro.pull_environment(&environment)),
        }
    }

    /// Publish an installed environment as an OCI image: to reference
    /// (REGISTRY/REPOSITORY:TAG), or when None to PYRO_ENV_REGISTRY's default reference for
    /// it. Blobs the registry already has are not sent again (each layer says whether it was
    /// uploaded). Credentials: PYRO_REGISTRY_USERNAME/PYRO_REGISTRY_PASSWORD, else the Docker
    /// config file.
    #[pyo3(signature = (environment, reference=None))]
    fn push_environment(&self, py: Python<'_>, environment: String, reference: Option<String>) -> PyResult<Py<PyAny>> {
        self.call(py, async move { self.pyro.push_environment(&environment, reference.as_deref()).await })
    }

    /// Make the first real call on an environment fast: install it if missing, run the KVM
    /// probe, build the initramfs and the warm-run template of the default VM shape (network
    /// also the network-on shape's). force rebuilds the initramfs and templates (never the
    /// installed environment). Each step reports already, done, rebuilt, skipped or failed.
    #[pyo3(signature = (environment, *, network=false, force=false))]
    fn prepare_environment(
        &self,
        py: Python<'_>,
        environment: String,
        network: bool,
        force: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = pyro::PrepareOptions { network, force };
        self.call(py, async move { self.pyro.prepare_environment(&environment, &opts).await })
    }

    /// One catalog environment: description, packages, install state, cache and install
    /// directories. An unknown name raises NotFoundError (a ValueError).
    #[pyo3(signature = (environment))]
    fn inspect_environment(&self, py: Python<'_>, environment: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.inspect_environment(&environment))
    }

    /// Remove broken installs, abandoned partial builds, other versions and names not in
    /// the catalog from the cache. Installs being pulled right now are left alone. names
    /// (a list of environment names) deletes those installs too (one being pulled is waited
    /// for, never deleted mid-pull).
    #[pyo3(signature = (*, names=None))]
    fn prune_environments(&self, py: Python<'_>, names: Option<Vec<String>>) -> PyResult<Py<PyAny>> {
        match names {
            Some(names) => self.call(py, async move {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                self.pyro.remove_environments(&names).await
            }),
            None => self.call(py, self.pyro.prune_environments()),
        }
    }

    // ---- ephemeral VMs -------------------------------------------------------------------

    /// Create an ephemeral VM record (installs the environment first if needed). Not booted:
    /// start_vm boots it. vcpu_count 1..8, mem_mib 256..32768, ttl_seconds 60..3600 (the VM is
    /// deleted once it has passed). network gives the guest outbound access; allow_host_compat
    /// allows running commands on the host, without isolation, when no VM backend can boot.
    #[pyo3(signature = (*, environment, vcpu_count=1, mem_mib=1024, ttl_seconds=600, network=false, allow_host_compat=false))]
    #[allow(clippy::too_many_arguments)]
    fn create_vm(
        &self,
        py: Python<'_>,
        environment: String,
        vcpu_count: i64,
        mem_mib: i64,
        ttl_seconds: i64,
        network: bool,
        allow_host_compat: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = vm_options(py, environment, vcpu_count, mem_mib, ttl_seconds, network, allow_host_compat)?;
        self.call(py, self.pyro.create_vm(opts))
    }

    /// Boot a created (or stopped) VM and wait for its guest agent. A no-op on a started VM.
    #[pyo3(signature = (vm_id))]
    fn start_vm(&self, py: Python<'_>, vm_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.start_vm(&vm_id))
    }

    /// Run one command (/bin/sh -lc) in a started VM, then delete the VM, whether the command
    /// succeeded, failed or timed out. Returns stdout, stderr and exit_code (124 on timeout).
    #[pyo3(signature = (vm_id, *, command, timeout_seconds=30))]
    fn exec_vm(&self, py: Python<'_>, vm_id: String, command: String, timeout_seconds: i64) -> PyResult<Py<PyAny>> {
        let timeout_seconds = unsigned(py, timeout_seconds, "timeout_seconds")?;
        self.call(py, self.pyro.exec_vm(&vm_id, &command, timeout_seconds))
    }

    /// Stop a VM (the guest is shut down; the record stays until delete_vm).
    #[pyo3(signature = (vm_id))]
    fn stop_vm(&self, py: Python<'_>, vm_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.stop_vm(&vm_id))
    }

    /// Delete a VM: kill it if running and remove everything it had on the host.
    #[pyo3(signature = (vm_id))]
    fn delete_vm(&self, py: Python<'_>, vm_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.delete_vm(&vm_id))
    }

    /// Current record of a VM. Fails (after deleting it) when its TTL has passed.
    #[pyo3(signature = (vm_id))]
    fn status_vm(&self, py: Python<'_>, vm_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.status_vm(&vm_id))
    }

    /// Network facts of a VM: guest IP, gateway, DNS, whether outbound access is expected.
    #[pyo3(signature = (vm_id))]
    fn network_info_vm(&self, py: Python<'_>, vm_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.network_info_vm(&vm_id))
    }

    /// Delete every ephemeral VM of this engine whose TTL has passed. Workspaces are not
    /// affected. Returns {"deleted_vm_ids", "count"}.
    #[pyo3(signature = ())]
    fn reap_expired(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.reap_expired())
    }

    /// create_vm + start_vm + exec_vm: run one command in a fresh VM that is deleted
    /// afterwards. On any failure after create the VM is deleted and the error raised.
    /// Returns stdout, stderr, exit_code (124 on timeout) and the cleanup record.
    #[pyo3(signature = (*, environment, command, vcpu_count=1, mem_mib=1024, timeout_seconds=30, ttl_seconds=600, network=false, allow_host_compat=false))]
    #[allow(clippy::too_many_arguments)]
    fn run_in_vm(
        &self,
        py: Python<'_>,
        environment: String,
        command: String,
        vcpu_count: i64,
        mem_mib: i64,
        timeout_seconds: i64,
        ttl_seconds: i64,
        network: bool,
        allow_host_compat: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = vm_options(py, environment, vcpu_count, mem_mib, ttl_seconds, network, allow_host_compat)?;
        let timeout_seconds = unsigned(py, timeout_seconds, "timeout_seconds")?;
        self.call(py, self.pyro.run_in_vm(opts, &command, timeout_seconds))
    }

    // ---- workspaces ----------------------------------------------------------------------

    /// Create a workspace and boot it; /workspace is seeded and the baseline stored. On any
    /// failure nothing of it remains.
    ///
    /// environment: debian:12, debian:12-base or debian:12-build (installed first if missing).
    /// vcpu_count 1..8, mem_mib 256..32768; ttl_seconds 60..3600: when it passes the
    /// workspace is stopped with its disk kept (update_workspace(ttl_seconds=...) extends it).
    /// network_policy: "off", "egress" or "egress+published-ports". seed_path: a host
    /// directory (its children are copied) or .tar/.tar.gz/.tgz archive unpacked into
    /// /workspace; it becomes the baseline snapshot. secrets: a list of {"name", "value"} or
    /// {"name", "file_path"} dicts, available to commands via secret_env and at
    /// /run/pyro-secrets/<NAME>, redacted from every output. name: optional, at most 120
    /// characters; labels: {key: value}. idle_pause_seconds: pause the workspace after this
    /// many seconds without a call (1..86400; None or 0: never); the next call resumes it.
    #[pyo3(
        signature = (*, environment, vcpu_count=1, mem_mib=1024, ttl_seconds=600, network_policy=pyro::defaults::NETWORK_POLICY.to_string(), allow_host_compat=false, seed_path=None, secrets=None, name=None, labels=None, idle_pause_seconds=None),
        text_signature = "($self, *, environment, vcpu_count=1, mem_mib=1024, ttl_seconds=600, network_policy='off', allow_host_compat=False, seed_path=None, secrets=None, name=None, labels=None, idle_pause_seconds=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn create_workspace(
        &self,
        py: Python<'_>,
        environment: String,
        vcpu_count: i64,
        mem_mib: i64,
        ttl_seconds: i64,
        network_policy: String,
        allow_host_compat: bool,
        seed_path: Option<PathBuf>,
        secrets: Option<&Bound<'_, PyAny>>,
        name: Option<String>,
        labels: Option<&Bound<'_, PyAny>>,
        idle_pause_seconds: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let opts = pyro::workspace::CreateWorkspaceOptions {
            vcpu_count: unsigned(py, vcpu_count, "vcpu_count")?,
            mem_mib: unsigned(py, mem_mib, "mem_mib")?,
            ttl_seconds: unsigned(py, ttl_seconds, "ttl_seconds")?,
            network_policy,
            allow_host_compat,
            seed_path,
            name,
            labels: from_py::<BTreeMap<String, String>>(labels, Shape::Dict, "labels", STR_MAP)?.unwrap_or_default(),
            secrets: from_py::<Vec<SecretSpec>>(secrets, Shape::List, "secrets", SECRETS)?.unwrap_or_default(),
            idle_pause_seconds: unsigned_opt(py, idle_pause_seconds, "idle_pause_seconds")?,
            ..pyro::workspace::CreateWorkspaceOptions::new(environment)
        };
        self.call(py, self.pyro.create_workspace(opts))
    }

    /// Every workspace, most recently active first. Workspaces whose TTL passed are stopped
    /// first. Returns {"count", "workspaces"}.
    #[pyo3(signature = ())]
    fn list_workspaces(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.list_workspaces())
    }

    /// Change name, labels, TTL or idle pause (works in any state). Refused if nothing would
    /// change. labels are added or overwritten, clear_labels lists keys to remove. A new
    /// ttl_seconds makes the workspace expire that many seconds from now. idle_pause_seconds
    /// (1..86400; 0 turns it off) applies at once to a running workspace, counting from now.
    #[pyo3(signature = (workspace_id, *, name=None, clear_name=false, labels=None, clear_labels=None, ttl_seconds=None, idle_pause_seconds=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_workspace(
        &self,
        py: Python<'_>,
        workspace_id: String,
        name: Option<String>,
        clear_name: bool,
        labels: Option<&Bound<'_, PyAny>>,
        clear_labels: Option<&Bound<'_, PyAny>>,
        ttl_seconds: Option<i64>,
        idle_pause_seconds: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let opts = UpdateWorkspaceOptions {
            name,
            clear_name,
            labels: from_py::<BTreeMap<String, String>>(labels, Shape::Dict, "labels", STR_MAP)?.unwrap_or_default(),
            clear_labels: from_py::<Vec<String>>(clear_labels, Shape::List, "clear_labels", STR_LIST)?
                .unwrap_or_default(),
            ttl_seconds: unsigned_opt(py, ttl_seconds, "ttl_seconds")?,
            idle_pause_seconds: unsigned_opt(py, idle_pause_seconds, "idle_pause_seconds")?,
        };
        self.call(py, self.pyro.update_workspace(&workspace_id, opts))
    }

    /// The workspace's current record: state, limits, expiry, command count, last command,
    /// last_error. A VM that died is reported stopped with last_error. Never boots anything.
    #[pyo3(signature = (workspace_id))]
    fn status_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.status_workspace(&workspace_id))
    }

    /// Command history with outputs (every exec_workspace), oldest first. The host keeps a
    /// bounded number of entries and bytes of output; older entries are deleted (the
    /// workspace's command_count still counts them).
    #[pyo3(signature = (workspace_id))]
    fn logs_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.logs_workspace(&workspace_id))
    }

    /// Delete a workspace and everything it has on the host (any state, even expired).
    #[pyo3(signature = (workspace_id))]
    fn delete_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.delete_workspace(&workspace_id))
    }

    /// Stop: clean guest shutdown (sync, unmount, poweroff) with a bounded wait, then the VM
    /// is ended. Idempotent. The disk keeps /workspace; the disk tools work on it.
    #[pyo3(signature = (workspace_id))]
    fn stop_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.stop_workspace(&workspace_id))
    }

    /// Start: boot the same disk again (a no-op on a started workspace). A paused workspace
    /// is resumed; when its memory state is unusable it is discarded and the disk boots cold.
    #[pyo3(signature = (workspace_id))]
    fn start_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.start_workspace(&workspace_id))
    }

    /// Compare /workspace with the create-time baseline: per-path status and git-style
    /// text patches. The workspace must be started.
    #[pyo3(signature = (workspace_id))]
    fn diff_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.diff_workspace(&workspace_id))
    }

    /// Pause a running workspace: its guest memory and device state (processes, shells,
    /// services, /run with the secrets, open files) and a consistent disk are saved under
    /// the workspace directory and its VM ends. status shows "paused"; resume_workspace, or
    /// any call that needs the guest (exec, files, shells, services), brings it back. A pause
    /// that fails leaves the workspace running. A stopped workspace cannot be paused; pausing
    /// a paused one changes nothing.
    #[pyo3(signature = (workspace_id))]
    fn pause_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.pause_workspace(&workspace_id))
    }

    /// Resume a paused workspace: its guest continues where it was paused (same processes,
    /// PIDs, shells, services, published ports). A running workspace is refused (nothing to
    /// resume), and so is a stopped one (start_workspace boots it). A memory state that
    /// cannot be used is discarded: the workspace is then stopped with its disk kept, and
    /// the error says so.
    #[pyo3(signature = (workspace_id))]
    fn resume_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.resume_workspace(&workspace_id))
    }

    /// Fork a workspace into count (1..8) new ones, each with its own copy-on-write disk and,
    /// from a running or paused workspace, its own copy of the guest's memory: processes,
    /// shells, services and files are as they were in the parent. Each child gets a new id,
    /// hostname and fresh kernel entropy. A running parent is paused for the fork and resumed
    /// after; a paused one stays paused; a stopped parent gives stopped children. names
    /// (at most count) name the new workspaces in order. Published ports are not carried
    /// over. A failure leaves no child behind.
    #[pyo3(signature = (workspace_id, *, count=1, names=None))]
    fn fork_workspace(
        &self,
        py: Python<'_>,
        workspace_id: String,
        count: i64,
        names: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = ForkOptions {
            count: unsigned(py, count, "count")?,
            names: from_py::<Vec<String>>(names, Shape::List, "names", STR_LIST)?.unwrap_or_default(),
        };
        self.call(py, async move { self.pyro.fork_workspace(&workspace_id, &opts).await })
    }

    /// Run a command (/bin/sh -lc) in /workspace; recorded in the history. A paused workspace
    /// is resumed first (resumed_from_pause in the result). Returns stdout, stderr and
    /// exit_code; a timeout kills the command's whole process group (exit code 124).
    /// secret_env maps workspace secret names to environment variable names for this one
    /// command; secret values are redacted from the result and the history. Interrupting the
    /// call (Ctrl-C) kills the command in the guest.
    #[pyo3(signature = (workspace_id, *, command, timeout_seconds=30, secret_env=None))]
    fn exec_workspace(
        &self,
        py: Python<'_>,
        workspace_id: String,
        command: String,
        timeout_seconds: i64,
        secret_env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let timeout_seconds = unsigned(py, timeout_seconds, "timeout_seconds")?;
        let secret_env = from_py::<BTreeMap<String, String>>(secret_env, Shape::Dict, "secret_env", SECRET_ENV)?;
        self.call(py, async move {
            self.pyro.exec_workspace(&workspace_id, &command, timeout_seconds, secret_env.as_ref()).await
        })
    }

    /// Start a command (/bin/sh -lc) in /workspace in the background and return at once with
    /// its command_id: it runs on after this call, after this process, and is followed with
    /// status_workspace_command, read_workspace_command, wait_workspace_command and
    /// kill_workspace_command. It is killed after timeout_seconds (state timed_out, exit code
    /// 124; default one hour). When it ends it lands in the history like any exec. At most 8
    /// run at once per workspace; secret_env as for exec_workspace.
    #[pyo3(signature = (workspace_id, *, command, timeout_seconds=3600, secret_env=None))]
    fn start_workspace_command(
        &self,
        py: Python<'_>,
        workspace_id: String,
        command: String,
        timeout_seconds: i64,
        secret_env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let timeout_seconds = unsigned(py, timeout_seconds, "timeout_seconds")?;
        let secret_env = from_py::<BTreeMap<String, String>>(secret_env, Shape::Dict, "secret_env", SECRET_ENV)?;
        let opts = pyro::workspace::WorkspaceExecOptions { timeout_seconds, secret_env, sync: false };
        self.call(py, async move { self.pyro.start_workspace_command(&workspace_id, &command, &opts).await })
    }

    /// A background command's state (running, exited, killed or timed_out), its exit code once
    /// ended, how much output it wrote, and its history sequence once recorded.
    #[pyo3(signature = (workspace_id, command_id))]
    fn status_workspace_command(
        &self,
        py: Python<'_>,
        workspace_id: String,
        command_id: String,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.status_workspace_command(&workspace_id, &command_id))
    }

    /// A background command's output from cursor on (bytes of both streams together, in the
    /// order written; start at 0, then pass back next_cursor), at most max_bytes per call,
    /// with stdout and stderr apart, has_more, and dropped_bytes when old output was discarded.
    #[pyo3(signature = (workspace_id, command_id, *, cursor=0, max_bytes=65536))]
    fn read_workspace_command(
        &self,
        py: Python<'_>,
        workspace_id: String,
        command_id: String,
        cursor: i64,
        max_bytes: i64,
    ) -> PyResult<Py<PyAny>> {
        let cursor = unsigned(py, cursor, "cursor")?;
        let max_bytes = unsigned(py, max_bytes, "max_bytes")?;
        self.call(py, self.pyro.read_workspace_command(&workspace_id, &command_id, cursor, max_bytes))
    }

    /// Wait up to timeout_seconds (0..=3600) for a background command to end and return its
    /// state; the command is never killed by a wait (call again to keep waiting).
    #[pyo3(signature = (workspace_id, command_id, *, timeout_seconds=30))]
    fn wait_workspace_command(
        &self,
        py: Python<'_>,
        workspace_id: String,
        command_id: String,
        timeout_seconds: i64,
    ) -> PyResult<Py<PyAny>> {
        let timeout_seconds = unsigned(py, timeout_seconds, "timeout_seconds")?;
        self.call(py, self.pyro.wait_workspace_command(&workspace_id, &command_id, timeout_seconds))
    }

    /// Kill a background command's whole process group (TERM, then KILL after 2 s); it ends
    /// killed and lands in the history. Killing an ended command changes nothing.
    #[pyo3(signature = (workspace_id, command_id))]
    fn kill_workspace_command(&self, py: Python<'_>, workspace_id: String, command_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.kill_workspace_command(&workspace_id, &command_id))
    }

    /// One review payload since the workspace's creation or last reset: syncs, file writes,
    /// patches, exports, services started and stopped, snapshots, background commands, the
    /// command history (exit codes, durations) and the current diff stat (as diff_workspace).
    /// Works in any state; never resumes a paused workspace.
    #[pyo3(signature = (workspace_id))]
    fn summary_workspace(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.summary_workspace(&workspace_id))
    }

    /// Push a host directory or tar archive (.tar/.tar.gz/.tgz) into the started workspace
    /// under dest (default /workspace). Existing files are overwritten; nothing is deleted.
    #[pyo3(
        signature = (workspace_id, source_path, *, dest=pyro::workspace::WORKSPACE_PATH.to_string()),
        text_signature = "($self, workspace_id, source_path, *, dest='/workspace')"
    )]
    fn push_workspace_sync(
        &self,
        py: Python<'_>,
        workspace_id: String,
        source_path: PathBuf,
        dest: String,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.push_workspace_sync(&workspace_id, &source_path, &dest))
    }

    /// Copy a file, directory or symlink out of the workspace (a path under /workspace) to a
    /// new host path; refuses to overwrite. The workspace must be started.
    #[pyo3(signature = (workspace_id, path, *, output_path))]
    fn export_workspace(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        output_path: PathBuf,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.export_workspace(&workspace_id, &path, &output_path))
    }

    /// List a path under /workspace in the running guest (relative paths are taken under
    /// /workspace; ".." is refused): type, size, link target. Symlinks are listed, not
    /// followed.
    #[pyo3(
        signature = (workspace_id, *, path=pyro::workspace::WORKSPACE_PATH.to_string(), recursive=false),
        text_signature = "($self, workspace_id, *, path='/workspace', recursive=False)"
    )]
    fn list_workspace_files(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        recursive: bool,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.list_workspace_files(&workspace_id, &path, recursive))
    }

    /// Read a text file of the started workspace; max_bytes 1..1 MiB; truncation never splits
    /// a UTF-8 character (truncated says if there is more).
    #[pyo3(signature = (workspace_id, path, *, max_bytes=65536))]
    fn read_workspace_file(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        max_bytes: i64,
    ) -> PyResult<Py<PyAny>> {
        let max_bytes = unsigned(py, max_bytes, "max_bytes")?;
        self.call(py, self.pyro.read_workspace_file(&workspace_id, &path, max_bytes))
    }

    /// Write a text file (UTF-8, at most 1 MiB); parent directories are created. An existing
    /// file keeps its mode; new files are 0644.
    #[pyo3(signature = (workspace_id, path, *, text))]
    fn write_workspace_file(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        text: String,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.write_workspace_file(&workspace_id, &path, &text))
    }

    /// Apply a unified/git diff (paths relative to /workspace, at most 1 MiB) to /workspace.
    /// Everything is checked before anything is written; a patch that does not apply
    /// changes nothing.
    #[pyo3(signature = (workspace_id, *, patch))]
    fn apply_workspace_patch(&self, py: Python<'_>, workspace_id: String, patch: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.apply_workspace_patch(&workspace_id, &patch))
    }

    /// Export a stopped workspace's disk as a raw ext4 image to a new host path (sparse,
    /// never partial, never overwrites). Never boots or changes the workspace.
    #[pyo3(signature = (workspace_id, *, output_path))]
    fn export_workspace_disk(&self, py: Python<'_>, workspace_id: String, output_path: PathBuf) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.export_workspace_disk(&workspace_id, &output_path))
    }

    /// List a directory of a stopped workspace's disk without booting it (/workspace by
    /// default; absolute paths anywhere on the disk).
    #[pyo3(
        signature = (workspace_id, *, path=pyro::workspace::WORKSPACE_PATH.to_string(), recursive=false),
        text_signature = "($self, workspace_id, *, path='/workspace', recursive=False)"
    )]
    fn list_workspace_disk(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        recursive: bool,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.list_workspace_disk(&workspace_id, &path, recursive))
    }

    /// Read up to max_bytes (1 to 16 MiB) of a regular file on a stopped workspace's disk,
    /// without booting it. Costs what max_bytes asks, not the file's size.
    #[pyo3(signature = (workspace_id, path, *, max_bytes=65536))]
    fn read_workspace_disk(
        &self,
        py: Python<'_>,
        workspace_id: String,
        path: String,
        max_bytes: i64,
    ) -> PyResult<Py<PyAny>> {
        let max_bytes = unsigned(py, max_bytes, "max_bytes")?;
        self.call(py, self.pyro.read_workspace_disk(&workspace_id, &path, max_bytes))
    }

    // ---- snapshots -----------------------------------------------------------------------

    /// Save the current /workspace tree of the started workspace under a name
    /// ([A-Za-z0-9][A-Za-z0-9._-]{0,63}, not "baseline", not already taken), to restore
    /// later with reset_workspace. Only /workspace is captured.
    #[pyo3(signature = (workspace_id, snapshot_name))]
    fn create_snapshot(&self, py: Python<'_>, workspace_id: String, snapshot_name: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.create_snapshot(&workspace_id, &snapshot_name))
    }

    /// The workspace's snapshots: "baseline" first, then named ones newest first. Works in
    /// any state.
    #[pyo3(signature = (workspace_id))]
    fn list_snapshots(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.list_snapshots(&workspace_id))
    }

    /// Delete a named snapshot ("baseline" cannot be deleted). Works in any state.
    #[pyo3(signature = (workspace_id, snapshot_name))]
    fn delete_snapshot(&self, py: Python<'_>, workspace_id: String, snapshot_name: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.delete_snapshot(&workspace_id, &snapshot_name))
    }

    /// Rebuild the workspace from its environment and restore /workspace from a snapshot
    /// (default the baseline), discarding every change since. History is cleared;
    /// snapshots, name and labels stay. A reset that fails leaves the workspace as it was.
    #[pyo3(
        signature = (workspace_id, *, snapshot=pyro::defaults::RESET_SNAPSHOT.to_string()),
        text_signature = "($self, workspace_id, *, snapshot='baseline')"
    )]
    fn reset_workspace(&self, py: Python<'_>, workspace_id: String, snapshot: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.reset_workspace(&workspace_id, &snapshot))
    }

    // ---- shells --------------------------------------------------------------------------

    /// Open an interactive shell (bash -i on a PTY) in a started workspace. cwd: /workspace
    /// or below (it must exist); cols 1..1000, rows 1..500; secret_env maps secret names to
    /// environment variables exported in the shell. Drive it with write_shell / read_shell.
    #[pyo3(
        signature = (workspace_id, *, cwd=pyro::workspace::WORKSPACE_PATH.to_string(), cols=120, rows=30, secret_env=None),
        text_signature = "($self, workspace_id, *, cwd='/workspace', cols=120, rows=30, secret_env=None)"
    )]
    fn open_shell(
        &self,
        py: Python<'_>,
        workspace_id: String,
        cwd: String,
        cols: i64,
        rows: i64,
        secret_env: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = OpenShellOptions {
            cwd,
            cols: unsigned(py, cols, "cols")?,
            rows: unsigned(py, rows, "rows")?,
            secret_env: from_py::<BTreeMap<String, String>>(secret_env, Shape::Dict, "secret_env", SECRET_ENV)?
                .unwrap_or_default(),
        };
        self.call(py, self.pyro.open_shell(&workspace_id, opts))
    }

    /// Read shell output from cursor (0 = the beginning; pass the previous next_cursor to
    /// continue), at most max_chars characters. plain renders through a terminal emulator
    /// (cursor movement, erasures and colours resolved); wait_for_idle_ms (1..10000) returns
    /// only once output has been quiet that long.
    #[pyo3(signature = (workspace_id, shell_id, *, cursor=0, max_chars=65536, plain=false, wait_for_idle_ms=None))]
    #[allow(clippy::too_many_arguments)]
    fn read_shell(
        &self,
        py: Python<'_>,
        workspace_id: String,
        shell_id: String,
        cursor: i64,
        max_chars: i64,
        plain: bool,
        wait_for_idle_ms: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        let opts = ReadShellOptions {
            cursor: unsigned(py, cursor, "cursor")?,
            max_chars: unsigned(py, max_chars, "max_chars")?,
            plain,
            wait_for_idle_ms: unsigned_opt(py, wait_for_idle_ms, "wait_for_idle_ms")?,
        };
        self.call(py, self.pyro.read_shell(&workspace_id, &shell_id, opts))
    }

    /// Type input into the shell, followed by a newline unless append_newline is False.
    #[pyo3(signature = (workspace_id, shell_id, *, input, append_newline=true))]
    fn write_shell(
        &self,
        py: Python<'_>,
        workspace_id: String,
        shell_id: String,
        input: String,
        append_newline: bool,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.write_shell(&workspace_id, &shell_id, &input, append_newline))
    }

    /// Send HUP, INT, QUIT, TERM or KILL to the shell's foreground job and the shell.
    #[pyo3(
        signature = (workspace_id, shell_id, *, signal_name=pyro::defaults::SHELL_SIGNAL.to_string()),
        text_signature = "($self, workspace_id, shell_id, *, signal_name='INT')"
    )]
    fn signal_shell(
        &self,
        py: Python<'_>,
        workspace_id: String,
        shell_id: String,
        signal_name: String,
    ) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.signal_shell(&workspace_id, &shell_id, &signal_name))
    }

    /// End the shell (HUP, then KILL after 2 s) and forget it.
    #[pyo3(signature = (workspace_id, shell_id))]
    fn close_shell(&self, py: Python<'_>, workspace_id: String, shell_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.close_shell(&workspace_id, &shell_id))
    }

    // ---- services ------------------------------------------------------------------------

    /// Start a named background service (name [A-Za-z0-9][A-Za-z0-9._-]{0,63}) in a started
    /// workspace and wait for its readiness check. command runs with /bin/sh -lc in cwd and
    /// should stay in the foreground. readiness: None (ready once started) or
    /// {"type": "file", "path"}, {"type": "tcp", "address": "HOST:PORT"},
    /// {"type": "http", "url"} or {"type": "command", "command"}, checked every
    /// ready_interval_ms for up to ready_timeout_seconds; when readiness does not come in
    /// time the service is stopped, its logs kept, and the call fails saying why.
    /// published_ports: [{"guest_port": N, "host_port": M or None}] publish guest ports on
    /// host 127.0.0.1 (network policy "egress+published-ports"; None picks a free port).
    #[pyo3(
        signature = (workspace_id, service_name, *, command, cwd=pyro::workspace::WORKSPACE_PATH.to_string(), readiness=None, ready_timeout_seconds=30, ready_interval_ms=500, secret_env=None, published_ports=None),
        text_signature = "($self, workspace_id, service_name, *, command, cwd='/workspace', readiness=None, ready_timeout_seconds=30, ready_interval_ms=500, secret_env=None, published_ports=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn start_service(
        &self,
        py: Python<'_>,
        workspace_id: String,
        service_name: String,
        command: String,
        cwd: String,
        readiness: Option<&Bound<'_, PyAny>>,
        ready_timeout_seconds: i64,
        ready_interval_ms: i64,
        secret_env: Option<&Bound<'_, PyAny>>,
        published_ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let opts = StartServiceOptions {
            command,
            cwd,
            readiness: from_py::<Readiness>(readiness, Shape::Dict, "readiness", READINESS)?,
            ready_timeout_seconds: unsigned(py, ready_timeout_seconds, "ready_timeout_seconds")?,
            ready_interval_ms: unsigned(py, ready_interval_ms, "ready_interval_ms")?,
            secret_env: from_py::<BTreeMap<String, String>>(secret_env, Shape::Dict, "secret_env", SECRET_ENV)?
                .unwrap_or_default(),
            published_ports: from_py::<Vec<PublishedPortSpec>>(published_ports, Shape::List, "published_ports", PORTS)?
                .unwrap_or_default(),
        };
        self.call(py, self.pyro.start_service(&workspace_id, &service_name, opts))
    }

    /// Every service of the workspace with its state, readiness and published ports,
    /// refreshed from the guest.
    #[pyo3(signature = (workspace_id))]
    fn list_services(&self, py: Python<'_>, workspace_id: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.list_services(&workspace_id))
    }

    /// One service (running, exited, stopped, failed), refreshed from the guest.
    #[pyo3(signature = (workspace_id, service_name))]
    fn status_service(&self, py: Python<'_>, workspace_id: String, service_name: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.status_service(&workspace_id, &service_name))
    }

    /// Stop a service: TERM to its process group, KILL after 5 s; its published ports close.
    /// Its logs are kept.
    #[pyo3(signature = (workspace_id, service_name))]
    fn stop_service(&self, py: Python<'_>, workspace_id: String, service_name: String) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.stop_service(&workspace_id, &service_name))
    }

    /// A service's stdout and stderr: the last tail_lines lines of each, or everything kept
    /// with all=True. Secret values are redacted.
    #[pyo3(signature = (workspace_id, service_name, *, tail_lines=200, all=false))]
    fn logs_service(
        &self,
        py: Python<'_>,
        workspace_id: String,
        service_name: String,
        tail_lines: i64,
        all: bool,
    ) -> PyResult<Py<PyAny>> {
        let tail_lines = unsigned(py, tail_lines, "tail_lines")?;
        self.call(py, self.pyro.logs_service(&workspace_id, &service_name, tail_lines, all))
    }

    // ---- host and MCP --------------------------------------------------------------------

    /// What this host can do: platform, whether a guest can boot here, the problems found
    /// (each with what to do about it), the installed environments and runtime binaries.
    #[pyo3(signature = ())]
    fn doctor(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.call(py, self.pyro.doctor())
    }

    /// An MCP server over this engine listing the tools of profile ("vm-run",
    /// "workspace-core" or "workspace-full"); serve it with .run(). An unknown profile
    /// raises ValueError. Workspaces its clients create without idle_pause_seconds get
    /// $PYRO_MCP_IDLE_PAUSE_SECONDS (as with `pyro mcp serve`); clients cannot ask for
    /// allow_host_compat.
    #[pyo3(
        signature = (*, profile=DEFAULT_PROFILE.to_string()),
        text_signature = "($self, *, profile='workspace-full')"
    )]
    fn create_server(&self, profile: String) -> PyResult<crate::mcp::McpServer> {
        crate::mcp::McpServer::new(self.pyro.clone(), &profile)
    }
}
