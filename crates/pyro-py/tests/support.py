"""Helpers of the pyro_sdk tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
CRATE_DIR = TESTS_DIR.parent
REPO_ROOT = CRATE_DIR.parent.parent


def _default_runtime_binaries() -> None:
    from pyro_sdk import _native

    if _native._runtime_dir() is not None:
        return  # the wheel's own binaries
    for var, name in (("PYRO_SUPERVISOR_BIN", "pyro-supervisor"), ("PYRO_AGENT_BIN", "pyro-guest-agent")):
        if not os.environ.get(var):
            candidate = REPO_ROOT / "target" / "debug" / name
            if candidate.is_file():
                os.environ[var] = str(candidate)


def _session_home() -> str:
    # A Pyro() built without base_dir (the subprocess programs) must never touch the user's
    # real state: point PYRO_HOME at a throwaway dir for the whole session.
    home = tempfile.mkdtemp(prefix="pyro-py-session-", dir="/tmp")
    os.environ["PYRO_HOME"] = home
    return home


_default_runtime_binaries()
SESSION_HOME = _session_home()


def cache_dir() -> str | None:
    """The shared environment cache (None: the engine's default)."""
    return os.environ.get("PYRO_CACHE_DIR") or None


def processes_mentioning(needle: str) -> list[str]:
    """Live processes (not this one) whose command line contains ``needle``."""
    found = []
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(f"{name}: {cmdline}")
    return found


def wait_no_processes(needle: str, seconds: float = 10.0) -> list[str]:
    """Wait until no process mentions ``needle``; the survivors if some remain."""
    deadline = time.monotonic() + seconds
    while True:
        left = processes_mentioning(needle)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def kill_processes_mentioning(needle: str) -> None:
    for p in processes_mentioning(needle):
        try:
            os.kill(int(p.split(":", 1)[0]), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(home: str) -> dict[str, str]:
    """The environment for a Python subprocess using the state dir ``home``."""
    env = dict(os.environ)
    env["PYRO_HOME"] = home
    if cache_dir():
        env["PYRO_CACHE_DIR"] = cache_dir()
    env["PYTHONUNBUFFERED"] = "1"
    return env


def new_home(tag: str) -> str:
    # Short paths under /tmp: the VM's unix sockets live below it (108-byte limit).
    return tempfile.mkdtemp(prefix=f"pyro-py-{tag}-", dir="/tmp")


def delete_all_workspaces(pyro) -> list[str]:
    """Delete every workspace of ``pyro``'s state dir; the errors met (as text)."""
    errors = []
    try:
        listing = pyro.list_workspaces()
    except Exception as e:  # noqa: BLE001 - cleanup must go on
        return [f"list_workspaces: {e!r}"]
    for w in listing["workspaces"]:
        try:
            pyro.delete_workspace(w["workspace_id"])
        except Exception as e:  # noqa: BLE001
            errors.append(f"delete_workspace({w['workspace_id']}): {e!r}")
    return errors


class ShapeCheckedPyro:
    """A ``Pyro`` whose every method result is checked against the method's payload schema
    (``shape_check``), so each call any test makes also proves the stubs' ``TypedDict``s
    describe what really comes back."""

    def __init__(self, pyro):
        self._pyro = pyro

    def __getattr__(self, name):
        attr = getattr(self._pyro, name)
        if name.startswith("_") or not callable(attr) or name == "create_server":
            return attr

        def checked(*args, **kwargs):
            from shape_check import check_shape

            result = attr(*args, **kwargs)
            check_shape(name, result)
            return result

        return checked


class Home:
    """A private state dir and a Pyro bound to it (results shape-checked); ``close()`` cleans
    up everything in it."""

    def __init__(self, tag: str):
        from pyro_sdk import Pyro

        self.path = new_home(tag)
        self.pyro = ShapeCheckedPyro(Pyro(base_dir=self.path, cache_dir=cache_dir()))

    def close(self) -> list[str]:
        problems = delete_all_workspaces(self.pyro)
        left = wait_no_processes(self.path)
        if left:
            kill_processes_mentioning(self.path)
            problems.append(f"processes left behind: {left}")
        shutil.rmtree(self.path, ignore_errors=True)
        return problems


def run_python(code: str, env: dict[str, str], timeout: float = 300, argv: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this one's) with ``argv``, capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", code, *(argv or [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
