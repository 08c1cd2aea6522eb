"""Concurrency and cancellation (workspace-core profile, stdio):
- a long workspace_exec does not block workspace_status;
- notifications/cancelled for a `sleep 600` workspace_exec ends the call promptly, and no
  `sleep` is left running in the guest.
"""

import asyncio
import time

import anyio
import mcp.types as t

from common import Tools, log, stdio_session

SLEEPS = "ps -eo comm= | grep -cx sleep || true"


async def main():
    async with stdio_session("workspace-core") as (s, _):
        tools = Tools(s, (await s.list_tools()).tools)
        wid = (await tools.ok("workspace_create", environment="debian:12"))["workspace_id"]
        try:
            request_id = s._request_id  # the id the next request gets (mcp 1.x numbers requests 0, 1, 2, ...)
            outcome = {}

            async def long_exec():
                outcome["result"] = await s.call_tool(
                    "workspace_exec", {"workspace_id": wid, "command": "sleep 600", "timeout_seconds": 900}
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_exec)
                await asyncio.sleep(1.0)
                # The command is running in the guest (checked by a concurrent exec), and a
                # status call is not blocked behind it.
                for _ in range(50):
                    ps = await tools.ok("workspace_exec", workspace_id=wid, command=SLEEPS)
                    if ps["stdout"].strip() == "1":
                        break
                    await asyncio.sleep(0.2)
                assert ps["stdout"].strip() == "1", f"the long exec never started: {ps}"
                t0 = time.monotonic()
                st = await tools.ok("workspace_status", workspace_id=wid)
                status_s = time.monotonic() - t0
                assert st["state"] == "started", st
                assert status_s < 2, f"workspace_status took {status_s:.2f}s while an exec ran"
                log(f"workspace_status during a running exec: {status_s * 1000:.0f} ms")
                # Cancel as an MCP client does: notifications/cancelled, then stop waiting (the
                # server sends no response for a cancelled request).
                t0 = time.monotonic()
                await s.send_notification(
                    t.ClientNotification(
                        t.CancelledNotification(params=t.CancelledNotificationParams(requestId=request_id, reason="test"))
                    )
                )
                tg.cancel_scope.cancel()
            assert "result" not in outcome, f"the call finished instead of being cancelled: {outcome}"
            # The guest command must be gone (the supervisor cancels the dropped call).
            for _ in range(50):
                ps = await tools.ok("workspace_exec", workspace_id=wid, command=SLEEPS)
                if ps["stdout"].strip() == "0":
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - t0
            assert ps["stdout"].strip() == "0", f"sleep still running in the guest: {ps}"
            assert took < 5, f"the guest command outlived the cancellation by {took:.2f}s"
            log(f"no sleep process left in the guest {took:.2f}s after notifications/cancelled")
        finally:
            # A still-running exec would hold the workspace (delete waits for it): end it first.
            await s.call_tool("workspace_exec", {"workspace_id": wid, "command": "pkill -x sleep || true"})
            await tools.ok("workspace_delete", workspace_id=wid)


asyncio.run(main())
