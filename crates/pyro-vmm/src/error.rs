//! The runtime's own error type. The product maps it once into `pyro::Error`.

use pyro_protocol::ErrorKind;

/// Everything a VM operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VM is not running (its supervisor or QEMU's monitor cannot be reached).
    #[error("{0}")]
    NotRunning(String),
    /// The VM did not boot or its agent did not become ready.
    #[error("{0}")]
    Boot(String),
    /// A host tool or capability is missing (QEMU, the egress filter, a short enough path).
    #[error("{0}")]
    HostRequirement(String),
    /// A caller's argument is invalid (a setting from the environment, a port request).
    #[error("{0}")]
    InvalidInput(String),
    /// The guest agent (or the supervisor on its behalf) answered with an error.
    #[error("{message}")]
    Guest {
        /// The agent's classification.
        kind: ErrorKind,
        /// The agent's message, unchanged.
        message: String,
    },
    /// The channel to the guest broke, timed out or carried an answer that does not fit
    /// the request.
    #[error("{0}")]
    Channel(String),
    /// The initramfs for a KVM probe guest could not be made (the caller's own error).
    #[error("{0}")]
    Initramfs(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The VM (or its saved state) is in the wrong state for the operation: a state saved
    /// by a differently shaped machine, a pause while requests still run.
    #[error("{0}")]
    InvalidState(String),
    /// A saved memory state is unreadable, truncated or damaged (the VM can still start cold
    /// from its disk once the state is discarded).
    #[error("{0}")]
    CorruptState(String),
    /// Host-side I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { context: context.to_string(), source }
    }

    /// An answer of the wrong type for `what`.
    pub(crate) fn unexpected(what: &str, answer: impl std::fmt::Debug) -> Self {
        Error::Channel(format!("unexpected answer to {what}: {answer:?}"))
    }
}

/// Result of every runtime operation.
pub type Result<T> = std::result::Result<T, Error>;
