//! Environments through a real OCI registry (Debian's docker-registry on loopback, started by
//! `scripts/registry.sh`): push, pull as an unprivileged user into an empty cache, a second
//! push that uploads nothing, a tampered blob, a killed pull resumed, an image in the
//! reference's layout made by another tool, and bad input.
//!
//! The main flow uses the suite's shared registry when `PYRO_TEST_REGISTRY` (host:port) and
//! `PYRO_TEST_REGISTRY_DIR` (its directory) are set; tests that touch the registry's storage
//! start their own. Without the registry binary every test is skipped with a message, unless
//! `PYRO_REQUIRE_REGISTRY=1`.

mod common;

use common::{json, stderr, stdout, TestHome};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ENV: &str = "debian:12-base";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

fn registry_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/registry.sh")
}

/// Whether the registry server is here; when it is not, the test says so and passes, unless
/// the run requires it (CI installs it).
fn registry_available(test: &str) -> bool {
    if Path::new(REGISTRY_BIN).exists() {
        return true;
    }
    assert!(
        std::env::var("PYRO_REQUIRE_REGISTRY").as_deref() != Ok("1"),
        "{REGISTRY_BIN} is missing and PYRO_REQUIRE_REGISTRY=1: run scripts/registry.sh install"
    );
    eprintln!("skipped {test}: {REGISTRY_BIN} is missing (scripts/registry.sh install)");
    false
}

/// A running registry: its address and directory (config, storage, access log).
struct Registry {
    addr: String,
    dir: PathBuf,
    /// Set when this test started it: stopped and deleted on drop.
    own: Option<tempfile::TempDir>,
}

impl Registry {
    /// A registry of this test alone (its storage may be tampered with).
    fn private(htpasswd: Option<&Path>) -> Registry {
        let dir = tempfile::Builder::new().prefix("pyro-reg-").tempdir_in("/tmp").unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(registry_script()).arg("start").arg(dir.path());
        if let Some(h) = htpasswd {
            cmd.arg("--htpasswd").arg(h);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "registry.sh start failed: {}", stderr(&o));
        let addr = stdout(&o).trim().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Registry { addr, dir: dir.path().to_path_buf(), own: Some(dir) }
    }

    /// The suite's registry when test.sh started one, else a private one.
    fn shared() -> Registry {
        match (std::env::var("PYRO_TEST_REGISTRY"), std::env::var("PYRO_TEST_REGISTRY_DIR")) {
            (Ok(addr), Ok(dir)) if !addr.is_empty() && !dir.is_empty() => {
                Registry { addr, dir: PathBuf::from(dir), own: None }
            }
            _ => Registry::private(None),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines that contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Where the registry keeps blob `digest` (`sha256:<hex>`).
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir.join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if self.own.is_some() {
            let _ = Command::new("bash").arg(registry_script()).arg("stop").arg(&self.dir).status();
        }
    }
}

/// The suite's environment cache (root's), where `debian:12-base` is installed, pulling
/// (building) it there first when it is not.
fn shared_cache() -> PathBuf {
    let cache = std::env::var("PYRO_CACHE_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/pyro", std::env::var("HOME").unwrap_or_default()));
    let cache = PathBuf::from(cache);
    let home = TestHome::new();
    let inspect = pyro(&home, &cache).args(["env", "inspect", ENV, "--json"]).output().unwrap();
    if json(&inspect)["installed"] != true {
        let o = pyro(&home, &cache).args(["env", "pull", ENV, "--json"]).output().unwrap();
        assert!(o.status.success(), "building {ENV} failed: {}", stderr(&o));
    }
    cache
}

/// `pyro` as this (root) process, with state in `home` and environments in `cache`, never
/// reaching for a registry unless told to.
fn pyro(home: &TestHome, cache: &Path) -> Command {
    let mut c = home.cmd();
    c.env("PYRO_CACHE_DIR", cache).env_remove("PYRO_ENV_REGISTRY");
    c.env_remove("PYRO_REGISTRY_USERNAME").env_remove("PYRO_REGISTRY_PASSWORD");
    c
}

fn ok_json(o: &Output, what: &str) -> serde_json::Value {
    assert!(o.status.success(), "{what} failed: stdout={} stderr={}", stdout(o), stderr(o));
    json(o)
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success(), "sha256sum {}", path.display());
    stdout(&o).split_whitespace().next().unwrap().to_string()
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Install facts of `ENV` in `cache`: (installed, install_dir).
fn inspect(home: &TestHome, cache: &Path) -> (bool, PathBuf) {
    let v = ok_json(&pyro(home, cache).args(["env", "inspect", ENV, "--json"]).output().unwrap(), "inspect");
    (v["installed"] == true, PathBuf::from(v["install_dir"].as_str().unwrap()))
}

/// Push `ENV` from `cache` to `reference`; the payload.
fn push(home: &TestHome, cache: &Path, reference: &str) -> serde_json::Value {
    let o = pyro(home, cache).args(["env", "push", ENV, reference, "--json"]).output().unwrap();
    let v = ok_json(&o, &format!("push to {reference}"));
    assert_eq!(v["name"], ENV);
    assert_eq!(v["reference"], reference);
    v
}

fn layer<'a>(pushed: &'a serde_json::Value, title: &str) -> &'a serde_json::Value {
    pushed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["title"] == title)
        .unwrap_or_else(|| panic!("no {title} layer in {pushed}"))
}

/// A fresh, empty environment cache for root.
fn empty_cache() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pyro-oc-").tempdir_in("/tmp").unwrap()
}

/// The unprivileged user (`PYRO_TEST_USER`, default `pyro-test`, created by test.sh) with its
/// own copies of pyro's binaries, HOME, state and an empty cache it owns. When the tests do
/// not run as root, the current user plays it.
struct User {
    dir: tempfile::TempDir,
    name: Option<String>,
}

impl User {
    fn new() -> User {
        let dir = tempfile::Builder::new().prefix("pyro-ou-").tempdir_in("/tmp").unwrap();
        // SAFETY: geteuid(2) has no arguments and always succeeds.
        if unsafe { libc::geteuid() } != 0 {
            std::fs::create_dir(dir.path().join("cache")).unwrap();
            return User { dir, name: None };
        }
        let name = std::env::var("PYRO_TEST_USER").unwrap_or_else(|_| "pyro-test".into());
        assert!(Command::new("id").arg(&name).status().unwrap().success(), "user {name} missing: run scripts/test.sh");
        // The checkout may sit under a directory the user cannot enter (/root).
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let built = common::pyro_bin().parent().unwrap().to_path_buf();
        for b in ["pyro", "pyro-supervisor", "pyro-guest-agent"] {
            std::fs::copy(built.join(b), bin.join(b)).unwrap_or_else(|e| panic!("copy {b}: {e}"));
        }
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        let chown = Command::new("chown").arg("-R").arg(format!("{name}:{name}")).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        User { dir, name: Some(name) }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn pyro(&self) -> Command {
        let mut c = match &self.name {
            Some(name) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", name, "--regid", name, "--init-groups", "--"]);
                c.arg(self.dir.path().join("bin/pyro"));
                c
            }
            None => Command::new(common::pyro_bin()),
        };
        c.env("HOME", self.dir.path())
            .env("PYRO_HOME", self.dir.path().join("state"))
            .env("PYRO_CACHE_DIR", self.cache())
            .env_remove("PYRO_ENV_REGISTRY")
            .env_remove("PYRO_REGISTRY_USERNAME")
            .env_remove("PYRO_REGISTRY_PASSWORD")
            .env_remove("DOCKER_CONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.pyro().args(args).output().unwrap()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Whatever the user left running (a template VM) dies with the test.
        let needle = self.dir.path().display().to_string();
        for p in common::processes_mentioning(&needle) {
            if let Some(pid) = p.split(':').next().and_then(|s| s.parse::<i32>().ok()) {
                // SAFETY: kill(2) takes plain integers; the pid is a leftover of this test's user.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // The install is read-only to its owner: make it deletable.
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(self.dir.path()).status();
    }
}

/// Acceptance: push debian:12-base, pull it back as an unprivileged user with an empty cache,
/// same bytes and about the same allocated size; it boots; pruning it by name deletes it.
#[test]
fn pushed_environment_is_pulled_by_an_unprivileged_user_and_boots() {
    if !registry_available("pushed_environment_is_pulled_by_an_unprivileged_user_and_boots") {
        return;
    }
    let cache = shared_cache();
    let reg = Registry::shared();
    let home = TestHome::new();
    let (installed, src_dir) = inspect(&home, &cache);
    assert!(installed);
    let src_kernel = sha256(&src_dir.join("vmlinux"));
    let src_rootfs = sha256(&src_dir.join("rootfs.ext4"));
    let src_allocated = allocated(&src_dir.join("rootfs.ext4"));

    let repo = "pyro-test/debian-12-base";
    let reference = format!("{}/{repo}:1.0.0", reg.addr);
    let pushed = push(&home, &cache, &reference);
    let digest = pushed["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{pushed}");
    for title in ["kernel", "rootfs"] {
        assert_eq!(layer(&pushed, title)["media_type"], "application/vnd.oci.image.layer.v1.tar+zstd", "{pushed}");
    }
    // Sparse on the wire: the 2 GiB image is sent as far less.
    let rootfs_blob = layer(&pushed, "rootfs")["size"].as_u64().unwrap();
    assert!(rootfs_blob < src_allocated, "rootfs layer {rootfs_blob} bytes, allocated {src_allocated}");

    let user = User::new();
    let o = user.run(&["env", "pull", ENV, &reference, "--json"]);
    let pulled = ok_json(&o, "unprivileged pull");
    assert_eq!(pulled["installed"], true, "{pulled}");
    assert_eq!(pulled["source"], format!("oci://{}/{repo}@{digest}", reg.addr), "{pulled}");
    let kernel = PathBuf::from(pulled["kernel_image"].as_str().unwrap());
    let rootfs = PathBuf::from(pulled["rootfs_image"].as_str().unwrap());
    assert!(rootfs.starts_with(user.cache()), "{}", rootfs.display());
    assert_eq!(sha256(&kernel), src_kernel, "vmlinux differs from the pushed one");
    assert_eq!(sha256(&rootfs), src_rootfs, "rootfs.ext4 differs from the pushed one");
    let size = std::fs::metadata(&rootfs).unwrap().len();
    assert_eq!(size, std::fs::metadata(src_dir.join("rootfs.ext4")).unwrap().len());
    let got = allocated(&rootfs);
    // Never more than the built image (+10%); less is expected, since all-zero blocks the
    // build had allocated come back as holes (debian:12-base: about 0.8x). Under half would
    // mean data went missing, which the sha256 above would also catch.
    let (lo, hi) = (src_allocated as f64 * 0.5, src_allocated as f64 * 1.1);
    assert!((lo..=hi).contains(&(got as f64)), "allocated {got} bytes, the source {src_allocated}");
    assert!(got < size / 4, "the pulled rootfs is not sparse: {got} of {size} bytes allocated");
    if user.name.is_some() {
        let owner = std::fs::metadata(&rootfs).unwrap().uid();
        assert_ne!(owner, 0, "the install was made by root");
    }

    let o = user.run(&["run", ENV, "--json", "--", "cat", "/etc/debian_version"]);
    let v = ok_json(&o, "unprivileged run");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(v["stdout"].as_str().unwrap().starts_with("12."), "{v}");

    let o = user.run(&["env", "prune", ENV, "--json"]);
    let pruned = ok_json(&o, "prune by name");
    assert!(pruned["count"].as_u64().unwrap() >= 1, "{pruned}");
    let v = ok_json(&user.run(&["env", "inspect", ENV, "--json"]), "inspect");
    assert_eq!(v["installed"], false, "{v}");
    assert!(!rootfs.exists(), "{} survived the prune", rootfs.display());
}

/// Acceptance: a second push of an unchanged environment uploads no blob (the registry's
/// access log shows no new upload session for the repository).
#[test]
fn second_push_uploads_no_blob() {
    if !registry_available("second_push_uploads_no_blob") {
        return;
    }
    let cache = shared_cache();
    let reg = Registry::shared();
    let home = TestHome::new();
    // A repository of this test alone: blob presence is per repository in the registry.
    let repo = format!("pyro-test/repush-{}", std::process::id());
    let reference = format!("{}/{repo}:1.0.0", reg.addr);
    let uploads = format!("POST /v2/{repo}/blobs/uploads/");
    let first = push(&home, &cache, &reference);
    assert!(first["uploaded_count"].as_u64().unwrap() >= 2, "{first}");
    let before = reg.count(&uploads);
    assert!(before >= 2, "the first push started no upload:\n{}", reg.log());

    let second = push(&home, &cache, &reference);
    assert_eq!(second["digest"], first["digest"], "an unchanged environment makes the same manifest");
    assert_eq!(second["uploaded_count"], 0, "{second}");
    assert_eq!(second["uploaded_bytes"], 0, "{second}");
    for l in second["layers"].as_array().unwrap() {
        assert_eq!(l["uploaded"], false, "{second}");
    }
    assert_eq!(reg.count(&uploads), before, "the second push started blob uploads");

    // The human form says the same.
    let o = pyro(&home, &cache).args(["env", "push", ENV, &reference]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!("Pushed: {ENV}\nReference: {reference}\nDigest: sha256:")), "{text}");
    assert!(text.contains("already present") && !text.contains(" uploaded\n"), "{text}");
    assert!(text.contains("Uploaded 0 of"), "{text}");
    assert_eq!(reg.count(&uploads), before);
}

/// Acceptance: a blob changed in the registry's storage is rejected with a digest error;
/// nothing is installed, and an existing install of the environment stays as it was.
#[test]
fn tampered_blob_is_rejected_and_nothing_is_installed() {
    if !registry_available("tampered_blob_is_rejected_and_nothing_is_installed") {
        return;
    }
    let cache = shared_cache();
    let reg = Registry::private(None);
    let home = TestHome::new();
    let reference = format!("{}/pyro-test/tamper:1.0.0", reg.addr);
    let pushed = push(&home, &cache, &reference);
    let blob = reg.blob_data(layer(&pushed, "rootfs")["digest"].as_str().unwrap());
    let len = std::fs::metadata(&blob).unwrap().len();
    assert!(len > 1 << 20, "{len}");
    {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&blob).unwrap();
        let mut buf = vec![0u8; 4096];
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.read_exact(&mut buf).unwrap();
        for b in &mut buf {
            *b ^= 0x5a;
        }
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&buf).unwrap();
    }

    // Into an empty cache.
    let empty = empty_cache();
    let o = pyro(&home, empty.path()).args(["env", "pull", ENV, &reference]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "a tampered blob was accepted: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("digest"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (installed, dir) = inspect(&home, empty.path());
    assert!(!installed);
    assert!(!dir.exists(), "{} exists after a failed pull", dir.display());

    // Over an existing install (a copy of the local build): it stays byte-identical.
    let (_, src_dir) = inspect(&home, &cache);
    let prior = empty_cache();
    let rel = src_dir.strip_prefix(&cache).unwrap();
    let dest = prior.path().join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let cp = Command::new("cp").args(["-a", "--sparse=always"]).arg(&src_dir).arg(&dest).status().unwrap();
    assert!(cp.success());
    let (installed, dir) = inspect(&home, prior.path());
    assert!(installed && dir == dest, "the copied install is not recognised");
    let files = ["vmlinux", "rootfs.ext4", "environment.json"];
    let before: Vec<String> = files.iter().map(|f| sha256(&dest.join(f))).collect();
    let o = pyro(&home, prior.path()).args(["env", "pull", ENV, &reference, "--json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "a tampered blob was accepted: {}", stdout(&o));
    let v = json(&o);
    assert!(v["error"].as_str().unwrap().contains("digest"), "{v}");
    let after: Vec<String> = files.iter().map(|f| sha256(&dest.join(f))).collect();
    assert_eq!(before, after, "the previous install changed");
    assert!(inspect(&home, prior.path()).0, "the previous install is gone");
}

/// Acceptance: `kill -9` of a pull half way leaves nothing installed; the next pull completes
/// and does not fetch again what the first one already had.
#[test]
fn killed_pull_resumes() {
    if !registry_available("killed_pull_resumes") {
        return;
    }
    let cache = shared_cache();
    let reg = Registry::private(None);
    let home = TestHome::new();
    let repo = "pyro-test/resume";
    let reference = format!("{}/{repo}:1.0.0", reg.addr);
    let pushed = push(&home, &cache, &reference);
    let rootfs_digest = layer(&pushed, "rootfs")["digest"].as_str().unwrap().to_string();
    let rootfs_size = layer(&pushed, "rootfs")["size"].as_u64().unwrap();
    let hex = rootfs_digest.strip_prefix("sha256:").unwrap().to_string();

    let target = empty_cache();
    let blobs = target.path().join("oci/blobs/sha256");
    let mut child = pyro(&home, target.path())
        .args(["env", "pull", ENV, &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once part of the rootfs blob is on disk (or all of it, extraction running).
    let started = Instant::now();
    let seen;
    loop {
        let partial = std::fs::metadata(blobs.join(format!("{hex}.partial"))).map(|m| m.len()).unwrap_or(0);
        let whole = blobs.join(&hex).exists();
        if partial >= (4 << 20).min(rootfs_size / 2) || whole {
            seen = if whole { rootfs_size } else { partial };
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the pull ended ({status}) before it could be killed");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no rootfs blob appeared in {}", blobs.display());
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed the pull with {seen} of {rootfs_size} rootfs blob bytes on disk");
    let (installed, dir) = inspect(&home, target.path());
    assert!(!installed, "a killed pull counts as installed");
    assert!(!dir.exists(), "{} exists after a killed pull", dir.display());

    let log_before = reg.log().len();
    let o = pyro(&home, target.path()).args(["env", "pull", ENV, &reference, "--json"]).output().unwrap();
    let v = ok_json(&o, "the repeated pull");
    assert_eq!(v["installed"], true);
    assert_eq!(
        sha256(Path::new(v["rootfs_image"].as_str().unwrap())),
        sha256(&inspect(&home, &cache).1.join("rootfs.ext4"))
    );
    // Reuse: the second pull fetched the rootfs blob not at all (complete before the kill) or
    // from where the first stopped (a range request, HTTP 206), never whole again.
    let log = reg.log();
    let gets: Vec<&str> =
        log[log_before..].lines().filter(|l| l.contains(&format!("GET /v2/{repo}/blobs/{rootfs_digest}"))).collect();
    for l in &gets {
        assert!(l.contains("\" 206 "), "the rootfs blob was fetched again from the start: {l}");
    }
    eprintln!("second pull: {} range request(s) for the rootfs blob", gets.len());
    // Verified blobs go once installed.
    let left: Vec<_> =
        std::fs::read_dir(&blobs).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "blobs left after the install: {left:?}");
}

/// Push a Docker v2 image, as other tools publish environments (one gzip tar layer holding
/// `env/vmlinux` and `env/rootfs.ext4`, a plain image config), with the registry HTTP API.
const FOREIGN_PUSH: &str = r#"
import hashlib, json, sys, urllib.request
registry, repo, tag, layer_path, diff_id = sys.argv[1:6]
base = f"http://{registry}/v2/{repo}"

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

def upload(body_path=None, data=None):
    digest = sha256_file(body_path) if body_path else "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(base + "/blobs/uploads/", method="POST", data=b""))
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{registry}{loc}"
    sep = "&" if "?" in loc else "?"
    if body_path:
        import os
        size = os.path.getsize(body_path)
        body = open(body_path, "rb")
    else:
        size, body = len(data), data
    req = urllib.request.Request(loc + sep + "digest=" + digest, method="PUT", data=body,
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    urllib.request.urlopen(req)
    return digest, size

layer_digest, layer_size = upload(body_path=layer_path)
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                     "config": {}}, separators=(",", ":")).encode()
config_digest, config_size = upload(data=config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config_size, "digest": config_digest},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": layer_size, "digest": layer_digest}],
}).encode()
req = urllib.request.Request(f"{base}/manifests/{tag}", method="PUT", data=manifest,
                             headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
r = urllib.request.urlopen(req)
print(r.headers["Docker-Content-Digest"])
"#;

/// Acceptance: an image in the reference's layout, made without pyro, is pulled and boots.
#[test]
fn reference_layout_image_is_pulled_and_boots() {
    if !registry_available("reference_layout_image_is_pulled_and_boots") {
        return;
    }
    let cache = shared_cache();
    let reg = Registry::private(None);
    let home = TestHome::new();
    let (_, src_dir) = inspect(&home, &cache);
    let work = tempfile::Builder::new().prefix("pyro-ref-").tempdir_in("/tmp").unwrap();
    let env_dir = work.path().join("env");
    std::fs::create_dir(&env_dir).unwrap();
    for f in ["vmlinux", "rootfs.ext4"] {
        let cp = Command::new("cp").arg("--sparse=always").arg(src_dir.join(f)).arg(env_dir.join(f)).status().unwrap();
        assert!(cp.success());
    }
    // A plain (not sparse) tar, as the reference's images are: the zeros are the puller's
    // business. diff_id is the digest of the uncompressed tar.
    let layer = work.path().join("layer.tar.gz");
    let script = format!(
        "set -euo pipefail; tar -C {w} --owner=0 --group=0 -cf - env | tee >(sha256sum | cut -d' ' -f1 > {w}/diff_id) | gzip -1 > {l}; wait",
        w = work.path().display(),
        l = layer.display()
    );
    let st = Command::new("bash").arg("-c").arg(&script).status().unwrap();
    assert!(st.success());
    // The process substitution may finish after the pipeline.
    let mut diff_id = String::new();
    for _ in 0..100 {
        diff_id = std::fs::read_to_string(work.path().join("diff_id")).unwrap_or_default().trim().to_string();
        if diff_id.len() == 64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(diff_id.len(), 64, "no diff_id");
    let repo = "thalesmaciel/pyro-environment-debian-12-base";
    let o = Command::new("python3")
        .args(["-c", FOREIGN_PUSH, &reg.addr, repo, "1.0.0"])
        .arg(&layer)
        .arg(format!("sha256:{diff_id}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "foreign push failed: {}", stderr(&o));
    let digest = stdout(&o).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    drop(work);

    // Through PYRO_ENV_REGISTRY: `env pull NAME` finds the catalog repository there.
    let target = empty_cache();
    let o = pyro(&home, target.path())
        .env("PYRO_ENV_REGISTRY", &reg.addr)
        .args(["env", "pull", ENV, "--json"])
        .output()
        .unwrap();
    let v = ok_json(&o, "pull of the reference-layout image");
    assert_eq!(v["source"], format!("oci://{}/{repo}@{digest}", reg.addr), "{v}");
    assert_eq!(sha256(Path::new(v["rootfs_image"].as_str().unwrap())), sha256(&src_dir.join("rootfs.ext4")));
    let rootfs = PathBuf::from(v["rootfs_image"].as_str().unwrap());
    assert!(allocated(&rootfs) < std::fs::metadata(&rootfs).unwrap().len() / 4, "the pulled rootfs is not sparse");
    let o =
        pyro(&home, target.path()).args(["run", ENV, "--json", "--", "cat", "/etc/debian_version"]).output().unwrap();
    let v = ok_json(&o, "run on the reference-layout install");
    assert!(v["stdout"].as_str().unwrap().starts_with("12."), "{v}");
}

/// Bad input: each a specific error, nothing installed.
#[test]
fn bad_references_and_registries_are_specific_errors() {
    if !registry_available("bad_references_and_registries_are_specific_errors") {
        return;
    }
    let home = TestHome::new();
    let target = empty_cache();
    let fails = |args: &[&str], env: &[(&str, &str)]| -> serde_json::Value {
        let mut c = pyro(&home, target.path());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.args(args).arg("--json").output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?} should fail: {} {}", stdout(&o), stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        let v = json(&o);
        assert_eq!(v["ok"], false, "{v}");
        v
    };
    let not_installed = |what: &str| {
        let (installed, dir) = inspect(&home, target.path());
        assert!(!installed && !dir.exists(), "{what}: something was installed");
    };

    // Nothing listens on port 1.
    let v = fails(&["env", "pull", ENV, "127.0.0.1:1/x/y:1"], &[]);
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("cannot reach registry 127.0.0.1:1"), "{v}");
    not_installed("unreachable registry");

    for bad in ["127.0.0.1:5000/UPPER/case:1", "127.0.0.1:5000/x/y:bad tag", ""] {
        let v = fails(&["env", "pull", ENV, bad], &[]);
        assert_eq!(v["code"], "invalid_input", "{bad:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("invalid image reference"), "{bad:?}: {v}");
    }
    not_installed("malformed references");

    let reg = Registry::shared();
    let v = fails(&["env", "pull", ENV, &format!("{}/pyro-test/no-such-repo:9.9.9", reg.addr)], &[]);
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
    not_installed("missing tag");

    // A registry that wants credentials.
    let dir = tempfile::Builder::new().prefix("pyro-htp-").tempdir_in("/tmp").unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let o = Command::new("htpasswd").args(["-Bbn", "pyro", "s3cret"]).output().unwrap();
    assert!(o.status.success());
    std::fs::write(&htpasswd, &o.stdout).unwrap();
    let locked = Registry::private(Some(&htpasswd));
    let reference = format!("{}/pyro-test/locked:1.0.0", locked.addr);
    let v = fails(&["env", "pull", ENV, &reference], &[]);
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("401") && e.contains("credentials"), "{v}");
    let v = fails(
        &["env", "pull", ENV, &reference],
        &[("PYRO_REGISTRY_USERNAME", "pyro"), ("PYRO_REGISTRY_PASSWORD", "wrong")],
    );
    assert!(v["error"].as_str().unwrap().contains("401"), "{v}");
    not_installed("registry without credentials");
    // With them, a push goes through; a pull without them still does not.
    let cache = shared_cache();
    let o = pyro(&home, &cache)
        .env("PYRO_REGISTRY_USERNAME", "pyro")
        .env("PYRO_REGISTRY_PASSWORD", "s3cret")
        .args(["env", "push", ENV, &reference, "--json"])
        .output()
        .unwrap();
    let pushed = ok_json(&o, "push with credentials");
    assert!(pushed["uploaded_count"].as_u64().unwrap() >= 2, "{pushed}");
    let v = fails(&["env", "pull", ENV, &reference], &[]);
    assert!(v["error"].as_str().unwrap().contains("401"), "{v}");
    not_installed("registry without credentials, image present");

    // Push of an environment this cache does not have.
    let v = fails(&["env", "push", ENV, &reference], &[]);
    assert_eq!(v["code"], "not_found", "{v}");
    assert!(v["error"].as_str().unwrap().contains("not installed"), "{v}");
    // Push with no reference and no PYRO_ENV_REGISTRY.
    let v = fails(&["env", "push", ENV], &[]);
    assert_eq!(v["code"], "invalid_input", "{v}");
    assert!(v["error"].as_str().unwrap().contains("PYRO_ENV_REGISTRY"), "{v}");
    // Names a prune does not know.
    let v = fails(&["env", "prune", "debian:99"], &[]);
    assert_eq!(v["code"], "not_found", "{v}");
}

/// A full disk is a specific error and installs nothing: a cache on a small tmpfs, once too
/// small for the download (refused before it starts) and once big enough for the download but
/// not for the unpacked rootfs (refused before unpacking). Needs root for the mount.
#[test]
fn full_disk_is_a_specific_error() {
    if !registry_available("full_disk_is_a_specific_error") {
        return;
    }
    if !is_root() {
        eprintln!("full_disk_is_a_specific_error: skipped (mounting a tmpfs needs root)");
        return;
    }
    let cache = shared_cache();
    let reg = Registry::shared();
    let home = TestHome::new();
    let reference = format!("{}/pyro-test/full-disk:1.0.0", reg.addr);
    let pushed = push(&home, &cache, &reference);
    let download: u64 = ["kernel", "rootfs"].iter().map(|t| layer(&pushed, t)["size"].as_u64().unwrap()).sum();
    for (size_mib, stage) in [((download / 2) >> 20, "the download"), ((download >> 20) + 100, "rootfs.ext4")] {
        let mnt = tempfile::Builder::new().prefix("pyro-full-").tempdir_in("/tmp").unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(mnt.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs");
        let o = pyro(&home, mnt.path()).args(["env", "pull", ENV, &reference, "--json"]).output().unwrap();
        let (installed, dir) = inspect(&home, mnt.path());
        let _ = Command::new("umount").arg(mnt.path()).status();
        assert_eq!(o.status.code(), Some(1), "a pull into {size_mib} MiB succeeded: {}", stdout(&o));
        let v = json(&o);
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("not enough disk space"), "{size_mib} MiB: {v}");
        assert!(e.contains(stage), "{size_mib} MiB: expected the {stage} to be refused: {v}");
        assert!(!installed && !dir.exists(), "{size_mib} MiB: something was installed");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
