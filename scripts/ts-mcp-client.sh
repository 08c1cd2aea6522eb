#!/usr/bin/env bash
# The official TypeScript MCP SDK client (npm `@modelcontextprotocol/sdk`, pinned) that
# tests/mcp/ts_client.mjs drives `pyro mcp serve` with: it compiles every outputSchema with
# ajv, as MCP Inspector and Claude Code do, and prints a warning for any schema keyword or
# format it does not know. Idempotent: reuses a cache dir that already has the pinned
# version. Prints the node_modules directory (for NODE_PATH).
set -euo pipefail
SDK_VERSION="1.32.2"
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/ts-mcp-client"
have() {
  node -e "const p=require('$DIR/node_modules/@modelcontextprotocol/sdk/package.json'); process.exit(p.version==='$SDK_VERSION'?0:1)" 2>/dev/null
}
if ! have; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo '{"name":"pyro-ts-mcp-client","private":true}' >"$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@modelcontextprotocol/sdk@$SDK_VERSION" >&2
  have
fi
echo "$DIR/node_modules"
