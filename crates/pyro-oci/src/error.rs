//! Every way an OCI transfer fails, each with the words a user needs to act on it.

/// Result of this crate.
pub type Result<T> = std::result::Result<T, OciError>;

/// Why a registry operation or a layer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image reference does not parse (`REGISTRY/REPOSITORY[:TAG|@DIGEST]`).
    #[error("invalid image reference '{reference}': {reason}")]
    InvalidReference {
        /// What was given.
        reference: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The registry host cannot be reached (DNS, refused connection, TLS, timeout).
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable {
        /// Registry host (and port).
        registry: String,
        /// The underlying failure.
        detail: String,
    },
    /// HTTP 401: no credentials, or the registry rejected them.
    #[error("registry {registry} requires valid credentials (HTTP 401): {detail}")]
    Unauthorized {
        /// Registry host (and port).
        registry: String,
        /// What was tried and where credentials come from.
        detail: String,
    },
    /// HTTP 403: the credentials are valid but may not do this.
    #[error("registry {registry} denied {operation} of {repository} (HTTP 403)")]
    Forbidden {
        /// Registry host (and port).
        registry: String,
        /// Repository path.
        repository: String,
        /// `pull` or `push`.
        operation: String,
    },
    /// The manifest (tag or digest) or a blob does not exist in the repository.
    #[error("{what} not found in registry {registry}")]
    NotFound {
        /// Registry host (and port).
        registry: String,
        /// What is missing, e.g. `manifest repo:tag` or `blob sha256:...`.
        what: String,
    },
    /// No image for linux/amd64 in the index, or the manifest is for another platform.
    #[error("{reference} has no linux/amd64 image (found: {found})")]
    Platform {
        /// The reference pulled.
        reference: String,
        /// The platforms it does offer.
        found: String,
    },
    /// A blob or manifest whose content does not hash to its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// e.g. `blob sha256:...` or `manifest repo:tag`.
        what: String,
        /// Digest it was announced with.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// A transfer that ended before the announced size.
    #[error("download of {what} ended early: {got} of {expected} bytes")]
    Truncated {
        /// The blob.
        what: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// Not enough disk space for the download or the unpacked files.
    #[error("not enough disk space in {dir}: {detail}")]
    NoSpace {
        /// The directory being written.
        dir: String,
        /// How much was needed and how much is free, or the write that failed.
        detail: String,
    },
    /// Something the registry sent is larger than pyro accepts.
    #[error("{what} is too large: {size} bytes (limit {limit})")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry answered in a way the distribution protocol does not allow.
    #[error("registry protocol error: {0}")]
    Protocol(String),
    /// The artifact's content is not what it must be (missing file, bad tar, bad config).
    #[error("invalid artifact: {0}")]
    Artifact(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// An I/O error with what was being done; ENOSPC becomes [`OciError::NoSpace`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> OciError {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return OciError::NoSpace { dir: context, detail: source.to_string() };
        }
        OciError::Io { context, source }
    }
}
