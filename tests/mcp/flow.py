"""The workspace flow through tool calls (workspace-full profile), every structuredContent
validated against its tool's outputSchema:
create -> file write -> exec -> diff -> stop -> disk list -> disk read -> start -> exec -> delete.

usage: flow.py stdio|http [PROTOCOL_VERSION|latest]
"""

import asyncio
import sys

from common import Tools, http_server, http_session, log, stdio_session


async def flow(session):
    tools = Tools(session, (await session.list_tools()).tools)
    events = []

    async def on_progress(progress, total, message):
        events.append((progress, message))

    r = await session.call_tool(
        "workspace_create", {"environment": "debian:12", "name": "mcp-flow"}, progress_callback=on_progress
    )
    assert not r.isError, r.content[0].text
    ws = r.structuredContent
    wid = ws["workspace_id"]
    assert ws["state"] == "started" and ws["name"] == "mcp-flow", ws
    assert events, "workspace_create sent no progress notification despite a progress token"
    stages = [m for _, m in events if m]
    assert any(m.startswith("boot:") for m in stages), f"no engine boot stage in the progress: {stages}"
    assert [p for p, _ in events] == sorted(p for p, _ in events), f"progress went backwards: {events}"
    log(f"created {wid}; {len(events)} progress notifications, first: {events[0]}")
    try:
        w = await tools.ok("workspace_file_write", workspace_id=wid, path="src/hello.txt", text="hello from mcp\n")
        assert w["bytes_written"] == 15, w
        e = await tools.ok("workspace_exec", workspace_id=wid, command="cat src/hello.txt; echo err >&2; exit 3")
        assert e["stdout"] == "hello from mcp\n" and e["stderr"] == "err\n" and e["exit_code"] == 3, e
        d = await tools.ok("workspace_diff", workspace_id=wid)
        assert d["changed"] and any(x["path"] == "src/hello.txt" and x["status"] == "added" for x in d["entries"]), d
        st = await tools.ok("workspace_stop", workspace_id=wid)
        assert st["state"] == "stopped", st
        ls = await tools.ok("workspace_disk_list", workspace_id=wid, path="/workspace/src")
        assert [x["path"] for x in ls["entries"]] == ["/workspace/src/hello.txt"], ls
        rd = await tools.ok("workspace_disk_read", workspace_id=wid, path="src/hello.txt")
        assert rd["content"] == "hello from mcp\n" and not rd["truncated"], rd
        st = await tools.ok("workspace_status", workspace_id=wid)
        assert st["state"] == "stopped" and st["command_count"] == 1, st
        st = await tools.ok("workspace_start", workspace_id=wid)
        assert st["state"] == "started", st
        e = await tools.ok("workspace_exec", workspace_id=wid, command="cat /workspace/src/hello.txt")
        assert e["stdout"] == "hello from mcp\n" and e["exit_code"] == 0 and e["sequence"] == 2, e
        logs = await tools.ok("workspace_logs", workspace_id=wid)
        assert logs["count"] == 2, logs
    finally:
        dl = await tools.ok("workspace_delete", workspace_id=wid)
    assert dl["deleted"] is True, dl
    msg = await tools.err("workspace_status", workspace_id=wid)
    assert "not_found" in msg and wid in msg, msg


async def main():
    transport = sys.argv[1]
    version = None if len(sys.argv) < 3 or sys.argv[2] == "latest" else sys.argv[2]
    if transport == "stdio":
        async with stdio_session("workspace-full", version) as (s, init):
            log(f"stdio, protocol {init.protocolVersion}")
            await flow(s)
    else:
        with http_server("workspace-full") as url:
            async with http_session(url, version) as (s, init):
                log(f"http {url}, protocol {init.protocolVersion}")
                await flow(s)
    log("flow passed")


asyncio.run(main())
