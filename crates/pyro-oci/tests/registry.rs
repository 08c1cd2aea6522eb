//! The registry client against a real registry (Debian's docker-registry on loopback,
//! started per test by scripts/registry.sh).

use pyro_oci::registry::{
    BlobPush, BlobStore, Credentials, Descriptor, Reference, Registry, RegistryOptions, DOCKER_LIST, DOCKER_MANIFEST,
    OCI_INDEX, OCI_MANIFEST,
};
use pyro_oci::{ByteProgress, OciError};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/registry.sh")
}

/// A registry of this test; stopped on drop.
struct TestRegistry {
    dir: tempfile::TempDir,
    addr: String,
}

impl TestRegistry {
    fn start(htpasswd: Option<&str>) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("start").arg(dir.path().join("reg"));
        if let Some(h) = htpasswd {
            let out = Command::new("htpasswd").args(["-Bbn", "user", h]).output().unwrap();
            assert!(out.status.success());
            let f = dir.path().join("htpasswd");
            std::fs::write(&f, out.stdout).unwrap();
            cmd.arg("--htpasswd").arg(&f);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "registry.sh start: {}", String::from_utf8_lossy(&out.stderr));
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        TestRegistry { dir, addr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("reg/registry.log")).unwrap_or_default()
    }

    fn upload_posts(&self, repo: &str) -> usize {
        let needle = format!("\"POST /v2/{repo}/blobs/uploads/ HTTP");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!("reg/storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("{}/{repo_tag}", self.addr)).unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path().join("reg")).status();
    }
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut v).unwrap();
    v
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn anon() -> RegistryOptions {
    RegistryOptions::default()
}

/// A blob written to `dir` with its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> (PathBuf, Descriptor) {
    let d = digest(bytes);
    let p = dir.join(d.replace(':', "-"));
    std::fs::write(&p, bytes).unwrap();
    (p, Descriptor { media_type: media_type.into(), digest: d, size: bytes.len() as u64, annotations: BTreeMap::new() })
}

fn desc_json(d: &Descriptor) -> serde_json::Value {
    serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size})
}

/// Push a config + layers and an image manifest of `manifest_type` under `reference`;
/// returns (manifest digest, config, layers and their bytes).
async fn push_image(
    reg: &Registry,
    reference: &Reference,
    manifest_type: &str,
    config_type: &str,
    config: &serde_json::Value,
    layers: &[Vec<u8>],
) -> (String, Descriptor, Vec<Descriptor>) {
    let tmp = tempfile::tempdir().unwrap();
    let (cp, cd) = blob(tmp.path(), config_type, &serde_json::to_vec(config).unwrap());
    reg.push_blob(reference, &cp, &cd, &ByteProgress::silent()).await.unwrap();
    let mut ld = Vec::new();
    for l in layers {
        let (p, d) = blob(tmp.path(), "application/vnd.oci.image.layer.v1.tar+zstd", l);
        reg.push_blob(reference, &p, &d, &ByteProgress::silent()).await.unwrap();
        ld.push(d);
    }
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": desc_json(&cd),
        "layers": ld.iter().map(desc_json).collect::<Vec<_>>(),
    });
    if manifest_type == OCI_MANIFEST {
        m["artifactType"] = "application/vnd.pyro.environment.v1".into();
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = reg.push_manifest(reference, manifest_type, &bytes).await.unwrap();
    assert_eq!(d, digest(&bytes));
    (d, cd, ld)
}

fn pyro_config(arch: &str) -> serde_json::Value {
    serde_json::json!({"name": "t", "os": "linux", "architecture": arch, "platform": "linux-x86_64"})
}

const PYRO_CONFIG: &str = "application/vnd.pyro.environment.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[tokio::test]
async fn push_resolve_download_and_second_push_uploads_nothing() {
    let tr = TestRegistry::start(None);
    let r = tr.reference("team/env:1.0.0");
    let reg = Registry::with_options(&r, anon()).unwrap();
    let layers = vec![random(300_000), random(5 << 20), random(10)];
    let (mdigest, cd, ld) = push_image(&reg, &r, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), &layers).await;
    let posts = tr.upload_posts("team/env");
    assert_eq!(posts, 4, "one upload per blob:\n{}", tr.log());

    let m = reg.resolve(&r).await.unwrap();
    assert_eq!(m.digest, mdigest);
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.pyro.environment.v1"));
    assert_eq!(m.config, cd);
    assert_eq!(m.layers, ld);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.config_bytes).unwrap(), pyro_config("amd64"));

    // Pinned by digest too.
    let pinned = Reference::parse(&format!("{}/team/env@{mdigest}", tr.addr)).unwrap();
    assert_eq!(reg.resolve(&pinned).await.unwrap().digest, mdigest);

    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().join("blobs") };
    let last = Arc::new(AtomicU64::new(0));
    let l2 = last.clone();
    let progress = ByteProgress::new(move |done, total| {
        assert!(Some(done) <= total);
        l2.store(done, Ordering::SeqCst);
    });
    // A blob listed twice is downloaded once and returned twice.
    let mut want = m.layers.clone();
    want.push(m.layers[0].clone());
    let paths = reg.download(&r, &want, &store, &progress).await.unwrap();
    assert_eq!(paths.len(), 4);
    for (p, bytes) in paths.iter().zip(layers.iter().chain(std::iter::once(&layers[0]))) {
        assert_eq!(&std::fs::read(p).unwrap(), bytes);
    }
    assert_eq!(paths[0], store.path(&ld[0].digest).unwrap());
    assert_eq!(last.load(Ordering::SeqCst), layers.iter().map(|l| l.len() as u64).sum::<u64>());

    // Again: served from the store (re-hashed), no GET of a blob.
    let gets = |log: &str| log.lines().filter(|l| l.contains("\"GET /v2/team/env/blobs/")).count();
    let before = gets(&tr.log());
    reg.download(&r, &m.layers, &store, &ByteProgress::silent()).await.unwrap();
    assert_eq!(gets(&tr.log()), before);

    // Second push of the same blobs: HEAD only, no upload session.
    let tmp = tempfile::tempdir().unwrap();
    for (bytes, d) in layers.iter().zip(&ld) {
        let (p, d2) = blob(tmp.path(), &d.media_type, bytes);
        assert_eq!(&d2, d);
        assert_eq!(reg.push_blob(&r, &p, d, &ByteProgress::silent()).await.unwrap(), BlobPush::Present);
    }
    assert_eq!(tr.upload_posts("team/env"), posts);
}

#[tokio::test]
async fn docker_manifest_and_index_select_linux_amd64() {
    let tr = TestRegistry::start(None);
    let reg = Registry::with_options(&tr.reference("o/img:x"), anon()).unwrap();
    let amd = serde_json::json!({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers"}});
    let arm = serde_json::json!({"os": "linux", "architecture": "arm64"});
    let (damd, _, lamd) =
        push_image(&reg, &tr.reference("o/img:amd"), DOCKER_MANIFEST, DOCKER_CONFIG, &amd, &[random(1000)]).await;
    let (darm, _, _) =
        push_image(&reg, &tr.reference("o/img:arm"), DOCKER_MANIFEST, DOCKER_CONFIG, &arm, &[random(1000)]).await;

    let m = reg.resolve(&tr.reference("o/img:amd")).await.unwrap();
    assert_eq!((m.digest.as_str(), m.media_type.as_str()), (damd.as_str(), DOCKER_MANIFEST));
    assert_eq!(m.layers, lamd);
    // A single manifest whose config says arm64.
    match reg.resolve(&tr.reference("o/img:arm")).await {
        Err(OciError::Platform { found, .. }) => assert!(found.contains("linux/arm64"), "{found}"),
        other => panic!("{other:?}"),
    }

    let size = |t: &str| reg_size(&tr, t);
    let entry = |d: &str, mt: &str, arch: &str, s: u64| serde_json::json!({"mediaType": mt, "digest": d, "size": s, "platform": {"os": "linux", "architecture": arch}});
    let (samd, sarm) = (size(&damd), size(&darm));
    for index_type in [OCI_INDEX, DOCKER_LIST] {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": [
            entry(&darm, DOCKER_MANIFEST, "arm64", sarm), entry(&damd, DOCKER_MANIFEST, "amd64", samd)]});
        let r = tr.reference("o/img:multi");
        reg.push_manifest(&r, index_type, &serde_json::to_vec(&index).unwrap()).await.unwrap();
        let m = reg.resolve(&r).await.unwrap();
        assert_eq!(m.digest, damd, "{index_type}");
        assert_eq!(m.layers, lamd);
    }
    let only_arm = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(&darm, DOCKER_MANIFEST, "arm64", sarm)]});
    let r = tr.reference("o/img:armonly");
    reg.push_manifest(&r, OCI_INDEX, &serde_json::to_vec(&only_arm).unwrap()).await.unwrap();
    match reg.resolve(&r).await {
        Err(OciError::Platform { found, reference }) => {
            assert_eq!(found, "linux/arm64");
            assert!(reference.ends_with("o/img:armonly"));
        }
        other => panic!("{other:?}"),
    }
    match reg.resolve(&tr.reference("o/img:nosuchtag")).await {
        Err(OciError::NotFound { what, .. }) => assert!(what.contains("nosuchtag"), "{what}"),
        other => panic!("{other:?}"),
    }
}

/// Size of a manifest in the registry's storage (manifests are blobs there too).
fn reg_size(tr: &TestRegistry, digest: &str) -> u64 {
    std::fs::metadata(tr.blob_data(digest)).unwrap().len()
}

#[tokio::test]
async fn tampered_blob_is_rejected_and_not_kept() {
    let tr = TestRegistry::start(None);
    let r = tr.reference("t/x:1");
    let reg = Registry::with_options(&r, anon()).unwrap();
    let (_, _, ld) = push_image(&reg, &r, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), &[random(200_000)]).await;
    // Same length, other bytes: only the digest can tell.
    let data = tr.blob_data(&ld[0].digest);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    match reg.download(&r, &ld, &store, &ByteProgress::silent()).await {
        Err(OciError::DigestMismatch { expected, actual, what }) => {
            assert_eq!(expected, ld[0].digest);
            assert_eq!(actual, digest(&bytes));
            assert!(what.contains(&ld[0].digest));
        }
        other => panic!("{other:?}"),
    }
    assert!(!store.path(&ld[0].digest).unwrap().exists());
    assert!(!store.partial_path(&ld[0].digest).unwrap().exists());
}

#[tokio::test]
async fn partial_download_resumes_with_a_range_request() {
    let tr = TestRegistry::start(None);
    let r = tr.reference("t/resume:1");
    let reg = Registry::with_options(&r, anon()).unwrap();
    let layer = random(3 << 20);
    let (_, _, ld) =
        push_image(&reg, &r, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), std::slice::from_ref(&layer)).await;
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    std::fs::create_dir_all(store_dir.path().join("sha256")).unwrap();
    let half = layer.len() / 2;
    std::fs::write(store.partial_path(&ld[0].digest).unwrap(), &layer[..half]).unwrap();
    let paths = reg.download(&r, &ld, &store, &ByteProgress::silent()).await.unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), layer);
    assert!(!store.partial_path(&ld[0].digest).unwrap().exists());
    let log = tr.log();
    let line = format!("\"GET /v2/t/resume/blobs/{} HTTP/1.1\" 206", ld[0].digest);
    assert!(log.contains(&line), "no ranged GET in the log:\n{log}");

    // A partial that is not a prefix of the blob: the download ends in a digest error and
    // the partial is gone, so the next pull starts clean and succeeds.
    std::fs::remove_file(&paths[0]).unwrap();
    std::fs::write(store.partial_path(&ld[0].digest).unwrap(), random(1000)).unwrap();
    assert!(matches!(
        reg.download(&r, &ld, &store, &ByteProgress::silent()).await,
        Err(OciError::DigestMismatch { .. })
    ));
    assert!(!store.partial_path(&ld[0].digest).unwrap().exists());
    let paths = reg.download(&r, &ld, &store, &ByteProgress::silent()).await.unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), layer);
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = Reference::parse(&format!("127.0.0.1:{port}/a/b:1")).unwrap();
    let reg = Registry::with_options(&r, anon()).unwrap();
    match reg.resolve(&r).await {
        Err(e @ OciError::Unreachable { .. }) => {
            let s = e.to_string();
            assert!(s.contains(&format!("127.0.0.1:{port}")) && s.to_lowercase().contains("refused"), "{s}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn htpasswd_registry_credentials() {
    let tr = TestRegistry::start(Some("s3cret"));
    let r = tr.reference("p/q:1");
    let creds = |pass: &str| RegistryOptions {
        credentials: Some(Credentials { username: "user".into(), password: pass.into(), source: "test".into() }),
        insecure_hosts: vec![],
    };
    // No credentials: 401 with what to do.
    let reg = Registry::with_options(&r, anon()).unwrap();
    match reg.resolve(&r).await {
        Err(e @ OciError::Unauthorized { .. }) => assert!(e.to_string().contains("PYRO_REGISTRY_USERNAME"), "{e}"),
        other => panic!("{other:?}"),
    }
    let tmp = tempfile::tempdir().unwrap();
    let (p, d) = blob(tmp.path(), "x", b"hello");
    assert!(matches!(reg.push_blob(&r, &p, &d, &ByteProgress::silent()).await, Err(OciError::Unauthorized { .. })));
    // Good credentials (as PYRO_REGISTRY_USERNAME/PASSWORD give them): push and pull.
    let good = Registry::with_options(&r, creds("s3cret")).unwrap();
    let (mdigest, _, _) =
        push_image(&good, &r, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), &[random(1000)]).await;
    assert_eq!(good.resolve(&r).await.unwrap().digest, mdigest);
    // From the environment variables, read through the same code as Registry::new.
    let env =
        |pairs: Vec<(&'static str, String)>| move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
    let o = RegistryOptions::from_lookup(
        &r.registry,
        env(vec![("PYRO_REGISTRY_USERNAME", "user".into()), ("PYRO_REGISTRY_PASSWORD", "s3cret".into())]),
    )
    .unwrap();
    assert_eq!(Registry::with_options(&r, o).unwrap().resolve(&r).await.unwrap().digest, mdigest);
    // From a Docker config file (DOCKER_CONFIG), `auth` form under an https:// key.
    let cfg = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("user:s3cret");
    std::fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"https://{}":{{"auth":"{auth}"}}}}}}"#, r.registry),
    )
    .unwrap();
    let o = RegistryOptions::from_lookup(&r.registry, env(vec![("DOCKER_CONFIG", cfg.path().display().to_string())]))
        .unwrap();
    assert_eq!(Registry::with_options(&r, o).unwrap().resolve(&r).await.unwrap().digest, mdigest);
    // From a Docker credential helper (`credsStore`, as Docker Desktop and `pass` set it up):
    // the helper protocol, run as `docker-credential-<name> get` from PATH.
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-pyrotest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r reg\n[ \"$reg\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"user\",\"Secret\":\"s3cret\"}}' \"$reg\"\n",
            r.registry
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{}}}},"credsStore":"pyrotest"}}"#, r.registry),
    )
    .unwrap();
    let o = RegistryOptions::from_lookup(
        &r.registry,
        env(vec![
            ("DOCKER_CONFIG", cfg.path().display().to_string()),
            ("PATH", format!("/nonexistent:{}", bin.path().display())),
        ]),
    )
    .unwrap();
    assert_eq!(o.credentials.as_ref().unwrap().source, "credential helper docker-credential-pyrotest");
    assert_eq!(Registry::with_options(&r, o).unwrap().resolve(&r).await.unwrap().digest, mdigest);
    // Wrong password: 401 naming where the credentials came from.
    let bad = Registry::with_options(&r, creds("wrong")).unwrap();
    match bad.resolve(&r).await {
        Err(e @ OciError::Unauthorized { .. }) => assert!(e.to_string().contains("from test"), "{e}"),
        other => panic!("{other:?}"),
    }
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    let layers = good.resolve(&r).await.unwrap().layers;
    assert!(matches!(
        bad.download(&r, &layers, &store, &ByteProgress::silent()).await,
        Err(OciError::Unauthorized { .. })
    ));
    good.download(&r, &layers, &store, &ByteProgress::silent()).await.unwrap();
}

#[tokio::test]
async fn descriptor_sizes_bound_the_download() {
    let tr = TestRegistry::start(None);
    let r = tr.reference("t/sizes:1");
    let reg = Registry::with_options(&r, anon()).unwrap();
    let layer = random(100_000);
    let (_, _, ld) =
        push_image(&reg, &r, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), std::slice::from_ref(&layer)).await;
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    let with_size = |size: u64| vec![Descriptor { size, ..ld[0].clone() }];
    // The registry sends more than the descriptor announces: stopped, nothing kept.
    match reg.download(&r, &with_size(99_000), &store, &ByteProgress::silent()).await {
        Err(OciError::TooLarge { size, limit, .. }) => assert!(size > limit && limit == 99_000),
        other => panic!("{other:?}"),
    }
    assert!(!store.partial_path(&ld[0].digest).unwrap().exists());
    // Fewer bytes than announced: truncated (the partial stays for a resume).
    match reg.download(&r, &with_size(101_000), &store, &ByteProgress::silent()).await {
        Err(OciError::Truncated { got, expected, .. }) => assert_eq!((got, expected), (100_000, 101_000)),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(store.partial_path(&ld[0].digest).unwrap());
    // More than the disk holds: refused before any request, with the numbers.
    let gets = tr.log().lines().filter(|l| l.contains("/blobs/sha256:")).count();
    match reg.download(&r, &with_size(1 << 60), &store, &ByteProgress::silent()).await {
        Err(e @ OciError::NoSpace { .. }) => assert!(e.to_string().contains(&(1u64 << 60).to_string()), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(tr.log().lines().filter(|l| l.contains("/blobs/sha256:")).count(), gets);
    // A digest that is not sha256:<64 hex> never becomes a path.
    let evil = vec![Descriptor { digest: "sha256:../../etc/passwd".into(), ..ld[0].clone() }];
    assert!(matches!(reg.download(&r, &evil, &store, &ByteProgress::silent()).await, Err(OciError::Protocol(_))));
    assert!(store.path("sha256:../../x").is_err());
}

/// A token service in front of a registry, as Docker Hub and most public registries do it:
/// every /v2/ request without `Bearer tok-*` gets 401 `WWW-Authenticate: Bearer realm=...`;
/// /token hands out `tok-anon` to anyone and `tok-user` for user:s3cret, and refuses
/// other credentials; repositories under `denied/` answer 403 to any token.
/// A third argument makes it hostile: `hugetoken` (a token answer that never ends),
/// `hugetoken-cl` (one declaring 10 GB), `hugeerr` (blob GETs answer 500 with a body that
/// never ends), `badrealm` (the token service is a file: URL), `cut` (the first GET of each
/// blob over 1 MiB sends half of it, then the connection is closed).
const TOKEN_PROXY: &str = r#"
import sys, http.server, http.client, base64
backend, logpath = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else 'normal'
cut_done = set()
logf = open(logpath, 'a', buffering=1)
GOOD = 'Basic ' + base64.b64encode(b'user:s3cret').decode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers: self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD': self.wfile.write(body)
    def endless(self, status, first, length=None):
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        if length: self.send_header('Content-Length', str(length))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(first)
            while True: self.wfile.write(b'a' * 65536)
        except Exception: pass
    def any(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        if self.path.startswith('/token') and mode == 'hugetoken':
            return self.endless(200, b'{"token":"')
        if self.path.startswith('/token') and mode == 'hugetoken-cl':
            return self.endless(200, b'{"token":"', 10**10)
        if self.path.startswith('/token'):
            a = self.headers.get('Authorization')
            logf.write('TOKEN %s %s\n' % (self.path, 'basic' if a else 'anon'))
            if a and a != GOOD:
                return self.reply(401, b'{"details":"bad credentials"}', [('Content-Type', 'application/json')])
            tok = 'tok-user' if a else 'tok-anon'
            return self.reply(200, ('{"token":"%s"}' % tok).encode(), [('Content-Type', 'application/json')])
        if self.headers.get('Authorization', '') not in ('Bearer tok-anon', 'Bearer tok-user'):
            logf.write('CHALLENGE %s %s\n' % (self.command, self.path))
            realm = 'Bearer realm="http://%s/token",service="pyro-test"' % self.headers['Host']
            if mode == 'badrealm': realm = 'Bearer realm="file:///etc/passwd",service="pyro-test"'
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}',
                              [('WWW-Authenticate', realm), ('Content-Type', 'application/json')])
        if '/v2/denied/' in self.path:
            logf.write('DENY %s %s\n' % (self.command, self.path))
            return self.reply(403, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}',
                              [('Content-Type', 'application/json')])
        if mode == 'hugeerr' and '/blobs/' in self.path:
            return self.endless(500, b'{"errors":[{"code":"UNKNOWN","message":"')
        if mode == 'cut' and '/blobs/' in self.path and self.command == 'GET' and self.path not in cut_done:
            c = http.client.HTTPConnection(backend)
            c.request('GET', self.path)
            r = c.getresponse()
            data = r.read()
            if r.status == 200 and len(data) > (1 << 20):
                cut_done.add(self.path)
                logf.write('CUT %s %d\n' % (self.path, len(data) // 2))
                self.send_response(200)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        logf.write('PASS %s %s %s\n' % (self.command, self.path, self.headers.get('Range', '')))
        c = http.client.HTTPConnection(backend)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() != 'authorization'}
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() in ('transfer-encoding', 'connection', 'content-length'): continue
            self.send_header(k, v)
        self.send_header('Content-Length', r.getheader('Content-Length', '0') if self.command == 'HEAD' else str(len(data)))
        self.end_headers()
        if self.command != 'HEAD': self.wfile.write(data)
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = any
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print('127.0.0.1:%d' % s.server_address[1], flush=True)
s.serve_forever()
"#;

struct TokenProxy {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl TokenProxy {
    fn start(backend: &str, dir: &Path) -> TokenProxy {
        TokenProxy::start_mode(backend, dir, "normal")
    }

    fn start_mode(backend: &str, dir: &Path, mode: &str) -> TokenProxy {
        use std::io::BufRead as _;
        let log = dir.join(format!("proxy-{mode}.log"));
        let mut child = Command::new("python3")
            .args(["-c", TOKEN_PROXY, backend])
            .arg(&log)
            .arg(mode)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        TokenProxy { child, addr: line.trim().to_string(), log }
    }
}

impl Drop for TokenProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn bearer_token_flow() {
    let tr = TestRegistry::start(None);
    let direct = tr.reference("b/c:1");
    let reg = Registry::with_options(&direct, anon()).unwrap();
    let layer = random(2 << 20);
    let (mdigest, _, ld) =
        push_image(&reg, &direct, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), std::slice::from_ref(&layer)).await;

    let proxy = TokenProxy::start(&tr.addr, tr.dir.path());
    let r = Reference::parse(&format!("{}/b/c:1", proxy.addr)).unwrap();
    // Anonymous: the client follows the challenge to the token service and pulls.
    let anon_reg = Registry::with_options(&r, anon()).unwrap();
    let m = anon_reg.resolve(&r).await.unwrap();
    assert_eq!(m.digest, mdigest);
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    let paths = anon_reg.download(&r, &ld, &store, &ByteProgress::silent()).await.unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), layer);
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains("TOKEN /token?scope=repository%3Ab%2Fc%3Apull&service=pyro-test anon"), "{log}");
    assert!(log.contains(&format!("PASS GET /v2/b/c/blobs/{}", ld[0].digest)), "{log}");

    // Credentials go to the token service; good ones get a token, bad ones a clear 401.
    let with = |pass: &str| RegistryOptions {
        credentials: Some(Credentials { username: "user".into(), password: pass.into(), source: "test".into() }),
        insecure_hosts: vec![],
    };
    let user_reg = Registry::with_options(&r, with("s3cret")).unwrap();
    assert_eq!(user_reg.resolve(&r).await.unwrap().digest, mdigest);
    assert!(std::fs::read_to_string(&proxy.log).unwrap().contains("pull&service=pyro-test basic"));
    let bad = Registry::with_options(&r, with("nope")).unwrap();
    match bad.resolve(&r).await {
        Err(e @ OciError::Unauthorized { .. }) => assert!(e.to_string().contains("bad credentials"), "{e}"),
        other => panic!("{other:?}"),
    }

    // A token the registry accepts but that may not read this repository: 403, a different
    // error from 401, naming the repository.
    let denied = Reference::parse(&format!("{}/denied/x:1", proxy.addr)).unwrap();
    match user_reg.resolve(&denied).await {
        Err(e @ OciError::Forbidden { .. }) => {
            let text = e.to_string();
            assert!(text.contains("403") && text.contains("denied/x"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_host_is_unreachable_over_https() {
    let r = Reference::parse("registry.pyro-test.invalid/a/b:1").unwrap();
    let reg = Registry::with_options(&r, anon()).unwrap();
    match reg.resolve(&r).await {
        Err(e @ OciError::Unreachable { .. }) => {
            assert!(e.to_string().contains("registry.pyro-test.invalid"), "{e}");
            assert!(e.to_string().contains("PYRO_REGISTRY_INSECURE"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// A hostile registry cannot make a pull read without end: the token service's answer is
/// read up to 64 KiB (an endless one and one declaring 10 GB are refused), an error body
/// only for its first 4 KiB, and a token service that is not http(s) is refused before any
/// credential is sent. Each call must end well before the 90 s read timeout: reading any of
/// these bodies whole would never end (or end the process).
#[tokio::test]
async fn hostile_token_service_and_error_bodies_are_bounded() {
    let tr = TestRegistry::start(None);
    let direct = tr.reference("h/x:1");
    let reg = Registry::with_options(&direct, anon()).unwrap();
    push_image(&reg, &direct, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), &[random(1 << 20)]).await;
    let resolve = |mode: &'static str| {
        let proxy = TokenProxy::start_mode(&tr.addr, tr.dir.path(), mode);
        async move {
            let r = Reference::parse(&format!("{}/h/x:1", proxy.addr)).unwrap();
            let reg = Registry::with_options(&r, anon()).unwrap();
            let started = std::time::Instant::now();
            let out = tokio::time::timeout(std::time::Duration::from_secs(30), reg.resolve(&r))
                .await
                .unwrap_or_else(|_| panic!("{mode}: the pull kept reading"));
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            drop(proxy);
            out
        }
    };
    match resolve("hugetoken").await {
        Err(OciError::TooLarge { what, limit, .. }) => {
            assert_eq!(limit, 64 << 10);
            assert!(what.contains("token service"), "{what}");
        }
        other => panic!("hugetoken: {other:?}"),
    }
    match resolve("hugetoken-cl").await {
        Err(OciError::TooLarge { size, .. }) => assert_eq!(size, 10_000_000_000),
        other => panic!("hugetoken-cl: {other:?}"),
    }
    // The manifest passes; the config blob's GET answers 500 with an endless body.
    match resolve("hugeerr").await {
        Err(e @ OciError::Protocol(_)) => {
            let text = e.to_string();
            assert!(text.contains("HTTP 500") && text.contains("config"), "{text}");
            assert!(text.len() < 2000, "the message carries a bounded part of the body: {} bytes", text.len());
        }
        other => panic!("hugeerr: {other:?}"),
    }
    match resolve("badrealm").await {
        Err(e @ OciError::Protocol(_)) => assert!(e.to_string().contains("'file'"), "{e}"),
        other => panic!("badrealm: {other:?}"),
    }
}

/// A connection lost midway through a blob is resumed within the same pull: the download
/// succeeds in one call, the second GET asks for the rest by range, and every byte is
/// verified.
#[tokio::test]
async fn a_lost_connection_is_resumed_within_the_pull() {
    let tr = TestRegistry::start(None);
    let direct = tr.reference("cut/x:1");
    let reg = Registry::with_options(&direct, anon()).unwrap();
    let layer = random(3 << 20);
    let (_, _, ld) =
        push_image(&reg, &direct, OCI_MANIFEST, PYRO_CONFIG, &pyro_config("amd64"), std::slice::from_ref(&layer)).await;
    let proxy = TokenProxy::start_mode(&tr.addr, tr.dir.path(), "cut");
    let r = Reference::parse(&format!("{}/cut/x:1", proxy.addr)).unwrap();
    let reg = Registry::with_options(&r, anon()).unwrap();
    let m = reg.resolve(&r).await.unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore { dir: store_dir.path().to_path_buf() };
    let paths = reg.download(&r, &m.layers, &store, &ByteProgress::silent()).await.unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), layer);
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    let half = layer.len() / 2;
    assert!(log.contains(&format!("CUT /v2/cut/x/blobs/{} {half}", ld[0].digest)), "{log}");
    assert!(log.contains(&format!("PASS GET /v2/cut/x/blobs/{} bytes={half}-", ld[0].digest)), "{log}");
}
