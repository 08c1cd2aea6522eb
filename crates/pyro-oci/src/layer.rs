//! Tar layers: packing files into a deterministic, compressed tar, and extracting selected
//! members from a (possibly hostile) layer.
//!
//! SKELETON: the signatures are the shared interface; the bodies are being written.

use crate::{ByteProgress, OciError, Result};
use std::path::{Path, PathBuf};

/// OCI media type of pyro's layers.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// One file to put in a layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// Path inside the tar (relative, `/`-separated), e.g. `modules/virtio_blk.ko`.
    pub name: String,
    /// The file on the host.
    pub source: PathBuf,
}

/// A packed layer blob on disk.
#[derive(Debug, Clone)]
pub struct PackedLayer {
    /// The compressed tar.
    pub path: PathBuf,
    /// `sha256:<hex>` of the compressed tar.
    pub digest: String,
    /// Size of the compressed tar.
    pub size: u64,
    /// Its media type ([`MEDIA_TYPE_TAR_ZSTD`]).
    pub media_type: String,
}

/// Pack `files` (in the given order) into a zstd-compressed tar at `out`. Deterministic:
/// headers carry no time, owner or host-specific mode; holes of sparse files are read as
/// zeros without reading the disk. `progress` gets input bytes consumed.
pub fn pack(files: &[LayerFile], out: &Path, progress: &ByteProgress) -> Result<PackedLayer> {
    let _ = (files, out, progress);
    Err(OciError::Artifact("not implemented yet".into()))
}

/// What to do with one tar member: where to write it (a plain relative path under the
/// destination dir, chosen by the caller) and the most bytes it may have.
#[derive(Debug, Clone)]
pub struct Extract {
    /// Relative destination path under the destination directory (no `..`, not absolute).
    pub dest: PathBuf,
    /// Largest size accepted for this member.
    pub max_bytes: u64,
}

/// A member that was extracted.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The member's normalized path in the tar (no leading `./` or `/`).
    pub member: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Its size (apparent; zero blocks are holes on disk).
    pub size: u64,
}

/// Extract the regular-file members of the layer blob at `blob` for which `select` returns
/// `Some`, into `dest_dir`. The compression (none, gzip, zstd) is detected from the blob's
/// first bytes, not trusted from a media type. Everything else in the tar is skipped
/// without being written. Zero 4 KiB blocks become holes. `progress` gets blob bytes read.
pub fn extract(
    blob: &Path,
    select: &mut dyn FnMut(&str) -> Option<Extract>,
    dest_dir: &Path,
    progress: &ByteProgress,
) -> Result<Vec<Extracted>> {
    let _ = (blob, select, dest_dir, progress);
    Err(OciError::Artifact("not implemented yet".into()))
}
