//! Memory snapshots against real guests: pause, restore, the new-machine identity after a
//! restore, refusals, and the supervisor's idle pause. The `pyro` CLI (built beside this
//! crate's supervisor by `cargo build --workspace --bins`) creates a workspace once per test
//! for its kernel, initramfs and disk; the test then stops it and boots its own VM in that
//! directory through [`Machine`] only.
//!
//! `PYRO_CACHE_DIR` must hold an installed `debian:12` (scripts/test.sh builds it). Run with
//! `--nocapture` to see the figures (pause time, state size, restore vs cold boot).

use pyro_vmm::{Accel, BootSpec, DiskFormat, Error, IdlePause, Machine, MemoryState, NetworkPolicy, VmDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MEM_MIB: u32 = 1024;

fn target_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/snapshot-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(bin.is_file(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

fn pyro(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(target_bin("pyro")).args(args).env("PYRO_HOME", home).output().unwrap();
    assert!(out.status.success(), "pyro {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value after `flag` in QEMU's arguments of the launch the engine wrote.
fn launch_arg(vm: &VmDir, flag: &str) -> PathBuf {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.path().join("launch.json")).unwrap()).unwrap();
    let args: Vec<&str> = spec["vmm_args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let at = args.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("{flag} not in {args:?}"));
    PathBuf::from(args[at + 1])
}

/// A stopped workspace whose directory, kernel, initramfs and disk the test boots itself.
struct Fixture {
    home: tempfile::TempDir,
    id: String,
    spec: BootSpec,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::Builder::new().prefix("pyro-snap-").tempdir_in("/tmp").unwrap();
        let created = pyro(home.path(), &["workspace", "create", "debian:12", "--json"]);
        let id = created["workspace_id"].as_str().unwrap().to_string();
        let vm = VmDir::new(home.path().join("workspaces").join(&id).join("runtime"));
        let (kernel, initramfs) = (launch_arg(&vm, "-kernel"), launch_arg(&vm, "-initrd"));
        pyro(home.path(), &["workspace", "stop", &id, "--json"]);
        let spec = BootSpec {
            dir: vm.clone(),
            vm_id: id.clone(),
            accel: Accel::Tcg,
            vcpu_count: 1,
            mem_mib: MEM_MIB,
            network: NetworkPolicy::Off,
            kernel,
            initramfs,
            disk: vm.disk(),
            disk_format: DiskFormat::Raw,
            snapshot: false,
            owner_pid: None,
            remove_dir_on_exit: false,
            supervisor_bin: PathBuf::from(env!("CARGO_BIN_EXE_pyro-supervisor")),
            idle_pause: None,
            hostname: None,
        };
        Fixture { home, id, spec }
    }

    fn vm(&self) -> &VmDir {
        &self.spec.dir
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        Machine::attach(self.vm().clone()).kill();
        let _ = Command::new(target_bin("pyro"))
            .args(["workspace", "delete", &self.id, "--json"])
            .env("PYRO_HOME", self.home.path())
            .output();
    }
}

async fn sh(machine: &Machine, script: &str) -> String {
    let r = machine.exec(script, None, BTreeMap::new(), Duration::from_secs(60), 64 * 1024).await.unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8(r.stdout).unwrap().trim().to_string()
}

/// The VM's recorded supervisor and QEMU pids.
fn recorded_pids(vm: &VmDir) -> Vec<u32> {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.path().join("supervisor.json")).unwrap()).unwrap();
    vec![record["supervisor_pid"].as_u64().unwrap() as u32, record["vmm_pid"].as_u64().unwrap() as u32]
}

fn gone(pid: u32) -> bool {
    // A zombie (not reaped yet by whoever started it) runs nothing either.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_vm_comes_back_with_its_processes_and_as_a_new_machine() {
    let fx = Fixture::new();
    let started = Instant::now();
    let (machine, booted) = Machine::boot(fx.spec.clone()).await.unwrap();
    let cold_ms = started.elapsed().as_millis();
    println!("cold boot: ready_ms {} (call {cold_ms} ms)", booted.ready_ms);
    assert!(!booted.restored);

    let pid =
        sh(&machine, "sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/pid; echo kept > /tmp/note; cat /tmp/pid").await;
    let pids = recorded_pids(fx.vm());
    let paused = machine.pause(Duration::from_secs(10)).await.unwrap();
    println!(
        "pause of an idle {MEM_MIB} MiB guest: {} ms, state {} bytes ({:.1} MiB)",
        paused.pause_ms,
        paused.state_bytes,
        paused.state_bytes as f64 / 1048576.0
    );
    // Nothing of the VM runs; the state is owner-only and far smaller than the guest's RAM.
    assert!(pids.iter().all(|p| gone(*p)), "a VM process is left after the pause: {pids:?}");
    assert!(!machine.is_running());
    assert!(paused.state_bytes < u64::from(MEM_MIB) * 1024 * 1024 / 4, "{} bytes", paused.state_bytes);
    let state = MemoryState::load(fx.vm()).unwrap().expect("a saved state");
    assert_eq!(state.meta.state_bytes, paused.state_bytes);
    assert_eq!((state.meta.mem_mib, state.meta.disk_format), (MEM_MIB, DiskFormat::Raw));
    use std::os::unix::fs::PermissionsExt;
    for f in [fx.vm().memory_state(), fx.vm().memory_meta()] {
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o077, 0, "{} is not owner-only", f.display());
    }
    assert!(!fx.vm().path().join("memory.state.partial").exists());

    // A pause of a few seconds: the guest's wall clock is the host's again after the restore.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    let spec = BootSpec { hostname: Some("child-one".into()), ..fx.spec.clone() };
    let (machine, booted) = Machine::restore(spec, &state).await.unwrap();
    let restore_ms = started.elapsed().as_millis();
    println!("restore: ready_ms {} (call {restore_ms} ms) vs cold boot {cold_ms} ms", booted.ready_ms);
    assert!(booted.restored);
    assert_eq!(sh(&machine, "cat /tmp/pid").await, pid);
    assert_eq!(sh(&machine, "cat /tmp/note").await, "kept");
    assert_eq!(sh(&machine, &format!("kill -0 {pid} && echo alive")).await, "alive");
    assert_eq!(sh(&machine, "hostname").await, "child-one");
    let guest_now: i64 = sh(&machine, "date +%s").await.parse().unwrap();
    assert!((guest_now - unix_now()).abs() <= 2, "guest clock {guest_now} vs host {}", unix_now());
    // An exec timeout in flight measures guest time, which did not run while paused.
    let r = machine.exec("sleep 5", None, BTreeMap::new(), Duration::from_secs(1), 64).await.unwrap();
    assert!(r.timed_out && r.duration_ms < 4000, "{r:?}");
    let first = sh(&machine, "head -c 16 /dev/urandom | od -An -tx1").await;
    machine.kill();

    // The same state again: the same processes, different random bytes.
    let (machine, _) = Machine::restore(fx.spec.clone(), &state).await.unwrap();
    assert_eq!(sh(&machine, &format!("kill -0 {pid} && echo alive")).await, "alive");
    let second = sh(&machine, "head -c 16 /dev/urandom | od -An -tx1").await;
    assert_ne!(first, second, "two restores of one state produced the same /dev/urandom bytes");
    assert_eq!(sh(&machine, "hostname").await, "pyro");

    // Pause again, from a restored VM: the state is replaced whole.
    let paused = machine.pause(Duration::from_secs(10)).await.unwrap();
    let again = MemoryState::load(fx.vm()).unwrap().unwrap();
    assert_eq!(again.meta.state_bytes, paused.state_bytes);
    MemoryState::discard(fx.vm()).unwrap();
    assert!(MemoryState::load(fx.vm()).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failed_pauses_and_restores_leave_things_as_they_were() {
    let fx = Fixture::new();
    let (machine, _) = Machine::boot(fx.spec.clone()).await.unwrap();

    // A pause while a long exec runs: abandoned after its timeout, the VM keeps running and
    // the exec completes.
    let long = {
        let m = machine.clone();
        tokio::spawn(
            async move { m.exec("sleep 4; echo done", None, BTreeMap::new(), Duration::from_secs(60), 64).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    match machine.pause(Duration::from_secs(1)).await {
        Err(Error::InvalidState(m)) => assert!(m.contains("still running"), "{m}"),
        other => panic!("a pause with a request in flight must be abandoned, got {other:?}"),
    }
    assert!(machine.is_running());
    assert!(MemoryState::load(fx.vm()).unwrap().is_none());
    let r = long.await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "done\n");

    // A pause that waits for a request in flight refuses new requests meanwhile, then pauses.
    let long = {
        let m = machine.clone();
        tokio::spawn(async move { m.exec("sleep 3", None, BTreeMap::new(), Duration::from_secs(60), 64).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pausing = {
        let m = machine.clone();
        tokio::spawn(async move { m.pause(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    match machine.exec("true", None, BTreeMap::new(), Duration::from_secs(10), 64).await {
        Err(Error::Guest { message, .. }) => assert!(message.contains("pausing"), "{message}"),
        other => panic!("a request during a pause must be refused, got {other:?}"),
    }
    assert_eq!(long.await.unwrap().unwrap().exit_code, 0);
    pausing.await.unwrap().unwrap();
    let state = MemoryState::load(fx.vm()).unwrap().unwrap();

    // A differently shaped machine is refused, naming what differs; nothing starts.
    let other = BootSpec { mem_mib: 512, ..fx.spec.clone() };
    match Machine::restore(other, &state).await {
        Err(Error::InvalidState(m)) => assert!(m.contains("mem_mib: saved with 1024, now 512"), "{m}"),
        other => panic!("a fingerprint mismatch must be refused, got {other:?}"),
    }
    assert!(!machine.is_running());

    // A truncated state: `load` says so, and a restore that tries anyway fails naming the
    // file, with nothing left running.
    let full = std::fs::read(&state.path).unwrap();
    std::fs::write(&state.path, &full[..full.len() / 2]).unwrap();
    match MemoryState::load(fx.vm()) {
        Err(Error::CorruptState(m)) => assert!(m.contains("memory.state"), "{m}"),
        other => panic!("a truncated state must be reported, got {other:?}"),
    }
    let mut truncated = state.clone();
    truncated.meta.state_bytes = (full.len() / 2) as u64;
    match Machine::restore(fx.spec.clone(), &truncated).await {
        Err(Error::CorruptState(m)) => assert!(m.contains(&state.path.display().to_string()), "{m}"),
        other => panic!("a truncated state must not load, got {other:?}"),
    }
    assert!(!machine.is_running());
    assert!(!fx.vm().path().join("supervisor.json").exists());

    // The whole state still restores after the failed attempt.
    std::fs::write(&state.path, &full).unwrap();
    let (machine, _) = Machine::restore(fx.spec.clone(), &state).await.unwrap();
    assert_eq!(sh(&machine, "echo ok").await, "ok");
    machine.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_vm_pauses_itself_but_not_while_its_lock_is_held() {
    let fx = Fixture::new();
    let lock_path = fx.home.path().join("vm.lock");
    let spec = BootSpec {
        idle_pause: Some(IdlePause { after: Duration::from_secs(2), lock_path: lock_path.clone() }),
        ..fx.spec.clone()
    };
    let (machine, _) = Machine::boot(spec).await.unwrap();
    // Held: a call is in progress. The VM stays up however idle it is.
    let held = pyro_sys::lock(&lock_path, pyro_sys::LockMode::Shared).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(machine.is_running(), "the VM paused while its lock was held");
    assert!(MemoryState::load(fx.vm()).unwrap().is_none());
    // Requests keep it awake too.
    drop(held);
    for _ in 0..3 {
        sh(&machine, "true").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(machine.is_running(), "the VM paused while it was being used");
    let released = Instant::now();
    let deadline = released + Duration::from_secs(30);
    while machine.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!machine.is_running(), "the idle VM did not pause");
    println!("idle pause {} ms after the last request", released.elapsed().as_millis() + 1000);
    let state = MemoryState::load(fx.vm()).unwrap().expect("the idle pause saved a state");
    let log = std::fs::read_to_string(fx.vm().path().join("supervisor.log")).unwrap();
    assert!(log.contains("pausing the idle VM") && log.contains("idle; paused"), "{log}");
    let (machine, booted) = Machine::restore(fx.spec.clone(), &state).await.unwrap();
    assert!(booted.restored);
    assert_eq!(sh(&machine, "echo back").await, "back");
    machine.kill();
}
