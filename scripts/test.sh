#!/usr/bin/env bash
# The one test command: installs what the tests need (host packages, binaries, the
# debian:12, debian:12-base and debian:12-build environments, a non-root test user, a
# loopback OCI registry) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  # A world-readable cache, so the unprivileged-user test can boot the same environments.
  export PYRO_CACHE_DIR="${PYRO_CACHE_DIR:-/var/cache/pyro}"
  id pyro-test >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin pyro-test
fi
scripts/install-host-deps.sh
# A real OCI registry on loopback (Debian's docker-registry) for the push/pull tests: one
# shared instance for the main flow; tests that tamper with storage start private ones.
scripts/registry.sh install
PYRO_TEST_REGISTRY_DIR="$(mktemp -d /tmp/pyro-test-registry.XXXXXX)"
export PYRO_TEST_REGISTRY_DIR
trap 'scripts/registry.sh stop "$PYRO_TEST_REGISTRY_DIR"; rm -rf "$PYRO_TEST_REGISTRY_DIR"' EXIT
PYRO_TEST_REGISTRY="$(scripts/registry.sh start "$PYRO_TEST_REGISTRY_DIR")"
export PYRO_TEST_REGISTRY
export PYRO_REQUIRE_REGISTRY=1
PYRO_MCP_PYTHON="$(scripts/mcp-client-venv.sh)"
export PYRO_MCP_PYTHON
# The official MCP client 2.x, whose extension mechanism declares the tasks extension.
PYRO_MCP2_PYTHON="$(scripts/mcp2-client-venv.sh)"
export PYRO_MCP2_PYTHON
# CI must never skip the MCP acceptance tests for want of the client.
export PYRO_REQUIRE_MCP_CLIENT=1
# The TypeScript MCP SDK client: tool schemas must compile in it without a warning.
PYRO_TS_MCP_MODULES="$(scripts/ts-mcp-client.sh)"
export PYRO_TS_MCP_MODULES
# The real agent clients (Claude Code, Codex, OpenCode, from npm) that `pyro host` is tested with.
PYRO_HOST_CLIENTS_BIN="$(scripts/host-clients.sh)"
export PYRO_HOST_CLIENTS_BIN
export PYRO_REQUIRE_HOST_CLIENTS=1
scripts/build.sh debug
# The Python SDK, built and installed the way a user installs it (see the script).
PYRO_SDK_PYTHON="$(scripts/python-sdk-venv.sh)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
for env in debian:12 debian:12-base debian:12-build; do
  target/debug/pyro env pull "$env"
done
# The SDK stays a documented product: rustdoc without warnings, and the examples run.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
for example in run_once workspace_loop stopped_disk; do
  cargo run -q -p pyro --example "$example"
done
# TIDY_STRICT: a tidy rule about a crate that does not exist, or an allow-list entry that
# excuses nothing, fails instead of being skipped.
TIDY_STRICT=1 cargo test --workspace -- --test-threads=2
# The Python SDK's tests (real guests, through the installed wheel).
"$PYRO_SDK_PYTHON" -m pytest crates/pyro-py/tests -q
# Fuzz smoke test: every cargo-fuzz target builds and runs a few seconds over its corpus.
scripts/fuzz.sh 5
