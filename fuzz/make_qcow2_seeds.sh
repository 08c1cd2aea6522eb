#!/usr/bin/env bash
# Writes the qcow2 bases of the ext4_reader fuzz target (run once, from anywhere; needs
# qemu-img, qemu-io and debugfs) and a few corpus seeds that select them:
#   ext4/overlay.qcow2     a qcow2 v3 overlay (4 KiB clusters) over ext4/csum.img holding a
#                          guest-like change (a new file and directory, written through qemu-io
#                          as a guest's writes land); its backing file name is
#                          /proc/self/fd/1000, where the fuzz target keeps csum.img open.
#   ext4/standalone.qcow2  ext4/plain.img as a qcow2 v3 image of 512-byte clusters (16 L1
#                          entries, 64-entry L2 tables), no backing file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp "$here/ext4/csum.img" "$work/base.img"
cp "$here/ext4/csum.img" "$work/changed.img"
printf 'written in the overlay\n' >"$work/new.txt"
debugfs -w -R "mkdir /workspace/forked" "$work/changed.img" >/dev/null 2>&1
debugfs -w -R "write $work/new.txt /workspace/forked/new.txt" "$work/changed.img" >/dev/null 2>&1
qemu-img create -q -f qcow2 -o cluster_size=4096 -F raw -b "$work/base.img" "$work/overlay.qcow2"
# Every differing 4 KiB block, written through qemu-io.
python3 - "$work" <<'PY'
import subprocess, sys, os
work = sys.argv[1]
a = open(f"{work}/base.img", "rb").read()
b = open(f"{work}/changed.img", "rb").read()
cmd = ["qemu-io", "-f", "qcow2"]
for i in range(0, len(a), 4096):
    if a[i:i + 4096] != b[i:i + 4096]:
        path = f"{work}/block-{i}"
        open(path, "wb").write(b[i:i + 4096])
        cmd += ["-c", f"write -q -s {path} {i} 4096"]
assert len(cmd) > 3
subprocess.run(cmd + [f"{work}/overlay.qcow2"], check=True)
PY
qemu-img rebase -u -F raw -b /proc/self/fd/1000 "$work/overlay.qcow2"
cp "$work/overlay.qcow2" "$here/ext4/overlay.qcow2"
qemu-img convert -O qcow2 -o cluster_size=512 "$here/ext4/plain.img" "$here/ext4/standalone.qcow2"

# Seeds: the selector byte alone, and a few header edits ([offset: u24 LE][len: u8][bytes]).
corpus="$here/corpus/ext4_reader"
mkdir -p "$corpus"
seed() { printf "$2" >"$corpus/$1"; }
seed qcow2-overlay '\x03'
seed qcow2-standalone '\x04'
seed qcow2-huge-l1 '\x03\x24\x00\x00\x04\xff\xff\xff\xff'          # l1_size = 2^32-1
seed qcow2-l1-far '\x03\x28\x00\x00\x08\x00\x00\x01\x00\x00\x00\x00\x00' # l1_table_offset = 2^40
seed qcow2-cluster-bits '\x04\x14\x00\x00\x04\x00\x00\x00\x1f'      # cluster_bits = 31
seed qcow2-compressed '\x03\x00\x40\x00\x01\xc0'  # L2[0] (at 0x4000) compressed
echo "wrote $here/ext4/overlay.qcow2, $here/ext4/standalone.qcow2 and qcow2 seeds"
