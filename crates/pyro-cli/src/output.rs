//! Rendering payloads: pretty sorted JSON for `--json`, the reference's text templates
//! otherwise.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
}

impl Mode {
    pub fn from_json(json: bool) -> Self {
        if json {
            Mode::Json
        } else {
            Mode::Human
        }
    }
}

/// Pretty JSON, 2-space indent, keys sorted (serde_json's map is a BTreeMap here).
pub fn print_json<T: Serialize>(payload: &T) {
    let value = serde_json::to_value(payload).unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

pub fn emit_error(mode: Mode, e: &pyro::Error) {
    match mode {
        Mode::Json => print_json(&serde_json::json!({"ok": false, "error": e.to_string(), "code": e.code()})),
        Mode::Human => eprintln!("[error] {e}"),
    }
}

/// Progress lines on stderr: `[pull] stage: message (42%)`.
pub fn terminal_progress(label: &'static str) -> pyro::Progress {
    pyro::Progress::new(move |ev| match ev.fraction {
        Some(f) => eprintln!("[{label}] {}: {} ({:.0}%)", ev.stage, ev.message, f * 100.0),
        None => eprintln!("[{label}] {}: {}", ev.stage, ev.message),
    })
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub fn print_env_list(v: &Value) {
    println!("Catalog version: {}", s(v, "catalog_version"));
    let envs = v.get("environments").and_then(Value::as_array).cloned().unwrap_or_default();
    if envs.is_empty() {
        println!("No environments found.");
    }
    for e in envs {
        let installed =
            if e.get("installed").and_then(Value::as_bool).unwrap_or(false) { "installed" } else { "not installed" };
        println!("{} [{}] {}", s(&e, "name"), installed, s(&e, "description"));
    }
}

pub fn print_env_detail(action: &str, v: &Value) {
    println!("{action}: {}", s(v, "name"));
    println!("Version: {}", s(v, "version"));
    println!("Distribution: {} {}", s(v, "distribution"), s(v, "distribution_version"));
    let installed = v.get("installed").and_then(Value::as_bool).unwrap_or(action == "Pulled");
    println!("Installed: {}", if installed { "yes" } else { "no" });
    println!("Cache dir: {}", s(v, "cache_dir"));
    let pkgs: Vec<String> = v
        .get("default_packages")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    println!("Default packages: {}", pkgs.join(", "));
    println!("Description: {}", s(v, "description"));
    if installed {
        println!("Install dir: {}", s(v, "install_dir"));
        if v.get("install_manifest").is_some() {
            println!("Install manifest: {}", s(v, "install_manifest"));
        }
        if v.get("kernel_image").is_some() {
            println!("Kernel image: {}", s(v, "kernel_image"));
            println!("Rootfs image: {}", s(v, "rootfs_image"));
        }
    }
    println!("OCI source: {}/{}:{}", s(v, "oci_registry"), s(v, "oci_repository"), s(v, "oci_reference"));
}

pub fn print_prune(v: &Value) {
    let dirs = v.get("deleted_environment_dirs").and_then(Value::as_array).cloned().unwrap_or_default();
    let n = dirs.len();
    println!("Deleted {n} cached environment {}.", if n == 1 { "entry" } else { "entries" });
    for d in dirs {
        println!("- {}", d.as_str().unwrap_or_default());
    }
}

pub fn print_doctor(r: &pyro::doctor::DoctorReport) {
    let yn = |b: bool| if b { "yes" } else { "no" };
    println!("Platform: {}", r.platform);
    println!("Runtime: {}", if r.runtime_ok { "PASS" } else { "FAIL" });
    println!(
        "KVM: exists={} readable={} writable={} usable={}",
        yn(r.kvm.exists),
        yn(r.kvm.readable),
        yn(r.kvm.writable),
        match r.kvm.usable {
            Some(b) => yn(b),
            None => "not-probed",
        }
    );
    println!("KVM detail: {}", r.kvm.detail);
    println!(
        "Backend: {}{} ({})",
        r.backend.selected.as_deref().unwrap_or("none"),
        r.backend.accel.as_deref().map(|a| format!(" accel={a}")).unwrap_or_default(),
        r.backend.reason
    );
    for (name, b) in &r.backends {
        println!(
            "  {name}: available={} {}{}",
            yn(b.available),
            b.binary.as_deref().unwrap_or("-"),
            b.version.as_deref().map(|v| format!(" ({v})")).unwrap_or_default()
        );
    }
    println!("State dir: {}", r.state_dir);
    println!("Environment cache: {}", r.cache_dir);
    for e in &r.environments {
        println!("  {} [{}]", e.name, if e.installed { "installed" } else { "not installed" });
    }
    let missing: Vec<&str> = r.host_tools.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.as_str()).collect();
    println!(
        "Host tools: {}",
        if missing.is_empty() { "all found".to_string() } else { format!("missing {}", missing.join(", ")) }
    );
    println!(
        "Networking: qemu_user_net={} egress_filter={} tun={} root={}",
        yn(r.networking.qemu_user_net),
        yn(r.networking.egress_filter),
        yn(r.networking.tun_available),
        yn(r.networking.is_root)
    );
    if let Some(hint) = &r.install_hint {
        println!("Install: {hint}");
    }
    println!("Issues:");
    if r.issues.is_empty() {
        println!("- none");
    }
    for i in &r.issues {
        println!("- {i}");
    }
}
