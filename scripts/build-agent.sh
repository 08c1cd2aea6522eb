#!/usr/bin/env bash
# Build the guest agent as a static binary and place it next to the host binaries
# (target/release and target/debug), where the engine looks for it.
# The explicit --target is required: with it, crt-static applies to the agent only and not
# to build scripts and proc-macros.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile guest -p pyro-agent --target "$TRIPLE"
out="target/$TRIPLE/guest/pyro-agent"
if ! file "$out" 2>/dev/null | grep -q "static"; then
  if ldd "$out" >/dev/null 2>&1; then
    echo "[build] $out is not statically linked" >&2
    exit 1
  fi
fi
for profile in release debug; do
  mkdir -p "target/$profile"
  cp -f "$out" "target/$profile/pyro-guest-agent.tmp"
  mv -f "target/$profile/pyro-guest-agent.tmp" "target/$profile/pyro-guest-agent"
done
echo "[build] guest agent: $out ($(stat -c %s "$out") bytes)"
