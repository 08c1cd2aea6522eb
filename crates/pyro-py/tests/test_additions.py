"""pyro's methods beyond the reference, through the Python SDK: pause/resume (a shell's state
survives, so memory really was kept), exec on a paused workspace resumes it and says so,
fork (the child has the parent's files and shell state), update with ttl/idle pause, doctor.
One workspace plus one fork child.
"""

from __future__ import annotations

import time

import pytest

from pyro_sdk import InvalidInputError, InvalidStateError
from support import cache_dir


def shell_until(pyro, wid, sid, needle, seconds=30.0):
    out, cursor = "", 0
    deadline = time.monotonic() + seconds
    while needle not in out and time.monotonic() < deadline:
        r = pyro.read_shell(wid, sid, cursor=cursor, plain=True, wait_for_idle_ms=300)
        out += r["output"]
        cursor = r["next_cursor"]
    return out


def test_pause_resume_fork(pyro):
    w = pyro.create_workspace(environment="debian:12", idle_pause_seconds=None)
    wid = w["workspace_id"]
    assert w["idle_pause_seconds"] is None
    pyro.write_workspace_file(wid, "marker.txt", text="from the parent\n")
    sid = pyro.open_shell(wid)["shell_id"]
    pyro.write_shell(wid, sid, input="cd /tmp; export X=7")

    p = pyro.pause_workspace(wid)
    assert p["state"] == "paused", p
    assert p["workspace_pause"]["state_bytes"] > 0
    assert pyro.status_workspace(wid)["state"] == "paused"
    r = pyro.resume_workspace(wid)
    assert r["state"] == "started", r
    with pytest.raises(InvalidStateError) as e:
        pyro.resume_workspace(wid)
    assert "not paused" in str(e.value) and e.value.code == "invalid_state"
    pyro.write_shell(wid, sid, input='echo "at=$(pwd) x=$X"')
    assert "at=/tmp x=7" in shell_until(pyro, wid, sid, "at=/tmp x=7")

    pyro.pause_workspace(wid)
    x = pyro.exec_workspace(wid, command="echo resumed-ok")
    assert (x["exit_code"], x["stdout"], x.get("resumed_from_pause")) == (0, "resumed-ok\n", True), x
    x = pyro.exec_workspace(wid, command="true")
    assert "resumed_from_pause" not in x

    f = pyro.fork_workspace(wid, count=1, names=["child"])
    assert f["count"] == 1 and len(f["workspaces"]) == 1, f
    child = f["workspaces"][0]
    cid = child["workspace_id"]
    try:
        assert cid != wid and child["name"] == "child" and child["state"] == "started"
        assert pyro.read_workspace_file(cid, "marker.txt")["content"] == "from the parent\n"
        if f["memory_restored"]:
            pyro.write_shell(cid, sid, input='echo "child at=$(pwd) x=$X"')
            assert "child at=/tmp x=7" in shell_until(pyro, cid, sid, "child at=/tmp x=7")
        # Separate futures: a file written in the child is not in the parent.
        pyro.write_workspace_file(cid, "only-child.txt", text="c")
        names = [e["path"] for e in pyro.list_workspace_files(wid)["entries"]]
        assert "/workspace/only-child.txt" not in names
        assert pyro.status_workspace(wid)["state"] == "started"
    finally:
        assert pyro.delete_workspace(cid)["deleted"] is True

    u = pyro.update_workspace(wid, ttl_seconds=1200, idle_pause_seconds=600)
    assert (u["ttl_seconds"], u["idle_pause_seconds"]) == (1200, 600), u
    with pytest.raises(InvalidInputError):
        pyro.update_workspace(wid, ttl_seconds=5)
    assert pyro.delete_workspace(wid)["deleted"] is True


def test_doctor_reports_the_dirs_this_pyro_uses(pyro, home):
    d = pyro.doctor()
    # base_dir / cache_dir of the constructor reach the engine.
    assert d["state_dir"] == home.path
    if cache_dir():
        assert d["cache_dir"] == cache_dir()
    assert d["runtime_ok"] is True, d["issues"]
    installed = {e["name"]: e["installed"] for e in d["environments"]}
    assert installed["debian:12"] is True, installed
