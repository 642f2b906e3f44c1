#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The storage mailbox over real LVM on loop devices, without
# device-mapper: a host asks for 8 more extents of a volume whose VG has
# only 8 single-extent holes left, the SPM side runs spm's lvextend and
# answers with the LV's segments; the host follows MORE (more than 6 new
# segments), maps the new extents from the replies alone, and the data it
# writes through that map reads back through LVM's own map
# (tests/integration/mailbox_lvm_helper.c does both sides).  Here: LVM's
# report agrees on the LV size and its segment count.
#
# Needs root, lvm2 and losetup (else exit 77).  Everything it makes (loop
# devices, VG, temp dir) is removed on any exit.
#
# Environment: CP_MBOX_LVM_HELPER = tests/integration/cp_mbox_lvm_helper.

. "$(dirname "$0")/../lib.sh"

lvm_requires "loop devices, LVM"
: "${CP_MBOX_LVM_HELPER:?CP_MBOX_LVM_HELPER must point to cp_mbox_lvm_helper}"
H=$CP_MBOX_LVM_HELPER

VG=cpmbox$$
LOOPS=()
TMP=$(mktemp -d /var/tmp/cowpool-mbox.XXXXXXXX) || exit 1
export LVM_SYSTEM_DIR=$TMP/lvm LVM_SUPPRESS_FD_WARNINGS=1
trap 'lvm_cleanup "$VG"; rm -rf -- "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$TMP" && lvm_two_pvs "$TMP" || exit 1

if "$H" "$VG" "$A" "$B" >h.out 2>h.err; then
	ok
else
	fail "${H##*/}: $(cat h.err)"
fi
read -r _ segs _ rounds _ size <h.out
VOL=0badc0de-0000-4000-8000-000000000001
# 1 extent + 8 scattered ones: 9 segments, the reply carries 6 at a time
expect_eq "segments" 9 "$segs"
expect_eq "rounds (MORE followed)" 2 "$rounds"
expect_eq "size asked" $((9 * 4 * 1024 * 1024)) "$size"
expect_eq "LV size (lvs)" "$size" "$(lvm_report lvs -o lv_size "$VG/$VOL")"
expect_eq "LV segments (lvs)" 9 "$(lvm_report lvs --segments -o seg_start "$VG/$VOL" | wc -l)"
cp_finish
