#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Real LVM on loop devices, without device-mapper: spm/lvm.c creates and
# changes the VG and LVs, cp_lvm_open_lv() reaches an LV through its extent
# map (blockcore linear device), and every byte is checked by reading the
# loop devices directly at the offsets computed here from LVM's plain-text
# report (independently of the JSON reader under test).  Then a qcow2 image
# on an LV fills it, the LV is extended while the image is open, the device
# refreshed and writes go past the old end; the image checks clean (and
# qemu-img check agrees when qemu-img is installed).
#
# Needs root, lvm2 and losetup (else exit 77).  Everything it makes (loop
# devices, VG, temp dir) is removed on any exit.  LVM only sees this test's
# loop devices: private LVM_SYSTEM_DIR whose filter accepts just them.
#
# Environment: CP_LVM_HELPER = tests/integration/cp_lvm_helper (meson).

. "$(dirname "$0")/../lib.sh"

lvm_requires "loop devices, LVM"
: "${CP_LVM_HELPER:?CP_LVM_HELPER must point to cp_lvm_helper}"
H=$CP_LVM_HELPER

VG=cptest$$
LOOPS=()
TMP=$(mktemp -d /var/tmp/cowpool-lvm.XXXXXXXX) || exit 1
export LVM_SYSTEM_DIR=$TMP/lvm
export LVM_SUPPRESS_FD_WARNINGS=1

cleanup()
{
	lvm_cleanup "$VG"
	rm -rf -- "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$TMP" || exit 1

# ---- loop devices and a private LVM configuration --------------------------
lvm_two_pvs "$TMP"

# h CMD...: run the helper, output in h.out, errors in h.err, status in RC
h()
{
	"$H" "$@" >h.out 2>h.err
	RC=$?
}

# ---- VG and LV management through spm/lvm.c -------------------------------
h_must vg-create "$VG" "$A" dom=test role:master
expect_eq "vg tags" "dom=test,role:master" "$(lvm_report vgs -o vg_tags "$VG")"
h_must vg-tags "$VG" +pool=1 -role:master
expect_eq "vg tags changed" "dom=test,pool=1" "$(lvm_report vgs -o vg_tags "$VG")"
h_must vg-info "$VG"
read -r ext vgsize vgfree vgtags <h.out
expect_eq "extent size" 4194304 "$ext"
expect_eq "vg-info tags" "dom=test,pool=1" "$vgtags"
expect_eq "vg-info free" "$(lvm_report vgs -o vg_free "$VG")" "$vgfree"

# A fragmented LV: lva, lvb, lva again (2 segments on A), lvc takes the rest
# of A, then lva grows onto B.
h_must lv-create "$VG" lva 8M img=1 parent=none
h_must lv-create "$VG" lvb 8M
h_must lv-extend "$VG" lva 21M
expect_eq "lv-extend rounds up to extents" 25165824 "$(cat h.out)"
lvcreate -an -Zn -n lvc -l 100%FREE "$VG" >/dev/null 2>&1 || fail "lvcreate lvc"
h_must vg-extend "$VG" "$B"
h_must lv-extend "$VG" lva 64M
expect_eq "lva size" 67108864 "$(cat h.out)"
h_must lv-extend "$VG" lva 10M # already larger: no-op
expect_eq "lv-extend is idempotent" 67108864 "$(cat h.out)"
expect_eq "lva in 3 segments" 3 "$(lvm_report lvs --segments -o seg_start "$VG/lva" | wc -l)"
expect_eq "lva on 2 PVs" 2 "$(lvm_report lvs --segments -o devices "$VG/lva" | sed 's/(.*//' | sort -u | wc -l)"

h_must lv-tags "$VG" lva +vol=7 -parent=none
expect_eq "lv tags" "img=1,vol=7" "$(lvm_report lvs -o lv_tags "$VG/lva")"
h_must lv-list "$VG"
expect_eq "lv-list" "lva 67108864 img=1,vol=7
lvb 8388608 
lvc $(lvm_report lvs -o lv_size "$VG/lvc") " "$(cat h.out)"

h_must lv-reduce "$VG" lvb 3M
expect_eq "lv-reduce rounds up to extents" 4194304 "$(cat h.out)"
expect_eq "lvb reduced" 4194304 "$(lvm_report lvs -o lv_size "$VG/lvb")"

# ---- the extent map, computed here from the plain-text report -------------
declare -A pestart
while read -r pv start; do
	pestart[$pv]=$start
done < <(lvm_report pvs -o pv_name,pe_start)
expected_map=""
while read -r sstart ssize range; do
	pv=${range%:*}
	r=${range##*:}
	first=${r%-*}
	expected_map+="$((sstart * ext)) $((ssize * ext)) $pv $((${pestart[$pv]} + first * ext))"$'\n'
done < <(lvm_report lvs --segments --separator ' ' -o seg_start_pe,seg_size_pe,seg_pe_ranges "$VG/lva")
h_must map "$VG" lva
expect_eq "map" "$expected_map" "$(cat h.out)"$'\n'

# ---- data through the linear device lands where dm-linear puts it --------
h_must write "$VG" lva 42
"$H" pattern 42 64M >expect.bin
while read -r lvoff len pv pvoff; do
	[ -n "$len" ] || continue
	if cmp -s <(dd if="$pv" iflag=skip_bytes,count_bytes,direct bs=1M \
			skip="$pvoff" count="$len" status=none) \
		  <(dd if=expect.bin iflag=skip_bytes,count_bytes bs=1M \
			skip="$lvoff" count="$len" status=none); then
		ok
	else
		fail "LV offset $lvoff: data not at $pv offset $pvoff"
	fi
done <<<"$expected_map"
h_must verify "$VG" lva 42
# lvb's extents sit between lva's two segments on A and are untouched
expect_eq "lvb untouched" 0 "$("$H" map "$VG" lvb | while read -r _ len pv off; do
	dd if="$pv" iflag=skip_bytes,count_bytes bs=1M skip="$off" count="$len" status=none | tr -d '\0' | wc -c; done)"

# ---- qcow2 on an LV: fill, extend while open, refresh, write past the end -
h_must lv-create "$VG" img 16M
h_must qcow-create "$VG" img 1G
h_must qcow-grow "$VG" img 7 -- lvextend -L +32M "$VG/img"
cat h.out
chunks=$(sed -n 's/^chunks //p' h.out)
grep -q "^enospc at chunk .*No space left on device" h.out || fail "no ENOSPC before the extension"
grep -q "^size 16777216 -> 50331648$" h.out || fail "refresh did not see the new size: $(cat h.out)"
[ -n "$chunks" ] && [ "$chunks" -gt 14 ] || fail "too few chunks written: '$chunks'"
h_must qcow-check "$VG" img
cat h.out
h_must qcow-verify "$VG" img 7 "$chunks"
# the image now uses extents past the old 16 MiB end
h_must qcow-check "$VG" img
end=$(sed -n 's/.*image_end \([0-9]*\)$/\1/p' h.out)
[ "${end:-0}" -gt 16777216 ] && ok || fail "image end $end not past the old LV end"
if command -v qemu-img >/dev/null 2>&1; then
	h_must dump "$VG" img img.qcow2
	if qemu-img check -q img.qcow2 >qi.out 2>&1; then ok; else
		fail "qemu-img check: $(cat qi.out)"
	fi
else
	echo "note: qemu-img not installed, oracle check skipped"
fi

# ---- errors carry LVM's reason -------------------------------------------
h lv-extend "$VG" lva 2G
expect_eq "full VG: exit status" 1 "$RC"
grep -q "errno 28: VG $VG: insufficient free space (lvextend $VG/lva to 2147483648 bytes: Insufficient free space: .* extents needed, but only .* available)" h.err ||
	fail "full VG message: $(cat h.err)"
h lv-create "$VG" big 1G
grep -q "errno 28: VG $VG: insufficient free space" h.err || fail "lvcreate full: $(cat h.err)"
h lv-extend "$VG" nosuch 1G
grep -q "errno 2: .*nosuch" h.err || fail "unknown LV: $(cat h.err)"
h map nosuchvg lv
grep -q "errno 2: .*nosuchvg" h.err || fail "unknown VG: $(cat h.err)"
h lv-create "$VG" lva 4M
grep -q "errno 17: .*already exists" h.err || fail "LV exists: $(cat h.err)"
h lv-create "$VG" "-bad" 4M
grep -q "errno 22: invalid LV name" h.err || fail "bad name: $(cat h.err)"
h lv-tags "$VG" lva "+bad tag"
grep -q "errno 22: invalid tag" h.err || fail "bad tag: $(cat h.err)"
h vg-extend "$VG" "$A"
grep -q "errno 17: " h.err || fail "PV already in VG: $(cat h.err)"

h_must lv-remove "$VG" lvb
expect_eq "lvb removed" "" "$(lvm_report lvs -o lv_name "$VG/lvb")"

cp_finish
