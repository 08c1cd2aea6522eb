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
    // SAFETY: `p` is a NUL-terminated string that outlives the call; chdir only reads it.
    check(unsafe { libc::chdir(p.as_ptr()) }, &format!("chdir {path}"))
}

pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: `p` is a NUL-terminated string that outlives the call; chroot only reads it.
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

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed utsname; release is NUL-terminated by the kernel.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// Whether any user-space process other than PID 1 and this one is still alive (zombies
/// count as gone: their files are already closed).
fn others_alive() -> bool {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == 1 || pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().unwrap_or("");
        // Kernel threads (kthreadd is 2, all others are its children) never exit.
        if pid == 2 || ppid == "2" || state == "Z" || state == "X" {
            continue;
        }
        return true;
    }
    false
}

fn wait_for_others(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while others_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Clean guest shutdown: stop every process, flush, remount / read-only, power off. Leaves
/// an image `e2fsck -fn` finds clean.
pub fn shutdown_machine() -> ! {
    // SAFETY: kill(-1) signals every process except init and ourselves.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
    }
    wait_for_others(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) takes plain integers and touches no memory; -1 reaches every process
    // but init (us) and the caller, which is what a shutdown wants.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
    }
    // SIGKILL is asynchronous: a process still holding a file open for writing makes the
    // read-only remount fail with EBUSY.
    wait_for_others(std::time::Duration::from_millis(500));
    sync();
    let mut last = None;
    for _ in 0..10 {
        match mount("", "/", "", libc::MS_REMOUNT | libc::MS_RDONLY, "") {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    if let Some(e) = last {
        console_log(&format!("pyro-agent: remounting / read-only: {e}"));
    }
    poweroff();
}

/// Whether `/` is the initramfs (ramfs or tmpfs), whose files may be deleted to free RAM.
pub fn root_is_ram_fs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // SAFETY: statfs on a valid path into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c"/".as_ptr(), &mut st) != 0 {
            return false;
        }
        let t = st.f_type as i64;
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    }
}

/// Set CLOCK_REALTIME to `unix_ms` (after a restore the guest's wall clock is as old as the
/// saved state; its monotonic clock is not touched).
pub fn set_wall_clock(unix_ms: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_ms / 1000) as libc::time_t,
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one valid timespec.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) }, "clock_settime")
}

/// `RNDADDENTROPY` = `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG` = `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mix `bytes` into the kernel's entropy pool (credited in full: they come from the host
/// kernel's `getrandom`) and force the CRNG to reseed from it at once, so two guests
/// restored from one memory state part ways before anyone reads `/dev/urandom`.
pub fn add_entropy_and_reseed(bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let random = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of 8 + buf_size bytes, which `info` holds;
    // the fd is open for the call.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) }, "RNDADDENTROPY")?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _) }, "RNDRESEEDCRNG")
}
