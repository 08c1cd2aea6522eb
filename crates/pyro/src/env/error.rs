//! Failures of the environment layer that have a cause worth keeping (the OS error of a
//! read, the JSON error of a manifest, debootstrap's exit). They reach callers as
//! [`crate::Error::Env`] (code `environment`) with the cause as `source()`; the messages are
//! the ones pyro has always printed.

use super::{ENVIRONMENT_VERSION, MANIFEST_FILE};
use std::path::PathBuf;

/// Why a directory in the environment cache is not a usable install.
#[derive(Debug, thiserror::Error)]
pub enum InstallDefect {
    /// `environment.json` cannot be read.
    #[error("cannot read {MANIFEST_FILE}: {0}")]
    ManifestUnreadable(#[source] std::io::Error),
    /// `environment.json` is not a manifest.
    #[error("bad {MANIFEST_FILE}: {0}")]
    ManifestInvalid(#[source] serde_json::Error),
    /// The manifest names an environment the catalog does not have.
    #[error("'{0}' is not in the catalog")]
    NotInCatalog(String),
    /// The manifest names a catalog environment, but not in its canonical spelling.
    #[error("manifest name '{0}' is not canonical")]
    NotCanonical(String),
    /// The manifest is of another environment version.
    #[error("version {0} is not {ENVIRONMENT_VERSION}")]
    OtherVersion(String),
    /// The manifest belongs to another install directory (a copied install).
    #[error("manifest of {name} found in {dir}")]
    OtherDirectory {
        /// Environment the manifest names.
        name: &'static str,
        /// Directory it was found in.
        dir: String,
    },
    /// The manifest has no guest kernel release.
    #[error("manifest has no kernel_release")]
    NoKernelRelease,
    /// `vmlinux` cannot be read.
    #[error("vmlinux: {0}")]
    KernelUnreadable(#[source] std::io::Error),
    /// `vmlinux` is not an ELF file.
    #[error("vmlinux is not an ELF file")]
    KernelNotElf,
    /// `vmlinux` is too small to be a kernel.
    #[error("vmlinux is truncated")]
    KernelTruncated,
    /// `rootfs.ext4` cannot be read.
    #[error("rootfs.ext4: {0}")]
    RootfsUnreadable(#[source] std::io::Error),
    /// `rootfs.ext4` has no ext4 superblock.
    #[error("rootfs.ext4 is not an ext4 image")]
    RootfsNotExt4,
    /// `modules/order` cannot be read.
    #[error("cannot read modules/order: {0}")]
    ModuleOrderUnreadable(#[source] std::io::Error),
    /// A module listed in `modules/order` is not there.
    #[error("module {0} listed in modules/order is missing")]
    ModuleMissing(String),
}

/// How running debootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum DebootstrapError {
    /// Its log file could not be created.
    #[error("creating {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It could not be started.
    #[error("starting debootstrap: {0}")]
    Spawn(#[source] std::io::Error),
    /// Waiting for it failed.
    #[error("waiting for debootstrap: {0}")]
    Wait(#[source] std::io::Error),
    /// It exited unsuccessfully.
    #[error("debootstrap failed ({status}); last lines:\n{tail}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its last non-empty output lines.
        tail: String,
    },
}

/// An environment failure with its cause ([`crate::Error::Env`]).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// An install (new or existing) is not usable.
    #[error("{context}: {defect}")]
    Unusable {
        /// What was being checked, e.g. `the new debian:12 install is not usable`.
        context: String,
        /// What is wrong with it.
        #[source]
        defect: InstallDefect,
    },
    /// Building an environment failed in debootstrap.
    #[error("building {name}: {source}{log_hint}")]
    Build {
        /// The environment being built.
        name: &'static str,
        /// How debootstrap failed.
        #[source]
        source: DebootstrapError,
        /// Where the full log was kept (`\nfull log: <path>`), or empty.
        log_hint: String,
    },
    /// Pulling from or pushing to an OCI registry failed.
    #[error("{context}: {source}")]
    Registry {
        /// What was being done, e.g. `pulling debian:12 from 127.0.0.1:5000/team/debian-12:1.0.0`.
        context: String,
        /// What went wrong.
        #[source]
        source: pyro_oci::OciError,
    },
}
