"""A client that vanishes mid-call: the server exits, the server's ephemeral VM is deleted,
the in-flight guest command is ended, and the workspace is left started and usable.

The vanishing client speaks raw JSON-RPC over the server's stdin/stdout (so the test controls
exactly when the pipe closes); the checks afterwards use the official client.
"""

import asyncio
import json
import os
import subprocess
import time

from common import PYRO, Tools, log, server_env, stdio_session



def vm_processes():
    """Processes (supervisor, QEMU) of ephemeral VMs under this PYRO_HOME."""
    needle = os.path.join(os.environ["PYRO_HOME"], "vms")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(cmd)
    return found


async def sleeps(tools, wid):
    """`sleep 600` processes in the guest; the listing must work and show the agent, so a
    broken `ps` can never read as "none left"."""
    ps = await tools.ok("workspace_exec", workspace_id=wid, command="ps -eo args")
    assert ps["exit_code"] == 0 and "pyro-agent" in ps["stdout"], ps
    return sum(1 for line in ps["stdout"].splitlines() if line.startswith("sleep 600"))


def raw_call(p, rid, name, args):
    msg = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": args}}
    p.stdin.write(json.dumps(msg) + "\n")
    p.stdin.flush()


def raw_reply(p, rid):
    while True:
        line = p.stdout.readline()
        assert line, "the server closed stdout"
        msg = json.loads(line)
        if msg.get("id") == rid:
            return msg


async def main():
    async with stdio_session("workspace-full") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        wid = (await tools.ok("workspace_create", environment="debian:12"))["workspace_id"]

    p = subprocess.Popen(
        [PYRO, "mcp", "serve", "--profile", "workspace-full"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=server_env(),
    )
    init = {
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    p.stdin.write(json.dumps(init) + "\n")
    p.stdin.flush()
    raw_reply(p, 0)
    p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
    raw_call(p, 1, "vm_create", {"environment": "debian:12"})
    vm = raw_reply(p, 1)["result"]["structuredContent"]
    raw_call(p, 2, "vm_start", {"vm_id": vm["vm_id"]})
    assert not raw_reply(p, 2)["result"].get("isError"), "vm_start failed"
    assert vm_processes(), "the ephemeral VM is not running"
    raw_call(p, 3, "workspace_exec", {"workspace_id": wid, "command": "sleep 600", "timeout_seconds": 900})
    time.sleep(1.0)
    async with stdio_session("workspace-full") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        for _ in range(50):
            running = await sleeps(tools, wid)
            if running == 1:
                break
            await asyncio.sleep(0.2)
        assert running == 1, "the vanishing client's exec never started"

    # The client vanishes: its end of the pipes closes mid-call.
    t0 = time.monotonic()
    p.stdin.close()
    p.stdout.close()
    p.wait(timeout=60)
    log(f"server exited {time.monotonic() - t0:.2f}s after the client vanished (code {p.returncode})")
    for _ in range(100):
        if not vm_processes():
            break
        time.sleep(0.1)
    assert not vm_processes(), f"ephemeral VM outlived its server: {vm_processes()}"

    async with stdio_session("workspace-full") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        st = await tools.ok("workspace_status", workspace_id=wid)
        assert st["state"] == "started", st
        for _ in range(50):
            left = await sleeps(tools, wid)
            if left == 0:
                break
            await asyncio.sleep(0.1)
        assert left == 0, "the vanished client's command still runs"
        ok = await tools.ok("workspace_exec", workspace_id=wid, command="echo usable")
        assert ok["stdout"] == "usable\n", ok
        await tools.ok("workspace_delete", workspace_id=wid)


asyncio.run(main())
