//! Environments: the catalog (`debian:12`, `debian:12-base`, `debian:12-build`), the on-disk
//! cache of installed environments, building one from Debian packages, and the per-agent
//! initramfs that boots it.
//!
//! Cache layout: `<cache>/environments/linux-x86_64/<name ':'→'_'>-1.0.0/` holding `vmlinux`
//! (uncompressed ELF kernel, PVH entry), `modules/` (the virtio modules the initramfs loads,
//! plus an `order` file), `rootfs.ext4` and the manifest `environment.json`. An install
//! counts only when the manifest and every artifact are present; builds happen in a
//! `.partial-*` directory that is renamed into place at the very end.

mod build;
mod initrd;

pub use build::extract_vmlinux;
pub use initrd::initramfs_for;

use crate::{Error, Progress, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Catalog version reported by `env list` (REFERENCE §9.5).
pub const CATALOG_VERSION: &str = "3.11.0";
/// Version of every catalog environment.
pub const ENVIRONMENT_VERSION: &str = "1.0.0";
pub const PLATFORM: &str = "linux-x86_64";
const OCI_REGISTRY: &str = "registry-1.docker.io";

/// Static description of one catalog entry.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// The REFERENCE's `default_packages` (what the user is promised).
    pub default_packages: &'static [&'static str],
    /// Extra Debian packages pyro installs to make the rootfs work as a guest.
    pub extra_packages: &'static [&'static str],
    pub oci_repository: &'static str,
}

/// Packages every environment gets besides its promised ones: TLS roots, `ps`, `ip`.
const GUEST_PACKAGES: &[&str] = &["ca-certificates", "procps", "iproute2", "util-linux"];

static CATALOG: &[EnvironmentSpec] = &[
    EnvironmentSpec {
        name: "debian:12",
        description: "Debian 12 with Git",
        default_packages: &["bash", "coreutils", "git"],
        extra_packages: GUEST_PACKAGES,
        oci_repository: "thalesmaciel/pyro-environment-debian-12",
    },
    EnvironmentSpec {
        name: "debian:12-base",
        description: "Minimal Debian 12",
        default_packages: &["bash", "coreutils"],
        extra_packages: GUEST_PACKAGES,
        oci_repository: "thalesmaciel/pyro-environment-debian-12-base",
    },
    EnvironmentSpec {
        name: "debian:12-build",
        description: "Debian 12 with Git + build tools",
        default_packages: &["bash", "coreutils", "git", "gcc", "make", "cmake", "python3"],
        extra_packages: GUEST_PACKAGES,
        oci_repository: "thalesmaciel/pyro-environment-debian-12-build",
    },
];

pub fn catalog() -> &'static [EnvironmentSpec] {
    CATALOG
}

/// Look up a catalog entry by name (trimmed).
pub fn spec(name: &str) -> Result<&'static EnvironmentSpec> {
    let name = name.trim();
    CATALOG.iter().find(|s| s.name == name).ok_or_else(|| {
        Error::NotFound(format!(
            "unknown environment '{name}'; expected one of: {}",
            CATALOG.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// An environment whose kernel, modules and rootfs are all present in the cache.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledEnvironment {
    pub name: String,
    pub version: String,
    pub install_dir: PathBuf,
    /// Uncompressed ELF kernel (PVH entry), `vmlinux`.
    pub kernel_image: PathBuf,
    /// Directory of uncompressed kernel modules for the initramfs plus an `order` file.
    pub modules_dir: PathBuf,
    /// ext4 root filesystem image.
    pub rootfs_image: PathBuf,
    pub kernel_release: String,
    /// `local-build` or `oci://...`.
    pub source: String,
    pub source_digest: String,
    pub installed_at: u64,
}

/// `environment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub catalog_version: String,
    pub name: String,
    pub version: String,
    pub source: String,
    /// sha256 over the build inputs (package list, suite, mirror), cheap and stable.
    pub source_digest: String,
    pub kernel_release: String,
    pub installed_at: u64,
    pub packages: Vec<String>,
}

/// The environment cache under one cache dir.
#[derive(Debug, Clone)]
pub struct EnvStore {
    pub cache_dir: PathBuf,
}

fn dir_name(name: &str) -> String {
    format!("{}-{ENVIRONMENT_VERSION}", name.replace(':', "_"))
}

impl EnvStore {
    pub fn root(&self) -> PathBuf {
        self.cache_dir.join("environments").join(PLATFORM)
    }

    pub fn install_dir(&self, name: &str) -> PathBuf {
        self.root().join(dir_name(name))
    }

    fn read_install(&self, dir: &Path) -> Option<InstalledEnvironment> {
        let manifest: Manifest =
            serde_json::from_str(&std::fs::read_to_string(dir.join("environment.json")).ok()?).ok()?;
        let env = InstalledEnvironment {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            install_dir: dir.to_path_buf(),
            kernel_image: dir.join("vmlinux"),
            modules_dir: dir.join("modules"),
            rootfs_image: dir.join("rootfs.ext4"),
            kernel_release: manifest.kernel_release.clone(),
            source: manifest.source.clone(),
            source_digest: manifest.source_digest.clone(),
            installed_at: manifest.installed_at,
        };
        let complete = env.kernel_image.is_file()
            && env.rootfs_image.is_file()
            && env.modules_dir.join("order").is_file()
            && manifest.version == ENVIRONMENT_VERSION;
        complete.then_some(env)
    }

    /// The installed environment, or None when missing or incomplete.
    pub fn installed(&self, name: &str) -> Result<Option<InstalledEnvironment>> {
        let spec = spec(name)?;
        // A local build from an older recipe is stale: the next pull rebuilds it.
        Ok(self
            .read_install(&self.install_dir(spec.name))
            .filter(|e| e.name == spec.name)
            .filter(|e| e.source != "local-build" || e.source_digest == build::source_digest(spec)))
    }

    fn base_payload(&self, spec: &EnvironmentSpec) -> Value {
        let installed = self.read_install(&self.install_dir(spec.name));
        json!({
            "name": spec.name,
            "version": ENVIRONMENT_VERSION,
            "description": spec.description,
            "default_packages": spec.default_packages,
            "distribution": "debian",
            "distribution_version": "12",
            "platform": PLATFORM,
            "oci_registry": OCI_REGISTRY,
            "oci_repository": spec.oci_repository,
            "oci_reference": ENVIRONMENT_VERSION,
            "source_digest": installed.as_ref().map(|e| e.source_digest.clone()).unwrap_or_else(|| build::source_digest(spec)),
            "compatibility": ">=3.0.0,<4.0.0",
        })
    }

    /// `env inspect` payload.
    pub fn inspect_payload(&self, name: &str) -> Result<Value> {
        let spec = spec(name)?;
        let mut v = self.base_payload(spec);
        let installed = self.installed(spec.name)?;
        let m = v.as_object_mut().expect("object");
        m.insert("catalog_version".into(), json!(CATALOG_VERSION));
        m.insert("installed".into(), json!(installed.is_some()));
        m.insert("cache_dir".into(), json!(self.cache_dir.display().to_string()));
        m.insert("install_dir".into(), json!(self.install_dir(spec.name).display().to_string()));
        if let Some(e) = installed {
            m.insert("install_manifest".into(), json!(e.install_dir.join("environment.json").display().to_string()));
        }
        Ok(v)
    }

    /// `env list` payload.
    pub fn list_payload(&self) -> Result<Value> {
        let envs: Result<Vec<Value>> = CATALOG.iter().map(|s| self.inspect_payload(s.name)).collect();
        Ok(json!({ "catalog_version": CATALOG_VERSION, "environments": envs? }))
    }

    /// `env pull` payload (after a pull).
    pub fn pull_payload(&self, name: &str) -> Result<Value> {
        let mut v = self.inspect_payload(name)?;
        let e = self
            .installed(name)?
            .ok_or_else(|| Error::Environment(format!("environment '{name}' is not installed")))?;
        let m = v.as_object_mut().expect("object");
        m.insert("kernel_image".into(), json!(e.kernel_image.display().to_string()));
        m.insert("rootfs_image".into(), json!(e.rootfs_image.display().to_string()));
        m.insert("source".into(), json!(e.source));
        Ok(v)
    }

    /// Install `name` unless it already is: from the OCI registry when one is configured,
    /// otherwise built locally from Debian packages.
    pub fn pull(&self, name: &str, progress: &Progress) -> Result<InstalledEnvironment> {
        let spec = spec(name)?;
        if let Some(e) = self.installed(spec.name)? {
            return Ok(e);
        }
        if let Ok(reg) = std::env::var("PYRO_ENV_REGISTRY") {
            if !reg.trim().is_empty() {
                return Err(Error::Environment(format!(
                    "PYRO_ENV_REGISTRY is set ({reg}) but OCI pull is not implemented yet; unset it to build {} locally",
                    spec.name
                )));
            }
        }
        std::fs::create_dir_all(self.root())
            .map_err(|e| Error::io(format!("creating {}", self.root().display()), e))?;
        // One builder at a time per environment; a second pull waits, then finds it done.
        let _lock = lock_file(&self.root().join(format!(".{}.lock", dir_name(spec.name))))?;
        if let Some(e) = self.installed(spec.name)? {
            return Ok(e);
        }
        build::build(self, spec, progress)?;
        self.installed(spec.name)?
            .ok_or_else(|| Error::Environment(format!("building {} finished but the install is incomplete", spec.name)))
    }

    /// Remove partial builds, broken installs and entries not in the catalog.
    pub fn prune(&self) -> Result<Value> {
        let mut deleted = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if name.starts_with('.') && !name.starts_with(".partial-") {
                    continue; // lock files
                }
                let keep = !name.starts_with(".partial-")
                    && CATALOG.iter().any(|s| dir_name(s.name) == name)
                    && self.read_install(&path).is_some_and(|i| dir_name(&i.name) == name);
                if !keep {
                    let r = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                    r.map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                    deleted.push(name);
                }
            }
        }
        deleted.sort();
        Ok(json!({ "count": deleted.len(), "deleted_environment_dirs": deleted }))
    }
}

/// An exclusive flock held until dropped.
pub(crate) struct LockGuard(#[allow(dead_code)] std::fs::File);

pub(crate) fn lock_file(path: &Path) -> Result<LockGuard> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(format!("locking {}", path.display()), std::io::Error::last_os_error()));
    }
    Ok(LockGuard(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_environment_names_the_catalog() {
        let e = spec("debian:99").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown environment 'debian:99'; expected one of: debian:12, debian:12-base, debian:12-build"
        );
        assert_eq!(e.code(), "not_found");
        assert_eq!(spec(" debian:12 ").unwrap().name, "debian:12");
    }

    fn fake_install(store: &EnvStore, name: &str, complete: bool) -> PathBuf {
        let dir = store.install_dir(name);
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        std::fs::write(dir.join("modules/order"), "").unwrap();
        std::fs::write(dir.join("vmlinux"), "elf").unwrap();
        if complete {
            std::fs::write(dir.join("rootfs.ext4"), "img").unwrap();
        }
        let m = Manifest {
            catalog_version: CATALOG_VERSION.into(),
            name: name.into(),
            version: ENVIRONMENT_VERSION.into(),
            source: "local-build".into(),
            source_digest: "x".into(),
            kernel_release: "6.1".into(),
            installed_at: 1,
            packages: vec![],
        };
        std::fs::write(dir.join("environment.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        dir
    }

    #[test]
    fn only_complete_installs_count_and_prune_removes_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = EnvStore { cache_dir: tmp.path().to_path_buf() };
        fake_install(&store, "debian:12", true);
        fake_install(&store, "debian:12-base", false);
        std::fs::create_dir_all(store.root().join(".partial-debian_12-build-abc")).unwrap();
        std::fs::create_dir_all(store.root().join("ubuntu_24-1.0.0")).unwrap();
        assert!(store.installed("debian:12").unwrap().is_some());
        assert!(store.installed("debian:12-base").unwrap().is_none());
        let v = store.inspect_payload("debian:12-base").unwrap();
        assert_eq!(v["installed"], false);
        let pruned = store.prune().unwrap();
        assert_eq!(pruned["count"], 3);
        assert_eq!(
            pruned["deleted_environment_dirs"],
            json!([".partial-debian_12-build-abc", "debian_12-base-1.0.0", "ubuntu_24-1.0.0"])
        );
        assert!(store.installed("debian:12").unwrap().is_some());
        let list = store.list_payload().unwrap();
        assert_eq!(list["environments"].as_array().unwrap().len(), 3);
        assert_eq!(list["catalog_version"], CATALOG_VERSION);
    }
}
