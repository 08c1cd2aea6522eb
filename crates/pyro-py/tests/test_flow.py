"""The whole workspace flow through the Python SDK, on one real guest (debian:12-build, which
has python3 for the service): create with a seed and secrets, exec with secret_env, files,
patch, sync push, diff, snapshot and reset, export, history, stop and the offline disk tools,
start, shells, a service with readiness and a published port fetched from Python, delete.

The tests of this module share one workspace and run in file order (pytest keeps it); each
step checks real values the guest produced. Three boots in all: create, reset, start.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pyro_sdk import InvalidStateError, NotFoundError, PyroError
from support import free_port

SECRET = "s3cr3t-VALUE-py-91c2e"
FILE_SECRET = "file-secret-py-0d7b44"
ENV = "debian:12-build"


@pytest.fixture(scope="module")
def ws(pyro, home):
    """The module's workspace and its host-side scratch dir, as a dict shared by the steps."""
    scratch = Path(home.path) / "scratch"
    seed = scratch / "seed"
    (seed / "src").mkdir(parents=True)
    (seed / "README.md").write_text("hello\n")
    (seed / "src" / "app.py").write_text("print('v1')\n")
    secret_file = scratch / "token.txt"
    secret_file.write_text(FILE_SECRET)
    w = pyro.create_workspace(
        environment=ENV,
        network_policy="egress+published-ports",
        seed_path=str(seed),
        secrets=[{"name": "API_TOKEN", "value": SECRET}, {"name": "FILE_SECRET", "file_path": str(secret_file)}],
        name="py-flow",
        labels={"suite": "pytest"},
    )
    return {"create": w, "id": w["workspace_id"], "scratch": scratch, "seed": seed}


def read_shell_until(pyro, wid, shell_id, cursor, needle, seconds=30.0):
    """Read the shell (idle-waiting 300 ms per call) until ``needle`` shows; all output read."""
    out = ""
    deadline = time.monotonic() + seconds
    while needle not in out and time.monotonic() < deadline:
        r = pyro.read_shell(wid, shell_id, cursor=cursor, wait_for_idle_ms=300)
        assert r["cursor"] == cursor
        out += r["output"]
        cursor = r["next_cursor"]
    assert needle in out, out
    return out, cursor


def test_create_with_seed_and_secrets(pyro, ws):
    w = ws["create"]
    assert isinstance(w, dict)
    assert len(ws["id"]) == 12 and all(c in "0123456789abcdef" for c in ws["id"])
    assert w["state"] == "started"
    assert w["environment"] == ENV
    assert w["network_policy"] == "egress+published-ports"
    assert w["network_enabled"] is True
    assert w["name"] == "py-flow"
    assert w["labels"] == {"suite": "pytest"}
    assert w["vcpu_count"] == 1 and w["mem_mib"] == 1024 and w["ttl_seconds"] == 600
    assert w["execution_mode"] == "guest_vsock"
    seed = w["workspace_seed"]
    assert seed["mode"] == "directory"
    assert seed["seed_path"] == str(ws["seed"])
    assert seed["destination"] == "/workspace"
    assert seed["bytes_written"] == len("hello\n") + len("print('v1')\n")
    assert w["secrets"] == [
        {"name": "API_TOKEN", "source_kind": "literal"},
        {"name": "FILE_SECRET", "source_kind": "file"},
    ]
    assert w["command_count"] == 0
    status = pyro.status_workspace(ws["id"])
    assert status["workspace_id"] == ws["id"] and status["state"] == "started"
    assert SECRET not in repr(status) and FILE_SECRET not in repr(status)
    listing = pyro.list_workspaces()
    assert listing["count"] == 1
    assert [x["workspace_id"] for x in listing["workspaces"]] == [ws["id"]]
    assert listing["workspaces"][0]["name"] == "py-flow"


def test_exec_with_secret_env_is_redacted(pyro, ws):
    wid = ws["id"]
    # The values are proved by their hashes, so no command line carries a secret.
    script = (
        'printf %s "$TOKEN" | sha256sum; printf %s "$(cat /run/pyro-secrets/FILE_SECRET)" | sha256sum; '
        'echo "$TOKEN"; echo "$(cat /run/pyro-secrets/FILE_SECRET)"; echo "$TOKEN" >&2; pwd'
    )
    r = pyro.exec_workspace(wid, command=script, secret_env={"API_TOKEN": "TOKEN"})
    assert r["exit_code"] == 0, r
    sha = lambda v: hashlib.sha256(v.encode()).hexdigest()  # noqa: E731
    assert r["stdout"] == f"{sha(SECRET)}  -\n{sha(FILE_SECRET)}  -\n[REDACTED]\n[REDACTED]\n/workspace\n", r
    assert r["stderr"] == "[REDACTED]\n"
    assert r["sequence"] == 1 and r["workspace_id"] == wid and r["command"] == script
    # Without secret_env the variable is not set.
    r = pyro.exec_workspace(wid, command='echo "[${TOKEN:-unset}]"; cat README.md src/app.py')
    assert r["stdout"] == "[unset]\nhello\nprint('v1')\n"
    assert r["sequence"] == 2
    r = pyro.exec_workspace(wid, command="echo out; echo err >&2; exit 3")
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n")
    with pytest.raises(PyroError) as e:
        pyro.exec_workspace(wid, command="true", secret_env={"NOPE": "X"})
    assert "secret_env references unknown workspace secret 'NOPE'" in str(e.value)


def test_files_write_read_list(pyro, ws):
    wid = ws["id"]
    w = pyro.write_workspace_file(wid, "notes/todo.txt", text="first\nsecond\n")
    assert w["path"] == "/workspace/notes/todo.txt"
    assert w["bytes_written"] == 13 and w["size_bytes"] == 13
    r = pyro.read_workspace_file(wid, "notes/todo.txt")
    assert (r["content"], r["size_bytes"], r["truncated"], r["max_bytes"]) == ("first\nsecond\n", 13, False, 65536)
    r = pyro.read_workspace_file(wid, "/workspace/notes/todo.txt", max_bytes=5)
    assert (r["content"], r["truncated"]) == ("first", True)
    top = pyro.list_workspace_files(wid)
    assert top["path"] == "/workspace" and top["recursive"] is False
    entries = {e["path"]: e for e in top["entries"]}
    assert sorted(entries) == ["/workspace/README.md", "/workspace/notes", "/workspace/src"]
    assert entries["/workspace/README.md"]["artifact_type"] == "file"
    assert entries["/workspace/README.md"]["size_bytes"] == 6
    assert entries["/workspace/src"]["artifact_type"] == "directory"
    deep = pyro.list_workspace_files(wid, path="/workspace", recursive=True)
    assert "/workspace/src/app.py" in [e["path"] for e in deep["entries"]]
    assert "/workspace/notes/todo.txt" in [e["path"] for e in deep["entries"]]
    # The guest sees what the SDK wrote.
    assert pyro.exec_workspace(wid, command="cat notes/todo.txt")["stdout"] == "first\nsecond\n"


def test_patch_and_sync_push(pyro, ws):
    wid = ws["id"]
    patch = (
        "--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n hello\n+world\n"
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+new file\n"
    )
    p = pyro.apply_workspace_patch(wid, patch=patch)
    assert p["changed"] is True
    assert p["summary"] == {"total": 2, "added": 1, "modified": 1, "deleted": 0}
    assert sorted((e["path"], e["status"]) for e in p["entries"]) == [
        ("/workspace/README.md", "modified"),
        ("/workspace/new.txt", "added"),
    ]
    assert p["patch"] == patch
    assert pyro.exec_workspace(wid, command="cat README.md new.txt")["stdout"] == "hello\nworld\nnew file\n"
    # A patch whose context does not match changes nothing.
    with pytest.raises(PyroError) as e:
        pyro.apply_workspace_patch(wid, patch="--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-nope\n+x\n")
    assert "patch context does not match" in str(e.value)

    extra = ws["scratch"] / "extra"
    extra.mkdir()
    (extra / "notes.txt").write_text("synced\n")
    s = pyro.push_workspace_sync(wid, str(extra), dest="docs")
    assert s["workspace_id"] == wid
    assert s["workspace_sync"]["destination"] == "/workspace/docs"
    assert s["workspace_sync"]["source_path"] == str(extra)
    assert s["workspace_sync"]["bytes_written"] == 7
    assert pyro.read_workspace_file(wid, "docs/notes.txt")["content"] == "synced\n"


def test_diff_against_baseline(pyro, ws):
    d = pyro.diff_workspace(ws["id"])
    assert d["workspace_id"] == ws["id"] and d["changed"] is True
    status = {e["path"]: e["status"] for e in d["entries"]}
    assert status == {
        "README.md": "modified",
        "new.txt": "added",
        "notes/todo.txt": "added",
        "docs/notes.txt": "added",
    }, d["entries"]
    assert d["summary"]["modified"] == 1 and d["summary"]["added"] == 3 and d["summary"]["deleted"] == 0
    assert d["summary"]["total"] == 4 and d["summary"]["text_patched"] == 4
    assert "+world" in d["patch"] and "--- a/README.md" in d["patch"]


def test_snapshot_and_reset(pyro, ws):
    wid = ws["id"]
    c = pyro.create_snapshot(wid, "checkpoint")
    assert c["workspace_id"] == wid
    snap = c["snapshot"]
    assert (snap["snapshot_name"], snap["kind"], snap["deletable"]) == ("checkpoint", "named", True)
    assert snap["entry_count"] >= 6
    listed = pyro.list_snapshots(wid)
    assert listed["count"] == 2
    assert [s["snapshot_name"] for s in listed["snapshots"]] == ["baseline", "checkpoint"]
    assert listed["snapshots"][0]["kind"] == "baseline" and listed["snapshots"][0]["deletable"] is False
    with pytest.raises(PyroError) as e:
        pyro.create_snapshot(wid, "checkpoint")
    assert f"snapshot 'checkpoint' already exists in workspace '{wid}'" in str(e.value)

    pyro.exec_workspace(wid, command="rm README.md && echo junk > junk.txt")
    r = pyro.reset_workspace(wid, snapshot="checkpoint")
    assert r["state"] == "started"
    assert r["workspace_reset"]["snapshot_name"] == "checkpoint"
    assert (r["reset_count"], r["command_count"]) == (1, 0)
    assert pyro.read_workspace_file(wid, "README.md")["content"] == "hello\nworld\n"
    paths = [e["path"] for e in pyro.list_workspace_files(wid)["entries"]]
    assert "/workspace/junk.txt" not in paths and "/workspace/new.txt" in paths
    # Secrets are installed again after the reset.
    r = pyro.exec_workspace(wid, command='[ "$T" = "$(cat /run/pyro-secrets/API_TOKEN)" ] && echo same', secret_env={"API_TOKEN": "T"})
    assert r["stdout"] == "same\n", r


def test_export_and_logs(pyro, ws):
    wid = ws["id"]
    out = ws["scratch"] / "out"
    x = pyro.export_workspace(wid, "src", output_path=str(out))
    assert x["artifact_type"] == "directory"
    assert x["workspace_path"] == "/workspace/src"
    assert x["output_path"] == str(out)
    assert (out / "app.py").read_text() == "print('v1')\n"
    one = ws["scratch"] / "readme.out"
    x = pyro.export_workspace(wid, "/workspace/README.md", output_path=str(one))
    assert x["artifact_type"] == "file" and x["bytes_written"] == 12
    assert one.read_text() == "hello\nworld\n"
    with pytest.raises(PyroError) as e:
        pyro.export_workspace(wid, "src", output_path=str(out))
    assert "output_path already exists" in str(e.value)

    # The reset cleared the history; the one exec after it (secret check) is there, redacted.
    logs = pyro.logs_workspace(wid)
    assert logs["workspace_id"] == wid
    assert logs["count"] == 1
    entry = logs["entries"][0]
    assert entry["sequence"] == 1 and entry["exit_code"] == 0 and entry["stdout"] == "same\n"
    pyro.exec_workspace(wid, command="cat /run/pyro-secrets/API_TOKEN")
    logs = pyro.logs_workspace(wid)
    assert logs["count"] == 2
    assert logs["entries"][1]["stdout"] == "[REDACTED]"
    assert SECRET not in repr(logs)


def test_stop_disk_tools_start(pyro, ws):
    wid = ws["id"]
    with pytest.raises(InvalidStateError) as e:
        pyro.list_workspace_disk(wid)
    assert f"workspace '{wid}' must be stopped before workspace_disk_list" in str(e.value)
    assert e.value.code == "invalid_state"

    s = pyro.stop_workspace(wid)
    assert s["state"] == "stopped"
    assert pyro.status_workspace(wid)["state"] == "stopped"
    listing = pyro.list_workspace_disk(wid, recursive=True)
    paths = [e["path"] for e in listing["entries"]]
    for p in ("/workspace/README.md", "/workspace/src/app.py", "/workspace/docs/notes.txt"):
        assert p in paths, paths
    top = pyro.list_workspace_disk(wid, path="/workspace/src")
    assert [e["path"] for e in top["entries"]] == ["/workspace/src/app.py"]
    r = pyro.read_workspace_disk(wid, "README.md")
    assert (r["content"], r["size_bytes"], r["truncated"]) == ("hello\nworld\n", 12, False)
    r = pyro.read_workspace_disk(wid, "README.md", max_bytes=5)
    assert (r["content"], r["truncated"]) == ("hello", True)
    img = ws["scratch"] / "disk.ext4"
    x = pyro.export_workspace_disk(wid, output_path=str(img))
    assert x["disk_format"] == "ext4" and x["output_path"] == str(img)
    assert img.stat().st_size > 0
    if shutil.which("debugfs"):
        o = subprocess.run(["debugfs", "-R", "cat /workspace/README.md", str(img)], capture_output=True, check=False)
        assert o.stdout == b"hello\nworld\n", o
        # No secret reaches the disk image (the guest's /run is a tmpfs).
        assert SECRET.encode() not in img.read_bytes()

    st = pyro.start_workspace(wid)
    assert st["state"] == "started"
    r = pyro.exec_workspace(wid, command="cat README.md src/app.py docs/notes.txt")
    assert r["stdout"] == "hello\nworld\nprint('v1')\nsynced\n", r


def test_shells(pyro, ws):
    wid = ws["id"]
    sh = pyro.open_shell(wid)
    sid = sh["shell_id"]
    assert len(sid) == 12
    assert (sh["state"], sh["cwd"], sh["cols"], sh["rows"]) == ("running", "/workspace", 120, 30)
    w = pyro.write_shell(wid, sid, input="cd src && export X=42")
    assert (w["input_length"], w["append_newline"]) == (len("cd src && export X=42"), True)
    pyro.write_shell(wid, sid, input='pwd; echo "x=$X"')
    out, cursor = read_shell_until(pyro, wid, sid, 0, "x=42")
    assert "/workspace/src" in out
    plain = pyro.read_shell(wid, sid, cursor=0, plain=True)
    assert plain["plain"] is True and "\x1b" not in plain["output"] and "x=42" in plain["output"]

    # Ctrl-C through signal_shell stops a foreground sleep; the shell lives on.
    pyro.write_shell(wid, sid, input="sleep 300")
    time.sleep(0.5)
    s = pyro.signal_shell(wid, sid, signal_name="INT")
    assert s["signal"] == "INT" and s["state"] == "running"
    pyro.write_shell(wid, sid, input="echo after-$((40+2))")
    out, cursor = read_shell_until(pyro, wid, sid, cursor, "after-42")
    assert pyro.exec_workspace(wid, command="pgrep -x sleep || echo none")["stdout"] == "none\n"

    c = pyro.close_shell(wid, sid)
    assert c["closed"] is True and c["shell_id"] == sid
    with pytest.raises(NotFoundError) as e:
        pyro.read_shell(wid, sid)
    assert f"unknown shell '{sid}'" in str(e.value) and e.value.code == "not_found"


def test_service_with_readiness_and_published_port(pyro, ws):
    wid = ws["id"]
    pyro.write_workspace_file(wid, "site/index.html", text="hello from the guest")
    port = free_port()
    s = pyro.start_service(
        wid,
        "web",
        command="python3 -m http.server 8000",
        cwd="site",
        readiness={"type": "http", "url": "http://127.0.0.1:8000/"},
        published_ports=[{"guest_port": 8000, "host_port": port}],
    )
    assert s["state"] == "running", s
    assert s["service_name"] == "web" and s["cwd"] == "/workspace/site"
    assert s["ready_at"] is not None and s["ready_at"] >= s["started_at"]
    assert s["readiness"] == {"type": "http", "url": "http://127.0.0.1:8000/"}
    assert s["published_ports"] == [{"host": "127.0.0.1", "host_port": port, "guest_port": 8000, "protocol": "tcp"}]

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=20) as resp:
        assert resp.status == 200
        assert resp.read() == b"hello from the guest"

    st = pyro.status_workspace(wid)
    assert (st["service_count"], st["running_service_count"]) == (1, 1)
    listed = pyro.list_services(wid)
    assert (listed["count"], listed["running_count"]) == (1, 1)
    assert [x["service_name"] for x in listed["services"]] == ["web"]
    assert pyro.status_service(wid, "web")["state"] == "running"
    logs = pyro.logs_service(wid, "web")
    assert "GET /index.html" in logs["stderr"], logs
    assert logs["tail_lines"] == 200
    with pytest.raises(PyroError) as e:
        pyro.start_service(wid, "web", command="sleep 1")
    assert "service 'web' is already running" in str(e.value)

    stopped = pyro.stop_service(wid, "web")
    assert stopped["state"] == "stopped" and stopped["stop_reason"] in ("sigterm", "sigkill")
    assert pyro.list_services(wid)["running_count"] == 0


def test_delete(pyro, ws):
    wid = ws["id"]
    d = pyro.delete_workspace(wid)
    assert d == {"workspace_id": wid, "deleted": True} or (d["workspace_id"] == wid and d["deleted"] is True)
    with pytest.raises(NotFoundError) as e:
        pyro.status_workspace(wid)
    assert str(e.value) == f"workspace '{wid}' does not exist"
    assert pyro.list_workspaces()["count"] == 0
