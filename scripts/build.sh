#!/usr/bin/env bash
# Build pyro: host binaries (pyro, pyro-supervisor) and the static guest agent, placed side
# by side in target/<profile>/ where the engine looks for them.
# usage: scripts/build.sh [release|debug]   (default release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
if ! command -v cargo >/dev/null; then
  echo "[setup] cargo not found: install Rust with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi
if [ "$profile" = release ]; then
  cargo build --release --workspace --bins
else
  cargo build --workspace --bins
fi
scripts/build-agent.sh
