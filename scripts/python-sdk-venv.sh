#!/usr/bin/env bash
# The Python venv the Python SDK's tests run in: Debian's python3, the SDK installed from this
# checkout exactly as a user installs it (`pip install ./crates/pyro-py`: maturin from PyPI
# builds the abi3 wheel, which embeds the supervisor and the guest agent), and the pinned
# test tools. The SDK is rebuilt and reinstalled on every run; the tools are reused.
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pyro-ci/py-sdk-venv"
PINS=("pytest==9.2.0" "jsonschema==4.26.0" "mypy==2.4.1")
if ! "$VENV/bin/python" -c 'import pytest, jsonschema, mypy, importlib.metadata as m; assert m.version("pytest") == "9.2.0" and m.version("mypy") == "2.4.1"' 2>/dev/null; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2
fi
echo "[setup] building and installing the Python SDK (pip install ./crates/pyro-py)" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./crates/pyro-py >&2
echo "$VENV/bin/python"
