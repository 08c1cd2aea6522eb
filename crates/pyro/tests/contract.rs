//! Contract pins for the SDK: method names (a rename fails to compile) and payload keys
//! (a renamed or dropped key fails the test). Keys follow REFERENCE.md §6, plus pyro's
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
        execution_mode: String::new(),
        backend: String::new(),
        truncated: false,
        stdout_truncated: false,
        stderr_truncated: false,
        cleanup: pyro::Cleanup { vm_id: String::new(), deleted: true, reason: String::new() },
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
        "workspace_seed": {"mode": "empty", "seed_path": null, "destination": "/workspace", "entry_count": 0, "bytes_written": 0},
        "secrets": [], "command_count": 0, "last_command": null, "reset_count": 0, "last_reset_at": null,
        "service_count": 0, "running_service_count": 0, "last_error": null, "metadata": {}
    });
    // Deserialising the reference-shaped payload and serialising it back keeps every key.
    let info: pyro::workspace::WorkspaceInfo = serde_json::from_value(json.clone()).unwrap();
    let expected: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys(&info), expected);
    assert_eq!(keys(&info.workspace_seed), set(&["mode", "seed_path", "destination", "entry_count", "bytes_written"]));
}
