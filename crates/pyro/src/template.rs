//! Warm starts for ephemeral VMs (`pyro run`): a template is the saved memory of a booted,
//! agent-ready guest of one environment in one VM shape, plus the disk state it was saved
//! with. A warm run restores it instead of booting.
//!
//! Layout: `<cache>/templates/<env>.<key>/` (falling back to `$PYRO_HOME/cache/templates`
//! when the cache dir is not writable, like the initramfs) holding
//! - `memory.state`, `memory.json`: the guest's RAM and device state ([`MemoryState`]);
//! - `rootfs.qcow2`: a qcow2 overlay on the environment's raw `rootfs.ext4`, holding every
//!   block the template guest wrote before it was paused. The memory state and this disk
//!   belong together: the guest's page cache and ext4 journal describe exactly this disk. A
//!   warm run opens it with QEMU's `snapshot=on` (a throw-away overlay on top), so runs never
//!   write it and never see one another's writes; it never restores against the raw image;
//! - `template.json`: what the template was made from ([`TemplateRecord`]).
//!
//! Every file is made read-only and the directory is renamed into place only once complete
//! (never a half template). The key covers everything a restore depends on: the environment's
//! identity (name, version, source digest, install time, the rootfs file's identity), and
//! [`pyro_vmm::fingerprint`] (QEMU binary, accelerator, memory, vCPUs, NIC, kernel, initramfs
//! = agent, disk format). A change of any of them is a different key: the stale template is
//! never used, and is removed when the new one is built. One flock per key makes concurrent
//! first runs build it once; the others boot cold meanwhile.
//!
//! `PYRO_WARM_RUN=off` (or `0`, `false`, `no`) makes every run boot cold and skips building.

use crate::boot::BootRequest;
use crate::env::InstalledEnvironment;
use crate::{Error, Pyro, Result};
use pyro_vmm::{BackendChoice, BootSpec, DiskFormat, Machine, MemoryState, VmDir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Changes whenever what a template holds changes, so old templates are not reused.
const LAYOUT: &str = "pyro-template/1";
/// Name of the templates directory under a cache dir.
const TEMPLATES_DIR: &str = "templates";
/// The template's own record inside its directory.
const RECORD_FILE: &str = "template.json";
/// Largest `template.json` read (it is a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Templates kept per environment (one per VM shape in use): the oldest beyond this are
/// removed when a new one is built, so odd shapes cannot fill the cache.
const MAX_TEMPLATES_PER_ENV: usize = 4;
/// After a failed build, runs of that key boot cold for this long instead of paying a
/// failing build every time.
const FAILED_BUILD_BACKOFF: Duration = Duration::from_secs(600);
/// Bound on saving the template guest's memory.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(120);
/// The variable that turns warm runs off.
pub const WARM_RUN_VAR: &str = "PYRO_WARM_RUN";

/// `template.json`: what a template was made from, checked before it is used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct TemplateRecord {
    format: u32,
    key: String,
    environment: String,
    environment_version: String,
    /// Hash of the environment's identity alone: templates of the same environment with
    /// another identity are stale.
    env_identity: String,
    fingerprint: String,
    mem_mib: u32,
    vcpu_count: u32,
    network: bool,
    accel: String,
    created_at_ms: u64,
    build_ms: u64,
    state_bytes: u64,
}

/// What a template for one (environment, VM shape) is called and must match.
#[derive(Debug, Clone)]
pub(crate) struct TemplateKey {
    /// Directory name: `<env>.<hash>`.
    name: String,
    /// `<env>.`: every template of this environment starts with it.
    env_prefix: String,
    env_identity: String,
    fingerprint: String,
    /// Memory, vCPUs, NIC, accelerator: another template of this environment with the same
    /// shape but another key was made by another agent, kernel or QEMU, and is stale.
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq)]
struct Shape {
    mem_mib: u32,
    vcpu_count: u32,
    network: bool,
    accel: String,
}

impl Shape {
    fn of(r: &TemplateRecord) -> Shape {
        Shape { mem_mib: r.mem_mib, vcpu_count: r.vcpu_count, network: r.network, accel: r.accel.clone() }
    }
}

/// A complete, valid template.
pub(crate) struct Template {
    dir: PathBuf,
    state: MemoryState,
}

impl Template {
    fn vm_dir(&self) -> VmDir {
        VmDir::new(&self.dir)
    }

    /// The disk the state was saved with (opened with `snapshot=on` by every warm run).
    pub(crate) fn disk(&self) -> PathBuf {
        self.vm_dir().disk_overlay()
    }
}

/// How an ephemeral VM started, for its payload metadata.
pub(crate) struct StartMode {
    /// `warm` or `cold`.
    pub(crate) mode: &'static str,
    /// Why: which template was restored, or why there was none.
    pub(crate) reason: String,
    /// The template directory used, if any.
    pub(crate) template: Option<PathBuf>,
}

/// Outcome of looking a template up.
enum Lookup {
    Valid(Template),
    Missing,
    /// There is one, but it cannot be used (reason); it is removed.
    Invalid(String),
}

/// Is warm running turned off by [`WARM_RUN_VAR`]?
pub(crate) fn warm_runs_disabled() -> bool {
    disables_warm_runs(std::env::var(WARM_RUN_VAR).ok().as_deref())
}

fn disables_warm_runs(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off" | "false" | "no"))
}

/// The template directories to look in, in order: `<cache>/templates`, then
/// `$PYRO_HOME/cache/templates` (where a user who cannot write a shared cache builds them).
pub(crate) fn roots(paths: &crate::Paths) -> Vec<PathBuf> {
    let primary = paths.cache_dir.join(TEMPLATES_DIR);
    let fallback = paths.home.join("cache").join(TEMPLATES_DIR);
    if primary == fallback {
        vec![primary]
    } else {
        vec![primary, fallback]
    }
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Identity of a file without reading it: device, inode, size, mtime. A reinstall or a
/// rewrite of the file changes it.
fn file_identity(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(format!("{}:{}:{}:{}.{}", m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// The key of the template for `env` booted as `spec` (its disk format and disk are the
/// template's, whatever `spec` says).
pub(crate) fn key_for(env: &InstalledEnvironment, spec: &BootSpec) -> Result<TemplateKey> {
    let env_identity = hex_sha256(&[
        LAYOUT.as_bytes(),
        env.name.as_bytes(),
        env.version.as_bytes(),
        env.source.as_bytes(),
        env.source_digest.as_bytes(),
        &env.installed_at.to_le_bytes(),
        file_identity(&env.rootfs_image)?.as_bytes(),
        file_identity(&env.kernel_image)?.as_bytes(),
    ]);
    let mut shape = spec.clone();
    shape.disk_format = DiskFormat::Qcow2;
    let fingerprint = pyro_vmm::fingerprint(&shape);
    let key = hex_sha256(&[env_identity.as_bytes(), fingerprint.as_bytes()]);
    // `.` never occurs in a catalog name, so no environment's prefix is another's
    // (`debian_12-` would match `debian_12-build-...`).
    let env_prefix = format!("{}.", env.name.replace(':', "_"));
    let shape = Shape {
        mem_mib: spec.mem_mib,
        vcpu_count: spec.vcpu_count,
        network: spec.network.has_nic(),
        accel: spec.accel.as_str().to_string(),
    };
    Ok(TemplateKey { name: format!("{env_prefix}{}", &key[..24]), env_prefix, env_identity, fingerprint, shape })
}

fn read_record(dir: &Path) -> std::result::Result<TemplateRecord, String> {
    use std::io::Read;
    let path = dir.join(RECORD_FILE);
    let f = std::fs::File::open(&path).map_err(|e| format!("{RECORD_FILE} is unreadable: {e}"))?;
    let mut text = String::new();
    f.take(MAX_RECORD_BYTES).read_to_string(&mut text).map_err(|e| format!("{RECORD_FILE} is unreadable: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{RECORD_FILE} is invalid: {e}"))
}

/// Check the template at `dir` against `key`.
fn lookup_at(dir: &Path, key: &TemplateKey) -> Lookup {
    match dir.symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Lookup::Invalid(format!("{} is not a directory", dir.display())),
        Err(_) => return Lookup::Missing,
    }
    let record = match read_record(dir) {
        Ok(r) => r,
        Err(why) => return Lookup::Invalid(why),
    };
    if record.key != key.name || record.fingerprint != key.fingerprint || record.env_identity != key.env_identity {
        return Lookup::Invalid(format!("{RECORD_FILE} describes another template"));
    }
    let vm = VmDir::new(dir);
    match vm.disk_overlay().symlink_metadata() {
        Ok(m) if m.is_file() => {}
        _ => return Lookup::Invalid("its disk (rootfs.qcow2) is missing".into()),
    }
    match MemoryState::load(&vm) {
        Ok(Some(state)) => {
            if state.meta.fingerprint != key.fingerprint {
                Lookup::Invalid("its memory state was saved by another VM shape".into())
            } else if state.meta.disk_format != DiskFormat::Qcow2 {
                Lookup::Invalid("its memory state was saved with another disk format".into())
            } else {
                Lookup::Valid(Template { dir: dir.to_path_buf(), state })
            }
        }
        Ok(None) => Lookup::Invalid("it has no memory state".into()),
        Err(e) => Lookup::Invalid(format!("its memory state is corrupt: {e}")),
    }
}

/// What `pyro doctor --environment` reports about the template of one key, without
/// changing anything (unlike [`lookup`], nothing is removed).
pub(crate) enum TemplateStatus {
    /// A complete template for this key.
    Valid(PathBuf),
    /// No template of this environment for this VM shape.
    Missing,
    /// There is one for this shape, but it cannot be used (why): built for another
    /// install of the environment, another agent (initramfs), kernel or QEMU, or damaged.
    Stale(String),
}

/// The [`TemplateStatus`] of `key` in `roots`.
pub(crate) fn template_status(roots: &[PathBuf], key: &TemplateKey) -> TemplateStatus {
    for root in roots {
        match lookup_at(&root.join(&key.name), key) {
            Lookup::Valid(t) => return TemplateStatus::Valid(t.dir),
            Lookup::Invalid(why) => return TemplateStatus::Stale(format!("its template is unusable: {why}")),
            Lookup::Missing => {}
        }
    }
    // Another template of this environment with the same shape: the key changed under it.
    for root in roots {
        let Ok(rd) = std::fs::read_dir(root) else { continue };
        let mut names: Vec<(String, PathBuf)> = rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(n, _)| n.starts_with(&key.env_prefix))
            .collect();
        names.sort();
        for (_, path) in names {
            let Ok(record) = read_record(&path) else { continue };
            if Shape::of(&record) != key.shape {
                continue;
            }
            if record.env_identity != key.env_identity {
                return TemplateStatus::Stale(format!(
                    "its template was built for another install of {} (version {})",
                    record.environment, record.environment_version
                ));
            }
            let what = pyro_vmm::fingerprint_mismatch(&record.fingerprint, &key.fingerprint)
                .unwrap_or_else(|| "another key".into());
            return TemplateStatus::Stale(format!("its template was built for another agent, kernel or QEMU ({what})"));
        }
    }
    TemplateStatus::Missing
}

/// What [`Pyro::prepare_template`] did.
pub(crate) enum Prepared {
    /// A valid template was there already.
    Already(PathBuf),
    /// Built now; `replaced` when a template (valid under `force`, or unusable) was there.
    Built { dir: PathBuf, replaced: bool },
    /// Warm runs do not apply (why): turned off, or no QEMU backend.
    NotApplicable(String),
}

/// Find the template for `key` in any root. An invalid one is removed (when this user can)
/// and reported.
fn lookup(roots: &[PathBuf], key: &TemplateKey) -> Lookup {
    let mut invalid = None;
    for root in roots {
        let dir = root.join(&key.name);
        match lookup_at(&dir, key) {
            Lookup::Valid(t) => return Lookup::Valid(t),
            Lookup::Missing => {}
            Lookup::Invalid(why) => {
                let _ = remove_template_dir(root, &dir);
                invalid.get_or_insert(why);
            }
        }
    }
    invalid.map(Lookup::Invalid).unwrap_or(Lookup::Missing)
}

/// Remove a template directory (read-only inside): moved aside first so nobody sees a
/// half-removed template under its name.
fn remove_template_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    let aside = root.join(format!(".trash-{}", crate::util::new_id()));
    std::fs::rename(dir, &aside)?;
    remove_tree_writable(&aside)
}

/// `remove_dir_all` of a tree whose directories may be read-only (0555).
fn remove_tree_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = path.symlink_metadata() {
        if m.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    std::fs::remove_dir_all(path)
}

fn failure_marker(root: &Path, key: &TemplateKey) -> PathBuf {
    root.join(format!(".{}.failed", key.name))
}

fn lock_path(root: &Path, key: &TemplateKey) -> PathBuf {
    root.join(format!(".{}.lock", key.name))
}

/// A build of this key failed less than [`FAILED_BUILD_BACKOFF`] ago: why.
fn recent_failure(roots: &[PathBuf], key: &TemplateKey) -> Option<String> {
    roots.iter().find_map(|root| {
        let path = failure_marker(root, key);
        let age = std::fs::metadata(&path).ok()?.modified().ok()?.elapsed().unwrap_or_default();
        if age > FAILED_BUILD_BACKOFF {
            return None;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Some(text.chars().take(300).collect())
    })
}

/// The first root this user can create files in (created if missing), and whether it is
/// shared: the cache dir's templates are world-readable (a root-built cache serves
/// unprivileged users, like its environments); the `$PYRO_HOME` fallback is owner-only,
/// like everything else in the state dir.
fn writable_root(roots: &[PathBuf], home: &Path) -> Result<(PathBuf, bool)> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for root in roots {
        let shared = !root.starts_with(home);
        let created = if shared {
            // An explicit mode: a umask of 000 must not make the templates dir world-writable.
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(root)
        } else {
            pyro_sys::create_private_dir(root)
        };
        match created.and_then(|()| tempfile::tempfile_in(root).map(drop)) {
            Ok(()) => return Ok((root.clone(), shared)),
            Err(e) => last = Some(Error::io(format!("creating a template in {}", root.display()), e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Io("no template directory".into())))
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), e))
}

fn sync_path(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Remove templates of the same environment that can no longer be used (another
/// environment identity, the same shape under another key, unreadable) and the oldest
/// beyond [`MAX_TEMPLATES_PER_ENV`], plus leftover trash directories.
fn remove_stale(root: &Path, key: &TemplateKey) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    let mut current = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(".trash-") {
            let _ = remove_tree_writable(&path);
            continue;
        }
        if !name.starts_with(&key.env_prefix) || name == key.name {
            continue;
        }
        match read_record(&path) {
            Ok(r) if r.env_identity == key.env_identity && Shape::of(&r) != key.shape => {
                current.push((r.created_at_ms, path))
            }
            _ => {
                let _ = remove_template_dir(root, &path);
            }
        }
    }
    current.sort();
    let excess = (current.len() + 1).saturating_sub(MAX_TEMPLATES_PER_ENV);
    for (_, path) in current.into_iter().take(excess) {
        let _ = remove_template_dir(root, &path);
    }
}

/// Build directories of this key left by a killed build. Call with the key's lock held.
fn remove_build_leftovers(root: &Path, key: &TemplateKey) {
    let prefix = format!(".build-{}-", key.name);
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let dir = VmDir::new(e.path());
                dir.kill();
                let _ = remove_tree_writable(&e.path());
            }
        }
    }
}

/// Removes a build directory (and kills its VM) unless disarmed.
struct BuildDir {
    path: Option<PathBuf>,
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            VmDir::new(&p).kill();
            let _ = remove_tree_writable(&p);
        }
    }
}

impl Pyro {
    /// Start an ephemeral VM from `req`: restored from its environment's template when there
    /// is a valid one (built first when there is none), otherwise booted cold. Returns the
    /// launched VM and how it started.
    pub(crate) async fn launch_ephemeral(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: BootRequest,
    ) -> Result<(crate::boot::Launched, StartMode)> {
        if choice.kind != pyro_vmm::Backend::Qemu {
            let launched = self.launch(env, choice, req).await?;
            return Ok((launched, StartMode { mode: "cold", reason: choice.reason.clone(), template: None }));
        }
        let cold_reason = match self.warm_template(env, choice, &req).await {
            Ok((template, built)) => {
                let spec = self.boot_spec(env, choice, &req)?;
                match self.restore_from(&template, spec).await {
                    Ok(mut launched) => {
                        launched.metadata.insert("backend_reason".into(), choice.reason.clone());
                        let reason = if built {
                            "no template yet: built it, then restored it".to_string()
                        } else {
                            "restored the environment's template".to_string()
                        };
                        let template = Some(template.dir.clone());
                        return Ok((launched, StartMode { mode: "warm", reason, template }));
                    }
                    Err(e) => {
                        // Wait until its processes are gone: a dying supervisor must not remove
                        // the VM dir under the cold boot that follows.
                        req.dir.reap();
                        // A template whose state does not come up is removed (the next run
                        // builds a new one); one that failed for a host reason (a missing
                        // tool, no egress filter, an I/O error) is kept: a cold boot is
                        // about to hit the same problem.
                        let template_at_fault = matches!(
                            e,
                            pyro_vmm::Error::CorruptState(_)
                                | pyro_vmm::Error::InvalidState(_)
                                | pyro_vmm::Error::Boot(_)
                                | pyro_vmm::Error::Channel(_)
                                | pyro_vmm::Error::Guest { .. }
                        );
                        if template_at_fault {
                            if let Some(root) = template.dir.parent() {
                                let _ = remove_template_dir(root, &template.dir);
                            }
                            format!("restoring the template failed ({e}); it was removed")
                        } else {
                            format!("restoring the template failed ({e})")
                        }
                    }
                }
            }
            Err(reason) => reason,
        };
        self.progress().report("boot", format!("cold boot: {cold_reason}"), None);
        let launched = self.launch(env, choice, req).await?;
        Ok((launched, StartMode { mode: "cold", reason: cold_reason, template: None }))
    }

    /// A valid template for `req`'s shape, built now when missing (true = built by this call),
    /// or why the run boots cold.
    async fn warm_template(
        &self,
        env: &InstalledEnvironment,
        choice: &BackendChoice,
        req: &BootRequest,
    ) -> std::result::Result<(Template, bool), String> {
        if warm_runs_disabled() {
            return Err(format!("warm runs are off ({WARM_RUN_VAR})"));
        }
        let spec = self.boot_spec(env, choice, req).map_err(|e| format!("no template: {e}"))?;
        let key = key_for(env, &spec).map_err(|e| format!("no template: {e}"))?;
        let roots = roots(self.paths());
        let (r, k) = (roots.clone(), key.clone());
        let found = tokio::task::spawn_blocking(move || lookup(&r, &k))
            .await
            .map_err(|e| format!("template lookup task: {e}"))?;
        match found {
            Lookup::Valid(t) => return Ok((t, false)),
            // Not rebuilt in this run: a template that went bad once is not trusted to be
            // rebuilt right away at the cost of this run.
            Lookup::Invalid(why) => return Err(format!("the template was unusable ({why}); it was removed")),
            Lookup::Missing => {}
        }
        if let Some(why) = recent_failure(&roots, &key) {
            return Err(format!("building the template failed recently ({why})"));
        }
        match self.build_template(env, spec, &key, false).await {
            Ok(Some(t)) => Ok((t, true)),
            Ok(None) => Err("the template is being built by another run".into()),
            Err(e) => Err(format!("building the template failed ({e})")),
        }
    }

    /// Restore `template` into `spec`'s VM dir, with the template's disk under a throw-away
    /// overlay.
    async fn restore_from(
        &self,
        template: &Template,
        mut spec: BootSpec,
    ) -> std::result::Result<crate::boot::Launched, pyro_vmm::Error> {
        spec.disk = template.disk();
        spec.disk_format = DiskFormat::Qcow2;
        spec.snapshot = true;
        let accel = spec.accel;
        let t = Instant::now();
        let (machine, booted) = Machine::restore(spec, &template.state).await?;
        let metadata = BTreeMap::from([
            ("accel".to_string(), accel.as_str().to_string()),
            ("agent_version".to_string(), booted.agent_version.clone()),
            ("boot_ms".to_string(), booted.ready_ms.to_string()),
            ("restore_ms".to_string(), t.elapsed().as_millis().to_string()),
            ("agent_transport".to_string(), booted.transport.to_string()),
        ]);
        Ok(crate::boot::Launched { machine, accel, booted, metadata })
    }

    /// Build the template for `key` (`spec` is the shape). `Ok(None)` when another process
    /// is building it right now. A failure leaves a marker so the next runs boot cold
    /// without retrying at once.
    async fn build_template(
        &self,
        env: &InstalledEnvironment,
        spec: BootSpec,
        key: &TemplateKey,
        force: bool,
    ) -> Result<Option<Template>> {
        let roots = roots(self.paths());
        let (root, shared) = writable_root(&roots, &self.paths().home)?;
        let Some(lock) = crate::env::try_lock_file(&lock_path(&root, key))? else {
            return Ok(None);
        };
        // Built meanwhile by the holder of the lock we just got (unless a rebuild is asked
        // for: the valid one is replaced when the new one is complete).
        if let Lookup::Valid(t) = lookup(&roots, key) {
            if !force {
                return Ok(Some(t));
            }
        }
        remove_build_leftovers(&root, key);
        self.progress().report(
            "template",
            format!("building the {} template (first use of this VM shape)", env.name),
            None,
        );
        let started = Instant::now();
        let result = self.build_template_in(&root, shared, env, spec, key).await;
        let marker = failure_marker(&root, key);
        match &result {
            Ok(_) => {
                let _ = std::fs::remove_file(&marker);
                remove_stale(&root, key);
                self.progress().report(
                    "template",
                    format!("built the {} template in {} ms", env.name, started.elapsed().as_millis()),
                    None,
                );
            }
            Err(e) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&marker)
                    .and_then(|mut f| f.write_all(e.to_string().as_bytes()));
            }
        }
        drop(lock);
        result.map(Some)
    }

    async fn build_template_in(
        &self,
        root: &Path,
        shared: bool,
        env: &InstalledEnvironment,
        mut spec: BootSpec,
        key: &TemplateKey,
    ) -> Result<Template> {
        let started = Instant::now();
        // The VM runs here; a short name keeps its sockets within `sun_path`.
        let build = root.join(format!(".build-{}-{}", key.name, &crate::util::new_id()[..6]));
        let stage = root.join(format!(".build-{}-{}.t", key.name, &crate::util::new_id()[..6]));
        let _guard_build = BuildDir { path: Some(build.clone()) };
        let mut guard_stage = BuildDir { path: Some(stage.clone()) };
        let vm = VmDir::new(&build);
        vm.create()?;
        let base = env
            .rootfs_image
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", env.rootfs_image.display()), e))?;
        pyro_vmm::create_overlay(&base, DiskFormat::Raw, &vm.disk_overlay())?;
        spec.dir = vm.clone();
        spec.vm_id = format!("template-{}", crate::util::new_id());
        spec.disk = vm.disk_overlay();
        spec.disk_format = DiskFormat::Qcow2;
        // The template VM writes into its overlay: that is the disk state its memory holds.
        spec.snapshot = false;
        spec.owner_pid = Some(std::process::id());
        spec.remove_dir_on_exit = false;
        spec.hostname = None;
        spec.idle_pause = None;
        let (machine, _booted) = Machine::boot(spec).await?;
        let paused = match machine.pause(PAUSE_TIMEOUT).await {
            Ok(p) => p,
            Err(e) => {
                machine.kill();
                return Err(e.into());
            }
        };
        // Only the state and its disk make the template: logs and launch files stay behind.
        let out = VmDir::new(&stage);
        out.create()?;
        for (from, to) in [
            (vm.memory_state(), out.memory_state()),
            (vm.memory_meta(), out.memory_meta()),
            (vm.disk_overlay(), out.disk_overlay()),
        ] {
            std::fs::rename(&from, &to)
                .map_err(|e| Error::io(format!("moving {} into the template", from.display()), e))?;
        }
        let state = MemoryState::load(&out)?
            .ok_or_else(|| Error::Boot("the template VM paused but left no memory state".into()))?;
        if state.meta.fingerprint != key.fingerprint {
            return Err(Error::Boot(format!(
                "the template VM saved a state of another shape ({} instead of {})",
                state.meta.fingerprint, key.fingerprint
            )));
        }
        let record = TemplateRecord {
            format: 1,
            key: key.name.clone(),
            environment: env.name.clone(),
            environment_version: env.version.clone(),
            env_identity: key.env_identity.clone(),
            fingerprint: key.fingerprint.clone(),
            mem_mib: key.shape.mem_mib,
            vcpu_count: key.shape.vcpu_count,
            network: key.shape.network,
            accel: key.shape.accel.clone(),
            created_at_ms: now_ms(),
            build_ms: started.elapsed().as_millis() as u64,
            state_bytes: paused.state_bytes,
        };
        pyro_sys::write_atomic(
            &stage.join(RECORD_FILE),
            &serde_json::to_vec_pretty(&record).expect("record serializes"),
        )
        .map_err(|e| Error::io("writing the template record", e))?;
        // Read-only: no run may change a template. In a shared cache also readable by others
        // (a root-built cache serves unprivileged users; it holds a freshly booted guest and
        // no user data); under $PYRO_HOME owner-only.
        let (file_mode, dir_mode) = if shared { (0o444, 0o555) } else { (0o400, 0o500) };
        for f in [out.memory_state(), out.memory_meta(), out.disk_overlay(), stage.join(RECORD_FILE)] {
            chmod(&f, file_mode)?;
            sync_path(&f)?;
        }
        chmod(&stage, dir_mode)?;
        sync_path(&stage)?;
        let dest = root.join(&key.name);
        if dest.symlink_metadata().is_ok() {
            remove_template_dir(root, &dest).map_err(|e| Error::io(format!("replacing {}", dest.display()), e))?;
        }
        pyro_sys::rename_noreplace(&stage, &dest).map_err(|e| Error::io(format!("placing {}", dest.display()), e))?;
        guard_stage.path = None;
        sync_path(root)?;
        Ok(Template {
            dir: dest,
            state: MemoryState { path: VmDir::new(root.join(&key.name)).memory_state(), meta: state.meta },
        })
    }

    /// The request of an ephemeral VM of the default shape (`pyro run ENV` with no flags;
    /// `network` as `--network`): the shape templates are prepared for.
    pub(crate) fn default_request(&self, env: &InstalledEnvironment, network: bool) -> BootRequest {
        BootRequest {
            dir: VmDir::new(self.paths().vms_dir().join("template-probe")),
            vm_id: "template".into(),
            vcpu_count: crate::defaults::VCPU_COUNT,
            mem_mib: crate::defaults::MEM_MIB,
            network: if network { pyro_vmm::NetworkPolicy::Egress } else { pyro_vmm::NetworkPolicy::Off },
            disk: env.rootfs_image.clone(),
            snapshot: true,
            owner_pid: Some(std::process::id()),
            remove_dir_on_exit: true,
            disk_format: pyro_vmm::DiskFormat::Raw,
            idle_pause: None,
            hostname: None,
        }
    }

    /// Make sure the template of `env` for the default VM shape (with a NIC when `network`)
    /// exists: built unless a valid one is there, or rebuilt anyway with `force`. Unlike a
    /// run, it ignores the back-off after a failed build (it was asked for) and waits for
    /// another process building the same template instead of giving up.
    pub(crate) async fn prepare_template(
        &self,
        env: &InstalledEnvironment,
        network: bool,
        force: bool,
    ) -> Result<Prepared> {
        if warm_runs_disabled() {
            return Ok(Prepared::NotApplicable(format!("warm runs are off ({WARM_RUN_VAR})")));
        }
        let choice = self.choose_backend_for(env, false).await?;
        if choice.kind != pyro_vmm::Backend::Qemu {
            return Ok(Prepared::NotApplicable(format!(
                "no VM backend: warm runs are not available ({})",
                choice.reason
            )));
        }
        let req = self.default_request(env, network);
        let spec = self.boot_spec(env, &choice, &req)?;
        let key = key_for(env, &spec)?;
        let roots = roots(self.paths());
        let (r, k) = (roots.clone(), key.clone());
        let found = tokio::task::spawn_blocking(move || (template_status(&r, &k), lookup(&r, &k)))
            .await
            .map_err(|e| Error::Io(format!("template lookup task: {e}")))?;
        let replaced = match found {
            (_, Lookup::Valid(t)) if !force => return Ok(Prepared::Already(t.dir)),
            (_, Lookup::Valid(_)) => true,
            (TemplateStatus::Stale(_), _) | (_, Lookup::Invalid(_)) => true,
            _ => false,
        };
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        loop {
            match self.build_template(env, spec.clone(), &key, force).await? {
                Some(t) => return Ok(Prepared::Built { dir: t.dir, replaced }),
                // Another process holds the lock: it builds the same template. Wait for it
                // (a forced rebuild still rebuilds once that one is done).
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
                None => return Err(Error::Io("another process has been building this template for 30 minutes".into())),
            }
        }
    }

    /// Build the template of `env` for the default VM shape unless a valid one exists
    /// (`pyro env pull`). Best effort: a failure is reported as progress, never an error,
    /// since the environment itself is installed.
    pub(crate) async fn prepare_default_template(&self, env: &InstalledEnvironment) {
        let outcome = async {
            if warm_runs_disabled() {
                return Ok(None);
            }
            let choice = self.choose_backend_for(env, false).await?;
            if choice.kind != pyro_vmm::Backend::Qemu {
                return Ok::<Option<String>, Error>(Some("no VM backend: warm runs are not available".to_string()));
            }
            let req = self.default_request(env, crate::defaults::NETWORK);
            let spec = self.boot_spec(env, &choice, &req)?;
            let key = key_for(env, &spec)?;
            let roots = roots(self.paths());
            let (r, k) = (roots.clone(), key.clone());
            let found = tokio::task::spawn_blocking(move || lookup(&r, &k))
                .await
                .map_err(|e| Error::Io(format!("template lookup task: {e}")))?;
            if let Lookup::Valid(_) = found {
                return Ok(Some(format!("the {} template is ready", env.name)));
            }
            match self.build_template(env, spec, &key, false).await? {
                Some(_) => Ok(Some(format!("the {} template is ready (warm `pyro run`)", env.name))),
                None => Ok(Some(format!("the {} template is being built by another process", env.name))),
            }
        }
        .await;
        match outcome {
            Ok(None) => {}
            Ok(Some(msg)) => self.progress().report("template", msg, Some(1.0)),
            Err(e) => self.progress().report("template", format!("no template (runs will boot cold): {e}"), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_vmm::{Accel, MemoryMeta, NetworkPolicy};

    struct Fixture {
        tmp: tempfile::TempDir,
        env: InstalledEnvironment,
        spec: BootSpec,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        for f in ["vmlinux", "rootfs.ext4", "init.cpio"] {
            std::fs::write(p(f), f).unwrap();
        }
        let env = InstalledEnvironment {
            name: "debian:12".into(),
            version: "1.0.0".into(),
            install_dir: tmp.path().to_path_buf(),
            kernel_image: p("vmlinux"),
            modules_dir: p("modules"),
            rootfs_image: p("rootfs.ext4"),
            kernel_release: "6.1".into(),
            source: "local-build".into(),
            source_digest: "abc".into(),
            installed_at: 1,
        };
        let spec = BootSpec {
            dir: VmDir::new(p("vm")),
            vm_id: "v".into(),
            accel: Accel::Tcg,
            vcpu_count: 1,
            mem_mib: 1024,
            network: NetworkPolicy::Off,
            kernel: p("vmlinux"),
            initramfs: p("init.cpio"),
            disk: p("rootfs.ext4"),
            disk_format: DiskFormat::Raw,
            snapshot: true,
            owner_pid: None,
            remove_dir_on_exit: true,
            supervisor_bin: p("sup"),
            idle_pause: None,
            hostname: None,
        };
        Fixture { tmp, env, spec }
    }

    #[test]
    fn the_key_changes_with_every_part_a_restore_depends_on() {
        let f = fixture();
        let base = key_for(&f.env, &f.spec).unwrap();
        assert!(base.name.starts_with("debian_12."), "{}", base.name);
        // The VM's own dir, id and the disk it boots do not matter: the template brings its own.
        let mut same = f.spec.clone();
        same.dir = VmDir::new("/elsewhere");
        same.vm_id = "other".into();
        assert_eq!(key_for(&f.env, &same).unwrap().name, base.name);
        let changed = |edit: &dyn Fn(&mut InstalledEnvironment, &mut BootSpec)| {
            let (mut env, mut spec) = (f.env.clone(), f.spec.clone());
            edit(&mut env, &mut spec);
            key_for(&env, &spec).unwrap()
        };
        let others = [
            changed(&|_, s| s.mem_mib = 512),
            changed(&|_, s| s.vcpu_count = 2),
            changed(&|_, s| s.network = NetworkPolicy::Egress),
            changed(&|_, s| s.accel = Accel::Kvm),
            changed(&|e, _| e.source_digest = "def".into()),
            changed(&|e, _| e.installed_at = 2),
            changed(&|_, s| s.initramfs = f.tmp.path().join("vmlinux")),
        ];
        for k in &others {
            assert_ne!(k.name, base.name);
        }
        assert_eq!(others[4].shape, base.shape, "same shape, other environment identity");
        assert_ne!(others[4].env_identity, base.env_identity);
        assert_eq!(others[6].env_identity, base.env_identity, "another agent: same environment");
        // A rewritten rootfs is another environment identity (a new file, a new inode).
        std::fs::remove_file(&f.env.rootfs_image).unwrap();
        std::fs::write(&f.env.rootfs_image, "rebuilt rootfs").unwrap();
        assert_ne!(key_for(&f.env, &f.spec).unwrap().env_identity, base.env_identity);
    }

    fn make_template(root: &Path, key: &TemplateKey, created_at_ms: u64) -> PathBuf {
        let dir = root.join(&key.name);
        let vm = VmDir::new(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(vm.memory_state(), b"state").unwrap();
        let meta = MemoryMeta {
            format: pyro_vmm::MEMORY_FORMAT,
            fingerprint: key.fingerprint.clone(),
            state_bytes: 5,
            mem_mib: key.shape.mem_mib,
            vcpu_count: key.shape.vcpu_count,
            network: key.shape.network,
            disk_format: DiskFormat::Qcow2,
            saved_at_ms: 1,
            pause_ms: 1,
            disk: vm.disk_overlay(),
            published: Vec::new(),
        };
        std::fs::write(vm.memory_meta(), serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::write(vm.disk_overlay(), b"qcow2").unwrap();
        let record = TemplateRecord {
            format: 1,
            key: key.name.clone(),
            environment: "debian:12".into(),
            environment_version: "1.0.0".into(),
            env_identity: key.env_identity.clone(),
            fingerprint: key.fingerprint.clone(),
            mem_mib: key.shape.mem_mib,
            vcpu_count: key.shape.vcpu_count,
            network: key.shape.network,
            accel: key.shape.accel.clone(),
            created_at_ms,
            build_ms: 1,
            state_bytes: 5,
        };
        std::fs::write(dir.join(RECORD_FILE), serde_json::to_vec(&record).unwrap()).unwrap();
        dir
    }

    #[test]
    fn only_a_whole_matching_template_is_used_and_a_bad_one_is_removed() {
        let f = fixture();
        let root = f.tmp.path().join("templates");
        let key = key_for(&f.env, &f.spec).unwrap();
        assert!(matches!(lookup(std::slice::from_ref(&root), &key), Lookup::Missing));
        let dir = make_template(&root, &key, 1);
        assert!(matches!(lookup(std::slice::from_ref(&root), &key), Lookup::Valid(_)));

        type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
        let broken: [Damage; 4] = [
            ("memory state", &|d| std::fs::write(VmDir::new(d).memory_state(), b"st").unwrap()),
            ("rootfs.qcow2", &|d| std::fs::remove_file(VmDir::new(d).disk_overlay()).unwrap()),
            ("template.json", &|d| std::fs::write(d.join(RECORD_FILE), b"{").unwrap()),
            ("another template", &|d| {
                let mut r = read_record(d).unwrap();
                r.fingerprint.push('x');
                std::fs::write(d.join(RECORD_FILE), serde_json::to_vec(&r).unwrap()).unwrap();
            }),
        ];
        for (why, damage) in broken {
            make_template(&root, &key, 1);
            damage(&dir);
            match lookup(std::slice::from_ref(&root), &key) {
                Lookup::Invalid(reason) => assert!(reason.contains(why), "{why}: {reason}"),
                _ => panic!("{why}: a damaged template was accepted"),
            }
            assert!(!dir.exists(), "{why}: the damaged template is removed");
        }
    }

    #[test]
    fn building_removes_stale_templates_and_keeps_other_shapes() {
        let f = fixture();
        let root = f.tmp.path().join("templates");
        let key = key_for(&f.env, &f.spec).unwrap();
        make_template(&root, &key, 10);
        let with = |edit: &dyn Fn(&mut InstalledEnvironment, &mut BootSpec)| {
            let (mut env, mut spec) = (f.env.clone(), f.spec.clone());
            edit(&mut env, &mut spec);
            key_for(&env, &spec).unwrap()
        };
        let other_shape = make_template(&root, &with(&|_, s| s.mem_mib = 512), 5);
        let old_env = make_template(&root, &with(&|e, _| e.source_digest = "old".into()), 6);
        let old_agent = make_template(&root, &with(&|_, s| s.initramfs = s.kernel.clone()), 7);
        let other_env = make_template(
            &root,
            &TemplateKey { name: "debian_12-build.x".into(), env_prefix: "debian_12-build.".into(), ..key.clone() },
            1,
        );
        std::fs::create_dir_all(root.join(".trash-1")).unwrap();
        remove_stale(&root, &key);
        assert!(root.join(&key.name).exists());
        assert!(other_shape.exists(), "another shape of the same environment stays");
        assert!(other_env.exists(), "another environment's templates are not this build's business");
        assert!(!old_env.exists(), "a template of an older install goes");
        assert!(!old_agent.exists(), "the same shape under another key (agent, kernel, QEMU) goes");
        assert!(!root.join(".trash-1").exists());

        // At most MAX_TEMPLATES_PER_ENV shapes per environment: the oldest go.
        let shapes: Vec<PathBuf> =
            (0..5).map(|i| make_template(&root, &with(&|_, s| s.mem_mib = 300 + i), 100 + i as u64)).collect();
        remove_stale(&root, &key);
        assert!(!other_shape.exists() && !shapes[0].exists() && !shapes[1].exists());
        assert!(shapes[2].exists() && shapes[3].exists() && shapes[4].exists() && root.join(&key.name).exists());
    }

    #[test]
    fn warm_runs_are_turned_off_by_the_variable() {
        for (v, off) in [("off", true), ("0", true), (" FALSE", true), ("no", true), ("on", false), ("1", false)] {
            assert_eq!(disables_warm_runs(Some(v)), off, "{v}");
        }
        assert!(!disables_warm_runs(None));
    }
}
