#!/usr/bin/env bash
# The Python venv with the official MCP client that the MCP acceptance tests drive pyro with
# (crates/pyro-cli/tests/mcp.rs runs tests/mcp/*.py). Idempotent: reuses a venv that already
# has the pinned versions. Prints the venv's python.
set -euo pipefail
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/venv"
PINS=("mcp==1.30.0" "jsonschema==4.26.0")
if ! "$VENV/bin/python" -c 'import mcp, jsonschema, importlib.metadata as m; assert m.version("mcp") == "1.30.0"' 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2
fi
echo "$VENV/bin/python"
