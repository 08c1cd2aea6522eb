"""Shell and service tools (workspace-full) through the MCP client, outputs schema-validated."""
import asyncio, sys

from common import Tools, stdio_session
async def main():
    async with stdio_session("workspace-full") as (s, _):
        t = Tools(s, (await s.list_tools()).tools)
        wid = (await t.ok("workspace_create", environment="debian:12"))["workspace_id"]
        try:
            sh = await t.ok("shell_open", workspace_id=wid)
            await t.ok("shell_write", workspace_id=wid, shell_id=sh["shell_id"], input="echo hi-$((1+2))")
            r = await t.ok("shell_read", workspace_id=wid, shell_id=sh["shell_id"], wait_for_idle_ms=500, plain=True)
            assert "hi-3" in r["output"], r
            await t.ok("shell_signal", workspace_id=wid, shell_id=sh["shell_id"])
            await t.ok("shell_close", workspace_id=wid, shell_id=sh["shell_id"])
            sv = await t.ok("service_start", workspace_id=wid, service_name="web", command="touch ready; sleep 300", ready_file="ready")
            assert sv["state"] == "running", sv
            await t.ok("service_list", workspace_id=wid); await t.ok("service_status", workspace_id=wid, service_name="web")
            await t.ok("service_logs", workspace_id=wid, service_name="web")
            await t.ok("service_stop", workspace_id=wid, service_name="web")
            print("SHELL+SERVICE OK")
        finally:
            await t.ok("workspace_delete", workspace_id=wid)
asyncio.run(main())
