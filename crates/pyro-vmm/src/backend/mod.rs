//! Which VMM runs guests on this host, decided from a real, cached boot probe.
//!
//! `/dev/kvm` existing proves nothing: on a paravirtual KVM host a stock kernel dies with a
//! KVM internal error. So KVM counts as usable only after a tiny guest booted under it and
//! said so on its serial port. The verdict is cached per (QEMU version, guest kernel, host
//! kernel) in `$PYRO_CACHE_DIR/probe/`.

pub(crate) mod qemu;

pub use qemu::{host_tsc_khz, Accel};

use crate::util::which;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What runs a VM's guest. Serialised as the strings records and payloads always held
/// (`qemu`, `firecracker`, `host-compat`, and `""` while none is chosen yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Backend {
    /// Not chosen yet: the VM has not been booted.
    #[serde(rename = "")]
    NotChosen,
    /// Firecracker (KVM hosts; not available in this build).
    #[serde(rename = "firecracker")]
    Firecracker,
    /// QEMU (`microvm`), with KVM or TCG.
    #[serde(rename = "qemu")]
    Qemu,
    /// No VM: commands run on the host without isolation (explicit opt-in only).
    #[serde(rename = "host-compat")]
    HostCompat,
}

impl Backend {
    /// The backend's string (see the type's docs).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::NotChosen => "",
            Backend::Firecracker => "firecracker",
            Backend::Qemu => "qemu",
            Backend::HostCompat => "host-compat",
        }
    }

    /// Parse a backend name (`PYRO_BACKEND`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "firecracker" => Ok(Backend::Firecracker),
            "qemu" => Ok(Backend::Qemu),
            "host-compat" | "host_compat" => Ok(Backend::HostCompat),
            other => Err(Error::InvalidInput(format!(
                "unknown backend '{other}'; expected one of: firecracker, qemu, host-compat"
            ))),
        }
    }
}

/// The backend a VM will use, and why.
#[derive(Debug, Clone, Serialize)]
pub struct BackendChoice {
    /// The backend.
    pub kind: Backend,
    /// Set for QEMU.
    pub accel: Option<Accel>,
    /// Why (shown as `backend_reason` in metadata and by `pyro doctor`).
    pub reason: String,
}

/// Facts about `/dev/kvm` for this user.
#[derive(Debug, Clone, Serialize)]
pub struct KvmDevice {
    /// `/dev/kvm` exists.
    pub exists: bool,
    /// This user may read it.
    pub readable: bool,
    /// This user may write it.
    pub writable: bool,
}

/// What this user may do with `/dev/kvm`.
pub fn kvm_device() -> KvmDevice {
    let path = std::ffi::CString::new("/dev/kvm").expect("static path");
    // SAFETY: access(2) with a valid NUL-terminated path has no memory effects.
    let check = |mode| unsafe { libc::access(path.as_ptr(), mode) == 0 };
    KvmDevice { exists: Path::new("/dev/kvm").exists(), readable: check(libc::R_OK), writable: check(libc::W_OK) }
}

/// Cached result of booting a probe guest under QEMU with KVM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvmProbe {
    /// A probe guest booted under KVM.
    pub usable: bool,
    /// Why it is (not) usable.
    pub detail: String,
    /// `qemu-system-x86_64 --version` of the binary probed.
    pub qemu_version: String,
    /// Path, size and mtime of the QEMU binary probed: cheap to compare on every VM start,
    /// unlike running `qemu --version`.
    #[serde(default)]
    pub qemu_identity: String,
    /// Guest kernel release the probe booted.
    pub kernel_release: String,
    /// Host kernel release at the time.
    pub host_kernel: String,
    /// When, in Unix seconds.
    pub probed_at: u64,
    /// How long the probe took.
    pub probe_ms: u64,
}

/// The QEMU binary, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    which("qemu-system-x86_64")
}

/// `qemu-system-x86_64 --version` first line.
pub fn qemu_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(|s| s.trim().to_string())
}

/// The Firecracker binary, if installed.
pub fn firecracker_binary() -> Option<PathBuf> {
    which("firecracker")
}

fn host_kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn probe_cache_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("probe").join("kvm.json")
}

/// `path:size:mtime` of a binary: changes whenever the package is upgraded.
pub fn binary_identity(bin: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(bin) {
        Ok(m) => format!("{}:{}:{}", bin.display(), m.size(), m.mtime()),
        Err(_) => format!("{}:missing", bin.display()),
    }
}

/// The cached verdict for this QEMU binary, guest kernel and host kernel, if any.
pub fn cached_kvm_probe(cache_dir: &Path, qemu_bin: &Path, kernel_release: &str) -> Option<KvmProbe> {
    let text = std::fs::read_to_string(probe_cache_path(cache_dir)).ok()?;
    let probe: KvmProbe = serde_json::from_str(&text).ok()?;
    (probe.qemu_identity == binary_identity(qemu_bin)
        && probe.kernel_release == kernel_release
        && probe.host_kernel == host_kernel_release())
    .then_some(probe)
}

/// Boot the probe guest under `-accel kvm` and look for its marker on the serial port.
/// Bounded by `timeout`: a hang counts as unusable.
///
/// `initramfs` is only called when a probe really runs: a cached verdict costs one small
/// file read and no initramfs work on the VM start path.
pub fn probe_kvm(
    cache_dir: &Path,
    qemu_bin: &Path,
    kernel: &Path,
    initramfs: &dyn Fn() -> Result<PathBuf>,
    kernel_release: &str,
    timeout: Duration,
) -> Result<KvmProbe> {
    if let Some(p) = cached_kvm_probe(cache_dir, qemu_bin, kernel_release) {
        return Ok(p);
    }
    // Concurrent first runs probe once: the others wait and read the verdict.
    let lock_path = probe_cache_path(cache_dir).with_extension("lock");
    let _ = std::fs::create_dir_all(lock_path.parent().expect("has parent"));
    let _lock = pyro_sys::lock(&lock_path, pyro_sys::LockMode::Exclusive).ok();
    if let Some(p) = cached_kvm_probe(cache_dir, qemu_bin, kernel_release) {
        return Ok(p);
    }
    let qemu_version = qemu_version(qemu_bin).unwrap_or_else(|| "unknown".into());
    let dev = kvm_device();
    let started = Instant::now();
    let (usable, detail) = if !dev.exists {
        (false, "/dev/kvm is not present".to_string())
    } else if !(dev.readable && dev.writable) {
        (false, "/dev/kvm is not readable and writable by this user (add the user to group kvm)".to_string())
    } else {
        run_kvm_probe(qemu_bin, kernel, &initramfs()?, timeout)?
    };
    let probe = KvmProbe {
        usable,
        detail,
        qemu_version,
        qemu_identity: binary_identity(qemu_bin),
        kernel_release: kernel_release.to_string(),
        host_kernel: host_kernel_release(),
        probed_at: crate::util::now_secs(),
        probe_ms: started.elapsed().as_millis() as u64,
    };
    // A cache write failure (read-only cache shared from another user) only costs a re-probe.
    let path = probe_cache_path(cache_dir);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = pyro_sys::write_atomic(&path, serde_json::to_vec_pretty(&probe).unwrap_or_default().as_slice());
    Ok(probe)
}

fn run_kvm_probe(qemu_bin: &Path, kernel: &Path, initramfs: &Path, timeout: Duration) -> Result<(bool, String)> {
    let dir = tempfile::Builder::new()
        .prefix("pyro-kvm-probe-")
        .tempdir()
        .map_err(|e| Error::io("creating the KVM probe dir", e))?;
    let serial = dir.path().join("serial.log");
    // Not `quiet`, and `earlyprintk`: the first kernel line is the sign of life watched below.
    let mut cmdline = "console=ttyS0 earlyprintk=ttyS0 panic=-1 pyro.probe=1".to_string();
    if let Some(khz) = qemu::host_tsc_khz() {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let mut child = Command::new(qemu_bin)
        .args(["-accel", "kvm", "-nodefaults", "-no-user-config", "-M", "microvm", "-m", "256"])
        .args(["-display", "none", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline, "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting the KVM probe", e))?;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut silent = false;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| Error::io("waiting for the KVM probe", e))? {
            break Some(st);
        }
        // A guest stuck at its first instruction (a KVM that cannot run it) prints nothing;
        // one that runs prints its first line within milliseconds, even under TCG.
        silent = started.elapsed() >= KVM_FIRST_OUTPUT_TIMEOUT
            && std::fs::metadata(&serial).map(|m| m.len() == 0).unwrap_or(true);
        if silent || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let serial_text = std::fs::read_to_string(&serial).unwrap_or_default();
    if serial_text.contains("PYRO-PROBE-OK") {
        return Ok((true, "a probe guest booted under KVM".into()));
    }
    let why = match status {
        None if silent => format!(
            "the probe guest printed nothing under KVM within {} s (a guest that runs prints its first kernel line at once)",
            KVM_FIRST_OUTPUT_TIMEOUT.as_secs()
        ),
        None => format!("the probe guest did not boot under KVM within {} s", timeout.as_secs()),
        Some(st) => {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            format!("the probe guest failed under KVM ({st}): {first}")
        }
    };
    Ok((false, why))
}

/// A guest that has not reached its init within this under KVM is treated as unusable
/// (TCG boots the same guest in ~1.5 s here).
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(12);

/// A probe guest that has not printed a byte (`earlyprintk`) after this long under KVM is
/// stuck: on this project's paravirtual KVM it never prints anything, where a working KVM
/// (and even TCG, ~0.2 s) prints its first line at once. Cuts a failing probe from 12 s to 4.
pub const KVM_FIRST_OUTPUT_TIMEOUT: Duration = Duration::from_secs(4);

/// An installed environment's kernel, for the KVM probe.
pub struct ProbeGuest<'a> {
    /// The guest kernel image.
    pub kernel: &'a Path,
    /// Its release (part of the cache key).
    pub kernel_release: &'a str,
    /// Builds (or finds) the probe's initramfs; called only if the probe runs.
    pub initramfs: &'a dyn Fn() -> Result<PathBuf>,
}

/// Inputs the selection needs; the probe guest is only booted when KVM might work.
pub struct SelectInput<'a> {
    /// `PYRO_BACKEND`, if set.
    pub forced: Option<Backend>,
    /// The caller accepts running commands on the host without isolation.
    pub allow_host_compat: bool,
    /// Where the probe verdict is cached.
    pub cache_dir: &'a Path,
    /// The guest to probe KVM with, when an environment is installed.
    pub probe_guest: Option<ProbeGuest<'a>>,
}

/// Choose the backend for a new VM.
pub fn select(input: &SelectInput<'_>) -> Result<BackendChoice> {
    let qemu = qemu_binary();
    let want = input.forced;
    if want == Some(Backend::HostCompat) {
        if !input.allow_host_compat {
            return Err(Error::InvalidInput(
                "PYRO_BACKEND=host-compat runs commands on the host without isolation; pass --allow-host-compat to opt in".into(),
            ));
        }
        return Ok(BackendChoice { kind: Backend::HostCompat, accel: None, reason: "forced by PYRO_BACKEND".into() });
    }
    if want == Some(Backend::Firecracker) {
        return Err(Error::HostRequirement(
            "the firecracker backend is not available in this build of pyro (QEMU is); unset PYRO_BACKEND or set it to qemu".into(),
        ));
    }
    if let Some(bin) = qemu {
        let (accel, reason) = match &input.probe_guest {
            Some(g) => {
                let probe =
                    probe_kvm(input.cache_dir, &bin, g.kernel, g.initramfs, g.kernel_release, KVM_PROBE_TIMEOUT)?;
                if probe.usable {
                    (Accel::Kvm, format!("KVM works ({})", probe.detail))
                } else {
                    (Accel::Tcg, format!("KVM unusable ({}); using TCG software emulation", probe.detail))
                }
            }
            None => (Accel::Tcg, "no environment installed to probe KVM with; using TCG".into()),
        };
        return Ok(BackendChoice { kind: Backend::Qemu, accel: Some(accel), reason });
    }
    if want == Some(Backend::Qemu) {
        return Err(Error::HostRequirement(
            "PYRO_BACKEND=qemu but qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        ));
    }
    if input.allow_host_compat {
        return Ok(BackendChoice {
            kind: Backend::HostCompat,
            accel: None,
            reason: "no VMM installed; --allow-host-compat runs commands on the host".into(),
        });
    }
    Err(Error::HostRequirement(
        "guest boot is unavailable: qemu-system-x86_64 is not installed (apt-get install --no-install-recommends qemu-system-x86 qemu-utils). Pass --allow-host-compat to run on the host without isolation.".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for QEMU (pure probe logic: the real probe runs in every CI on this host's
    /// KVM): it finds its `-serial file:PATH`, writes a kernel line there when `talks`, and
    /// then hangs like a guest that never reaches its init.
    fn fake_qemu(dir: &Path, talks: bool) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(if talks { "talks" } else { "silent" });
        let write = if talks { r#"echo "[    0.000000] Linux version" > "$f""# } else { ":" };
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in file:*) f=\"${{a#file:}}\";; esac; done\n{write}\nexec sleep 60\n"
        );
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_probe_guest_that_prints_nothing_is_given_up_after_4_s_one_that_prints_gets_the_full_timeout() {
        let d = tempfile::tempdir().unwrap();
        let none = Path::new("/dev/null");
        let started = Instant::now();
        let (usable, why) = run_kvm_probe(&fake_qemu(d.path(), false), none, none, Duration::from_secs(30)).unwrap();
        let took = started.elapsed();
        assert!(!usable);
        assert!(why.contains("printed nothing under KVM within 4 s"), "{why}");
        assert!(took >= KVM_FIRST_OUTPUT_TIMEOUT && took < Duration::from_secs(10), "{took:?}");

        let started = Instant::now();
        let (usable, why) = run_kvm_probe(&fake_qemu(d.path(), true), none, none, Duration::from_secs(6)).unwrap();
        let took = started.elapsed();
        assert!(!usable);
        assert!(why.contains("did not boot under KVM within 6 s"), "{why}");
        assert!(took >= Duration::from_secs(6), "a guest that prints must get the whole timeout: {took:?}");
    }
}
