//! The product layer (this crate and the CLI/MCP adapters) never builds a VM path and never
//! talks to QEMU's monitor: a VM directory's file names belong to `pyro_vmm::VmDir`, and
//! only the VM's supervisor (in pyro-vmm) touches `supervisor.sock`, QMP and the port
//! registry. Checked from the source, so a new shortcut fails here.

use std::path::{Path, PathBuf};

/// File names of a VM directory (see `pyro_vmm::VmDir`) and the monitor's vocabulary.
/// (`rootfs.ext4` is left out: an installed environment has a file of that name too.)
const VM_ONLY: &[&str] = &[
    "\"launch.json\"",
    "\"supervisor.sock\"",
    "\"supervisor.json\"",
    "\"supervisor.log\"",
    "\"console.log\"",
    "\"vmm.log\"",
    "\"agent.sock\"",
    "\"qmp.sock\"",
    "\"published.json\"",
    "\"rootfs.reset.ext4\"",
    "\"workdir\"",
    "hostfwd_",
    "human-monitor-command",
    "qmp_capabilities",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_product_layer_names_no_vm_file_and_no_monitor_command() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in ["pyro", "pyro-cli", "pyro-mcp"] {
        rust_files(&crates.join(krate).join("src"), &mut files);
    }
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), crates.display());
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for needle in VM_ONLY.iter().filter(|needle| line.contains(*needle)) {
                offences.push(format!("{}:{}: {needle}", file.display(), n + 1));
            }
        }
    }
    assert!(offences.is_empty(), "VM paths or monitor commands outside pyro-vmm:\n{}", offences.join("\n"));
}
