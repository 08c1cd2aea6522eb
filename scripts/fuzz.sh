#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for SECONDS each (default 60), one after another.
#
#   scripts/fuzz.sh [SECONDS]          smoke/regression run: the committed corpus is read, new
#                                      inputs go to a temporary directory (the tree stays clean)
#   FUZZ_GROW=1 scripts/fuzz.sh 600    long run that grows fuzz/corpus/<target>/ in place
#   FUZZ_TARGETS="ext4_reader" ...     only these targets
#
# Exits non-zero on the first crash, leak, timeout or out-of-memory; libFuzzer writes the input
# to fuzz/artifacts/<target>/. Needs a C++ compiler (libFuzzer is C++) and, on a fresh machine,
# installs cargo-fuzz itself. Uses a nightly toolchain when rustup has one, else stable with
# RUSTC_BOOTSTRAP=1 (the sanitizer flags are nightly-only).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
targets="${FUZZ_TARGETS:-protocol_frames archive_extract patch_parse ext4_reader oci_manifest oci_layer_extract}"

if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz.sh: a C++ compiler is required (apt-get install g++)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

# Release code with debug assertions (overflow checks), AddressSanitizer so that libFuzzer's
# -malloc_limit_mb sees every single allocation.
build_flags=(--fuzz-dir fuzz --debug-assertions)
start=$(date +%s)
"${fuzz[@]}" build "${build_flags[@]}"
echo "fuzz.sh: built all targets in $(($(date +%s) - start)) s"

scratch_root="$(mktemp -d)"
trap 'rm -rf "$scratch_root"' EXIT
for target in $targets; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  if [ "${FUZZ_GROW:-0}" = 1 ]; then
    dirs=("$corpus")
  else
    mkdir -p "$scratch_root/$target"
    dirs=("$scratch_root/$target" "$corpus")
  fi
  echo "fuzz.sh: $target for ${seconds} s"
  # -rss_limit_mb / -malloc_limit_mb: a guest-sized allocation is a finding, not a slow run.
  # -timeout: one input taking longer than this is a hang.
  "${fuzz[@]}" run "${build_flags[@]}" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=20 \
    -print_final_stats=1
done
