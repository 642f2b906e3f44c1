#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/pool.sh - the pool library (domains, SPM, tasks,
# volume lifecycle) against a real sanlock daemon: pool_test lifecycle,
# then pool_test crash (a child process killed at every crash point of
# create, snapshot, merge, template, copy and delete; the next SPM recovers
# each task; data checked against the reference; every 12th point on the
# block domain), then pool_test lease-loss (the SPM role lost in the middle
# of merge, template and copy: the next structural step fails, nothing
# more is written, the next SPM recovers; file domains).  lifecycle and
# crash run twice: with two
# file domains, and with a block domain (LVM on a loop device, private
# LVM_SYSTEM_DIR that sees only it) as master plus a file domain.
#
# Environment (set by meson): POOL_TEST, MEMLOCK_SHIM.  Skips (77) when
# sanlock, lvm2 or losetup is missing or not run as root.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"

sl_requires
export PATH="$PATH:/usr/sbin:/sbin"
for c in lvm losetup; do
	command -v "$c" >/dev/null 2>&1 || { echo "SKIP: $c is not installed" >&2; exit 77; }
done
: "${POOL_TEST:?POOL_TEST must point to pool_test}"
sl_init

LOOP= VG=
export LVM_SYSTEM_DIR=$SL_DIR/lvm LVM_SUPPRESS_FD_WARNINGS=1
lvm_cleanup()
{
	[ -n "$VG" ] && vgremove -f "$VG" >/dev/null 2>&1
	[ -n "$LOOP" ] && { pvremove -ff -y "$LOOP" >/dev/null 2>&1; losetup -d "$LOOP"; }
}
sl_on_exit lvm_cleanup

LOOP=$(loop_attach "$SL_DIR/pv0" 2G)
[ -n "$LOOP" ] || exit 1
lvm_private_conf "$LVM_SYSTEM_DIR" "$LOOP"
sl_start 1

run()
{
	local name=$1 scenario=$2
	shift 2
	local d1=$SL_DIR/$name-a d2=$SL_DIR/$name-b
	mkdir -p "$d1" "$d2"
	if ! sl_run 1 "$POOL_TEST" "$scenario" --root "$d1" --root2 "$d2" "$@"; then
		echo "FAIL: pool_test $scenario ($name)" >&2
		sl_log_tail 1 >&2
		exit 1
	fi
}
run file lifecycle
run file-crash crash
run file-lease-loss lease-loss
# block: one VG per run, named by the domain UUID; removed in between
# every 12th crash point on the block domain (each costs a dozen LVM
# commands; the file domain run covers every point of the same code)
for scenario in lifecycle crash; do
	POOL_TEST_STRIDE=12 run "block-$scenario" "$scenario" --lvm-device "$LOOP" \
	    --lvm-system-dir "$LVM_SYSTEM_DIR"
	VG=$(vgs --noheadings -o vg_name 2>/dev/null | tr -d ' ' | head -n1)
	if [ -z "$VG" ]; then
		echo "FAIL: no VG was made on $LOOP" >&2
		exit 1
	fi
	vgremove -f "$VG" >/dev/null || exit 1
	pvremove -ff -y "$LOOP" >/dev/null 2>&1
	VG=
done
echo "PASS"
