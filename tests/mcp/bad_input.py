"""Bad input never stops the server:
- unknown tool, missing and wrongly typed arguments -> error results, server keeps serving;
- a malformed JSON-RPC line on stdin -> a JSON-RPC error response, server keeps serving;
- an unknown profile -> exit 2 with the profile list;
- HTTP: a foreign Origin is rejected, a non-loopback bind needs --token, and with --token every
  request needs the bearer token.
"""

import asyncio
import json
import os
import subprocess
import urllib.error
import urllib.request

from mcp.shared.exceptions import McpError

from common import PYRO, http_server, log, server_env, stdio_session


async def sdk_cases():
    async with stdio_session("workspace-core") as (s, _):
        try:
            await s.call_tool("no_such_tool", {})
            raise AssertionError("unknown tool accepted")
        except McpError as e:
            log(f"unknown tool -> JSON-RPC error: {e}")
        for args, needle in [
            ({}, "missing field `workspace_id`"),
            ({"workspace_id": 5}, "invalid type"),
            ({"workspace_id": "abc", "bogus": 1}, "unknown field `bogus`"),
            ({"workspace_id": "nope00000000"}, "not_found"),
        ]:
            r = await s.call_tool("workspace_status", args)
            text = r.content[0].text
            assert r.isError and needle in text, f"{args}: {r}"
            log(f"workspace_status {args} -> isError: {text}")
        r = await s.call_tool("workspace_exec", {"workspace_id": "abc", "command": "true", "timeout_seconds": "x"})
        assert r.isError and "invalid_input" in r.content[0].text, r
        r = await s.call_tool("workspace_file_read", {"workspace_id": "abc", "path": "../../etc/passwd"})
        assert r.isError, r
        # Still serving.
        listed = await s.list_tools()
        assert len(listed.tools) == 16


def raw_stdio_case():
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        "{this is not json",
        {"jsonrpc": "2.0", "id": 2, "bogus": True},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    data = "".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines)
    p = subprocess.Popen([PYRO, "mcp", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=server_env())
    out, err = p.communicate(data, timeout=60)
    assert p.returncode == 0, f"exit {p.returncode}: {err}"
    replies = {}
    nulls = []
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("id") is None:
            nulls.append(m)
        else:
            replies[m["id"]] = m
    assert any(m.get("error", {}).get("code") == -32700 for m in nulls), f"no parse error response: {out}"
    assert replies[2]["error"]["code"] == -32600, replies[2]
    assert len(replies[3]["result"]["tools"]) == 16, "server stopped serving after bad lines"
    log("malformed lines -> -32700 / -32600, then tools/list still answered")


def profile_case():
    p = subprocess.run([PYRO, "mcp", "serve", "--profile", "everything"], capture_output=True, text=True,
                       env=server_env(), timeout=30)
    assert p.returncode == 2, p
    for name in ["vm-run", "workspace-core", "workspace-full"]:
        assert name in p.stderr, p.stderr
    log("unknown profile -> exit 2 listing the profiles")


def post(url, headers):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                  "clientInfo": {"name": "raw", "version": "1"}}}).encode()
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, h), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def http_cases():
    with http_server("workspace-core") as url:
        assert post(url, {}) == 200
        assert post(url, {"Origin": "http://localhost:3000"}) == 200
        code = post(url, {"Origin": "https://evil.example"})
        assert code == 403, f"foreign Origin answered {code}"
        log(f"foreign Origin -> {code}")
    p = subprocess.run([PYRO, "mcp", "serve", "--http", "0.0.0.0:0"], capture_output=True, text=True,
                       env=server_env(), timeout=30)
    assert p.returncode == 1 and "--token" in p.stderr, p
    log(f"non-loopback bind without --token refused: {p.stderr.strip()}")
    with http_server("workspace-core", ["--token", "s3cret"]) as url:
        assert post(url, {}) == 401
        assert post(url, {"Authorization": "Bearer wrong"}) == 401
        assert post(url, {"Authorization": "Bearer s3cret"}) == 200
    log("bearer token enforced")


async def main():
    await sdk_cases()
    raw_stdio_case()
    profile_case()
    http_cases()
    log("bad input passed")


asyncio.run(main())
