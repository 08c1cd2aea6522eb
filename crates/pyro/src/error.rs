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
            Disk::Io { .. } | Disk::ImageRead { .. } | Disk::OutOfMemory { .. } => Error::Io(message),
        }
    }
}

/// Result of every SDK call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::Error;
    use pyro_diskimage::Error as Disk;

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
}
