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
