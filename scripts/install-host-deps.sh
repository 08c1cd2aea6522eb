#!/usr/bin/env bash
# Install the Debian packages pyro uses on the host. Idempotent; uses sudo when not root.
# Packages go in one at a time: some machines carry a newer qemu-utils from backports that
# Debian's qemu-system-x86 replaces, after which qemu-utils must be installed again.
set -euo pipefail
# python3 + python3-venv: the MCP acceptance tests drive pyro with the official Python MCP client.
PKGS=(qemu-system-x86 qemu-utils debootstrap e2fsprogs lz4 cpio xz-utils zstd util-linux iproute2 procps git busybox-static python3 python3-venv)
TOOLS=(qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 e2fsck debugfs lz4 git /usr/bin/python3)
# g++: scripts/fuzz.sh builds libFuzzer (C++) for the cargo-fuzz targets.
PKGS+=(g++)
TOOLS+=(c++)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
updated=0
for round in 1 2; do
  for p in "${PKGS[@]}"; do
    installed "$p" && continue
    if [ "$updated" -eq 0 ]; then
      $SUDO apt-get update -qq
      updated=1
    fi
    echo "[setup] installing $p"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null
  done
done
missing=()
for t in "${TOOLS[@]}"; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] still missing after install: ${missing[*]}" >&2
  exit 1
fi
echo "[setup] host packages present"
