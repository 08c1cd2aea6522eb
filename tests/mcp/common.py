"""Shared helpers for pyro's MCP acceptance tests, driven by the official Python MCP SDK.

Environment: PYRO_BIN (the pyro binary), PYRO_HOME and PYRO_CACHE_DIR (passed to servers).

Protocol pinning (mcp 1.x): ClientSession.initialize() sends `mcp.types.LATEST_PROTOCOL_VERSION`,
read at call time, so assigning that attribute before initialize() pins the version the client
asks for; the client accepts any answer in mcp.shared.version.SUPPORTED_PROTOCOL_VERSIONS.
"""

import contextlib
import os
import re
import subprocess
import sys
import time

import jsonschema
import mcp.types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

PYRO = os.environ["PYRO_BIN"]
SDK_LATEST = mcp.types.LATEST_PROTOCOL_VERSION

VM_RUN = {"vm_run"}
CORE = {
    "vm_run", "workspace_create", "workspace_delete", "workspace_diff", "workspace_exec",
    "workspace_export", "workspace_file_list", "workspace_file_read", "workspace_file_write",
    "workspace_list", "workspace_logs", "workspace_patch_apply", "workspace_reset",
    "workspace_status", "workspace_summary", "workspace_sync_push", "workspace_update",
    "workspace_command_kill", "workspace_command_read", "workspace_command_status", "workspace_command_wait",
}
FULL = CORE | {
    "service_list", "service_logs", "service_start", "service_status", "service_stop",
    "shell_close", "shell_open", "shell_read", "shell_signal", "shell_write",
    "snapshot_create", "snapshot_delete", "snapshot_list",
    "vm_create", "vm_delete", "vm_exec", "vm_list_environments", "vm_network_info",
    "vm_reap_expired", "vm_start", "vm_status", "vm_stop",
    "workspace_disk_export", "workspace_disk_list", "workspace_disk_read",
    "workspace_start", "workspace_stop",
    "workspace_pause", "workspace_resume", "workspace_fork",
}
PROFILES = {"vm-run": VM_RUN, "workspace-core": CORE, "workspace-full": FULL}


def log(*a):
    print("[mcp-test]", *a, file=sys.stderr, flush=True)


def server_env():
    return {k: v for k, v in os.environ.items()}


@contextlib.asynccontextmanager
async def stdio_session(profile, version=None):
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", "--profile", profile], env=server_env())
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            yield s, await initialize(s, version)


def server_token():
    """The bearer token `pyro mcp serve --http` uses by default (`pyro mcp token`)."""
    p = subprocess.run([PYRO, "mcp", "token"], capture_output=True, text=True, env=server_env(), timeout=30)
    assert p.returncode == 0, p
    return p.stdout.strip()


@contextlib.contextmanager
def http_server(profile, extra=(), env=None):
    """Start `pyro mcp serve --http 127.0.0.1:0`; yield its URL."""
    p = subprocess.Popen(
        [PYRO, "mcp", "serve", "--profile", profile, "--http", "127.0.0.1:0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env or server_env(),
    )
    try:
        line = p.stderr.readline()
        m = re.search(r"on (http://\S+/mcp)", line)
        assert m, f"no serving line from the HTTP server: {line!r}"
        yield m.group(1)
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.asynccontextmanager
async def http_session(url, version=None, token=None):
    headers = {"Authorization": f"Bearer {token or server_token()}"}
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as (r, w, _sid):
            async with ClientSession(r, w) as s:
                yield s, await initialize(s, version)


async def initialize(session, version):
    saved = mcp.types.LATEST_PROTOCOL_VERSION
    if version is not None:
        mcp.types.LATEST_PROTOCOL_VERSION = version
    try:
        result = await session.initialize()
    finally:
        mcp.types.LATEST_PROTOCOL_VERSION = saved
    want = version or SDK_LATEST
    assert result.protocolVersion == want, f"negotiated {result.protocolVersion}, asked {want}"
    assert result.serverInfo.name == "pyro", result.serverInfo
    return result


class Tools:
    """Calls tools and checks every result against the tool's outputSchema."""

    def __init__(self, session, tools):
        self.s = session
        self.schemas = {t.name: t.outputSchema for t in tools}

    async def ok(self, name, **args):
        t0 = time.monotonic()
        r = await self.s.call_tool(name, args)
        text = r.content[0].text if r.content else ""
        assert not r.isError, f"{name}({args}) failed: {text}"
        schema = self.schemas[name]
        assert schema is not None, f"{name} has no outputSchema"
        assert r.structuredContent is not None, f"{name} returned no structuredContent"
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(r.structuredContent, schema, cls=jsonschema.Draft202012Validator)
        log(f"{name} ok in {time.monotonic() - t0:.2f}s")
        return r.structuredContent

    async def err(self, name, **args):
        r = await self.s.call_tool(name, args)
        assert r.isError, f"{name}({args}) should fail: {r}"
        return r.content[0].text
