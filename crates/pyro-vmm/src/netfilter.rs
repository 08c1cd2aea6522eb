//! Egress filter for QEMU's user-mode network: `egress` means the internet, never the host.
//!
//! QEMU's slirp turns every guest TCP connection into a host `connect(2)` and every guest UDP
//! datagram or ping into a host `sendto(2)`, made by the QEMU process as the user who runs it.
//! Unfiltered, the guest reaches 10.0.2.2 = the host's 127.0.0.1, every host address, link
//! local (cloud metadata) and the private LAN. This module filters those syscalls at the
//! kernel boundary, without root:
//!
//! - Before exec, the QEMU child sets `no_new_privs` and installs a seccomp BPF filter
//!   ([`Prepared`]) that sends `connect` and `sendto` with a destination address to a
//!   *user notification* listener, refuses every socket family but `AF_UNIX` and `AF_INET`
//!   (no IPv6 path around the checks), and refuses `io_uring_setup` (io_uring can connect
//!   without a syscall the filter sees; QEMU falls back to epoll and thread-pool I/O). The
//!   listener fd goes to the supervisor over a socketpair and is closed in QEMU, so QEMU
//!   can never answer its own notifications.
//! - The supervisor answers each notification ([`serve`]): it reads the socket address from
//!   QEMU's memory, applies [`decide`], and lets the call proceed or fails it with
//!   `ECONNREFUSED` (TCP: the guest sees a reset at once) or `EACCES` (UDP/ICMP).
//!
//! Verified with `strace -f -e trace=network` on QEMU 7.2 / libslirp 4.7: guest TCP is
//! `connect` on a non-blocking socket, guest UDP (DNS to 10.0.2.3 included, forwarded to the
//! host's resolv.conf nameserver) and ICMP echo are `sendto` with an address; slirp never
//! uses `sendmsg`/`sendmmsg`, which QEMU uses only on its own Unix sockets (chardevs, QMP),
//! so those stay unfiltered rather than costing a round trip per agent-channel write.
//!
//! Limit: seccomp user notification cannot stop a process that races its own memory
//! between the check and the kernel's use of it. The threat here is the guest steering
//! slirp, which only passes the address it was given; a guest that has taken over the QEMU
//! process itself already runs code as the host user and is outside what this filter does.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Set to `1` in the process that starts a VM to let `egress` reach private ranges
/// (10/8, 172.16/12, 192.168/16, 100.64/10). Loopback, link-local and this host's own
/// addresses stay unreachable whatever it says.
pub const ALLOW_PRIVATE_ENV: &str = "PYRO_NETWORK_ALLOW_PRIVATE";

/// Read [`ALLOW_PRIVATE_ENV`]: unset, empty, `0` or `false` mean no; `1` or `true` mean yes.
pub fn allow_private_from_env() -> Result<bool, String> {
    match std::env::var(ALLOW_PRIVATE_ENV) {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            other => Err(format!("{ALLOW_PRIVATE_ENV}={other} is not understood; use 1 (allow private ranges) or 0")),
        },
    }
}

/// What a guest-triggered syscall wants to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Ipv4(SocketAddrV4),
    /// Any other address family (IPv6, Unix, netlink, packet, ...), by number.
    Family(u16),
    /// Shorter than its family needs, or unreadable.
    Malformed,
}

/// The answer for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused, with the reason logged to supervisor.log.
    Deny(&'static str),
}

/// Host facts the policy depends on, gathered per decision.
pub struct HostView<'a> {
    /// Nameservers of the host's /etc/resolv.conf: slirp forwards the guest's DNS (10.0.2.3)
    /// there, so UDP/TCP port 53 to them is allowed even when they are private or loopback.
    pub nameservers: &'a [Ipv4Addr],
    /// Is this address one of this host's own (any interface, or any local route)?
    pub is_host_address: &'a dyn Fn(Ipv4Addr) -> bool,
}

/// The egress policy (pure). Fail closed: only IPv4 unicast on the public internet passes,
/// plus DNS to the host's resolvers and, with `allow_private`, the private ranges.
pub fn decide(dest: Destination, allow_private: bool, host: &HostView<'_>) -> Verdict {
    let addr = match dest {
        Destination::Ipv4(a) => a,
        Destination::Family(f) if f == libc::AF_INET6 as u16 => return Verdict::Deny("IPv6 is not offered to guests"),
        Destination::Family(f) if f == libc::AF_UNIX as u16 => return Verdict::Deny("Unix socket"),
        Destination::Family(_) => return Verdict::Deny("address family other than IPv4"),
        Destination::Malformed => return Verdict::Deny("malformed socket address"),
    };
    let ip = *addr.ip();
    if addr.port() == 53 && host.nameservers.contains(&ip) {
        return Verdict::Allow;
    }
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        return Verdict::Deny("host loopback (127.0.0.0/8)");
    }
    if a == 0 {
        return Verdict::Deny("'this network' (0.0.0.0/8)");
    }
    if ip.is_link_local() {
        return Verdict::Deny("link-local / cloud metadata (169.254.0.0/16)");
    }
    if ip.is_broadcast() {
        return Verdict::Deny("broadcast");
    }
    if a >= 224 {
        return Verdict::Deny("multicast or reserved (224.0.0.0/3)");
    }
    if (host.is_host_address)(ip) {
        return Verdict::Deny("an address of this host");
    }
    let private = ip.is_private() || (a == 100 && (64..128).contains(&b));
    if private && !allow_private {
        return Verdict::Deny(
            "private range (10/8, 172.16/12, 192.168/16, 100.64/10; PYRO_NETWORK_ALLOW_PRIVATE=1 allows it)",
        );
    }
    Verdict::Allow
}

/// Parse a raw `sockaddr` as read from QEMU's memory.
pub fn parse_sockaddr(raw: &[u8]) -> Destination {
    if raw.len() < 2 {
        return Destination::Malformed;
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    if family != libc::AF_INET as u16 {
        return Destination::Family(family);
    }
    if raw.len() < std::mem::size_of::<libc::sockaddr_in>() {
        return Destination::Malformed;
    }
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
    Destination::Ipv4(SocketAddrV4::new(ip, port))
}

/// IPv4 nameservers of a resolv.conf text.
pub fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn host_nameservers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf").map(|t| parse_nameservers(&t)).unwrap_or_default()
}

/// Is `ip` this host's? Two independent checks, either one is enough to refuse:
/// every interface address and broadcast address (getifaddrs), and whether the kernel
/// would let us bind it (true exactly for local routes, e.g. a whole prefix routed to lo).
fn is_host_address(ip: Ipv4Addr) -> bool {
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            for a in [ifa.address, ifa.broadcast, ifa.destination].into_iter().flatten() {
                if a.as_sockaddr_in().map(|s| s.ip()) == Some(ip) {
                    return true;
                }
            }
        }
    } else {
        // Cannot tell: fail closed.
        return true;
    }
    // With ip_nonlocal_bind every bind succeeds and the probe says nothing.
    let nonlocal_bind = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind").map(|s| s.trim() != "0");
    if nonlocal_bind.unwrap_or(true) {
        return false;
    }
    match std::net::UdpSocket::bind(SocketAddrV4::new(ip, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

/// Can this kernel run the filter (seccomp user notification, Linux 5.0+)?
pub fn available() -> Result<(), String> {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 we pass.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0, &action as *const u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "this kernel cannot filter guest network egress (seccomp user notification: {}); Linux 5.0 or later is needed",
            io::Error::last_os_error()
        ))
    }
}

// ---------------------------------------------------------------------------------------
// The BPF program and its installation in the QEMU child.
// ---------------------------------------------------------------------------------------

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// x32 syscalls carry this bit in `nr`; they would otherwise slip past the number checks.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

/// The filter program (x86_64).
fn program() -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let ld = BPF_LD | BPF_W | BPF_ABS;
    let jeq = BPF_JMP | BPF_JEQ | BPF_K;
    let ret = BPF_RET | BPF_K;
    let allow = libc::SECCOMP_RET_ALLOW;
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    vec![
        // 0: any other architecture (i386 int 0x80) dies.
        stmt(ld, OFF_ARCH),
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, kill),
        // 3: x32 numbers die.
        stmt(ld, OFF_NR),
        jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1),
        stmt(ret, kill),
        // 6: dispatch on the syscall number.
        jump(jeq, libc::SYS_connect as u32, 4, 0),
        jump(jeq, libc::SYS_sendto as u32, 4, 0),
        jump(jeq, libc::SYS_socket as u32, 9, 0),
        jump(jeq, libc::SYS_io_uring_setup as u32, 13, 0),
        stmt(ret, allow),
        // 11: connect -> supervisor.
        stmt(ret, notify),
        // 12: sendto: a NULL dest_addr (connected socket) passes, any address -> supervisor.
        stmt(ld, off_arg_lo(4)),
        jump(jeq, 0, 0, 2),
        stmt(ld, off_arg_hi(4)),
        jump(jeq, 0, 1, 0),
        stmt(ret, notify),
        stmt(ret, allow),
        // 18: socket: AF_UNIX and AF_INET only (the kernel reads the domain as an int).
        stmt(ld, off_arg_lo(0)),
        jump(jeq, libc::AF_UNIX as u32, 2, 0),
        jump(jeq, libc::AF_INET as u32, 1, 0),
        stmt(ret, errno(libc::EAFNOSUPPORT)),
        stmt(ret, allow),
        // 23: io_uring_setup.
        stmt(ret, errno(libc::ENOSYS)),
    ]
}

/// A filter ready to be installed in a child: built before fork, because the child may only
/// make async-signal-safe calls between fork and exec.
pub struct Prepared {
    program: Box<[libc::sock_filter]>,
    fprog: Box<libc::sock_fprog>,
    /// The supervisor's end; receives the listener fd.
    parent_sock: OwnedFd,
    /// The child's end (close-on-exec, so QEMU never holds it).
    child_sock: OwnedFd,
}

impl Prepared {
    pub fn new() -> io::Result<Prepared> {
        let mut program = program().into_boxed_slice();
        let fprog = Box::new(libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() });
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two fds into the array.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned here.
        let (parent_sock, child_sock) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Prepared { program, fprog, parent_sock, child_sock })
    }

    /// What the `pre_exec` closure needs; plain numbers, valid in the forked child because
    /// `self` is alive (unmoved, on the heap) when the parent forks.
    pub fn child_handle(&self) -> ChildHandle {
        debug_assert_eq!(self.fprog.filter, self.program.as_ptr() as *mut _);
        ChildHandle { fprog: &*self.fprog as *const libc::sock_fprog as usize, sock: self.child_sock.as_raw_fd() }
    }

    /// After the child exec'd: take the listener fd it sent.
    pub fn receive_listener(self) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        drop(self.child_sock);
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut cmsg = nix::cmsg_space!(RawFd);
        let msg = recvmsg::<()>(
            self.parent_sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd in our table for us.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(io::Error::other("the VMM child sent no seccomp listener"))
    }
}

/// Raw values for the child side.
#[derive(Clone, Copy)]
pub struct ChildHandle {
    fprog: usize,
    sock: RawFd,
}

impl ChildHandle {
    /// Install the filter in the current (forked, not yet exec'd) process and send the
    /// listener to the supervisor.
    ///
    /// # Safety
    /// Only between fork and exec, with the [`Prepared`] it came from alive in the parent.
    /// Uses only async-signal-safe calls and no allocation.
    pub unsafe fn install(self) -> io::Result<()> {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            self.fprog as *const libc::sock_fprog,
        );
        if listener < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = listener as RawFd;
        let sent = send_fd(self.sock, listener);
        libc::close(listener);
        libc::close(self.sock);
        sent
    }
}

/// sendmsg(SCM_RIGHTS) with a stack buffer: no allocation, safe after fork.
///
/// # Safety
/// `sock` must be an open Unix socket and `fd` an open descriptor for the whole call. The
/// message it builds points only into its own stack locals, which outlive the `sendmsg`.
unsafe fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    #[repr(C, align(8))]
    struct CmsgBuf([u8; 64]);
    let mut cbuf = CmsgBuf([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    if cmsg.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
    std::ptr::copy_nonoverlapping(
        &fd as *const RawFd as *const u8,
        libc::CMSG_DATA(cmsg),
        std::mem::size_of::<RawFd>(),
    );
    if libc::sendmsg(sock, &msg, 0) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The supervisor's side: answering notifications.
// ---------------------------------------------------------------------------------------

/// At most this many denial lines per minute reach supervisor.log; the rest are counted.
const DENIAL_LINES_PER_MINUTE: u32 = 10;
/// And at most this many lines over the VM's life, so a guest cannot grow the log forever.
const DENIAL_LINES_TOTAL: u32 = 500;

struct DenialLog {
    window_start: std::time::Instant,
    lines: u32,
    total: u32,
    suppressed: u64,
}

impl DenialLog {
    fn new() -> DenialLog {
        DenialLog { window_start: std::time::Instant::now(), lines: 0, total: 0, suppressed: 0 }
    }

    fn line(&mut self, text: &str, out: &mut Vec<String>) {
        self.total += 1;
        if self.total < DENIAL_LINES_TOTAL {
            out.push(format!("supervisor: egress filter: {text}"));
        } else if self.total == DENIAL_LINES_TOTAL {
            out.push(format!("supervisor: egress filter: {text}; further denials are not logged for this VM"));
        }
    }

    /// Count one denial; the lines to write to supervisor.log for it (usually one, none when
    /// over the limits).
    fn note(&mut self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.window_start.elapsed() >= std::time::Duration::from_secs(60) {
            if self.suppressed > 0 {
                let summary = format!("{} more denials in the last minute were not logged", self.suppressed);
                self.line(&summary, &mut out);
            }
            self.window_start = std::time::Instant::now();
            self.lines = 0;
            self.suppressed = 0;
        }
        if self.lines < DENIAL_LINES_PER_MINUTE {
            self.lines += 1;
            self.line(&format!("denied {what}"), &mut out);
        } else {
            self.suppressed += 1;
        }
        out
    }
}

/// Answer notifications until QEMU (every process holding the filter) is gone. Runs on a
/// thread of its own: QEMU's calling thread waits for each answer.
pub fn serve(listener: OwnedFd, allow_private: bool) {
    let mut log = DenialLog::new();
    let fd = listener.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no process uses the filter any more.
            return;
        }
        // SAFETY: the kernel requires a zeroed request struct.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV fills the struct we pass.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Interrupted, or the caller died before we read it.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return,
            }
        }
        let answer = answer(fd, &req, allow_private, &mut log);
        let Some(resp) = answer else { continue };
        let mut resp = resp;
        // SAFETY: NOTIF_SEND reads the struct we pass; ENOENT (caller gone) is harmless.
        unsafe {
            libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp);
        }
    }
}

/// The response to one notification; `None` when the caller is already gone.
fn answer(
    listener: RawFd,
    req: &libc::seccomp_notif,
    allow_private: bool,
    log: &mut DenialLog,
) -> Option<libc::seccomp_notif_resp> {
    let nr = req.data.nr as i64;
    let (addr_ptr, addr_len, refusal, call) = if nr == libc::SYS_connect {
        (req.data.args[1], req.data.args[2], libc::ECONNREFUSED, "connect")
    } else if nr == libc::SYS_sendto {
        (req.data.args[4], req.data.args[5], libc::EACCES, "sendto")
    } else {
        (0, 0, libc::ENOSYS, "unexpected syscall")
    };
    let raw = read_remote(req.pid, addr_ptr, addr_len as u32 as usize);
    // The pid may have been reused between the notification and our read: only trust what
    // we read if the notification is still live.
    let mut id = req.id;
    // SAFETY: NOTIF_ID_VALID reads the u64 id.
    if unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) } != 0 {
        return None;
    }
    let dest = match (&raw, addr_ptr) {
        (_, 0) => Destination::Malformed,
        (Some(bytes), _) => parse_sockaddr(bytes),
        (None, _) => Destination::Malformed,
    };
    let nameservers =
        if matches!(dest, Destination::Ipv4(a) if a.port() == 53) { host_nameservers() } else { Vec::new() };
    let host = HostView { nameservers: &nameservers, is_host_address: &is_host_address };
    let verdict = if call == "unexpected syscall" {
        Verdict::Deny("unexpected syscall")
    } else {
        decide(dest, allow_private, &host)
    };
    let mut resp = libc::seccomp_notif_resp { id: req.id, val: 0, error: 0, flags: 0 };
    match verdict {
        Verdict::Allow => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Verdict::Deny(why) => {
            let target = match dest {
                Destination::Ipv4(a) => a.to_string(),
                Destination::Family(f) => format!("address family {f}"),
                Destination::Malformed => "a malformed address".into(),
            };
            for line in log.note(&format!("{call} to {target}: {why}")) {
                eprintln!("{line}");
            }
            resp.error = -refusal;
        }
    }
    Some(resp)
}

/// Read up to 128 bytes (a sockaddr_storage) at `addr` in process `pid`.
fn read_remote(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    if addr == 0 {
        return None;
    }
    let len = len.min(std::mem::size_of::<libc::sockaddr_storage>());
    let mut buf = vec![0u8; len];
    let remote = [RemoteIoVec { base: addr as usize, len }];
    let n =
        process_vm_readv(nix::unistd::Pid::from_raw(pid as i32), &mut [io::IoSliceMut::new(&mut buf)], &remote).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Destination {
        Destination::Ipv4(s.parse().unwrap())
    }

    fn decide_with(dest: Destination, allow_private: bool, host_addrs: &[Ipv4Addr], ns: &[Ipv4Addr]) -> Verdict {
        let is_host = |ip: Ipv4Addr| host_addrs.contains(&ip);
        decide(dest, allow_private, &HostView { nameservers: ns, is_host_address: &is_host })
    }

    #[test]
    fn public_unicast_is_allowed() {
        for d in ["198.51.100.1:80", "1.1.1.1:443", "8.8.8.8:53", "203.0.113.9:22", "100.128.0.1:80", "172.32.0.1:80"] {
            assert_eq!(decide_with(v4(d), false, &[], &[]), Verdict::Allow, "{d}");
        }
    }

    #[test]
    fn loopback_link_local_and_special_ranges_are_always_denied() {
        for d in [
            "127.0.0.1:5432",
            "127.255.0.9:80",
            "169.254.169.254:80",
            "0.0.0.0:80",
            "0.1.2.3:80",
            "224.0.0.1:5353",
            "239.255.255.250:1900",
            "240.0.0.1:80",
            "255.255.255.255:67",
        ] {
            assert!(matches!(decide_with(v4(d), true, &[], &[]), Verdict::Deny(_)), "{d}");
        }
    }

    #[test]
    fn private_ranges_need_the_operator_flag() {
        for d in
            ["10.0.0.1:80", "172.16.5.5:80", "172.31.255.1:80", "192.168.1.1:80", "100.64.0.1:80", "100.127.255.1:80"]
        {
            assert!(matches!(decide_with(v4(d), false, &[], &[]), Verdict::Deny(_)), "{d}");
            assert_eq!(decide_with(v4(d), true, &[], &[]), Verdict::Allow, "{d}");
        }
    }

    #[test]
    fn host_addresses_are_denied_even_when_public_or_private_is_allowed() {
        let host = ["198.51.100.2".parse().unwrap(), "10.1.2.3".parse().unwrap()];
        assert!(matches!(decide_with(v4("198.51.100.2:8080"), true, &host, &[]), Verdict::Deny(_)));
        assert!(matches!(decide_with(v4("10.1.2.3:22"), true, &host, &[]), Verdict::Deny(_)));
        assert_eq!(decide_with(v4("198.51.100.1:8080"), false, &host, &[]), Verdict::Allow);
    }

    #[test]
    fn dns_goes_to_the_host_resolvers_only_on_port_53() {
        let ns = ["10.255.255.53".parse().unwrap(), "127.0.0.53".parse().unwrap()];
        assert_eq!(decide_with(v4("10.255.255.53:53"), false, &[], &ns), Verdict::Allow);
        assert_eq!(decide_with(v4("127.0.0.53:53"), false, &[], &ns), Verdict::Allow);
        assert!(matches!(decide_with(v4("10.255.255.53:80"), false, &[], &ns), Verdict::Deny(_)));
        assert!(matches!(decide_with(v4("127.0.0.53:80"), false, &[], &ns), Verdict::Deny(_)));
        assert!(matches!(decide_with(v4("127.0.0.1:53"), false, &[], &ns), Verdict::Deny(_)));
    }

    #[test]
    fn other_families_and_malformed_addresses_are_denied() {
        for d in [
            Destination::Family(libc::AF_INET6 as u16),
            Destination::Family(libc::AF_UNIX as u16),
            Destination::Family(libc::AF_NETLINK as u16),
            Destination::Malformed,
        ] {
            assert!(matches!(decide_with(d, true, &[], &[]), Verdict::Deny(_)), "{d:?}");
        }
    }

    #[test]
    fn sockaddr_parsing() {
        // SAFETY: sockaddr_in is plain integers, for which all-zero bytes are a valid value.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from_ne_bytes([198, 51, 100, 1]);
        // SAFETY: the slice covers exactly the bytes of `sin`, a live, initialized local that
        // is not mutated while the slice is in use.
        let raw = unsafe {
            std::slice::from_raw_parts(&sin as *const _ as *const u8, std::mem::size_of::<libc::sockaddr_in>())
        };
        assert_eq!(parse_sockaddr(raw), v4("198.51.100.1:8080"));
        assert_eq!(parse_sockaddr(&raw[..8]), Destination::Malformed);
        assert_eq!(parse_sockaddr(&[]), Destination::Malformed);
        let six = (libc::AF_INET6 as u16).to_ne_bytes();
        assert_eq!(parse_sockaddr(&[six[0], six[1], 0, 0]), Destination::Family(libc::AF_INET6 as u16));
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nnameserver 10.255.255.53\nsearch x\nnameserver ::1\nnameserver  1.1.1.1 \n";
        assert_eq!(parse_nameservers(text), vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(1, 1, 1, 1)]);
    }

    #[test]
    fn this_hosts_loopback_is_a_host_address() {
        assert!(is_host_address(Ipv4Addr::LOCALHOST));
        // TEST-NET-3 is never assigned to this machine by the test environment.
        assert!(!is_host_address(Ipv4Addr::new(203, 0, 113, 77)));
    }

    /// Run `script` in bash, under the filter (answered by [`serve`]) or not.
    fn bash(script: &str, filtered: bool) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-c", script]);
        let prepared = filtered.then(|| Prepared::new().unwrap());
        if let Some(p) = &prepared {
            let handle = p.child_handle();
            // SAFETY: pre_exec runs the closure between fork and exec, which is what
            // install() requires; `prepared` stays alive in this (parent) process until the
            // child has started.
            unsafe {
                cmd.pre_exec(move || handle.install());
            }
        }
        let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        if let Some(p) = prepared {
            let listener = p.receive_listener().unwrap();
            std::thread::spawn(move || serve(listener, false));
        }
        child.wait_with_output().unwrap()
    }

    #[test]
    fn a_filtered_process_cannot_reach_loopback_or_open_ipv6_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let script = format!("echo x > /dev/tcp/127.0.0.1/{port}");
        // Positive control: the same command without the filter connects.
        assert!(bash(&script, false).status.success());
        assert!(listener.accept().is_ok());
        let o = bash(&script, true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("Connection refused"), "{err}");
        assert!(listener.accept().is_err(), "the filtered process connected");
        // No IPv6 socket at all, so no path around the IPv4 checks.
        let o = bash(&format!("echo x > /dev/tcp/::1/{port}"), true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("Address family not supported"), "{err}");
        // Everything else bash does still works under the filter.
        let o = bash("echo fine", true);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "fine\n");
    }

    #[test]
    fn denial_logging_is_rate_limited_and_bounded() {
        let mut log = DenialLog::new();
        let lines: usize = (0..1000).map(|i| log.note(&format!("connect to 127.0.0.1:{i}")).len()).sum();
        assert_eq!(lines, DENIAL_LINES_PER_MINUTE as usize);
        // A new minute: one summary line, then logging resumes.
        log.window_start -= std::time::Duration::from_secs(61);
        let out = log.note("x");
        assert!(out[0].contains("990 more denials"), "{out:?}");
        assert_eq!(out.len(), 2);
        // Over a long life the total stays bounded.
        let mut total = lines + out.len();
        for _ in 0..1000 {
            log.window_start -= std::time::Duration::from_secs(61);
            total += (0..20).map(|_| log.note("y").len()).sum::<usize>();
        }
        assert_eq!(total, DENIAL_LINES_TOTAL as usize);
    }

    #[test]
    fn the_kernel_offers_user_notification() {
        // Every supported host (Linux 5.0+) has it; the egress tests depend on it.
        available().unwrap();
    }
}
