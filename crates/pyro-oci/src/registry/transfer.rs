//! Manifest resolution, blob downloads and uploads.

use super::auth::{error_body, read_bounded};
use super::errors::Ctx;
use super::reference::is_sha256_digest;
use super::select::{check_config_platform, select_image, ImageChoice, ImageManifest};
use super::{
    BlobPush, BlobStore, Descriptor, Reference, Registry, ResolvedManifest, DOCKER_LIST, DOCKER_MANIFEST, MAX_CONFIG,
    MAX_MANIFEST, OCI_INDEX, OCI_MANIFEST, PARALLEL_DOWNLOADS,
};
use crate::{ByteProgress, OciError, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use oci_client::errors::OciDistributionError;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn oref(reference: &Reference) -> oci_client::Reference {
    let (reg, repo) = (reference.registry.clone(), reference.repository.clone());
    match (&reference.tag, &reference.digest) {
        (_, Some(d)) => oci_client::Reference::with_digest(reg, repo, d.clone()),
        (Some(t), None) => oci_client::Reference::with_tag(reg, repo, t.clone()),
        (None, None) => oci_client::Reference::with_tag(reg, repo, "latest".into()),
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn digest_of(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A manifest as fetched: bytes (bounded), the Content-Type and Docker-Content-Digest headers.
struct Fetched {
    bytes: Vec<u8>,
    content_type: Option<String>,
    header_digest: Option<String>,
}

impl Registry {
    /// GET `url` with the authorization for `ctx`; a bearer token the registry refuses (it
    /// expired during a long pull) is renewed once.
    async fn get_authorized(
        &self,
        ctx: &Ctx<'_>,
        url: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<reqwest::Response> {
        let mut renewed = false;
        loop {
            let authz = self.authorization(ctx).await?;
            let mut req = self.http.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(a) = &authz {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| ctx.reqwest(&e))?;
            if resp.status().as_u16() == 401 && !renewed && authz.as_deref().is_some_and(|a| a.starts_with("Bearer ")) {
                self.forget_authorization(ctx);
                renewed = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// GET a manifest, refusing more than [`MAX_MANIFEST`] bytes before reading them
    /// (Content-Length) and while reading them (a registry may send no length or lie).
    async fn get_manifest(&self, ctx: &Ctx<'_>, tag_or_digest: &str) -> Result<Fetched> {
        let url = format!("{}://{}/v2/{}/manifests/{tag_or_digest}", self.scheme, self.registry, ctx.repository);
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let resp = self.get_authorized(ctx, &url, &[(reqwest::header::ACCEPT, accept)]).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = error_body(resp).await;
            if status.as_u16() == 404 || body.contains("MANIFEST_UNKNOWN") || body.contains("NAME_UNKNOWN") {
                return Err(ctx.not_found());
            }
            return Err(ctx.status(status.as_u16(), &body));
        }
        if status.as_u16() != 200 {
            return Err(OciError::Protocol(format!("registry answered HTTP {status} to GET {url} (expected 200)")));
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = header("content-type").map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        let header_digest = header("docker-content-digest");
        let bytes = read_bounded(ctx, resp, MAX_MANIFEST).await?.map_err(|size| OciError::TooLarge {
            what: ctx.what.clone(),
            size,
            limit: MAX_MANIFEST,
        })?;
        Ok(Fetched { bytes, content_type, header_digest })
    }

    /// GET a blob from byte `from` (a `Range` request when `from > 0`). Returns the answer
    /// and whether its body starts at byte 0 anyway (the registry ignored the range).
    async fn get_blob(&self, ctx: &Ctx<'_>, digest: &str, from: u64) -> Result<(reqwest::Response, bool)> {
        let url = format!("{}://{}/v2/{}/blobs/{digest}", self.scheme, self.registry, ctx.repository);
        let range = if from > 0 { vec![(reqwest::header::RANGE, format!("bytes={from}-"))] } else { vec![] };
        let resp = self.get_authorized(ctx, &url, &range).await?;
        match resp.status().as_u16() {
            200 => Ok((resp, from > 0)),
            206 if from > 0 => {
                // The part must start where the file ends, or the hash would be of a splice.
                let content_range = resp.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
                if content_range.is_some_and(|c| c.starts_with(&format!("bytes {from}-"))) {
                    Ok((resp, false))
                } else {
                    Err(OciError::Protocol(format!(
                        "registry {} answered a range request for {} from byte {from} with Content-Range {:?}",
                        self.registry,
                        ctx.what,
                        content_range.unwrap_or("(none)")
                    )))
                }
            }
            code @ 200..=299 => Err(OciError::Protocol(format!(
                "registry {} answered HTTP {code} to GET {} (expected 200 or 206)",
                self.registry, ctx.what
            ))),
            code => {
                let body = error_body(resp).await;
                if code == 404 || body.contains("BLOB_UNKNOWN") || body.contains("NAME_UNKNOWN") {
                    return Err(ctx.not_found());
                }
                Err(ctx.status(code, &body))
            }
        }
    }
}

pub(super) async fn resolve(reg: &Registry, reference: &Reference) -> Result<ResolvedManifest> {
    let whole = reference.whole();
    let mut ctx = Ctx { reg, repository: &reference.repository, operation: "pull", what: format!("manifest {whole}") };
    let target = reference.digest.clone().or(reference.tag.clone()).unwrap_or_else(|| "latest".into());
    let fetched = reg.get_manifest(&ctx, &target).await?;
    let digest = sha256_hex(&fetched.bytes);
    // The pinned digest is the one that counts; else the registry's header when it is sha256.
    let expected = reference.digest.clone().or(fetched.header_digest.clone().filter(|d| d.starts_with("sha256:")));
    if let Some(expected) = expected {
        if expected != digest {
            return Err(OciError::DigestMismatch { what: ctx.what.clone(), expected, actual: digest });
        }
    }
    let mut digest = digest;
    let image = match select_image(&fetched.bytes, fetched.content_type.as_deref(), &ctx.what, &whole, true)? {
        ImageChoice::Image(image) => image,
        ImageChoice::Follow(entry) => {
            ctx.what = format!("manifest {}@{} (linux/amd64 of {whole})", reference.repository, entry.digest);
            let fetched = reg.get_manifest(&ctx, &entry.digest).await?;
            let actual = sha256_hex(&fetched.bytes);
            if actual != entry.digest {
                return Err(OciError::DigestMismatch { what: ctx.what.clone(), expected: entry.digest, actual });
            }
            if fetched.bytes.len() as u64 != entry.size {
                return Err(OciError::Protocol(format!(
                    "{} is {} bytes, its index entry says {}",
                    ctx.what,
                    fetched.bytes.len(),
                    entry.size
                )));
            }
            digest = actual;
            match select_image(&fetched.bytes, fetched.content_type.as_deref(), &ctx.what, &whole, false)? {
                ImageChoice::Image(image) => image,
                // select_image refuses an index when told not to follow one; kept as an error all the same.
                ImageChoice::Follow(_) => {
                    return Err(OciError::Protocol(format!("{} is an index inside an index", ctx.what)))
                }
            }
        }
    };
    let ImageManifest { media_type, artifact_type, config, layers } = image;
    let config_bytes = fetch_config(reg, &reference.repository, &config).await?;
    check_config_platform(&whole, &config, &config_bytes)?;
    Ok(ResolvedManifest { digest, media_type, artifact_type, config, config_bytes, layers })
}

/// The config blob, bounded by [`MAX_CONFIG`] and its descriptor's size, verified.
async fn fetch_config(reg: &Registry, repository: &str, config: &Descriptor) -> Result<Vec<u8>> {
    let ctx = Ctx { reg, repository, operation: "pull", what: format!("config {}", config.digest) };
    let (resp, _) = reg.get_blob(&ctx, &config.digest, 0).await?;
    let limit = config.size.min(MAX_CONFIG);
    let bytes = read_bounded(&ctx, resp, limit).await?.map_err(|size| OciError::TooLarge {
        what: ctx.what.clone(),
        size,
        limit,
    })?;
    let actual = sha256_hex(&bytes);
    if actual != config.digest {
        return Err(OciError::DigestMismatch { what: ctx.what, expected: config.digest.clone(), actual });
    }
    if bytes.len() as u64 != config.size {
        return Err(OciError::Truncated { what: ctx.what, got: bytes.len() as u64, expected: config.size });
    }
    Ok(bytes)
}

/// Bytes done over all blobs of a download, reported at most every MiB.
struct Counter {
    done: AtomicU64,
    last: AtomicU64,
    total: u64,
    progress: ByteProgress,
}

impl Counter {
    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let last = self.last.load(Ordering::Relaxed);
        if done >= last + (1 << 20) || done == self.total {
            self.last.store(done, Ordering::Relaxed);
            self.progress.report(done, Some(self.total));
        }
    }

    fn sub(&self, n: u64) {
        self.done.fetch_sub(n, Ordering::Relaxed);
        self.last.store(0, Ordering::Relaxed);
    }
}

fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value that the call overwrites.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `s` is a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// sha256 state and length of a file's bytes (a partial download or a blob to re-check).
async fn hash_file(path: &Path) -> Result<(Sha256, u64)> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                return Ok((h, n));
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
    })
    .await
    .map_err(|e| OciError::Protocol(format!("hashing task failed: {e}")))?
    .map_err(|e: std::io::Error| OciError::io(format!("read {}", path.display()), e))
}

pub(super) async fn download(
    reg: &Registry,
    reference: &Reference,
    blobs: &[Descriptor],
    store: &BlobStore,
    progress: &ByteProgress,
) -> Result<Vec<PathBuf>> {
    // Each digest once (two tasks on one .partial would corrupt it); the path check first.
    let mut unique: Vec<&Descriptor> = Vec::new();
    for b in blobs {
        store.path(&b.digest)?;
        match unique.iter().find(|u| u.digest == b.digest) {
            Some(u) if u.size != b.size => {
                return Err(OciError::Protocol(format!(
                    "blob {} is listed with sizes {} and {}",
                    b.digest, u.size, b.size
                )))
            }
            Some(_) => {}
            None => unique.push(b),
        }
    }
    let dir = store.dir.join("sha256");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| OciError::io(format!("create {}", dir.display()), e))?;
    // Space: what is not on disk yet, verified or partial.
    let mut remaining = 0u64;
    for b in &unique {
        let done = match std::fs::metadata(store.path(&b.digest)?) {
            Ok(m) if m.len() == b.size => b.size,
            _ => match std::fs::metadata(store.partial_path(&b.digest)?) {
                Ok(m) if m.len() <= b.size => m.len(),
                _ => 0,
            },
        };
        remaining = remaining.saturating_add(b.size - done);
    }
    let free = free_bytes(&dir).map_err(|e| OciError::io(format!("statvfs {}", dir.display()), e))?;
    if free < remaining {
        return Err(OciError::NoSpace {
            dir: dir.display().to_string(),
            detail: format!("the download needs {remaining} more bytes, {free} are free"),
        });
    }
    let counter = Counter {
        done: AtomicU64::new(0),
        last: AtomicU64::new(0),
        total: unique.iter().map(|b| b.size).sum(),
        progress: progress.clone(),
    };
    let done: Vec<(String, PathBuf)> =
        futures::stream::iter(unique.iter().map(|b| fetch_one(reg, &reference.repository, b, store, &counter)))
            .buffer_unordered(PARALLEL_DOWNLOADS)
            .try_collect()
            .await?;
    let by_digest: BTreeMap<String, PathBuf> = done.into_iter().collect();
    Ok(blobs.iter().map(|b| by_digest[&b.digest].clone()).collect())
}

async fn fetch_one(
    reg: &Registry,
    repository: &str,
    desc: &Descriptor,
    store: &BlobStore,
    counter: &Counter,
) -> Result<(String, PathBuf)> {
    let ctx = Ctx { reg, repository, operation: "pull", what: format!("blob {}", desc.digest) };
    let final_path = store.path(&desc.digest)?;
    let partial = store.partial_path(&desc.digest)?;
    let io = |what: &str, p: &Path, e| OciError::io(format!("{what} {}", p.display()), e);
    // A verified blob from an earlier pull is reused after a re-hash (the store is a cache;
    // a flipped bit there must not pass as verified).
    if let Ok(m) = tokio::fs::metadata(&final_path).await {
        if m.len() == desc.size {
            let (h, _) = hash_file(&final_path).await?;
            if digest_of(h) == desc.digest {
                counter.add(desc.size);
                return Ok((desc.digest.clone(), final_path));
            }
        }
        tokio::fs::remove_file(&final_path).await.map_err(|e| io("remove", &final_path, e))?;
    }
    // The bytes a killed pull left are hashed again, then the rest is asked for by range.
    let (mut hasher, mut have) = match tokio::fs::metadata(&partial).await {
        Ok(m) if m.len() <= desc.size => hash_file(&partial).await?,
        Ok(_) => {
            tokio::fs::remove_file(&partial).await.map_err(|e| io("remove", &partial, e))?;
            (Sha256::new(), 0)
        }
        Err(_) => (Sha256::new(), 0),
    };
    counter.add(have);
    // A connection lost midway is resumed from where it stopped, a few times; a try that
    // got bytes earns the retries back, so a long download on a flaky link keeps going.
    let (mut retries_left, mut tries) = (DOWNLOAD_RETRIES, 0);
    while have < desc.size {
        let before = have;
        tries += 1;
        match receive(reg, &ctx, desc, &partial, &mut have, &mut hasher, counter).await {
            Ok(()) => break,
            Err(OciError::Unreachable { .. }) if (retries_left > 0 || have > before) && tries < MAX_TRIES => {
                retries_left = if have > before { DOWNLOAD_RETRIES } else { retries_left - 1 };
                let delay = RETRY_BASE_DELAY * (1 << (DOWNLOAD_RETRIES - retries_left));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
    if have < desc.size {
        return Err(OciError::Truncated { what: ctx.what, got: have, expected: desc.size });
    }
    let actual = digest_of(hasher);
    if actual != desc.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(OciError::DigestMismatch { what: ctx.what, expected: desc.digest.clone(), actual });
    }
    // Durable before it is named verified: a crash never leaves a short file under <hex>.
    let f = tokio::fs::File::open(&partial).await.map_err(|e| io("open", &partial, e))?;
    f.sync_all().await.map_err(|e| io("fsync", &partial, e))?;
    drop(f);
    tokio::fs::rename(&partial, &final_path).await.map_err(|e| io("rename", &partial, e))?;
    if let Some(parent) = final_path.parent() {
        if let Ok(d) = tokio::fs::File::open(parent).await {
            let _ = d.sync_all().await;
        }
    }
    Ok((desc.digest.clone(), final_path))
}

/// Transfers tried again after a lost connection (reset whenever a try got bytes).
const DOWNLOAD_RETRIES: u32 = 3;
/// Tries of one blob in one pull, whatever they got (a registry that cuts every answer after
/// a byte would otherwise keep the pull going for ever).
const MAX_TRIES: u32 = 32;
/// The first retry waits this long; each next one twice as long.
const RETRY_BASE_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// One GET of `desc` from byte `*have`, appended to `partial` and hashed as it arrives. Ends
/// `Ok` when the body ended (short or not: the caller checks the size and digest); a lost
/// connection is `Unreachable` with what arrived kept in the `.partial`.
async fn receive(
    reg: &Registry,
    ctx: &Ctx<'_>,
    desc: &Descriptor,
    partial: &Path,
    have: &mut u64,
    hasher: &mut Sha256,
    counter: &Counter,
) -> Result<()> {
    let io = |what: &str, p: &Path, e| OciError::io(format!("{what} {}", p.display()), e);
    // `restart`: the registry ignored the range, the whole blob comes from byte 0.
    let (mut resp, restart) = reg.get_blob(ctx, &desc.digest, *have).await?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .await
        .map_err(|e| io("open", partial, e))?;
    if restart {
        file.set_len(0).await.map_err(|e| io("truncate", partial, e))?;
        counter.sub(*have);
        *have = 0;
        *hasher = Sha256::new();
    }
    let too_many = |size| OciError::TooLarge { what: ctx.what.clone(), size, limit: desc.size };
    if let Some(len) = resp.content_length() {
        if have.saturating_add(len) > desc.size {
            drop(file);
            let _ = tokio::fs::remove_file(partial).await;
            return Err(too_many(have.saturating_add(len)));
        }
    }
    loop {
        match resp.chunk().await {
            Ok(None) => break,
            Ok(Some(chunk)) => {
                let n = chunk.len() as u64;
                if *have + n > desc.size {
                    drop(file);
                    let _ = tokio::fs::remove_file(partial).await;
                    return Err(too_many(*have + n));
                }
                file.write_all(&chunk).await.map_err(|e| io("write", partial, e))?;
                hasher.update(&chunk);
                *have += n;
                counter.add(n);
            }
            Err(e) => {
                // What arrived stays in the .partial for the retry or the next pull.
                let _ = file.flush().await;
                return Err(ctx.reqwest(&e));
            }
        }
    }
    file.flush().await.map_err(|e| io("write", partial, e))
}

pub(super) async fn push_blob(
    reg: &Registry,
    reference: &Reference,
    path: &Path,
    desc: &Descriptor,
    progress: &ByteProgress,
) -> Result<BlobPush> {
    if !is_sha256_digest(&desc.digest) {
        return Err(OciError::Artifact(format!("blob digest '{}' is not sha256:<64 hex>", desc.digest)));
    }
    let ctx = Ctx { reg, repository: &reference.repository, operation: "push", what: format!("blob {}", desc.digest) };
    let r = oref(reference);
    reg.client.store_auth_if_needed(&reg.registry, &reg.client_auth(&ctx).await?).await;
    // HEAD first: a blob the registry has is never sent again (no upload session either).
    if reg.client.blob_exists(&r, &desc.digest).await.map_err(|e| ctx.client(e))? {
        return Ok(BlobPush::Present);
    }
    let file = tokio::fs::File::open(path).await.map_err(|e| OciError::io(format!("open {}", path.display()), e))?;
    let len = file.metadata().await.map_err(|e| OciError::io(format!("stat {}", path.display()), e))?.len();
    if len != desc.size {
        return Err(OciError::Artifact(format!(
            "{} is {len} bytes, its descriptor says {}",
            path.display(),
            desc.size
        )));
    }
    // Streamed in 1 MiB reads: a large layer is never held in memory.
    let size = desc.size;
    let progress = progress.clone();
    let stream = futures::stream::unfold((Some(file), 0u64), move |(file, sent)| {
        let progress = progress.clone();
        async move {
            let mut f = file?;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    progress.report(sent, Some(size));
                    Some((Ok(bytes::Bytes::from(buf)), (Some(f), sent)))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), (None, sent))),
            }
        }
    });
    reg.client.push_blob_stream(&r, stream, &desc.digest, Some(size)).await.map_err(|e| ctx.client(e))?;
    Ok(BlobPush::Uploaded)
}

pub(super) async fn push_manifest(
    reg: &Registry,
    reference: &Reference,
    media_type: &str,
    bytes: &[u8],
) -> Result<String> {
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(OciError::TooLarge { what: "manifest".into(), size: bytes.len() as u64, limit: MAX_MANIFEST });
    }
    let ctx = Ctx {
        reg,
        repository: &reference.repository,
        operation: "push",
        what: format!("manifest {}", reference.whole()),
    };
    let content_type = reqwest::header::HeaderValue::from_str(media_type)
        .map_err(|_| OciError::Artifact(format!("media type '{media_type}' is not a valid header value")))?;
    // Pushed under the tag when there is one (a digest-only reference pushes by digest).
    let r = match &reference.tag {
        Some(t) => oci_client::Reference::with_tag(reference.registry.clone(), reference.repository.clone(), t.clone()),
        None => oref(reference),
    };
    reg.client.store_auth_if_needed(&reg.registry, &reg.client_auth(&ctx).await?).await;
    reg.client.push_manifest_raw(&r, bytes.to_vec(), content_type).await.map_err(|e| ctx.client(e))?;
    Ok(sha256_hex(bytes))
}
