"""A guest never gets a successful answer from the host's MCP HTTP server.

The server listens on the host's 127.0.0.1; QEMU's user network maps 10.0.2.2 to it for a
guest with `egress` unless egress is kept off the host. Either the guest cannot connect at
all, or it gets 401/403: it has no token (the token lives under the host's PYRO_HOME), and a
request relayed from the guest cannot present a matching Host either.
"""

import json
import re
import subprocess
import urllib.parse

from common import PYRO, http_server, log, server_env


def pyro(*args, timeout=300):
    p = subprocess.run([PYRO, *args], capture_output=True, text=True, env=server_env(), timeout=timeout)
    assert p.returncode == 0, f"pyro {args}: {p.stdout}{p.stderr}"
    return p.stdout


# Bash's /dev/tcp: the guest image has bash but no promise of curl. Each attempt is bounded
# by `timeout` (a filtered network may drop the SYN rather than refuse it) and prints
# NO_ANSWER (no connection, or nothing came back) or the HTTP status line of the answer.
GUEST_SCRIPT = r"""
cat > /tmp/attempt.sh <<'ATTEMPT'
body='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"guest","version":"1"}}}'
exec 3<>/dev/tcp/10.0.2.2/$PORT || exit 1
printf 'POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n%s%sContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
  "$1" "$2" "${2:+$'\r\n'}" "${#body}" "$body" >&3
head -n1 <&3 | tr -d '\r'
ATTEMPT
for host in "127.0.0.1:$PORT" "10.0.2.2:$PORT" "localhost:$PORT"; do
  for auth in "" "Authorization: Bearer guessed-token-0123456789abcdef"; do
    line=$(timeout 8 bash /tmp/attempt.sh "$host" "$auth" 2>/dev/null)
    echo "ANSWER ${line:-NO_ANSWER}"
  done
done
"""


def main():
    with http_server("workspace-full") as url:
        port = urllib.parse.urlparse(url).port
        ws = json.loads(pyro("workspace", "create", "debian:12", "--network-policy", "egress", "--json"))["workspace_id"]
        try:
            out = json.loads(pyro("workspace", "exec", ws, "--json", "--timeout-seconds", "120", "--", "env",
                                  f"PORT={port}", "bash", "-c", GUEST_SCRIPT))
            assert out["exit_code"] == 0, out
            lines = [l for l in out["stdout"].splitlines() if l.strip()]
            log(f"guest attempts: {lines}")
            assert len(lines) == 6, out
            for line in lines:
                if line == "ANSWER NO_ANSWER":
                    continue
                m = re.match(r"ANSWER HTTP/1\.[01] (\d{3})", line)
                assert m, f"the guest got no HTTP status or a broken answer: {line!r}"
                assert m.group(1) in ("401", "403"), f"the guest got an MCP answer: {line!r}"
            log("the guest never got a successful MCP answer (connection refused or 401/403)")
        finally:
            pyro("workspace", "delete", ws, "--json")


main()
