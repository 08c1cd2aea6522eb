//! Where pyro keeps state and caches, and how it finds its helper binaries.

use crate::{Error, Result};
use std::path::PathBuf;

/// Resolved directories for one `Pyro` instance.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$PYRO_HOME`, default `~/.local/share/pyro`: workspaces, VM run dirs. Never /tmp,
    /// so workspaces survive a host reboot.
    pub home: PathBuf,
    /// `$PYRO_CACHE_DIR`, default `~/.cache/pyro`: environments, initramfs images, probes.
    pub cache_dir: PathBuf,
}

impl Paths {
    /// Directories from `$PYRO_HOME` and `$PYRO_CACHE_DIR` (unset or empty: the defaults under
    /// `$HOME`). Fails only when a default is needed and `HOME` is unset.
    pub fn from_env() -> Result<Self> {
        let home = match std::env::var_os("PYRO_HOME") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => user_home()?.join(".local/share/pyro"),
        };
        let cache_dir = match std::env::var_os("PYRO_CACHE_DIR") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => user_home()?.join(".cache/pyro"),
        };
        Ok(Paths { home, cache_dir })
    }

    /// `<home>/vms`: run directories of ephemeral VMs.
    pub fn vms_dir(&self) -> PathBuf {
        self.home.join("vms")
    }

    /// `<home>/workspaces`: one directory per workspace.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.home.join("workspaces")
    }
}

fn user_home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => Err(Error::HostRequirement("HOME is not set; set HOME, or PYRO_HOME and PYRO_CACHE_DIR".into())),
    }
}

/// File name of the static guest agent as installed next to the host binaries. Not
/// `pyro-agent`: that is where cargo puts its own (dynamically linked) build of the crate.
pub const GUEST_AGENT_BIN: &str = "pyro-guest-agent";

/// The directory of binaries a host program carries with it, set once per process (the
/// Python package extracts the supervisor and guest agent it embeds and registers them here,
/// because its running executable is the Python interpreter, not a pyro build).
static BUNDLED_BINARIES_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Register the directory holding this process's own copies of `pyro-supervisor` and the guest
/// agent. The first registration wins; returns the directory in effect.
pub fn set_bundled_binaries_dir(dir: PathBuf) -> &'static std::path::Path {
    BUNDLED_BINARIES_DIR.get_or_init(|| dir)
}

/// Write binaries a host program carries (the Python wheel embeds `pyro-supervisor` and the
/// guest agent) to `<cache_dir>/runtime/<digest[..16]>/` and register that directory
/// ([`set_bundled_binaries_dir`]). Returns the directory in effect.
///
/// pyro executes these files (the supervisor on the host, the agent in every guest), so they
/// are trusted only in directories no other user can change: `runtime/` and the digest
/// directory must be owned by this user or root and not group- or world-writable (a
/// [`Error::HostRequirement`] says so otherwise), and a file already there is used only when
/// it is owned by this user or root, not group- or world-writable and byte-for-byte the
/// embedded one; anything else is replaced (temporary file, fsync, rename: no process ever runs
/// a half-written binary). When that fails in `cache_dir` (a cache shared read-only, without
/// this build's binaries), the user's own `~/.cache/pyro` is tried before giving up.
pub fn install_bundled_binaries(
    cache_dir: &std::path::Path,
    digest: &str,
    binaries: &[(&str, &[u8])],
) -> Result<PathBuf> {
    let dir = match write_bundled_binaries(cache_dir, digest, binaries) {
        Ok(dir) => dir,
        // A cache shared read-only (root's /var/cache/pyro, say) without this build's binaries:
        // this user's own cache directory holds them instead.
        Err(first) => match user_home().map(|h| h.join(".cache/pyro")) {
            Ok(own) if own != cache_dir => write_bundled_binaries(&own, digest, binaries).map_err(|_| first)?,
            _ => return Err(first),
        },
    };
    Ok(set_bundled_binaries_dir(dir).to_path_buf())
}

/// [`install_bundled_binaries`] without the registration: the checks and the writing.
fn write_bundled_binaries(cache_dir: &std::path::Path, digest: &str, binaries: &[(&str, &[u8])]) -> Result<PathBuf> {
    let short = digest.get(..16).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(|| {
        Error::InvalidInput(format!("bundle digest must be at least 16 hex characters, got {digest:?}"))
    })?;
    let runtime = cache_dir.join("runtime");
    let dir = runtime.join(short);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for d in [&runtime, &dir] {
        check_private_to_us(d)?;
    }
    for (name, bytes) in binaries {
        let path = dir.join(name);
        if !is_trusted_copy(&path, bytes) {
            write_executable(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
    }
    Ok(dir)
}

/// Owned by this user (or root, who can change anything anyway) and writable by nobody else:
/// else another user could swap what pyro runs.
fn owned_and_not_shared(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (meta.uid() == pyro_sys::effective_uid() || meta.uid() == 0) && meta.mode() & 0o022 == 0
}

fn check_private_to_us(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if meta.is_dir() && owned_and_not_shared(&meta) {
        return Ok(());
    }
    Err(Error::HostRequirement(format!(
        "refusing to run pyro's binaries from {}: it must be a directory owned by you (uid {}) or root and \
         not writable by group or others (it is owned by uid {}, mode {:o}); use a cache directory of your own \
         (cache_dir, or PYRO_CACHE_DIR)",
        dir.display(),
        pyro_sys::effective_uid(),
        meta.uid(),
        meta.mode() & 0o7777
    )))
}

fn is_trusted_copy(path: &std::path::Path, bytes: &[u8]) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && owned_and_not_shared(&meta) && meta.len() == bytes.len() as u64 => {
            std::fs::read(path).map(|on_disk| on_disk == bytes).unwrap_or(false)
        }
        _ => false,
    }
}

fn write_executable(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o755))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Find one of pyro's own binaries (`pyro-agent`, `pyro-supervisor`).
///
/// Order: the explicit override variable, then the process's bundled binaries
/// ([`set_bundled_binaries_dir`]), then next to the running executable (and its parent, which
/// covers cargo's `target/<profile>/deps/` test binaries), then `$PATH`.
pub fn find_own_binary(name: &str, override_var: &str) -> Result<PathBuf> {
    if let Some(v) = std::env::var_os(override_var) {
        let p = PathBuf::from(v);
        if p.is_file() {
            return Ok(p);
        }
        return Err(Error::HostRequirement(format!("{override_var} points at {} which is not a file", p.display())));
    }
    let mut candidates = Vec::new();
    if let Some(dir) = BUNDLED_BINARIES_DIR.get() {
        candidates.push(dir.join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(parent) = dir.parent() {
                candidates.push(parent.join(name));
            }
        }
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Ok(found);
    }
    if let Some(found) = which(name) {
        return Ok(found);
    }
    Err(Error::HostRequirement(format!(
        "cannot find `{name}` next to {} or on PATH; build it (scripts/build.sh) or set {override_var}",
        std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
    )))
}

/// `which`: the first executable file called `name` on `$PATH` (plus the sbin dirs, where
/// Debian puts mkfs.ext4 and debootstrap but an ordinary user's PATH often lacks them).
pub use pyro_vmm::which;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const DIGEST: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn bundled_binaries_are_written_executable_once_and_replaced_when_changed() {
        let cache = tempfile::tempdir().unwrap();
        let dir = write_bundled_binaries(cache.path(), DIGEST, &[("sup", b"one"), ("agent", b"two")]).unwrap();
        assert_eq!(dir, cache.path().join("runtime/0123456789abcdef"));
        let sup = dir.join("sup");
        assert_eq!(std::fs::read(&sup).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&sup).unwrap().mode() & 0o777, 0o755);
        let inode = std::fs::metadata(&sup).unwrap().ino();

        // A trusted identical copy is reused as is.
        write_bundled_binaries(cache.path(), DIGEST, &[("sup", b"one"), ("agent", b"two")]).unwrap();
        assert_eq!(std::fs::metadata(&sup).unwrap().ino(), inode);

        // Same size, other bytes (tampered or half-written): replaced.
        std::fs::write(&sup, b"evl").unwrap();
        write_bundled_binaries(cache.path(), DIGEST, &[("sup", b"one"), ("agent", b"two")]).unwrap();
        assert_eq!(std::fs::read(&sup).unwrap(), b"one");

        // Right bytes but writable by others: replaced by a private copy.
        std::fs::set_permissions(&sup, std::fs::Permissions::from_mode(0o777)).unwrap();
        write_bundled_binaries(cache.path(), DIGEST, &[("sup", b"one"), ("agent", b"two")]).unwrap();
        assert_eq!(std::fs::metadata(&sup).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn a_runtime_directory_others_can_write_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let runtime = cache.path().join("runtime");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = write_bundled_binaries(cache.path(), DIGEST, &[("sup", b"one")]).unwrap_err();
        assert_eq!(err.code(), "host_requirement");
        assert!(err.to_string().contains("not writable by group or others"), "{err}");
        assert!(!runtime.join("0123456789abcdef/sup").exists());
    }

    #[test]
    fn a_digest_that_is_not_hex_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let err = write_bundled_binaries(cache.path(), "../../etc/passwd-xxxxxx", &[("sup", b"one")]).unwrap_err();
        assert_eq!(err.code(), "invalid_input");
    }
}
