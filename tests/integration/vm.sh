#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# vm.sh: a real guest writes its disk through cowpool's NBD server.
#
# A qcow2 overlay (over a base holding some data) is exported by the NBD
# server on a unix socket; qemu-system-x86_64 boots the tiny Linux of
# scripts/guest with that export as its virtio disk (QEMU is the NBD
# client).  In the guest, dd writes a known pattern at several offsets
# (O_DIRECT and buffered + fsync, MiB-aligned and not, over the base's
# data and at the end of the disk), the page cache is dropped, the regions
# are read back and their sha256 printed on the serial console, and the
# guest powers off.  The test checks that QEMU stopped by itself, the
# checksums against the same regions of a raw image built on the host, the
# export's content over a new NBD connection, then, with the server
# stopped, the overlay with qemu-img compare and qemu-img check, and the
# base unchanged.
#
# NBD_SERVER: the server command (default "$COWPOOL nbd"), called with
# qemu-nbd's flags, so NBD_SERVER=qemu-nbd runs the same test against
# qemu-nbd.  GUEST_DIR: the guest's cache (scripts/guest; fetched from
# Debian's archive when missing).  Skips (77) without qemu-img, qemu-io,
# qemu-system-x86_64, or when no kernel can be had.
. "$(dirname "$0")/../lib.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
GUEST=$SRC/scripts/guest

cp_init
requires qemu-img qemu-io qemu-system-x86_64 timeout
requires_gen

NBD_SERVER=${NBD_SERVER:-"$COWPOOL nbd"}
read -r -a SERVER <<<"$NBD_SERVER"

# the guest: fetched and built once (scripts/setup does it too)
rc=0
"$GUEST" prepare >guest-prepare.log 2>&1 || rc=$?
if [ $rc -eq 2 ]; then
	cat guest-prepare.log >&2
	echo "SKIP: no guest kernel could be had from Debian's archive" >&2
	exit 77
elif [ $rc -ne 0 ]; then
	cat guest-prepare.log >&2
	echo "FAIL: scripts/guest prepare failed" >&2
	exit 1
fi

MIB=$((1 << 20))
SIZE=$((1024 * MIB))
SOCK=$TMP/nbd.sock
NAME=vm
SPID=

stop_server()
{
	[ -n "$SPID" ] || return 0
	kill "$SPID" 2>/dev/null
	# not our child (--fork): wait until it is gone, bounded
	timeout 30 tail --pid="$SPID" -f /dev/null
	SPID=
}
trap 'stop_server; rm -rf -- "$TMP"' EXIT

# ---- images: a base with 0x5a at 300M (2M) and at 700M (1M), an overlay
"$COWPOOL" create -q -f qcow2 base.qcow2 $SIZE || fail "create base"
qemu-io -f qcow2 -c "write -q -P 0x5a 300M 2M" -c "write -q -P 0x5a 700M 1M" \
	base.qcow2 || fail "write base"
"$COWPOOL" create -q -f qcow2 -b base.qcow2 -F qcow2 disk.qcow2 || fail "create overlay"
qemu-img convert -O raw base.qcow2 base-expected.raw

# the pattern the guest writes: 4 MiB of mixed random, text and zero blocks
"$CP_GEN" data 11 $((4 * MIB)) >pat || fail "cp_gen data"

# the expected disk after the guest's writes
cp base-expected.raw expected.raw
dd if=pat of=expected.raw bs=1M seek=0 conv=notrunc status=none
dd if=pat of=expected.raw bs=4k seek=$((300 * 256 + 3)) conv=notrunc status=none
dd if=pat of=expected.raw bs=1M count=1 seek=1023 conv=notrunc status=none
# region name, dd block size, first block, block count
REGIONS="r0 1M 0 4
r300 4k 76800 1027
r600 1M 600 1
r700 1M 700 1
r1023 1M 1023 1"

cat >run.sh <<EOF
# in the guest, in /data: write, flush, drop the cache, read back
set -e
dd if=pat of=/dev/vda bs=1M seek=0 oflag=direct 2>/dev/null
dd if=pat of=/dev/vda bs=4k seek=$((300 * 256 + 3)) conv=fsync 2>/dev/null
dd if=pat of=/dev/vda bs=1M count=1 seek=1023 oflag=direct 2>/dev/null
sync
blockdev --flushbufs /dev/vda
echo 3 >/proc/sys/vm/drop_caches
echo "$REGIONS" | while read -r name bs skip count; do
	sum=\$(dd if=/dev/vda bs=\$bs skip=\$skip count=\$count 2>/dev/null | sha256sum)
	echo "cowpool-vm: \$name \${sum%% *}"
done
echo "cowpool-vm: size \$(blockdev --getsize64 /dev/vda)"
EOF

# ---- the export
"${SERVER[@]}" -f qcow2 -k "$SOCK" -x "$NAME" -t --fork --pid-file server.pid \
	--cache none --aio native disk.qcow2 >server.log 2>&1 ||
	{ cat server.log >&2; fail "NBD server did not start: $NBD_SERVER"; cp_finish; }
SPID=$(cat server.pid)
[ -S "$SOCK" ] && ok || fail "no socket at $SOCK after --fork"
URI="nbd+unix:///$NAME?socket=$SOCK"

# ---- the guest
rc=0
"$GUEST" run -t 120 -l console.log \
	-d "file=$URI,format=raw,if=virtio,cache=none" run.sh pat || rc=$?
expect_eq "QEMU exit status (124: still running after 120 s)" 0 "$rc"
if ! grep -q "cowpool-guest: exit 0" console.log; then
	fail "the guest's script did not finish; console:"
	sed 's/^/  | /' console.log >&2
fi
expect_eq "disk size seen by the guest" $SIZE \
	"$(sed -n 's/^cowpool-vm: size \([0-9]*\).*/\1/p' console.log)"
while read -r name bs skip count; do
	want=$(dd if=expected.raw bs="$bs" skip="$skip" count="$count" status=none |
		sha256sum | cut -d' ' -f1)
	got=$(sed -n "s/^cowpool-vm: $name \([0-9a-f]*\).*/\1/p" console.log)
	expect_eq "guest's checksum of region $name" "$want" "$got"
done <<<"$REGIONS"

# ---- the export, read again over a new connection
if qemu-img compare -q -f raw -F raw expected.raw "$URI"; then ok
else fail "export differs from the expected disk after the guest's run"; fi

# ---- the files, the server stopped
stop_server
if qemu-img check -q disk.qcow2; then ok; else fail "qemu-img check disk.qcow2"; fi
if qemu-img compare -q -F qcow2 expected.raw disk.qcow2; then ok
else fail "disk.qcow2 differs from the expected disk"; fi
if qemu-img compare -q -F qcow2 base-expected.raw base.qcow2; then ok
else fail "the base changed"; fi
if qemu-img check -q base.qcow2; then ok; else fail "qemu-img check base.qcow2"; fi
cp_finish
