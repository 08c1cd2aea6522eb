//! QEMU command lines. Pure functions: the supervisor runs what these build.

use std::path::Path;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything that varies between two VM launches.
#[derive(Debug, Clone)]
pub struct QemuLaunch<'a> {
    pub accel: Accel,
    pub vcpu_count: u32,
    pub mem_mib: u32,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// qcow2 overlay (backed by the environment's raw rootfs) or a raw image.
    pub disk: &'a Path,
    /// Recorded by whoever made the disk; never probed from its bytes.
    pub disk_format: crate::DiskFormat,
    /// Throw-away writes: QEMU keeps them in an unlinked temp overlay (ephemeral VMs), so
    /// no overlay file has to be made first.
    pub snapshot: bool,
    pub agent_socket: &'a Path,
    pub qmp_socket: &'a Path,
    /// QEMU user-mode networking (no root needed).
    pub network: bool,
    /// Host MHz, passed as `tsc_early_khz`; without it microvm intermittently hangs in PIT
    /// calibration under TCG (measured: 1-2 hangs in 3 boots).
    pub tsc_khz: Option<u64>,
    /// Wait for a migration stream (`-incoming defer`): the supervisor loads a saved memory
    /// state through QMP `migrate-incoming` instead of booting the kernel. With `-S` the
    /// loaded guest stays stopped until the supervisor says `cont` (it first retires a state
    /// that is being resumed in place).
    pub incoming: bool,
}

/// Kernel command line. `quiet` keeps the serial console (slow under TCG) nearly silent
/// while still capturing init's error lines for boot-failure messages.
pub fn kernel_cmdline(launch: &QemuLaunch<'_>) -> String {
    let mut parts = vec![
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "tsc=reliable",
        "no_timer_check",
        "cryptomgr.notests",
        "mitigations=off",
        "pyro.root=/dev/vda",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    if let Some(khz) = launch.tsc_khz {
        parts.push(format!("tsc_early_khz={khz}"));
    }
    if launch.network {
        parts.push("pyro.net=1".into());
    }
    parts.join(" ")
}

/// Full argv (without the binary) for `qemu-system-x86_64`.
pub fn qemu_args(launch: &QemuLaunch<'_>) -> Vec<String> {
    let accel = match launch.accel {
        // A bounded translation cache keeps an idle TCG guest near 215 MiB RSS.
        Accel::Tcg => "tcg,tb-size=64".to_string(),
        Accel::Kvm => "kvm".to_string(),
    };
    let mut a: Vec<String> = vec![
        "-accel".into(),
        accel,
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-M".into(),
        "microvm".into(),
        "-m".into(),
        launch.mem_mib.to_string(),
        "-smp".into(),
        launch.vcpu_count.to_string(),
        "-display".into(),
        "none".into(),
        "-kernel".into(),
        launch.kernel.display().to_string(),
        "-initrd".into(),
        launch.initramfs.display().to_string(),
        "-append".into(),
        kernel_cmdline(launch),
        "-drive".into(),
        format!(
            "if=none,id=d0,file={},format={},cache=writeback,discard=unmap{}",
            qemu_path(launch.disk),
            launch.disk_format.as_str(),
            if launch.snapshot { ",snapshot=on" } else { "" }
        ),
        "-device".into(),
        "virtio-blk-device,drive=d0".into(),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!("socket,path={},server=on,wait=off,id=agent0", qemu_path(launch.agent_socket)),
        "-device".into(),
        format!("virtserialport,chardev=agent0,name={}", pyro_protocol::AGENT_PORT_NAME),
        // The serial console goes into a pipe the supervisor drains into a bounded log
        // (crate::console); the supervisor passes the pipe as this fd set.
        "-chardev".into(),
        // append=on: QEMU would otherwise ftruncate the fd, which a pipe refuses.
        format!("file,id=con0,path=/dev/fdset/{},append=on", crate::console::FDSET),
        "-serial".into(),
        "chardev:con0".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qemu_path(launch.qmp_socket)),
        "-no-reboot".into(),
    ];
    if launch.network {
        // IPv4 only: the egress filter (crate::netfilter) decides on IPv4 destinations and
        // refuses every IPv6 socket, so slirp must not offer the guest IPv6 at all.
        a.extend([
            "-netdev".into(),
            "user,id=net0,ipv6=off".into(),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
    }
    if launch.incoming {
        a.extend(["-S".into(), "-incoming".into(), "defer".into()]);
    }
    a
}

/// QEMU option values are comma-separated: a comma in a path must be doubled.
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// Host TSC frequency in kHz from /proc/cpuinfo (`cpu MHz`).
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| (mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn launch(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
        (
            dir.join("vmlinux"),
            dir.join("initramfs.cpio"),
            dir.join("disk,1.qcow2"),
            dir.join("agent.sock"),
            dir.join("qmp.sock"),
        )
    }

    #[test]
    fn tcg_microvm_args_carry_every_device() {
        let dir = PathBuf::from("/state/vm");
        let (k, i, d, s, q) = launch(&dir);
        let l = QemuLaunch {
            accel: Accel::Tcg,
            vcpu_count: 2,
            mem_mib: 512,
            kernel: &k,
            initramfs: &i,
            disk: &d,
            disk_format: crate::DiskFormat::Qcow2,
            snapshot: false,
            agent_socket: &s,
            qmp_socket: &q,
            network: false,
            tsc_khz: Some(2_000_000),
            incoming: false,
        };
        let args = qemu_args(&l);
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg,tb-size=64"));
        assert!(joined.contains("-M microvm"));
        assert!(joined.contains("-smp 2"));
        assert!(joined.contains("-m 512"));
        assert!(joined.contains("file=/state/vm/disk,,1.qcow2,format=qcow2"));
        assert!(joined.contains("name=org.pyro.agent"));
        assert!(!joined.contains("netdev"));
        assert!(!joined.contains("-incoming"));
        assert!(joined.contains("-chardev file,id=con0,path=/dev/fdset/7,append=on -serial chardev:con0"));
        let cmdline = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(cmdline.contains("tsc_early_khz=2000000"));
        assert!(cmdline.contains("pyro.root=/dev/vda"));
    }

    #[test]
    fn network_adds_user_mode_nic() {
        let dir = PathBuf::from("/s");
        let (k, i, d, s, q) = launch(&dir);
        let l = QemuLaunch {
            accel: Accel::Kvm,
            vcpu_count: 1,
            mem_mib: 256,
            kernel: &k,
            initramfs: &i,
            disk: &d,
            disk_format: crate::DiskFormat::Raw,
            snapshot: true,
            agent_socket: &s,
            qmp_socket: &q,
            network: true,
            tsc_khz: None,
            incoming: true,
        };
        let joined = qemu_args(&l).join(" ");
        assert!(joined.contains("-accel kvm"));
        assert!(joined.contains("user,id=net0,ipv6=off"));
        assert!(joined.contains("format=raw,cache=writeback,discard=unmap,snapshot=on"));
        assert!(joined.contains("virtio-net-device,netdev=net0"));
        // A restore: the same machine, waiting for the state (loaded later through QMP).
        assert!(joined.ends_with("-S -incoming defer"), "{joined}");
    }
}
