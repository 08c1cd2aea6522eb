//! Guest exec semantics through the SDK on a VM that stays up between calls.

use pyro::{CreateVmOptions, Paths, Pyro};
use pyro_vmm::{Machine, VmDir};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn engine() -> (Pyro, tempfile::TempDir) {
    let home = tempfile::Builder::new().prefix("pyro-sdk-").tempdir_in("/tmp").unwrap();
    let mut paths = Paths::from_env().unwrap();
    paths.home = home.path().to_path_buf();
    (Pyro::with_paths(paths), home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group_in_the_guest() {
    let (pyro, _home) = engine();
    let vm = pyro.create_vm(CreateVmOptions::new("debian:12")).await.unwrap();
    let vm = pyro.start_vm(&vm.vm_id).await.unwrap();
    let vm_dir = VmDir::new(&vm.metadata["vm_dir"]);
    let dir = Machine::attach(vm_dir.clone());

    let started = Instant::now();
    let r = dir
        .exec("sleep 100 & sleep 101 & sleep 102", None, BTreeMap::new(), Duration::from_secs(2), 1 << 20)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.exit_code, 124);
    assert!(r.timed_out);
    // The notice is the one host-compat gives too (pyro_protocol::exec, unit-tested there and
    // in hostcompat.rs): the command wrote nothing, so stderr is exactly it.
    assert_eq!(String::from_utf8_lossy(&r.stderr), pyro_protocol::exec::timeout_message(2000));
    assert_eq!(String::from_utf8_lossy(&r.stderr), "command timed out after 2s");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    let ps = dir.exec("ps -eo comm=,args=", None, BTreeMap::new(), Duration::from_secs(10), 1 << 20).await.unwrap();
    let listing = String::from_utf8_lossy(&ps.stdout);
    assert!(!listing.contains("sleep 10"), "processes survived the timeout:\n{listing}");

    // The VM is still usable afterwards, and a cwd is honoured.
    let r = dir.exec("pwd", Some("/tmp"), BTreeMap::new(), Duration::from_secs(10), 1 << 20).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/tmp\n");

    let status = pyro.status_vm(&vm.vm_id).await.unwrap();
    assert_eq!(status.state, "started");
    assert_eq!(status.backend, "qemu");
    pyro.delete_vm(&vm.vm_id).await.unwrap();
    assert!(!vm_dir.path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_exec_does_not_block_other_requests() {
    let (pyro, _home) = engine();
    let vm = pyro.create_vm(CreateVmOptions::new("debian:12")).await.unwrap();
    let vm = pyro.start_vm(&vm.vm_id).await.unwrap();
    let vm_dir = VmDir::new(&vm.metadata["vm_dir"]);
    let dir = Machine::attach(vm_dir.clone());
    let slow = {
        let dir = dir.clone();
        tokio::spawn(async move {
            dir.exec("sleep 5; echo slow", None, BTreeMap::new(), Duration::from_secs(30), 1024).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let fast = dir.exec("echo fast", None, BTreeMap::new(), Duration::from_secs(30), 1024).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&fast.stdout), "fast\n");
    assert!(started.elapsed() < Duration::from_secs(3), "fast exec waited for the slow one");
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "slow\n");
    pyro.delete_vm(&vm.vm_id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_exec_cancels_it_in_the_guest() {
    let (pyro, _home) = engine();
    let vm = pyro.create_vm(CreateVmOptions::new("debian:12")).await.unwrap();
    let vm = pyro.start_vm(&vm.vm_id).await.unwrap();
    let vm_dir = VmDir::new(&vm.metadata["vm_dir"]);
    let dir = Machine::attach(vm_dir.clone());
    // The caller gives up after 1 s (like a cancelled MCP call or Ctrl-C).
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        dir.exec("sleep 600", None, BTreeMap::new(), Duration::from_secs(900), 1024),
    )
    .await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ps = dir.exec("ps -eo args=", None, BTreeMap::new(), Duration::from_secs(10), 1 << 20).await.unwrap();
    let listing = String::from_utf8_lossy(&ps.stdout);
    assert!(!listing.contains("sleep 600"), "cancelled command still runs:\n{listing}");
    pyro.delete_vm(&vm.vm_id).await.unwrap();
}
