#!/usr/bin/env bash
# The real agent clients `pyro host` writes configuration for, installed from the npm registry
# at pinned versions into a cache directory, so crates/pyro-cli/tests/host.rs can run each
# client's own "list MCP servers" command against the config `pyro host connect` wrote.
# Idempotent: reuses a prefix that already has the pinned versions. Prints the prefix's bin dir.
set -euo pipefail
PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/host-clients"
PINS=("@anthropic-ai/claude-code@2.1.332" "@openai/codex@0.171.0" "opencode-ai@1.18.33")
STAMP="$PREFIX/.pins"
if [ "$(cat "$STAMP" 2>/dev/null)" != "${PINS[*]}" ]; then
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  npm install --silent --no-fund --no-audit --prefix "$PREFIX" "${PINS[@]}" >&2
  echo "${PINS[*]}" > "$STAMP"
fi
echo "$PREFIX/node_modules/.bin"
