//! Talking to an OCI registry: references, credentials, manifests, blobs.
//!
//! Pushes (HEAD, uploads, manifest PUT) go through oci-client. Everything a pull reads from
//! a registry is read here, over the same reqwest, because oci-client reads token answers,
//! manifests and error bodies whole: the token flow (`auth.rs`), manifest and blob GETs
//! (ranged for resumes) are bounded before anything is allocated. Also here: pyro's
//! reference grammar, credentials from the environment and the Docker config file,
//! linux/amd64 selection with a clear error, digest verification of every byte, resumable
//! parallel downloads into a [`BlobStore`], and errors a user can act on.

mod auth;
mod errors;
mod options;
mod reference;
mod select;
mod transfer;

pub use options::{docker_config_credentials, docker_config_credentials_with_helpers, Credentials, RegistryOptions};
pub use select::{check_config_platform, select_image, ImageChoice, ImageManifest, IndexEntry};

use crate::{ByteProgress, OciError, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest manifest (image or index) accepted from a registry.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest config blob accepted from a registry.
pub const MAX_CONFIG: u64 = 1 << 20;
/// Blobs downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;
/// Connecting to the registry gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer with no byte for this long is abandoned (the `.partial` stays for a resume).
const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// Media types of manifests pyro asks for and accepts.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list (the Docker form of an index).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker v2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

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
        reference::parse(text)
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
        // The digest comes from a registry: only the fixed form may become a file name.
        match digest.strip_prefix("sha256:") {
            Some(hex) if reference::is_sha256_digest(digest) => Ok(self.dir.join("sha256").join(hex)),
            _ => Err(OciError::Protocol(format!(
                "digest '{}' is not sha256: followed by 64 lowercase hex digits",
                digest.chars().take(100).collect::<String>()
            ))),
        }
    }

    /// Where the download of a blob lives until it is verified.
    pub fn partial_path(&self, digest: &str) -> Result<PathBuf> {
        let mut p = self.path(digest)?.into_os_string();
        p.push(".partial");
        Ok(PathBuf::from(p))
    }

    /// Delete a blob and its partial download, if any.
    pub fn remove(&self, digest: &str) {
        if let (Ok(p), Ok(q)) = (self.path(digest), self.partial_path(digest)) {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(q);
        }
    }
}

/// A client for one registry, with the credentials found for it.
pub struct Registry {
    /// Pushes only.
    client: oci_client::Client,
    /// Every read of a pull, bounded (same timeouts and TLS as `client`).
    http: reqwest::Client,
    scheme: &'static str,
    registry: String,
    auth: RegistryAuth,
    /// Where the credentials came from, or that there are none (for 401 messages).
    auth_source: Option<String>,
    /// `Authorization` per (repository, `pull`|`push`), see `auth.rs`.
    authz_cache: std::sync::Mutex<BTreeMap<(String, &'static str), Option<String>>>,
}

/// Blob GETs are often redirected to storage (S3, a CDN): at most 5 hops, and never from
/// https down to plain http. (reqwest drops `Authorization` when the host changes.)
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http" && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect from https to plain http ({to})"))
        } else if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// Whether `registry` (`host[:port]`) is a loopback host, reached over plain HTTP.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// Client for `reference.registry`. Plain HTTP is used for loopback hosts
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) and for hosts listed in
    /// `PYRO_REGISTRY_INSECURE` (comma-separated); HTTPS otherwise. Credentials:
    /// `PYRO_REGISTRY_USERNAME` + `PYRO_REGISTRY_PASSWORD`, else the Docker config file
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths.<registry>.auth`),
    /// else anonymous (with the registry's bearer token flow when it asks for one).
    pub fn new(reference: &Reference) -> Result<Registry> {
        Registry::with_options(reference, RegistryOptions::from_env(&reference.registry)?)
    }

    /// Client for `reference.registry` with explicit options (no environment read).
    pub fn with_options(reference: &Reference, options: RegistryOptions) -> Result<Registry> {
        let registry = reference.registry.clone();
        let insecure = is_loopback(&registry)
            || options.insecure_hosts.iter().any(|h| *h == registry || registry.split(':').next() == Some(h.as_str()));
        let scheme = if insecure { "http" } else { "https" };
        let config = ClientConfig {
            protocol: if insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            // A blob goes up in one streamed PUT (POST + PUT), not in 4 MiB PATCH requests.
            use_monolithic_push: true,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // An index is resolved here (linux/amd64 with pyro's error), never by the client.
            platform_resolver: None,
            user_agent: concat!("pyro/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config)
            .map_err(|e| OciError::Protocol(format!("cannot set up the HTTP client: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(redirect_policy())
            .user_agent(concat!("pyro/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Protocol(format!("cannot set up the HTTP client: {e}")))?;
        let (auth, auth_source) = match options.credentials {
            Some(c) => (RegistryAuth::Basic(c.username, c.password), Some(c.source)),
            None => (RegistryAuth::Anonymous, None),
        };
        Ok(Registry { client, http, scheme, registry, auth, auth_source, authz_cache: Default::default() })
    }

    /// Fetch and verify the manifest; for an index or manifest list pick the linux/amd64
    /// entry; fetch and verify the config blob.
    pub async fn resolve(&self, reference: &Reference) -> Result<ResolvedManifest> {
        transfer::resolve(self, reference).await
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
        transfer::download(self, reference, blobs, store, progress).await
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
        transfer::push_blob(self, reference, path, desc, progress).await
    }

    /// Put a manifest under `reference`'s tag; returns its digest.
    pub async fn push_manifest(&self, reference: &Reference, media_type: &str, bytes: &[u8]) -> Result<String> {
        transfer::push_manifest(self, reference, media_type, bytes).await
    }
}
