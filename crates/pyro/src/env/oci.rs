//! Installing an environment from an OCI registry (`PYRO_ENV_REGISTRY`).
//!
//! Not implemented yet. The slot exists so `EnvStore::pull` already has its final shape:
//! registry first when one is configured, local build otherwise. Until it is written, a
//! configured registry is an explicit error rather than a silent local build, so nobody
//! believes they got the registry's image when they did not.

use super::{EnvStore, EnvironmentSpec, Manifest};
use crate::{Error, Progress, Result};
use std::path::Path;

/// The registry from `PYRO_ENV_REGISTRY`, when set and non-blank.
pub(super) fn configured_registry() -> Option<String> {
    std::env::var("PYRO_ENV_REGISTRY").ok().map(|r| r.trim().to_string()).filter(|r| !r.is_empty())
}

/// Fill `stage` with `vmlinux`, `modules/` and `rootfs.ext4` from the registry and return
/// the manifest to publish (source `oci://<registry>/<repo>@<digest>`).
///
/// When implemented, a registry that does not have the environment should fall back to
/// the local build (users are promised an install either way); that decision belongs in
/// `EnvStore::pull`.
pub(super) fn fetch(
    _store: &EnvStore,
    spec: &EnvironmentSpec,
    registry: &str,
    _stage: &Path,
    _progress: &Progress,
) -> Result<Manifest> {
    Err(Error::Environment(format!(
        "PYRO_ENV_REGISTRY is set ({registry}) but OCI pull is not implemented yet; unset it to build {} locally",
        spec.name
    )))
}
