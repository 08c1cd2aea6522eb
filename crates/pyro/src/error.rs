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
    /// Host-side I/O failed (code `io_error`, like [`Error::Io`]); the OS error is kept as
    /// the source. Built by [`Error::io`].
    #[error("{context}: {source}")]
    HostIo {
        /// What was being done, e.g. `writing /path/to/file`.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file pyro keeps for itself (a workspace, shell or reset record) does not parse
    /// (code `io_error`); the JSON error is kept as the source.
    #[error("{what} is unreadable: {source}")]
    Unreadable {
        /// The file, e.g. `workspace record /path/workspace.json`.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A worker task of the engine panicked or was cancelled (code `io_error`).
    #[error("{context}: {source}")]
    Task {
        /// Which task, e.g. `worker task failed`.
        context: String,
        /// The join error (a panic's payload, or the cancellation).
        #[source]
        source: tokio::task::JoinError,
    },
    /// An environment failure with its cause kept (code `environment`, like
    /// [`Error::Environment`]).
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
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
            Error::HostIo { .. } | Error::Unreadable { .. } | Error::Task { .. } => "io_error",
            Error::Env(_) => "environment",
        }
    }

    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        Error::HostIo { context: context.to_string(), source: err }
    }

    /// A record pyro wrote that does not parse: `{what} is unreadable: {err}`.
    pub fn unreadable(what: impl std::fmt::Display, err: serde_json::Error) -> Self {
        Error::Unreadable { what: what.to_string(), source: err }
    }
}

/// The offline disk tools' errors, by code: what the caller asked for is wrong (`invalid_input`),
/// the path is not there (`not_found`), the image cannot be read that way (`invalid_state`), or
/// the host failed (`io_error`). The message is the crate's own.
impl From<pyro_diskimage::Error> for Error {
    fn from(e: pyro_diskimage::Error) -> Self {
        use pyro_diskimage::Error as Disk;
        let message = e.to_string();
        match e {
            Disk::RelativePath { .. }
            | Disk::NulInPath { .. }
            | Disk::MalformedPath { .. }
            | Disk::PathTooLong { .. }
            | Disk::SymlinkLoop { .. }
            | Disk::UnsupportedType { .. }
            | Disk::NotARegularFile
            | Disk::ZeroReadLimit
            | Disk::ReadLimitTooLarge { .. }
            | Disk::OutputExists { .. } => Error::InvalidInput(message),
            Disk::PathNotFound { .. } => Error::NotFound(message),
            Disk::ImageNotAFile { .. }
            | Disk::NotExt4 { .. }
            | Disk::ReaderFailed { .. }
            | Disk::UnfinishedJournal { .. }
            | Disk::Unsupported { .. }
            | Disk::Corrupt { .. }
            | Disk::UnreadableSymlink { .. }
            | Disk::DirectoryTooLarge { .. }
            | Disk::ListingTooLarge { .. }
            | Disk::TooManyDirectoryEntries { .. }
            | Disk::TooManyEntries { .. }
            | Disk::TooDeep { .. }
            | Disk::TooMuchWork { .. } => Error::InvalidState(message),
            // The OS error stays the source.
            Disk::Io { context, source } => Error::HostIo { context, source },
            Disk::ImageRead { .. } | Disk::OutOfMemory { .. } => Error::Io(message),
        }
    }
}

impl From<pyro_tree::Error> for Error {
    /// The one mapping of tree-rule errors: a broken rule or unreadable archive is the
    /// caller's input (`invalid_input`), host I/O is `io_error`, a malformed export came from
    /// the guest (`guest_error`). Messages are the tree error's own text.
    fn from(e: pyro_tree::Error) -> Self {
        use pyro_tree::Error as Tree;
        let message = e.to_string();
        match e {
            Tree::Invalid(_) | Tree::InvalidTar(_) | Tree::InSeedArchive { .. } => Error::InvalidInput(message),
            // The OS error stays the source.
            Tree::Io { context, source } => Error::HostIo { context, source },
            Tree::UnexpectedExport(_) => Error::Guest(message),
        }
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
            Vmm::InvalidState(m) | Vmm::CorruptState(m) => Error::InvalidState(m),
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

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_diskimage::Error as Disk;
    use std::error::Error as _;

    #[test]
    fn disk_errors_keep_their_message_and_get_their_code() {
        let cases = [
            (Disk::ZeroReadLimit, "invalid_input", "max_bytes must be positive"),
            (
                Disk::PathNotFound { path: "/workspace/x".into() },
                "not_found",
                "workspace disk path does not exist: /workspace/x",
            ),
            (
                Disk::TooManyEntries { max: 3 },
                "invalid_state",
                "workspace disk listing stopped at 3 entries (list a smaller path, or export the disk; \
                 a corrupt image with a directory cycle also ends here)",
            ),
            (
                Disk::Io { context: "cannot stat /img".into(), source: std::io::Error::from_raw_os_error(2) },
                "io_error",
                "cannot stat /img: No such file or directory (os error 2)",
            ),
        ];
        for (disk, code, message) in cases {
            let e = Error::from(disk);
            assert_eq!((e.code(), e.to_string().as_str()), (code, message));
        }
    }

    /// Errors with a cause keep it as `source()`; message and code stay what they were when
    /// the cause was only formatted into a string.
    #[test]
    fn causes_are_kept_behind_the_same_message_and_code() {
        let e = Error::io("writing /x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.to_string(), "writing /x: No space left on device (os error 28)");
        assert_eq!(e.code(), "io_error");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the OS error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));

        let json = serde_json::from_str::<u32>("{").unwrap_err();
        let e = Error::unreadable("shell record abc", json);
        assert!(e.to_string().starts_with("shell record abc is unreadable: "), "{e}");
        assert_eq!(e.code(), "io_error");
        assert!(e.source().is_some_and(|s| s.is::<serde_json::Error>()));

        let defect = crate::env::InstallDefect::KernelUnreadable(std::io::ErrorKind::NotFound.into());
        let e: Error =
            crate::env::EnvError::Unusable { context: "the new debian:12 install is not usable".into(), defect }.into();
        assert_eq!(e.code(), "environment");
        assert!(e.to_string().starts_with("the new debian:12 install is not usable: vmlinux: "), "{e}");
        // transparent: the first source is the defect, and its source the OS error.
        let defect = e.source().expect("the defect");
        assert!(defect.is::<crate::env::InstallDefect>());
        assert!(defect.source().is_some_and(|s| s.is::<std::io::Error>()));
    }

    /// Tree-rule errors keep today's codes and messages when they reach the SDK edge.
    #[test]
    fn tree_errors_map_once_to_codes_and_messages() {
        let io = || std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let cases = [
            (pyro_tree::Error::Invalid("name must not be empty".into()), "invalid_input", "name must not be empty"),
            (pyro_tree::Error::InvalidTar(io()), "invalid_input", "invalid tar archive: denied"),
            (
                pyro_tree::Error::InSeedArchive {
                    path: "/s.tar".into(),
                    source: Box::new(pyro_tree::Error::Invalid("archive member has an empty name".into())),
                },
                "invalid_input",
                "/s.tar: archive member has an empty name",
            ),
            (pyro_tree::Error::io("reading /x", io()), "io_error", "reading /x: denied"),
            (pyro_tree::Error::UnexpectedExport("bad export".into()), "guest_error", "bad export"),
        ];
        for (tree, code, message) in cases {
            let e = Error::from(tree);
            assert_eq!((e.code(), e.to_string().as_str()), (code, message));
        }
    }
}
