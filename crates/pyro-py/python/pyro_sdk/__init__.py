"""pyro's Python SDK: disposable, persistent Linux microVM workspaces for coding agents.

The engine runs in-process (a Rust extension module); every call releases the GIL while it
waits on a VM.
"""

from ._native import __version__

__all__ = ["__version__"]
