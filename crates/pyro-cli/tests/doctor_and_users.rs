//! `pyro doctor` truthfulness and running pyro as an ordinary user.

mod common;

use common::{json, stderr, stdout, TestHome};

#[test]
fn doctor_reports_kvm_probe_and_selected_backend_consistently() {
    let home = TestHome::new();
    let o = home.run(&["doctor", "--json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v = json(&o);
    let kvm_exists = std::path::Path::new("/dev/kvm").exists();
    assert_eq!(v["kvm"]["exists"], kvm_exists);
    assert_eq!(v["backend"]["selected"], "qemu", "{v}");
    // With an environment installed the probe has run: usable is a real verdict, not null.
    let usable = v["kvm"]["usable"].as_bool().unwrap_or_else(|| panic!("KVM was not probed: {v}"));
    assert_eq!(v["backend"]["accel"], if usable { "kvm" } else { "tcg" }, "{v}");
    if kvm_exists && !usable {
        // The machines this project runs on: a paravirtual KVM that cannot run a guest.
        assert!(
            v["issues"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i.as_str().unwrap().contains("present but cannot run a guest")),
            "{v}"
        );
    }
    for k in [
        "platform",
        "runtime_ok",
        "issues",
        "kvm",
        "backend",
        "backends",
        "host_tools",
        "state_dir",
        "cache_dir",
        "environments",
        "environment_source",
        "networking",
    ] {
        assert!(v.get(k).is_some(), "doctor payload lacks {k}");
    }
    // Where a missing environment would come from, as this process would really do it.
    let src = &v["environment_source"];
    // SAFETY: geteuid(2) has no arguments and always succeeds.
    let root = unsafe { libc::geteuid() } == 0;
    match std::env::var("PYRO_ENV_REGISTRY").ok().filter(|r| !r.trim().is_empty()) {
        Some(r) => {
            assert_eq!((src["source"].as_str(), src["registry"].as_str()), (Some("registry"), Some(r.trim())), "{v}")
        }
        None => assert_eq!(src["source"], "local-build", "{v}"),
    }
    assert_eq!(src["local_build_possible"], root && v["host_tools"]["debootstrap"].is_string(), "{v}");
    assert_eq!(v["runtime_ok"], true, "{v}");
    // This kernel can filter guest egress; the network tests rely on it.
    assert_eq!(v["networking"]["egress_filter"], true, "{v}");
    assert_eq!(v["state_dir"], home.path().display().to_string());
    let human = home.run(&["doctor"]);
    assert!(stdout(&human).contains("Runtime: PASS"), "{}", stdout(&human));
}

/// pyro needs no privileges for TCG guests: run it as a non-root user with its own state.
#[test]
fn run_works_as_an_unprivileged_user() {
    let home = TestHome::new();
    // SAFETY: geteuid(2) has no arguments and always succeeds.
    let is_root = unsafe { libc::geteuid() } == 0;
    let user = std::env::var("PYRO_TEST_USER").unwrap_or_else(|_| "pyro-test".into());
    if is_root {
        // scripts/test.sh creates this user; the shared cache must be world-readable.
        let status = std::process::Command::new("id").arg(&user).status().unwrap();
        assert!(status.success(), "user {user} missing: run scripts/test.sh (it creates it)");
        // The checkout may sit under a directory the user cannot enter (/root): give it
        // its own copies of pyro's binaries, side by side as the engine expects.
        let bin_dir = home.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        let built = common::pyro_bin().parent().unwrap().to_path_buf();
        for name in ["pyro", "pyro-supervisor", "pyro-guest-agent"] {
            std::fs::copy(built.join(name), bin_dir.join(name)).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        }
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(home.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let pyro_cmd = || {
        let mut cmd;
        if is_root {
            cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid", &user, "--regid", &user, "--init-groups", "--"]);
            cmd.arg(home.path().join("bin/pyro"));
            cmd.env("HOME", home.path());
        } else {
            cmd = std::process::Command::new(common::pyro_bin());
        }
        cmd.env("PYRO_HOME", home.path().join("state"));
        // Share the suite's environment cache (read-only for this user).
        let cache = std::env::var("PYRO_CACHE_DIR")
            .unwrap_or_else(|_| format!("{}/.cache/pyro", std::env::var("HOME").unwrap_or_default()));
        cmd.env("PYRO_CACHE_DIR", cache);
        cmd
    };
    let mut cmd = pyro_cmd();
    let o = cmd.args(["run", "debian:12", "--json", "--", "sh", "-c", "id -u; git --version"]).output().unwrap();
    assert!(o.status.success(), "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["backend"], "qemu");
    // Inside the guest the command is root; outside, nothing ran privileged.
    assert!(v["stdout"].as_str().unwrap().starts_with("0\ngit version"), "{v}");
    if is_root {
        let owner = std::fs::metadata(home.path().join("state")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        assert_ne!(owner.unwrap(), 0, "state dir was created by root");
    }

    // doctor tells the ordinary user the truth: no local build here, the registry is the way.
    if is_root {
        let o = pyro_cmd().env_remove("PYRO_ENV_REGISTRY").args(["doctor", "--json"]).output().unwrap();
        let v = json(&o);
        assert_eq!(v["environment_source"]["local_build_possible"], false, "{v}");
        assert_eq!(v["environment_source"]["source"], "local-build", "{v}");
    }

    // A workspace with a shell and a published service needs no privilege either (QEMU
    // user-mode networking forwards the port; no TAP, no nftables).
    let run = |args: &[&str]| {
        let o = pyro_cmd().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}\nstdout: {}\nstderr: {}", stdout(&o), stderr(&o));
        json(&o)
    };
    let w = run(&["workspace", "create", "debian:12-build", "--network-policy", "egress+published-ports", "--json"]);
    let id = w["workspace_id"].as_str().unwrap().to_string();
    let port = common::free_port();
    let publish = format!("{port}:8000");
    let s = run(&[
        "workspace",
        "service",
        "start",
        &id,
        "web",
        "--ready-tcp",
        "127.0.0.1:8000",
        "--publish",
        &publish,
        "--json",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
    ]);
    assert_eq!(s["state"], "running");
    let page = common::http_get(port, "/").unwrap();
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    let sh = run(&["workspace", "shell", "open", &id, "--json"]);
    let shell = sh["shell_id"].as_str().unwrap().to_string();
    run(&["workspace", "shell", "write", &id, &shell, "--input", "echo user-shell-$((40+2))", "--json"]);
    let mut out = String::new();
    for _ in 0..20 {
        let r = run(&["workspace", "shell", "read", &id, &shell, "--wait-for-idle-ms", "300", "--json"]);
        out = r["output"].as_str().unwrap().to_string();
        if out.contains("user-shell-42") {
            break;
        }
    }
    assert!(out.contains("user-shell-42"), "{out}");
    run(&["workspace", "delete", &id, "--json"]);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "forward outlived the workspace");
}
