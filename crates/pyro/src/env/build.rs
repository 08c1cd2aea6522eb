//! Building an environment locally from Debian packages.
//!
//! debootstrap (minbase + the environment's packages + Debian's cloud kernel) into the
//! staging directory, the kernel's ELF extracted from its bzImage, the virtio modules copied
//! out uncompressed in load order, and the tree packed into an ext4 image with
//! `mkfs.ext4 -d` (no mount, no loop device). The caller (`EnvStore::pull`) owns the staging
//! dir and publishes it.

use super::{
    remove_tree, DebootstrapError, EnvError, EnvStore, EnvironmentSpec, Manifest, CATALOG_VERSION, ENVIRONMENT_VERSION,
};
use crate::config::which;
use crate::{Error, Progress, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "bookworm";
const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
/// Bumped whenever the recipe below changes what an install contains; part of the digest.
const RECIPE: &str = "pyro-local-build/2";
/// Modules the initramfs may load, with their dependencies: virtio transports (MMIO for
/// microvm/Firecracker, PCI for q35), disk, the agent's virtio-serial port, the NIC, and
/// vsock for Firecracker's agent channel. The guest init picks which to load per boot.
pub(super) const WANTED_MODULES: &[&str] =
    &["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_console", "virtio_net", "vsock", "vmw_vsock_virtio_transport"];
/// Host tools a build runs, with the Debian package that provides each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("chroot", "coreutils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
];
/// Free space a build needs in the cache: the unpacked tree, the image's allocated blocks
/// and the downloaded .debs all exist at once near the end (debian:12-build ~2 GiB).
const MIN_FREE_BYTES: u64 = 3 * 1024 * 1024 * 1024;

fn mirror() -> String {
    std::env::var("PYRO_DEBIAN_MIRROR")
        .ok()
        .map(|m| m.trim().trim_end_matches('/').to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// Every package passed to debootstrap's `--include`, sorted.
fn packages(spec: &EnvironmentSpec) -> Vec<String> {
    let mut set: BTreeSet<&str> = spec.default_packages.iter().copied().collect();
    set.extend(spec.extra_packages.iter().copied());
    set.insert(KERNEL_PACKAGE);
    set.into_iter().map(String::from).collect()
}

/// Digest of what determines a local build: recipe revision, suite and package list. The
/// mirror is left out on purpose: any Debian mirror serves the same packages.
pub fn source_digest(spec: &EnvironmentSpec) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(b"\0");
    h.update(SUITE);
    for p in packages(spec) {
        h.update(b"\0");
        h.update(p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Tools, privileges and space, checked before anything is created or downloaded, so a
/// user without root gets this message rather than a permission error from the cache.
pub(super) fn check_host(spec: &EnvironmentSpec, cache_dir: &Path) -> Result<()> {
    let missing: Vec<(&str, &str)> = HOST_TOOLS.iter().copied().filter(|(tool, _)| which(tool).is_none()).collect();
    if !missing.is_empty() {
        let tools: Vec<String> = missing.iter().map(|(t, _)| format!("`{t}`")).collect();
        let pkgs: BTreeSet<&str> = missing.iter().map(|(_, p)| *p).collect();
        return Err(Error::HostRequirement(format!(
            "building environment {} needs {} on the host: apt-get install {}",
            spec.name,
            tools.join(", "),
            pkgs.into_iter().collect::<Vec<_>>().join(" ")
        )));
    }
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::HostRequirement(format!(
            "building environment {0} needs root (debootstrap); run `sudo pyro env pull {0}` once, or set PYRO_CACHE_DIR to a cache built by root",
            spec.name
        )));
    }
    if let Some(free) = free_bytes(cache_dir) {
        if free < MIN_FREE_BYTES {
            return Err(Error::HostRequirement(format!(
                "building environment {} needs about {} GiB free in {}; only {:.1} GiB is free",
                spec.name,
                MIN_FREE_BYTES >> 30,
                cache_dir.display(),
                free as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok(())
}

/// Free space on the filesystem of `dir`, or of its nearest existing ancestor.
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    let dir = dir.ancestors().find(|a| a.exists())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
    }
}

/// Build `spec` into `stage` (a fresh staging dir) and return the manifest to publish.
pub(super) fn build(store: &EnvStore, spec: &EnvironmentSpec, stage: &Path, progress: &Progress) -> Result<Manifest> {
    let started = Instant::now();
    let rootfs = stage.join("rootfs");
    let failed_log = store.root().join(format!(".{}.failed-build.log", super::dir_name(spec.name)));

    let debs = store.cache_dir.join("debootstrap-debs");
    std::fs::create_dir_all(&debs).map_err(|e| Error::io(format!("creating {}", debs.display()), e))?;
    // debootstrap refuses a relative --cache-dir.
    let debs = debs.canonicalize().map_err(|e| Error::io(format!("resolving {}", debs.display()), e))?;
    let mirror = mirror();
    progress.report(
        "debootstrap",
        format!("installing Debian {SUITE} ({} packages requested) from {mirror}", packages(spec).len()),
        Some(0.01),
    );
    let mut cmd = Command::new(which("debootstrap").expect("checked"));
    cmd.arg("--variant=minbase")
        .arg(format!("--cache-dir={}", debs.display()))
        .arg(format!("--include={}", packages(spec).join(",")))
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&mirror)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Read by initramfs-tools' kernel hook inside the chroot: skip generating an initrd
        // pyro never uses (and deletes), several seconds of every build.
        .env("INITRD", "No")
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let log = stage.join("build.log");
    // debootstrap downloads straight into --cache-dir: two at once (building two different
    // environments) could write the same .deb together. One debootstrap at a time.
    let debs_lock_path = debs.join(".lock");
    let debs_lock = match super::try_lock_file(&debs_lock_path)? {
        Some(l) => l,
        None => {
            progress.report("wait", "another environment build is running debootstrap; waiting for it", None);
            super::lock_file(&debs_lock_path)?
        }
    };
    let result = run_debootstrap(cmd, &log, progress, expected_packages(spec));
    drop(debs_lock);
    if let Err(source) = result {
        // The staging dir (and the log in it) goes away with the failure; keep a copy.
        let kept = std::fs::copy(&log, &failed_log).is_ok();
        let log_hint = if kept { format!("\nfull log: {}", failed_log.display()) } else { String::new() };
        return Err(EnvError::Build { name: spec.name, source, log_hint }.into());
    }
    let _ = std::fs::remove_file(&failed_log);
    // debootstrap unmounts what it mounted when it exits normally; make sure, because
    // mkfs.ext4 -d would otherwise copy the host's /proc into the image.
    super::unmount_below(&rootfs);

    progress.report("kernel", "extracting the uncompressed kernel from the bzImage", Some(0.80));
    let (vmlinuz, release) = find_kernel(&rootfs)?;
    extract_vmlinux(&vmlinuz, &stage.join("vmlinux"))?;

    progress.report("modules", format!("collecting virtio modules of {release}"), Some(0.82));
    let mods = collect_modules(&rootfs.join("lib/modules").join(&release), &stage.join("modules"))?;
    progress.report("modules", format!("modules in load order: {}", mods.join(" ")), Some(0.83));

    progress.report("rootfs", "preparing the root filesystem for a pyro guest", Some(0.84));
    prepare_rootfs(&rootfs)?;

    let image = stage.join("rootfs.ext4");
    let size = image_size(&rootfs);
    progress.report("rootfs-image", format!("writing the ext4 image ({} MiB, sparse)", size >> 20), Some(0.86));
    make_image(&rootfs, &image, size)?;

    progress.report("verify", "checking the image with e2fsck", Some(0.95));
    check_image(&image)?;
    remove_tree(&rootfs).map_err(|e| Error::io("removing the staging rootfs", e))?;

    progress.report(
        "install",
        format!("built {} in {:.0} s; installing", spec.name, started.elapsed().as_secs_f64()),
        Some(0.98),
    );
    Ok(Manifest {
        catalog_version: CATALOG_VERSION.into(),
        name: spec.name.into(),
        version: ENVIRONMENT_VERSION.into(),
        source: "local-build".into(),
        source_digest: source_digest(spec),
        kernel_release: release,
        installed_at: crate::util::now_secs(),
        packages: packages(spec),
    })
}

/// How many packages debootstrap ends up installing (measured 2026-11); only used to turn
/// its per-package lines into a progress fraction, so an estimate is fine.
fn expected_packages(spec: &EnvironmentSpec) -> usize {
    match spec.name {
        "debian:12-base" => 120,
        "debian:12" => 138,
        _ => 195,
    }
}

/// Runs debootstrap with both output streams merged into `log`, reporting its `I:` lines.
fn run_debootstrap(
    mut cmd: Command,
    log: &Path,
    progress: &Progress,
    expected: usize,
) -> std::result::Result<(), DebootstrapError> {
    let log_file =
        std::fs::File::create(log).map_err(|source| DebootstrapError::Log { path: log.to_path_buf(), source })?;
    let mut log_file = std::io::BufWriter::new(log_file);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(DebootstrapError::Spawn)?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let started = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut tracker = DebootstrapProgress::new(expected);
    let mut last_report: Option<Instant> = None;
    let mut last_phase = Phase::Start;
    for line in rx {
        // Timestamped, so a slow build shows where the time went.
        let _ = writeln!(log_file, "[{:7.1}] {line}", started.elapsed().as_secs_f64());
        if tail.len() == 12 {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        if let Some((msg, frac)) = tracker.line(&line) {
            // Per-package lines come several times a second: pass on phase changes and
            // otherwise about three a second.
            let due = last_report.is_none_or(|t| t.elapsed() >= Duration::from_millis(300));
            if tracker.phase != last_phase || due {
                progress.report("debootstrap", msg, Some(frac));
                last_report = Some(Instant::now());
                last_phase = tracker.phase;
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let _ = log_file.flush();
    let status = child.wait().map_err(DebootstrapError::Wait)?;
    if !status.success() {
        let tail: Vec<&str> = tail.iter().map(String::as_str).filter(|l| !l.trim().is_empty()).collect();
        return Err(DebootstrapError::Failed { status, tail: tail.join("\n") });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Download,
    Extract,
    Install,
    Done,
}

/// Turns debootstrap's `I:` lines into (message, fraction of the whole build). debootstrap
/// never says how many packages it will fetch, so the download phase is measured against
/// an estimate; after it, the count of fetched packages is exact.
struct DebootstrapProgress {
    expected: usize,
    phase: Phase,
    validated: usize,
    extracted: usize,
    installed: usize,
    fraction: f64,
}

impl DebootstrapProgress {
    // Share of the whole build spent in each phase (measured: downloads dominate on a cold
    // cache, unpack/configure on a warm one).
    const DOWNLOAD: (f64, f64) = (0.04, 0.35);
    const EXTRACT: (f64, f64) = (0.35, 0.42);
    const INSTALL: (f64, f64) = (0.42, 0.79);

    fn new(expected: usize) -> Self {
        DebootstrapProgress { expected, phase: Phase::Start, validated: 0, extracted: 0, installed: 0, fraction: 0.01 }
    }

    fn line(&mut self, line: &str) -> Option<(String, f64)> {
        let msg = line.strip_prefix("I: ")?.trim();
        let lerp = |(a, b): (f64, f64), x: f64| a + (b - a) * x.clamp(0.0, 1.0);
        let f = if msg.starts_with("Validating ") && !msg.starts_with("Validating Packages") {
            self.phase = Phase::Download;
            self.validated += 1;
            lerp(Self::DOWNLOAD, self.validated as f64 / self.expected as f64)
        } else if msg.starts_with("Extracting ") {
            self.phase = Phase::Extract;
            self.extracted += 1;
            lerp(Self::EXTRACT, self.extracted as f64 / self.validated.max(1) as f64)
        } else if msg.starts_with("Unpacking ") || msg.starts_with("Configuring ") {
            self.phase = Phase::Install;
            if msg.ends_with("packages...") || msg.ends_with("system...") {
                self.fraction
            } else {
                self.installed += 1;
                // Every package is unpacked once and configured once.
                lerp(Self::INSTALL, self.installed as f64 / (2 * self.validated.max(1)) as f64)
            }
        } else if msg.starts_with("Base system installed") {
            self.phase = Phase::Done;
            Self::INSTALL.1
        } else {
            self.fraction
        };
        // Estimates can overshoot within a phase; progress never goes backwards.
        self.fraction = self.fraction.max(f);
        Some((msg.to_string(), self.fraction))
    }
}

/// `/boot/vmlinuz-<release>` of the rootfs (the newest, should there be several).
fn find_kernel(rootfs: &Path) -> Result<(PathBuf, String)> {
    let boot = rootfs.join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map_err(|e| Error::io(format!("reading {}", boot.display()), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    kernels.sort();
    let vmlinuz = kernels
        .pop()
        .ok_or_else(|| Error::Environment(format!("{KERNEL_PACKAGE} installed no /boot/vmlinuz-* in the rootfs")))?;
    let release = vmlinuz.file_name().expect("has name").to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    Ok((vmlinuz, release))
}

/// Compressed payload formats a bzImage may carry: magic, tool, Debian package.
const PAYLOADS: &[(&[u8], &str, &str)] = &[
    (&[0x02, 0x21, 0x4c, 0x18], "lz4", "lz4"),
    (&[0x1f, 0x8b, 0x08], "gzip", "gzip"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz", "xz-utils"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstd"),
];
/// Decompressed output is cut off here: a false magic match must not fill the disk.
const MAX_KERNEL_BYTES: u64 = 512 * 1024 * 1024;

/// Extract the uncompressed ELF kernel from a bzImage. Debian's cloud kernel carries an LZ4
/// legacy-frame payload (magic `02 21 4c 18`); gzip, xz and zstd payloads work too, as does
/// a file that is already an ELF. The payload is located from the boot protocol header
/// when it has one, else by scanning for the magic bytes.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(bzimage).map_err(|e| Error::io(format!("reading {}", bzimage.display()), e))?;
    let elf = kernel_elf(&data).map_err(|e| match e {
        Error::Environment(m) => Error::Environment(format!("{m} (from {})", bzimage.display())),
        other => other,
    })?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(out)?;
        f.write_all(&elf)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(format!("writing {}", out.display()), e))
}

fn kernel_elf(data: &[u8]) -> Result<Vec<u8>> {
    if is_kernel_elf(data) {
        return Ok(data.to_vec());
    }
    let mut offsets: Vec<usize> = Vec::new();
    if let Some(at) = bzimage_payload_offset(data) {
        offsets.push(at);
    }
    for (magic, _, _) in PAYLOADS {
        offsets.extend(find_all(data, magic).take(16));
    }
    let mut seen = HashSet::new();
    let mut missing_tools = BTreeSet::new();
    for at in offsets.into_iter().filter(|o| seen.insert(*o)) {
        let Some((_, tool, pkg)) = PAYLOADS.iter().find(|(m, _, _)| data[at..].starts_with(m)) else { continue };
        let Some(bin) = which(tool) else {
            missing_tools.insert((*tool, *pkg));
            continue;
        };
        // Whatever follows the payload (the appended size, padding) may make the tool exit
        // non-zero after it wrote the whole kernel: judge by the output, not the status.
        if let Some(elf) = decompress(&bin, &data[at..]).filter(|o| is_kernel_elf(o)) {
            return Ok(elf);
        }
    }
    if let Some((tool, pkg)) = missing_tools.into_iter().next() {
        return Err(Error::HostRequirement(format!(
            "unpacking the kernel needs `{tool}` on the host: apt-get install {pkg}"
        )));
    }
    Err(Error::Environment("could not extract an ELF kernel: no supported compressed payload found".into()))
}

/// Offset of the compressed kernel inside a bzImage, from the x86 boot protocol header
/// ("HdrS", version >= 2.08 has payload_offset/payload_length).
fn bzimage_payload_offset(data: &[u8]) -> Option<usize> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| data.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if data.get(0x202..0x206)? != b"HdrS" || u16_at(0x206)? < 0x0208 {
        return None;
    }
    let setup_sects = match *data.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let at = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let len = u32_at(0x24c)? as usize;
    (len > 0 && at.checked_add(len)? <= data.len()).then_some(at)
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len()).enumerate().filter(move |(_, w)| *w == needle).map(|(i, _)| i)
}

/// A 64-bit x86-64 ELF of plausible kernel size.
fn is_kernel_elf(b: &[u8]) -> bool {
    b.len() as u64 >= super::MIN_KERNEL_BYTES && b.starts_with(b"\x7fELF") && b[4] == 2 && b[18..20] == [0x3e, 0]
}

/// `<tool> -dc` over `input`; None when it produced nothing usable.
fn decompress(tool: &Path, input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let stdout = child.stdout.take()?;
    let out = std::thread::scope(|s| {
        // Feed from another thread: the tool writes while we write, and pipes are small.
        s.spawn(move || {
            let _ = stdin.write_all(input);
        });
        let mut out = Vec::new();
        let _ = stdout.take(MAX_KERNEL_BYTES).read_to_end(&mut out);
        out
    });
    let _ = child.kill();
    let _ = child.wait();
    (!out.is_empty()).then_some(out)
}

/// The module name of a path from modules.dep (`kernel/drivers/block/virtio_blk.ko.xz` →
/// `virtio_blk`); `-` and `_` are the same to the kernel.
pub(super) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Resolve `wanted` against modules.dep: module paths in load order (dependencies first).
/// Built-in modules are skipped; a wanted module that is neither built in nor listed is an
/// error, since the guest would not boot without it.
pub(super) fn resolve_modules(dep: &str, builtin: &str, wanted: &[&str]) -> std::result::Result<Vec<String>, String> {
    let deps: HashMap<&str, Vec<&str>> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim(), d.split_whitespace().collect()))
        .collect();
    let by_name: HashMap<String, &str> = deps.keys().map(|p| (module_name(p), *p)).collect();
    let builtin: HashSet<String> = builtin.lines().map(str::trim).filter(|l| !l.is_empty()).map(module_name).collect();

    fn visit<'a>(
        path: &'a str,
        deps: &HashMap<&'a str, Vec<&'a str>>,
        order: &mut Vec<String>,
        stack: &mut Vec<&'a str>,
    ) -> std::result::Result<(), String> {
        if order.iter().any(|p| p == path) {
            return Ok(());
        }
        if stack.contains(&path) {
            return Err(format!("modules.dep has a dependency cycle through {path}"));
        }
        stack.push(path);
        for &d in deps.get(path).map(Vec::as_slice).unwrap_or_default() {
            visit(d, deps, order, stack)?;
        }
        stack.pop();
        order.push(path.to_string());
        Ok(())
    }

    let mut order = Vec::new();
    for want in wanted {
        let want = want.replace('-', "_");
        if builtin.contains(&want) {
            continue;
        }
        let path =
            by_name.get(&want).ok_or_else(|| format!("kernel module {want} is neither built in nor in modules.dep"))?;
        visit(path, &deps, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// Copy WANTED_MODULES and their dependencies out of `moddir` (a `/lib/modules/<release>`),
/// uncompressed (the 6.1 kernel cannot `finit_module` an xz file itself), flat as
/// `<name>.ko`, and write `out/order`. Returns the file names in load order.
pub(super) fn collect_modules(moddir: &Path, out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .map_err(|e| Error::io(format!("reading {}/modules.dep", moddir.display()), e))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let order = resolve_modules(&dep, &builtin, WANTED_MODULES).map_err(Error::Environment)?;
    let mut names = Vec::new();
    for rel in &order {
        let name = format!("{}.ko", module_name(rel));
        decompress_module(&moddir.join(rel), &out.join(&name))?;
        names.push(name);
    }
    std::fs::write(out.join("order"), names.join("\n") + "\n")
        .map_err(|e| Error::io(format!("writing {}/order", out.display()), e))?;
    Ok(names)
}

/// Largest decompressed kernel module accepted. Modules come from Debian's kernel package
/// in a local build, but from an image's rootfs in a pull, so a crafted `.ko.xz` must not
/// decompress into the host's memory without end.
pub(super) const MAX_MODULE_BYTES: u64 = 64 << 20;

fn decompress_module(src: &Path, dest: &Path) -> Result<()> {
    decompress_module_capped(src, dest, MAX_MODULE_BYTES)
}

fn decompress_module_capped(src: &Path, dest: &Path, limit: u64) -> Result<()> {
    let s = src.to_string_lossy();
    let tool = [(".ko.xz", "xz", "xz-utils"), (".ko.zst", "zstd", "zstd"), (".ko.gz", "gzip", "gzip")]
        .into_iter()
        .find(|(ext, _, _)| s.ends_with(ext));
    let Some((_, tool, pkg)) = tool else {
        return std::fs::copy(src, dest).map(|_| ()).map_err(|e| Error::io(format!("copying {s}"), e));
    };
    let bin = which(tool).ok_or_else(|| {
        Error::HostRequirement(format!("unpacking kernel modules needs `{tool}` on the host: apt-get install {pkg}"))
    })?;
    let mut child = Command::new(bin)
        .arg("-dc")
        .arg(src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("running {tool}"), e))?;
    let (stdout, stderr_pipe) = (child.stdout.take(), child.stderr.take());
    // stderr drains on its own thread: a tool that fills that pipe must not stall stdout.
    let (read, out, stderr) = std::thread::scope(|scope| {
        let errors = scope.spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr_pipe {
                let _ = (&mut e).take(64 << 10).read_to_string(&mut text);
                let _ = std::io::copy(&mut e, &mut std::io::sink());
            }
            text
        });
        let mut out = Vec::new();
        let read = stdout.map(|o| o.take(limit + 1).read_to_end(&mut out));
        if out.len() as u64 > limit {
            let _ = child.kill();
        }
        (read, out, errors.join().unwrap_or_default())
    });
    let too_large = out.len() as u64 > limit;
    let status = child.wait().map_err(|e| Error::io(format!("waiting for {tool}"), e))?;
    if too_large {
        return Err(Error::Environment(format!("{s} decompresses to more than {limit} bytes; not a kernel module")));
    }
    if read.is_some_and(|r| r.is_err()) || !status.success() || !out.starts_with(b"\x7fELF") {
        return Err(Error::Environment(format!("could not decompress {s}: {}", stderr.trim())));
    }
    std::fs::write(dest, out).map_err(|e| Error::io(format!("writing {}", dest.display()), e))
}

/// Make the debootstrapped tree a pyro guest root: drop what only a bootloader or a
/// package download needs, and set the identity files the agent and tools expect.
fn prepare_rootfs(root: &Path) -> Result<()> {
    let remove_matching = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if !keep(&e.file_name().to_string_lossy()) {
                    let _ = remove_tree(&e.path());
                }
            }
        }
    };
    let boot_file = |n: &str| n.starts_with("vmlinuz") || n.starts_with("initrd.img");
    // The kernel is booted from the extracted vmlinux and initramfs-tools' initrd is never
    // used; the /vmlinuz and /initrd.img symlinks would dangle.
    remove_matching(&root.join("boot"), &|n| !boot_file(n));
    remove_matching(root, &|n| !boot_file(n));
    // Package downloads and indexes: rebuilt by `apt-get update` in the guest.
    remove_matching(&root.join("var/cache/apt/archives"), &|n| n == "partial" || n == "lock");
    remove_matching(&root.join("var/cache/apt"), &|n| !n.ends_with(".bin"));
    remove_matching(&root.join("var/lib/apt/lists"), &|n| n == "partial" || n == "lock");

    let write = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        if p.is_symlink() {
            let _ = std::fs::remove_file(&p);
        }
        std::fs::write(&p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let ws = root.join("workspace");
        std::fs::create_dir_all(&ws).map_err(|e| Error::io("creating /workspace", e))?;
        std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("setting /workspace's mode", e))?;
    }
    write("etc/hostname", "pyro\n")?;
    write("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 pyro\n::1 localhost ip6-localhost ip6-loopback\n")?;
    if !root.join("etc/nsswitch.conf").exists() {
        write("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")?;
    }
    // Empty: each guest gets its own id should anything generate one; a baked-in id would
    // be shared by every workspace.
    write("etc/machine-id", "")?;
    // debootstrap copies the build host's resolver config in; it is meaningless (and
    // private) in a guest. Guest networking writes its own when a workspace has a network.
    write("etc/resolv.conf", "")?;
    // The build mirror may be a local proxy the guest cannot reach: point apt at Debian.
    write(
        "etc/apt/sources.list",
        "deb http://deb.debian.org/debian bookworm main\n\
         deb http://deb.debian.org/debian bookworm-updates main\n\
         deb http://deb.debian.org/debian-security bookworm-security main\n",
    )?;
    // Every exec is a login shell (`sh -lc`). Debian's profiles spawn `id -u` and `mesg` on
    // each one, ~70 ms apiece under TCG: answer both without a process where possible.
    let patch = |rel: &str, from: &str, to: &str| -> Result<()> {
        let p = root.join(rel);
        if let Ok(text) = std::fs::read_to_string(&p) {
            std::fs::write(&p, text.replace(from, to)).map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
        }
        Ok(())
    };
    patch(
        "etc/profile",
        r#"if [ "$(id -u)" -eq 0 ]; then"#,
        r#"if [ "${USER:-}" = root ] || [ "$(id -u)" -eq 0 ]; then"#,
    )?;
    patch("root/.profile", "mesg n 2> /dev/null || true", "[ -t 0 ] && mesg n 2> /dev/null || true")?;
    Ok(())
}

/// Allocated bytes under `root` (hard links counted once per name: an over-estimate).
fn used_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            }
            total += (m.blocks() * 512).max(m.len());
        }
    }
    total
}

/// Image size: 2 GiB, or 1.5× the tree plus 512 MiB when that is more, in whole MiB. The
/// file is sparse, so unused space costs nothing on the host.
fn image_size(root: &Path) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let size = (used_bytes(root) as f64 * 1.5) as u64 + 512 * MIB;
    size.max(2048 * MIB).div_ceil(MIB) * MIB
}

fn make_image(root: &Path, image: &Path, size: u64) -> Result<()> {
    // Default ext4 features (journal included): what the guest kernel and the offline disk
    // tools expect. root_owner pins / to root whoever runs the build.
    let out = Command::new(which("mkfs.ext4").expect("checked"))
        .args(["-q", "-F", "-L", "pyro-root", "-E", "root_owner=0:0", "-d"])
        .arg(root)
        .arg(image)
        .arg(format!("{}k", size / 1024))
        .output()
        .map_err(|e| Error::io("running mkfs.ext4", e))?;
    if !out.status.success() {
        return Err(Error::Environment(format!("mkfs.ext4 failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn check_image(image: &Path) -> Result<()> {
    let out = Command::new(which("e2fsck").expect("checked"))
        .arg("-fn")
        .arg(image)
        .output()
        .map_err(|e| Error::io("running e2fsck", e))?;
    if !out.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(Error::Environment(format!(
            "the new rootfs image failed e2fsck ({}):\n{}",
            out.status,
            tail.join("\n")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake x86-64 ELF kernel of 2 MiB.
    fn fake_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 0x3e;
        elf.extend((0..2 * 1024 * 1024).map(|i| (i % 251) as u8));
        elf
    }

    fn compress(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
        let mut child = Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} is needed for this test ({e}); see scripts/install-host-deps.sh"));
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let t = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        t.join().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// A bzImage-shaped file: setup sectors with a boot protocol 2.15 header pointing at
    /// the payload, a decoy LZ4 magic before the payload, trailing bytes after it.
    fn fake_bzimage(payload: &[u8], with_header: bool) -> Vec<u8> {
        let setup_sects = 3u8;
        let mut bz = vec![0x55u8; (setup_sects as usize + 1) * 512];
        let mut pm = vec![0x90u8; 300];
        pm[100..104].copy_from_slice(&[0x02, 0x21, 0x4c, 0x18]); // decoy magic
        let offset = pm.len() as u32;
        pm.extend_from_slice(payload);
        pm.extend_from_slice(&(1234u32).to_le_bytes()); // the appended size, like the kernel's
        pm.extend([0u8; 64]);
        if with_header {
            bz[0x1f1] = setup_sects;
            bz[0x202..0x206].copy_from_slice(b"HdrS");
            bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
            bz[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
            bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        }
        bz.extend(pm);
        bz
    }

    #[test]
    fn lz4_legacy_payload_is_found_with_and_without_the_boot_header() {
        let elf = fake_elf();
        let lz = compress("lz4", &["-l", "-c", "-q"], &elf);
        assert_eq!(&lz[..4], &[0x02, 0x21, 0x4c, 0x18]);
        for with_header in [true, false] {
            let bz = fake_bzimage(&lz, with_header);
            assert_eq!(bzimage_payload_offset(&bz).is_some(), with_header);
            assert!(kernel_elf(&bz).unwrap() == elf, "header={with_header}");
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("bzImage"), fake_bzimage(&lz, true)).unwrap();
        extract_vmlinux(&tmp.path().join("bzImage"), &tmp.path().join("vmlinux")).unwrap();
        assert!(std::fs::read(tmp.path().join("vmlinux")).unwrap() == elf);
    }

    #[test]
    fn gzip_xz_and_zstd_payloads_and_plain_elf_work_too() {
        let elf = fake_elf();
        for (tool, args) in [("gzip", &["-c"][..]), ("xz", &["-c", "--check=crc32"][..]), ("zstd", &["-c", "-q"][..])] {
            let bz = fake_bzimage(&compress(tool, args, &elf), false);
            assert!(kernel_elf(&bz).unwrap() == elf, "{tool}");
        }
        assert!(kernel_elf(&elf).unwrap() == elf);
    }

    #[test]
    fn junk_is_not_a_kernel() {
        let e = kernel_elf(&vec![7u8; 10000]).unwrap_err();
        assert!(e.to_string().contains("could not extract an ELF kernel"), "{e}");
        // An ELF that is too small or not x86-64 is rejected too.
        let mut small = fake_elf();
        small.truncate(4096);
        assert!(!is_kernel_elf(&small));
        let mut arm = fake_elf();
        arm[18] = 0xb7;
        assert!(!is_kernel_elf(&arm));
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("junk"), vec![7u8; 100]).unwrap();
        let e = extract_vmlinux(&tmp.path().join("junk"), &tmp.path().join("v")).unwrap_err();
        assert!(e.to_string().contains(&tmp.path().join("junk").display().to_string()), "{e}");
    }

    #[test]
    fn find_all_finds_every_occurrence() {
        let hay = [1, 2, 1, 2, 1, 3];
        assert_eq!(find_all(&hay, &[1, 2]).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(find_all(&hay, &[9]).count(), 0);
    }

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/virtio/virtio_mmio.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:
kernel/drivers/char/virtio_console.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/net/vmw_vsock/vsock.ko.xz:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz
kernel/fs/other.ko.xz:
";

    #[test]
    fn modules_come_out_in_dependency_order_without_builtins() {
        let builtin = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n";
        let order = resolve_modules(DEP, builtin, WANTED_MODULES).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} missing from {names:?}"));
        assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
        assert!(pos("vsock") < pos("vmw_vsock_virtio_transport_common"));
        assert!(pos("vmw_vsock_virtio_transport_common") < pos("vmw_vsock_virtio_transport"));
        assert!(pos("virtio_pci_modern_dev") < pos("virtio_pci"));
        assert_eq!(names.len(), 12, "{names:?}");
        assert!(!names.contains(&"other".to_string()));
        assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len(), "no duplicates");

        // A wanted module built into the kernel is skipped; a missing one is an error.
        let order =
            resolve_modules(DEP, "kernel/drivers/block/virtio_blk.ko\n", &["virtio_blk", "virtio_mmio"]).unwrap();
        assert_eq!(order, ["kernel/drivers/virtio/virtio_mmio.ko.xz"]);
        let e = resolve_modules(DEP, "", &["virtio_gpu"]).unwrap_err();
        assert!(e.contains("virtio_gpu is neither built in nor in modules.dep"), "{e}");
        let e = resolve_modules("a.ko: b.ko\nb.ko: a.ko\n", "", &["a"]).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        assert_eq!(module_name("kernel/x/snd-hda.ko.zst"), "snd_hda");
    }

    #[test]
    fn a_module_that_decompresses_past_the_cap_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("virtio_blk.ko.xz");
        let mut ko = b"\x7fELF".to_vec();
        ko.extend(vec![0u8; 1 << 20]);
        std::fs::write(&src, compress("xz", &["-c", "--check=crc32"], &ko)).unwrap();
        let dest = tmp.path().join("virtio_blk.ko");
        let e = decompress_module_capped(&src, &dest, 64 << 10).unwrap_err().to_string();
        assert!(e.contains("decompresses to more than 65536 bytes"), "{e}");
        assert!(!dest.exists());
        decompress_module_capped(&src, &dest, 2 << 20).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), ko);
    }

    #[test]
    fn modules_are_decompressed_flat_with_an_order_file() {
        let tmp = tempfile::tempdir().unwrap();
        let moddir = tmp.path().join("lib/modules/6.1.0-test");
        let mut dep = String::new();
        let mut ko = b"\x7fELF".to_vec();
        ko.extend([1u8; 300]);
        for want in WANTED_MODULES {
            let rel = format!("kernel/{want}.ko.xz");
            std::fs::create_dir_all(moddir.join("kernel")).unwrap();
            std::fs::write(moddir.join(&rel), compress("xz", &["-c", "--check=crc32"], &ko)).unwrap();
            dep.push_str(&format!("{rel}:\n"));
        }
        std::fs::write(moddir.join("modules.dep"), dep).unwrap();
        let out = tmp.path().join("modules");
        let names = collect_modules(&moddir, &out).unwrap();
        assert_eq!(names.len(), WANTED_MODULES.len());
        assert_eq!(std::fs::read_to_string(out.join("order")).unwrap(), names.join("\n") + "\n");
        assert_eq!(std::fs::read(out.join("virtio_blk.ko")).unwrap(), ko);
    }

    #[test]
    fn debootstrap_lines_become_monotone_progress() {
        let mut p = DebootstrapProgress::new(4);
        let lines = [
            "I: Retrieving InRelease ",
            "I: Checking Release signature",
            "I: Retrieving Packages ",
            "I: Validating Packages ",
            "I: Resolving dependencies of required packages...",
            "I: Retrieving a 1.0",
            "I: Validating a 1.0",
            "I: Retrieving b 1.0",
            "I: Validating b 1.0",
            "I: Extracting a...",
            "I: Extracting b...",
            "I: Installing core packages...",
            "I: Unpacking required packages...",
            "I: Unpacking a...",
            "I: Configuring required packages...",
            "I: Configuring a...",
            "I: Unpacking the base system...",
            "I: Unpacking b...",
            "I: Configuring b...",
            "I: Base system installed successfully.",
        ];
        let mut last = 0.0;
        for l in lines {
            let (_, f) = p.line(l).unwrap();
            assert!(f >= last && f <= 0.8, "{l}: {f} after {last}");
            last = f;
        }
        assert_eq!(p.phase, Phase::Done);
        assert_eq!(last, DebootstrapProgress::INSTALL.1);
        assert!(p.line("W: something").is_none());
    }

    #[test]
    fn digest_depends_on_the_package_set_only() {
        let a = source_digest(super::super::spec("debian:12").unwrap());
        let b = source_digest(super::super::spec("debian:12-build").unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert_eq!(a, source_digest(super::super::spec("debian:12").unwrap()));
        let pk = packages(super::super::spec("debian:12-build").unwrap());
        for p in ["gcc", "g++", "libc6-dev", "cmake", "python3", "make", "git", KERNEL_PACKAGE] {
            assert!(pk.iter().any(|x| x == p), "{p}");
        }
    }

    #[test]
    fn image_size_has_a_floor_and_headroom() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(image_size(tmp.path()), 2048 * 1024 * 1024);
    }
}
