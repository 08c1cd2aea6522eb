"""pyro's agent-ergonomics calls from Python: background commands, the workspace summary and
prepare_environment, on a real guest (results shape-checked like every call)."""

from __future__ import annotations

import time

import pytest

from pyro_sdk import InvalidInputError, NotFoundError


def test_background_commands_and_the_summary(pyro):
    ws = pyro.create_workspace(environment="debian:12")
    wid = ws["workspace_id"]
    started = pyro.start_workspace_command(wid, command="for i in 1 2 3; do echo line$i; sleep 1; done; echo oops >&2; exit 3")
    cid = started["command_id"]
    assert started["state"] == "running" and started["timeout_seconds"] == 3600

    # Read by cursor while it runs, then wait for its end.
    out, cursor, deadline = "", 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = pyro.read_workspace_command(wid, cid, cursor=cursor)
        assert chunk["cursor"] == cursor
        out += chunk["stdout"]
        cursor = chunk["next_cursor"]
        if chunk["state"] != "running" and not chunk["has_more"]:
            break
        time.sleep(0.5)
    assert out == "line1\nline2\nline3\n"
    ended = pyro.wait_workspace_command(wid, cid, timeout_seconds=30)
    assert ended["state"] == "exited" and ended["exit_code"] == 3 and ended["sequence"] is not None

    # A long one: a short wait does not kill it; kill does.
    sleeper = pyro.start_workspace_command(wid, command="sleep 300")["command_id"]
    assert pyro.wait_workspace_command(wid, sleeper, timeout_seconds=1)["state"] == "running"
    killed = pyro.kill_workspace_command(wid, sleeper)
    assert killed["state"] == "killed"
    ps = pyro.exec_workspace(wid, command="ps -eo args")
    assert "sleep 300" not in ps["stdout"]

    pyro.write_workspace_file(wid, "notes.txt", text="reviewed\n")
    summary = pyro.summary_workspace(wid)
    assert summary["workspace_id"] == wid and summary["since_kind"] == "create"
    statuses = {(b["command_id"], b["status"]) for b in summary["background_commands"]}
    assert {(cid, "started"), (cid, "exited"), (sleeper, "killed")} <= statuses, statuses
    assert [f["path"] for f in summary["file_writes"]] == ["/workspace/notes.txt"]
    exits = [e["exit_code"] for e in summary["commands"]["entries"]]
    assert 3 in exits and summary["commands"]["failed"] >= 1
    diff = pyro.diff_workspace(wid)
    assert summary["diff"]["summary"] == diff["summary"]

    with pytest.raises(NotFoundError):
        pyro.status_workspace_command(wid, "0123456789ab")
    with pytest.raises(InvalidInputError, match="max_bytes"):
        pyro.read_workspace_command(wid, cid, max_bytes=0)
    pyro.delete_workspace(wid)


def test_prepare_environment_reports_each_step(pyro):
    result = pyro.prepare_environment("debian:12")
    assert result["ok"] is True and result["environment"] == "debian:12"
    steps = [s["step"] for s in result["steps"]]
    assert steps[:3] == ["environment", "kvm_probe", "initramfs"], steps
    assert all(s["status"] in ("already", "done", "rebuilt", "skipped") for s in result["steps"]), result
    with pytest.raises(NotFoundError):
        pyro.prepare_environment("debian:99")
