//! Environments as OCI artifacts: pushing an install to a registry and installing one from
//! a registry (`PYRO_ENV_REGISTRY`, or a reference given to `env pull`).
//!
//! pyro's layout: an OCI image manifest with `artifactType`
//! `application/vnd.pyro.environment.v1`, a JSON config of media type
//! `application/vnd.pyro.environment.config.v1+json` (name, version, platform, kernel
//! release, packages, recipe digest, rootfs sizes), and two tar+zstd layers titled `kernel`
//! (`vmlinux`, `modules/order`, `modules/*.ko`) and `rootfs` (`rootfs.ext4`, sparse). Packing
//! is deterministic, so an unchanged install pushes the same digests and the registry
//! already has every blob.
//!
//! The reference's layout: any other image whose layers (tar, tar+gzip, tar+zstd) hold a
//! `vmlinux` and a `rootfs.ext4` somewhere. The kernel release comes from the kernel's
//! banner and the virtio modules from the rootfs's `/lib/modules/<release>`, read through
//! pyro-diskimage without mounting anything.
//!
//! Nothing from a registry becomes a host path except through a fixed mapping (`vmlinux`,
//! `rootfs.ext4`, `modules/<checked name>`), every member is bounded before it is written,
//! and everything lands in the caller's staging dir, which is published only when complete.

use super::{
    build, EnvError, EnvStore, EnvironmentSpec, InstalledEnvironment, Manifest, PushedEnvironment, PushedLayer,
    CATALOG_VERSION, ENVIRONMENT_VERSION, MANIFEST_FILE, PLATFORM,
};
use crate::{Error, Progress, Result};
use pyro_oci::layer::{self, Extract, LayerFile, PackedLayer};
use pyro_oci::registry::{BlobPush, BlobStore, Descriptor, Reference, Registry, ResolvedManifest};
use pyro_oci::{ByteProgress, OciError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Media type of the image manifest pyro pushes.
pub(super) const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `artifactType` of pyro's environment images.
pub(super) const ARTIFACT_TYPE: &str = "application/vnd.pyro.environment.v1";
/// Media type of pyro's config blob.
pub(super) const CONFIG_MEDIA_TYPE: &str = "application/vnd.pyro.environment.config.v1+json";
/// The annotation naming a layer (`kernel`, `rootfs`).
const TITLE: &str = "org.opencontainers.image.title";

const MAX_KERNEL_BYTES: u64 = 256 << 20;
const MAX_MODULE_BYTES: u64 = build::MAX_MODULE_BYTES;
const MAX_MODULES: usize = 256;
const MAX_ORDER_BYTES: u64 = 64 << 10;
/// Apparent size; the allocated size is checked against free disk.
const MAX_ROOTFS_BYTES: u64 = 64 << 30;
/// What a guest file read from the rootfs image may be (modules.dep, one module).
const MAX_ROOTFS_READ: u64 = 16 << 20;

/// The config blob of pyro's layout. Field order is the serialization order, so the same
/// install gives the same bytes and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EnvironmentConfig {
    /// Catalog name, e.g. `debian:12`.
    pub name: String,
    /// Environment version (`1.0.0`).
    pub version: String,
    /// `linux-x86_64`.
    pub platform: String,
    /// `linux`, as in OCI image configs.
    pub os: String,
    /// `amd64`, as in OCI image configs.
    pub architecture: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Debian packages in the rootfs.
    pub packages: Vec<String>,
    /// The install's source digest (for a local build: sha256 over recipe, suite, packages).
    pub recipe_digest: String,
    /// Catalog version it was built under.
    pub catalog_version: String,
    /// Apparent size of `rootfs.ext4`.
    pub rootfs_apparent_bytes: u64,
    /// Allocated size of `rootfs.ext4` (what a pull needs on disk).
    pub rootfs_allocated_bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDescriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: ManifestDescriptor<'a>,
    layers: Vec<ManifestDescriptor<'a>>,
}

/// The registry from `PYRO_ENV_REGISTRY`, when set and non-blank: a host with optional
/// port and optional path prefix, e.g. `127.0.0.1:5000` or `ghcr.io/team`.
pub(crate) fn configured_registry() -> Option<String> {
    std::env::var("PYRO_ENV_REGISTRY")
        .ok()
        .map(|r| r.trim().trim_end_matches('/').to_string())
        .filter(|r| !r.is_empty())
}

/// Where `spec` lives under a configured registry: `<registry>/<catalog repository>:<version>`,
/// e.g. `127.0.0.1:5000/thalesmaciel/pyro-environment-debian-12:1.0.0`.
pub(super) fn default_reference(registry: &str, spec: &EnvironmentSpec) -> String {
    format!("{registry}/{}:{ENVIRONMENT_VERSION}", spec.oci_repository)
}

/// Check that `reference` parses, with an [`Error::InvalidInput`] saying what is allowed.
pub(super) fn check_reference(reference: &str) -> Result<()> {
    pyro_oci::registry::Reference::parse(reference).map(|_| ()).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// A registry or layer failure as the engine's error: a bad reference is the caller's
/// input, a missing image is not-found, the rest keeps its cause under `context`.
fn oci_error(context: &str, e: OciError) -> Error {
    match e {
        OciError::InvalidReference { .. } => Error::InvalidInput(e.to_string()),
        OciError::NotFound { .. } => Error::NotFound(format!("{context}: {e}")),
        e => EnvError::Registry { context: context.to_string(), source: e }.into(),
    }
}

fn artifact(context: &str, message: String) -> Error {
    oci_error(context, OciError::Artifact(message))
}

/// Run a registry future from this (blocking) thread: on the engine's runtime when there
/// is one, else on a small runtime of its own (tests, synchronous callers).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(f)),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting an async runtime for the registry client", e))?;
            Ok(rt.block_on(f))
        }
    }
}

/// Byte progress mapped onto `stage` at overall fractions `from..to`, one event per percent.
fn byte_progress(progress: &Progress, stage: &'static str, what: String, from: f64, to: f64) -> ByteProgress {
    let progress = progress.clone();
    let last = Arc::new(AtomicU64::new(u64::MAX));
    ByteProgress::new(move |done, total| {
        let Some(total) = total.filter(|t| *t > 0) else { return };
        let pct = (done.min(total) * 100 / total).min(100);
        if last.swap(pct, Ordering::Relaxed) != pct {
            let f = from + (to - from) * pct as f64 / 100.0;
            progress.report(stage, format!("{what}: {} of {} MiB", done >> 20, total >> 20), Some(f));
        }
    })
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|source| Error::Unreadable { what: format!("manifest {}", path.display()), source })
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// An install packed as pyro's layout: the config blob and the two layers.
#[derive(Debug, Clone)]
pub(super) struct PackedInstall {
    /// The config JSON.
    pub config: Vec<u8>,
    /// `kernel` layer.
    pub kernel: PackedLayer,
    /// `rootfs` layer.
    pub rootfs: PackedLayer,
}

impl PackedInstall {
    /// Descriptors of config, kernel and rootfs, in that order, with their titles.
    pub fn descriptors(&self) -> (Descriptor, Vec<Descriptor>) {
        let config = Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&self.config))),
            size: self.config.len() as u64,
            annotations: BTreeMap::new(),
        };
        let layer = |title: &str, p: &PackedLayer| Descriptor {
            media_type: p.media_type.clone(),
            digest: p.digest.clone(),
            size: p.size,
            annotations: BTreeMap::from([(TITLE.to_string(), title.to_string())]),
        };
        (config, vec![layer("kernel", &self.kernel), layer("rootfs", &self.rootfs)])
    }
}

/// The OCI image manifest of pyro's layout.
pub(super) fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    fn d(d: &Descriptor) -> ManifestDescriptor<'_> {
        ManifestDescriptor { media_type: &d.media_type, digest: &d.digest, size: d.size, annotations: &d.annotations }
    }
    let m = ImageManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        artifact_type: ARTIFACT_TYPE,
        config: d(config),
        layers: layers.iter().map(d).collect(),
    };
    serde_json::to_vec(&m).expect("serializing plain structs")
}

/// Pack `installed` into `work_dir` as pyro's layout. Layers packed earlier for the same
/// install (same install time, source digest and file sizes and mtimes) are reused, so a
/// second push compresses nothing; packed layers of other installs of this environment are
/// deleted.
pub(super) fn pack_install(
    installed: &InstalledEnvironment,
    manifest: &Manifest,
    work_dir: &Path,
    progress: &Progress,
) -> Result<PackedInstall> {
    use std::os::unix::fs::MetadataExt;
    let ctx = format!("packing {}", installed.name);
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(format!("creating {}", work_dir.display()), e))?;
    let order_path = installed.modules_dir.join("order");
    let mut kernel_files = vec![
        LayerFile { name: "vmlinux".into(), source: installed.kernel_image.clone() },
        LayerFile { name: "modules/order".into(), source: order_path },
    ];
    let mut modules: Vec<String> = std::fs::read_dir(&installed.modules_dir)
        .map_err(|e| Error::io(format!("reading {}", installed.modules_dir.display()), e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "order" && valid_module_name(n))
        .collect();
    modules.sort();
    kernel_files.extend(
        modules.iter().map(|m| LayerFile { name: format!("modules/{m}"), source: installed.modules_dir.join(m) }),
    );
    let rootfs_files = vec![LayerFile { name: "rootfs.ext4".into(), source: installed.rootfs_image.clone() }];

    // What identifies this install's packed layers: any change to a file changes its size
    // or mtime, a reinstall changes installed_at.
    let mut key = Sha256::new();
    key.update(format!("{}\0{}\0{}\0", manifest.name, manifest.installed_at, manifest.source_digest));
    let mut rootfs_meta = None;
    for f in kernel_files.iter().chain(&rootfs_files) {
        let m = std::fs::metadata(&f.source).map_err(|e| Error::io(format!("reading {}", f.source.display()), e))?;
        key.update(format!(
            "{}\0{}\0{}\0",
            f.name,
            m.len(),
            m.mtime_nsec() as i128 + m.mtime() as i128 * 1_000_000_000
        ));
        if f.name == "rootfs.ext4" {
            rootfs_meta = Some(m);
        }
    }
    let key = hex::encode(key.finalize());
    let prefix = format!("{}-", super::dir_name(&installed.name));
    let stem = format!("{prefix}{}", &key[..16]);
    // Packed layers of earlier installs: never pushed again, up to GBs.
    if let Ok(rd) = std::fs::read_dir(work_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && !n.starts_with(&stem) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let pack_one = |title: &str, files: &[LayerFile], from: f64, to: f64| -> Result<PackedLayer> {
        let out = work_dir.join(format!("{stem}-{title}.tar.zst"));
        if out.is_file() {
            progress.report("pack", format!("reusing the packed {title} layer"), Some(from));
            let size = std::fs::metadata(&out).map_err(|e| Error::io(format!("reading {}", out.display()), e))?.len();
            return Ok(PackedLayer {
                digest: sha256_file(&out)?,
                path: out,
                size,
                media_type: layer::MEDIA_TYPE_TAR_ZSTD.into(),
            });
        }
        let bp = byte_progress(progress, "pack", format!("packing the {title} layer"), from, to);
        layer::pack(files, &out, &bp).map_err(|e| oci_error(&ctx, e))
    };
    progress.report("pack", format!("packing {} (kernel and {} modules)", installed.name, modules.len()), Some(0.0));
    let kernel = pack_one("kernel", &kernel_files, 0.0, 0.05)?;
    let rootfs = pack_one("rootfs", &rootfs_files, 0.05, 0.5)?;
    let rootfs_meta = rootfs_meta.expect("rootfs listed");
    let config = EnvironmentConfig {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        platform: PLATFORM.into(),
        os: "linux".into(),
        architecture: "amd64".into(),
        kernel_release: manifest.kernel_release.clone(),
        packages: manifest.packages.clone(),
        recipe_digest: manifest.source_digest.clone(),
        catalog_version: manifest.catalog_version.clone(),
        rootfs_apparent_bytes: rootfs_meta.len(),
        rootfs_allocated_bytes: rootfs_meta.blocks() * 512,
    };
    let config = serde_json::to_vec(&config).expect("serializing a plain struct");
    Ok(PackedInstall { config, kernel, rootfs })
}

/// Publish `installed` as the image `reference`.
pub(super) fn push(
    store: &EnvStore,
    spec: &EnvironmentSpec,
    installed: &InstalledEnvironment,
    reference: &str,
    progress: &Progress,
) -> Result<PushedEnvironment> {
    let ctx = format!("pushing {} to {reference}", spec.name);
    let r = Reference::parse(reference).map_err(|e| oci_error(&ctx, e))?;
    let manifest = read_manifest(&installed.install_dir)?;
    let work = store.cache_dir.join("oci").join("packed");
    let packed = pack_install(installed, &manifest, &work, progress)?;
    let (config_desc, layer_descs) = packed.descriptors();
    let config_path = work.join(format!("{}-config.json", super::dir_name(spec.name)));
    pyro_sys::fs::write_atomic(&config_path, &packed.config)
        .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
    let blobs = [
        ("config", config_path.clone(), config_desc.clone()),
        ("kernel", packed.kernel.path.clone(), layer_descs[0].clone()),
        ("rootfs", packed.rootfs.path.clone(), layer_descs[1].clone()),
    ];
    let body = manifest_json(&config_desc, &layer_descs);
    let registry = Registry::new(&r).map_err(|e| oci_error(&ctx, e))?;
    let total: u64 = blobs.iter().map(|b| b.2.size).sum::<u64>().max(1);
    let result = block_on(async {
        let mut layers = Vec::new();
        let mut done = 0u64;
        for (title, path, desc) in &blobs {
            let from = 0.5 + 0.45 * done as f64 / total as f64;
            let to = 0.5 + 0.45 * (done + desc.size) as f64 / total as f64;
            progress.report("upload", format!("{title} blob {} ({} bytes)", desc.digest, desc.size), Some(from));
            let bp = byte_progress(progress, "upload", format!("uploading {title}"), from, to);
            let pushed = registry.push_blob(&r, path, desc, &bp).await?;
            if pushed == BlobPush::Present {
                progress.report("upload", format!("the registry already has the {title} blob"), Some(to));
            }
            done += desc.size;
            layers.push(PushedLayer {
                title: title.to_string(),
                media_type: desc.media_type.clone(),
                digest: desc.digest.clone(),
                size: desc.size,
                uploaded: pushed == BlobPush::Uploaded,
            });
        }
        progress.report("manifest", format!("putting the manifest under {}", r.whole()), Some(0.96));
        let digest = registry.push_manifest(&r, MANIFEST_MEDIA_TYPE, &body).await?;
        Ok::<_, OciError>((layers, digest))
    })?;
    let (layers, digest) = result.map_err(|e| oci_error(&ctx, e))?;
    let _ = std::fs::remove_file(&config_path);
    progress.report("manifest", format!("pushed {} as {}@{digest}", spec.name, r.whole()), Some(1.0));
    let uploaded: Vec<&PushedLayer> = layers.iter().filter(|l| l.uploaded).collect();
    Ok(PushedEnvironment {
        name: spec.name.to_string(),
        reference: r.whole(),
        digest,
        uploaded_count: uploaded.len(),
        uploaded_bytes: uploaded.iter().map(|l| l.size).sum(),
        layers,
    })
}

/// The pyro config of `resolved`, checked against `spec`; `None` for another layout.
fn pyro_config(spec: &EnvironmentSpec, resolved: &ResolvedManifest, ctx: &str) -> Result<Option<EnvironmentConfig>> {
    if resolved.config.media_type != CONFIG_MEDIA_TYPE {
        return Ok(None);
    }
    let c: EnvironmentConfig = serde_json::from_slice(&resolved.config_bytes)
        .map_err(|e| artifact(ctx, format!("the environment config does not parse: {e}")))?;
    if c.name != spec.name {
        return Err(artifact(ctx, format!("the image holds environment {}, not {}", c.name, spec.name)));
    }
    if c.version != ENVIRONMENT_VERSION {
        return Err(artifact(
            ctx,
            format!(
                "the image holds {} version {}, this pyro installs version {ENVIRONMENT_VERSION}",
                c.name, c.version
            ),
        ));
    }
    if c.platform != PLATFORM {
        return Err(oci_error(
            ctx,
            OciError::Platform { reference: format!("the image of {}", c.name), found: c.platform.clone() },
        ));
    }
    if !valid_release(&c.kernel_release) {
        return Err(artifact(
            ctx,
            format!("the config's kernel release {:?} is not a kernel release", c.kernel_release),
        ));
    }
    if c.rootfs_apparent_bytes > MAX_ROOTFS_BYTES {
        return Err(oci_error(
            ctx,
            OciError::TooLarge { what: "rootfs.ext4".into(), size: c.rootfs_apparent_bytes, limit: MAX_ROOTFS_BYTES },
        ));
    }
    Ok(Some(c))
}

fn title(d: &Descriptor) -> Option<&str> {
    d.annotations.get(TITLE).map(String::as_str)
}

/// The layers to download: pyro's `kernel` and `rootfs`, or every tar layer of another layout.
pub(super) fn layers_to_fetch(
    spec: &EnvironmentSpec,
    resolved: &ResolvedManifest,
    ctx: &str,
) -> Result<Vec<Descriptor>> {
    let layers: Vec<Descriptor> = if pyro_config(spec, resolved, ctx)?.is_some() {
        let mut out = Vec::new();
        for want in ["kernel", "rootfs"] {
            let l =
                resolved.layers.iter().find(|l| title(l) == Some(want)).ok_or_else(|| {
                    artifact(ctx, format!("the image has no layer titled '{want}' ({TITLE} annotation)"))
                })?;
            out.push(l.clone());
        }
        out
    } else {
        let tars: Vec<Descriptor> = resolved.layers.iter().filter(|l| l.media_type.contains("tar")).cloned().collect();
        if tars.is_empty() {
            let types: Vec<&str> = resolved.layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(artifact(ctx, format!("the image has no tar layer (layer media types: {})", types.join(", "))));
        }
        tars
    };
    for l in &layers {
        if l.size > MAX_ROOTFS_BYTES {
            return Err(oci_error(
                ctx,
                OciError::TooLarge { what: format!("layer {}", l.digest), size: l.size, limit: MAX_ROOTFS_BYTES },
            ));
        }
    }
    Ok(layers)
}

/// What an unpacked image says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unpacked {
    /// `uname -r` of its kernel.
    pub kernel_release: String,
    /// Debian packages (empty for another layout).
    pub packages: Vec<String>,
}

/// Fill `stage` with `vmlinux`, `modules/` and `rootfs.ext4` from the downloaded `blobs`
/// (the layers [`layers_to_fetch`] chose, with their paths).
pub(super) fn unpack_into_stage(
    spec: &EnvironmentSpec,
    resolved: &ResolvedManifest,
    blobs: &[(Descriptor, PathBuf)],
    stage: &Path,
    progress: &Progress,
    ctx: &str,
) -> Result<Unpacked> {
    match pyro_config(spec, resolved, ctx)? {
        Some(config) => unpack_pyro(&config, blobs, stage, progress, ctx),
        None => unpack_reference(blobs, stage, progress, ctx),
    }
}

/// A module file name from an artifact: one plain component, not hidden.
fn valid_module_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && !n.contains('/') && !n.starts_with('.') && !n.contains('\0')
}

/// A kernel release as `uname -r` prints it.
fn valid_release(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 64
        && !r.starts_with('.')
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

fn free_disk_check(dir: &Path, need: u64, what: &str, ctx: &str) -> Result<()> {
    if let Some(free) = build::free_bytes(dir) {
        if free < need {
            return Err(oci_error(
                ctx,
                OciError::NoSpace {
                    dir: dir.display().to_string(),
                    detail: format!("{what} needs {} MiB, {} MiB are free", need >> 20, free >> 20),
                },
            ));
        }
    }
    Ok(())
}

fn unpack_pyro(
    config: &EnvironmentConfig,
    blobs: &[(Descriptor, PathBuf)],
    stage: &Path,
    progress: &Progress,
    ctx: &str,
) -> Result<Unpacked> {
    let blob = |t: &str| {
        blobs
            .iter()
            .find(|(d, _)| title(d) == Some(t))
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| artifact(ctx, format!("the image has no layer titled '{t}'")))
    };
    let mut modules = 0usize;
    let mut bad_name: Option<String> = None;
    let mut select = |m: &str| -> Option<Extract> {
        match m {
            "vmlinux" => Some(Extract { dest: "vmlinux".into(), max_bytes: MAX_KERNEL_BYTES }),
            "modules/order" => Some(Extract { dest: "modules/order".into(), max_bytes: MAX_ORDER_BYTES }),
            _ => {
                let name = m.strip_prefix("modules/")?;
                if !valid_module_name(name) {
                    bad_name.get_or_insert_with(|| m.to_string());
                    return None;
                }
                modules += 1;
                if modules > MAX_MODULES {
                    return None;
                }
                Some(Extract { dest: Path::new("modules").join(name), max_bytes: MAX_MODULE_BYTES })
            }
        }
    };
    progress.report("unpack", "unpacking the kernel and modules", Some(0.80));
    layer::extract(blob("kernel")?, &mut select, stage, &ByteProgress::silent()).map_err(|e| oci_error(ctx, e))?;
    if let Some(bad) = bad_name {
        return Err(artifact(ctx, format!("the kernel layer has a module with an invalid name: {bad}")));
    }
    if modules > MAX_MODULES {
        return Err(artifact(
            ctx,
            format!("the kernel layer has {modules} modules; at most {MAX_MODULES} are accepted"),
        ));
    }
    for need in ["vmlinux", "modules/order"] {
        if !stage.join(need).is_file() {
            return Err(artifact(ctx, format!("the kernel layer has no {need}")));
        }
    }
    free_disk_check(stage, config.rootfs_allocated_bytes, "rootfs.ext4", ctx)?;
    let mut select =
        |m: &str| (m == "rootfs.ext4").then(|| Extract { dest: "rootfs.ext4".into(), max_bytes: MAX_ROOTFS_BYTES });
    let bp = byte_progress(progress, "unpack", "unpacking the root filesystem".into(), 0.82, 0.98);
    layer::extract(blob("rootfs")?, &mut select, stage, &bp).map_err(|e| oci_error(ctx, e))?;
    if !stage.join("rootfs.ext4").is_file() {
        return Err(artifact(ctx, "the rootfs layer has no rootfs.ext4".into()));
    }
    Ok(Unpacked { kernel_release: config.kernel_release.clone(), packages: config.packages.clone() })
}

/// The reference's layout: `vmlinux` and `rootfs.ext4` anywhere in any layer (later layers
/// win), the release from the kernel banner, the modules from the rootfs.
fn unpack_reference(blobs: &[(Descriptor, PathBuf)], stage: &Path, progress: &Progress, ctx: &str) -> Result<Unpacked> {
    const RAW_KERNEL: &str = ".vmlinux.from-image";
    let mut seen: Vec<String> = Vec::new();
    let mut members = 0usize;
    let (mut kernel, mut rootfs) = (None::<String>, None::<String>);
    for (i, (desc, path)) in blobs.iter().enumerate() {
        let f0 = 0.80 + 0.18 * i as f64 / blobs.len() as f64;
        let f1 = 0.80 + 0.18 * (i + 1) as f64 / blobs.len() as f64;
        progress.report("unpack", format!("searching layer {} for vmlinux and rootfs.ext4", desc.digest), Some(f0));
        let mut select = |m: &str| {
            members += 1;
            if seen.len() < 12 {
                seen.push(m.to_string());
            }
            match m.rsplit('/').next() {
                Some("vmlinux") => {
                    kernel = Some(m.to_string());
                    Some(Extract { dest: RAW_KERNEL.into(), max_bytes: MAX_KERNEL_BYTES })
                }
                Some("rootfs.ext4") => {
                    rootfs = Some(m.to_string());
                    Some(Extract { dest: "rootfs.ext4".into(), max_bytes: MAX_ROOTFS_BYTES })
                }
                _ => None,
            }
        };
        let bp = byte_progress(progress, "unpack", format!("reading layer {}", desc.digest), f0, f1);
        layer::extract(path, &mut select, stage, &bp).map_err(|e| oci_error(ctx, e))?;
    }
    let missing: Vec<&str> = [("vmlinux", &kernel), ("rootfs.ext4", &rootfs)]
        .iter()
        .filter(|(_, found)| found.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let more = if members > seen.len() { format!(", ... ({members} members)") } else { String::new() };
        let found = if seen.is_empty() { "no files".to_string() } else { seen.join(", ") + &more };
        return Err(artifact(
            ctx,
            format!("the image has no {} in its {} layer(s); found: {found}", missing.join(" and no "), blobs.len()),
        ));
    }
    let raw = stage.join(RAW_KERNEL);
    let vmlinux = stage.join("vmlinux");
    let head = super::read_at(&raw, 0, 4).unwrap_or_default();
    if head == b"\x7fELF" {
        std::fs::rename(&raw, &vmlinux).map_err(|e| Error::io(format!("renaming {}", raw.display()), e))?;
    } else {
        progress.report(
            "kernel",
            format!("{} is not an ELF; extracting the kernel from it", kernel.unwrap_or_default()),
            None,
        );
        build::extract_vmlinux(&raw, &vmlinux)?;
        let _ = std::fs::remove_file(&raw);
    }
    let release = kernel_release(&vmlinux).ok_or_else(|| {
        artifact(ctx, "the kernel has no 'Linux version <release>' banner; cannot tell its release".into())
    })?;
    derive_modules(&stage.join("rootfs.ext4"), &release, &stage.join("modules"), progress, ctx)?;
    Ok(Unpacked { kernel_release: release, packages: Vec::new() })
}

/// The release in the kernel's `Linux version <release> (...)` banner.
fn kernel_release(vmlinux: &Path) -> Option<String> {
    let data = std::fs::read(vmlinux).ok()?;
    const BANNER: &[u8] = b"Linux version ";
    let mut at = 0;
    while let Some(i) = data[at..].windows(BANNER.len()).position(|w| w == BANNER) {
        let start = at + i + BANNER.len();
        let end = data[start..].iter().take(65).position(|b| *b == b' ').map(|n| start + n);
        if let Some(end) = end {
            if let Ok(r) = std::str::from_utf8(&data[start..end]) {
                if valid_release(r) && r.as_bytes()[0].is_ascii_digit() {
                    return Some(r.to_string());
                }
            }
        }
        at = start;
    }
    None
}

/// The virtio modules for `release` from the rootfs image's `/lib/modules/<release>`, read
/// through pyro-diskimage into a scratch dir and then resolved, decompressed and ordered
/// as a local build does. A rootfs without that directory gets an empty `modules/order`
/// (its kernel must have virtio built in).
fn derive_modules(rootfs: &Path, release: &str, out: &Path, progress: &Progress, ctx: &str) -> Result<()> {
    let disk = pyro_diskimage::DiskImage::raw(rootfs);
    let read = |p: &str| pyro_diskimage::read(&disk, p, MAX_ROOTFS_READ);
    let mut found = None;
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let dir = format!("{base}/{release}");
        if let Ok((size, dep)) = read(&format!("{dir}/modules.dep")) {
            if size > MAX_ROOTFS_READ {
                return Err(artifact(ctx, format!("{dir}/modules.dep in rootfs.ext4 is {size} bytes; too large")));
            }
            found = Some((dir, dep));
            break;
        }
    }
    let Some((dir, dep)) = found else {
        std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
        std::fs::write(out.join("order"), "").map_err(|e| Error::io(format!("writing {}/order", out.display()), e))?;
        progress.report(
            "modules",
            format!("the image has no modules and its rootfs no /lib/modules/{release}: the kernel must have virtio built in"),
            None,
        );
        return Ok(());
    };
    progress.report("modules", format!("taking the virtio modules from the rootfs's {dir}"), Some(0.98));
    let dep = String::from_utf8_lossy(&dep).into_owned();
    let builtin = read(&format!("{dir}/modules.builtin"))
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let wanted = build::resolve_modules(&dep, &builtin, build::WANTED_MODULES)
        .map_err(|e| artifact(ctx, format!("{dir} in rootfs.ext4: {e}")))?;
    let scratch_parent = out.parent().unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".modules-")
        .tempdir_in(scratch_parent)
        .map_err(|e| Error::io(format!("creating a directory in {}", scratch_parent.display()), e))?;
    let write = |rel: &str, data: &[u8]| -> Result<()> {
        let p = scratch.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&p, data).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    };
    write("modules.dep", dep.as_bytes())?;
    write("modules.builtin", builtin.as_bytes())?;
    for rel in &wanted {
        // A modules.dep path becomes a path under the scratch dir only when plain.
        let plain =
            !rel.is_empty() && !rel.starts_with('/') && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !plain {
            return Err(artifact(ctx, format!("{dir}/modules.dep in rootfs.ext4 lists an invalid path {rel:?}")));
        }
        let (size, data) = read(&format!("{dir}/{rel}"))
            .map_err(|e| artifact(ctx, format!("reading {dir}/{rel} from rootfs.ext4: {e}")))?;
        if size > MAX_ROOTFS_READ {
            return Err(artifact(ctx, format!("{dir}/{rel} in rootfs.ext4 is {size} bytes; too large")));
        }
        write(rel, &data)?;
    }
    let names = build::collect_modules(scratch.path(), out)?;
    progress.report("modules", format!("modules in load order: {}", names.join(" ")), Some(0.99));
    Ok(())
}

/// Fill `stage` with `vmlinux`, `modules/` and `rootfs.ext4` from the image `reference` and
/// return the manifest to publish (source `oci://<registry>/<repository>@<digest>`) with the
/// downloaded blobs, for the caller to forget once the install is published.
/// Returns `None` when `current` already is that image (same manifest digest): nothing to do.
pub(super) fn fetch(
    store: &EnvStore,
    spec: &EnvironmentSpec,
    reference: &str,
    current: Option<&InstalledEnvironment>,
    stage: &Path,
    progress: &Progress,
) -> Result<Option<Fetched>> {
    let ctx = format!("pulling {} from {reference}", spec.name);
    let r = Reference::parse(reference).map_err(|e| oci_error(&ctx, e))?;
    let registry = Registry::new(&r).map_err(|e| oci_error(&ctx, e))?;
    progress.report("resolve", format!("resolving {}", r.whole()), Some(0.01));
    let resolved = block_on(registry.resolve(&r))?.map_err(|e| oci_error(&ctx, e))?;
    let source = format!("oci://{}/{}@{}", r.registry, r.repository, resolved.digest);
    if current.is_some_and(|c| c.source == source && c.source_digest == resolved.digest) {
        return Ok(None);
    }
    let layers = layers_to_fetch(spec, &resolved, &ctx)?;
    let blob_store = BlobStore { dir: store.cache_dir.join("oci").join("blobs") };
    std::fs::create_dir_all(&blob_store.dir)
        .map_err(|e| Error::io(format!("creating {}", blob_store.dir.display()), e))?;
    // Partial downloads already present count against this too; the registry client checks
    // the exact space as it writes.
    free_disk_check(&blob_store.dir, layers.iter().map(|l| l.size).sum(), "the download", &ctx)?;
    let total: u64 = layers.iter().map(|l| l.size).sum();
    progress.report(
        "download",
        format!("downloading {} layer(s), {} MiB, from {}", layers.len(), total >> 20, r.registry),
        Some(0.02),
    );
    let bp = byte_progress(progress, "download", "downloading".into(), 0.02, 0.80);
    let paths = block_on(registry.download(&r, &layers, &blob_store, &bp))?.map_err(|e| oci_error(&ctx, e))?;
    let blobs: Vec<(Descriptor, PathBuf)> = layers.into_iter().zip(paths).collect();
    let unpacked = unpack_into_stage(spec, &resolved, &blobs, stage, progress, &ctx)?;
    progress.report("install", format!("installing {} from {}", spec.name, r.whole()), Some(0.99));
    let manifest = Manifest {
        catalog_version: CATALOG_VERSION.into(),
        name: spec.name.into(),
        version: ENVIRONMENT_VERSION.into(),
        source,
        source_digest: resolved.digest,
        kernel_release: unpacked.kernel_release,
        installed_at: crate::util::now_secs(),
        packages: unpacked.packages,
    };
    Ok(Some(Fetched {
        manifest,
        downloads: Downloads { store: blob_store, digests: blobs.into_iter().map(|(d, _)| d.digest).collect() },
    }))
}

/// What [`fetch`] staged: the manifest to publish, and the verified blobs it came from.
pub(super) struct Fetched {
    pub(super) manifest: Manifest,
    pub(super) downloads: Downloads,
}

/// Verified blobs of one pull, kept until its install is published: a publish that fails
/// (a full disk at the fsync) leaves them for the next pull to reuse instead of downloading
/// again.
pub(super) struct Downloads {
    store: BlobStore,
    digests: Vec<String>,
}

impl Downloads {
    /// Delete the blobs once the install they made is published.
    pub(super) fn forget(self) {
        for d in &self.digests {
            self.store.remove(d);
        }
    }
}

/// Delete the layers `push` packed for `spec` (`<cache>/oci/packed/<dir>-*`). Call with
/// `spec`'s lock held.
pub(super) fn forget_packed(store: &EnvStore, spec: &EnvironmentSpec) {
    let work = store.cache_dir.join("oci").join("packed");
    let prefix = format!("{}-", super::dir_name(spec.name));
    if let Ok(rd) = std::fs::read_dir(&work) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Delete every downloaded blob, whole or `.partial`. Call with every environment's lock
/// held (no pull is using them).
pub(super) fn forget_blobs(store: &EnvStore) {
    let _ = super::remove_tree(&store.cache_dir.join("oci").join("blobs"));
}

#[cfg(test)]
mod tests {
    use super::super::{spec, validate_install};
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    /// The debian:12 install of the shared cache, when this machine has one.
    fn real_install() -> Option<InstalledEnvironment> {
        let cache = std::env::var("PYRO_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pyro".into());
        let store = EnvStore { cache_dir: cache.into() };
        let dir = store.install_dir("debian:12");
        let e = validate_install(&dir, Some(&super::super::dir_name("debian:12"))).ok();
        if e.is_none() {
            eprintln!("skipped: no debian:12 install under {}", dir.display());
        }
        e
    }

    fn resolved(config_media_type: &str, config_bytes: Vec<u8>, layers: Vec<Descriptor>) -> ResolvedManifest {
        ResolvedManifest {
            digest: format!("sha256:{}", "0".repeat(64)),
            media_type: MANIFEST_MEDIA_TYPE.into(),
            artifact_type: None,
            config: Descriptor {
                media_type: config_media_type.into(),
                digest: format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes))),
                size: config_bytes.len() as u64,
                annotations: BTreeMap::new(),
            },
            config_bytes,
            layers,
        }
    }

    fn sha(path: &Path) -> String {
        sha256_file(path).unwrap()
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    fn stage_manifest(stage: &Path, u: &Unpacked, source: &str) {
        let m = Manifest {
            catalog_version: CATALOG_VERSION.into(),
            name: "debian:12".into(),
            version: ENVIRONMENT_VERSION.into(),
            source: source.into(),
            source_digest: format!("sha256:{}", "0".repeat(64)),
            kernel_release: u.kernel_release.clone(),
            installed_at: 1,
            packages: u.packages.clone(),
        };
        std::fs::write(stage.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
    }

    #[test]
    fn pyro_layout_round_trip_of_a_real_install() {
        let Some(env) = real_install() else { return };
        let manifest = read_manifest(&env.install_dir).unwrap();
        let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let t = Instant::now();
        let packed = pack_install(&env, &manifest, work.path(), &Progress::silent()).unwrap();
        let pack_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "packed in {pack_secs:.1} s: kernel {} bytes, rootfs {} bytes (rootfs allocated {} bytes)",
            packed.kernel.size,
            packed.rootfs.size,
            allocated(&env.rootfs_image)
        );
        // A second pack reuses the layers: same digests, no recompression.
        let t = Instant::now();
        let again = pack_install(&env, &manifest, work.path(), &Progress::silent()).unwrap();
        eprintln!("second pack (reuse) in {:.1} s", t.elapsed().as_secs_f64());
        assert_eq!((&again.kernel.digest, &again.rootfs.digest), (&packed.kernel.digest, &packed.rootfs.digest));
        assert_eq!(again.config, packed.config);

        let (config, layers) = packed.descriptors();
        let body: serde_json::Value = serde_json::from_slice(&manifest_json(&config, &layers)).unwrap();
        assert_eq!(body["artifactType"], ARTIFACT_TYPE);
        assert_eq!(body["config"]["digest"], config.digest.as_str());
        assert_eq!(body["layers"][1]["annotations"][TITLE], "rootfs");

        let r = resolved(CONFIG_MEDIA_TYPE, packed.config.clone(), layers.clone());
        let s = spec("debian:12").unwrap();
        let fetch = layers_to_fetch(s, &r, "test").unwrap();
        assert_eq!(fetch, layers);
        let blobs =
            vec![(layers[0].clone(), packed.kernel.path.clone()), (layers[1].clone(), packed.rootfs.path.clone())];
        let stage = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let t = Instant::now();
        let u = unpack_into_stage(s, &r, &blobs, stage.path(), &Progress::silent(), "test").unwrap();
        eprintln!("unpacked in {:.1} s", t.elapsed().as_secs_f64());
        assert_eq!(u.kernel_release, env.kernel_release);
        assert_eq!(u.packages, manifest.packages);
        assert_eq!(sha(&stage.path().join("vmlinux")), sha(&env.kernel_image));
        assert_eq!(sha(&stage.path().join("rootfs.ext4")), sha(&env.rootfs_image));
        let names: Vec<_> = std::fs::read_dir(&env.modules_dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(names.len() > 2);
        for n in &names {
            assert_eq!(sha(&stage.path().join("modules").join(n)), sha(&env.modules_dir.join(n)), "{n:?}");
        }
        let (a, b) = (allocated(&stage.path().join("rootfs.ext4")), allocated(&env.rootfs_image));
        // Zero blocks the source has allocated become holes, so the pull may allocate less;
        // never more than 10% above the source.
        eprintln!("rootfs allocated: pulled {a} bytes, source {b} bytes");
        assert!(a <= b + b / 10 && a >= b / 2, "pulled rootfs allocates {a} bytes, the source {b}");
        stage_manifest(stage.path(), &u, "oci://x/y@sha256:0");
        validate_install(stage.path(), None).unwrap();
    }

    #[test]
    fn reference_layout_from_a_real_install_derives_modules_from_the_rootfs() {
        let Some(env) = real_install() else { return };
        let work = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let w = work.path();
        // An earlier gzip layer with a wrong kernel, a later zstd one that wins, a non-tar
        // blob that is skipped.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut b = tar::Builder::new(&mut gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o644);
            b.append_data(&mut h, "old/vmlinux", &b"junk"[..]).unwrap();
            b.finish().unwrap();
        }
        std::fs::write(w.join("l0"), gz.finish().unwrap()).unwrap();
        let l1 = layer::pack(
            &[
                LayerFile { name: "some/dir/vmlinux".into(), source: env.kernel_image.clone() },
                LayerFile { name: "images/rootfs.ext4".into(), source: env.rootfs_image.clone() },
            ],
            &w.join("l1"),
            &ByteProgress::silent(),
        )
        .unwrap();
        let desc = |mt: &str, digest: &str| Descriptor {
            media_type: mt.into(),
            digest: digest.into(),
            size: 1,
            annotations: BTreeMap::new(),
        };
        let layers = vec![
            desc("application/vnd.docker.image.rootfs.diff.tar.gzip", "sha256:l0"),
            desc("application/vnd.example.readme", "sha256:readme"),
            desc(layer::MEDIA_TYPE_TAR_ZSTD, &l1.digest),
        ];
        let r = resolved("application/vnd.oci.image.config.v1+json", b"{}".to_vec(), layers);
        let s = spec("debian:12").unwrap();
        let fetch = layers_to_fetch(s, &r, "test").unwrap();
        assert_eq!(fetch.iter().map(|d| d.digest.as_str()).collect::<Vec<_>>(), ["sha256:l0", l1.digest.as_str()]);
        let blobs = vec![(fetch[0].clone(), w.join("l0")), (fetch[1].clone(), l1.path.clone())];
        let stage = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let t = Instant::now();
        let u = unpack_into_stage(s, &r, &blobs, stage.path(), &Progress::silent(), "test").unwrap();
        eprintln!("reference layout unpacked in {:.1} s", t.elapsed().as_secs_f64());
        assert_eq!(u.kernel_release, env.kernel_release);
        assert_eq!(sha(&stage.path().join("vmlinux")), sha(&env.kernel_image));
        // The modules the rootfs yields are those a local build collected.
        let order = std::fs::read_to_string(stage.path().join("modules/order")).unwrap();
        assert_eq!(order, std::fs::read_to_string(env.modules_dir.join("order")).unwrap());
        for m in order.lines() {
            assert_eq!(sha(&stage.path().join("modules").join(m)), sha(&env.modules_dir.join(m)), "{m}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(stage.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        stage_manifest(stage.path(), &u, "oci://x/y@sha256:0");
        validate_install(stage.path(), None).unwrap();

        // Only the old layer: no rootfs, and the error names what the image has.
        let stage = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let e = unpack_into_stage(s, &r, &blobs[..1], stage.path(), &Progress::silent(), "test").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no rootfs.ext4") && msg.contains("old/vmlinux"), "{msg}");
    }

    #[test]
    fn hostile_pyro_images_are_refused() {
        let s = spec("debian:12").unwrap();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let config = |name: &str, platform: &str| {
            serde_json::to_vec(&EnvironmentConfig {
                name: name.into(),
                version: ENVIRONMENT_VERSION.into(),
                platform: platform.into(),
                os: "linux".into(),
                architecture: "amd64".into(),
                kernel_release: "6.1.0-1-amd64".into(),
                packages: vec![],
                recipe_digest: String::new(),
                catalog_version: CATALOG_VERSION.into(),
                rootfs_apparent_bytes: 1 << 20,
                rootfs_allocated_bytes: 1 << 20,
            })
            .unwrap()
        };
        let titled = |t: &str, digest: &str| Descriptor {
            media_type: layer::MEDIA_TYPE_TAR_ZSTD.into(),
            digest: digest.into(),
            size: 1,
            annotations: BTreeMap::from([(TITLE.to_string(), t.to_string())]),
        };
        let layers = vec![titled("kernel", "sha256:k"), titled("rootfs", "sha256:r")];
        let e =
            layers_to_fetch(s, &resolved(CONFIG_MEDIA_TYPE, config("debian:12-build", PLATFORM), layers.clone()), "t")
                .unwrap_err();
        assert!(e.to_string().contains("holds environment debian:12-build, not debian:12"), "{e}");
        let e =
            layers_to_fetch(s, &resolved(CONFIG_MEDIA_TYPE, config("debian:12", "linux-arm64"), layers.clone()), "t")
                .unwrap_err();
        assert!(e.to_string().contains("linux-arm64"), "{e}");
        let e = layers_to_fetch(s, &resolved(CONFIG_MEDIA_TYPE, b"{\"name\":1}".to_vec(), layers.clone()), "t")
            .unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
        let r = resolved(CONFIG_MEDIA_TYPE, config("debian:12", PLATFORM), layers[..1].to_vec());
        assert!(layers_to_fetch(s, &r, "t").unwrap_err().to_string().contains("titled 'rootfs'"));

        // A kernel layer with a hidden module name: refused, nothing kept under that name.
        let vm = w.join("vmlinux");
        std::fs::write(&vm, b"\x7fELF").unwrap();
        let k = layer::pack(
            &[
                LayerFile { name: "vmlinux".into(), source: vm.clone() },
                LayerFile { name: "modules/.evil".into(), source: vm.clone() },
            ],
            &w.join("k"),
            &ByteProgress::silent(),
        )
        .unwrap();
        let r = resolved(CONFIG_MEDIA_TYPE, config("debian:12", PLATFORM), layers.clone());
        let stage = w.join("stage");
        std::fs::create_dir(&stage).unwrap();
        let blobs = vec![(layers[0].clone(), k.path.clone()), (layers[1].clone(), k.path.clone())];
        let e = unpack_into_stage(s, &r, &blobs, &stage, &Progress::silent(), "t").unwrap_err();
        assert!(e.to_string().contains("invalid name: modules/.evil"), "{e}");
        assert!(!stage.join("modules/.evil").exists());
    }

    #[test]
    fn kernel_release_comes_from_the_banner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"xxLinux version %s\0Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists)").unwrap();
        assert_eq!(kernel_release(&p).as_deref(), Some("6.1.0-50-cloud-amd64"));
        std::fs::write(&p, b"Linux version ../../etc (x)").unwrap();
        assert_eq!(kernel_release(&p), None);
    }
}
