"""Background commands over MCP (issue 14 acceptance): a first client starts a 10-minute
command with `workspace_exec` `background: true` and vanishes (its server is killed mid-session);
a second client reads its output by cursor, waits with a short timeout (still running), kills
it, and finds no process left and the command in the history. Bad input is refused clearly.

The first client speaks raw JSON-RPC over the server's stdin/stdout, so the test controls how
it vanishes; the second is the official client, checking every result against its schema.
"""

import asyncio
import json
import subprocess
import time

from common import PYRO, Tools, log, server_env, stdio_session


async def sleeps(tools, wid):
    """`sleep 600` processes in the guest; the listing must show the agent."""
    ps = await tools.ok("workspace_exec", workspace_id=wid, command="ps -eo args")
    assert ps["exit_code"] == 0 and "pyro-agent" in ps["stdout"], ps
    return sum(1 for line in ps["stdout"].splitlines() if line.startswith("sleep 600"))


def raw_reply(p, rid):
    while True:
        line = p.stdout.readline()
        assert line, "the server closed stdout"
        msg = json.loads(line)
        if msg.get("id") == rid:
            return msg


async def main():
    async with stdio_session("workspace-core") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        wid = (await tools.ok("workspace_create", environment="debian:12"))["workspace_id"]
        # A foreground exec keeps its old result shape.
        fg = await tools.ok("workspace_exec", workspace_id=wid, command="echo fg")
        assert fg["stdout"] == "fg\n" and "command_id" not in fg, fg

    # The first client: starts the command, then vanishes without a goodbye.
    p = subprocess.Popen(
        [PYRO, "mcp", "serve", "--profile", "workspace-core"],
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
    args = {"workspace_id": wid, "command": "echo started; sleep 600; echo done", "background": True}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "workspace_exec", "arguments": args}}
    t0 = time.monotonic()
    p.stdin.write(json.dumps(call) + "\n")
    p.stdin.flush()
    started = raw_reply(p, 1)["result"]
    assert not started.get("isError"), started
    info = started["structuredContent"]
    assert info["state"] == "running" and len(info["command_id"]) == 12, info
    assert info["timeout_seconds"] == 3600, info
    log(f"background start answered in {time.monotonic() - t0:.2f}s")
    cid = info["command_id"]
    p.kill()
    p.wait(timeout=30)

    async with stdio_session("workspace-core") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        st = await tools.ok("workspace_command_status", workspace_id=wid, command_id=cid)
        assert st["state"] == "running", st
        for _ in range(100):
            if (await tools.ok("workspace_command_status", workspace_id=wid, command_id=cid))["output_bytes"] >= 8:
                break
            await asyncio.sleep(0.2)
        a = await tools.ok("workspace_command_read", workspace_id=wid, command_id=cid, cursor=0, max_bytes=3)
        assert (a["stdout"], a["next_cursor"], a["has_more"]) == ("sta", 3, True), a
        b = await tools.ok("workspace_command_read", workspace_id=wid, command_id=cid, cursor=a["next_cursor"])
        assert (b["stdout"], b["next_cursor"], b["has_more"]) == ("rted\n", 8, False), b
        w = await tools.ok("workspace_command_wait", workspace_id=wid, command_id=cid, timeout_seconds=2)
        assert w["state"] == "running", w
        assert await sleeps(tools, wid) == 1
        k = await tools.ok("workspace_command_kill", workspace_id=wid, command_id=cid)
        assert k["state"] == "killed" and k["exit_code"] > 128 and k["sequence"], k
        assert await sleeps(tools, wid) == 0, "the killed command's group is still there"
        logs = await tools.ok("workspace_logs", workspace_id=wid)
        entry = [e for e in logs["entries"] if e["sequence"] == k["sequence"]]
        assert entry and entry[0]["stdout"] == "started\n", logs

        # Bad input: unknown and malformed ids, a cursor past the end, out-of-range numbers.
        e = await tools.err("workspace_command_status", workspace_id=wid, command_id="0123456789ab")
        assert "unknown background command" in e, e
        e = await tools.err("workspace_command_read", workspace_id=wid, command_id="../etc", cursor=0)
        assert "invalid command id" in e, e
        e = await tools.err("workspace_command_read", workspace_id=wid, command_id=cid, cursor=10_000)
        assert "past the end" in e, e
        e = await tools.err("workspace_command_wait", workspace_id=wid, command_id=cid, timeout_seconds=99999)
        assert "at most 3600" in e, e
        await tools.ok("workspace_delete", workspace_id=wid)


asyncio.run(main())
