#!/usr/bin/env bash
# The newcomer's one command: install host packages, build pyro, install the debian:12
# environment on first use (pulled from $PYRO_ENV_REGISTRY when set, else built locally),
# and run a real command in a real VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-host-deps.sh
scripts/build.sh release
PYRO=target/release/pyro
# With PYRO_ENV_REGISTRY set, the environment is pulled from that registry as this user (no
# root needed); without it, it is built locally from Debian packages.
if [ "$(id -u)" -ne 0 ] && [ -z "${PYRO_ENV_REGISTRY:-}" ] \
  && ! "$PYRO" env inspect debian:12 --json | grep -q '"installed": true'; then
  # debootstrap needs root once; the result is handed back to this user.
  cache="${PYRO_CACHE_DIR:-$HOME/.cache/pyro}"
  sudo env PYRO_CACHE_DIR="$cache" "$PYRO" env pull debian:12
  sudo chown -R "$(id -u):$(id -g)" "$cache"
fi
"$PYRO" doctor
"$PYRO" run debian:12 -- git --version
