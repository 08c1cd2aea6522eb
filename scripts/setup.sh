#!/usr/bin/env bash
# The newcomer's one command: install host packages, build pyro, build the debian:12
# environment on first use, and run a real command in a real VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-host-deps.sh
scripts/build.sh release
PYRO=target/release/pyro
if [ "$(id -u)" -ne 0 ] && ! "$PYRO" env inspect debian:12 --json | grep -q '"installed": true'; then
  # debootstrap needs root once; the result is handed back to this user.
  cache="${PYRO_CACHE_DIR:-$HOME/.cache/pyro}"
  sudo env PYRO_CACHE_DIR="$cache" "$PYRO" env pull debian:12
  sudo chown -R "$(id -u):$(id -g)" "$cache"
fi
"$PYRO" doctor
"$PYRO" run debian:12 -- git --version
