//! Network policies: `off` gives the guest no NIC at all; `egress` gives outbound NAT through
//! QEMU user-mode networking (no root, no TAP). Only loopback traffic on this host is used.

mod common;

use common::{ok, stderr, stdout, TestHome};
use std::io::Read;
use std::net::TcpListener;

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

#[test]
fn egress_reaches_a_server_on_the_host_loopback_through_the_nat_gateway() {
    let home = TestHome::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        got
    });
    let w = ok(&home, &["workspace", "create", "debian:12", "--network-policy", "egress", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(w["network_enabled"], true);
    let gateway = "10.0.2.2";
    let script = format!("echo hello-from-guest > /dev/tcp/{gateway}/{port}");
    let o = home.run(&["workspace", "exec", &id, "--", "bash", "-c", &script]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.join().unwrap(), "hello-from-guest\n");
    // The NIC comes back after a stop/start.
    ok(&home, &["workspace", "stop", &id, "--json"]);
    ok(&home, &["workspace", "start", &id, "--json"]);
    let o = home.run(&["workspace", "exec", &id, "--", "sh", "-c", "ip -o -4 addr show dev eth0 | awk '{print $4}'"]);
    assert_eq!(stdout(&o), "10.0.2.15/24\n", "{}", stderr(&o));
    ok(&home, &["workspace", "delete", &id, "--json"]);
}
