//! Warm `pyro run` acceptance tests: real QEMU guests restored from an environment's template
//! (TCG here), real agent. Each test has its own cache dir whose `environments` and `probe`
//! are the shared cache's (installed once), so its templates are its own.

mod common;

use common::{json, stderr, stdout, TestHome};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private cache dir borrowing the shared cache's environments, plus a private home.
struct WarmCache {
    home: TestHome,
    cache: tempfile::TempDir,
}

fn shared_cache() -> PathBuf {
    std::env::var_os("PYRO_CACHE_DIR").map(PathBuf::from).expect("PYRO_CACHE_DIR names the shared cache")
}

impl WarmCache {
    fn new() -> Self {
        let cache = tempfile::Builder::new().prefix("pyro-wc-").tempdir_in("/tmp").unwrap();
        let shared = shared_cache();
        for d in ["environments", "probe"] {
            std::os::unix::fs::symlink(shared.join(d), cache.path().join(d)).unwrap();
        }
        WarmCache { home: TestHome::new(), cache }
    }

    fn cmd(&self) -> Command {
        let mut c = self.home.cmd();
        c.env("PYRO_CACHE_DIR", self.cache.path()).env_remove("PYRO_WARM_RUN");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn run_cold(&self, args: &[&str]) -> Output {
        self.cmd().env("PYRO_WARM_RUN", "off").args(args).output().unwrap()
    }

    fn templates(&self) -> PathBuf {
        self.cache.path().join("templates")
    }

    /// The complete template directories (not builds, locks or markers).
    fn template_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.templates())
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn only_template(&self) -> PathBuf {
        let dirs = self.template_dirs();
        assert_eq!(dirs.len(), 1, "one template expected: {dirs:?}");
        dirs.into_iter().next().unwrap()
    }
}

impl Drop for WarmCache {
    fn drop(&mut self) {
        // Templates are read-only inside: make them removable for TempDir.
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(self.cache.path()).status();
    }
}

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "run failed: stdout={} stderr={}", stdout(o), stderr(o));
    json(o)
}

fn start_mode(v: &Value) -> (&str, &str) {
    (v["metadata"]["start_mode"].as_str().unwrap_or(""), v["metadata"]["start_reason"].as_str().unwrap_or(""))
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn rootfs() -> PathBuf {
    shared_cache().join("environments/linux-x86_64/debian_12-1.0.0/rootfs.ext4")
}

/// Writes to tmpfs and to the root disk, checks neither survives from an earlier run, drops
/// the guest's caches and rereads from the disk (the template's blocks) what it just wrote
/// plus a binary it never ran, and reports any ext4 error the guest kernel logged.
const WARM_CHECK: &str = "test -e /tmp/x && echo leaked-tmp; test -e /root/y && echo leaked-disk; \
     echo ok > /tmp/x; echo ok > /root/y; sync; echo 3 > /proc/sys/vm/drop_caches; \
     cat /root/y >/dev/null && git --version >/dev/null || echo reread-failed; \
     dmesg | grep -i 'ext4.*error' ; cat /tmp/x";

#[test]
fn fifty_warm_runs_then_a_cold_run_sees_a_clean_disk() {
    let c = WarmCache::new();
    let base = rootfs();
    let (base_sum, base_mtime) = (sha256(&base), mtime(&base));

    // First use: the template is built, then restored; the phase lines say so.
    let o = c.run(&["run", "debian:12", "--", "sh", "-c", "echo ok > /tmp/x; cat /tmp/x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ok\n");
    let err = stderr(&o);
    assert!(err.contains("start_mode=warm"), "{err}");
    assert!(err.contains("built"), "{err}");
    let template = c.only_template();
    let (disk, state) = (template.join("rootfs.qcow2"), template.join("memory.state"));
    let (disk_sum, state_sum, disk_mtime) = (sha256(&disk), sha256(&state), mtime(&disk));
    for f in [&disk, &state, &template.join("memory.json"), &template.join("template.json")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444, "{} is read-only", f.display());
    }

    for i in 0..50 {
        let o = c.run(&["run", "debian:12", "--json", "--", "sh", "-c", "echo ok > /tmp/x; cat /tmp/x"]);
        let v = ok_json(&o);
        assert_eq!(v["stdout"], "ok\n", "run {i}: {v}");
        assert_eq!(start_mode(&v).0, "warm", "run {i}: {v}");
        if i % 10 == 0 {
            let o = c.run(&["run", "debian:12", "--json", "--", "sh", "-c", WARM_CHECK]);
            let v = ok_json(&o);
            assert_eq!(v["stdout"], "ok\n", "check after run {i}: {v}");
            assert_eq!(start_mode(&v).0, "warm");
        }
    }

    // Warm runs never write the template nor the environment's image.
    assert_eq!(sha256(&disk), disk_sum, "the template's disk changed");
    assert_eq!(mtime(&disk), disk_mtime, "the template's disk was written");
    assert_eq!(sha256(&state), state_sum, "the template's memory state changed");
    assert_eq!(sha256(&base), base_sum, "the environment's rootfs changed");
    assert_eq!(mtime(&base), base_mtime);
    let fsck = Command::new("e2fsck").args(["-fn"]).arg(&base).output().unwrap();
    assert_eq!(fsck.status.code(), Some(0), "e2fsck: {}{}", stdout(&fsck), stderr(&fsck));
    // The disk state the template's memory belongs to is a consistent filesystem too (as of
    // the pause: mounted, so its journal is not replayed by a read-only check).
    let flat = c.cache.path().join("template-flat.raw");
    let convert = Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&disk).arg(&flat).output().unwrap();
    assert!(convert.status.success(), "{}", stderr(&convert));
    let fsck = Command::new("e2fsck").args(["-fn"]).arg(&flat).output().unwrap();
    assert_eq!(fsck.status.code(), Some(0), "e2fsck of the template disk: {}{}", stdout(&fsck), stderr(&fsck));
    std::fs::remove_file(&flat).unwrap();

    // A forced cold boot sees none of it.
    let o = c.run_cold(&["run", "debian:12", "--json", "--", "sh", "-c", "ls /tmp/x /root/y 2>/dev/null; echo done"]);
    let v = ok_json(&o);
    assert_eq!(v["stdout"], "done\n", "{v}");
    let (mode, reason) = start_mode(&v);
    assert_eq!(mode, "cold");
    assert!(reason.contains("PYRO_WARM_RUN"), "{reason}");
}

#[test]
fn a_corrupt_template_runs_cold_says_why_and_is_rebuilt() {
    let c = WarmCache::new();
    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "true"]));
    assert_eq!(start_mode(&v).0, "warm", "{v}");
    let template = c.only_template();
    let state = template.join("memory.state");
    // Truncate the saved memory (the directory is read-only: open it up first, as a
    // careless user or a crashed disk would).
    Command::new("chmod").args(["-R", "u+w"]).arg(&template).status().unwrap();
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&state).unwrap().set_len(len / 2).unwrap();

    let o = c.run(&["run", "debian:12", "--json", "--", "echo", "still-ok"]);
    let v = ok_json(&o);
    assert_eq!(v["stdout"], "still-ok\n");
    let (mode, reason) = start_mode(&v);
    assert_eq!(mode, "cold", "{v}");
    assert!(reason.contains("unusable") && reason.contains("memory state"), "{reason}");
    assert!(c.template_dirs().is_empty(), "the corrupt template is removed");

    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "true"]));
    let (mode, reason) = start_mode(&v);
    assert_eq!(mode, "warm", "{v}");
    assert!(reason.contains("built"), "{reason}");

    // Damaged inside, whole in size: QEMU refuses to load it; the run boots cold instead.
    let template = c.only_template();
    let state = template.join("memory.state");
    Command::new("chmod").args(["-R", "u+w"]).arg(&template).status().unwrap();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&state).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xa5; 4096]).unwrap();
    }
    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "echo", "still-ok"]));
    assert_eq!(v["stdout"], "still-ok\n");
    let (mode, reason) = start_mode(&v);
    assert_eq!(mode, "cold", "{v}");
    assert!(reason.contains("restoring the template failed") && reason.contains("removed"), "{reason}");
    assert!(c.template_dirs().is_empty(), "the template that failed to restore is removed");
}

#[test]
fn a_template_belongs_to_one_vm_shape() {
    let c = WarmCache::new();
    let v = ok_json(&c.run(&["run", "debian:12", "--mem-mib", "512", "--json", "--", "true"]));
    assert_eq!(start_mode(&v), ("warm", "no template yet: built it, then restored it"), "{v}");
    let first = c.only_template();
    let v = ok_json(&c.run(&["run", "debian:12", "--mem-mib", "512", "--json", "--", "true"]));
    assert_eq!(start_mode(&v), ("warm", "restored the environment's template"), "{v}");

    // Another shape is another template: the 512 MiB one is not used for it.
    let v = ok_json(&c.run(&[
        "run",
        "debian:12",
        "--mem-mib",
        "768",
        "--json",
        "--",
        "sh",
        "-c",
        "free -m | awk '/Mem:/{print $2}'",
    ]));
    assert_eq!(start_mode(&v).1, "no template yet: built it, then restored it", "{v}");
    let mib: u32 = v["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(mib > 600, "the guest has the 768 MiB shape, not the template's 512: {mib}");
    let dirs = c.template_dirs();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert!(dirs.contains(&first));

    // Stale templates of this environment are removed when the next one is built: one made
    // from another install of the environment (another identity), and one of the same shape
    // made by another agent, kernel or QEMU (another key).
    let stale = |name: &str, edit: &dyn Fn(&mut Value)| {
        let dir = c.templates().join(name);
        assert!(Command::new("cp").arg("-a").arg(&first).arg(&dir).status().unwrap().success());
        Command::new("chmod").args(["-R", "u+w"]).arg(&dir).status().unwrap();
        let record = dir.join("template.json");
        let mut r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        r["key"] = Value::String(name.to_string());
        edit(&mut r);
        std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
        dir
    };
    let old_install =
        stale("debian_12.000000000000000000000000", &|r| r["env_identity"] = Value::String("0".repeat(64)));
    let old_agent = stale("debian_12.111111111111111111111111", &|r| r["mem_mib"] = Value::from(640));
    let v = ok_json(&c.run(&["run", "debian:12", "--mem-mib", "640", "--json", "--", "true"]));
    assert_eq!(start_mode(&v).0, "warm", "{v}");
    let dirs = c.template_dirs();
    assert!(!dirs.contains(&old_install) && !dirs.contains(&old_agent), "stale templates remain: {dirs:?}");
    assert_eq!(dirs.len(), 3, "512, 768 and 640 remain: {dirs:?}");
}

#[test]
fn env_pull_builds_the_default_template() {
    let c = WarmCache::new();
    let o = c.run(&["env", "pull", "debian:12"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("template"), "{}", stderr(&o));
    let template = c.only_template();
    // The template is a few seconds old by now: the restored guest takes the host's clock.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "sh", "-c", "hostname; date +%s"]));
    assert_eq!(start_mode(&v), ("warm", "restored the environment's template"), "{v}");
    assert_eq!(v["metadata"]["template"], template.display().to_string());
    let out = v["stdout"].as_str().unwrap();
    let (host, guest_time) = out.split_once('\n').unwrap();
    assert_eq!(host, "pyro");
    let guest_time: i64 = guest_time.trim().parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - guest_time).abs() <= 2, "guest clock {guest_time}, host {now}");
    // Pulling again keeps the same template.
    let o = c.run(&["env", "pull", "debian:12"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(c.template_dirs(), vec![template]);
}

#[test]
fn concurrent_first_runs_build_one_template() {
    let c = WarmCache::new();
    let children: Vec<_> = (0..3)
        .map(|_| {
            c.cmd()
                .args(["run", "debian:12", "--json", "--", "echo", "ok"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reasons = Vec::new();
    for child in children {
        let o = child.wait_with_output().unwrap();
        let v = ok_json(&o);
        assert_eq!(v["stdout"], "ok\n");
        let (mode, reason) = start_mode(&v);
        reasons.push(format!("{mode}: {reason}"));
    }
    let built = reasons.iter().filter(|r| r.contains("built it")).count();
    assert_eq!(built, 1, "exactly one run builds the template: {reasons:?}");
    for r in &reasons {
        assert!(
            r.contains("built it") || r.contains("being built by another run") || r.contains("restored"),
            "{reasons:?}"
        );
    }
    c.only_template();
    let leftovers: Vec<_> = std::fs::read_dir(c.templates())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-") || n.starts_with(".trash-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A user who cannot write the shared cache restores the templates in it (read-only) and
/// builds the ones it lacks under its own `$PYRO_HOME/cache/templates`.
#[test]
fn an_unprivileged_user_uses_a_shared_template_and_builds_its_own_elsewhere() {
    // SAFETY: geteuid(2) has no arguments and always succeeds.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to build the shared template and switch users");
        return;
    }
    let user = std::env::var("PYRO_TEST_USER").unwrap_or_else(|_| "pyro-test".into());
    let c = WarmCache::new();
    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "true"]));
    assert_eq!(start_mode(&v).0, "warm", "{v}");
    let shared = c.only_template();
    let disk_sum = sha256(&shared.join("rootfs.qcow2"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(c.cache.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The user's own copies of pyro's binaries (the checkout may be unreadable to it).
    let home = tempfile::Builder::new().prefix("pyro-wu-").tempdir_in("/tmp").unwrap();
    let bin_dir = home.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let built = common::pyro_bin().parent().unwrap().to_path_buf();
    for name in ["pyro", "pyro-supervisor", "pyro-guest-agent"] {
        std::fs::copy(built.join(name), bin_dir.join(name)).unwrap();
    }
    assert!(Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(home.path()).status().unwrap().success());
    let run_as_user = |args: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid", &user, "--regid", &user, "--init-groups", "--"])
            .arg(bin_dir.join("pyro"))
            .args(args)
            .env("HOME", home.path())
            .env("PYRO_HOME", home.path().join("state"))
            .env("PYRO_CACHE_DIR", c.cache.path())
            .env_remove("PYRO_WARM_RUN")
            .output()
            .unwrap();
        ok_json(&o)
    };
    // The user's agent binary is a copy: same bytes, so the same (root-built) initramfs.
    let v = run_as_user(&["run", "debian:12", "--json", "--", "sh", "-c", "id -u; echo x > /root/x; cat /root/x"]);
    assert_eq!(v["stdout"], "0\nx\n", "{v}");
    assert_eq!(start_mode(&v), ("warm", "restored the environment's template"), "{v}");
    assert_eq!(v["metadata"]["template"], shared.display().to_string());
    assert_eq!(sha256(&shared.join("rootfs.qcow2")), disk_sum);

    let v = run_as_user(&["run", "debian:12", "--mem-mib", "512", "--json", "--", "true"]);
    assert_eq!(start_mode(&v).1, "no template yet: built it, then restored it", "{v}");
    let own = v["metadata"]["template"].as_str().unwrap();
    assert!(own.starts_with(&home.path().join("state/cache/templates").display().to_string()), "{own}");
    assert_eq!(c.template_dirs(), vec![shared], "nothing new in the shared cache");
    // Under $PYRO_HOME a template is the user's alone, like the rest of the state dir.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let own = PathBuf::from(own);
    assert_eq!(mode(own.parent().unwrap()), 0o700);
    assert_eq!(mode(&own), 0o500);
    for f in ["memory.state", "memory.json", "rootfs.qcow2", "template.json"] {
        assert_eq!(mode(&own.join(f)), 0o400, "{f}");
    }
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(home.path()).status();
}

/// `kill -9` of pyro while it builds a template: the template VM dies with it, no half
/// template is ever used, and the next run cleans up and builds a whole one.
#[test]
fn a_killed_template_build_leaves_no_half_template() {
    let c = WarmCache::new();
    let mut child = c
        .cmd()
        .args(["run", "debian:12", "--json", "--", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let building = || {
        std::fs::read_dir(c.templates())
            .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".build-")))
            .unwrap_or(false)
    };
    let started = std::time::Instant::now();
    while !building() {
        assert!(started.elapsed().as_secs() < 60, "no template build started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Mid-boot of the template VM.
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let cache = c.cache.path().display().to_string();
    let started = std::time::Instant::now();
    while !common::processes_mentioning(&cache).is_empty() {
        assert!(started.elapsed().as_secs() < 30, "the template VM outlived its pyro");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(c.template_dirs().is_empty(), "a killed build left a template: {:?}", c.template_dirs());

    let v = ok_json(&c.run(&["run", "debian:12", "--json", "--", "echo", "ok"]));
    assert_eq!(v["stdout"], "ok\n");
    assert_eq!(start_mode(&v), ("warm", "no template yet: built it, then restored it"), "{v}");
    assert!(!building(), "the killed build's directory was removed");
    c.only_template();
}
