//! pyro: disposable, persistent Linux microVM workspaces for coding agents.
//!
//! [`Pyro`] is the SDK and the one engine behind the `pyro` CLI and the MCP server: every
//! operation is a method here, and the adapters only translate arguments and payloads.
//!
//! ```no_run
//! # async fn demo() -> pyro::Result<()> {
//! let pyro = pyro::Pyro::from_env()?;
//! let run = pyro.run_in_vm(pyro::CreateVmOptions::new("debian:12"), "git --version", 30).await?;
//! println!("{} (exit {})", run.stdout, run.exit_code);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

// The SDK surface: `Pyro`, its option and payload types, errors, progress, doctor.
pub mod config;
pub mod defaults;
pub mod doctor;
pub mod env;
pub mod error;
pub mod limits;
pub mod prepare;
pub mod progress;
pub mod project;
pub mod state;
pub mod vm;
pub mod workspace;

// Engine internals. The VM runtime is the `pyro-vmm` crate; `boot` is the one product-level
// path from an environment to a booted `pyro_vmm::Machine`.
mod boot;
mod hostcompat;
mod template;
mod util;

pub use config::Paths;
pub use error::{Error, Result};
pub use prepare::{EnvironmentReadiness, PrepareOptions, PrepareResult, PrepareStep};
pub use progress::{Progress, ProgressEvent};
pub use state::{ExecutionMode, ServiceStatus, WorkspaceState};
pub use template::WARM_RUN_VAR;
pub use vm::{Cleanup, CreateVmOptions, DeleteVmResult, GuestNetwork, NetworkInfo, ReapResult, RunResult, VmInfo};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The pyro engine. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Pyro {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    paths: Paths,
    progress: Mutex<Progress>,
    pub(crate) vms: Mutex<HashMap<String, vm::VmEntry>>,
}

impl Pyro {
    /// An engine using `$PYRO_HOME` and `$PYRO_CACHE_DIR` (or their defaults).
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_paths(Paths::from_env()?))
    }

    /// An engine with explicit state and cache directories.
    pub fn with_paths(paths: Paths) -> Self {
        Pyro {
            inner: Arc::new(Inner { paths, progress: Mutex::new(Progress::silent()), vms: Mutex::new(HashMap::new()) }),
        }
    }

    /// Where progress of long work (environment builds, boots) goes. Silent by default.
    pub fn set_progress(&self, progress: Progress) {
        *self.inner.progress.lock().unwrap() = progress;
    }

    /// The state and cache directories this engine uses.
    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }

    /// The sink for this call: a per-task one from [`progress::scoped`] if any, else the
    /// engine-wide one.
    fn progress(&self) -> Progress {
        progress::current_scoped().unwrap_or_else(|| self.inner.progress.lock().unwrap().clone())
    }

    fn store(&self) -> env::EnvStore {
        env::EnvStore { cache_dir: self.paths().cache_dir.clone() }
    }

    /// Every catalog environment with its install state (`env list`).
    pub async fn list_environments(&self) -> Result<env::EnvironmentList> {
        let store = self.store();
        blocking(move || store.list_payload()).await
    }

    /// Install an environment: from the configured OCI registry, else built locally. Then
    /// make sure its warm-start template for the default VM shape exists (booted and saved
    /// once, so `pyro run` restores instead of booting; best effort, reported as progress).
    pub async fn pull_environment(&self, name: &str) -> Result<env::PulledEnvironment> {
        let store = self.store();
        let progress = self.progress();
        let name = name.to_string();
        let installed = {
            let (store, name) = (store.clone(), name.clone());
            blocking(move || store.pull(&name, &progress)).await?
        };
        self.prepare_default_template(&installed).await;
        blocking(move || store.pull_payload(&name)).await
    }

    /// Install `name` from the OCI image `reference` (`REGISTRY/REPOSITORY:TAG` or
    /// `REGISTRY/REPOSITORY@sha256:...`), replacing an install that came from elsewhere;
    /// the previous install stays until the new one is complete. Then as
    /// [`Pyro::pull_environment`].
    pub async fn pull_environment_from(&self, name: &str, reference: &str) -> Result<env::PulledEnvironment> {
        let store = self.store();
        let progress = self.progress();
        let (name, reference) = (name.to_string(), reference.to_string());
        let installed = {
            let (store, name) = (store.clone(), name.clone());
            blocking(move || store.pull_from(&name, Some(&reference), &progress)).await?
        };
        self.prepare_default_template(&installed).await;
        blocking(move || store.pull_payload(&name)).await
    }

    /// Publish installed environment `name` as an OCI image: to `reference`
    /// (`REGISTRY/REPOSITORY:TAG`), or when `None` to `PYRO_ENV_REGISTRY`'s default
    /// reference for it. Blobs the registry already has are not sent again.
    pub async fn push_environment(&self, name: &str, reference: Option<&str>) -> Result<env::PushedEnvironment> {
        let store = self.store();
        let progress = self.progress();
        let (name, reference) = (name.to_string(), reference.map(str::to_string));
        blocking(move || store.push(&name, reference.as_deref(), &progress)).await
    }

    /// Delete the installs of `names`, then prune the cache as
    /// [`Pyro::prune_environments`] does; the result lists everything deleted. An install
    /// being pulled right now is waited for, never deleted mid-pull.
    pub async fn remove_environments(&self, names: &[&str]) -> Result<env::PruneResult> {
        let store = self.store();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        blocking(move || store.remove(&names.iter().map(String::as_str).collect::<Vec<_>>())).await
    }

    /// One catalog environment: description, packages, install state, cache and install
    /// directories (`env inspect`). An unknown name is [`Error::NotFound`].
    pub async fn inspect_environment(&self, name: &str) -> Result<env::EnvironmentInfo> {
        let store = self.store();
        let name = name.to_string();
        blocking(move || store.inspect_payload(&name)).await
    }

    /// Remove broken installs, abandoned partial builds, other versions and names not in
    /// the catalog from the cache (`env prune`). Installs being pulled right now are left
    /// alone.
    pub async fn prune_environments(&self) -> Result<env::PruneResult> {
        let store = self.store();
        blocking(move || store.prune()).await
    }

    /// The installed environment, installing it first when missing.
    pub(crate) async fn ensure_environment(&self, name: &str) -> Result<env::InstalledEnvironment> {
        let store = self.store();
        let progress = self.progress();
        let name = name.to_string();
        blocking(move || match store.installed(&name)? {
            Some(e) => Ok(e),
            None => store.pull(&name, &progress),
        })
        .await
    }

    /// What this host can do (`pyro doctor`).
    pub async fn doctor(&self) -> Result<doctor::DoctorReport> {
        let pyro = self.clone();
        blocking(move || Ok(doctor::report(&pyro))).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task { context: "worker task failed".into(), source })?
}
