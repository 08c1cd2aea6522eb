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

/// Progress on stderr. On a terminal: a bar for events that carry a fraction (a download,
/// an upload, a build), with the other events printed above it. Elsewhere (a log, a test, a
/// pipe): one line per event, `[pull] stage: message (42%)`, which stays readable.
pub fn terminal_progress(label: &'static str) -> pyro::Progress {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return pyro::Progress::new(move |ev| match ev.fraction {
            Some(f) => eprintln!("[{label}] {}: {} ({:.0}%)", ev.stage, ev.message, f * 100.0),
            None => eprintln!("[{label}] {}: {}", ev.stage, ev.message),
        });
    }
    pyro::Progress::new(move |ev| {
        let mut active = ACTIVE_BAR.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = ev.fraction else {
            let line = format!("[{label}] {}: {}", ev.stage, ev.message);
            match active.as_ref() {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
            return;
        };
        if f >= 1.0 && active.is_none() {
            // Done at once (already installed): a line, no bar flashing by.
            eprintln!("[{label}] {}: {}", ev.stage, ev.message);
            return;
        }
        let bar = active.get_or_insert_with(|| {
            let bar =
                indicatif::ProgressBar::with_draw_target(Some(BAR_STEPS), indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template(&format!(
                "[{label}] {{bar:30.cyan/blue}} {{percent:>3}}% {{elapsed_precise}} {{wide_msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        bar.set_position((f.clamp(0.0, 1.0) * BAR_STEPS as f64) as u64);
        bar.set_message(format!("{}: {}", ev.stage, ev.message));
        if f >= 1.0 {
            // A finished step leaves its last message as a plain line; the next step with a
            // fraction starts a fresh bar.
            bar.finish_and_clear();
            eprintln!("[{label}] {}: {}", ev.stage, ev.message);
            *active = None;
        }
    })
}

/// Resolution of the progress bar: a fraction is shown in steps of 0.1%.
const BAR_STEPS: u64 = 1000;

/// The bar being drawn, if any: one per process, shared by every event of the call.
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Erase a bar still on screen (the call ended before its step reached 100%), so the result
/// or error printed next starts on a clean line.
pub fn clear_progress() {
    let mut active = ACTIVE_BAR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bar) = active.take() {
        bar.finish_and_clear();
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `148.2 MiB`, `2.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `env push`: where it went, its digest, and what each blob cost.
pub fn print_push(p: &pyro::env::PushedEnvironment) {
    println!("Pushed: {}", p.name);
    println!("Reference: {}", p.reference);
    println!("Digest: {}", p.digest);
    let width = p.layers.iter().map(|l| l.title.len()).max().unwrap_or(0);
    for l in &p.layers {
        let state = if l.uploaded { "uploaded" } else { "already present" };
        println!("- {:<width$} {} {:>10}  {state}", l.title, l.digest, human_bytes(l.size));
    }
    let total: u64 = p.layers.iter().map(|l| l.size).sum();
    println!(
        "Uploaded {} of {} blobs ({} of {}).",
        p.uploaded_count,
        p.layers.len(),
        human_bytes(p.uploaded_bytes),
        human_bytes(total)
    );
}

pub fn print_env_list(list: &pyro::env::EnvironmentList) {
    println!("Catalog version: {}", list.catalog_version);
    if list.environments.is_empty() {
        println!("No environments found.");
    }
    for e in &list.environments {
        let installed = if e.installed { "installed" } else { "not installed" };
        println!("{} [{}] {}", e.name, installed, e.description);
    }
}

/// `env inspect` (`pulled` is `None`) and `env pull` (the artifacts of the install).
pub fn print_env_detail(action: &str, e: &pyro::env::EnvironmentInfo, pulled: Option<&pyro::env::PulledEnvironment>) {
    println!("{action}: {}", e.name);
    println!("Version: {}", e.version);
    println!("Distribution: {} {}", e.distribution, e.distribution_version);
    println!("Installed: {}", if e.installed { "yes" } else { "no" });
    println!("Cache dir: {}", e.cache_dir);
    println!("Default packages: {}", e.default_packages.join(", "));
    println!("Description: {}", e.description);
    if e.installed {
        println!("Install dir: {}", e.install_dir);
        if let Some(manifest) = &e.install_manifest {
            println!("Install manifest: {manifest}");
        }
        if let Some(p) = pulled {
            println!("Kernel image: {}", p.kernel_image);
            println!("Rootfs image: {}", p.rootfs_image);
        }
    }
    println!("OCI source: {}/{}:{}", e.oci_registry, e.oci_repository, e.oci_reference);
}

pub fn print_prune(r: &pyro::env::PruneResult) {
    let n = r.deleted_environment_dirs.len();
    println!("Deleted {n} cached environment {}.", if n == 1 { "entry" } else { "entries" });
    for d in &r.deleted_environment_dirs {
        println!("- {d}");
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
    match &r.environment_source.registry {
        Some(reg) => println!("Environment source: registry {reg}"),
        None => println!(
            "Environment source: local build ({})",
            if r.environment_source.local_build_possible { "possible here" } else { "needs root and debootstrap" }
        ),
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
    if let Some(e) = &r.readiness {
        println!("Environment {}: {} ({})", e.environment, e.state, e.detail);
        if e.prepare_steps.is_empty() {
            println!("  `pyro prepare {}` has nothing to do", e.environment);
        } else {
            println!("  `pyro prepare {}` would:", e.environment);
            for s in &e.prepare_steps {
                println!("  - {}: {}", s.step, s.reason);
            }
        }
    }
    println!("Issues:");
    if r.issues.is_empty() {
        println!("- none");
    }
    for i in &r.issues {
        println!("- {i}");
    }
}

/// `pyro prepare`: one line per step, then the readiness.
pub fn print_prepare(r: &pyro::PrepareResult) {
    for s in &r.steps {
        println!("{:<17} {:<8} {:>7} ms  {}", s.step, s.status, s.duration_ms, s.detail);
    }
    println!("{}: {} ({} ms)", r.environment, r.state, r.duration_ms);
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_read_as_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_bytes(155_400_000), "148.2 MiB");
    }
}
