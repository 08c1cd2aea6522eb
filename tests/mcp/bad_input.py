"""Bad input never stops the server:
- unknown tool, missing and wrongly typed arguments -> error results, server keeps serving;
- a malformed JSON-RPC line on stdin -> a JSON-RPC error response, server keeps serving;
- bytes that are not UTF-8 on stdin -> a parse error, the server keeps serving and keeps its VMs;
- an unknown profile -> exit 2 with the profile list;
- allow_host_compat=true from a client is refused unless the operator started the server with
  --allow-host-compat;
- HTTP: every request needs the bearer token (stored 0600 under PYRO_HOME, or from
  PYRO_MCP_TOKEN / --token-file); Host must carry the served port; a foreign Origin is rejected;
  a non-loopback bind needs an explicitly chosen token.
"""

import asyncio
import json
import os
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

from common import PYRO, http_server, http_session, log, server_env, server_token, stdio_session


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
        assert len(listed.tools) == 20


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
    assert len(replies[3]["result"]["tools"]) == 20, "server stopped serving after bad lines"
    log("malformed lines -> -32700 / -32600, then tools/list still answered")


def raw_bytes_case():
    """Invalid UTF-8 on stdin used to end the server (deleting its VMs): now it is a parse error."""
    p = subprocess.Popen([PYRO, "mcp", "serve", "--profile", "workspace-full"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env())

    def send(msg):
        p.stdin.write((msg if isinstance(msg, bytes) else json.dumps(msg).encode()) + b"\n")
        p.stdin.flush()

    def answer(want_id):
        while True:
            line = p.stdout.readline()
            assert line, f"server ended (exit {p.wait()}): {p.stderr.read().decode(errors='replace')}"
            m = json.loads(line)
            if m.get("id") == want_id:
                return m

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        answer(1)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "vm_create", "arguments": {"environment": "debian:12"}}})
        created = answer(2)["result"]["structuredContent"]
        vm_id = created["vm_id"]
        send(b"\xff\xfe")
        err = answer(None)
        assert err["error"]["code"] == -32700 and "UTF-8" in err["error"]["message"], err
        send(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"vm_status","arguments":{"vm_id":"' +
             vm_id.encode() + b'"}},"junk":"\xc3\x28"}')
        err = answer(None)
        assert err["error"]["code"] == -32700, err
        send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "vm_status", "arguments": {"vm_id": vm_id}}})
        status = answer(4)["result"]
        assert not status.get("isError"), status
        assert status["structuredContent"]["vm_id"] == vm_id, status
        log(f"invalid UTF-8 lines -> -32700, then vm_status of {vm_id} still answered ({status['structuredContent']['state']})")
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0, p.returncode


async def host_compat_case():
    """Only the operator may allow unsandboxed host execution; a client asking is refused."""
    env = {**server_env(), "PYRO_BACKEND": "host-compat"}
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", "--profile", "workspace-full"], env=env)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            for tool, args in [
                ("vm_run", {"environment": "debian:12", "command": "echo on-the-host", "allow_host_compat": True}),
                ("vm_create", {"environment": "debian:12", "allow_host_compat": True}),
                ("workspace_create", {"environment": "debian:12", "allow_host_compat": True}),
            ]:
                res = await s.call_tool(tool, args)
                text = res.content[0].text
                assert res.isError and "pyro mcp serve --allow-host-compat" in text, f"{tool}: {res}"
                assert "invalid_input" in text, text
            listed = await s.call_tool("workspace_list", {})
            assert listed.structuredContent["count"] == 0, listed
            log("allow_host_compat=true from the client refused without the operator flag; nothing created")
    params = StdioServerParameters(command=PYRO, args=["mcp", "serve", "--allow-host-compat"], env=env)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool("vm_run", {"environment": "debian:12", "command": "echo on-the-host",
                                               "allow_host_compat": True})
            assert not res.isError, res
            assert res.structuredContent["execution_mode"] == "host_compat", res.structuredContent
            assert res.structuredContent["stdout"].strip() == "on-the-host", res.structuredContent
            log("with --allow-host-compat the operator's choice is honoured")


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


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def http_cases():
    token = server_token()
    path = os.path.join(os.environ["PYRO_HOME"], "mcp-token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    assert open(path).read().strip() == token and len(token) >= 32
    assert server_token() == token, "the stored token changed between calls"
    with http_server("workspace-core") as url:
        port = urllib.parse.urlparse(url).port
        assert post(url, {}) == 401, "no token must be refused"
        assert post(url, bearer("wrong")) == 401
        assert post(url, bearer(token[:-1] + ("0" if token[-1] != "0" else "1"))) == 401
        assert post(url, {"Authorization": token}) == 401, "a token without the Bearer scheme"
        assert post(url, bearer(token)) == 200
        # Host must name the served port (and a loopback name): 403 otherwise, even with the token.
        assert post(url, {**bearer(token), "Host": f"127.0.0.1:{port + 1 if port < 65535 else 1}"}) == 403
        assert post(url, {**bearer(token), "Host": "127.0.0.1"}) == 403
        assert post(url, {**bearer(token), "Host": f"10.0.2.2:{port}"}) == 403
        assert post(url, {**bearer(token), "Host": f"evil.example:{port}"}) == 403
        assert post(url, {**bearer(token), "Host": f"localhost:{port}"}) == 200
        assert post(url, {**bearer(token), "Origin": "http://localhost:3000"}) == 200
        code = post(url, {**bearer(token), "Origin": "https://evil.example"})
        assert code == 403, f"foreign Origin answered {code}"
        log("stored token: none/wrong -> 401; wrong Host port -> 403; foreign Origin -> 403; right -> 200")
    env_token = "env-token-0123456789abcdef"
    with http_server("workspace-core", env={**server_env(), "PYRO_MCP_TOKEN": env_token}) as url:
        assert post(url, bearer(token)) == 401, "PYRO_MCP_TOKEN overrides the stored token"
        assert post(url, bearer(env_token)) == 200
    with tempfile.TemporaryDirectory() as d:
        tf = os.path.join(d, "token")
        file_token = "file-token-0123456789abcdef"
        with open(tf, "w") as f:
            f.write(file_token + "\n")
        os.chmod(tf, 0o644)
        p = subprocess.run([PYRO, "mcp", "serve", "--http", "127.0.0.1:0", "--token-file", tf], capture_output=True,
                           text=True, env=server_env(), timeout=30)
        assert p.returncode == 1 and "chmod 600" in p.stderr, p
        os.chmod(tf, 0o600)
        with http_server("workspace-core", ["--token-file", tf]) as url:
            assert post(url, bearer(token)) == 401
            assert post(url, bearer(file_token)) == 200
            async with http_session(url, token=file_token) as (s, _):
                assert len((await s.list_tools()).tools) == 20
    log("PYRO_MCP_TOKEN and --token-file (0600 only) override the stored token")
    p = subprocess.run([PYRO, "mcp", "serve", "--http", "127.0.0.1:0", "--token", "s3cret"], capture_output=True,
                       text=True, env=server_env(), timeout=30)
    assert p.returncode == 1 and "16 to 4096 characters" in p.stderr, p
    p = subprocess.run([PYRO, "mcp", "serve", "--http", "0.0.0.0:0"], capture_output=True, text=True,
                       env=server_env(), timeout=30)
    assert p.returncode == 1 and "--token-file" in p.stderr, p
    log(f"non-loopback bind without a chosen token refused: {p.stderr.strip()}")


async def main():
    # Optional case names on the command line run just those (to see one fail on an old build).
    only = set(sys.argv[1:])
    cases = [("sdk", sdk_cases), ("raw_lines", raw_stdio_case), ("raw_bytes", raw_bytes_case),
             ("host_compat", host_compat_case), ("profile", profile_case), ("http", http_cases)]
    for name, case in cases:
        if not only or name in only:
            r = case()
            if asyncio.iscoroutine(r):
                await r
    log("bad input passed")


asyncio.run(main())
