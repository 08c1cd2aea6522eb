//! What the pyro-vmm guest tests and the snapshot bench share: the built binaries, the `pyro`
//! CLI (to install a workspace whose kernel, initramfs and disk they then boot themselves),
//! and the launch arguments the engine chose.
#![allow(dead_code)] // each includer uses its own subset

use pyro_vmm::{Accel, BootSpec, DiskFormat, NetworkPolicy, VmDir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A binary of this build: target/<profile>/deps/<test>-<hash> → target/<profile>/<name>.
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(bin.is_file(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

/// Run the `pyro` CLI with `--json` output under `home`; it must succeed.
pub fn pyro(home: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(target_bin("pyro")).args(args).env("PYRO_HOME", home).output().unwrap();
    assert!(out.status.success(), "pyro {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value after `flag` in QEMU's arguments of the launch the engine wrote.
pub fn launch_arg(vm: &VmDir, flag: &str) -> PathBuf {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vm.path().join("launch.json")).unwrap()).unwrap();
    let args: Vec<&str> = spec["vmm_args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let at = args.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("{flag} not in {args:?}"));
    PathBuf::from(args[at + 1])
}

/// Create a debian:12 workspace under `home` with the CLI, stop it, and return its id and a
/// [`BootSpec`] that boots its raw disk again (no NIC, TCG, `mem_mib`).
pub fn stopped_workspace_spec(home: &Path, mem_mib: u32) -> (String, BootSpec) {
    let created = pyro(home, &["workspace", "create", "debian:12", "--json"]);
    let id = created["workspace_id"].as_str().unwrap().to_string();
    let vm = VmDir::new(home.join("workspaces").join(&id).join("runtime"));
    let (kernel, initramfs) = (launch_arg(&vm, "-kernel"), launch_arg(&vm, "-initrd"));
    pyro(home, &["workspace", "stop", &id, "--json"]);
    let spec = BootSpec {
        dir: vm.clone(),
        vm_id: id.clone(),
        accel: Accel::Tcg,
        vcpu_count: 1,
        mem_mib,
        network: NetworkPolicy::Off,
        kernel,
        initramfs,
        disk: vm.disk(),
        disk_format: DiskFormat::Raw,
        snapshot: false,
        owner_pid: None,
        remove_dir_on_exit: false,
        supervisor_bin: target_bin("pyro-supervisor"),
        idle_pause: None,
        hostname: None,
    };
    (id, spec)
}
