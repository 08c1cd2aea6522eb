#!/usr/bin/env bash
# Build the guest agent (pyro-agent: initramfs /init, PID 1 and agent service) as a static
# binary and place it next to the host binaries (target/release and target/debug), where the
# engine looks for it.
# The explicit --target is required: with it, crt-static applies to the agent only and not to
# build scripts and proc-macros (which cannot be static).
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
build() {
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile guest -p pyro-agent --target "$TRIPLE" "$@"
}
out="$TARGET_DIR/$TRIPLE/guest/pyro-agent"
# The hostile test agent (feature `hostile`, crates/pyro-agent/src/hostile.rs) first, so the
# real agent is what the shared output path holds at the end; the shipped agent never
# contains the hostile code. Tests boot it with PYRO_AGENT_BIN=target/debug/pyro-hostile-agent.
# PYRO_SKIP_HOSTILE_AGENT=1 skips it (packaging).
if [ "${PYRO_SKIP_HOSTILE_AGENT:-0}" != 1 ]; then
  build --features hostile
  for profile in release debug; do
    mkdir -p "$TARGET_DIR/$profile"
    cp -f "$out" "$TARGET_DIR/$profile/pyro-hostile-agent.tmp"
    mv -f "$TARGET_DIR/$profile/pyro-hostile-agent.tmp" "$TARGET_DIR/$profile/pyro-hostile-agent"
  done
fi
build
# The agent runs as /init in an initramfs with no dynamic loader: refuse anything dynamic.
if ! file "$out" | grep -q "static"; then
  echo "[build] $out is not statically linked: $(file -b "$out")" >&2
  exit 1
fi
if ldd "$out" 2>/dev/null | grep -q "=>"; then
  echo "[build] ldd reports shared libraries for $out" >&2
  exit 1
fi
for profile in release debug; do
  mkdir -p "$TARGET_DIR/$profile"
  # Copy then rename: a VM being started may be reading the old binary.
  cp -f "$out" "$TARGET_DIR/$profile/pyro-guest-agent.tmp"
  mv -f "$TARGET_DIR/$profile/pyro-guest-agent.tmp" "$TARGET_DIR/$profile/pyro-guest-agent"
done
echo "[build] guest agent: $out ($(stat -c %s "$out") bytes, static)"
