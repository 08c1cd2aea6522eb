"""Long tool calls as tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension), driven
by the official Python MCP client 2.x (scripts/mcp2-client-venv.sh), which declares the
extension through its ClientExtension mechanism (workspace-full profile, stdio unless said):
- with the extension declared, `workspace_exec` of `sleep 3; echo done` answers with a task
  handle at once; `tasks/get` reports `working` with a status message, then `completed` with the
  exec result (stdout "done"); the client's `call_tool` resolves the handle transparently;
- `tasks/cancel` on a `sleep 300` exec settles the task as `cancelled` and leaves no `sleep`
  running in the guest;
- short tools (`workspace_status`) and `background` execs are answered plainly even then;
- without the extension, the same `workspace_exec` answers with the plain result;
- over Streamable HTTP (served statelessly at 2026-07-28), a task is found by later requests;
- a client that leaves with a task running leaves no guest command behind.
"""

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any, ClassVar, Literal

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, Request, Result
from pydantic import ConfigDict

PYRO = os.environ["PYRO_BIN"]
TASKS = "io.modelcontextprotocol/tasks"
SLEEPS = "ps -eo comm= | grep -cx sleep || true"


def log(*a):
    print("[mcp-test]", *a, file=sys.stderr, flush=True)


class TaskHandle(Result):
    """`CreateTaskResult`: the answer to a `tools/call` the server runs as a task."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None


class TaskState(Result):
    """A `tasks/get` answer (`DetailedTask`)."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Ack(Result):
    """The empty acknowledgement of `tasks/cancel`."""

    model_config = ConfigDict(extra="allow")


class TaskRequest(Request[dict[str, Any], str]):
    name_param: ClassVar[str | None] = "taskId"


async def task_request(session, method, task_id, result_type=TaskState):
    return await session.send_request(TaskRequest(method=method, params={"taskId": task_id}), result_type)


class Tasks(ClientExtension):
    """Declares the tasks extension; resolves a task handle by polling `tasks/get`."""

    identifier = TASKS

    def __init__(self):
        self.handles = []
        self.messages = []

    def claims(self):
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self.resolve)]

    async def resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        self.handles.append(handle)
        while True:
            state = await task_request(ctx.session, "tasks/get", handle.task_id)
            if state.status_message:
                self.messages.append(state.status_message)
            if state.status == "completed":
                return CallToolResult.model_validate(state.result)
            assert state.status == "working", f"task {handle.task_id}: {state}"
            await asyncio.sleep((handle.poll_interval_ms or 500) / 1000)


def server():
    return StdioServerParameters(command=PYRO, args=["mcp", "serve", "--profile", "workspace-full"], env=dict(os.environ))


def structured(r):
    text = r.content[0].text if r.content else ""
    assert not r.is_error, text
    return r.structured_content


async def with_tasks():
    ext = Tasks()
    async with Client(server(), extensions=[ext]) as c:
        log(f"negotiated {c.protocol_version}")
        caps = c.server_capabilities
        assert caps.extensions and TASKS in caps.extensions, f"server does not declare {TASKS}: {caps}"
        wid = structured(await c.call_tool("workspace_create", {"environment": "debian:12"}))["workspace_id"]
        try:
            # Short tools stay plain results even for a client declaring the extension.
            assert structured(await c.call_tool("workspace_status", {"workspace_id": wid}))["state"] == "started"
            assert not ext.handles

            # (1) The handle comes first, the result later through tasks/get.
            t0 = time.monotonic()
            handle = await c.session.call_tool(
                "workspace_exec", {"workspace_id": wid, "command": "sleep 3; echo done"}, allow_claimed=True
            )
            took = time.monotonic() - t0
            assert isinstance(handle, TaskHandle), f"no task handle: {handle!r}"
            assert handle.status == "working" and took < 2.5, f"{handle} after {took:.2f}s"
            assert handle.ttl_ms and handle.ttl_ms > 30_000, handle
            log(f"task handle {handle.task_id} in {took * 1000:.0f} ms: {handle.status_message}")
            seen = []
            while True:
                state = await task_request(c.session, "tasks/get", handle.task_id)
                if state.status_message:
                    seen.append(state.status_message)
                if state.status != "working":
                    break
                await asyncio.sleep(0.3)
            assert state.status == "completed", state
            result = CallToolResult.model_validate(state.result)
            out = structured(result)
            assert out["stdout"] == "done\n" and out["exit_code"] == 0, out
            assert any("running for" in m for m in seen), f"no progress in the status message: {seen}"
            log(f"tasks/get -> completed after {time.monotonic() - t0:.2f}s, stdout {out['stdout']!r}; status: {seen[-1]!r}")
            # The finished task stays readable (TTL), with the same result.
            again = await task_request(c.session, "tasks/get", handle.task_id)
            assert again.status == "completed" and again.result == state.result, again

            # The client's own call_tool resolves the handle through the extension.
            r = await c.call_tool("workspace_exec", {"workspace_id": wid, "command": "sleep 2; echo resolved"})
            assert structured(r)["stdout"] == "resolved\n", r
            assert len(ext.handles) == 1, ext.handles
            log(f"call_tool resolved task {ext.handles[0].task_id} transparently")

            # A background exec answers at once, so it stays a plain result (whatever it says).
            r = await c.session.call_tool(
                "workspace_exec", {"workspace_id": wid, "command": "true", "background": True}, allow_claimed=True
            )
            assert isinstance(r, CallToolResult), f"a task handle for a background exec: {r!r}"

            # (2) tasks/cancel ends the guest command.
            handle = await c.session.call_tool(
                "workspace_exec",
                {"workspace_id": wid, "command": "sleep 300", "timeout_seconds": 900},
                allow_claimed=True,
            )
            assert isinstance(handle, TaskHandle), handle
            for _ in range(50):
                ps = structured(await c.call_tool("workspace_exec", {"workspace_id": wid, "command": SLEEPS}))
                if ps["stdout"].strip() == "1":
                    break
                await asyncio.sleep(0.2)
            assert ps["stdout"].strip() == "1", f"the long exec never started: {ps}"
            t0 = time.monotonic()
            await task_request(c.session, "tasks/cancel", handle.task_id, Ack)
            for _ in range(50):
                state = await task_request(c.session, "tasks/get", handle.task_id)
                ps = structured(await c.call_tool("workspace_exec", {"workspace_id": wid, "command": SLEEPS}))
                if state.status != "working" and ps["stdout"].strip() == "0":
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - t0
            assert state.status == "cancelled", state
            assert ps["stdout"].strip() == "0", f"sleep still running in the guest: {ps}"
            assert took < 5, f"the guest command outlived tasks/cancel by {took:.2f}s"
            log(f"tasks/cancel -> cancelled, no sleep in the guest after {took:.2f}s")

            # An unknown task id is an error, not a crash.
            try:
                await task_request(c.session, "tasks/get", "no-such-task")
                raise AssertionError("unknown task id accepted")
            except Exception as e:  # noqa: BLE001 - the client raises its MCPError
                assert "no-such-task" in str(e) or "not found" in str(e).lower(), e
                log(f"tasks/get of an unknown id -> {e}")
        finally:
            await c.call_tool("workspace_exec", {"workspace_id": wid, "command": "pkill -x sleep || true"})
            await c.call_tool("workspace_delete", {"workspace_id": wid})


async def without_tasks():
    # (3) The same client without the extension gets the plain result.
    async with Client(server()) as c:
        wid = structured(await c.call_tool("workspace_create", {"environment": "debian:12"}))["workspace_id"]
        try:
            r = await c.session.call_tool(
                "workspace_exec", {"workspace_id": wid, "command": "sleep 1; echo done"}, allow_claimed=True
            )
            assert isinstance(r, CallToolResult), f"a task handle for a client without the extension: {r!r}"
            assert structured(r)["stdout"] == "done\n", r
            log("without the extension: plain workspace_exec result")
        finally:
            await c.call_tool("workspace_delete", {"workspace_id": wid})


async def vanishing_client():
    # A client that leaves with a task running: its server ends the task's call, and the guest
    # command with it, as it does for a plain call in flight; the workspace stays usable.
    async with Client(server()) as plain:
        wid = structured(await plain.call_tool("workspace_create", {"environment": "debian:12"}))["workspace_id"]
        try:
            async with Client(server(), extensions=[Tasks()]) as c:
                handle = await c.session.call_tool(
                    "workspace_exec",
                    {"workspace_id": wid, "command": "sleep 300", "timeout_seconds": 900},
                    allow_claimed=True,
                )
                assert isinstance(handle, TaskHandle), handle
                for _ in range(50):
                    ps = structured(await c.call_tool("workspace_exec", {"workspace_id": wid, "command": SLEEPS}))
                    if ps["stdout"].strip() == "1":
                        break
                    await asyncio.sleep(0.2)
                assert ps["stdout"].strip() == "1", f"the long exec never started: {ps}"
                t0 = time.monotonic()
            for _ in range(50):
                ps = structured(await plain.call_tool("workspace_exec", {"workspace_id": wid, "command": SLEEPS}))
                if ps["stdout"].strip() == "0":
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - t0
            assert ps["stdout"].strip() == "0", f"sleep still running after its client left: {ps}"
            log(f"client left with a task running: no sleep in the guest after {took:.2f}s")
        finally:
            await plain.call_tool("workspace_exec", {"workspace_id": wid, "command": "pkill -x sleep || true"})
            await plain.call_tool("workspace_delete", {"workspace_id": wid})


async def over_http():
    # Streamable HTTP: a 2026-07-28 client is served statelessly (each request by its own
    # server clone), and its tasks/get requests still find the task.
    token = subprocess.run([PYRO, "mcp", "token"], capture_output=True, text=True, timeout=30).stdout.strip()
    p = subprocess.Popen(
        [PYRO, "mcp", "serve", "--profile", "workspace-full", "--http", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    try:
        line = p.stderr.readline()
        m = re.search(r"on (http://\S+/mcp)", line)
        assert m, f"no serving line from the HTTP server: {line!r}"
        ext = Tasks()
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(m.group(1), http_client=http), extensions=[ext]) as c:
                assert c.protocol_version == "2026-07-28", c.protocol_version
                wid = structured(await c.call_tool("workspace_create", {"environment": "debian:12"}))["workspace_id"]
                try:
                    r = await c.call_tool("workspace_exec", {"workspace_id": wid, "command": "sleep 2; echo http"})
                    assert structured(r)["stdout"] == "http\n", r
                    assert len(ext.handles) == 1, ext.handles
                    log(f"over HTTP: task {ext.handles[0].task_id} resolved; last status {ext.messages[-1:]}")
                finally:
                    await c.call_tool("workspace_delete", {"workspace_id": wid})
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def main():
    await with_tasks()
    await over_http()
    await without_tasks()
    await vanishing_client()


asyncio.run(main())
