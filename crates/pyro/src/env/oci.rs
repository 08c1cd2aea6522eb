//! Environments as OCI artifacts: pushing an install to a registry and installing one from
//! a registry (`PYRO_ENV_REGISTRY`, or a reference given to `env pull`).
//!
//! SKELETON: the signatures are the shared interface; the bodies are being written.

use super::{EnvStore, EnvironmentSpec, InstalledEnvironment, Manifest, PushedEnvironment, ENVIRONMENT_VERSION};
use crate::{Error, Progress, Result};
use std::path::Path;

/// The registry from `PYRO_ENV_REGISTRY`, when set and non-blank: a host with optional
/// port and optional path prefix, e.g. `127.0.0.1:5000` or `ghcr.io/team`.
pub(super) fn configured_registry() -> Option<String> {
    std::env::var("PYRO_ENV_REGISTRY")
        .ok()
        .map(|r| r.trim().trim_end_matches('/').to_string())
        .filter(|r| !r.is_empty())
}

/// Where `spec` lives under a configured registry: `<registry>/<catalog repository>:<version>`,
/// e.g. `127.0.0.1:5000/thalesmaciel/pyro-environment-debian-12:1.0.0`.
pub(super) fn default_reference(registry: &str, spec: &EnvironmentSpec) -> String {
    format!("{registry}/{}:{ENVIRONMENT_VERSION}", spec.oci_repository)
}

/// Check that `reference` parses, with an [`Error::InvalidInput`] saying what is allowed.
pub(super) fn check_reference(reference: &str) -> Result<()> {
    pyro_oci::registry::Reference::parse(reference).map(|_| ()).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// Fill `stage` with `vmlinux`, `modules/` and `rootfs.ext4` from the image `reference` and
/// return the manifest to publish (source `oci://<registry>/<repository>@<digest>`).
/// Returns `None` when `current` already is that image (same manifest digest): nothing to do.
pub(super) fn fetch(
    _store: &EnvStore,
    spec: &EnvironmentSpec,
    reference: &str,
    _current: Option<&InstalledEnvironment>,
    _stage: &Path,
    _progress: &Progress,
) -> Result<Option<Manifest>> {
    Err(Error::Environment(format!("pulling {} from {reference}: not implemented yet", spec.name)))
}

/// Publish `installed` as the image `reference`.
pub(super) fn push(
    _store: &EnvStore,
    spec: &EnvironmentSpec,
    _installed: &InstalledEnvironment,
    reference: &str,
    _progress: &Progress,
) -> Result<PushedEnvironment> {
    Err(Error::Environment(format!("pushing {} to {reference}: not implemented yet", spec.name)))
}
