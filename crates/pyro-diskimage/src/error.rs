//! What can go wrong reading or exporting a disk image. Every message is complete and
//! user-facing (pyro shows it as is); pyro maps each variant once to its stable error code.

use std::path::PathBuf;

/// A failure of [`list`](crate::list), [`read`](crate::read), [`export`](crate::export) or
/// [`check_read_limit`](crate::check_read_limit).
///
/// Guest paths in fields are already escaped for display (see the crate docs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the caller asked for something this crate does not do -------------------------------
    /// The guest path is relative.
    #[error("workspace disk path must be absolute: {path}")]
    RelativePath {
        /// The path as given.
        path: String,
    },
    /// The guest path contains a NUL byte.
    #[error("workspace disk path contains a NUL byte: {path}")]
    NulInPath {
        /// The path as given.
        path: String,
    },
    /// The guest path cannot be expressed as an ext4 path.
    #[error("workspace disk path is not a valid path: {path}")]
    MalformedPath {
        /// The offending path.
        path: String,
    },
    /// The guest path (or one met during a walk) is longer than an offline read accepts.
    #[error("workspace disk path is too long to read offline (over {max} bytes): {path}")]
    PathTooLong {
        /// The offending path.
        path: String,
        /// The longest accepted path, in bytes.
        max: usize,
    },
    /// Resolving the guest path followed too many symlinks.
    #[error("too many levels of symbolic links in workspace disk path: {path}")]
    SymlinkLoop {
        /// The path as given.
        path: String,
    },
    /// The guest path is a device, fifo or socket.
    #[error("unsupported workspace disk path type: {path}")]
    UnsupportedType {
        /// The path as given.
        path: String,
    },
    /// [`read`](crate::read) was asked for something other than a regular file.
    #[error("workspace disk read only supports regular files")]
    NotARegularFile,
    /// `max_bytes` is zero.
    #[error("max_bytes must be positive")]
    ZeroReadLimit,
    /// `max_bytes` is above [`MAX_READ_BYTES`](crate::MAX_READ_BYTES).
    #[error(
        "max_bytes must be at most {max} bytes (16 MiB) for an offline disk read (got {requested}); \
         export the disk to read more"
    )]
    ReadLimitTooLarge {
        /// What was asked for.
        requested: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// [`export`](crate::export) never replaces anything.
    #[error("output_path already exists: {}", path.display())]
    OutputExists {
        /// The requested output path.
        path: PathBuf,
    },

    // --- the path does not exist ---------------------------------------------------------------
    /// The guest path does not exist (a runtime-only path is reported the same way).
    #[error("workspace disk path does not exist: {path}")]
    PathNotFound {
        /// The path as given.
        path: String,
    },

    // --- the image cannot be read as asked -----------------------------------------------------
    /// The image file is not a regular file.
    #[error("workspace disk image is not a regular file: {}", image.display())]
    ImageNotAFile {
        /// The image.
        image: PathBuf,
    },
    /// The image is not an ext4 filesystem this reader accepts (checked before loading it).
    #[error("workspace disk image is not a readable ext4 filesystem: {}: {reason}", image.display())]
    NotExt4 {
        /// The image.
        image: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A qcow2 image (or one of its backing files) is corrupt, or uses something the offline
    /// reader refuses (compression, encryption, an external data file, subclusters, an unsafe
    /// backing chain). See the crate docs.
    #[error("workspace disk image {} cannot be read as qcow2: {reason}", image.display())]
    Qcow2 {
        /// The image asked for (the top of the chain).
        image: PathBuf,
        /// What was wrong, and in which backing file if not the image itself.
        reason: String,
    },
    /// The ext4 parser panicked on corrupt data (caught; nothing else is affected).
    #[error(
        "workspace disk image is not a readable ext4 filesystem: {} (the reader failed on corrupt data)",
        image.display()
    )]
    ReaderFailed {
        /// The image.
        image: PathBuf,
    },
    /// The journal holds transactions that cannot be replayed in memory.
    #[error(
        "workspace disk image {} has an unfinished journal that cannot be replayed offline ({source}); \
         run `pyro workspace start` and then `pyro workspace stop` to let the guest recover it",
        image.display()
    )]
    UnfinishedJournal {
        /// The image.
        image: PathBuf,
        /// What the reader refused.
        #[source]
        source: ext4_view::Ext4Error,
    },
    /// A feature the reader does not support (encryption, ...) is in the way.
    #[error("workspace disk image {} cannot be read offline at {path}: {source}", image.display())]
    Unsupported {
        /// The image.
        image: PathBuf,
        /// Where it was met.
        path: String,
        /// What the reader refused.
        #[source]
        source: ext4_view::Ext4Error,
    },
    /// The filesystem is corrupt where the request needed it.
    #[error("workspace disk image {} is corrupt at {path}: {source} (check it with `e2fsck -fn`)", image.display())]
    Corrupt {
        /// The image.
        image: PathBuf,
        /// Where it was met.
        path: String,
        /// What the reader found.
        #[source]
        source: ext4_view::Ext4Error,
    },
    /// A symlink on the way to the requested path cannot be read safely.
    #[error("workspace disk image {} has an unreadable symlink at {link} (on the way to {path})", image.display())]
    UnreadableSymlink {
        /// The image.
        image: PathBuf,
        /// The symlink.
        link: String,
        /// The path as given.
        path: String,
    },

    // --- a listing bound was reached (see [`ListLimits`](crate::ListLimits)) ------------------
    /// A directory claims more bytes than a listing reads.
    #[error(
        "workspace disk directory {path} claims {claimed} bytes, more than the {max} an offline listing reads \
         (a corrupt image?)"
    )]
    DirectoryTooLarge {
        /// The directory.
        path: String,
        /// Its inode's size.
        claimed: u64,
        /// [`ListLimits::max_dir_bytes`](crate::ListLimits::max_dir_bytes).
        max: u64,
    },
    /// The directories of one listing claim more bytes in total than it reads.
    #[error(
        "workspace disk listing stopped after reading {max} bytes of directories (list a smaller path, \
         or export the disk)"
    )]
    ListingTooLarge {
        /// [`ListLimits::max_total_dir_bytes`](crate::ListLimits::max_total_dir_bytes).
        max: u64,
    },
    /// One directory has more entries than a listing shows.
    #[error(
        "workspace disk directory {path} has more than {max} entries, more than an offline listing \
         shows (a corrupt image?)"
    )]
    TooManyDirectoryEntries {
        /// The directory.
        path: String,
        /// [`ListLimits::max_dir_entries`](crate::ListLimits::max_dir_entries).
        max: usize,
    },
    /// The listing found more entries than it returns.
    #[error(
        "workspace disk listing stopped at {max} entries (list a smaller path, or export the disk; \
         a corrupt image with a directory cycle also ends here)"
    )]
    TooManyEntries {
        /// [`ListLimits::max_entries`](crate::ListLimits::max_entries).
        max: usize,
    },
    /// Directories nest deeper than a listing descends.
    #[error(
        "workspace disk directories nest deeper than {max} levels at {path} \
         (a corrupt image with a directory cycle?)"
    )]
    TooDeep {
        /// The directory that would be one level too deep.
        path: String,
        /// [`ListLimits::max_depth`](crate::ListLimits::max_depth).
        max: usize,
    },
    /// The listing needed more work than it may do.
    #[error(
        "workspace disk listing of {path} needs too much work (a corrupt image with a directory \
         cycle?); list a smaller path"
    )]
    TooMuchWork {
        /// The directory being listed when the budget ran out.
        path: String,
    },

    // --- host I/O ------------------------------------------------------------------------------
    /// A host file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the image file failed underneath the ext4 reader.
    #[error("cannot read workspace disk image {}{}: {source}", image.display(), at.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    ImageRead {
        /// The image.
        image: PathBuf,
        /// The guest path being read, if any.
        at: Option<String>,
        /// The reader's error (it carries the OS error).
        #[source]
        source: ext4_view::Ext4Error,
    },
    /// Memory for the data asked for could not be reserved.
    #[error("not enough memory to read {bytes} bytes of {path}")]
    OutOfMemory {
        /// Bytes asked for.
        bytes: usize,
        /// The file.
        path: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { context: context.to_string(), source }
    }
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;
