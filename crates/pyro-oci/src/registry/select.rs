//! Reading manifest documents a registry sent: image manifest or index, the linux/amd64
//! entry of an index, the descriptors of an image, the platform an image config names.
//! Pure functions of bytes, so that they can be fuzzed and tested without a registry.

use super::reference::is_sha256_digest;
use super::{Descriptor, DOCKER_LIST, DOCKER_MANIFEST, MAX_CONFIG, MAX_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::{OciError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// pyro's own config media type; it carries `os`/`architecture` like an image config.
const PYRO_CONFIG: &str = "application/vnd.pyro.environment.config.v1+json";
/// Config media types whose `os`/`architecture` pyro checks.
const JSON_CONFIGS: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json", PYRO_CONFIG];

/// What a manifest document leads to (see [`select_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    /// An image manifest: its checked descriptors.
    Image(ImageManifest),
    /// An index or manifest list: its linux/amd64 entry, the manifest to fetch next.
    Follow(IndexEntry),
}

/// The parts of an image manifest pyro uses, each descriptor checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// [`OCI_MANIFEST`] or [`DOCKER_MANIFEST`].
    pub media_type: String,
    /// `artifactType` of an OCI manifest, when set.
    pub artifact_type: Option<String>,
    /// The config descriptor (size at most [`MAX_CONFIG`]).
    pub config: Descriptor,
    /// The layers, in manifest order.
    pub layers: Vec<Descriptor>,
}

/// The linux/amd64 entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Digest of the image manifest (`sha256:<64 hex>`).
    pub digest: String,
    /// Its size (at most [`MAX_MANIFEST`]).
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    digest: String,
    size: u64,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

fn is_amd64(arch: &str) -> bool {
    arch == "amd64" || arch == "x86_64"
}

impl RawDescriptor {
    fn into_descriptor(self, what: &str) -> Result<Descriptor> {
        if !is_sha256_digest(&self.digest) {
            return Err(OciError::Protocol(format!(
                "{what} has digest '{}', not sha256: followed by 64 lowercase hex digits",
                self.digest.chars().take(100).collect::<String>()
            )));
        }
        Ok(Descriptor {
            media_type: self.media_type,
            digest: self.digest,
            size: self.size,
            annotations: self.annotations.unwrap_or_default(),
        })
    }
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<RawManifest> {
    let m: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| OciError::Protocol(format!("{what} is not a manifest (JSON): {e}")))?;
    if m.schema_version != Some(2) {
        return Err(OciError::Protocol(format!(
            "{what} has schemaVersion {:?}; pyro reads schema 2 manifests only",
            m.schema_version
        )));
    }
    Ok(m)
}

/// Read a manifest document: an image manifest (OCI or Docker v2) gives its checked
/// descriptors, an index (OCI index or Docker manifest list) gives its linux/amd64 entry.
///
/// `content_type` is the response's Content-Type without parameters; the document's own
/// `mediaType` wins over it, and a document with `manifests` but no `config` is an index
/// whatever it says. `what` names the document in errors (e.g. `manifest reg/repo:tag`),
/// `reference` is what the user pulled (for the platform error). `follow_index` is false for
/// a manifest reached through an index: pyro takes one level, so an index there is an error.
///
/// Errors: not JSON or not schema 2, no linux/amd64 entry ([`OciError::Platform`], listing
/// what the index offers), a digest that is not `sha256:<64 hex>`, an entry larger than
/// [`MAX_MANIFEST`] or a config larger than [`MAX_CONFIG`] ([`OciError::TooLarge`]), a media
/// type pyro does not read, no config descriptor.
pub fn select_image(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
    reference: &str,
    follow_index: bool,
) -> Result<ImageChoice> {
    let manifest = parse_manifest(bytes, what)?;
    let media_type = manifest.media_type.clone().or(content_type.map(str::to_string));
    let is_index = matches!(media_type.as_deref(), Some(OCI_INDEX) | Some(DOCKER_LIST))
        || (manifest.manifests.is_some() && manifest.config.is_none());
    if is_index {
        if !follow_index {
            return Err(OciError::Protocol(format!("{what} is an index inside an index; pyro takes one level")));
        }
        return select_entry(manifest.manifests.unwrap_or_default(), reference).map(ImageChoice::Follow);
    }
    image_descriptors(manifest, media_type, what).map(ImageChoice::Image)
}

/// The first linux/amd64 entry of an index, checked.
fn select_entry(entries: Vec<RawEntry>, reference: &str) -> Result<IndexEntry> {
    let chosen =
        entries.iter().find(|e| e.platform.as_ref().is_some_and(|p| p.os == "linux" && is_amd64(&p.architecture)));
    let Some(entry) = chosen else {
        let found: Vec<String> = entries
            .iter()
            .map(|e| match &e.platform {
                Some(p) => match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                },
                None => "unspecified platform".into(),
            })
            .collect();
        let found = if found.is_empty() { "an empty index".to_string() } else { found.join(", ") };
        return Err(OciError::Platform { reference: reference.to_string(), found });
    };
    if !is_sha256_digest(&entry.digest) {
        return Err(OciError::Protocol(format!("index entry of {reference} has a digest that is not sha256:<64 hex>")));
    }
    if entry.size > MAX_MANIFEST {
        return Err(OciError::TooLarge {
            what: format!("manifest {}", entry.digest),
            size: entry.size,
            limit: MAX_MANIFEST,
        });
    }
    Ok(IndexEntry { digest: entry.digest.clone(), size: entry.size })
}

/// The media type, config and layers of an image manifest, checked.
fn image_descriptors(mut manifest: RawManifest, media_type: Option<String>, what: &str) -> Result<ImageManifest> {
    let media_type = match media_type {
        Some(mt) if mt == OCI_MANIFEST || mt == DOCKER_MANIFEST => mt,
        // Some registries send a generic Content-Type; a manifest without mediaType is OCI's.
        None => OCI_MANIFEST.to_string(),
        Some(mt) if manifest.media_type.is_none() && (mt == "application/json" || mt == "application/octet-stream") => {
            OCI_MANIFEST.to_string()
        }
        Some(other) => {
            return Err(OciError::Protocol(format!(
                "{what} has media type {other}; pyro reads {OCI_MANIFEST}, {DOCKER_MANIFEST}, {OCI_INDEX} and {DOCKER_LIST}"
            )))
        }
    };
    let Some(config) = manifest.config.take() else {
        return Err(OciError::Protocol(format!("{what} has no config descriptor")));
    };
    let config = config.into_descriptor("config")?;
    let layers = manifest
        .layers
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.into_descriptor("layer"))
        .collect::<Result<Vec<_>>>()?;
    if config.size > MAX_CONFIG {
        return Err(OciError::TooLarge {
            what: format!("config {}", config.digest),
            size: config.size,
            limit: MAX_CONFIG,
        });
    }
    Ok(ImageManifest { media_type, artifact_type: manifest.artifact_type.take(), config, layers })
}

/// Check the platform an image config names. Configs of the OCI, Docker and pyro config
/// media types that name an `os` or an `architecture` must name linux and amd64 (or
/// x86_64); a config naming neither passes, as does a config of any other media type
/// (an artifact's config need not be JSON). `reference` names the image in the error.
///
/// Errors: such a config that is not JSON ([`OciError::Artifact`]), another platform
/// ([`OciError::Platform`]).
pub fn check_config_platform(reference: &str, config: &Descriptor, bytes: &[u8]) -> Result<()> {
    if !JSON_CONFIGS.contains(&config.media_type.as_str()) {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| OciError::Artifact(format!("config {} of {reference} is not JSON: {e}", config.digest)))?;
    let os = json.get("os").and_then(|v| v.as_str());
    let arch = json.get("architecture").and_then(|v| v.as_str());
    match (os, arch) {
        (None, None) => Ok(()),
        (Some("linux"), Some(a)) if is_amd64(a) => Ok(()),
        (os, arch) => Err(OciError::Platform {
            reference: reference.to_string(),
            found: format!(
                "{}/{} (from its config)",
                os.unwrap_or("unspecified os"),
                arch.unwrap_or("unspecified architecture")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn select(doc: &serde_json::Value, content_type: Option<&str>, follow: bool) -> Result<ImageChoice> {
        select_image(&serde_json::to_vec(doc).unwrap(), content_type, "manifest r/x:1", "r/x:1", follow)
    }

    fn image(config_size: u64) -> serde_json::Value {
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.pyro.environment.v1",
            "config": {"mediaType": PYRO_CONFIG, "digest": A, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": B, "size": 9,
                "annotations": {"org.opencontainers.image.title": "kernel"}}]})
    }

    #[test]
    fn image_manifest_gives_checked_descriptors() {
        let ImageChoice::Image(m) = select(&image(10), None, true).unwrap() else { panic!("not an image") };
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.pyro.environment.v1"));
        assert_eq!((m.config.digest.as_str(), m.config.size), (A, 10));
        assert_eq!(m.layers[0].annotations["org.opencontainers.image.title"], "kernel");

        let e = select(&image(MAX_CONFIG + 1), None, true).unwrap_err();
        assert!(matches!(e, OciError::TooLarge { size, .. } if size == MAX_CONFIG + 1), "{e}");
        let mut bad = image(10);
        bad["layers"][0]["digest"] = json!("sha256:../../etc/passwd");
        assert!(matches!(select(&bad, None, true).unwrap_err(), OciError::Protocol(ref m) if m.contains("layer")));
        let mut v1 = image(10);
        v1["schemaVersion"] = json!(1);
        assert!(select(&v1, None, true).unwrap_err().to_string().contains("schemaVersion"));
        // Without mediaType: the Content-Type decides, a generic one means OCI.
        let mut bare = image(10);
        bare.as_object_mut().unwrap().remove("mediaType");
        let ImageChoice::Image(m) = select(&bare, Some("application/json"), true).unwrap() else { panic!() };
        assert_eq!(m.media_type, OCI_MANIFEST);
        let ImageChoice::Image(m) = select(&bare, Some(DOCKER_MANIFEST), true).unwrap() else { panic!() };
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        assert!(select(&bare, Some("text/html"), true).unwrap_err().to_string().contains("text/html"));
    }

    #[test]
    fn index_gives_its_linux_amd64_entry_once() {
        let index = |arches: &[&str], size: u64| {
            let manifests: Vec<_> = arches
                .iter()
                .map(|a| {
                    json!({"mediaType": OCI_MANIFEST, "digest": if *a == "amd64" { B } else { A }, "size": size,
                    "platform": {"os": "linux", "architecture": a}})
                })
                .collect();
            json!({"schemaVersion": 2, "manifests": manifests})
        };
        let got = select(&index(&["arm64", "amd64"], 300), Some(OCI_INDEX), true).unwrap();
        assert_eq!(got, ImageChoice::Follow(IndexEntry { digest: B.into(), size: 300 }));
        // No mediaType, no Content-Type: `manifests` without `config` is an index.
        assert!(matches!(select(&index(&["amd64"], 3), None, true).unwrap(), ImageChoice::Follow(_)));
        match select(&index(&["arm64"], 3), None, true).unwrap_err() {
            OciError::Platform { reference, found } => {
                assert_eq!((reference.as_str(), found.as_str()), ("r/x:1", "linux/arm64"))
            }
            e => panic!("{e}"),
        }
        let e = select(&index(&["amd64"], MAX_MANIFEST + 1), None, true).unwrap_err();
        assert!(matches!(e, OciError::TooLarge { .. }), "{e}");
        // Reached through an index: another index is refused before any selection.
        let e = select(&index(&["arm64"], 3), None, false).unwrap_err();
        assert!(e.to_string().contains("index inside an index"), "{e}");
    }

    #[test]
    fn config_platform() {
        let desc =
            |mt: &str| Descriptor { media_type: mt.into(), digest: A.into(), size: 1, annotations: BTreeMap::new() };
        let pyro = desc(PYRO_CONFIG);
        assert!(check_config_platform("r", &pyro, br#"{"os":"linux","architecture":"amd64"}"#).is_ok());
        assert!(check_config_platform("r", &pyro, br#"{"os":"linux","architecture":"x86_64"}"#).is_ok());
        assert!(check_config_platform("r", &pyro, br#"{"name":"debian-12"}"#).is_ok());
        let e = check_config_platform("r", &pyro, br#"{"os":"linux","architecture":"arm64"}"#).unwrap_err();
        assert!(matches!(e, OciError::Platform { ref found, .. } if found.contains("linux/arm64")), "{e}");
        assert!(matches!(check_config_platform("r", &pyro, b"\xff").unwrap_err(), OciError::Artifact(_)));
        assert!(check_config_platform("r", &desc("application/octet-stream"), b"\xff").is_ok());
    }
}
