"""Progress of long calls: `Pyro(progress=...)` with a callable, True (lines on sys.stderr)
and a wrong type; a failing callback never fails the call."""

from __future__ import annotations

import sys

import pytest

from pyro_sdk import Pyro
from support import cache_dir, delete_all_workspaces, new_home


def test_a_callable_gets_each_event_of_a_create(fresh_home):
    events = []
    pyro = Pyro(base_dir=fresh_home.path, cache_dir=cache_dir(), progress=events.append)
    ws = pyro.create_workspace(environment="debian:12")
    pyro.delete_workspace(ws["workspace_id"])
    stages = [e["stage"] for e in events]
    assert "boot" in stages and stages[-1] == "ready", events
    assert all(set(e) == {"stage", "message", "fraction"} for e in events), events
    fractions = [e["fraction"] for e in events if e["fraction"] is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, events


def test_true_prints_the_cli_lines_on_sys_stderr_and_a_failing_callback_is_unraisable(fresh_home, capsys):
    pyro = Pyro(base_dir=fresh_home.path, cache_dir=cache_dir(), progress=True)
    ws = pyro.create_workspace(environment="debian:12")
    err = capsys.readouterr().err
    assert "[pyro] boot: booting the workspace VM" in err, err
    assert "[pyro] ready: workspace started (100%)" in err, err

    # A callback that raises: the stop goes on, Python's unraisable hook sees the error.
    seen = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        def broken(_event):
            raise RuntimeError("callback broke")

        failing = Pyro(base_dir=fresh_home.path, cache_dir=cache_dir(), progress=broken)
        stopped = failing.stop_workspace(ws["workspace_id"])
    finally:
        sys.unraisablehook = old_hook
    assert stopped["state"] == "stopped"
    assert seen and "callback broke" in str(seen[0].exc_value)
    delete_all_workspaces(pyro)


def test_progress_of_a_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="progress must be None, True, False or a callable"):
        Pyro(base_dir=new_home("p"), cache_dir=cache_dir(), progress="yes")
