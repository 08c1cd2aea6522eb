//! Environment installs end to end. The ignored tests really run debootstrap (root and
//! network needed, minutes):
//! `cargo test -p pyro --test env_build -- --ignored --test-threads=1`.

use pyro::env::{EnvStore, MANIFEST_FILE};
use pyro::{Progress, ProgressEvent};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Tests here change process environment variables; run them one at a time.
static ENV_VARS: Mutex<()> = Mutex::new(());

fn recorder() -> (Progress, Arc<Mutex<Vec<ProgressEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (Progress::new(move |e| sink.lock().unwrap().push(e.clone())), events)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A fresh cache that reuses the machine's downloaded .debs, when there are any.
fn cache_with_debs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let shared = std::env::var("PYRO_CACHE_DIR").unwrap_or_else(|_| format!("{home}/.cache/pyro"));
    let debs = Path::new(&shared).join("debootstrap-debs");
    let dest = tmp.path().join("debootstrap-debs");
    std::fs::create_dir_all(&dest).unwrap();
    for name in entries(&debs).into_iter().filter(|n| n.ends_with(".deb")) {
        let _ = std::fs::copy(debs.join(&name), dest.join(&name));
    }
    tmp
}

/// With `PYRO_ENV_REGISTRY` set, a pull goes to that registry, under the catalog's repository
/// name, and a registry that cannot be reached is an error: never a silent local build.
#[test]
fn a_configured_registry_is_used_never_a_silent_build() {
    let _g = ENV_VARS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let store = EnvStore { cache_dir: tmp.path().to_path_buf() };
    // Nothing listens on port 1.
    std::env::set_var("PYRO_ENV_REGISTRY", "127.0.0.1:1/team");
    let (progress, events) = recorder();
    let r = store.pull("debian:12-base", &progress);
    std::env::remove_var("PYRO_ENV_REGISTRY");
    let e = r.unwrap_err();
    assert_eq!(e.code(), "environment");
    let msg = e.to_string();
    assert!(msg.contains("127.0.0.1:1/team/thalesmaciel/pyro-environment-debian-12-base:1.0.0"), "{msg}");
    assert!(msg.contains("cannot reach registry 127.0.0.1:1"), "{msg}");
    assert!(
        !events.lock().unwrap().iter().any(|ev| ev.stage == "host-check" || ev.stage == "debootstrap"),
        "a local build was attempted"
    );
    assert!(store.installed("debian:12-base").unwrap().is_none());
    assert!(!entries(&store.root()).iter().any(|n| n.starts_with(".partial-")), "{:?}", entries(&store.root()));
    assert_eq!(store.pull("fedora", &Progress::silent()).unwrap_err().code(), "not_found");
}

#[test]
#[ignore = "runs debootstrap: needs root"]
fn a_failed_build_leaves_no_partial_install_and_says_why() {
    let _g = ENV_VARS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let store = EnvStore { cache_dir: tmp.path().to_path_buf() };
    // Nothing listens on port 9: debootstrap fails at its first download.
    std::env::set_var("PYRO_DEBIAN_MIRROR", "http://127.0.0.1:9/debian");
    let r = store.pull("debian:12-base", &Progress::silent());
    std::env::remove_var("PYRO_DEBIAN_MIRROR");
    let e = r.unwrap_err();
    assert_eq!(e.code(), "environment", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("debootstrap failed"), "{msg}");
    assert!(msg.contains("127.0.0.1:9"), "the log tail names the mirror: {msg}");
    let left = entries(&store.root());
    assert!(!left.iter().any(|n| n.starts_with(".partial-") || n == "debian_12-base-1.0.0"), "{left:?}");
    assert!(left.contains(&".debian_12-base-1.0.0.failed-build.log".to_string()), "{left:?}");
    assert!(store.installed("debian:12-base").unwrap().is_none());
}

#[test]
#[ignore = "builds debian:12-base for real: needs root, network, ~2 minutes"]
fn concurrent_pulls_build_once_and_the_result_boots_as_an_initramfs() {
    let _g = ENV_VARS.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = cache_with_debs();
    let store = EnvStore { cache_dir: tmp.path().to_path_buf() };
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let (progress, events) = recorder();
                let env = store.pull("debian:12-base", &progress).unwrap();
                let built = events.lock().unwrap().iter().any(|e| e.stage == "debootstrap");
                (env, built)
            })
        })
        .collect();
    let results: Vec<_> = pulls.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, built)| *built).count(), 1, "exactly one pull builds");
    assert_eq!(results[0].0.install_dir, results[1].0.install_dir);
    let env = &results[0].0;
    assert_eq!(entries(&env.install_dir), ["build.log", MANIFEST_FILE, "modules", "rootfs.ext4", "vmlinux"]);
    let fsck = std::process::Command::new("e2fsck").arg("-fn").arg(&env.rootfs_image).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    let order = std::fs::read_to_string(env.modules_dir.join("order")).unwrap();
    for m in ["virtio_mmio.ko", "virtio_blk.ko", "virtio_console.ko", "vsock.ko"] {
        assert!(order.lines().any(|l| l == m), "{m} in {order}");
    }
    assert!(!entries(&store.root()).iter().any(|n| n.starts_with(".partial-")));

    // Pulling again is a cache hit; prune keeps the install.
    let t = std::time::Instant::now();
    store.pull("debian:12-base", &Progress::silent()).unwrap();
    assert!(t.elapsed().as_secs() < 2);
    assert_eq!(store.prune().unwrap().count, 0);
    let payload = store.pull_payload("debian:12-base").unwrap();
    assert!(payload.environment.installed);
    assert_eq!(payload.source, "local-build");

    // The initramfs takes the environment's modules and any static ELF as /init.
    let agent = tmp.path().join("agent");
    std::fs::copy(&env.kernel_image, &agent).unwrap(); // a static ELF is all it checks
    let cpio = pyro::env::initramfs_for(env, &agent, tmp.path()).unwrap();
    let listed = std::process::Command::new("cpio").args(["-t", "--quiet", "-F"]).arg(&cpio).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.lines().any(|l| l == "lib/pyro-modules/virtio_blk.ko"), "{listed}");
}
