//! File and archive operations on the guest's filesystem (workspaces).
//!
//! Large payloads move in chunks so no frame grows past [`crate::MAX_FRAME_BYTES`] and the
//! guest never holds a whole archive in memory: uploads are appended to a temp file on the
//! guest disk (`/var/tmp/pyro-transfer/<id>`), exports are built into one and read back in
//! ranges.

use serde::{Deserialize, Serialize};

/// Size of one transfer chunk.
pub const TRANSFER_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// A filesystem or transfer operation in the guest. Paths are absolute guest paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FsRequest {
    /// Append `data` at `offset` of upload `transfer_id` (offset 0 creates/truncates it).
    UploadChunk {
        /// Names the upload's temp file; chosen by the host, checked by the agent.
        transfer_id: String,
        /// Where `data` goes in the upload.
        offset: u64,
        /// At most [`TRANSFER_CHUNK_BYTES`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Extract an uploaded plain tar into `destination` (created if missing), never
    /// following a symlink, then delete the upload. Answer: `FsResponse::Extracted`.
    ExtractUpload {
        /// The upload to extract.
        transfer_id: String,
        /// Directory to extract into.
        destination: String,
    },
    /// Build a tar of `path` (a directory's children, or one file/symlink under its
    /// basename) into a transfer file. Answer: `FsResponse::Exported`.
    Export {
        /// What to archive.
        path: String,
    },
    /// Read a range of a transfer file. Answer: `FsResponse::Data`.
    ReadTransfer {
        /// The transfer file to read.
        transfer_id: String,
        /// First byte to read.
        offset: u64,
        /// Bytes to read; fewer come back at the end of the file. The host asks for at most
        /// [`TRANSFER_CHUNK_BYTES`] so the answer fits in one frame.
        len: u64,
    },
    /// Delete a transfer file (upload or export). Answer: an empty `FsResponse::Data`.
    DiscardTransfer {
        /// The transfer file to delete.
        transfer_id: String,
    },
    /// List `path` (lstat; never follows symlinks). Answer: `FsResponse::Listing`.
    List {
        /// The file or directory to list.
        path: String,
        /// Descend into subdirectories (never through a symlink).
        recursive: bool,
    },
    /// Read up to `max_bytes` of a regular file. Answer: `FsResponse::FileData`.
    Read {
        /// The file to read.
        path: String,
        /// Bytes to read at most, from the start of the file.
        max_bytes: u64,
    },
    /// Write a regular file atomically (temp + rename), creating parents; keeps an existing
    /// file's mode, new files get 0644; refuses symlinked parents and non-file targets.
    /// Answer: `FsResponse::Written`.
    Write {
        /// The file to write.
        path: String,
        /// Its whole new content.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Remove a file or symlink (never a directory). Answer: an empty `FsResponse::Data`.
    Delete {
        /// The file or symlink to remove.
        path: String,
    },
    /// Replace the contents of `/run/pyro-secrets` (tmpfs, dir 0700) with these files (0600).
    /// Answer: an empty `FsResponse::Data`.
    InstallSecrets {
        /// Every secret of the workspace; files not listed are removed.
        secrets: Vec<SecretFile>,
    },
}

/// One secret, installed as `/run/pyro-secrets/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretFile {
    /// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`, checked again by the agent.
    pub name: String,
    /// The file's content.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The answers to [`FsRequest`]s that have something to report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FsResponse {
    /// Answer to [`FsRequest::ExtractUpload`].
    Extracted {
        /// The directory extracted into.
        destination: String,
        /// Archive members written (files, directories, symlinks).
        entry_count: u64,
        /// Bytes of file content written.
        bytes_written: u64,
    },
    /// Answer to [`FsRequest::Export`]: the archive is ready to read.
    Exported {
        /// The transfer file holding the tar; read it with [`FsRequest::ReadTransfer`].
        transfer_id: String,
        /// Size of the tar in bytes.
        size: u64,
        /// `file`, `directory` or `symlink`.
        artifact_type: String,
        /// Archive members written.
        entry_count: u64,
        /// Bytes of file content archived.
        bytes_written: u64,
    },
    /// Answer to [`FsRequest::ReadTransfer`]; empty for [`FsRequest::DiscardTransfer`],
    /// [`FsRequest::Delete`] and [`FsRequest::InstallSecrets`].
    Data {
        /// The bytes read; shorter than asked only at the end of the file.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Answer to [`FsRequest::List`].
    Listing {
        /// The path listed.
        path: String,
        /// What the path itself is: `file`, `directory` or `symlink`.
        artifact_type: String,
        /// The path itself if not a directory, else its children (all descendants when
        /// recursive), sorted by path.
        entries: Vec<FileEntry>,
    },
    /// Answer to [`FsRequest::Read`].
    FileData {
        /// The file read.
        path: String,
        /// The file's whole size, which may exceed `data`'s.
        size_bytes: u64,
        /// Up to `max_bytes` from the start of the file.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Answer to [`FsRequest::Write`]: the file is on disk.
    Written {
        /// The file written.
        path: String,
        /// The file's size now.
        size_bytes: u64,
        /// Bytes written by this request.
        bytes_written: u64,
    },
}

/// One entry of a [`FsResponse::Listing`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute guest path.
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub artifact_type: String,
    /// 0 for directories; lstat size otherwise.
    pub size_bytes: u64,
    /// Where a symlink points (as stored, never resolved); `None` for other types.
    pub link_target: Option<String>,
}
