//! Guest path benchmark (`cargo bench -p pyro --bench guest_path`).
//!
//! Prints, measured in the same run on the same machine:
//! 1. cold `pyro run debian:12 -- true` (the real CLI process, boot to deletion) against a
//!    bare boot of the same kernel with a busybox initramfs that powers off at once, under
//!    the same QEMU accelerator: ratio, target <= 1.3x;
//! 2. exec round trip (`true`) on a running VM through the supervisor against a raw echo
//!    (`Ping`) over the same channel: ratio, target <= 2x.
//!
//! Needs: scripts/build.sh release (pyro, pyro-supervisor, pyro-agent side by side), an
//! installed debian:12, and busybox-static for the bare baseline.

use pyro::{CreateVmOptions, Paths, Pyro};
use pyro_protocol::Request;
use pyro_vmm::{Machine, VmDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COLD_RUNS: usize = 5;
const EXEC_RUNS: usize = 200;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn release_dir() -> PathBuf {
    // target/release/deps/guest_path-<hash> → target/release
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn busybox_initramfs(work: &Path) -> PathBuf {
    let root = work.join("bb");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (apt-get install busybox-static)");
    std::fs::write(root.join("init"), "#!/bin/busybox sh\n/bin/busybox poweroff -f\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = work.join("bb.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet > {}", root.display(), out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn bare_boot_seconds(kernel: &Path, initrd: &Path, accel: &str) -> f64 {
    let mut cmdline =
        "console=ttyS0 quiet panic=-1 tsc=reliable no_timer_check cryptomgr.notests mitigations=off".to_string();
    if let Some(khz) = pyro_vmm::backend::host_tsc_khz() {
        cmdline.push_str(&format!(" tsc_early_khz={khz}"));
    }
    let accel_arg = if accel == "tcg" { "tcg,tb-size=64".to_string() } else { accel.to_string() };
    let t = Instant::now();
    let status = Command::new("qemu-system-x86_64")
        .args(["-accel", &accel_arg, "-nodefaults", "-no-user-config", "-M", "microvm", "-m", "1024", "-smp", "1"])
        .args(["-display", "none", "-no-reboot", "-serial", "null", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &cmdline])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() || status.code().is_some());
    t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let pyro_bin = release_dir().join("pyro");
    assert!(pyro_bin.is_file(), "build first: scripts/build.sh release ({} missing)", pyro_bin.display());
    let work = tempfile::Builder::new().prefix("pyro-bench-").tempdir_in("/tmp").unwrap();
    let home = work.path().join("home");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut paths = Paths::from_env().unwrap();
    paths.home = home.clone();
    let pyro = Pyro::with_paths(paths.clone());
    let env = rt.block_on(async { pyro.pull_environment("debian:12").await }).expect("debian:12 installs");
    let kernel = PathBuf::from(&env.kernel_image);
    let accel = rt
        .block_on(async {
            let vm = pyro.create_vm(CreateVmOptions::new("debian:12")).await?;
            let vm = pyro.start_vm(&vm.vm_id).await?;
            let accel = vm.metadata.get("accel").cloned().unwrap_or_else(|| "tcg".into());
            pyro.delete_vm(&vm.vm_id).await?;
            Ok::<_, pyro::Error>(accel)
        })
        .unwrap();
    let initrd = busybox_initramfs(work.path());

    // 1. cold run vs bare boot, interleaved so machine load affects both alike.
    let mut cold = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..COLD_RUNS {
        bare.push(bare_boot_seconds(&kernel, &initrd, &accel));
        let t = Instant::now();
        let o =
            Command::new(&pyro_bin).args(["run", "debian:12", "--", "true"]).env("PYRO_HOME", &home).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        cold.push(t.elapsed().as_secs_f64());
    }
    let (cold_m, bare_m) = (median(cold), median(bare));
    println!("cold `pyro run debian:12 -- true`: {:.3} s median of {COLD_RUNS}", cold_m);
    println!("bare kernel + busybox initramfs boot to poweroff ({accel}): {:.3} s median of {COLD_RUNS}", bare_m);
    println!("ratio run/bare: {:.2}x (target <= 1.30x)", cold_m / bare_m);
    println!("RATIO cold_run_vs_bare_boot {:.3} <= 1.3", cold_m / bare_m);

    // 2. exec round trip vs raw echo over the same supervisor channel.
    rt.block_on(async {
        let vm = pyro.create_vm(CreateVmOptions::new("debian:12")).await.unwrap();
        let vm = pyro.start_vm(&vm.vm_id).await.unwrap();
        let dir = Machine::attach(VmDir::new(&vm.metadata["vm_dir"]));
        for _ in 0..20 {
            dir.exec("true", None, BTreeMap::new(), Duration::from_secs(10), 1024).await.unwrap();
            dir.call(Request::Ping, None).await.unwrap();
        }
        let mut exec = Vec::new();
        let mut ping = Vec::new();
        for _ in 0..EXEC_RUNS {
            let t = Instant::now();
            dir.call(Request::Ping, None).await.unwrap();
            ping.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let r = dir.exec("true", None, BTreeMap::new(), Duration::from_secs(10), 1024).await.unwrap();
            assert_eq!(r.exit_code, 0);
            exec.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (e, p) = (median(exec), median(ping));
        println!("exec `true` round trip: {e:.3} ms median of {EXEC_RUNS}");
        println!("raw echo (Ping) round trip, same channel: {p:.3} ms median of {EXEC_RUNS}");
        println!("ratio exec/echo: {:.2}x (target <= 2x)", e / p);
        println!("RATIO exec_vs_echo {:.2} <= 2", e / p);
        pyro.delete_vm(&vm.vm_id).await.unwrap();
    });
}
