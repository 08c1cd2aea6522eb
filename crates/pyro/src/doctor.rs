//! `pyro doctor`: what this host can really do, and what to install.

use crate::config::{find_own_binary, which};
use crate::Pyro;
use pyro_vmm::backend;
use pyro_vmm::Backend;
use serde::Serialize;
use std::collections::BTreeMap;

/// Payload of [`Pyro::doctor`](crate::Pyro::doctor): what this host can run, and what is missing.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DoctorReport {
    /// Guest platform pyro builds for, e.g. `linux-x86_64`.
    pub platform: String,
    /// True when `pyro run` can boot a guest here (or host-compat is the only issue).
    pub runtime_ok: bool,
    /// Human-readable problems found, each with what to do about it; empty on a fully working host.
    pub issues: Vec<String>,
    /// State of `/dev/kvm` and whether a probe guest really booted under it.
    pub kvm: KvmReport,
    /// The backend a VM would use right now, and why.
    pub backend: BackendReport,
    /// Every known backend (`qemu`, `firecracker`, `host-compat`) and whether it is available.
    pub backends: BTreeMap<String, BackendAvailability>,
    /// Host tools pyro uses (see [`HOST_TOOLS`]) mapped to their path; `None` when not installed.
    pub host_tools: BTreeMap<String, Option<String>>,
    /// pyro's own helper binaries (guest agent, `pyro-supervisor`) mapped to their path; `None`
    /// when not found.
    pub pyro_binaries: BTreeMap<String, Option<String>>,
    /// State directory (`$PYRO_HOME`): workspaces and VM directories.
    pub state_dir: String,
    /// Cache directory (`$PYRO_CACHE_DIR`): environments and probe results.
    pub cache_dir: String,
    /// Every catalog environment and whether it is installed.
    pub environments: Vec<EnvironmentState>,
    /// Where a missing environment would come from: the configured OCI registry, or a local
    /// build (which needs root and debootstrap).
    pub environment_source: EnvironmentSourceReport,
    /// What guest networking can use on this host.
    pub networking: NetworkingReport,
    /// One apt command that installs every missing host package.
    pub install_hint: Option<String>,
    /// How ready one environment is for a fast first call (`pyro doctor --environment ENV`,
    /// [`Pyro::doctor_environment`](crate::Pyro::doctor_environment)); `None` otherwise.
    pub readiness: Option<crate::prepare::EnvironmentReadiness>,
}

/// Facts about `/dev/kvm`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct KvmReport {
    /// `/dev/kvm` exists.
    pub exists: bool,
    /// This user can read `/dev/kvm`.
    pub readable: bool,
    /// This user can write `/dev/kvm`.
    pub writable: bool,
    /// None until a probe guest was booted (needs an installed environment).
    pub usable: Option<bool>,
    /// Human-readable explanation of the KVM state (probe result, or why there was none).
    pub detail: String,
}

/// The backend selection for new VMs.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BackendReport {
    /// The backend `pyro run` would use now, or null when none can run.
    pub selected: Option<String>,
    /// QEMU accelerator: `kvm` or `tcg` (software emulation); `None` for other backends or when
    /// none can run.
    pub accel: Option<String>,
    /// Why this backend was chosen, or why none can run.
    pub reason: String,
}

/// Availability of one backend.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BackendAvailability {
    /// Whether the backend can be used on this host.
    pub available: bool,
    /// Path of its binary; `None` when not found.
    pub binary: Option<String>,
    /// Version of the binary when known; `None` otherwise.
    pub version: Option<String>,
    /// Human-readable detail (acceleration, or why it is unavailable).
    pub detail: String,
}

/// Install state of one catalog environment.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnvironmentState {
    /// Environment name, e.g. `debian:12`.
    pub name: String,
    /// Whether it is installed in the cache.
    pub installed: bool,
    /// Directory it is installed in; `None` when not installed.
    pub install_dir: Option<String>,
}

/// Where `env pull` (and a first `pyro run`) would install a missing environment from.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnvironmentSourceReport {
    /// `registry` when `PYRO_ENV_REGISTRY` is set, else `local-build`.
    pub source: String,
    /// `PYRO_ENV_REGISTRY`, when set.
    pub registry: Option<String>,
    /// Whether this process could build an environment locally: root, with debootstrap.
    pub local_build_possible: bool,
}

/// Host facilities for guest networking.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NetworkingReport {
    /// QEMU user-mode networking: unprivileged, always available with QEMU.
    pub qemu_user_net: bool,
    /// `/dev/net/tun` exists (not needed by QEMU user-mode networking).
    pub tun_available: bool,
    /// Path of `ip`; `None` when not installed (informational).
    pub ip_binary: Option<String>,
    /// Path of `nft`; `None` when not installed (informational).
    pub nft_binary: Option<String>,
    /// pyro runs as root.
    pub is_root: bool,
    /// The kernel can filter guest egress (seccomp user notification): `egress` reaches the
    /// internet but never this host. Without it, VMs with a network refuse to start.
    pub egress_filter: bool,
    /// What the egress filter does here, or why it cannot run.
    pub egress_filter_detail: String,
}

/// Host tools pyro uses, with the Debian package that provides each.
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    // qcow2 overlays: forks and warm-run templates (without it, runs boot cold and forks fail).
    ("qemu-img", "qemu-utils"),
    ("debootstrap", "debootstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("lz4", "lz4"),
    ("cpio", "cpio"),
];

/// Inspect the host (tools, `/dev/kvm` and the cached KVM probe, backends, environments,
/// networking). Never boots a guest; [`Pyro::doctor`](crate::Pyro::doctor) runs it off the async
/// runtime.
pub fn report(pyro: &Pyro) -> DoctorReport {
    let mut issues = Vec::new();
    let mut missing_pkgs: Vec<&str> = Vec::new();
    let mut host_tools = BTreeMap::new();
    for (tool, pkg) in HOST_TOOLS {
        let found = which(tool).map(|p| p.display().to_string());
        if found.is_none() {
            issues.push(format!("{tool} is not installed (Debian package {pkg})"));
            if !missing_pkgs.contains(pkg) {
                missing_pkgs.push(pkg);
            }
        }
        host_tools.insert(tool.to_string(), found);
    }
    let mut pyro_binaries = BTreeMap::new();
    for (name, var) in [(crate::config::GUEST_AGENT_BIN, "PYRO_AGENT_BIN"), ("pyro-supervisor", "PYRO_SUPERVISOR_BIN")]
    {
        let found = find_own_binary(name, var);
        if let Err(e) = &found {
            issues.push(e.to_string());
        }
        pyro_binaries.insert(name.to_string(), found.ok().map(|p| p.display().to_string()));
    }

    let store = crate::env::EnvStore { cache_dir: pyro.paths().cache_dir.clone() };
    let mut environments = Vec::new();
    let mut first_installed = None;
    for spec in crate::env::catalog() {
        let installed = store.installed(spec.name).ok().flatten();
        if first_installed.is_none() {
            first_installed = installed.clone();
        }
        environments.push(EnvironmentState {
            name: spec.name.to_string(),
            installed: installed.is_some(),
            install_dir: installed.map(|e| e.install_dir.display().to_string()),
        });
    }
    let registry = crate::env::configured_registry();
    let local_build_possible =
        pyro_sys::process::effective_uid() == 0 && host_tools.get("debootstrap").is_some_and(Option::is_some);
    if first_installed.is_none() {
        issues.push(match (&registry, local_build_possible) {
            (Some(r), _) => format!(
                "no environment is installed yet; `pyro env pull debian:12` (or the first `pyro run`) pulls one from {r}"
            ),
            (None, true) => {
                "no environment is installed yet; `pyro env pull debian:12` (or the first `pyro run`) builds one".into()
            }
            (None, false) => "no environment is installed yet, and building one needs root with debootstrap: run \
                 `sudo pyro env pull debian:12`, or set PYRO_ENV_REGISTRY to pull one from an OCI registry as this user"
                .into(),
        });
    }
    let environment_source = EnvironmentSourceReport {
        source: if registry.is_some() { "registry" } else { "local-build" }.into(),
        registry,
        local_build_possible,
    };

    let dev = backend::kvm_device();
    let qemu_bin = backend::qemu_binary();
    let qemu_version = qemu_bin.as_deref().and_then(backend::qemu_version);
    let choice = crate::boot::choose_backend(first_installed.as_ref(), &pyro.paths().cache_dir, false);
    let probe = match (&qemu_bin, &first_installed) {
        (Some(bin), Some(env)) => backend::cached_kvm_probe(&pyro.paths().cache_dir, bin, &env.kernel_release),
        _ => None,
    };
    let kvm = KvmReport {
        exists: dev.exists,
        readable: dev.readable,
        writable: dev.writable,
        usable: probe.as_ref().map(|p| p.usable),
        detail: match (&probe, dev.exists) {
            (Some(p), _) => p.detail.clone(),
            (None, false) => "/dev/kvm is not present".into(),
            (None, true) => "present; not probed yet (needs QEMU and an installed environment)".into(),
        },
    };
    if dev.exists && kvm.usable == Some(false) {
        issues.push(format!(
            "/dev/kvm is present but cannot run a guest: {}; guests use TCG software emulation (slower)",
            kvm.detail
        ));
    } else if !dev.exists {
        issues.push("/dev/kvm is not available on this host; guests use TCG software emulation (slower)".into());
    }
    let backend = match &choice {
        Ok(c) => BackendReport {
            selected: Some(c.kind.as_str().to_string()),
            accel: c.accel.map(|a| a.as_str().to_string()),
            reason: c.reason.clone(),
        },
        Err(e) => {
            issues.push(e.to_string());
            BackendReport { selected: None, accel: None, reason: e.to_string() }
        }
    };
    let mut backends = BTreeMap::new();
    backends.insert(
        "qemu".to_string(),
        BackendAvailability {
            available: qemu_bin.is_some(),
            binary: qemu_bin.as_ref().map(|p| p.display().to_string()),
            version: qemu_version.clone(),
            detail: match (&qemu_bin, kvm.usable) {
                (None, _) => "qemu-system-x86_64 not installed".into(),
                (Some(_), Some(true)) => "KVM acceleration".into(),
                (Some(_), _) => "TCG software emulation (KVM unusable or not probed)".into(),
            },
        },
    );
    let fc = backend::firecracker_binary();
    backends.insert(
        Backend::Firecracker.as_str().to_string(),
        BackendAvailability {
            available: false,
            binary: fc.as_ref().map(|p| p.display().to_string()),
            version: None,
            detail: "not implemented in this build; needs a usable KVM".into(),
        },
    );
    backends.insert(
        Backend::HostCompat.as_str().to_string(),
        BackendAvailability {
            available: which("bash").is_some(),
            binary: which("bash").map(|p| p.display().to_string()),
            version: None,
            detail: "runs commands on the host without isolation; only with --allow-host-compat".into(),
        },
    );
    // SAFETY: geteuid(2) has no arguments and always succeeds.
    let is_root = unsafe { libc::geteuid() } == 0;
    let egress_filter = pyro_vmm::egress_filter_available();
    if let Err(why) = &egress_filter {
        issues.push(format!("{why}; VMs with --network-policy egress refuse to start (network off still works)"));
    }
    let networking = NetworkingReport {
        qemu_user_net: qemu_bin.is_some(),
        tun_available: std::path::Path::new("/dev/net/tun").exists(),
        ip_binary: which("ip").map(|p| p.display().to_string()),
        nft_binary: which("nft").map(|p| p.display().to_string()),
        is_root,
        egress_filter: egress_filter.is_ok(),
        egress_filter_detail: match egress_filter {
            Ok(()) => "egress reaches public IPv4 only: never this host's loopback or addresses, link-local \
                       (cloud metadata) or private ranges (PYRO_NETWORK_ALLOW_PRIVATE=1 opens private ranges)"
                .into(),
            Err(why) => why,
        },
    };
    DoctorReport {
        platform: crate::env::PLATFORM.to_string(),
        runtime_ok: choice.is_ok() && pyro_binaries.values().all(|v| v.is_some()),
        issues,
        kvm,
        backend,
        backends,
        host_tools,
        pyro_binaries,
        state_dir: pyro.paths().home.display().to_string(),
        cache_dir: pyro.paths().cache_dir.display().to_string(),
        environments,
        environment_source,
        networking,
        install_hint: (!missing_pkgs.is_empty())
            .then(|| format!("sudo apt-get install --no-install-recommends {}", missing_pkgs.join(" "))),
        readiness: None,
    }
}
