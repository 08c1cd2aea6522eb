#!/usr/bin/env bash
# Install the Debian packages pyro uses on the host. Idempotent; uses sudo when not root.
set -euo pipefail
PKGS=(qemu-system-x86 qemu-utils debootstrap e2fsprogs lz4 cpio xz-utils zstd util-linux iproute2 procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[setup] host packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[setup] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
