//! Talking to an OCI registry: references, credentials, manifests, blobs.
//!
//! SKELETON: the signatures are the shared interface; the bodies are being written.

use crate::{ByteProgress, OciError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]`, e.g. `127.0.0.1:5000/team/debian-12:1.0.0`.
/// The registry part is mandatory (pyro never guesses Docker Hub): `registry-1.docker.io/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host and optional port, e.g. `127.0.0.1:5000`, `ghcr.io`.
    pub registry: String,
    /// Repository path, e.g. `team/debian-12`.
    pub repository: String,
    /// Tag, when given (`latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// Digest, when given (`sha256:<64 hex>`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parse a reference; a clear error says what is wrong and what is allowed.
    pub fn parse(text: &str) -> Result<Reference> {
        Err(OciError::InvalidReference { reference: text.to_string(), reason: "not implemented yet".into() })
    }

    /// `registry/repository:tag` or `registry/repository@digest`.
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// A content descriptor (config or layer) of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type, e.g. `application/vnd.oci.image.layer.v1.tar+zstd`.
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations (e.g. `org.opencontainers.image.title`).
    pub annotations: BTreeMap<String, String>,
}

/// A manifest resolved to one linux/amd64 image.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Digest of the image manifest (not of the index it was selected from).
    pub digest: String,
    /// Media type of the image manifest (OCI or Docker v2).
    pub media_type: String,
    /// `artifactType` of an OCI manifest, when set.
    pub artifact_type: Option<String>,
    /// The config descriptor.
    pub config: Descriptor,
    /// The config blob, verified against its digest (bounded size).
    pub config_bytes: Vec<u8>,
    /// The layers, in manifest order.
    pub layers: Vec<Descriptor>,
}

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it already; nothing was sent.
    Present,
    /// It was uploaded.
    Uploaded,
}

/// A directory of downloaded blobs, `<dir>/sha256/<hex>` once verified and
/// `<dir>/sha256/<hex>.partial` while downloading (kept across a kill, so the next pull
/// resumes with a range request).
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// The directory.
    pub dir: PathBuf,
}

impl BlobStore {
    /// Where a verified blob lives.
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        let _ = digest;
        Err(OciError::Protocol("not implemented yet".into()))
    }

    /// Delete a blob and its partial download, if any.
    pub fn remove(&self, digest: &str) {
        let _ = digest;
    }
}

/// A client for one registry, with the credentials found for it.
pub struct Registry {
    _private: (),
}

impl Registry {
    /// Client for `reference.registry`. Plain HTTP is used for loopback hosts
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) and for hosts listed in
    /// `PYRO_REGISTRY_INSECURE` (comma-separated); HTTPS otherwise. Credentials:
    /// `PYRO_REGISTRY_USERNAME` + `PYRO_REGISTRY_PASSWORD`, else the Docker config file
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths.<registry>.auth`),
    /// else anonymous (with the registry's bearer token flow when it asks for one).
    pub fn new(reference: &Reference) -> Result<Registry> {
        let _ = reference;
        Err(OciError::Protocol("not implemented yet".into()))
    }

    /// Fetch and verify the manifest; for an index or manifest list pick the linux/amd64
    /// entry; fetch and verify the config blob.
    pub async fn resolve(&self, reference: &Reference) -> Result<ResolvedManifest> {
        let _ = reference;
        Err(OciError::Protocol("not implemented yet".into()))
    }

    /// Download `blobs` into `store` (up to 4 at once), each verified by digest while it
    /// streams; a `.partial` left by a killed pull is resumed. Returns the verified paths in
    /// the order of `blobs`. `progress` gets the bytes done over all blobs.
    pub async fn download(
        &self,
        reference: &Reference,
        blobs: &[Descriptor],
        store: &BlobStore,
        progress: &ByteProgress,
    ) -> Result<Vec<PathBuf>> {
        let _ = (reference, blobs, store, progress);
        Err(OciError::Protocol("not implemented yet".into()))
    }

    /// Upload the blob at `path` (whose digest and size `desc` gives) unless the registry
    /// has it already.
    pub async fn push_blob(
        &self,
        reference: &Reference,
        path: &Path,
        desc: &Descriptor,
        progress: &ByteProgress,
    ) -> Result<BlobPush> {
        let _ = (reference, path, desc, progress);
        Err(OciError::Protocol("not implemented yet".into()))
    }

    /// Put a manifest under `reference`'s tag; returns its digest.
    pub async fn push_manifest(&self, reference: &Reference, media_type: &str, bytes: &[u8]) -> Result<String> {
        let _ = (reference, media_type, bytes);
        Err(OciError::Protocol("not implemented yet".into()))
    }
}
