"""Shared fixtures for the pyro_sdk tests: real guests (QEMU, TCG on the dev hosts), no mocks.

* Every test module gets its own state dir (``PYRO_HOME``, a fresh dir under /tmp) and a
  ``pyro_sdk.Pyro`` bound to it; the environment cache is shared (``PYRO_CACHE_DIR`` from the
  environment, e.g. /var/cache/pyro where ``debian:12`` and ``debian:12-build`` are installed).
* On teardown (also after a failure) every workspace of that state dir is deleted, then no VM
  process of it may be left: survivors are killed and reported as an error.
* A development build (``maturin develop`` without ``bundle-runtime``) carries no runtime
  binaries; when ``PYRO_SUPERVISOR_BIN`` / ``PYRO_AGENT_BIN`` are unset the repository's
  ``target/debug`` builds are used.
"""

from __future__ import annotations

import shutil

import pytest

from support import Home, SESSION_HOME, kill_processes_mentioning, processes_mentioning


@pytest.fixture(scope="module")
def home():
    """The module's state dir (``home.path``) and its Pyro (``home.pyro``)."""
    h = Home("m")
    yield h
    problems = h.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def pyro(home):
    """A ``pyro_sdk.Pyro`` on the module's private state dir and the shared cache."""
    return home.pyro


@pytest.fixture
def fresh_home():
    """A private state dir for one test, cleaned up after it (also on failure)."""
    h = Home("f")
    yield h
    problems = h.close()
    assert not problems, problems


def pytest_sessionfinish(session, exitstatus):
    left = processes_mentioning(SESSION_HOME)
    if left:
        kill_processes_mentioning(SESSION_HOME)
    shutil.rmtree(SESSION_HOME, ignore_errors=True)
