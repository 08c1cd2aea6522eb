//! The one error type of the tree rules.

/// Why a tree rule refused its input or host-side archive work failed.
///
/// The `pyro` engine maps it once to `pyro::Error` (`crates/pyro/src/error.rs`): rule
/// violations and unreadable archives become `invalid_input`, host I/O `io_error`, a
/// malformed export `guest_error`. Display texts are the user-facing messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path, name, archive member or patch breaks a rule; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The bytes are not a readable tar archive.
    #[error("invalid tar archive: {0}")]
    InvalidTar(#[source] std::io::Error),
    /// A seed archive broke a rule or is unreadable; the message starts with its host path.
    #[error("{}: {source}", path.display())]
    InSeedArchive {
        /// The archive's host path.
        path: std::path::PathBuf,
        /// The rule it broke ([`Error::Invalid`] or [`Error::InvalidTar`]).
        #[source]
        source: Box<Error>,
    },
    /// A host filesystem operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `reading /path`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An archive exported from the guest does not have the shape its artifact type promises
    /// (the guest produced it, so this is the guest's fault, not the caller's).
    #[error("{0}")]
    UnexpectedExport(String),
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { context: context.to_string(), source }
    }
}

/// Result of every tree rule.
pub type Result<T> = std::result::Result<T, Error>;
