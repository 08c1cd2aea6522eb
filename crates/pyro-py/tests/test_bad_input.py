"""Bad input: wrong types raise TypeError, bad values ValueError/PyroError with the engine's
exact message, unknown ids NotFoundError (also a ValueError); every error carries ``.code``.
Nothing hangs and no Rust panic reaches Python: each call runs in a watchdog thread and its
outcome is checked to be an ordinary exception, never pyo3's ``PanicException`` (a
``BaseException`` that ``except Exception`` would not catch).

No case here boots a VM: every call is refused before anything starts.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

import pyro_sdk
from pyro_sdk import (
    BootFailedError,
    CancelledError,
    EnvError,
    GuestError,
    HostIOError,
    HostRequirementError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    Pyro,
    PyroError,
)
from support import REPO_ROOT

GHOST = "ffffffffffff"  # well-formed, never created
GHOST_SHELL = "0123456789ab"
CALL_TIMEOUT = 60


def outcome(fn, *args, _timeout: float = CALL_TIMEOUT, **kwargs) -> BaseException:
    """The exception ``fn(*args, **kwargs)`` raises, within ``_timeout`` s (hang = failure)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - classified below, PanicException included
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(_timeout)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} hung for {_timeout}s"
    assert "error" in box, f"{getattr(fn, '__name__', fn)}{args}{kwargs} returned {box.get('result')!r}"
    e = box["error"]
    assert type(e).__name__ != "PanicException", f"a Rust panic reached Python: {e!r}"
    assert isinstance(e, Exception), f"not an Exception: {type(e).__mro__}"
    return e


def expect(exc_type, fn, *args, **kwargs) -> BaseException:
    e = outcome(fn, *args, **kwargs)
    assert isinstance(e, exc_type), f"{type(e).__name__}: {e} (wanted {exc_type.__name__})"
    if isinstance(e, PyroError):
        assert isinstance(e.code, str) and e.code
        assert e.message == str(e)
    return e


def test_the_watchdog_flags_panics_and_hangs():
    # What a Rust panic looks like in Python: pyo3's PanicException derives from BaseException,
    # so ``except Exception`` misses it; outcome() must turn it into a failure.
    class PanicException(BaseException):
        pass

    def panics():
        raise PanicException("called `Option::unwrap()` on a `None` value")

    with pytest.raises(AssertionError, match="a Rust panic reached Python"):
        outcome(panics)
    with pytest.raises(AssertionError, match="hung"):
        outcome(time.sleep, 2, _timeout=0.2)
    with pytest.raises(AssertionError, match="returned"):
        outcome(len, "abc")


def test_error_classes():
    table = {
        InvalidInputError: ("invalid_input", ValueError),
        NotFoundError: ("not_found", ValueError),
        InvalidStateError: ("invalid_state", RuntimeError),
        HostRequirementError: ("host_requirement", RuntimeError),
        EnvError: ("environment", RuntimeError),
        BootFailedError: ("boot_failed", RuntimeError),
        GuestError: ("guest_error", RuntimeError),
        HostIOError: ("io_error", RuntimeError),
        CancelledError: ("cancelled", RuntimeError),
    }
    for cls, (code, base) in table.items():
        assert issubclass(cls, PyroError) and issubclass(cls, base), cls
        e = cls("some message")
        assert (e.code, e.message, str(e)) == (code, "some message", "some message")
    assert issubclass(PyroError, Exception)
    # One class per code the engine has (pyro::Error::code()).
    engine = (REPO_ROOT / "crates" / "pyro" / "src" / "error.rs").read_text()
    body = engine[engine.index("pub fn code(&self)") :]
    body = body[: body.index("\n    }\n")]
    assert set(re.findall(r'=> "([a-z_]+)"', body)) == {code for code, _ in table.values()}
    # The package exports exactly these names.
    for name in ("Pyro", "McpServer", "PyroError", "__version__"):
        assert hasattr(pyro_sdk, name), name
    assert isinstance(pyro_sdk.__version__, str) and pyro_sdk.__version__


def test_wrong_types_are_type_errors(pyro, tmp_path):
    cases = [
        (pyro.create_workspace, (), {"environment": "debian:12", "vcpu_count": "x"}),
        (pyro.create_workspace, (), {"environment": 12}),
        (pyro.create_workspace, (), {"environment": "debian:12", "secrets": "notalist"}),
        (pyro.create_workspace, (), {"environment": "debian:12", "labels": ["a"]}),
        (pyro.create_workspace, (), {}),  # environment is required
        (pyro.create_workspace, ("debian:12",), {}),  # keyword-only
        (pyro.create_workspace, (), {"environment": "debian:12", "bogus_option": 1}),
        (pyro.create_vm, (), {"environment": "debian:12", "network": "yes"}),
        (pyro.run_in_vm, (), {"environment": "debian:12", "command": ["echo", "hi"]}),
        (pyro.exec_workspace, (GHOST,), {"command": 5}),
        (pyro.exec_workspace, (GHOST, "ls"), {}),  # command is keyword-only
        (pyro.exec_workspace, (GHOST,), {"command": "true", "secret_env": "TOKEN"}),
        (pyro.exec_workspace, (GHOST,), {"command": "true", "timeout_seconds": "30"}),
        (pyro.read_workspace_file, (GHOST, "a.txt", 10), {}),  # max_bytes is keyword-only
        (pyro.status_workspace, (None,), {}),
        (pyro.status_workspace, (), {}),
        (pyro.write_workspace_file, (GHOST, "a.txt"), {"text": b"bytes"}),
        (pyro.push_workspace_sync, (GHOST, 42), {}),
        (pyro.start_service, (GHOST, "web"), {"command": "true", "readiness": "http://x"}),
        (pyro.read_shell, (GHOST, GHOST_SHELL), {"plain": "no"}),
        (pyro.list_environments, ("extra",), {}),
    ]
    for fn, args, kwargs in cases:
        expect(TypeError, fn, *args, **kwargs)


def test_bad_values_carry_the_engine_message(pyro):
    e = expect(InvalidInputError, pyro.create_workspace, environment="debian:12", vcpu_count=0)
    assert str(e) == "vcpu_count must be between 1 and 8 (got 0)"
    assert e.code == "invalid_input" and isinstance(e, ValueError)
    e = expect(InvalidInputError, pyro.create_vm, environment="debian:12", mem_mib=10)
    assert str(e) == "mem_mib must be between 256 and 32768 (got 10)"
    e = expect(InvalidInputError, pyro.run_in_vm, environment="debian:12", command="true", vcpu_count=9)
    assert str(e) == "vcpu_count must be between 1 and 8 (got 9)"
    e = expect(InvalidInputError, pyro.create_workspace, environment="debian:12", network_policy="bogus")
    assert str(e) == "network_policy must be one of: off, egress, egress+published-ports"
    e = expect(ValueError, pyro.create_workspace, environment="nope:1")
    assert str(e) == "unknown environment 'nope:1'; expected one of: debian:12, debian:12-base, debian:12-build"
    e = expect(ValueError, pyro.inspect_environment, "nope:1")
    assert "unknown environment 'nope:1'" in str(e)
    e = expect(InvalidInputError, pyro.create_snapshot, GHOST, "bad name")
    assert str(e) == (
        "snapshot name 'bad name' is invalid: use 1-64 characters: letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
    e = expect(InvalidInputError, pyro.create_snapshot, GHOST, "baseline")
    assert str(e) == "snapshot name 'baseline' is reserved"
    e = expect(ValueError, pyro.create_workspace, environment="debian:12", secrets=[{"name": "A"}])
    assert "A" in str(e)
    e = expect(ValueError, pyro.create_workspace, environment="debian:12", secrets=[{"name": "9BAD", "value": "x"}])
    assert "9BAD" in str(e)
    e = expect(
        ValueError,
        pyro.create_workspace,
        environment="debian:12",
        secrets=[{"name": "F", "file_path": "/no/such/secret/file"}],
    )
    assert "does not exist" in str(e)
    e = expect(ValueError, pyro.create_workspace, environment="debian:12", seed_path="/no/such/seed/dir")
    assert str(e) == "seed_path /no/such/seed/dir does not exist"
    # Nothing was created by any refused call.
    assert pyro.list_workspaces()["count"] == 0


def test_out_of_range_integers_are_value_errors(pyro):
    # The reference validates numbers itself and raises ValueError; a negative or huge int must
    # not surface as OverflowError (not a ValueError) from the argument conversion.
    for kwargs in ({"vcpu_count": -1}, {"mem_mib": 2**40}, {"ttl_seconds": -5}):
        e = outcome(pyro.create_workspace, environment="debian:12", **kwargs)
        assert isinstance(e, ValueError), f"{kwargs}: {type(e).__name__}: {e}"
    e = outcome(pyro.exec_workspace, GHOST, command="true", timeout_seconds=-1)
    assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"


def test_create_server_unknown_profile(pyro):
    e = expect(ValueError, pyro.create_server, profile="x")
    assert str(e) == "unknown MCP profile 'x'; expected one of: vm-run, workspace-core, workspace-full"
    server = pyro.create_server(profile="workspace-core")
    assert isinstance(server, pyro_sdk.McpServer)
    assert isinstance(pyro.create_server(), pyro_sdk.McpServer)


def test_constructor_arguments(home):
    expect(TypeError, Pyro, object())
    e = expect(ValueError, Pyro, backend_name="firecracker")
    assert "qemu" in str(e)
    expect(ValueError, Pyro, max_active_vms=0)
    expect(TypeError, Pyro, base_dir=5)
    # The accepted forms construct.
    Pyro(None, backend_name="qemu", base_dir=home.path, max_active_vms=4)


def test_unknown_ids_are_not_found(pyro, tmp_path):
    ws_msg = f"workspace '{GHOST}' does not exist"
    src = tmp_path / "src"
    src.mkdir()
    patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+b\n"
    calls = [
        (pyro.status_workspace, (GHOST,), {}),
        (pyro.logs_workspace, (GHOST,), {}),
        (pyro.delete_workspace, (GHOST,), {}),
        (pyro.stop_workspace, (GHOST,), {}),
        (pyro.start_workspace, (GHOST,), {}),
        (pyro.diff_workspace, (GHOST,), {}),
        (pyro.update_workspace, (GHOST,), {"name": "x"}),
        (pyro.exec_workspace, (GHOST,), {"command": "true"}),
        (pyro.push_workspace_sync, (GHOST, str(src)), {}),
        (pyro.export_workspace, (GHOST, "a.txt"), {"output_path": str(tmp_path / "out")}),
        (pyro.list_workspace_files, (GHOST,), {}),
        (pyro.read_workspace_file, (GHOST, "a.txt"), {}),
        (pyro.write_workspace_file, (GHOST, "a.txt"), {"text": "x"}),
        (pyro.apply_workspace_patch, (GHOST,), {"patch": patch}),
        (pyro.export_workspace_disk, (GHOST,), {"output_path": str(tmp_path / "disk.ext4")}),
        (pyro.list_workspace_disk, (GHOST,), {}),
        (pyro.read_workspace_disk, (GHOST, "a.txt"), {}),
        (pyro.create_snapshot, (GHOST, "s1"), {}),
        (pyro.delete_snapshot, (GHOST, "s1"), {}),
        (pyro.list_snapshots, (GHOST,), {}),
        (pyro.reset_workspace, (GHOST,), {}),
        (pyro.open_shell, (GHOST,), {}),
        (pyro.read_shell, (GHOST, GHOST_SHELL), {}),
        (pyro.write_shell, (GHOST, GHOST_SHELL), {"input": "x"}),
        (pyro.signal_shell, (GHOST, GHOST_SHELL), {}),
        (pyro.close_shell, (GHOST, GHOST_SHELL), {}),
        (pyro.start_service, (GHOST, "web"), {"command": "true"}),
        (pyro.list_services, (GHOST,), {}),
        (pyro.status_service, (GHOST, "web"), {}),
        (pyro.stop_service, (GHOST, "web"), {}),
        (pyro.logs_service, (GHOST, "web"), {}),
        (pyro.pause_workspace, (GHOST,), {}),
        (pyro.resume_workspace, (GHOST,), {}),
        (pyro.fork_workspace, (GHOST,), {}),
    ]
    wrong = []
    for fn, args, kwargs in calls:
        e = outcome(fn, *args, **kwargs)
        if not (isinstance(e, NotFoundError) and isinstance(e, ValueError) and e.code == "not_found" and str(e) == ws_msg):
            wrong.append(f"{fn.__name__}: {type(e).__name__}({str(e)!r})")
    assert not wrong, "\n".join(wrong)
    assert not Path(tmp_path / "out").exists() and not Path(tmp_path / "disk.ext4").exists()

    vm_msg = f"vm '{GHOST}' does not exist"
    for fn, kwargs in [
        (pyro.status_vm, {}),
        (pyro.start_vm, {}),
        (pyro.stop_vm, {}),
        (pyro.delete_vm, {}),
        (pyro.network_info_vm, {}),
        (pyro.exec_vm, {"command": "true"}),
    ]:
        e = expect(NotFoundError, fn, GHOST, **kwargs)
        assert str(e) == vm_msg, f"{fn.__name__}: {e}"
