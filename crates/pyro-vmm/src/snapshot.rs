//! Memory snapshots: what a paused VM leaves in its directory and what must hold for a VM to
//! be restored from it.
//!
//! A pause ([`Machine::pause`](crate::Machine::pause)) writes the guest's RAM and device
//! state into `memory.state` (through a temp file, fsync, rename) and then the record
//! `memory.json` ([`MemoryMeta`]), which is the commit point: a state without its record is
//! no state ([`MemoryState::load`] says `None`). A restore
//! ([`Machine::restore`](crate::Machine::restore)) starts QEMU with the same shape, loads the
//! state and tells the agent it is a new machine (clock, entropy, hostname).
//!
//! The disk a state was saved with must be exactly the disk it is restored with: the guest's
//! page cache in the state believes every block it wrote is on that disk. Whoever boots a VM
//! cold from a disk that has a state must [`MemoryState::discard`] it first.

use crate::{BootSpec, Error, Result, VmDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a disk image file is laid out. Always recorded by the host when the image is made,
/// never sniffed from the file's bytes: a guest writes a raw disk's first sector and could
/// make it look like a qcow2 header naming any host file as its backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain image: guest block N is file block N.
    #[default]
    Raw,
    /// A qcow2 image, typically an overlay over a frozen base (copy-on-write).
    Qcow2,
}

impl DiskFormat {
    /// `raw` or `qcow2`, as QEMU and `qemu-img` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pause the VM by itself once no client request has arrived for `after`. The supervisor
/// takes `lock_path` exclusively (without waiting: a held lock means a call is in progress,
/// so it tries again later) for the duration of the pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePause {
    /// Idle time before the pause.
    pub after: Duration,
    /// The lock every call on this VM holds (shared or exclusive) while it runs.
    pub lock_path: PathBuf,
}

/// Version of the `memory.json` layout (and of what the state file means to pyro).
pub const MEMORY_FORMAT: u32 = 1;

/// Free space a pause wants beyond the guest's memory size (QEMU's device state and stream
/// framing, and some room for everything else on that filesystem).
pub const PAUSE_SPACE_MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// `memory.json`: the record of a saved memory state. Written after `memory.state` is durable;
/// its presence is what makes the state valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryMeta {
    /// [`MEMORY_FORMAT`] of the pyro that wrote it.
    pub format: u32,
    /// [`fingerprint`] of the VM that saved it.
    pub fingerprint: String,
    /// Exact size of `memory.state`; any other size is a truncated or damaged state.
    pub state_bytes: u64,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Virtual CPUs.
    pub vcpu_count: u32,
    /// The VM had a NIC.
    pub network: bool,
    /// Format of the disk the VM ran on.
    pub disk_format: DiskFormat,
    /// Unix time (ms) when the state was saved.
    pub saved_at_ms: u64,
    /// How long the pause took (request to durable state), in ms.
    pub pause_ms: u64,
    /// The disk the state was saved with (absolute path as the VM used it).
    #[serde(default)]
    pub disk: PathBuf,
    /// Published ports live when the VM paused; a restore into the same VM directory
    /// re-applies them (QEMU's `hostfwd` rules are not part of the migration stream).
    #[serde(default)]
    pub published: Vec<PublishedPort>,
}

/// One published port recorded in a saved state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The service the forward belongs to.
    pub service: String,
    /// Host loopback address.
    pub host: String,
    /// Host TCP port.
    pub host_port: u16,
    /// Guest TCP port.
    pub guest_port: u16,
}

/// A saved memory state found in a VM directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryState {
    /// The state file (`memory.state`).
    pub path: PathBuf,
    /// Its record.
    pub meta: MemoryMeta,
}

/// What a paused VM reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// Size of `memory.state` (zero pages cost a few bytes each in QEMU's stream).
    pub state_bytes: u64,
    /// Pause request to durable state, in ms.
    pub pause_ms: u64,
}

impl MemoryState {
    /// The saved state in `dir`, if any. `Err(Error::CorruptState(..))` when the record is
    /// unreadable or the state file's size differs from `meta.state_bytes` (truncated);
    /// `Ok(None)` when there is none (no record: a pause that did not finish left at most a
    /// temp file, which is no state).
    pub fn load(dir: &VmDir) -> Result<Option<MemoryState>> {
        let meta_path = dir.memory_meta();
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::CorruptState(format!("cannot read {}: {e}", meta_path.display()))),
        };
        let meta: MemoryMeta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::CorruptState(format!("{} is unreadable: {e}", meta_path.display())))?;
        meta.validate().map_err(|why| Error::CorruptState(format!("{}: {why}", meta_path.display())))?;
        let path = dir.memory_state();
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) => {
                return Err(Error::CorruptState(format!(
                    "{} records a saved state but {} cannot be read: {e}",
                    meta_path.display(),
                    path.display()
                )))
            }
        };
        if size != meta.state_bytes {
            return Err(Error::CorruptState(format!(
                "the memory state {} is damaged: it holds {size} bytes, {} were saved",
                path.display(),
                meta.state_bytes
            )));
        }
        Ok(Some(MemoryState { path, meta }))
    }

    /// Remove `memory.json` (first: it is the commit record) and `memory.state`, durably.
    pub fn discard(dir: &VmDir) -> Result<()> {
        for path in [dir.memory_meta(), dir.memory_state(), dir.memory_state_partial()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
        }
        fsync_dir(dir.path())
    }
}

impl MemoryMeta {
    /// Bounds on what the record may say (it is read back from disk).
    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != MEMORY_FORMAT {
            return Err(format!("state format {} (this pyro reads format {MEMORY_FORMAT})", self.format));
        }
        if self.state_bytes == 0 || self.mem_mib == 0 || self.vcpu_count == 0 {
            return Err("the record names an empty state or machine".into());
        }
        if self.fingerprint.is_empty() {
            return Err("the record has no machine fingerprint".into());
        }
        Ok(())
    }
}

/// Fsync a directory, so a rename or unlink in it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing the directory {}", dir.display()), e))
}

/// What must be equal between the VM that saved a state and the one restoring it: QEMU
/// binary identity, accelerator, memory, vCPUs, NIC, kernel and initramfs identity. One
/// `key=value` per line, so a mismatch can be named ([`fingerprint_mismatch`]).
///
/// The disk format is not part of it: the guest sees the same virtio-blk device whether the
/// host keeps its blocks in a raw file or a qcow2 overlay, so a state saved on a raw disk
/// restores onto an overlay over that (frozen) disk, which is what a fork does. What must
/// hold for the disk is its content, and that is the caller's contract (see the module).
pub fn fingerprint(spec: &BootSpec) -> String {
    let qemu =
        crate::backend::qemu_binary().map(|b| crate::backend::binary_identity(&b)).unwrap_or_else(|| "missing".into());
    [
        ("qemu", qemu),
        ("accel", spec.accel.as_str().to_string()),
        ("mem_mib", spec.mem_mib.to_string()),
        ("vcpu_count", spec.vcpu_count.to_string()),
        ("nic", spec.network.has_nic().to_string()),
        ("kernel", crate::backend::binary_identity(&spec.kernel)),
        ("initramfs", crate::backend::binary_identity(&spec.initramfs)),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", v.replace('\n', " ")))
    .collect::<Vec<_>>()
    .join("\n")
}

/// `None` when the fingerprints are equal, else what differs, for a person.
pub fn fingerprint_mismatch(saved: &str, now: &str) -> Option<String> {
    if saved == now {
        return None;
    }
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (saved, now) = (parse(saved), parse(now));
    let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    let none = String::from("(none)");
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| saved.get(*k) != now.get(*k))
        .map(|k| format!("{k}: saved with {}, now {}", saved.get(k).unwrap_or(&none), now.get(k).unwrap_or(&none)))
        .collect();
    Some(if diffs.is_empty() { "the machine fingerprint differs".into() } else { diffs.join("; ") })
}

/// Create a qcow2 overlay `dest` (owner-only) whose backing file is `base` (absolute) of
/// `base_format`. The backing format is written into the overlay (`-F`), so QEMU never
/// probes the base's bytes.
pub fn create_overlay(base: &Path, base_format: DiskFormat, dest: &Path) -> Result<()> {
    if !base.is_absolute() {
        return Err(Error::InvalidInput(format!(
            "an overlay's base must be an absolute path (got {})",
            base.display()
        )));
    }
    let mut args: Vec<std::ffi::OsString> =
        ["create", "-q", "-f", "qcow2", "-F", base_format.as_str(), "-b"].iter().map(Into::into).collect();
    args.push(base.into());
    qemu_img_into(args, dest, &format!("creating the overlay {} over {}", dest.display(), base.display()))
}

/// Write the whole disk `source` (a qcow2 overlay with its backing chain, or a raw image)
/// as one standalone raw image `dest` (owner-only, sparse: zero blocks stay holes, fsynced,
/// placed by rename so `dest` is never partial). Used to cap a chain of forks' overlays.
pub fn flatten_disk(source: &Path, source_format: DiskFormat, dest: &Path) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> =
        ["convert", "-q", "-f", source_format.as_str(), "-O", "raw", "-S", "4k"].iter().map(Into::into).collect();
    args.push(source.into());
    qemu_img_into(args, dest, &format!("flattening {} into {}", source.display(), dest.display()))
}

/// Run `qemu-img ARGS <dest>.partial`, then make the output owner-only, fsync it and rename
/// it to `dest` (fsyncing the directory): `dest` is whole or absent, never partial.
fn qemu_img_into(args: Vec<std::ffi::OsString>, dest: &Path, what: &str) -> Result<()> {
    let qemu_img = crate::util::which("qemu-img")
        .ok_or_else(|| Error::HostRequirement("qemu-img is not installed (apt-get install qemu-utils)".into()))?;
    let mut tmp = dest.as_os_str().to_os_string();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let out = std::process::Command::new(qemu_img)
        .args(args)
        .arg(&tmp)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("running qemu-img", e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(what, std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string())));
    }
    let placed = pyro_sys::make_private(&tmp)
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, dest));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("placing {}", dest.display()), e));
    }
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Fresh bytes from the host kernel's `getrandom`.
pub(crate) fn host_entropy(len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        // SAFETY: getrandom(2) writes at most `len - filled` bytes into the live buffer's tail.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), len - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// Is `name` a hostname the guest can take (RFC 1123 labels, at most 64 bytes)?
pub(crate) fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why a pause may not start for lack of room.
#[derive(Debug)]
pub(crate) enum SpaceCheck {
    /// Not enough free space (the message has the numbers).
    Short(String),
    /// Free space could not be read.
    Unknown(String),
}

/// Room for a pause's state in `dir`: at most the guest's memory plus framing
/// ([`crate::PAUSE_SPACE_MARGIN_BYTES`]), checked before anything is written.
pub(crate) fn check_pause_space(dir: &Path, mem_mib: u32) -> std::result::Result<(), SpaceCheck> {
    let need = u64::from(mem_mib) * 1024 * 1024 + crate::PAUSE_SPACE_MARGIN_BYTES;
    let free =
        free_bytes(dir).map_err(|e| SpaceCheck::Unknown(format!("checking free space in {}: {e}", dir.display())))?;
    if free < need {
        return Err(SpaceCheck::Short(format!(
            "pausing needs up to {} MiB free in {} (the guest's {} MiB of memory plus {} MiB), only {} MiB are free; the VM keeps running",
            need / (1024 * 1024),
            dir.display(),
            mem_mib,
            crate::PAUSE_SPACE_MARGIN_BYTES / (1024 * 1024),
            free / (1024 * 1024)
        )));
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the filesystem of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs(3) fills a zeroed struct from a NUL-terminated path that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above; `st` is a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_needs_room_for_the_guest_memory_first() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_pause_space(dir.path(), 1).is_ok(), "1 MiB of guest memory should fit");
        // No filesystem here has 4 PiB free: refused with the numbers, before anything is written.
        match check_pause_space(dir.path(), u32::MAX) {
            Err(SpaceCheck::Short(why)) => {
                assert!(why.contains(&format!("the guest's {} MiB", u32::MAX)) && why.contains("MiB are free"), "{why}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(check_pause_space(&dir.path().join("missing"), 1), Err(SpaceCheck::Unknown(_))));
    }

    fn meta(state_bytes: u64) -> MemoryMeta {
        MemoryMeta {
            format: MEMORY_FORMAT,
            fingerprint: "qemu=x\naccel=tcg".into(),
            state_bytes,
            mem_mib: 512,
            vcpu_count: 1,
            network: false,
            disk_format: DiskFormat::Raw,
            saved_at_ms: 1,
            pause_ms: 2,
            disk: PathBuf::from("/d"),
            published: Vec::new(),
        }
    }

    fn save(dir: &VmDir, m: &MemoryMeta, state: &[u8]) {
        std::fs::write(dir.memory_state(), state).unwrap();
        std::fs::write(dir.memory_meta(), serde_json::to_vec(m).unwrap()).unwrap();
    }

    #[test]
    fn disk_formats_serialise_as_qemu_spells_them_and_default_to_raw() {
        assert_eq!(serde_json::to_string(&DiskFormat::Qcow2).unwrap(), "\"qcow2\"");
        assert_eq!(serde_json::from_str::<DiskFormat>("\"raw\"").unwrap(), DiskFormat::Raw);
        assert_eq!(DiskFormat::default(), DiskFormat::Raw);
        assert!(serde_json::from_str::<DiskFormat>("\"vmdk\"").is_err());
    }

    #[test]
    fn a_state_loads_only_whole_and_with_its_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = VmDir::new(tmp.path());
        assert_eq!(MemoryState::load(&dir).unwrap(), None);
        // A state without its record (a pause cut short after the rename) is no state.
        std::fs::write(dir.memory_state(), b"abcd").unwrap();
        assert_eq!(MemoryState::load(&dir).unwrap(), None);
        save(&dir, &meta(4), b"abcd");
        let s = MemoryState::load(&dir).unwrap().unwrap();
        assert_eq!((s.path, s.meta.state_bytes), (dir.memory_state(), 4));
        // Truncated.
        std::fs::write(dir.memory_state(), b"ab").unwrap();
        let e = MemoryState::load(&dir).unwrap_err();
        assert!(matches!(&e, Error::CorruptState(m) if m.contains("holds 2 bytes, 4 were saved")), "{e}");
        // Missing state file.
        std::fs::remove_file(dir.memory_state()).unwrap();
        assert!(matches!(MemoryState::load(&dir), Err(Error::CorruptState(_))));
        // Unreadable record, other format, empty machine.
        std::fs::write(dir.memory_meta(), b"{not json").unwrap();
        assert!(matches!(MemoryState::load(&dir), Err(Error::CorruptState(m)) if m.contains("unreadable")));
        save(&dir, &MemoryMeta { format: 99, ..meta(4) }, b"abcd");
        assert!(matches!(MemoryState::load(&dir), Err(Error::CorruptState(m)) if m.contains("format 99")));
        save(&dir, &MemoryMeta { mem_mib: 0, ..meta(4) }, b"abcd");
        assert!(matches!(MemoryState::load(&dir), Err(Error::CorruptState(_))));
        MemoryState::discard(&dir).unwrap();
        assert!(!dir.memory_state().exists() && !dir.memory_meta().exists());
        assert_eq!(MemoryState::load(&dir).unwrap(), None);
        MemoryState::discard(&dir).unwrap();
    }

    #[test]
    fn a_fingerprint_mismatch_names_what_differs() {
        assert_eq!(fingerprint_mismatch("a=1\nb=2", "a=1\nb=2"), None);
        let why = fingerprint_mismatch("a=1\nmem_mib=512", "a=1\nmem_mib=1024").unwrap();
        assert_eq!(why, "mem_mib: saved with 512, now 1024");
        let why = fingerprint_mismatch("a=1", "a=1\nnic=true").unwrap();
        assert!(why.contains("nic: saved with (none), now true"), "{why}");
    }

    #[test]
    fn the_fingerprint_covers_the_machine_shape_and_disk_format() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = BootSpec {
            dir: VmDir::new(tmp.path()),
            vm_id: "x".into(),
            accel: crate::Accel::Tcg,
            vcpu_count: 1,
            mem_mib: 512,
            network: crate::NetworkPolicy::Off,
            kernel: tmp.path().join("k"),
            initramfs: tmp.path().join("i"),
            disk: tmp.path().join("d"),
            disk_format: DiskFormat::Raw,
            snapshot: false,
            owner_pid: None,
            remove_dir_on_exit: false,
            supervisor_bin: PathBuf::from("/x"),
            idle_pause: None,
            hostname: None,
        };
        let base = fingerprint(&spec);
        // The VM's directory, disk path and identity do not matter (forks restore elsewhere).
        let elsewhere =
            BootSpec { dir: VmDir::new("/elsewhere"), disk: "/other".into(), vm_id: "y".into(), ..spec.clone() };
        assert_eq!(fingerprint(&elsewhere), base);
        for (changed, key) in [
            (BootSpec { mem_mib: 1024, ..spec.clone() }, "mem_mib"),
            (BootSpec { vcpu_count: 2, ..spec.clone() }, "vcpu_count"),
            (BootSpec { accel: crate::Accel::Kvm, ..spec.clone() }, "accel"),
            (BootSpec { network: crate::NetworkPolicy::Egress, ..spec.clone() }, "nic"),
            (BootSpec { kernel: tmp.path().join("k2"), ..spec.clone() }, "kernel"),
        ] {
            let why = fingerprint_mismatch(&base, &fingerprint(&changed)).unwrap();
            assert!(why.starts_with(key), "{why}");
        }
    }

    #[test]
    fn an_overlay_is_owner_only_and_records_its_base_and_format() {
        use std::os::unix::fs::PermissionsExt;
        if crate::util::which("qemu-img").is_none() {
            eprintln!("qemu-img is not installed; skipping");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base.ext4");
        std::fs::File::create(&base).unwrap().set_len(64 * 1024 * 1024).unwrap();
        let dest = tmp.path().join("rootfs.qcow2");
        create_overlay(&base, DiskFormat::Raw, &dest).unwrap();
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        let info =
            std::process::Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(&dest).output().unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["backing-filename"], base.display().to_string());
        assert_eq!(info["backing-filename-format"], "raw");
        assert_eq!(info["virtual-size"], 64 * 1024 * 1024);
        assert!(!tmp.path().join("rootfs.qcow2.partial").exists());
        let e = create_overlay(Path::new("relative.ext4"), DiskFormat::Raw, &dest).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    }

    #[test]
    fn hostnames_and_host_entropy() {
        assert!(valid_hostname("ws-1a2b") && valid_hostname("a.b-c"));
        for bad in ["", "-a", "a-", "a b", "a;b", "a..b", &"x".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad:?}");
        }
        assert_eq!(host_entropy(32).unwrap().len(), 32);
        assert_ne!(host_entropy(32).unwrap(), host_entropy(32).unwrap());
    }
}
