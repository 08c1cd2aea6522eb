//! The runtime binaries the wheel carries (see build.rs), written out once per content digest
//! so the engine can run them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A `pyro-supervisor` and a static guest agent embedded at build time.
pub struct Bundle {
    /// SHA-256 over both binaries: names the directory they are written to.
    pub digest: &'static str,
    /// The `pyro-supervisor` executable.
    pub supervisor: &'static [u8],
    /// The static guest agent (`pyro-guest-agent`).
    pub agent: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/bundle.rs"));

/// Write the embedded binaries under `<cache_dir>/runtime/<digest>/` (if not there yet) and
/// register that directory with the engine. Without an embedded bundle (a development build)
/// nothing happens and the engine looks for the binaries as the CLI does.
pub fn install(cache_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let Some(bundle) = BUNDLE else { return Ok(None) };
    let dir = cache_dir.join("runtime").join(&bundle.digest[..16]);
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in [("pyro-supervisor", bundle.supervisor), (pyro::config::GUEST_AGENT_BIN, bundle.agent)] {
        write_once(&dir.join(name), bytes)?;
    }
    Ok(Some(pyro::config::set_bundled_binaries_dir(dir).to_path_buf()))
}

/// Write `bytes` to `path` as an executable unless a file of that size is already there: a
/// temporary file in the same directory, fsynced, renamed into place, so a concurrent process
/// never runs a half-written binary.
fn write_once(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::metadata(path).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
        return Ok(());
    }
    let dir = path.parent().expect("a file in a directory");
    let tmp = dir.join(format!(".{}.{}.tmp", path.file_name().unwrap().to_string_lossy(), std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
