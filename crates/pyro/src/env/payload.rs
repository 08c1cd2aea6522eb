//! Payloads of the environment calls (`list_environments`, `inspect_environment`,
//! `pull_environment`, `prune_environments`): the public contract's keys for `env list`,
//! `env inspect`, `env pull` and `env prune`, pinned by `tests/contract.rs`.

use serde::{Deserialize, Serialize};

/// One catalog environment with its install state (`inspect_environment`, and each entry of
/// `list_environments`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnvironmentInfo {
    /// Catalog name: `debian:12`, `debian:12-base` or `debian:12-build`.
    pub name: String,
    /// Environment version (`1.0.0`).
    pub version: String,
    /// One-line description, e.g. `Debian 12 with Git`.
    pub description: String,
    /// Packages the environment promises (`bash`, `coreutils`, ...).
    pub default_packages: Vec<String>,
    /// `debian`.
    pub distribution: String,
    /// `12`.
    pub distribution_version: String,
    /// `linux-x86_64`.
    pub platform: String,
    /// OCI registry the environment is published to.
    pub oci_registry: String,
    /// OCI repository of the environment.
    pub oci_repository: String,
    /// OCI tag of the environment (its version).
    pub oci_reference: String,
    /// What an install is made from: the install manifest's digest once installed, else the
    /// digest a local build would record.
    pub source_digest: String,
    /// pyro versions the environment works with (`>=3.0.0,<4.0.0`).
    pub compatibility: String,
    /// Version of the catalog (`3.11.0`).
    pub catalog_version: String,
    /// Whether a complete install is in the cache.
    pub installed: bool,
    /// The cache directory (`$PYRO_CACHE_DIR`).
    pub cache_dir: String,
    /// Where the environment is (or would be) installed.
    pub install_dir: String,
    /// The install's `environment.json`; only when installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_manifest: Option<String>,
}

/// Payload of `list_environments`: every catalog environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EnvironmentList {
    /// Version of the catalog (`3.11.0`).
    pub catalog_version: String,
    /// `debian:12`, `debian:12-base`, `debian:12-build`, in catalog order.
    pub environments: Vec<EnvironmentInfo>,
}

/// Payload of `pull_environment`: the installed environment and where its artifacts are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PulledEnvironment {
    /// The environment, as `inspect_environment` reports it (its keys are inlined).
    #[serde(flatten)]
    pub environment: EnvironmentInfo,
    /// The uncompressed guest kernel (`vmlinux`).
    pub kernel_image: String,
    /// The ext4 root filesystem image.
    pub rootfs_image: String,
    /// `local-build` or `oci://<registry>/<repository>@<digest>`.
    pub source: String,
}

/// Payload of `prune_environments`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PruneResult {
    /// Number of cache entries deleted.
    pub count: usize,
    /// Names of the deleted entries under `<cache>/environments/linux-x86_64`, sorted.
    pub deleted_environment_dirs: Vec<String>,
}

/// One blob of a pushed environment image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PushedLayer {
    /// What it holds: `config`, `kernel` (vmlinux and modules) or `rootfs`.
    pub title: String,
    /// OCI media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes (compressed).
    pub size: u64,
    /// False when the registry already had it and nothing was sent.
    pub uploaded: bool,
}

/// Payload of `push_environment` (`pyro env push`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PushedEnvironment {
    /// Catalog name, e.g. `debian:12`.
    pub name: String,
    /// Where it was pushed, `REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    /// Digest of the pushed manifest; `REGISTRY/REPOSITORY@DIGEST` pulls exactly this.
    pub digest: String,
    /// The config blob and the layers.
    pub layers: Vec<PushedLayer>,
    /// Blobs sent (the rest were already in the registry).
    pub uploaded_count: usize,
    /// Bytes sent for blobs (the manifest not counted).
    pub uploaded_bytes: u64,
}
