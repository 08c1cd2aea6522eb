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

impl From<pyro_tree::Error> for Error {
    /// The one mapping of tree-rule errors: a broken rule or unreadable archive is the
    /// caller's input (`invalid_input`), host I/O is `io_error`, a malformed export came from
    /// the guest (`guest_error`). Messages are the tree error's own text.
    fn from(e: pyro_tree::Error) -> Self {
        use pyro_tree::Error as Tree;
        let message = e.to_string();
        match e {
            Tree::Invalid(_) | Tree::InvalidTar(_) | Tree::InSeedArchive { .. } => Error::InvalidInput(message),
            Tree::Io { .. } => Error::Io(message),
            Tree::UnexpectedExport(_) => Error::Guest(message),
        }
    }
}

/// Result of every SDK call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

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
