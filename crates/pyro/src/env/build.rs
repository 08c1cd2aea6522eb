//! Building an environment locally from Debian packages.
//!
//! debootstrap (minbase + the environment's packages + Debian's cloud kernel) into a staging
//! directory, the kernel's ELF extracted from its bzImage, the virtio modules copied out in
//! load order, and the tree packed into an ext4 image with `mkfs.ext4 -d` (no mount, no
//! loop device). Everything happens in `.partial-*` and is renamed into place at the end.

use super::{EnvStore, EnvironmentSpec, Manifest, CATALOG_VERSION, ENVIRONMENT_VERSION};
use crate::config::which;
use crate::{Error, Progress, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SUITE: &str = "bookworm";
/// Bumped whenever the build recipe changes what ends up in an image.
const RECIPE_VERSION: &str = "2";
const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";
/// Modules the initramfs loads (with their dependencies): virtio transports, disk, the agent
/// port, the NIC, vsock for Firecracker.
const WANTED_MODULES: &[&str] =
    &["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_console", "virtio_net", "vmw_vsock_virtio_transport"];

fn mirror() -> String {
    std::env::var("PYRO_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

fn packages(spec: &EnvironmentSpec) -> Vec<String> {
    let mut set: BTreeSet<&str> = spec.default_packages.iter().copied().collect();
    set.extend(spec.extra_packages.iter().copied());
    set.insert(KERNEL_PACKAGE);
    set.into_iter().map(String::from).collect()
}

/// Digest of what determines the build: suite, packages, mirror.
pub fn source_digest(spec: &EnvironmentSpec) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION);
    h.update(SUITE);
    for p in packages(spec) {
        h.update(b"\0");
        h.update(p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn require_tools() -> Result<()> {
    for (tool, pkg) in
        [("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("e2fsck", "e2fsprogs"), ("lz4", "lz4")]
    {
        if which(tool).is_none() {
            return Err(Error::HostRequirement(format!(
                "building an environment needs `{tool}`: apt-get install {pkg}"
            )));
        }
    }
    Ok(())
}

pub(super) fn build(store: &EnvStore, spec: &EnvironmentSpec, progress: &Progress) -> Result<()> {
    require_tools()?;
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::HostRequirement(format!(
            "building environment {0} needs root (debootstrap chroots); run `sudo pyro env pull {0}` once, or set PYRO_CACHE_DIR to a cache built by root",
            spec.name
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix(&format!(".partial-{}-", super::dir_name(spec.name)))
        .tempdir_in(store.root())
        .map_err(|e| Error::io("creating the staging dir", e))?;
    let stage = staging.path();
    let rootfs = stage.join("rootfs");
    let log = stage.join("build.log");

    progress.report("debootstrap", format!("installing Debian {SUITE} packages for {}", spec.name), Some(0.0));
    let debs = store.cache_dir.join("debootstrap-debs");
    std::fs::create_dir_all(&debs).map_err(|e| Error::io("creating the package cache", e))?;
    let mut cmd = Command::new(which("debootstrap").expect("checked"));
    cmd.arg("--variant=minbase")
        .arg(format!("--cache-dir={}", debs.display()))
        .arg(format!("--include={}", packages(spec).join(",")))
        .arg(SUITE)
        .arg(&rootfs)
        .arg(mirror());
    run_logged(cmd, &log, progress, "debootstrap", (0.0, 0.8))?;

    progress.report("kernel", "extracting the kernel", Some(0.8));
    let boot = rootfs.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|e| Error::io("reading /boot of the new rootfs", e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| Error::Environment("the kernel package installed no /boot/vmlinuz-*".into()))?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    extract_vmlinux(&vmlinuz, &stage.join("vmlinux"))?;

    progress.report("modules", "collecting virtio modules", Some(0.83));
    collect_modules(&rootfs.join("lib/modules").join(&release), &stage.join("modules"))?;

    progress.report("rootfs", "preparing the root filesystem", Some(0.85));
    prepare_rootfs(&rootfs)?;

    progress.report("rootfs-image", "writing the ext4 image", Some(0.88));
    let image = stage.join("rootfs.ext4");
    make_image(&rootfs, &image)?;

    progress.report("verify", "checking the image with e2fsck", Some(0.97));
    let out = Command::new(which("e2fsck").expect("checked"))
        .args(["-fn"])
        .arg(&image)
        .output()
        .map_err(|e| Error::io("running e2fsck", e))?;
    if !out.status.success() {
        return Err(Error::Environment(format!(
            "the new rootfs image failed e2fsck: {}",
            String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("")
        )));
    }
    std::fs::remove_dir_all(&rootfs).map_err(|e| Error::io("removing the staging rootfs", e))?;

    let manifest = Manifest {
        catalog_version: CATALOG_VERSION.into(),
        name: spec.name.into(),
        version: ENVIRONMENT_VERSION.into(),
        source: "local-build".into(),
        source_digest: source_digest(spec),
        kernel_release: release,
        installed_at: crate::util::now_secs(),
        packages: packages(spec),
    };
    // The manifest is written last inside staging; the rename below publishes it all at once.
    std::fs::write(stage.join("environment.json"), serde_json::to_vec_pretty(&manifest).expect("serializes"))
        .map_err(|e| Error::io("writing the manifest", e))?;
    let staged = staging.keep();
    let dest = store.install_dir(spec.name);
    if dest.exists() {
        // An incomplete earlier install: replace it.
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(format!("removing {}", dest.display()), e))?;
    }
    if let Err(e) = std::fs::rename(&staged, &dest) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(Error::io(format!("installing {}", dest.display()), e));
    }
    progress.report("done", format!("{} is installed", spec.name), Some(1.0));
    Ok(())
}

/// Run a build step, logging its output, turning debootstrap's `I: ...` lines into progress.
fn run_logged(mut cmd: Command, log: &Path, progress: &Progress, stage: &str, span: (f64, f64)) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {stage}"), e))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut text = String::new();
    let mut seen = 0usize;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(|l| l.ok()) {
        text.push_str(&line);
        text.push('\n');
        if let Some(msg) = line.strip_prefix("I: ") {
            // Retrieving/Validating/Unpacking/Configuring: a rough but monotone fraction.
            seen += 1;
            let frac = span.0 + (span.1 - span.0) * (1.0 - 1.0 / (1.0 + seen as f64 / 60.0));
            if msg.starts_with("Retrieving") || msg.starts_with("Validating") || msg.starts_with("Extracting") {
                if seen.is_multiple_of(25) {
                    progress.report(stage, msg.to_string(), Some(frac));
                }
            } else {
                progress.report(stage, msg.to_string(), Some(frac));
            }
        }
    }
    let status = child.wait().map_err(|e| Error::io(format!("waiting for {stage}"), e))?;
    text.push_str(&err_thread.join().unwrap_or_default());
    let _ = std::fs::write(log, &text);
    if !status.success() {
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(8)..].join("\n");
        return Err(Error::Environment(format!("{stage} failed ({status}):\n{tail}")));
    }
    Ok(())
}

/// Extract the uncompressed ELF kernel from a bzImage (Debian's cloud kernel uses an LZ4
/// legacy-frame payload; gzip, xz and zstd payloads are recognised too).
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(bzimage).map_err(|e| Error::io(format!("reading {}", bzimage.display()), e))?;
    if data.starts_with(b"\x7fELF") {
        std::fs::write(out, &data).map_err(|e| Error::io("writing vmlinux", e))?;
        return Ok(());
    }
    let formats: &[(&[u8], &str, &[&str])] = &[
        (&[0x02, 0x21, 0x4c, 0x18], "lz4", &["-dc"]),
        (&[0x1f, 0x8b, 0x08], "gzip", &["-dc"]),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz", &["-dc"]),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dc"]),
    ];
    for (magic, tool, args) in formats {
        let Some(at) = find(&data, magic) else { continue };
        let Some(bin) = which(tool) else { continue };
        let mut child = Command::new(bin)
            .args(*args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io(format!("starting {tool}"), e))?;
        let mut stdin = child.stdin.take().expect("piped");
        let payload = data[at..].to_vec();
        // The payload is followed by trailing bytes the decompressor may reject after it
        // has produced the whole kernel: judge by the output, not the exit code.
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&payload);
        });
        let mut elf = Vec::new();
        child.stdout.take().expect("piped").read_to_end(&mut elf).map_err(|e| Error::io("decompressing", e))?;
        let _ = child.wait();
        let _ = feeder.join();
        if elf.starts_with(b"\x7fELF") && elf.len() > 1024 * 1024 {
            std::fs::write(out, &elf).map_err(|e| Error::io("writing vmlinux", e))?;
            return Ok(());
        }
    }
    Err(Error::Environment(format!(
        "could not extract an ELF kernel from {} (no supported compressed payload found)",
        bzimage.display()
    )))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Resolve WANTED_MODULES and their dependencies (modules.dep), copy them uncompressed into
/// `out`, and write `out/order` with dependencies first.
fn collect_modules(moddir: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating modules dir", e))?;
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .map_err(|e| Error::io(format!("reading {}/modules.dep", moddir.display()), e))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.trim().to_string(), d.split_whitespace().map(String::from).collect()))
        .collect();
    let mod_name = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        let stem = file.split(".ko").next().unwrap_or(file);
        stem.replace('-', "_")
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(path: &str, deps: &[(String, Vec<String>)], order: &mut Vec<String>, depth: usize) {
        if order.iter().any(|p| p == path) || depth > 32 {
            return;
        }
        if let Some((_, ds)) = deps.iter().find(|(m, _)| m == path) {
            // modules.dep lists dependencies of a module; load the deepest first.
            for d in ds.iter().rev() {
                visit(d, deps, order, depth + 1);
            }
        }
        if !order.iter().any(|p| p == path) {
            order.push(path.to_string());
        }
    }
    for want in WANTED_MODULES {
        if builtin.lines().any(|l| mod_name(l) == *want) {
            continue;
        }
        if let Some((path, _)) = deps.iter().find(|(m, _)| mod_name(m) == *want) {
            let p = path.clone();
            visit(&p, &deps, &mut order, 0);
        }
    }
    let mut names = Vec::new();
    for rel in &order {
        let src = moddir.join(rel);
        let name = format!("{}.ko", mod_name(rel));
        let dest = out.join(&name);
        decompress_module(&src, &dest)?;
        names.push(name);
    }
    std::fs::write(out.join("order"), names.join("\n") + "\n").map_err(|e| Error::io("writing modules/order", e))?;
    Ok(())
}

fn decompress_module(src: &Path, dest: &Path) -> Result<()> {
    let s = src.to_string_lossy();
    let tool = if s.ends_with(".ko.xz") {
        Some("xz")
    } else if s.ends_with(".ko.zst") {
        Some("zstd")
    } else if s.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::copy(src, dest).map(|_| ()).map_err(|e| Error::io(format!("copying {s}"), e)),
        Some(t) => {
            let bin =
                which(t).ok_or_else(|| Error::HostRequirement(format!("{t} is needed to unpack kernel modules")))?;
            let out =
                Command::new(bin).arg("-dc").arg(src).output().map_err(|e| Error::io(format!("running {t}"), e))?;
            if !out.status.success() {
                return Err(Error::Environment(format!("could not decompress {s}")));
            }
            std::fs::write(dest, out.stdout).map_err(|e| Error::io("writing a module", e))
        }
    }
}

fn prepare_rootfs(root: &Path) -> Result<()> {
    let rm_glob = |dir: &Path, prefix: &str| {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        }
    };
    // The kernel lives outside the image; initramfs-tools' initrd is never used.
    rm_glob(&root.join("boot"), "initrd.img");
    rm_glob(&root.join("boot"), "vmlinuz");
    rm_glob(root, "initrd.img");
    rm_glob(root, "vmlinuz");
    rm_glob(&root.join("var/cache/apt/archives"), "");
    rm_glob(&root.join("var/lib/apt/lists"), "");
    let w = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        std::fs::write(&p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    };
    std::fs::create_dir_all(root.join("workspace")).map_err(|e| Error::io("creating /workspace", e))?;
    std::fs::create_dir_all(root.join("var/cache/apt/archives/partial")).ok();
    std::fs::create_dir_all(root.join("var/lib/apt/lists/partial")).ok();
    w("etc/hostname", "pyro\n")?;
    w("etc/hosts", "127.0.0.1 localhost\n127.0.1.1 pyro\n::1 localhost ip6-localhost ip6-loopback\n")?;
    if !root.join("etc/nsswitch.conf").exists() {
        w("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")?;
    }
    w("etc/machine-id", "")?;
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

fn dir_size(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn make_image(root: &Path, image: &PathBuf) -> Result<()> {
    let used = dir_size(root);
    let size = (used as f64 * 1.5) as u64 + 512 * 1024 * 1024;
    let size = size.max(2 * 1024 * 1024 * 1024);
    let size_mib = size.div_ceil(1024 * 1024);
    let out = Command::new(which("mkfs.ext4").expect("checked"))
        .args(["-q", "-F", "-L", "pyro-root", "-E", "root_owner=0:0", "-d"])
        .arg(root)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| Error::io("running mkfs.ext4", e))?;
    if !out.status.success() {
        return Err(Error::Environment(format!("mkfs.ext4 failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_payload_is_found_and_decompressed_from_a_fake_bzimage() {
        if which("lz4").is_none() {
            panic!("lz4 is required (apt-get install lz4)");
        }
        let tmp = tempfile::tempdir().unwrap();
        // A fake ELF of 2 MiB, LZ4-legacy compressed, behind a fake setup header and
        // followed by trailing bytes, like a real bzImage.
        let mut elf = b"\x7fELF".to_vec();
        elf.extend((0..2 * 1024 * 1024).map(|i| (i % 251) as u8));
        std::fs::write(tmp.path().join("elf"), &elf).unwrap();
        let st = Command::new("lz4")
            .args(["-l", "-q", "-f"])
            .arg(tmp.path().join("elf"))
            .arg(tmp.path().join("elf.lz4"))
            .status()
            .unwrap();
        assert!(st.success());
        let mut bz = vec![0x55u8; 4096];
        bz.extend(std::fs::read(tmp.path().join("elf.lz4")).unwrap());
        bz.extend([0u8, 1, 2, 3, 4, 5, 6, 7]);
        std::fs::write(tmp.path().join("bzImage"), &bz).unwrap();
        extract_vmlinux(&tmp.path().join("bzImage"), &tmp.path().join("vmlinux")).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("vmlinux")).unwrap(), elf);
        std::fs::write(tmp.path().join("junk"), vec![7u8; 10000]).unwrap();
        let e = extract_vmlinux(&tmp.path().join("junk"), &tmp.path().join("v2")).unwrap_err();
        assert!(e.to_string().contains("could not extract an ELF kernel"));
    }

    #[test]
    fn digest_depends_on_the_package_set() {
        let a = source_digest(super::super::spec("debian:12").unwrap());
        let b = source_digest(super::super::spec("debian:12-build").unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("sha256:"));
    }
}
