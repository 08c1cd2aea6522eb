//! `pyro prepare` and `pyro doctor --environment` with real guests (TCG here): a private
//! cache dir borrowing the shared cache's installed environments and KVM probe verdict (like
//! warm_run.rs), so the initramfs and templates prepared are this test's own.

mod common;

use common::{json, stderr, stdout, TestHome};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct PrepCache {
    home: TestHome,
    cache: tempfile::TempDir,
}

fn shared_cache() -> PathBuf {
    std::env::var_os("PYRO_CACHE_DIR").map(PathBuf::from).expect("PYRO_CACHE_DIR names the shared cache")
}

impl PrepCache {
    fn new() -> Self {
        let cache = tempfile::Builder::new().prefix("pyro-pc-").tempdir_in("/tmp").unwrap();
        let shared = shared_cache();
        for d in ["environments", "probe"] {
            std::os::unix::fs::symlink(shared.join(d), cache.path().join(d)).unwrap();
        }
        PrepCache { home: TestHome::new(), cache }
    }

    fn cmd(&self) -> Command {
        let mut c = self.home.cmd();
        c.env("PYRO_CACHE_DIR", self.cache.path()).env_remove("PYRO_WARM_RUN").env_remove("PYRO_AGENT_BIN");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok_json(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: stdout={} stderr={}", stdout(&o), stderr(&o));
        json(&o)
    }

    fn readiness(&self) -> Value {
        let v = self.ok_json(&["doctor", "--environment", "debian:12", "--json"]);
        v["readiness"].clone()
    }

    /// Every entry of the private cache other than the borrowed links.
    fn own_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "environments" && n != "probe")
            .collect();
        v.sort();
        v
    }

    fn template_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.cache.path().join("templates"))
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
}

impl Drop for PrepCache {
    fn drop(&mut self) {
        // Templates are read-only inside: make them removable for TempDir.
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(self.cache.path()).status();
    }
}

fn steps(v: &Value) -> Vec<(String, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn planned(r: &Value) -> Vec<String> {
    r["prepare_steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_string()).collect()
}

fn identity(dir: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("memory.state")).unwrap();
    (m.ino(), m.modified().unwrap())
}

fn assert_prepare_shape(v: &Value) {
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["duration_ms", "environment", "force", "network", "ok", "state", "steps"], "{v}");
    for s in v["steps"].as_array().unwrap() {
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["detail", "duration_ms", "status", "step"], "{s}");
        assert!(s["duration_ms"].is_u64(), "{s}");
        assert!(["already", "done", "rebuilt", "skipped", "failed"].contains(&s["status"].as_str().unwrap()), "{s}");
    }
}

#[test]
fn cold_then_prepare_then_warm_then_force_rebuilds() {
    let c = PrepCache::new();

    // A fresh cache: installed (borrowed) and probed, but no initramfs and no template.
    let r = c.readiness();
    assert_eq!(r["state"], "cold", "{r}");
    assert_eq!(r["installed"], true);
    assert_eq!(r["template"], "missing", "{r}");
    assert_eq!(r["initramfs"], Value::Null, "{r}");
    assert_eq!(planned(&r), ["initramfs", "template"], "{r}");
    assert!(c.own_entries().is_empty(), "doctor changed the cache: {:?}", c.own_entries());
    // Without --environment there is no readiness.
    assert_eq!(c.ok_json(&["doctor", "--json"])["readiness"], Value::Null);
    // The human doctor says the same.
    let o = c.run(&["doctor", "--environment", "debian:12"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("Environment debian:12: cold"), "{text}");
    assert!(text.contains("- template:"), "{text}");

    // prepare (terminal): progress lines on stderr, one summary line per step on stdout.
    let o = c.run(&["prepare"]);
    assert!(o.status.success(), "stdout={} stderr={}", stdout(&o), stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    for step in ["environment", "kvm_probe", "initramfs", "template"] {
        assert!(err.contains(&format!("[prepare] {step}: ")), "{step}: {err}");
    }
    assert!(out.contains("debian:12: warm"), "{out}");
    let templates = c.template_dirs();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let before = identity(&templates[0]);

    let r = c.readiness();
    assert_eq!(r["state"], "warm", "{r}");
    assert_eq!(r["template"], "valid");
    assert_eq!(r["template_path"], templates[0].display().to_string());
    assert!(r["initramfs"].as_str().unwrap().starts_with(&c.cache.path().display().to_string()), "{r}");
    assert_eq!(planned(&r), Vec::<String>::new());

    // The first real run is warm: it restores the prepared template, it does not build one.
    let v = c.ok_json(&["run", "debian:12", "--json", "--", "echo", "hi"]);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["metadata"]["start_mode"], "warm", "{v}");
    assert_eq!(v["metadata"]["start_reason"], "restored the environment's template", "{v}");
    assert_eq!(v["metadata"]["template"], templates[0].display().to_string());

    // A second prepare has nothing to do.
    let v = c.ok_json(&["prepare", "debian:12", "--json"]);
    assert_prepare_shape(&v);
    assert_eq!(
        steps(&v),
        pairs(&[
            ("environment", "already"),
            ("kvm_probe", "already"),
            ("initramfs", "already"),
            ("template", "already")
        ])
    );
    assert_eq!((v["ok"].as_bool(), v["state"].as_str(), v["force"].as_bool()), (Some(true), Some("warm"), Some(false)));
    assert_eq!(identity(&templates[0]), before, "an `already` template is not touched");

    // --force rebuilds the initramfs and the template (a new one), keeps the environment.
    let v = c.ok_json(&["prepare", "debian:12", "--force", "--json"]);
    assert_prepare_shape(&v);
    assert_eq!(
        steps(&v),
        pairs(&[
            ("environment", "already"),
            ("kvm_probe", "already"),
            ("initramfs", "rebuilt"),
            ("template", "rebuilt")
        ])
    );
    assert_eq!(v["state"], "warm", "{v}");
    let after = c.template_dirs();
    assert_eq!(after.len(), 1, "the replaced template is gone: {after:?}");
    assert_ne!(identity(&after[0]), before, "the template was rebuilt");
    assert!(shared_cache().join("environments/linux-x86_64/debian_12-1.0.0/rootfs.ext4").is_file());
    let r = c.readiness();
    assert_eq!(r["state"], "warm", "{r}");
    let v = c.ok_json(&["run", "debian:12", "--json", "--", "true"]);
    assert_eq!(v["metadata"]["start_mode"], "warm", "{v}");
    assert_eq!(v["metadata"]["template"], after[0].display().to_string());

    // Another agent (a legitimate change of what the key depends on): the template of the
    // default shape is stale, and prepare would rebuild the initramfs and the template.
    let hostile = common::pyro_bin().parent().unwrap().join("pyro-hostile-agent");
    assert!(hostile.is_file(), "{} is built with the workspace", hostile.display());
    let o = c.cmd().env("PYRO_AGENT_BIN", &hostile).args(["doctor", "--environment", "debian:12", "--json"]).output();
    let v = json(&o.unwrap());
    let r = &v["readiness"];
    assert_eq!(r["state"], "stale", "{r}");
    assert_eq!(r["template"], "stale");
    assert!(r["detail"].as_str().unwrap().contains("initramfs"), "{r}");
    assert_eq!(planned(r), ["initramfs", "template"], "{r}");
    // Still warm for the real agent: doctor removed nothing.
    assert_eq!(c.readiness()["state"], "warm");
    c.home.assert_clean();
}

#[test]
fn network_shape_gets_its_own_template() {
    let c = PrepCache::new();
    let v = c.ok_json(&["prepare", "--network", "--json"]);
    assert_prepare_shape(&v);
    assert_eq!(
        steps(&v),
        pairs(&[
            ("environment", "already"),
            ("kvm_probe", "already"),
            ("initramfs", "done"),
            ("template", "done"),
            ("template_network", "done"),
        ]),
        "{v}"
    );
    assert_eq!(v["network"], true);
    assert_eq!(c.template_dirs().len(), 2);
    let v = c.ok_json(&["run", "debian:12", "--network", "--json", "--", "true"]);
    assert_eq!(v["metadata"]["start_mode"], "warm", "{v}");
    assert_eq!(v["metadata"]["start_reason"], "restored the environment's template", "{v}");
    c.home.assert_clean();
}

#[test]
fn an_unknown_environment_is_the_catalog_error_and_creates_nothing() {
    let c = PrepCache::new();
    for args in [
        &["prepare", "debian:13", "--json"][..],
        &["prepare", "nope", "--force", "--network", "--json"],
        &["doctor", "--environment", "debian:13", "--json"],
    ] {
        let o = c.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let v = json(&o);
        assert_eq!(v["ok"], false);
        assert_eq!(v["code"], "not_found", "{v}");
        assert!(v["error"].as_str().unwrap().contains("expected one of: debian:12"), "{v}");
    }
    let o = c.run(&["prepare", "debian:13"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("[error] unknown environment 'debian:13'"), "{}", stderr(&o));
    assert!(c.own_entries().is_empty(), "{:?}", c.own_entries());
    let home: Vec<_> = std::fs::read_dir(c.home.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(home.is_empty(), "{home:?}");
}

#[test]
fn warm_runs_off_is_cold_and_prepare_skips_the_template() {
    let c = PrepCache::new();
    let o = c.cmd().env("PYRO_WARM_RUN", "off").args(["prepare", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let s = steps(&v);
    assert_eq!(s.last().unwrap(), &("template".to_string(), "skipped".to_string()), "{v}");
    assert!(c.template_dirs().is_empty());
    let o = c.cmd().env("PYRO_WARM_RUN", "off").args(["doctor", "--environment", "debian:12", "--json"]).output();
    let r = json(&o.unwrap())["readiness"].clone();
    assert_eq!(r["state"], "cold", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("PYRO_WARM_RUN"), "{r}");
}
