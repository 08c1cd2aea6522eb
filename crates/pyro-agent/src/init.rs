//! Guest boot: stage 1 (`/init` in the initramfs) and stage 2 (PID 1 in the real root).

use crate::sys;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

const MODULE_DIR: &str = "/lib/pyro-modules";
const NEW_ROOT: &str = "/newroot";
/// Where stage 1 leaves the agent in the new root: tmpfs, so it never touches the disk image
/// and always matches the host's pyro build.
const AGENT_IN_ROOT: &str = "/run/pyro/agent";

fn fatal(what: &str, err: impl std::fmt::Display) -> ! {
    sys::console_log(&format!("pyro-init: {what}: {err}"));
    sys::poweroff();
}

fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')).map(str::to_string))
}

/// Stage 1: load the virtio modules, mount the ext4 root, move into it and exec stage 2.
pub fn stage1() -> ! {
    if let Err(e) = sys::mount_once("devtmpfs", "/dev", "devtmpfs", 0, "") {
        fatal("mounting /dev", e);
    }
    if let Err(e) = sys::mount_once("proc", "/proc", "proc", 0, "") {
        fatal("mounting /proc", e);
    }
    if let Err(e) = sys::mount_once("sysfs", "/sys", "sysfs", 0, "") {
        fatal("mounting /sys", e);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    load_modules(&cmdline);
    if cmdline.split_whitespace().any(|w| w == "pyro.probe=1") {
        // The KVM usability probe: reaching here under KVM proves a guest runs.
        for dev in ["/dev/ttyS0", "/dev/console"] {
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dev) {
                use std::io::Write;
                let _ = f.write_all(b"PYRO-PROBE-OK\n");
                let _ = f.flush();
                break;
            }
        }
        sys::poweroff();
    }
    let root = cmdline_value(&cmdline, "pyro.root").unwrap_or_else(|| "/dev/vda".into());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&root).exists() {
        if Instant::now() > deadline {
            fatal(&format!("root device {root} did not appear"), "timeout after 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = sys::mount_once(&root, NEW_ROOT, "ext4", 0, "") {
        fatal(&format!("mounting {root}"), e);
    }
    if let Err(e) =
        sys::mount_once("tmpfs", &format!("{NEW_ROOT}/run"), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755")
    {
        fatal("mounting /run", e);
    }
    if let Err(e) = install_agent() {
        fatal("installing the agent into /run", e);
    }
    free_initramfs();
    for dir in ["dev", "proc", "sys"] {
        let target = format!("{NEW_ROOT}/{dir}");
        let _ = std::fs::create_dir_all(&target);
        if let Err(e) = sys::mount(&format!("/{dir}"), &target, "", libc::MS_MOVE, "") {
            fatal(&format!("moving /{dir}"), e);
        }
    }
    if let Err(e) = switch_root() {
        fatal("switching root", e);
    }
    let prog = std::ffi::CString::new(AGENT_IN_ROOT).unwrap();
    let arg0 = std::ffi::CString::new("pyro-agent").unwrap();
    let arg1 = std::ffi::CString::new("pid1").unwrap();
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    // SAFETY: argv is a NULL-terminated array of valid C strings.
    unsafe {
        libc::execv(prog.as_ptr(), argv.as_ptr());
    }
    fatal("exec of the agent", io::Error::last_os_error());
}

/// Which optional module groups this boot needs: each module load costs tens of ms under
/// TCG, so the NIC, PCI transport and vsock modules load only when the VMM provides them.
fn module_wanted(name: &str, cmdline: &str) -> bool {
    let flag = |f: &str| cmdline.split_whitespace().any(|w| w == f);
    let stem = name.trim_end_matches(".ko");
    match stem {
        "failover" | "net_failover" | "virtio_net" => flag("pyro.net=1"),
        s if s.starts_with("virtio_pci") => flag("pyro.pci=1"),
        s if s.starts_with("vsock") || s.starts_with("vmw_vsock") => flag("pyro.vsock=1"),
        _ => true,
    }
}

fn load_modules(cmdline: &str) {
    let Ok(order) = std::fs::read_to_string(format!("{MODULE_DIR}/order")) else { return };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()).filter(|n| module_wanted(n, cmdline)) {
        if let Err(e) = sys::load_module(&Path::new(MODULE_DIR).join(name)) {
            // A missing optional module (say vsock on a QEMU guest) must not stop the boot.
            sys::console_log(&format!("pyro-init: {e}"));
        }
    }
}

fn install_agent() -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = format!("{NEW_ROOT}{AGENT_IN_ROOT}");
    std::fs::create_dir_all(Path::new(&dest).parent().unwrap())?;
    std::fs::copy("/proc/self/exe", &dest)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
}

/// The initramfs stays in RAM under the new root for the VM's lifetime: drop its two big
/// parts (this binary and the modules, both loaded by now).
fn free_initramfs() {
    if !sys::root_is_ram_fs() {
        return;
    }
    let _ = std::fs::remove_file("/init");
    let _ = std::fs::remove_dir_all(MODULE_DIR);
}

fn switch_root() -> io::Result<()> {
    sys::chdir(NEW_ROOT)?;
    sys::mount(".", "/", "", libc::MS_MOVE, "")?;
    sys::chroot(".")?;
    sys::chdir("/")
}

/// Stage 2: PID 1 in the real root. Sets up the runtime mounts, then keeps the agent
/// running in a child process while reaping every orphan.
pub fn pid1() -> ! {
    // Stage 1 moved /dev, /proc and /sys here; mount them when started another way.
    // (Mounting again over a live mount would stack a second instance, hence the checks.)
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let mounts: [(&str, &str, &str, libc::c_ulong, &str); 7] = [
        ("proc", "/proc", "proc", nosuid_nodev | libc::MS_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", nosuid_nodev | libc::MS_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"),
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        if !sys::is_mountpoint(target) {
            if let Err(e) = sys::mount_once(source, target, fstype, flags, data) {
                sys::console_log(&format!("pyro-init: {e}"));
            }
        }
    }
    // devtmpfs's /dev/ptmx is a device node that resolves to the devpts mounted at /dev/pts
    // (Linux >= 4.7); a symlink covers a /dev without one.
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for (dir, mode) in [
            ("/run/pyro-secrets", 0o700),
            ("/run/pyro-shells", 0o755),
            ("/run/pyro-services", 0o755),
            ("/run/lock", 0o1777),
        ] {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
        }
    }
    let _ = std::fs::create_dir_all(pyro_tree::paths::WORKSPACE_ROOT);
    if let Err(e) = sys::interface_up("lo") {
        sys::console_log(&format!("pyro-init: bringing lo up: {e}"));
    }
    sys::sethostname("pyro");

    // The agent runs in a child: tokio waits on its own children by pid, which a PID 1
    // reaping everything with waitpid(-1) would race against.
    loop {
        // SAFETY: fork in a single-threaded process; the child only execs into our own code.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: new session for the agent, so signals for PID 1 never reach it.
            unsafe {
                libc::setsid();
            }
            let code = crate::serve::serve_device();
            std::process::exit(code);
        }
        if child < 0 {
            sys::console_log("pyro-init: fork failed");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid == child {
                let how = if libc::WIFSIGNALED(status) {
                    format!("killed by signal {}", libc::WTERMSIG(status))
                } else {
                    format!("exit code {}", libc::WEXITSTATUS(status))
                };
                sys::console_log(&format!("pyro-init: agent ended ({how}); restarting it"));
                std::thread::sleep(Duration::from_millis(200));
                break;
            }
            if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cmdline_value;

    #[test]
    fn optional_modules_load_only_when_flagged() {
        use super::module_wanted;
        assert!(module_wanted("virtio_blk.ko", "quiet"));
        assert!(module_wanted("virtio_mmio.ko", ""));
        assert!(!module_wanted("virtio_net.ko", "quiet"));
        assert!(module_wanted("virtio_net.ko", "quiet pyro.net=1"));
        assert!(!module_wanted("virtio_pci_modern_dev.ko", ""));
        assert!(!module_wanted("vmw_vsock_virtio_transport.ko", "pyro.net=1"));
        assert!(module_wanted("vsock.ko", "pyro.vsock=1"));
    }

    #[test]
    fn cmdline_values_are_found_by_exact_key() {
        let c = "quiet pyro.root=/dev/vdb pyro.rootfs=x console=ttyS0";
        assert_eq!(cmdline_value(c, "pyro.root").as_deref(), Some("/dev/vdb"));
        assert_eq!(cmdline_value(c, "pyro.missing"), None);
    }
}
