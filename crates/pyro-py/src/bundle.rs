//! The runtime binaries the wheel carries (see build.rs), written out once per content digest
//! so the engine can run them.

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

/// Write the embedded binaries under `<cache_dir>/runtime/<digest>/` (if not there yet, or not
/// trustworthy) and register that directory with the engine (`pyro::config` owns the checks).
/// Without an embedded bundle (a development build) nothing happens and the engine looks for
/// the binaries as the CLI does.
pub fn install(cache_dir: &Path) -> pyro::Result<Option<PathBuf>> {
    let Some(bundle) = BUNDLE else { return Ok(None) };
    let binaries = [("pyro-supervisor", bundle.supervisor), (pyro::config::GUEST_AGENT_BIN, bundle.agent)];
    pyro::config::install_bundled_binaries(cache_dir, bundle.digest, &binaries).map(Some)
}
