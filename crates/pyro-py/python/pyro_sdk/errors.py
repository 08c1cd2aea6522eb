"""Exceptions raised by pyro_sdk.

Every failure of the engine raises a subclass of :class:`PyroError`, one per stable error
code (``pyro::Error::code()`` in the Rust SDK, also the ``code`` of the CLI's ``--json``
errors and of MCP tool errors). ``str(exc)`` is the engine's message exactly.

Where the reference SDK raises ``ValueError`` (bad input, unknown ids) the class also derives
from ``ValueError``; the state and runtime failures derive from ``RuntimeError``. So code
written against the reference (``except ValueError``) keeps working.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
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
]


class PyroError(Exception):
    """A failure reported by the pyro engine.

    Attributes:
        code: the stable machine-readable error code (e.g. ``"not_found"``).
        message: the engine's message (also ``str(exc)``).
    """

    code: str = "error"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep .code through pickling (multiprocessing, concurrent.futures)
        return (type(self), (self.message, self.code))


class InvalidInputError(PyroError, ValueError):
    """Bad arguments: out-of-range limits, invalid names, malformed paths (``invalid_input``)."""

    code = "invalid_input"


class NotFoundError(PyroError, ValueError):
    """Unknown VM, workspace, environment, snapshot, shell, service or path (``not_found``)."""

    code = "not_found"


class InvalidStateError(PyroError, RuntimeError):
    """The object exists but is in the wrong state for the operation (``invalid_state``)."""

    code = "invalid_state"


class HostRequirementError(PyroError, RuntimeError):
    """A host tool or capability pyro needs is missing (``host_requirement``)."""

    code = "host_requirement"


class EnvError(PyroError, RuntimeError):
    """Building, pulling or reading an environment failed (``environment``)."""

    code = "environment"


class BootFailedError(PyroError, RuntimeError):
    """The VM did not boot or its guest agent did not become ready (``boot_failed``)."""

    code = "boot_failed"


class GuestError(PyroError, RuntimeError):
    """The guest agent answered with an error or the channel broke (``guest_error``)."""

    code = "guest_error"


class HostIOError(PyroError, RuntimeError):
    """Host-side I/O failed (``io_error``)."""

    code = "io_error"


class CancelledError(PyroError, RuntimeError):
    """The operation was cancelled (``cancelled``)."""

    code = "cancelled"


_BY_CODE: Dict[str, Type[PyroError]] = {
    cls.code: cls
    for cls in (
        InvalidInputError,
        NotFoundError,
        InvalidStateError,
        HostRequirementError,
        EnvError,
        BootFailedError,
        GuestError,
        HostIOError,
        CancelledError,
    )
}
