//! `pyro prepare ENV` and `pyro doctor --environment ENV`: make the first real call of an
//! environment fast, and say how far it is from that.
//!
//! The first `pyro run` of a fresh host pays for everything at once: installing the
//! environment, the KVM probe, the initramfs of (agent, environment) and the warm-run
//! template of the VM shape (see `template.rs`). [`Pyro::prepare_environment`] does each of
//! those steps ahead of time, skipping what is already done; [`Pyro::environment_readiness`]
//! inspects the same things without changing anything and reports
//! - `warm`: installed, initramfs built, a valid template for the default shape: a
//!   `pyro run ENV` restores instead of booting;
//! - `cold`: installed, but the first run still builds something (no template yet, or no
//!   initramfs, or warm runs are off or unavailable);
//! - `stale`: a template for the default shape exists but was built for another install
//!   of the environment or another agent, kernel or QEMU: the next run cannot use it;
//! - `not_installed`.

use crate::template::{self, Prepared, TemplateStatus};
use crate::{blocking, Error, Pyro, Result};
use pyro_vmm::backend;
use pyro_vmm::{Accel, Backend, BackendChoice};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Options of [`Pyro::prepare_environment`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PrepareOptions {
    /// Also prepare the template of the network-on shape (`pyro run --network`): a NIC is
    /// part of a template's key.
    #[serde(default)]
    pub network: bool,
    /// Rebuild what exists (the initramfs and the templates). An installed environment is
    /// never removed or reinstalled; the KVM probe verdict is kept (it is already redone
    /// whenever QEMU, the guest kernel or the host kernel change).
    #[serde(default)]
    pub force: bool,
}

/// One step of [`Pyro::prepare_environment`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PrepareStep {
    /// `environment`, `kvm_probe`, `initramfs`, `template` or `template_network`.
    pub step: String,
    /// `already` (nothing to do), `done` (done now), `rebuilt` (something was there and was
    /// replaced), `skipped` (does not apply here, see `detail`) or `failed`.
    pub status: String,
    /// Time this step took.
    pub duration_ms: u64,
    /// What was found or done, or the error.
    pub detail: String,
}

/// Payload of [`Pyro::prepare_environment`] (`pyro prepare --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PrepareResult {
    /// Environment name, e.g. `debian:12`.
    pub environment: String,
    /// No step failed.
    pub ok: bool,
    /// Readiness after preparing: `warm`, `cold`, `stale` or `not_installed` (see
    /// [`EnvironmentReadiness::state`]).
    pub state: String,
    /// The network-on template was prepared too.
    pub network: bool,
    /// Existing artifacts were rebuilt.
    pub force: bool,
    /// The steps in order, each with what it did.
    pub steps: Vec<PrepareStep>,
    /// Time the whole call took.
    pub duration_ms: u64,
}

/// A step `pyro prepare` would do, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlannedStep {
    /// Same names as [`PrepareStep::step`].
    pub step: String,
    /// Why it is needed.
    pub reason: String,
}

/// How ready one environment is for a fast first call (`pyro doctor --environment ENV`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnvironmentReadiness {
    /// Environment name.
    pub environment: String,
    /// `warm` (a default `pyro run` restores a template), `cold` (the next run builds or
    /// boots), `stale` (the default shape's template was built for another environment
    /// install, agent, kernel or QEMU) or `not_installed`.
    pub state: String,
    /// Why, for a person.
    pub detail: String,
    /// The environment is installed.
    pub installed: bool,
    /// A KVM probe verdict is cached for this QEMU and guest kernel (or none is needed).
    pub kvm_probed: bool,
    /// The accelerator a VM would use (`kvm`, `tcg`); `None` when unknown (not probed yet)
    /// or there is no QEMU backend.
    pub accel: Option<String>,
    /// Path of the initramfs of the current agent and this environment when it is built.
    pub initramfs: Option<String>,
    /// Template of the default VM shape: `valid`, `missing`, `stale` or `unavailable`
    /// (warm runs off, no QEMU, not installed, or the key is unknown before the KVM probe).
    pub template: String,
    /// Path of the valid template, if any.
    pub template_path: Option<String>,
    /// What `pyro prepare ENV` would do; empty when warm.
    pub prepare_steps: Vec<PlannedStep>,
}

impl Pyro {
    /// Make the first real call of environment `name` fast (`pyro prepare`): install it
    /// (pull or build) when missing, run the KVM probe, build the initramfs of (agent,
    /// environment), and build the warm-run template of the default VM shape (and of the
    /// network-on shape with [`PrepareOptions::network`]). Each step reports `already`,
    /// `done`, `rebuilt`, `skipped` or `failed`; a failed step is in the payload
    /// (`ok: false`), not an error. An unknown name is the catalog's error and changes
    /// nothing.
    pub async fn prepare_environment(&self, name: &str, opts: &PrepareOptions) -> Result<PrepareResult> {
        crate::env::spec(name)?;
        let started = Instant::now();
        let mut steps = Vec::new();
        let store = self.store();

        // 1. The environment. Never reinstalled: --force is about derived artifacts.
        let t = Instant::now();
        let installed = {
            let (store, n) = (store.clone(), name.to_string());
            blocking(move || store.installed(&n)).await?
        };
        let env = match installed {
            Some(env) => {
                self.step(
                    &mut steps,
                    "environment",
                    "already",
                    t,
                    format!("installed in {}", env.install_dir.display()),
                );
                env
            }
            None => {
                let (store, n, progress) = (store.clone(), name.to_string(), self.progress());
                match blocking(move || store.pull(&n, &progress)).await {
                    Ok(env) => {
                        self.step(
                            &mut steps,
                            "environment",
                            "done",
                            t,
                            format!("installed in {}", env.install_dir.display()),
                        );
                        env
                    }
                    Err(e) => {
                        self.step(&mut steps, "environment", "failed", t, e.to_string());
                        return self.prepared(name, opts, steps, started).await;
                    }
                }
            }
        };

        // 2. The KVM probe (cached per QEMU binary, guest kernel and host kernel).
        let t = Instant::now();
        let probe_ok = match backend::qemu_binary() {
            None => {
                self.step(&mut steps, "kvm_probe", "skipped", t, "qemu-system-x86_64 is not installed".into());
                false
            }
            Some(bin) => match backend::cached_kvm_probe(&self.paths().cache_dir, &bin, &env.kernel_release) {
                Some(p) => {
                    self.step(&mut steps, "kvm_probe", "already", t, probe_detail(&p));
                    true
                }
                None => match self.choose_backend_for(&env, false).await {
                    Ok(choice) => {
                        self.step(&mut steps, "kvm_probe", "done", t, choice.reason);
                        true
                    }
                    Err(e) => {
                        self.step(&mut steps, "kvm_probe", "failed", t, e.to_string());
                        false
                    }
                },
            },
        };

        // 3. The initramfs of the current agent and this environment.
        let t = Instant::now();
        let initramfs_ok = {
            let (pyro, env, force) = (self.clone(), env.clone(), opts.force);
            match blocking(move || pyro.ensure_initramfs(&env, force)).await {
                Ok((status, path)) => {
                    self.step(&mut steps, "initramfs", status, t, path.display().to_string());
                    true
                }
                Err(e) => {
                    self.step(&mut steps, "initramfs", "failed", t, e.to_string());
                    false
                }
            }
        };

        // 4. The warm-run templates.
        let mut shapes = vec![("template", crate::defaults::NETWORK)];
        if opts.network && !crate::defaults::NETWORK {
            shapes.push(("template_network", true));
        }
        for (step, network) in shapes {
            let t = Instant::now();
            if !probe_ok || !initramfs_ok {
                let why = if initramfs_ok { "needs a VM backend (see kvm_probe)" } else { "needs the initramfs" };
                self.step(&mut steps, step, "failed", t, why.into());
                continue;
            }
            match self.prepare_template(&env, network, opts.force).await {
                Ok(Prepared::Already(dir)) => self.step(&mut steps, step, "already", t, dir.display().to_string()),
                Ok(Prepared::Built { dir, replaced }) => {
                    let status = if replaced { "rebuilt" } else { "done" };
                    self.step(&mut steps, step, status, t, dir.display().to_string())
                }
                Ok(Prepared::NotApplicable(why)) => self.step(&mut steps, step, "skipped", t, why),
                Err(e) => self.step(&mut steps, step, "failed", t, e.to_string()),
            }
        }
        self.prepared(name, opts, steps, started).await
    }

    /// How ready environment `name` is for a fast first call, and what `pyro prepare` would
    /// do (`pyro doctor --environment`). Changes nothing: no probe, no build, no removal.
    pub async fn environment_readiness(&self, name: &str) -> Result<EnvironmentReadiness> {
        let (pyro, name) = (self.clone(), name.to_string());
        blocking(move || pyro.readiness(&name)).await
    }

    /// [`Pyro::doctor`] plus the readiness of environment `name` (its `readiness` key).
    pub async fn doctor_environment(&self, name: &str) -> Result<crate::doctor::DoctorReport> {
        let readiness = self.environment_readiness(name).await?;
        let mut report = self.doctor().await?;
        report.readiness = Some(readiness);
        Ok(report)
    }

    fn step(&self, steps: &mut Vec<PrepareStep>, step: &str, status: &str, t: Instant, detail: String) {
        let duration_ms = t.elapsed().as_millis() as u64;
        self.progress().report(step, format!("{status} in {duration_ms} ms ({detail})"), None);
        steps.push(PrepareStep { step: step.into(), status: status.into(), duration_ms, detail });
    }

    async fn prepared(
        &self,
        name: &str,
        opts: &PrepareOptions,
        steps: Vec<PrepareStep>,
        started: Instant,
    ) -> Result<PrepareResult> {
        let state = self.environment_readiness(name).await.map(|r| r.state).unwrap_or_else(|e| format!("unknown: {e}"));
        Ok(PrepareResult {
            environment: name.to_string(),
            ok: steps.iter().all(|s| s.status != "failed"),
            state,
            network: opts.network,
            force: opts.force,
            steps,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The directories an initramfs may be cached in, in the order [`crate::boot::initramfs`]
    /// tries them: the cache dir, then `$PYRO_HOME/cache`.
    fn initramfs_dirs(&self) -> Vec<PathBuf> {
        let (cache, own) = (self.paths().cache_dir.clone(), self.paths().home.join("cache"));
        if cache == own {
            vec![cache]
        } else {
            vec![cache, own]
        }
    }

    /// The built initramfs of the current agent and `env`, if any.
    fn built_initramfs(&self, env: &crate::env::InstalledEnvironment) -> Result<Option<PathBuf>> {
        let agent = crate::config::find_own_binary(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN")?;
        for dir in self.initramfs_dirs() {
            let path = crate::env::initramfs_path(env, &agent, &dir)?;
            if path.is_file() {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Blocking: build the initramfs unless built (`force`: rebuild it where it is).
    fn ensure_initramfs(&self, env: &crate::env::InstalledEnvironment, force: bool) -> Result<(&'static str, PathBuf)> {
        match self.built_initramfs(env)? {
            Some(path) if !force => Ok(("already", path)),
            Some(path) => {
                let agent = crate::config::find_own_binary(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN")?;
                let dir = path.parent().and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_default();
                Ok(("rebuilt", crate::env::rebuild_initramfs(env, &agent, &dir)?))
            }
            None => Ok(("done", crate::boot::initramfs(env, &self.paths().cache_dir)?)),
        }
    }

    /// The backend a VM of `env` would use, from the cached probe only (never boots one).
    /// `Ok(None)`: unknown until the KVM probe runs.
    fn choice_without_probe(&self, env: &crate::env::InstalledEnvironment) -> Result<Option<BackendChoice>> {
        let forced = match std::env::var("PYRO_BACKEND") {
            Ok(v) if !v.trim().is_empty() => Some(Backend::parse(&v)?),
            _ => None,
        };
        if matches!(forced, Some(Backend::HostCompat | Backend::Firecracker)) {
            let kind = forced.expect("matched");
            return Ok(Some(BackendChoice { kind, accel: None, reason: "forced by PYRO_BACKEND".into() }));
        }
        let Some(bin) = backend::qemu_binary() else {
            return Err(Error::HostRequirement("qemu-system-x86_64 is not installed".into()));
        };
        let accel = match backend::cached_kvm_probe(&self.paths().cache_dir, &bin, &env.kernel_release) {
            Some(p) if p.usable => Accel::Kvm,
            Some(_) => Accel::Tcg,
            None => {
                // The probe decides TCG without booting anything when /dev/kvm cannot be
                // opened; otherwise only the probe knows.
                let dev = backend::kvm_device();
                if dev.exists && dev.readable && dev.writable {
                    return Ok(None);
                }
                Accel::Tcg
            }
        };
        Ok(Some(BackendChoice { kind: Backend::Qemu, accel: Some(accel), reason: String::new() }))
    }

    /// Blocking body of [`Pyro::environment_readiness`].
    fn readiness(&self, name: &str) -> Result<EnvironmentReadiness> {
        crate::env::spec(name)?;
        let plan = |step: &str, reason: String| PlannedStep { step: step.into(), reason };
        let Some(env) = self.store().installed(name)? else {
            return Ok(EnvironmentReadiness {
                environment: name.to_string(),
                state: "not_installed".into(),
                detail: format!("{name} is not installed"),
                installed: false,
                kvm_probed: false,
                accel: None,
                initramfs: None,
                template: "unavailable".into(),
                template_path: None,
                prepare_steps: vec![
                    plan("environment", format!("install {name} (pull, or build from Debian packages)")),
                    plan("kvm_probe", "probe KVM once (cached)".into()),
                    plan("initramfs", "build the initramfs of the agent and the environment".into()),
                    plan("template", "boot and save the warm-run template of the default VM shape".into()),
                ],
            });
        };
        let mut steps = Vec::new();
        let choice = self.choice_without_probe(&env);
        let kvm_probed = !matches!(choice, Ok(None));
        if !kvm_probed {
            steps.push(plan("kvm_probe", "KVM was not probed yet with this QEMU and kernel".into()));
        }
        let initramfs = self.built_initramfs(&env);
        match &initramfs {
            Ok(Some(_)) => {}
            Ok(None) => steps.push(plan("initramfs", "no initramfs for the current agent yet".into())),
            Err(e) => steps.push(plan("initramfs", format!("cannot be built: {e}"))),
        }
        let accel = match &choice {
            Ok(Some(c)) => c.accel.map(|a| a.as_str().to_string()),
            _ => None,
        };
        let (template, template_path, state, detail) = match (&choice, &initramfs) {
            _ if template::warm_runs_disabled() => (
                "unavailable",
                None,
                "cold",
                format!("warm runs are off ({}): every run boots cold", crate::WARM_RUN_VAR),
            ),
            (Err(e), _) => ("unavailable", None, "cold", format!("no VM backend: {e}")),
            (Ok(None), _) => {
                steps.push(plan("template", "boot and save the warm-run template of the default VM shape".into()));
                ("unavailable", None, "cold", "KVM was not probed yet, so the template's key is not known".into())
            }
            (Ok(Some(c)), _) if c.kind != Backend::Qemu => {
                ("unavailable", None, "cold", format!("the {} backend has no warm runs", c.kind.as_str()))
            }
            (_, Err(e)) => ("unavailable", None, "cold", format!("no initramfs: {e}")),
            (Ok(Some(c)), Ok(built)) => {
                // The key of a not-yet-built initramfs names the path it will have: no
                // template can match it, but a template of the same shape shows as stale.
                let agent = crate::config::find_own_binary(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN")?;
                let path = match built {
                    Some(p) => p.clone(),
                    None => crate::env::initramfs_path(&env, &agent, &self.paths().cache_dir)?,
                };
                let req = self.default_request(&env, crate::defaults::NETWORK);
                let spec = self.boot_spec_with(&env, c, &req, path)?;
                let key = template::key_for(&env, &spec)?;
                match template::template_status(&template::roots(self.paths()), &key) {
                    TemplateStatus::Valid(dir) if built.is_some() => (
                        "valid",
                        Some(dir.display().to_string()),
                        "warm",
                        "a default `pyro run` restores its template".into(),
                    ),
                    TemplateStatus::Valid(_) | TemplateStatus::Missing => {
                        steps.push(plan("template", "no warm-run template for the default VM shape yet".into()));
                        ("missing", None, "cold", "the next run builds the template first (or boots cold)".into())
                    }
                    TemplateStatus::Stale(why) => {
                        steps.push(plan("template", format!("rebuild the template: {why}")));
                        ("stale", None, "stale", why)
                    }
                }
            }
        };
        Ok(EnvironmentReadiness {
            environment: name.to_string(),
            state: state.into(),
            detail,
            installed: true,
            kvm_probed,
            accel,
            initramfs: initramfs.ok().flatten().map(|p| p.display().to_string()),
            template: template.into(),
            template_path,
            prepare_steps: steps,
        })
    }
}

fn probe_detail(p: &backend::KvmProbe) -> String {
    let verdict = if p.usable { "KVM works" } else { "KVM unusable, TCG" };
    format!("{verdict}: {}", p.detail)
}
