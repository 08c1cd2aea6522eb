//! OCI distribution for pyro environments.
//!
//! Two halves with one boundary between them:
//! - [`registry`]: talking to a registry. Image references, credentials (environment
//!   variables, the Docker config file), manifest resolution (OCI index, OCI manifest, Docker
//!   v2 manifest list and manifest; the `linux/amd64` entry of an index), blob downloads that
//!   are verified by digest while they stream, resume after a kill and run in parallel, and
//!   pushes that skip blobs the registry already has. The HTTP and token flow is oci-client's.
//! - [`layer`]: turning files into tar layers and back. Packing is deterministic (the same
//!   files give the same digest, so a second push uploads nothing) and reads holes of a
//!   sparse file without touching them; extraction takes only the members the caller selects,
//!   bounds every size before writing, and writes zero blocks as holes.
//!
//! Everything a registry sends is hostile input: sizes are bounded before allocation, names
//! never become host paths except through the caller's selection, every byte is verified
//! against a digest before anything counts as downloaded.

mod error;
pub mod layer;
pub mod registry;

pub use error::{OciError, Result};

use std::sync::Arc;

/// Progress of a byte transfer (download, upload, pack, extract): called with the bytes
/// done so far and the total when known. Cheap to clone; a silent one does nothing.
#[derive(Clone, Default)]
pub struct ByteProgress(Option<ByteSink>);

type ByteSink = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

impl ByteProgress {
    /// Calls `f(done, total)`, from whichever thread does the work.
    pub fn new(f: impl Fn(u64, Option<u64>) + Send + Sync + 'static) -> Self {
        ByteProgress(Some(Arc::new(f)))
    }

    /// Reports nothing.
    pub fn silent() -> Self {
        ByteProgress(None)
    }

    /// Report `done` of `total` bytes.
    pub fn report(&self, done: u64, total: Option<u64>) {
        if let Some(f) = &self.0 {
            f(done, total)
        }
    }
}

impl std::fmt::Debug for ByteProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ByteProgress(sink)" } else { "ByteProgress(silent)" })
    }
}
