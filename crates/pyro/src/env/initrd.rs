//! The initramfs that boots every guest: pyro's agent as `/init` plus the environment's
//! virtio modules. Built once per (agent binary, environment modules) and cached; kept
//! uncompressed because decompression is slow under TCG.

use super::InstalledEnvironment;
use crate::config::which;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Path of the cached initramfs for this agent and environment, built when missing.
pub fn initramfs_for(env: &InstalledEnvironment, agent_bin: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let agent = std::fs::read(agent_bin).map_err(|e| Error::io(format!("reading {}", agent_bin.display()), e))?;
    // A dynamically linked agent cannot run as /init (no loader in the initramfs): the
    // kernel would only say "Failed to execute /init (error -2)".
    if agent.get(..8192).unwrap_or(&agent).windows(10).any(|w| w == b"/lib64/ld-") {
        return Err(Error::HostRequirement(format!(
            "{} is dynamically linked; the guest agent must be static: run scripts/build-agent.sh",
            agent_bin.display()
        )));
    }
    let order = std::fs::read_to_string(env.modules_dir.join("order"))
        .map_err(|e| Error::io("reading the environment's module list", e))?;
    let modules: Vec<&str> = order.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut h = Sha256::new();
    h.update(&agent);
    for m in &modules {
        h.update(m.as_bytes());
        h.update(std::fs::read(env.modules_dir.join(m)).map_err(|e| Error::io(format!("reading module {m}"), e))?);
    }
    let digest = hex::encode(h.finalize());
    let dir = cache_dir.join("initramfs");
    let out = dir.join(format!("{}.cpio", &digest[..24]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let cpio =
        which("cpio").ok_or_else(|| Error::HostRequirement("cpio is not installed (apt-get install cpio)".into()))?;
    let staging =
        tempfile::Builder::new().prefix(".initramfs-").tempdir_in(&dir).map_err(|e| Error::io("staging", e))?;
    let root = staging.path().join("root");
    for d in ["dev", "proc", "sys", "newroot", "lib/pyro-modules"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| Error::io("staging the initramfs", e))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(root.join("init"), &agent).map_err(|e| Error::io("staging /init", e))?;
        std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("staging /init", e))?;
    }
    for m in &modules {
        std::fs::copy(env.modules_dir.join(m), root.join("lib/pyro-modules").join(m))
            .map_err(|e| Error::io(format!("staging module {m}"), e))?;
    }
    std::fs::write(root.join("lib/pyro-modules/order"), modules.join("\n") + "\n")
        .map_err(|e| Error::io("staging the module order", e))?;
    let tmp = staging.path().join("out.cpio");
    let list = Command::new("find").arg(".").current_dir(&root).output().map_err(|e| Error::io("running find", e))?;
    let mut child = Command::new(cpio)
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0", "-O"])
        .arg(&tmp)
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("running cpio", e))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(&list.stdout).map_err(|e| Error::io("feeding cpio", e))?;
    }
    let done = child.wait_with_output().map_err(|e| Error::io("running cpio", e))?;
    if !done.status.success() {
        return Err(Error::Io(format!("cpio failed: {}", String::from_utf8_lossy(&done.stderr).trim())));
    }
    std::fs::rename(&tmp, &out).map_err(|e| Error::io(format!("placing {}", out.display()), e))?;
    Ok(out)
}
