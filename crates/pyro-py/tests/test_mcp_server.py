"""``Pyro.create_server(profile=...).run()`` serves MCP on stdio: a client initializes, lists
exactly the profile's tools, calls one, gets an engine error as an ``isError``
result; closing stdin ends the server, and so does Ctrl-C. No VM is booted.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time

from support import Home, subprocess_env

WORKSPACE_CORE = [
    "vm_run", "workspace_create", "workspace_delete", "workspace_diff", "workspace_exec", "workspace_export",
    "workspace_file_list", "workspace_file_read", "workspace_file_write", "workspace_list", "workspace_logs",
    "workspace_patch_apply", "workspace_reset", "workspace_status", "workspace_summary", "workspace_sync_push", "workspace_update",
    "workspace_command_kill", "workspace_command_read", "workspace_command_status", "workspace_command_wait",
]  # fmt: skip

SERVE = "import sys\nfrom pyro_sdk import Pyro\nPyro().create_server(profile=sys.argv[1]).run()\n"


class Client:
    def __init__(self, home: str, profile: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, profile],
            env=subprocess_env(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, msg: dict):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def response(self, id_: int, seconds: float = 30) -> dict:
        deadline = time.monotonic() + seconds
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            msg = json.loads(line)
            if msg.get("id") == id_ and "method" not in msg:
                return msg

    def initialize(self) -> dict:
        self.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest", "version": "0"}},
            }
        )
        r = self.response(0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_run_serves_the_profile_over_stdio():
    h = Home("mcp")
    c = Client(h.path, "workspace-core")
    try:
        init = c.initialize()
        assert "result" in init, init
        c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        tools = c.response(1)["result"]["tools"]
        assert sorted(t["name"] for t in tools) == sorted(WORKSPACE_CORE)
        c.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "workspace_list", "arguments": {}}})
        r = c.response(2)["result"]
        assert r.get("isError") is False, r
        assert r["structuredContent"]["count"] == 0
        c.send(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "workspace_status", "arguments": {"workspace_id": "ffffffffffff"}},
            }
        )
        r = c.response(3)["result"]
        assert r["isError"] is True, r
        assert "workspace 'ffffffffffff' does not exist" in json.dumps(r)
        # The client closes stdin: the server returns and the interpreter exits cleanly.
        c.proc.stdin.close()
        assert c.proc.wait(timeout=20) == 0, c.proc.stderr.read()
    finally:
        c.kill()
        problems = h.close()
    assert not problems, problems


def test_ctrl_c_stops_the_server():
    h = Home("mcpint")
    c = Client(h.path, "vm-run")
    try:
        c.initialize()
        sent = time.monotonic()
        c.proc.send_signal(signal.SIGINT)
        code = c.proc.wait(timeout=20)
        took = time.monotonic() - sent
        err = c.proc.stderr.read()
        assert code != 0 and "KeyboardInterrupt" in err, (code, err)
        assert "PanicException" not in err and "panicked" not in err, err
        assert took < 5, took
    finally:
        c.kill()
        problems = h.close()
    assert not problems, problems
