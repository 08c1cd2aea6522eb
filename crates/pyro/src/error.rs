//! The one error type every SDK call returns. CLI and MCP map it to messages and codes.

/// Every failure the engine reports. The message is complete and user-facing: it says what
/// was wrong and, where it helps, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments: out-of-range limits, invalid names, malformed paths.
    #[error("{0}")]
    InvalidInput(String),
    /// Unknown VM, workspace, environment, snapshot, shell or service.
    #[error("{0}")]
    NotFound(String),
    /// The object exists but is in the wrong state for the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A host tool or capability pyro needs is missing.
    #[error("{0}")]
    HostRequirement(String),
    /// Building, pulling or reading an environment failed.
    #[error("{0}")]
    Environment(String),
    /// The VM did not boot or its agent did not become ready.
    #[error("{0}")]
    Boot(String),
    /// The guest agent answered with an error or the channel broke.
    #[error("{0}")]
    Guest(String),
    /// Host-side I/O failed.
    #[error("{0}")]
    Io(String),
    /// The operation was cancelled by the caller.
    #[error("{0}")]
    Cancelled(String),
}

impl Error {
    /// Stable machine-readable code, reported as `code` in `--json` errors and MCP results.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::NotFound(_) => "not_found",
            Error::InvalidState(_) => "invalid_state",
            Error::HostRequirement(_) => "host_requirement",
            Error::Environment(_) => "environment",
            Error::Boot(_) => "boot_failed",
            Error::Guest(_) => "guest_error",
            Error::Io(_) => "io_error",
            Error::Cancelled(_) => "cancelled",
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        Error::Io(format!("{context}: {err}"))
    }
}

/// The one mapping of the VM runtime's errors to the engine's classes (and so to the
/// stable codes). Guest errors are classified by their kind; the message is unchanged.
impl From<pyro_vmm::Error> for Error {
    fn from(e: pyro_vmm::Error) -> Self {
        use pyro_protocol::ErrorKind;
        use pyro_vmm::Error as Vmm;
        match e {
            Vmm::NotRunning(m) => Error::InvalidState(m),
            Vmm::Boot(m) => Error::Boot(m),
            Vmm::HostRequirement(m) => Error::HostRequirement(m),
            Vmm::InvalidInput(m) => Error::InvalidInput(m),
            Vmm::Guest { kind, message } => match kind {
                ErrorKind::NotFound => Error::NotFound(message),
                ErrorKind::InvalidPath
                | ErrorKind::UnsupportedType
                | ErrorKind::TooLarge
                | ErrorKind::BadRequest
                | ErrorKind::Exists => Error::InvalidInput(message),
                ErrorKind::InvalidState => Error::InvalidState(message),
                _ => Error::Guest(message),
            },
            Vmm::Channel(m) => Error::Guest(m),
            // The product's own initramfs error comes back as it was raised.
            Vmm::Initramfs(source) => match source.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Error::Environment(other.to_string()),
            },
            e @ Vmm::Io { .. } => Error::Io(e.to_string()),
        }
    }
}

/// Result of every SDK call.
pub type Result<T> = std::result::Result<T, Error>;
