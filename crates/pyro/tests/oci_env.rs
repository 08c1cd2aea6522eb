//! Environments through a real OCI registry (Debian's docker-registry on loopback, started
//! per test by scripts/registry.sh): push of an install, a second push that uploads no blob,
//! pull into an empty cache, and an image in the reference's layout. Needs the debian:12
//! install of `PYRO_CACHE_DIR` (default /var/cache/pyro) and docker-registry; skipped
//! without them.

use pyro::env::EnvStore;
use pyro::progress::Progress;
use pyro_oci::layer::{self, LayerFile};
use pyro_oci::registry::{Descriptor, Reference, Registry};
use pyro_oci::ByteProgress;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/registry.sh")
}

struct TestRegistry {
    dir: tempfile::TempDir,
    addr: String,
}

impl TestRegistry {
    fn start() -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash").arg(script()).arg("start").arg(dir.path().join("reg")).output().unwrap();
        assert!(out.status.success(), "registry.sh start: {}", String::from_utf8_lossy(&out.stderr));
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        TestRegistry { dir, addr }
    }

    fn upload_posts(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("reg/registry.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/")).count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path().join("reg")).status();
    }
}

/// A private cache holding a sparse copy of the shared debian:12 install.
fn cache_with_debian_12() -> Option<(tempfile::TempDir, EnvStore)> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        eprintln!("skipped: docker-registry is not installed (scripts/registry.sh install)");
        return None;
    }
    let shared =
        EnvStore { cache_dir: std::env::var("PYRO_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pyro".into()).into() };
    let installed = shared.installed("debian:12").unwrap()?;
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let store = EnvStore { cache_dir: tmp.path().join("cache") };
    let dest = store.install_dir("debian:12");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let st =
        Command::new("cp").arg("-a").arg("--sparse=always").arg(&installed.install_dir).arg(&dest).status().unwrap();
    assert!(st.success());
    assert!(store.installed("debian:12").unwrap().is_some());
    Some((tmp, store))
}

fn sha(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn push_twice_then_pull_into_an_empty_cache() {
    let Some((tmp, store)) = cache_with_debian_12() else { return };
    let reg = TestRegistry::start();
    let reference = format!("{}/team/debian-12:1.0.0", reg.addr);
    let t = std::time::Instant::now();
    let first = store.push("debian:12", Some(&reference), &Progress::silent()).unwrap();
    eprintln!("first push {:.1} s: {first:?}", t.elapsed().as_secs_f64());
    assert_eq!(first.layers.iter().map(|l| l.title.as_str()).collect::<Vec<_>>(), ["config", "kernel", "rootfs"]);
    assert_eq!(first.uploaded_count, 3);
    let posts = reg.upload_posts();
    assert!(posts >= 3, "{posts}");

    let t = std::time::Instant::now();
    let second = store.push("debian:12", Some(&reference), &Progress::silent()).unwrap();
    eprintln!("second push {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(second.digest, first.digest, "an unchanged install pushes the same manifest");
    assert_eq!((second.uploaded_count, second.uploaded_bytes), (0, 0));
    assert_eq!(reg.upload_posts(), posts, "no blob upload started by the second push");

    let empty = EnvStore { cache_dir: tmp.path().join("empty") };
    let t = std::time::Instant::now();
    let pulled = empty.pull_from("debian:12", Some(&reference), &Progress::silent()).unwrap();
    eprintln!("pull {:.1} s", t.elapsed().as_secs_f64());
    let source = store.installed("debian:12").unwrap().unwrap();
    assert_eq!(pulled.source, format!("oci://{}/team/debian-12@{}", reg.addr, first.digest));
    assert_eq!(pulled.source_digest, first.digest);
    assert_eq!(pulled.kernel_release, source.kernel_release);
    assert_eq!(sha(&pulled.kernel_image), sha(&source.kernel_image));
    assert_eq!(sha(&pulled.rootfs_image), sha(&source.rootfs_image));
    let (a, b) = (allocated(&pulled.rootfs_image), allocated(&source.rootfs_image));
    assert!(a <= b + b / 10, "pulled rootfs allocates {a}, built {b}");
    // The downloaded blobs are gone once installed.
    let blobs = empty.cache_dir.join("oci/blobs");
    let left: Vec<_> = walk(&blobs);
    assert!(left.is_empty(), "{left:?}");
    // Pulling the same image again finds it installed.
    let again = empty.pull_from("debian:12", Some(&reference), &Progress::silent()).unwrap();
    assert_eq!(again.installed_at, pulled.installed_at);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn an_image_in_the_reference_layout_installs() {
    let Some((tmp, store)) = cache_with_debian_12() else { return };
    let source = store.installed("debian:12").unwrap().unwrap();
    let reg = TestRegistry::start();
    let layer = layer::pack(
        &[
            LayerFile { name: "some/dir/vmlinux".into(), source: source.kernel_image.clone() },
            LayerFile { name: "rootfs.ext4".into(), source: source.rootfs_image.clone() },
        ],
        &tmp.path().join("layer.tar.zst"),
        &ByteProgress::silent(),
    )
    .unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_path = tmp.path().join("config.json");
    std::fs::write(&config_path, config).unwrap();
    let config_desc = Descriptor {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: format!("sha256:{}", hex::encode(Sha256::digest(config))),
        size: config.len() as u64,
        annotations: BTreeMap::new(),
    };
    let layer_desc = Descriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        annotations: BTreeMap::new(),
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_desc.media_type, "digest": config_desc.digest, "size": config_desc.size},
        "layers": [{"mediaType": layer_desc.media_type, "digest": layer_desc.digest, "size": layer_desc.size}],
    });
    let r = Reference::parse(&format!("{}/reference/debian-12:1.0.0", reg.addr)).unwrap();
    let registry = Registry::new(&r).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        registry.push_blob(&r, &config_path, &config_desc, &ByteProgress::silent()).await.unwrap();
        registry.push_blob(&r, &layer.path, &layer_desc, &ByteProgress::silent()).await.unwrap();
        registry
            .push_manifest(&r, "application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).unwrap())
            .await
            .unwrap();
    });
    let empty = EnvStore { cache_dir: tmp.path().join("empty") };
    let pulled = empty.pull_from("debian:12", Some(&r.whole()), &Progress::silent()).unwrap();
    assert_eq!(pulled.kernel_release, source.kernel_release);
    assert_eq!(sha(&pulled.kernel_image), sha(&source.kernel_image));
    assert_eq!(
        std::fs::read_to_string(pulled.modules_dir.join("order")).unwrap(),
        std::fs::read_to_string(source.modules_dir.join("order")).unwrap(),
        "modules derived from the rootfs"
    );
}
