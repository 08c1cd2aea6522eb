#!/usr/bin/env bash
# The Python venv with the official MCP client 2.x, whose ClientExtension mechanism lets a test
# declare the 2026-07-28 tasks extension (tests/mcp/tasks.py). Separate from
# scripts/mcp-client-venv.sh, whose 1.30.0 pin the other MCP tests keep. Idempotent: reuses a
# venv that already has the pinned version. Prints the venv's python.
set -euo pipefail
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/venv-mcp2"
PINS=("mcp==2.3.0")
if ! "$VENV/bin/python" -c 'import mcp, importlib.metadata as m; assert m.version("mcp") == "2.3.0"' 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2
fi
echo "$VENV/bin/python"
