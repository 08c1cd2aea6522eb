//! With feature `bundle-runtime` (the wheel build), build the two binaries the engine runs
//! besides itself, `pyro-supervisor` (release) and the static guest agent, and embed them in
//! the extension module: a `pip install` then needs nothing else from this repository.
//!
//! They are built by a nested cargo into a target directory of their own under `OUT_DIR`: the
//! outer cargo holds the lock of its own target directory while this script runs, and the
//! agent needs its own flags (`+crt-static`, `--target`, profile `guest`, as in
//! scripts/build-agent.sh). `PYRO_PY_BUNDLE_DIR` names a directory that already holds both
//! (`pyro-supervisor`, `pyro-guest-agent`), to skip the nested build.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT_TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=PYRO_PY_BUNDLE_DIR");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let generated = out_dir.join("bundle.rs");
    if std::env::var_os("CARGO_FEATURE_BUNDLE_RUNTIME").is_none() {
        std::fs::write(&generated, "/// Not built with `bundle-runtime`.\npub const BUNDLE: Option<Bundle> = None;\n")
            .expect("write bundle.rs");
        return;
    }
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../..").canonicalize().expect("the workspace root exists");
    let (supervisor, agent) = match std::env::var_os("PYRO_PY_BUNDLE_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("pyro-supervisor"), dir.join("pyro-guest-agent"))
        }
        None => {
            // Rebuild when anything the two binaries are made of changes.
            for krate in ["pyro-agent", "pyro-vmm", "pyro-protocol", "pyro-sys", "pyro-tree"] {
                println!("cargo:rerun-if-changed={}", workspace.join("crates").join(krate).display());
            }
            println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());
            nested_build(&workspace, &out_dir.join("runtime-target"))
        }
    };
    for p in [&supervisor, &agent] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let digest = {
        let mut h = Sha256::new();
        for p in [&supervisor, &agent] {
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        hex::encode(h.finalize())
    };
    let code = format!(
        "/// The embedded runtime binaries.\npub const BUNDLE: Option<Bundle> = Some(Bundle {{\n    \
         digest: {digest:?},\n    supervisor: include_bytes!({sup:?}),\n    agent: include_bytes!({agent:?}),\n}});\n",
        sup = supervisor.display().to_string(),
        agent = agent.display().to_string(),
    );
    std::fs::write(&generated, code).expect("write bundle.rs");
}

/// Build the supervisor and the static agent; returns their paths.
fn nested_build(workspace: &Path, target_dir: &Path) -> (PathBuf, PathBuf) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let run = |args: &[&str], rustflags: Option<&str>| {
        let mut cmd = Command::new(&cargo);
        // A clean environment: the outer build's CARGO_*/RUSTFLAGS/TARGET variables describe the
        // extension module, not these binaries. Keep what finds the toolchain and the registry.
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            let key = k.to_string_lossy();
            let keep = matches!(
                key.as_ref(),
                "PATH" | "HOME" | "USER" | "TMPDIR" | "CARGO_HOME" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN"
            ) || key.starts_with("CARGO_REGISTRIES_")
                || key.starts_with("CARGO_HTTP_")
                || key.starts_with("CARGO_NET_")
                || key.to_ascii_lowercase().ends_with("_proxy");
            if keep {
                cmd.env(&k, &v);
            }
        }
        if let Some(flags) = rustflags {
            cmd.env("RUSTFLAGS", flags);
        }
        // Its stdout would reach cargo as build-script directives; its progress goes to stderr.
        cmd.stdout(std::process::Stdio::null());
        cmd.current_dir(workspace).arg("build").args(args).arg("--target-dir").arg(target_dir);
        let status = cmd.status().unwrap_or_else(|e| panic!("running cargo for the bundled runtime: {e}"));
        assert!(status.success(), "building the bundled runtime failed: cargo build {args:?}");
    };
    run(&["--release", "-p", "pyro-vmm", "--bin", "pyro-supervisor"], None);
    // The agent runs as /init with no dynamic loader; --target keeps +crt-static off build scripts.
    run(
        &["--profile", "guest", "-p", "pyro-agent", "--bin", "pyro-agent", "--target", AGENT_TRIPLE],
        Some("-C target-feature=+crt-static"),
    );
    (target_dir.join("release/pyro-supervisor"), target_dir.join(AGENT_TRIPLE).join("guest/pyro-agent"))
}
