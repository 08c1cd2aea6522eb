//! The initramfs that boots every guest: pyro's agent as `/init` plus the environment's
//! virtio modules. Built once per (agent binary, environment modules) and cached under
//! `<cache>/initramfs/<hash>.cpio`; kept uncompressed because decompression is slow under
//! TCG. Written directly as a newc archive (a 110-byte header per entry, no host `cpio`
//! needed) with fixed owners and timestamps, so the same inputs give the same bytes.

use super::InstalledEnvironment;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Changes whenever the archive's layout changes, so old cached files are not reused.
const LAYOUT: &str = "pyro-initramfs/1";
/// Directories the agent's stage-1 init mounts on or moves into.
const DIRS: &[&str] = &["dev", "proc", "sys", "newroot", "lib", "lib/pyro-modules"];
const MODULE_DIR: &str = "lib/pyro-modules";

/// Path of the cached initramfs for this agent and environment, built when missing.
pub fn initramfs_for(env: &InstalledEnvironment, agent_bin: &Path, cache_dir: &Path) -> Result<PathBuf> {
    build(env, agent_bin, cache_dir, false)
}

/// Where the initramfs for this agent and environment is (or would be) cached in
/// `cache_dir`, without building it: `pyro doctor --environment` reports whether it exists.
pub(crate) fn initramfs_path(env: &InstalledEnvironment, agent_bin: &Path, cache_dir: &Path) -> Result<PathBuf> {
    Ok(out_path(cache_dir, &Contents::read(env, agent_bin)?.digest))
}

/// Build it again even when cached (`pyro prepare --force`): written to a temp file and
/// renamed over the old one, so a concurrent boot reads either the old or the new archive
/// (the same bytes), never a partial one.
pub(crate) fn rebuild_initramfs(env: &InstalledEnvironment, agent_bin: &Path, cache_dir: &Path) -> Result<PathBuf> {
    build(env, agent_bin, cache_dir, true)
}

/// What goes into the archive, and its content hash.
struct Contents {
    agent: Vec<u8>,
    modules: Vec<(String, Vec<u8>)>,
    digest: String,
}

impl Contents {
    fn read(env: &InstalledEnvironment, agent_bin: &Path) -> Result<Contents> {
        let agent = std::fs::read(agent_bin).map_err(|e| Error::io(format!("reading {}", agent_bin.display()), e))?;
        check_static_elf(&agent).map_err(|why| {
            Error::HostRequirement(format!(
                "{} cannot be the guest's /init: {why}; build the static agent with scripts/build-agent.sh",
                agent_bin.display()
            ))
        })?;
        let order = std::fs::read_to_string(env.modules_dir.join("order"))
            .map_err(|e| Error::io(format!("reading {}/order", env.modules_dir.display()), e))?;
        let mut modules = Vec::new();
        for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if name.contains('/') || name.starts_with('.') {
                return Err(Error::Environment(format!(
                    "bad module name '{name}' in {}/order",
                    env.modules_dir.display()
                )));
            }
            let data = std::fs::read(env.modules_dir.join(name))
                .map_err(|e| Error::io(format!("reading module {name} of {}", env.name), e))?;
            modules.push((name.to_string(), data));
        }
        let mut h = Sha256::new();
        h.update(LAYOUT);
        h.update((agent.len() as u64).to_le_bytes());
        h.update(&agent);
        for (name, data) in &modules {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name);
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        Ok(Contents { agent, modules, digest: hex::encode(h.finalize()) })
    }
}

fn out_path(cache_dir: &Path, digest: &str) -> PathBuf {
    cache_dir.join("initramfs").join(format!("{}.cpio", &digest[..32]))
}

fn build(env: &InstalledEnvironment, agent_bin: &Path, cache_dir: &Path, force: bool) -> Result<PathBuf> {
    let Contents { agent, modules, digest } = Contents::read(env, agent_bin)?;
    let out = out_path(cache_dir, &digest);
    let dir = cache_dir.join("initramfs");
    if !force && out.is_file() {
        return Ok(out);
    }

    let mut cpio = Newc::default();
    for d in DIRS {
        cpio.dir(d);
    }
    cpio.file("init", 0o755, &agent);
    let mut order_text = String::new();
    for (name, data) in &modules {
        cpio.file(&format!("{MODULE_DIR}/{name}"), 0o644, data);
        order_text.push_str(name);
        order_text.push('\n');
    }
    cpio.file(&format!("{MODULE_DIR}/order"), 0o644, order_text.as_bytes());
    let bytes = cpio.finish();

    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    // Temp file + rename: a concurrent builder of the same hash writes the same bytes, and
    // a reader never sees a half-written archive.
    let mut tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(format!("creating a temp file in {}", dir.display()), e))?;
    tmp.write_all(&bytes).map_err(|e| Error::io("writing the initramfs", e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Readable by other users: a root-built cache serves unprivileged pyro runs.
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(&out).map_err(|e| Error::io(format!("placing {}", out.display()), e.error))?;
    Ok(out)
}

/// The agent runs as the kernel's first process, with no dynamic loader around: it must
/// be an ELF executable without a PT_INTERP program header.
fn check_static_elf(b: &[u8]) -> std::result::Result<(), String> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err("it is not a 64-bit little-endian ELF executable".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(ph) = b.get(at..at + 4) else {
            return Err("its program headers are truncated".into());
        };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(ph.try_into().expect("4 bytes")) == PT_INTERP {
            return Err("it is dynamically linked".into());
        }
    }
    Ok(())
}

/// A minimal writer of the "newc" cpio format the kernel unpacks into its rootfs.
#[derive(Default)]
struct Newc {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Newc {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040000 | 0o755, 2, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, 1, data);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" { 0 } else { self.next_ino };
        let fields = [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Header+name and data are each padded to 4 bytes.
    fn pad(&mut self) {
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny static ELF: header only, one PT_LOAD program header (or PT_INTERP).
    fn elf(interp: bool) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&(if interp { 3u32 } else { 1u32 }).to_le_bytes());
        b.extend([0xAB; 1000]);
        b
    }

    fn env_with_modules(dir: &Path) -> InstalledEnvironment {
        let m = dir.join("modules");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("virtio_mmio.ko"), b"\x7fELF mmio").unwrap();
        std::fs::write(m.join("virtio_blk.ko"), b"\x7fELF blk!").unwrap();
        std::fs::write(m.join("order"), "virtio_mmio.ko\nvirtio_blk.ko\n").unwrap();
        InstalledEnvironment {
            name: "debian:12".into(),
            version: "1.0.0".into(),
            install_dir: dir.into(),
            kernel_image: dir.join("vmlinux"),
            modules_dir: m,
            rootfs_image: dir.join("rootfs.ext4"),
            kernel_release: "6.1".into(),
            source: "local-build".into(),
            source_digest: String::new(),
            installed_at: 0,
        }
    }

    /// Parse a newc archive back: (name, mode, data) per entry, trailer excluded.
    fn parse(b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        loop {
            assert_eq!(&b[at..at + 6], b"070701");
            let field = |i: usize| hex(&b[at + 6 + i * 8..at + 14 + i * 8]);
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&b[at + 110..at + 110 + namesize - 1]).unwrap().to_string();
            let data_at = (at + 110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!((data_at + size).div_ceil(4) * 4, b.len());
                return out;
            }
            out.push((name, mode, b[data_at..data_at + size].to_vec()));
            at = (data_at + size).div_ceil(4) * 4;
        }
    }

    #[test]
    fn the_archive_holds_init_modules_and_mount_points_and_is_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_with_modules(&tmp.path().join("env"));
        let agent = tmp.path().join("agent");
        std::fs::write(&agent, elf(false)).unwrap();
        let cache = tmp.path().join("cache");
        let p = initramfs_for(&env, &agent, &cache).unwrap();
        assert!(p.starts_with(cache.join("initramfs")) && p.extension().unwrap() == "cpio");
        let bytes = std::fs::read(&p).unwrap();
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "proc",
                "sys",
                "newroot",
                "lib",
                "lib/pyro-modules",
                "init",
                "lib/pyro-modules/virtio_mmio.ko",
                "lib/pyro-modules/virtio_blk.ko",
                "lib/pyro-modules/order"
            ]
        );
        let init = &entries[6];
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.2, elf(false));
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!(entries[9].2, b"virtio_mmio.ko\nvirtio_blk.ko\n");

        // Same inputs: same file, untouched. A different agent: another file.
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(initramfs_for(&env, &agent, &cache).unwrap(), p);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
        let mut other = elf(false);
        other.push(1);
        std::fs::write(&agent, other).unwrap();
        assert_ne!(initramfs_for(&env, &agent, &cache).unwrap(), p);
        let leftovers = std::fs::read_dir(cache.join("initramfs"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn the_host_cpio_tool_reads_the_archive() {
        let Some(cpio) = crate::config::which("cpio") else {
            eprintln!("skipping: no cpio on this host");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let env = env_with_modules(&tmp.path().join("env"));
        std::fs::write(tmp.path().join("agent"), elf(false)).unwrap();
        let p = initramfs_for(&env, &tmp.path().join("agent"), &tmp.path().join("cache")).unwrap();
        let out = std::process::Command::new(cpio).args(["-t", "--quiet", "-F"]).arg(&p).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8(out.stdout).unwrap();
        assert!(listed.lines().any(|l| l == "init"), "{listed}");
        assert!(listed.lines().any(|l| l == "lib/pyro-modules/order"), "{listed}");
    }

    #[test]
    fn a_dynamic_or_non_elf_agent_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env_with_modules(&tmp.path().join("env"));
        let agent = tmp.path().join("agent");
        std::fs::write(&agent, elf(true)).unwrap();
        let e = initramfs_for(&env, &agent, tmp.path()).unwrap_err();
        assert!(e.to_string().contains("dynamically linked"), "{e}");
        assert_eq!(e.code(), "host_requirement");
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        let e = initramfs_for(&env, &agent, tmp.path()).unwrap_err();
        assert!(e.to_string().contains("not a 64-bit"), "{e}");
        assert!(!tmp.path().join("initramfs").exists());
    }
}
