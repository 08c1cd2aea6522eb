"""The README's Python example runs as written, and is crates/pyro-py/examples/quickstart.py.

The example is the first ```python block of README.md whose text has the line
``# pyro-sdk example``. It is run in a fresh interpreter with its own state dir; it must exit
0, print what the guest said, and leave no workspace behind.
"""

from __future__ import annotations

import re

import pytest

from pyro_sdk import Pyro
from support import CRATE_DIR, REPO_ROOT, Home, cache_dir, run_python, subprocess_env

MARKER = "# pyro-sdk example"


def readme_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    for block in re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M):
        if MARKER in block.splitlines():
            return block
    pytest.fail(f"README.md has no ```python block with the line {MARKER!r}")


def test_readme_example_is_the_quickstart_file():
    assert readme_example() == (CRATE_DIR / "examples" / "quickstart.py").read_text()


def test_readme_example_runs():
    code = readme_example()
    h = Home("readme")
    try:
        r = run_python(code, subprocess_env(h.path), timeout=300)
        assert r.returncode == 0, (r.stdout, r.stderr)
        lines = r.stdout.splitlines()
        assert re.fullmatch(r"run_in_vm: 0 git version 2\.\d+\.\d+", lines[0]), lines
        assert lines[1:] == ["exec: 0 Linux", "file: 21 hello from the guest", "delete: True"], lines
        assert Pyro(base_dir=h.path, cache_dir=cache_dir()).list_workspaces()["count"] == 0
    finally:
        problems = h.close()
    assert not problems, problems
