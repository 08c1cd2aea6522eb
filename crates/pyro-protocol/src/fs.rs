//! File and archive operations on the guest's filesystem (workspaces).
//!
//! Large payloads move in chunks so no frame grows past [`crate::MAX_FRAME_BYTES`] and the
//! guest never holds a whole archive in memory: uploads are appended to a temp file on the
//! guest disk (`/var/tmp/pyro-transfer/<id>`), exports are built into one and read back in
//! ranges.

use serde::{Deserialize, Serialize};

/// Size of one transfer chunk.
pub const TRANSFER_CHUNK_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FsRequest {
    /// Append `data` at `offset` of upload `transfer_id` (offset 0 creates/truncates it).
    UploadChunk {
        transfer_id: String,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Extract an uploaded plain tar into `destination` (created if missing), never
    /// following a symlink, then delete the upload. Answer: `FsResponse::Extracted`.
    ExtractUpload { transfer_id: String, destination: String },
    /// Build a tar of `path` (a directory's children, or one file/symlink under its
    /// basename) into a transfer file. Answer: `FsResponse::Exported`.
    Export { path: String },
    /// Read a range of a transfer file. Answer: `FsResponse::Data`.
    ReadTransfer { transfer_id: String, offset: u64, len: u64 },
    /// Delete a transfer file (upload or export). Answer: `Ok`.
    DiscardTransfer { transfer_id: String },
    /// List `path` (lstat; never follows symlinks). Answer: `FsResponse::Listing`.
    List { path: String, recursive: bool },
    /// Read up to `max_bytes` of a regular file. Answer: `FsResponse::FileData`.
    Read { path: String, max_bytes: u64 },
    /// Write a regular file atomically (temp + rename), creating parents; keeps an existing
    /// file's mode, new files get 0644; refuses symlinked parents and non-file targets.
    /// Answer: `FsResponse::Written`.
    Write {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Remove a file or symlink (never a directory). Answer: `Ok`.
    Delete { path: String },
    /// Replace the contents of `/run/pyro-secrets` (tmpfs, dir 0700) with these files (0600).
    /// Answer: `Ok`.
    InstallSecrets { secrets: Vec<SecretFile> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretFile {
    /// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`, checked again by the agent.
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FsResponse {
    Extracted {
        destination: String,
        entry_count: u64,
        bytes_written: u64,
    },
    Exported {
        transfer_id: String,
        size: u64,
        /// `file`, `directory` or `symlink`.
        artifact_type: String,
        entry_count: u64,
        bytes_written: u64,
    },
    Data {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Listing {
        path: String,
        artifact_type: String,
        entries: Vec<FileEntry>,
    },
    FileData {
        path: String,
        size_bytes: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Written {
        path: String,
        size_bytes: u64,
        bytes_written: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute guest path.
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub artifact_type: String,
    /// 0 for directories; lstat size otherwise.
    pub size_bytes: u64,
    pub link_target: Option<String>,
}
