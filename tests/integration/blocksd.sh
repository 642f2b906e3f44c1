#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/blocksd.sh - a BLOCK storage domain (spm/blocksd.c
# behind cp_sd) on real LVM over loop devices, without device-mapper, with
# a real sanlock daemon (io_timeout 1) for the lockspace and the leases.
#
#   1. create: VG named by the domain UUID, the CP_DOMAIN marker and one
#      CPMD_ record tag (decoded here with base64 -d), the special LVs in
#      order, one segment each, at the sizes of the format
#   2. the sanlock locations (ids, SDM, volume leases) equal the PV offsets
#      computed here from `lvs --segments` and `pvs` (not from the JSON
#      reader under test), and sanlock's own read_leader finds the
#      lockspace and the leases there
#   3. record round trip (master flag, generation); damaged record tags
#   4. volumes: tags, lists, metadata round trip (bytes checked on the PV),
#      a corrupted byte (-EUCLEAN naming the slot), slot reuse, stale slots
#      cleared, all slots in use (-ENOSPC), full VG (-ENOSPC naming the VG),
#      vgextend, resize, parent tag, tasks LV, qcow2 on a volume LV
#   5. join the lockspace, acquire/release SDM and a volume lease
#
# Needs root, lvm2, losetup and sanlock (else exit 77).  Everything it
# makes (daemon, loop devices, VG, temp dir) is removed on any exit.  LVM
# only sees this test's loop devices (private LVM_SYSTEM_DIR).
#
# Environment (meson): CP_BLOCKSD_HELPER, MEMLOCK_SHIM.

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"

lvm_requires "loop devices, LVM, sanlock"
sl_requires
: "${CP_BLOCKSD_HELPER:?CP_BLOCKSD_HELPER must point to cp_blocksd_helper}"
H=$CP_BLOCKSD_HELPER

sl_init
TMP=$SL_DIR
LOOPS=()
DOM=6a1e0b4c-2f7d-4c1e-9a53-0d2b7c9e4f10
POOL=0b9f3c2e-1d4a-4e6b-8c7f-5a2d1e0f3b94
IMG1=11111111-1111-4111-8111-111111111111
IMG2=22222222-2222-4222-8222-222222222222
V1=a0000001-0000-4000-8000-000000000001
V2=a0000002-0000-4000-8000-000000000002
V3=a0000003-0000-4000-8000-000000000003
V4=a0000004-0000-4000-8000-000000000004
V5=a0000005-0000-4000-8000-000000000005
V6=a0000006-0000-4000-8000-000000000006
V7=a0000007-0000-4000-8000-000000000007
ZERO=00000000-0000-0000-0000-000000000000
export LVM_SYSTEM_DIR=$TMP/lvm
export LVM_SUPPRESS_FD_WARNINGS=1

blk_cleanup() { lvm_cleanup "$DOM"; }
sl_on_exit blk_cleanup
cd "$TMP" || exit 1

# ---- loop devices, private LVM configuration, one sanlock daemon ----------
lvm_two_pvs "$TMP"
sl_start 1 || exit 1

# h CMD...: run the helper as a client of host 1's daemon; output in h.out,
# errors in h.err, status in RC
h()
{
	sl_run 1 "$H" "$@" >h.out 2>h.err
	RC=$?
}

field() # field NAME FILE: the value of "NAME value" lines
{
	sed -n "s/^$1 //p" "$2"
}

MiB=1048576
EXT=$((4 * MiB))

# ---- 1. create ---------------------------------------------------------------
h_must create "$DOM" "$POOL" "blk test" "$A" 4M 4
expect_eq "created type" 2 "$(field type h.out)"
expect_eq "created max_volumes" 4 "$(field max_volumes h.out)"
expect_eq "created io_timeout" 1 "$(field io_timeout h.out)"
h_must_fail 17 "" create "$DOM" "$POOL" "again" "$A" 4M 4

tags=$(lvm_report vgs -o vg_tags "$DOM")
expect_eq "VG tags: marker + one record" 2 "$(tr ',' '\n' <<<"$tags" | wc -l)"
grep -q "^CP_DOMAIN$" <(tr ',' '\n' <<<"$tags") && ok || fail "no CP_DOMAIN tag: $tags"
MDTAG=$(tr ',' '\n' <<<"$tags" | grep '^CPMD_')
echo "${MDTAG#CPMD_}" | base64 -d >rec.bin 2>/dev/null || fail "record tag is not base64"
expect_eq "record is 512 bytes" 512 "$(stat -c %s rec.bin)"
expect_eq "record magic" CPDOMMD1 "$(head -c 8 rec.bin)"
expect_eq "record names the domain" "$DOM" "$(dd if=rec.bin bs=1 skip=16 count=36 status=none)"
expect_eq "record type BLOCK (u32 LE at 156)" "02000000" \
	"$(od -An -tx1 -j156 -N4 rec.bin | tr -d ' \n')"
expect_eq "record max_volumes (u32 LE at 188)" "04000000" \
	"$(od -An -tx1 -j188 -N4 rec.bin | tr -d ' \n')"

# special LVs: created in this order right after vgcreate, one segment each
expect_eq "special LVs, first extents and sizes" \
"ids 0 1 $A:0-0
leases 1 2 $A:1-2
metadata 3 1 $A:3-3
inbox 4 2 $A:4-5
outbox 6 2 $A:6-7
tasks 8 1 $A:8-8" \
	"$(for lv in ids leases metadata inbox outbox tasks; do
		echo "$lv $(lvm_report lvs --segments --separator ' ' \
			-o seg_pe_ranges,seg_size_pe "$DOM/$lv" |
			awk '{ split($1, a, ":"); split(a[2], b, "-");
			       print b[1], $2, $1 }')"
	   done)"

# ---- 2. sanlock locations, computed from the plain-text report -------------
pe_start=$(lvm_report pvs -o pe_start "$A")
lv_pv_off() # LV -> "PV OFFSET" of its single segment
{
	local range
	range=$(lvm_report lvs --segments -o seg_pe_ranges "$DOM/$1")
	local pv=${range%:*} r=${range##*:}
	echo "$pv $((pe_start + ${r%-*} * EXT))"
}
read -r ids_pv ids_off <<<"$(lv_pv_off ids)"
read -r leases_pv leases_off <<<"$(lv_pv_off leases)"
read -r md_pv md_off <<<"$(lv_pv_off metadata)"
h_must info "$DOM"
expect_eq "lockspace location" "$DOM $ids_pv $ids_off" "$(field lockspace h.out)"
expect_eq "SDM location" "SDM $leases_pv $((leases_off + MiB))" "$(field sdm h.out)"
expect_eq "leases location" "$leases_pv $leases_off" "$(field leases h.out)"
# sanlock reads its own structures there
sanlock direct read_leader -s "$DOM:1:$ids_pv:$ids_off" >rl.out 2>&1
grep -q "space_name $DOM" rl.out && ok || fail "no lockspace at $ids_pv:$ids_off: $(cat rl.out)"
grep -q "io_timeout 1" rl.out && ok || fail "lockspace io_timeout: $(cat rl.out)"
sanlock direct read_leader -r "$DOM:SDM:$leases_pv:$((leases_off + MiB))" >rl.out 2>&1
grep -q "resource_name SDM" rl.out && ok || fail "no SDM lease: $(cat rl.out)"

# ---- 3. the record: round trip, damage -------------------------------------
h_must set-master "$DOM" 1
expect_eq "master set" 1 "$(field master h.out)"
expect_eq "generation bumped" 1 "$(field generation h.out)"
h_must info "$DOM"
expect_eq "master persisted" 1 "$(field master h.out)"
expect_eq "name persisted" "blk test" "$(field name h.out)"
expect_eq "still one record tag" 1 \
	"$(lvm_report vgs -o vg_tags "$DOM" | tr ',' '\n' | grep -c '^CPMD_')"
MDTAG=$(lvm_report vgs -o vg_tags "$DOM" | tr ',' '\n' | grep '^CPMD_')

vgchange --addtag CPMD_AAAA "$DOM" >/dev/null 2>&1 || fail "vgchange add"
h_must_fail 117 "VG $DOM: 2 domain record tags" info "$DOM"
vgchange --deltag CPMD_AAAA "$DOM" >/dev/null 2>&1 || fail "vgchange del"
# one base64 character changed: a checksum mismatch (or bad base64)
b64=${MDTAG#CPMD_}
c=${b64:100:1}
[ "$c" = A ] && n=B || n=A
bad="CPMD_${b64:0:100}$n${b64:101}"
vgchange --deltag "$MDTAG" --addtag "$bad" "$DOM" >/dev/null 2>&1 || fail "vgchange swap"
h_must_fail 117 "VG $DOM: domain record \(tag CPMD_\): checksum mismatch" info "$DOM"
vgchange --deltag "$bad" --addtag CPMD_AAAA "$DOM" >/dev/null 2>&1 || fail "vgchange short"
h_must_fail 117 "VG $DOM: domain record \(tag CPMD_\): not the base64 of a 512-byte record" info "$DOM"
vgchange --deltag CPMD_AAAA "$DOM" >/dev/null 2>&1 || fail "vgchange del short"
h_must_fail 117 "VG $DOM: no domain record .*unfinished" info "$DOM"
vgchange --addtag "$MDTAG" "$DOM" >/dev/null 2>&1 || fail "vgchange restore"
h_must info "$DOM"

# ---- 4. volumes ------------------------------------------------------------
h_must vol-create "$DOM" "$IMG1" "$V1" - 10M
h_must vol-create "$DOM" "$IMG1" "$V2" "$V1" 0
h_must vol-create "$DOM" "$IMG2" "$V3" - 40M
h_must_fail 17 "$V1" vol-create "$DOM" "$IMG2" "$V1" - 4M
expect_eq "V1 LV: size rounded up to extents, tags" "12582912 IU_$IMG1,MD_0,PU_$ZERO" \
	"$(lvm_report lvs -o lv_size,lv_tags "$DOM/$V1" | tr -s ' ')"
expect_eq "V2 LV: at least one extent, parent tag" "4194304 IU_$IMG1,MD_1,PU_$V1" \
	"$(lvm_report lvs -o lv_size,lv_tags "$DOM/$V2" | tr -s ' ')"
expect_eq "V3 slot" "IU_$IMG2,MD_2,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V3")"
h_must list-images "$DOM"
expect_eq "images" "$IMG1
$IMG2" "$(cat h.out)"
h_must list-volumes "$DOM" "$IMG1"
expect_eq "volumes of IMG1" "$V1
$V2" "$(cat h.out)"
h_must vol-exists "$DOM" "$IMG1" "$V2"
expect_eq "V2 exists" 1 "$(cat h.out)"
h_must vol-exists "$DOM" "$IMG2" "$V2"
expect_eq "V2 is not in IMG2" 0 "$(cat h.out)"

# metadata: nothing yet, then a round trip, checked on the PV as well
h_must_fail 2 "$DOM/metadata slot 0 \(volume $V1\): no metadata" md-read "$DOM" "$IMG1" "$V1"
h_must md-write "$DOM" "$IMG1" "$V1" 1G "first volume"
h_must md-read "$DOM" "$IMG1" "$V1"
expect_eq "md round trip" "$V1 $IMG1 - 1073741824 0 first volume" "$(cat h.out)"
h_must md-write "$DOM" "$IMG1" "$V2" 1G "second"
slot_bytes() # SLOT OFFSET COUNT: bytes of a slot on the PV (O_DIRECT read)
{
	dd if="$md_pv" of=slot.bin iflag=skip_bytes,direct bs=4096 \
		skip=$((md_off + $1 * 4096)) count=1 status=none &&
	dd if=slot.bin iflag=skip_bytes,count_bytes bs=4096 skip="$2" \
		count="$3" status=none
}
expect_eq "slot 1 on the PV: magic" CPVOLMD1 "$(slot_bytes 1 0 8)"
expect_eq "slot 1 on the PV: volume" "$V2" "$(slot_bytes 1 16 36)"
expect_eq "slot 1: rest of the 4 KiB zero" 0 "$(slot_bytes 1 512 3584 | tr -d '\0' | wc -c)"
h_must_fail 2 "$V7 not found" md-write "$DOM" "$IMG1" "$V7" 1G "no LV"

# one corrupted byte in slot 0 (description), written past the page cache
slot_bytes 0 0 512 >sector.bin
printf 'X' | dd of=sector.bin bs=1 seek=210 conv=notrunc status=none
dd if=sector.bin of="$md_pv" oflag=seek_bytes,direct bs=512 seek=$((md_off)) \
	conv=notrunc status=none || fail "cannot corrupt slot 0"
h_must_fail 117 "$DOM/metadata slot 0 \(volume $V1\): checksum mismatch" \
	md-read "$DOM" "$IMG1" "$V1"
h_must md-write "$DOM" "$IMG1" "$V1" 2G "rewritten"
h_must md-read "$DOM" "$IMG1" "$V1"
expect_eq "md rewritten" "$V1 $IMG1 - 2147483648 0 rewritten" "$(cat h.out)"

# volume leases at (2 + slot) MiB of `leases`, formatted by vol_create
h_must vol-lease "$DOM" "$IMG1" "$V2"
expect_eq "V2 lease (slot 1)" "$V2 $leases_pv $((leases_off + 3 * MiB))" "$(cat h.out)"
sanlock direct read_leader -r "$DOM:$V2:$leases_pv:$((leases_off + 3 * MiB))" >rl.out 2>&1
grep -q "resource_name $V2" rl.out && ok || fail "no lease of V2: $(cat rl.out)"

# parent tag replaced in one lvchange
h_must set-parent "$DOM" "$IMG1" "$V2" -
expect_eq "PU_ cleared" "IU_$IMG1,MD_1,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V2")"
h_must set-parent "$DOM" "$IMG1" "$V2" "$V1"
expect_eq "PU_ set" "IU_$IMG1,MD_1,PU_$V1" "$(lvm_report lvs -o lv_tags "$DOM/$V2")"

# resize
h_must vol-resize "$DOM" "$IMG1" "$V1" 30M grow
expect_eq "grown to extents" 33554432 "$(cat h.out)"
h_must vol-resize "$DOM" "$IMG1" "$V1" 5M shrink
expect_eq "shrunk to extents" 8388608 "$(cat h.out)"
h_must vol-size "$DOM" "$IMG1" "$V1"
expect_eq "vol-size" "8388608 8388608" "$(cat h.out)"
expect_eq "LV size" 8388608 "$(lvm_report lvs -o lv_size "$DOM/$V1")"

# all slots in use, slot reuse, stale slots cleared
h_must vol-create "$DOM" "$IMG2" "$V4" - 4M
expect_eq "V4 takes slot 3" "IU_$IMG2,MD_3,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V4")"
h_must_fail 28 "domain $DOM: all 4 metadata slots are in use" \
	vol-create "$DOM" "$IMG2" "$V5" - 4M
expect_eq "no LV left by the refused create" "" "$(lvm_report lvs -o lv_name "$DOM/$V5")"
h_must md-remove "$DOM" "$IMG1" "$V2"
expect_eq "md-remove zeroes the slot" 0 "$(slot_bytes 1 0 4096 | tr -d '\0' | wc -c)"
h_must vol-remove "$DOM" "$IMG1" "$V2"
h_must vol-remove "$DOM" "$IMG1" "$V2"   # idempotent
h_must vol-create "$DOM" "$IMG2" "$V5" - 4M
expect_eq "V5 reuses slot 1" "IU_$IMG2,MD_1,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V5")"
h_must md-write "$DOM" "$IMG2" "$V4" 1G "to be dropped"
h_must vol-remove "$DOM" "$IMG2" "$V4"   # record left behind in slot 3
h_must vol-create "$DOM" "$IMG2" "$V6" - 4M
expect_eq "V6 reuses slot 3" "IU_$IMG2,MD_3,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V6")"
h_must_fail 2 "slot 3 \(volume $V6\): no metadata" md-read "$DOM" "$IMG2" "$V6"
h_must list-volumes "$DOM" "$IMG1"
expect_eq "IMG1 after removal" "$V1" "$(cat h.out)"

# the tasks LV
h_must tasks "$DOM" 9
expect_eq "tasks LV" "size 4194304 align 512" "$(cat h.out)"

# qcow2 on a volume LV
h_must qcow "$DOM" "$IMG2" "$V3" 1G 5
expect_eq "qcow2 chunks written and read back" "chunks 20" "$(cat h.out)"
if command -v qemu-img >/dev/null 2>&1; then
	range=$(lvm_report lvs --segments -o seg_pe_ranges "$DOM/$V3")
	r=${range##*:}
	dd if="${range%:*}" of=v3.qcow2 iflag=skip_bytes,count_bytes bs=1M \
		skip=$((pe_start + ${r%-*} * EXT)) count=$((40 * MiB)) status=none
	if qemu-img check -q v3.qcow2 >qi.out 2>&1; then ok; else
		fail "qemu-img check of the volume: $(cat qi.out)"
	fi
fi

# the VG is full; then it grows onto a second device
h_must md-remove "$DOM" "$IMG1" "$V1"
h_must vol-remove "$DOM" "$IMG1" "$V1"   # frees slot 0
h_must_fail 28 "VG $DOM: insufficient free space \(lvcreate $DOM/$V7" \
	vol-create "$DOM" "$IMG2" "$V7" - 300M
expect_eq "no LV left by the failed create" "" "$(lvm_report lvs -o lv_name "$DOM/$V7")"
h_must stats "$DOM"
read -r total1 free1 <h.out
expect_eq "stats total" "$(lvm_report vgs -o vg_size "$DOM")" "$total1"
h_must extend "$DOM" "$B"
h_must stats "$DOM"
read -r total2 free2 <h.out
pvsize_b=$(lvm_report pvs -o pv_size "$B")
expect_eq "stats total grew by the new PV" $((total1 + pvsize_b)) "$total2"
expect_eq "stats free grew by the new PV" $((free1 + pvsize_b)) "$free2"
h_must vol-create "$DOM" "$IMG2" "$V7" - 300M
expect_eq "300M volume spans both PVs" 2 \
	"$(lvm_report lvs --segments -o devices "$DOM/$V7" | sed 's/(.*//' | sort -u | wc -l)"
expect_eq "V7 takes the freed slot 0" "IU_$IMG2,MD_0,PU_$ZERO" "$(lvm_report lvs -o lv_tags "$DOM/$V7")"

# no device-mapper here: no path for local tools
if ! (: <>/dev/mapper/control) 2>/dev/null; then
	h_must_fail 95 "block domain $DOM: no device-mapper on this host; use the cowpool CLI" \
		vol-path "$DOM" "$IMG2" "$V3"
fi

# ---- 5. sanlock on the PV offsets ------------------------------------------
h_must sanlock "$DOM" 1 "$IMG2" "$V3"
grep -q "^SDM acquired, lease version 1$" h.out && ok || fail "SDM: $(cat h.out)"
grep -q "^volume lease acquired, lease version 1$" h.out && ok || fail "volume lease: $(cat h.out)"

cp_finish
