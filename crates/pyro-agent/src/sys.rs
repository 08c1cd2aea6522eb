//! Thin, checked wrappers over the raw syscalls init needs (mount, modules, power-off).

use std::ffi::CString;
use std::io::{self, Write};
use std::path::Path;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in static paths")
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// mount(2). `source`/`fstype`/`data` may be empty for "none".
pub fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source), cstr(target), cstr(fstype), cstr(data));
    let ptr = |c: &CString, empty: bool| if empty { std::ptr::null() } else { c.as_ptr() };
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe {
        libc::mount(
            ptr(&s, source.is_empty()),
            t.as_ptr(),
            ptr(&f, fstype.is_empty()),
            flags,
            ptr(&d, data.is_empty()) as *const libc::c_void,
        )
    };
    check(rc, &format!("mount {fstype} on {target}"))
}

/// Mount unless something is already mounted there (EBUSY counts as done).
pub fn mount_once(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    match mount(source, target, fstype, flags, data) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        other => other,
    }
}

pub fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(path)))
        .unwrap_or(false)
}

/// Load one kernel module file; a module that is already loaded is fine.
pub fn load_module(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    let params = cstr("");
    // SAFETY: finit_module with an open fd and an empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(io::Error::new(e.kind(), format!("loading {}: {e}", path.display())))
}

pub fn chdir(path: &str) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(p.as_ptr()) }, &format!("chdir {path}"))
}

pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(p.as_ptr()) }, &format!("chroot {path}"))
}

/// Flush every filesystem.
pub fn sync() {
    // SAFETY: sync(2) has no arguments.
    unsafe { libc::sync() };
}

/// Power the machine off now. Never returns.
pub fn poweroff() -> ! {
    sync();
    // SAFETY: reboot(2) with a valid command; the process has CAP_SYS_BOOT as root.
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; spin rather than exit (PID 1 exiting panics the kernel).
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Write a diagnostic line where the host can see it: the serial console and the kernel log.
pub fn console_log(msg: &str) {
    for dev in ["/dev/console", "/dev/kmsg"] {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dev) {
            let _ = writeln!(f, "{msg}");
        }
    }
}

/// Bring an interface up (SIOCSIFFLAGS |= IFF_UP) without any userspace tool.
pub fn interface_up(name: &str) -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name fits (checked).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        let bytes = name.as_bytes();
        if bytes.len() >= req.ifr_name.len() {
            libc::close(fd);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
        }
        for (i, b) in bytes.iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc == 0 {
            Ok(())
        } else {
            Err(err)
        }
    }
}

pub fn sethostname(name: &str) {
    // SAFETY: pointer and length of a live byte slice.
    unsafe {
        libc::sethostname(name.as_ptr() as *const libc::c_char, name.len());
    }
}

/// Milliseconds since the guest kernel started.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}
