"""pyro's Python SDK: disposable, persistent Linux microVM workspaces for coding agents.

The engine runs in-process (a Rust extension module); every call releases the GIL while it
waits on a VM, and Ctrl-C (KeyboardInterrupt) cancels the call as the Rust SDK does.

    from pyro_sdk import Pyro

    pyro = Pyro()
    ws = pyro.create_workspace(environment="debian:12")
    print(pyro.exec_workspace(ws["workspace_id"], command="uname -a")["stdout"])
    pyro.delete_workspace(ws["workspace_id"])
"""

from ._native import McpServer, Pyro, __version__
from .errors import (
    BootFailedError,
    CancelledError,
    EnvError,
    GuestError,
    HostIOError,
    HostRequirementError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    PyroError,
)

__all__ = [
    "Pyro",
    "McpServer",
    "PyroError",
    "InvalidInputError",
    "NotFoundError",
    "InvalidStateError",
    "HostRequirementError",
    "EnvError",
    "BootFailedError",
    "GuestError",
    "HostIOError",
    "CancelledError",
    "__version__",
]
