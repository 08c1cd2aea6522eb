"""Pause, resume, fork and the operator's idle-pause default (workspace-full) through the MCP
client, outputs schema-validated. The server runs with PYRO_MCP_IDLE_PAUSE_SECONDS=3."""
import asyncio, contextlib, time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import PYRO, Tools, initialize, log, server_env


@contextlib.asynccontextmanager
async def session_with_idle_default():
    env = server_env()
    env["PYRO_MCP_IDLE_PAUSE_SECONDS"] = "3"
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", "--profile", "workspace-full"], env=env)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await initialize(s, None)
            yield s


async def main():
    async with session_with_idle_default() as s:
        t = Tools(s, (await s.list_tools()).tools)
        w = await t.ok("workspace_create", environment="debian:12")
        wid = w["workspace_id"]
        made = [wid]
        try:
            assert w["idle_pause_seconds"] == 3, w
            await t.ok("workspace_exec", workspace_id=wid, command="echo kept > /workspace/note")
            # The operator's default idle pause applies: paused without any call.
            deadline = time.monotonic() + 90
            while (await t.ok("workspace_status", workspace_id=wid))["state"] != "paused":
                assert time.monotonic() < deadline, "not idle-paused"
                await asyncio.sleep(0.5)
            r = await t.ok("workspace_exec", workspace_id=wid, command="cat /workspace/note")
            assert r["stdout"] == "kept\n" and r["resumed_from_pause"] is True, r
            p = await t.ok("workspace_pause", workspace_id=wid)
            assert p["state"] == "paused" and p["workspace_pause"]["state_bytes"] > 0, p
            r = await t.ok("workspace_resume", workspace_id=wid)
            assert r["state"] == "started" and r["workspace_resume"]["resume_ms"] >= 0, r
            e = await t.err("workspace_resume", workspace_id=wid)
            assert "invalid_state" in e and "not paused" in e, e
            e = await t.err("workspace_fork", workspace_id=wid, count=9)
            assert "count must be between 1 and 8" in e, e
            f = await t.ok("workspace_fork", workspace_id=wid, count=2, names=["left"])
            made += [c["workspace_id"] for c in f["workspaces"]]
            assert f["count"] == 2 and f["memory_restored"] is True, f
            assert f["workspaces"][0]["name"] == "left", f
            for c in f["workspaces"]:
                r = await t.ok("workspace_exec", workspace_id=c["workspace_id"], command="cat /workspace/note; hostname")
                assert r["stdout"] == f"kept\npyro-{c['workspace_id']}\n", r
            u = await t.ok("workspace_update", workspace_id=wid, idle_pause_seconds=0)
            assert u["idle_pause_seconds"] is None, u
            print("PAUSE+FORK OK")
        finally:
            for w in made:
                await t.ok("workspace_delete", workspace_id=w)
            log("deleted", made)


asyncio.run(main())
