//! The runtime against a real guest. The `pyro` CLI (built beside this crate's supervisor by
//! `cargo build --workspace --bins`) creates a workspace, which gives a VM directory with an
//! installed environment's kernel, initramfs and disk; everything after that goes through
//! [`Machine`] only: attach, guest RPC, published ports via the supervisor, shutdown, and a
//! second boot from a [`BootSpec`].
//!
//! `PYRO_CACHE_DIR` must hold an installed `debian:12` (scripts/test.sh builds it).

mod common;
use common::{launch_arg, pyro};
use pyro_protocol::{ErrorKind, PortForward};
use pyro_vmm::{Accel, BootSpec, Error, Machine, NetworkPolicy, VmDir};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_attaches_serves_guest_rpc_publishes_ports_and_boots_again() {
    let home = tempfile::Builder::new().prefix("pyro-vmm-").tempdir_in("/tmp").unwrap();
    let created = pyro(
        home.path(),
        &["workspace", "create", "debian:12", "--network-policy", "egress+published-ports", "--json"],
    );
    let id = created["workspace_id"].as_str().unwrap().to_string();
    let vm = VmDir::new(home.path().join("workspaces").join(&id).join("runtime"));
    let machine = Machine::attach(vm.clone());
    assert!(machine.is_running());

    // Guest RPC, and guest errors classified by their kind.
    let r = machine.exec("echo hi; echo err >&2", Some("/tmp"), BTreeMap::new(), Duration::from_secs(20), 1024).await;
    let r = r.unwrap();
    assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"hi\n"[..], &b"err\n"[..], 0));
    machine.write_file("/workspace/a.txt", b"abc".to_vec()).await.unwrap();
    assert_eq!(machine.read_file("/workspace/a.txt", 10).await.unwrap(), (3, b"abc".to_vec()));
    match machine.read_file("/workspace/missing", 10).await {
        Err(Error::Guest { kind: ErrorKind::NotFound, .. }) => {}
        other => panic!("expected a not_found guest error, got {other:?}"),
    }
    let e = machine.exec("true", Some("/nonexistent"), BTreeMap::new(), Duration::from_secs(10), 64).await;
    assert!(matches!(e, Err(Error::Guest { .. })) || e.as_ref().is_ok_and(|r| r.exit_code != 0), "{e:?}");

    // Ports: only loopback; a forward of a service that is not running is dropped by the
    // supervisor's watcher within a few seconds.
    let bad = PortForward { host: "0.0.0.0".into(), host_port: free_port(), guest_port: 80 };
    match machine.publish("web", vec![bad]).await {
        Err(Error::Guest { kind: ErrorKind::BadRequest, message }) => {
            assert!(message.contains("loopback"), "{message}")
        }
        other => panic!("a non-loopback forward must be refused, got {other:?}"),
    }
    let port = free_port();
    machine
        .publish("web", vec![PortForward { host: "127.0.0.1".into(), host_port: port, guest_port: 8080 }])
        .await
        .unwrap();
    assert!(accepts(port), "QEMU listens on the published port");
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepts(port) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!accepts(port), "the forward of a service that does not run was not removed");

    // Shutdown leaves nothing running and no stale socket.
    machine.shutdown(Duration::from_secs(20)).await.unwrap();
    assert!(!machine.is_running());
    let e = machine.exec("true", None, BTreeMap::new(), Duration::from_secs(5), 64).await.unwrap_err();
    assert!(matches!(e, Error::NotRunning(_)), "{e}");

    // The same disk boots again from a BootSpec (no network this time: publishing is refused).
    let spec = BootSpec {
        dir: vm.clone(),
        vm_id: id.clone(),
        accel: Accel::Tcg,
        vcpu_count: 1,
        mem_mib: 512,
        network: NetworkPolicy::Off,
        kernel: launch_arg(&vm, "-kernel"),
        initramfs: launch_arg(&vm, "-initrd"),
        disk: vm.disk(),
        disk_format: pyro_vmm::DiskFormat::Raw,
        snapshot: false,
        owner_pid: None,
        remove_dir_on_exit: false,
        supervisor_bin: PathBuf::from(env!("CARGO_BIN_EXE_pyro-supervisor")),
        idle_pause: None,
        hostname: None,
    };
    let (machine, booted) = Machine::boot(spec).await.unwrap();
    assert_eq!(booted.transport, "virtio-serial");
    assert!(!booted.restored);
    assert!(booted.vmm_pid > 0 && booted.supervisor_pid > 0);
    assert_eq!(machine.read_file("/workspace/a.txt", 10).await.unwrap().1, b"abc");
    let refused =
        machine.publish("web", vec![PortForward { host: "127.0.0.1".into(), host_port: free_port(), guest_port: 80 }]);
    assert!(refused.await.unwrap_err().to_string().contains("does not allow published ports"));
    machine.kill();
    assert!(!machine.is_running());
    pyro(home.path(), &["workspace", "delete", &id, "--json"]);
}
