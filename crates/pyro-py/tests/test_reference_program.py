"""reference_program.py (every method of the reference Python SDK, called as the reference documents
them, with only the import line changed) runs to completion against real guests."""

from __future__ import annotations

import subprocess
import sys

from support import TESTS_DIR, Home, subprocess_env


def test_reference_program_runs():
    h = Home("ref")
    try:
        scratch = f"{h.path}/scratch"
        r = subprocess.run(
            [sys.executable, str(TESTS_DIR / "reference_program.py"), scratch],
            env=subprocess_env(h.path),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        sys.stdout.write(r.stdout)
        assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
        assert "all 47 reference methods called" in r.stdout
        assert r.stdout.count("\nok ") + r.stdout.startswith("ok ") >= 47
    finally:
        problems = h.close()
    assert not problems, problems
