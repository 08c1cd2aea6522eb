//! Network policies: `off` gives the guest no NIC at all; `egress` gives outbound NAT through
//! QEMU user-mode networking, filtered so that it means the internet and never this host.
//!
//! Traffic goes only to loopback and to a network namespace the test makes itself, where a
//! documentation-range address (198.51.100.0/24) stands in for the internet.

mod common;

use common::{ok, stderr, stdout, TestHome};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn off_means_no_interface_but_lo() {
    let home = TestHome::new();
    let w = ok(&home, &["workspace", "create", "debian:12", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(w["network_policy"], "off");
    assert_eq!(w["network_enabled"], false);
    let o = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "ls /sys/class/net"]);
    assert_eq!(stdout(&o), "lo\n", "{}", stderr(&o));
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

/// A network namespace with one veth pair, removed on drop (also when the test panics).
struct TestNet {
    name: String,
    host_if: String,
    /// The "internet" server address, inside the namespace.
    remote: Ipv4Addr,
    /// This host's own address on the veth.
    host: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("the ip tool (iproute2) runs");
    assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
}

impl TestNet {
    fn new() -> TestNet {
        // SAFETY: geteuid(2) has no arguments and always succeeds.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test makes a network namespace and needs root");
        // A random /30 of 198.51.100.0/24, so parallel test runs never share addresses.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let tag = format!("{:06x}", (nanos ^ (std::process::id() << 8)) & 0xffffff);
        let quad = (u32::from_str_radix(&tag, 16).unwrap() % 64) as u8 * 4;
        let net = TestNet {
            name: format!("pyro-t-{tag}"),
            host_if: format!("pyh{tag}"),
            remote: Ipv4Addr::new(198, 51, 100, quad + 1),
            host: Ipv4Addr::new(198, 51, 100, quad + 2),
        };
        let peer = format!("pyn{tag}");
        ip(&["netns", "add", &net.name]);
        ip(&["link", "add", &net.host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &net.name]);
        ip(&["addr", "add", &format!("{}/30", net.host), "dev", &net.host_if]);
        ip(&["link", "set", &net.host_if, "up"]);
        ip(&["-n", &net.name, "addr", "add", &format!("{}/30", net.remote), "dev", &peer]);
        ip(&["-n", &net.name, "link", "set", &peer, "up"]);
        ip(&["-n", &net.name, "link", "set", "lo", "up"]);
        net
    }

    /// Run `f` on a thread that lives in the namespace (network namespaces are per thread).
    fn spawn_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: `ns` is an open namespace file that outlives the call; setns(2) moves only
            // this fresh thread, which then runs nothing but `f`.
            assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// Accept at most one connection within `wait`; what it sent.
fn accept_one(listener: TcpListener, wait: Duration) -> Option<String> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut got = String::new();
                let _ = conn.read_to_string(&mut got);
                return Some(got);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// One datagram within `wait`, if any.
fn receive_one(socket: &UdpSocket, wait: Duration) -> Option<String> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    socket.recv_from(&mut buf).ok().map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The guest runs `script` (bash); its exit code, stdout and stderr.
fn guest(home: &TestHome, id: &str, script: &str) -> (i32, String, String) {
    let o = home.run(&["workspace", "exec", id, "--json", "--", "bash", "-c", script]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("exec answer is not JSON ({e}): {} {}", stdout(&o), stderr(&o)));
    (
        v["exit_code"].as_i64().unwrap_or(-1) as i32,
        v["stdout"].as_str().unwrap_or_default().to_string(),
        v["stderr"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn egress_reaches_the_internet_but_never_the_host() {
    let net = TestNet::new();
    let home = TestHome::new();
    // "The internet": TCP and UDP servers inside the test's own namespace.
    let remote = net.remote;
    let internet_tcp = net.spawn_inside(move || {
        let l = TcpListener::bind((remote, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let (internet_listener, internet_port) = internet_tcp.join().unwrap();
    let internet_udp = net.spawn_inside(move || UdpSocket::bind((remote, 0)).unwrap()).join().unwrap();
    let internet_udp_port = internet_udp.local_addr().unwrap().port();
    // The host: its loopback and its own veth address.
    let loopback = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_port = loopback.local_addr().unwrap().port();
    let loopback_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let loopback_udp_port = loopback_udp.local_addr().unwrap().port();
    let host_addr = TcpListener::bind((net.host, 0)).unwrap();
    let host_port = host_addr.local_addr().unwrap().port();

    let w = ok(&home, &["workspace", "create", "debian:12", "--network-policy", "egress", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(w["network_enabled"], true);

    // The internet is reachable: data arrives over TCP and UDP.
    let (code, _, err) = guest(
        &home,
        &id,
        &format!(
            "echo hello-internet > /dev/tcp/{remote}/{internet_port} && echo udp-internet > /dev/udp/{remote}/{internet_udp_port}"
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(accept_one(internet_listener, Duration::from_secs(20)).as_deref(), Some("hello-internet\n"));
    assert_eq!(receive_one(&internet_udp, Duration::from_secs(10)).as_deref(), Some("udp-internet\n"));

    // The host's loopback (10.0.2.2 is slirp's alias for it) and the host's own address
    // refuse at once, and nothing arrives at either server.
    for (target, port) in [("10.0.2.2".to_string(), loopback_port), (net.host.to_string(), host_port)] {
        let (code, _, err) = guest(&home, &id, &format!("timeout 20 bash -c 'echo leak > /dev/tcp/{target}/{port}'"));
        assert_eq!(code, 1, "{target}:{port} must be refused: {err}");
        assert!(err.contains("Connection refused"), "{target}:{port}: {err}");
    }
    assert_eq!(accept_one(loopback, Duration::from_millis(500)), None, "the guest reached the host loopback");
    assert_eq!(accept_one(host_addr, Duration::from_millis(500)), None, "the guest reached the host's address");
    let (code, _, err) = guest(&home, &id, &format!("echo leak > /dev/udp/10.0.2.2/{loopback_udp_port}"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(receive_one(&loopback_udp, Duration::from_secs(2)), None, "a datagram reached the host loopback");

    // Cloud metadata (link-local) is refused quickly, not left to time out.
    let (code, out, err) = guest(
        &home,
        &id,
        "s=$(date +%s%N); timeout 20 bash -c 'echo x > /dev/tcp/169.254.169.254/80'; rc=$?; echo $rc $(( ($(date +%s%N) - s) / 1000000 ))",
    );
    assert_eq!(code, 0, "{err}");
    let mut parts = out.split_whitespace();
    let (rc, ms): (i32, u64) = (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap());
    assert_eq!(rc, 1, "metadata must be refused: {out} {err}");
    assert!(ms < 5000, "metadata refusal took {ms} ms");

    // Each denial is logged for the operator.
    let log = std::fs::read_to_string(home.path().join("workspaces").join(&id).join("runtime/supervisor.log")).unwrap();
    assert!(log.contains(&format!("denied connect to 127.0.0.1:{loopback_port}")), "{log}");
    assert!(log.contains(&format!("denied connect to {}:{host_port}", net.host)), "{log}");
    assert!(log.contains("169.254.169.254:80"), "{log}");
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn egress_refuses_the_host_loopback_after_a_restart_too() {
    let home = TestHome::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let w = ok(&home, &["workspace", "create", "debian:12", "--network-policy", "egress", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    // The NIC and the filter both come back after a stop/start.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    ok(&home, &["workspace", "start", &id, "--json"]);
    let o = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "ip -o -4 addr show dev eth0 | awk '{print $4}'"]);
    assert_eq!(stdout(&o), "10.0.2.15/24\n", "{}", stderr(&o));
    let (code, _, err) = guest(&home, &id, &format!("timeout 20 bash -c 'echo leak > /dev/tcp/10.0.2.2/{port}'"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(accept_one(listener, Duration::from_millis(500)), None, "the guest reached the host loopback");
    // The operator's record of the choice: private ranges stay closed unless the env var
    // was set when the VM started.
    let launch = std::fs::read_to_string(home.path().join("workspaces").join(&id).join("runtime/launch.json")).unwrap();
    let launch: serde_json::Value = serde_json::from_str(&launch).unwrap();
    assert_eq!(launch["network"], true);
    assert_eq!(launch["allow_private_network"], false);
    ok(&home, &["workspace", "delete", &id, "--json"]);
}

#[test]
fn a_bad_allow_private_value_is_refused_with_the_allowed_values() {
    let home = TestHome::new();
    let o = home
        .cmd()
        .env("PYRO_NETWORK_ALLOW_PRIVATE", "maybe")
        .args(["workspace", "create", "debian:12", "--network-policy", "egress", "--json"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("PYRO_NETWORK_ALLOW_PRIVATE=maybe") && text.contains("use 1"), "{text}");
    assert_eq!(ok(&home, &["workspace", "list", "--json"])["count"], 0, "a failed create left a workspace");
}

/// Run pyro as on a kernel without seccomp (user notification): a filter on the pyro
/// process and its children makes seccomp(2) fail with ENOSYS.
fn without_seccomp(home: &TestHome, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    fn insn(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt, jf, k }
    }
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program = vec![
        insn(ld, 0, 0, 0), // seccomp_data.nr
        insn(jeq, libc::SYS_seccomp as u32, 0, 1),
        insn(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32, 0, 0),
        insn(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    let fprog_addr = &fprog as *const libc::sock_fprog as usize;
    let mut cmd = home.cmd();
    cmd.args(args);
    // SAFETY: prctl only, on a program that outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, fprog_addr) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(program);
    out
}

#[test]
fn without_seccomp_user_notification_egress_refuses_to_start_and_doctor_says_why() {
    let home = TestHome::new();
    let o = without_seccomp(&home, &["workspace", "create", "debian:12", "--network-policy", "egress", "--json"]);
    assert!(!o.status.success(), "an unfiltered egress VM started: {}", stdout(&o));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("cannot filter guest network egress"), "{text}");
    assert!(common::processes_mentioning(&home.path().display().to_string()).is_empty());
    assert_eq!(ok(&home, &["workspace", "list", "--json"])["count"], 0, "a failed create left a workspace");
    // A VM without a network still runs.
    let o = without_seccomp(&home, &["run", "debian:12", "--json", "--", "echo", "offline-ok"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("offline-ok"));
    let o = without_seccomp(&home, &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["networking"]["egress_filter"], false, "{v}");
    assert!(v["issues"].to_string().contains("cannot filter guest network egress"), "{v}");
}
