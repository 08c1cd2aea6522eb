//! Memory snapshots against real guests: pause, restore, the new-machine identity after a
//! restore, refusals, and the supervisor's idle pause. The `pyro` CLI (built beside this
//! crate's supervisor by `cargo build --workspace --bins`) creates a workspace once per test
//! for its kernel, initramfs and disk; the test then stops it and boots its own VM in that
//! directory through [`Machine`] only.
//!
//! `PYRO_CACHE_DIR` must hold an installed `debian:12` (scripts/test.sh builds it). Run with
//! `--nocapture` to see the figures (pause time, state size, restore vs cold boot).

mod common;
use common::target_bin;
use pyro_vmm::{BootSpec, DiskFormat, Error, IdlePause, Machine, MemoryState, NetworkPolicy, VmDir};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const MEM_MIB: u32 = 1024;

/// A stopped workspace whose directory, kernel, initramfs and disk the test boots itself.
struct Fixture {
    home: tempfile::TempDir,
    id: String,
    spec: BootSpec,
}

impl Fixture {
    fn new() -> Fixture {
        let home = tempfile::Builder::new().prefix("pyro-snap-").tempdir_in("/tmp").unwrap();
        let (id, spec) = common::stopped_workspace_spec(home.path(), MEM_MIB);
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

    let pid = sh(
        &machine,
        "sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/pid; echo kept > /tmp/note; echo disk > /root/note; cat /tmp/pid",
    )
    .await;
    let pids = recorded_pids(fx.vm());
    let uptime = |m: Machine| async move {
        let text = sh(&m, "cut -d' ' -f1 /proc/uptime").await;
        text.parse::<f64>().unwrap()
    };
    let uptime_before = uptime(machine.clone()).await;
    let paused_at = Instant::now();
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

    // Two machines restored from the one state elsewhere (throw-away disks, as warm runs
    // do): the same processes, each its own hostname and random bytes.
    let mut random = Vec::new();
    for child in ["child-one", "child-two"] {
        let spec = BootSpec {
            dir: VmDir::new(fx.home.path().join(child)),
            vm_id: child.into(),
            snapshot: true,
            hostname: Some(child.into()),
            ..fx.spec.clone()
        };
        let (machine, booted) = Machine::restore(spec, &state).await.unwrap();
        assert!(booted.restored);
        assert_eq!(sh(&machine, &format!("kill -0 {pid} && echo alive")).await, "alive");
        assert_eq!(sh(&machine, "hostname").await, child);
        random.push(sh(&machine, "head -c 16 /dev/urandom | od -An -tx1").await);
        machine.kill();
    }
    assert_ne!(random[0], random[1], "two restores of one state produced the same /dev/urandom bytes");
    assert!(MemoryState::load(fx.vm()).unwrap().is_some(), "a restore elsewhere must leave the state alone");

    // Resume in place after a pause of a few seconds: same processes and files, the host's
    // wall clock, and the state used up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let (machine, booted) = Machine::restore(fx.spec.clone(), &state).await.unwrap();
    let restore_ms = started.elapsed().as_millis();
    println!("restore: ready_ms {} (call {restore_ms} ms) vs cold boot {cold_ms} ms", booted.ready_ms);
    assert!(booted.restored);
    assert!(MemoryState::load(fx.vm()).unwrap().is_none(), "a resume in place must retire its state");
    assert_eq!(sh(&machine, "cat /tmp/pid").await, pid);
    assert_eq!(sh(&machine, "cat /tmp/note").await, "kept");
    assert_eq!(sh(&machine, &format!("kill -0 {pid} && echo alive")).await, "alive");
    assert_eq!(sh(&machine, "hostname").await, "pyro");
    let guest_now: i64 = sh(&machine, "date +%s").await.parse().unwrap();
    assert!((guest_now - unix_now()).abs() <= 2, "guest clock {guest_now} vs host {}", unix_now());
    // The guest's monotonic clock (what timers and timeouts run on) did not count the pause.
    let (guest_gap, host_gap) = (uptime(machine.clone()).await - uptime_before, paused_at.elapsed().as_secs_f64());
    println!("guest uptime advanced {guest_gap:.1} s over {host_gap:.1} s of host time around the pause");
    assert!(guest_gap < host_gap - 1.5, "guest {guest_gap} s vs host {host_gap} s");
    // An exec timeout in flight measures guest time, which did not run while paused.
    let r = machine.exec("sleep 5", None, BTreeMap::new(), Duration::from_secs(1), 64).await.unwrap();
    assert!(r.timed_out && r.duration_ms < 4000, "{r:?}");

    // Pause again, from a restored VM; a cold boot of the same disk then retires that state.
    let paused = machine.pause(Duration::from_secs(10)).await.unwrap();
    assert_eq!(MemoryState::load(fx.vm()).unwrap().unwrap().meta.state_bytes, paused.state_bytes);
    let (machine, _) = Machine::boot(fx.spec.clone()).await.unwrap();
    assert!(MemoryState::load(fx.vm()).unwrap().is_none(), "a cold boot must retire the state of its disk");
    // /tmp is tmpfs (gone with the old machine); what went to the disk is there.
    assert_eq!(sh(&machine, "cat /root/note; test -e /tmp/note || echo fresh").await, "disk\nfresh");
    machine.kill();
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
        hostname: Some("idle-vm".into()),
        ..fx.spec.clone()
    };
    let (machine, _) = Machine::boot(spec).await.unwrap();
    // A hostname is applied at a cold boot too.
    assert_eq!(sh(&machine, "hostname").await, "idle-vm");
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
    // QEMU is gone before the supervisor writes its last line: give it a moment to exit.
    let log_path = fx.vm().path().join("supervisor.log");
    let said = |log: &str| log.contains("pausing the idle VM") && log.contains("idle; paused");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = std::fs::read_to_string(&log_path).unwrap();
    while !said(&log) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = std::fs::read_to_string(&log_path).unwrap();
    }
    assert!(said(&log), "{log}");
    let (machine, booted) = Machine::restore(fx.spec.clone(), &state).await.unwrap();
    assert!(booted.restored);
    assert_eq!(sh(&machine, "echo back").await, "back");
    machine.kill();
}

/// A one-file HTTP server: answers every request with /root/www/index.html.
const HTTPD: &str = r#"$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!";
while ($c = $s->accept) { <$c>; open(F, "/root/www/index.html"); local $/; $b = <F>; close F;
print $c "HTTP/1.0 200 OK\r\nContent-Length: " . length($b) . "\r\n\r\n" . $b; close $c }"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// `GET /` on a host loopback port; the body, if anything answered.
fn fetch(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

async fn fetch_within(port: u16, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let p = port;
        if let Some(body) = tokio::task::spawn_blocking(move || fetch(p)).await.unwrap() {
            return Some(body);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_come_back_and_forks_get_their_own_disks() {
    use pyro_protocol::session::ServiceRequest;
    use pyro_protocol::PortForward;
    let fx = Fixture::new();
    let spec = BootSpec { network: NetworkPolicy::EgressPublishedPorts, ..fx.spec.clone() };
    let (machine, _) = Machine::boot(spec.clone()).await.unwrap();
    sh(&machine, "mkdir -p /root/www && echo hello > /root/www/index.html").await;
    let start = ServiceRequest::Start {
        name: "web".into(),
        // debian:12 is minimal: perl-base is there, python is not.
        command: format!("echo $$ > /tmp/web.pid; exec perl -MIO::Socket::INET -e '{HTTPD}'"),
        cwd: "/".into(),
        env: BTreeMap::new(),
        readiness: Some(pyro_protocol::session::ReadinessProbe::Tcp { address: "127.0.0.1:8080".into() }),
        ready_timeout_ms: 60_000,
        ready_interval_ms: 200,
    };
    machine.service(start, Duration::from_secs(90)).await.unwrap();
    let web_pid = sh(&machine, "cat /tmp/web.pid").await;
    let port = free_port();
    machine
        .publish("web", vec![PortForward { host: "127.0.0.1".into(), host_port: port, guest_port: 8080 }])
        .await
        .unwrap();
    assert_eq!(fetch_within(port, Duration::from_secs(20)).await.as_deref(), Some("hello\n"));

    let paused = machine.pause(Duration::from_secs(10)).await.unwrap();
    println!("pause with a NIC and a service: {} ms, {} bytes", paused.pause_ms, paused.state_bytes);
    assert_eq!(fetch(port), None, "the port still answers with the VM paused");
    let state = MemoryState::load(fx.vm()).unwrap().unwrap();
    assert_eq!(state.meta.published.len(), 1);

    // Forks: each child restores the state onto its own qcow2 overlay over the (now frozen)
    // parent disk, at the same time; writes stay in each child's overlay.
    let mut children = Vec::new();
    for name in ["fork-a", "fork-b"] {
        let dir = VmDir::new(fx.home.path().join(name));
        dir.create().unwrap();
        pyro_vmm::create_overlay(&fx.spec.disk, DiskFormat::Raw, &dir.disk_overlay()).unwrap();
        let child = BootSpec {
            dir: dir.clone(),
            vm_id: name.into(),
            network: NetworkPolicy::Egress,
            disk: dir.disk_overlay(),
            disk_format: DiskFormat::Qcow2,
            hostname: Some(name.into()),
            ..fx.spec.clone()
        };
        let state = state.clone();
        children.push(tokio::spawn(async move { Machine::restore(child, &state).await }));
    }
    let mut forks = Vec::new();
    for c in children {
        let (m, booted) = c.await.unwrap().unwrap();
        assert!(booted.restored);
        forks.push(m);
    }
    for (i, m) in forks.iter().enumerate() {
        assert_eq!(sh(m, "cat /root/www/index.html").await, "hello");
        assert_eq!(sh(m, &format!("kill -0 {web_pid} && echo alive")).await, "alive");
        sh(m, &format!("echo {i} > /root/fork-{i}; sync")).await;
    }
    assert_eq!(sh(&forks[0], "ls /root | grep fork- | tr '\\n' ' '").await, "fork-0");
    assert_eq!(sh(&forks[1], "ls /root | grep fork- | tr '\\n' ' '").await, "fork-1");
    for m in &forks {
        m.kill();
    }
    assert!(MemoryState::load(fx.vm()).unwrap().is_some());

    // The parent resumes in place: its published port answers again from the same service
    // process, and no child's write reached its disk.
    let (machine, _) = Machine::restore(spec.clone(), &state).await.unwrap();
    assert_eq!(fetch_within(port, Duration::from_secs(10)).await.as_deref(), Some("hello\n"));
    assert_eq!(sh(&machine, "cat /tmp/web.pid").await, web_pid);
    let log = std::fs::read_to_string(fx.vm().path().join("supervisor.log")).unwrap();
    println!("{}", log.lines().rfind(|l| l.contains("survived the restore")).unwrap_or("(no port line)"));
    assert_eq!(sh(&machine, "ls /root | grep -c fork- || true").await, "0");

    // kill -9 of the supervisor during a pause: QEMU goes with it, and what is left is either
    // no state (a crashed VM that starts cold) or a whole one, never a broken one.
    let supervisor = recorded_pids(fx.vm())[0];
    let pausing = {
        let m = machine.clone();
        tokio::spawn(async move { m.pause(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    // SAFETY: kill(2) with a pid read from the VM's record, checked to be alive just above.
    unsafe {
        libc::kill(supervisor as i32, libc::SIGKILL);
    }
    let _ = pausing.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while machine.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!machine.is_running());
    let (machine, booted) = match MemoryState::load(fx.vm()).unwrap() {
        Some(state) => {
            println!("kill -9 mid-pause: the pause had completed");
            Machine::restore(spec.clone(), &state).await.unwrap()
        }
        None => {
            println!("kill -9 mid-pause: no state, cold start");
            Machine::boot(spec.clone()).await.unwrap()
        }
    };
    assert!(!fx.vm().path().join("memory.state.partial").exists());
    assert_eq!(sh(&machine, "cat /root/www/index.html").await, "hello");
    let _ = booted;
    machine.kill();
}
