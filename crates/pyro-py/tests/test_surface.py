"""The Python SDK's public surface, pinned: a renamed or removed method, parameter, default or
keyword-only marker fails here (the Python counterpart of crates/pyro/tests/contract.rs).
Additions are made here on purpose, together with the CHANGELOG entry that announces them."""

import inspect

import pyro_sdk
from pyro_sdk import McpServer, Pyro

# Every public method of `Pyro`: the reference's 47 names, then pyro's additions.
PYRO_METHODS = {
    'apply_workspace_patch': '(self, /, workspace_id, *, patch)',
    'close_shell': '(self, /, workspace_id, shell_id)',
    'create_server': "(self, /, *, profile='workspace-full')",
    'create_snapshot': '(self, /, workspace_id, snapshot_name)',
    'create_vm': '(self, /, *, environment, vcpu_count=1, mem_mib=1024, ttl_seconds=600, network=False, allow_host_compat=False)',
    'create_workspace': "(self, /, *, environment, vcpu_count=1, mem_mib=1024, ttl_seconds=600, network_policy='off', allow_host_compat=False, seed_path=None, secrets=None, name=None, labels=None, idle_pause_seconds=None)",
    'delete_snapshot': '(self, /, workspace_id, snapshot_name)',
    'delete_vm': '(self, /, vm_id)',
    'delete_workspace': '(self, /, workspace_id)',
    'diff_workspace': '(self, /, workspace_id)',
    'doctor': '(self, /)',
    'exec_vm': '(self, /, vm_id, *, command, timeout_seconds=30)',
    'exec_workspace': '(self, /, workspace_id, *, command, timeout_seconds=30, secret_env=None)',
    'export_workspace': '(self, /, workspace_id, path, *, output_path)',
    'export_workspace_disk': '(self, /, workspace_id, *, output_path)',
    'fork_workspace': '(self, /, workspace_id, *, count=1, names=None)',
    'inspect_environment': '(self, /, environment)',
    'kill_workspace_command': '(self, /, workspace_id, command_id)',
    'list_environments': '(self, /)',
    'list_services': '(self, /, workspace_id)',
    'list_snapshots': '(self, /, workspace_id)',
    'list_workspace_disk': "(self, /, workspace_id, *, path='/workspace', recursive=False)",
    'list_workspace_files': "(self, /, workspace_id, *, path='/workspace', recursive=False)",
    'list_workspaces': '(self, /)',
    'logs_service': '(self, /, workspace_id, service_name, *, tail_lines=200, all=False)',
    'logs_workspace': '(self, /, workspace_id)',
    'network_info_vm': '(self, /, vm_id)',
    'open_shell': "(self, /, workspace_id, *, cwd='/workspace', cols=120, rows=30, secret_env=None)",
    'pause_workspace': '(self, /, workspace_id)',
    'prepare_environment': '(self, /, environment, *, network=False, force=False)',
    'prune_environments': '(self, /, *, names=None)',
    'pull_environment': '(self, /, environment, *, reference=None)',
    'push_environment': '(self, /, environment, reference=None)',
    'push_workspace_sync': "(self, /, workspace_id, source_path, *, dest='/workspace')",
    'read_shell': '(self, /, workspace_id, shell_id, *, cursor=0, max_chars=65536, plain=False, wait_for_idle_ms=None)',
    'read_workspace_command': '(self, /, workspace_id, command_id, *, cursor=0, max_bytes=65536)',
    'read_workspace_disk': '(self, /, workspace_id, path, *, max_bytes=65536)',
    'read_workspace_file': '(self, /, workspace_id, path, *, max_bytes=65536)',
    'reap_expired': '(self, /)',
    'reset_workspace': "(self, /, workspace_id, *, snapshot='baseline')",
    'resume_workspace': '(self, /, workspace_id)',
    'run_in_vm': '(self, /, *, environment, command, vcpu_count=1, mem_mib=1024, timeout_seconds=30, ttl_seconds=600, network=False, allow_host_compat=False)',
    'signal_shell': "(self, /, workspace_id, shell_id, *, signal_name='INT')",
    'start_service': "(self, /, workspace_id, service_name, *, command, cwd='/workspace', readiness=None, ready_timeout_seconds=30, ready_interval_ms=500, secret_env=None, published_ports=None)",
    'start_vm': '(self, /, vm_id)',
    'start_workspace': '(self, /, workspace_id)',
    'start_workspace_command': '(self, /, workspace_id, *, command, timeout_seconds=3600, secret_env=None)',
    'status_service': '(self, /, workspace_id, service_name)',
    'status_vm': '(self, /, vm_id)',
    'status_workspace': '(self, /, workspace_id)',
    'status_workspace_command': '(self, /, workspace_id, command_id)',
    'stop_service': '(self, /, workspace_id, service_name)',
    'stop_vm': '(self, /, vm_id)',
    'stop_workspace': '(self, /, workspace_id)',
    'summary_workspace': '(self, /, workspace_id)',
    'update_workspace': '(self, /, workspace_id, *, name=None, clear_name=False, labels=None, clear_labels=None, ttl_seconds=None, idle_pause_seconds=None)',
    'wait_workspace_command': '(self, /, workspace_id, command_id, *, timeout_seconds=30)',
    'write_shell': '(self, /, workspace_id, shell_id, *, input, append_newline=True)',
    'write_workspace_file': '(self, /, workspace_id, path, *, text)',
}

PYRO_CONSTRUCTOR = (
    "(manager=None, *, backend_name=None, base_dir=None, cache_dir=None, max_active_vms=4, progress=None)"
)

# pyro's additions beyond the reference Python SDK's `Pyro` (which has the other 47).
PYRO_ADDITIONS = {
    "pause_workspace",
    "resume_workspace",
    "fork_workspace",
    "doctor",
    "start_workspace_command",
    "status_workspace_command",
    "read_workspace_command",
    "wait_workspace_command",
    "kill_workspace_command",
    "summary_workspace",
    "prepare_environment",
    "push_environment",
}

# Exceptions: one per stable engine error code; the reference's programs catch ValueError and
# RuntimeError, so each is also one of those.
ERRORS = {
    "invalid_input": ("InvalidInputError", ValueError),
    "not_found": ("NotFoundError", ValueError),
    "invalid_state": ("InvalidStateError", RuntimeError),
    "host_requirement": ("HostRequirementError", RuntimeError),
    "environment": ("EnvError", RuntimeError),
    "boot_failed": ("BootFailedError", RuntimeError),
    "guest_error": ("GuestError", RuntimeError),
    "io_error": ("HostIOError", RuntimeError),
    "cancelled": ("CancelledError", RuntimeError),
}

EXPORTS = sorted(
    ["Pyro", "McpServer", "PyroError", "__version__"] + [name for name, _ in ERRORS.values()]
)


def public(cls):
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def test_every_method_is_pinned_with_its_signature():
    assert public(Pyro) == sorted(PYRO_METHODS), "a method was added, renamed or removed"
    for name, signature in PYRO_METHODS.items():
        assert str(inspect.signature(getattr(Pyro, name))) == signature, name


def test_reference_names_count_47():
    assert len(set(PYRO_METHODS) - PYRO_ADDITIONS) == 47


def test_constructor_signature():
    assert str(inspect.signature(Pyro)) == PYRO_CONSTRUCTOR


def test_every_method_has_a_docstring():
    for name in PYRO_METHODS:
        doc = getattr(Pyro, name).__doc__ or ""
        assert len(doc.strip()) > 20, f"{name} has no real docstring"


def test_mcp_server_surface():
    assert public(McpServer) == ["profile", "run", "tool_names"]
    assert str(inspect.signature(McpServer.run)) == "(self, /, transport='stdio')"


def test_package_exports():
    assert sorted(pyro_sdk.__all__) == EXPORTS
    for name in EXPORTS:
        assert hasattr(pyro_sdk, name), name


def test_error_classes_by_code():
    for code, (name, builtin) in ERRORS.items():
        cls = getattr(pyro_sdk, name)
        assert issubclass(cls, pyro_sdk.PyroError) and issubclass(cls, builtin), name
        assert cls.code == code, name

