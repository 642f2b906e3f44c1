#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-damage-snap: damaged internal snapshot tables, checked, opened and
# repaired by cowpool side by side with qemu-img on copies of the same
# damaged image (images with two snapshots made by `qemu-img snapshot -c`,
# compat 1.1 and 0.10).  For each case:
#   - `cowpool check` and `qemu-img check` give the same exit status (1 when
#     QEMU cannot read the table: too many entries, a bad offset, an
#     unreadable entry, too much extra data, a table over 64 MiB), and
#     `cowpool check` leaves the file unchanged;
#   - `cowpool info` and `cowpool io -r` open the image exactly when
#     `qemu-img info` and `qemu-io -r` do (QEMU reads the table at open);
#   - `check -r leaks` gives the same exit status;
#   - after `check -r all` by each tool: where qemu's repair leaves a clean
#     image, so must ours (and the snapshot lists, `qemu-img snapshot -l`,
#     are the same); where it does not, ours must not make the image worse;
#     on every repaired image `qemu-img check` and `cowpool check` agree;
#   - the refcounts of a snapshot's L1 and L2 tables are counted: too low
#     is a corruption that -r all repairs;
#   - the guest data reads back as before the damage.

. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/damage_lib.sh"
requires qemu-img qemu-io od dd
cp_init

CS=4096

# make_base COMPAT FILE: data, snapshot s1, more data, snapshot snaptwo
make_base()
{
	qemu-img create -q -f qcow2 -o "cluster_size=$CS,compat=$1" "$2" 8M &&
		qemu-io -f qcow2 -c "write -q -P 17 0 65536" \
			-c "write -q -P 34 2M 65536" "$2" >/dev/null &&
		qemu-img snapshot -c s1 "$2" &&
		qemu-io -f qcow2 -c "write -q -P 51 0 8192" "$2" >/dev/null &&
		qemu-img snapshot -c snaptwo "$2"
}

so() { rd_be "$1" 64 8; }  # snapshot table offset

# ---- the damage -------------------------------------------------------------
d_count_over_max()  { wr_be "$1" 60 4 70000; }
d_count_high()      { wr_be "$1" 60 4 5; }
d_count_low()       { wr_be "$1" 60 4 1; }
d_off_unaligned()   { wr_be "$1" 64 8 $(( $(so "$1") + 8 )); }
d_off_unaligned_empty() { wr_be "$1" 64 8 $(( $(so "$1") + 8 )) && wr_be "$1" 60 4 0; }
d_off_past_eof()    { wr_be "$1" 64 8 $(( 1 << 30 )); }
d_off_unreadable()  { wr_be "$1" 64 8 $(( 0x7ffffffffffff000 )); }
d_off_at_reftable() { wr_be "$1" 64 8 "$(qh_rt_offset "$1")"; }
d_l1_unaligned()    { local s; s=$(so "$1"); wr_be "$1" "$s" 8 $(( $(rd_be "$1" "$s" 8) + 8 )); }
d_l1_too_large()    { wr_be "$1" $(( $(so "$1") + 8 )) 4 $(( 0x400001 )); }
d_l1_past_eof()     { wr_be "$1" "$(so "$1")" 8 $(( 1 << 30 )); }
d_l1_is_active()    { wr_be "$1" "$(so "$1")" 8 "$(qh_l1_offset "$1")"; }
# refcounts of a snapshot's clusters: s1's L1 table at 0, and the first
# L2 table of snaptwo (shared with the active layer) at 1
d_rc_snap_l1() { wr_be "$1" "$(refcount_pos "$1" $(( $(rd_be "$1" "$(so "$1")" 8) / CS )))" 2 0; }
d_rc_snap_l2()
{
	local s e1 l2
	s=$(so "$1")
	e1=$(( s + ($(rd_be "$1" $((s + 36)) 4) + $(rd_be "$1" $((s + 12)) 2) +
		    $(rd_be "$1" $((s + 14)) 2) + 40 + 7) / 8 * 8 ))
	l2=$(( $(rd_be "$1" "$(rd_be "$1" "$e1" 8)" 8) & 0x00fffffffffffe00 ))
	[ "$(rd_be "$1" "$(refcount_pos "$1" $((l2 / CS)))" 2)" -ge 2 ] || return 1
	wr_be "$1" "$(refcount_pos "$1" $((l2 / CS)))" 2 1
}
d_extra_too_big()   { wr_be "$1" $(( $(so "$1") + 36 )) 4 2000; }
d_dup_id()          { printf '2' | dd of="$1" bs=1 seek=$(( $(so "$1") + 64 )) conv=notrunc status=none; }
# 520 entries of 128 KiB (id and name of 65535 bytes each, in a sparse
# file): the table passes 64 MiB at entry 511
d_table_too_big()
{
	local f=$1 i off hdr
	off=$(so "$f")
	wr_be "$f" 60 4 520
	hdr=$(printf '\\x00%.0s' {1..12})'\xff\xff\xff\xff'$(printf '\\x00%.0s' {1..20})'\x00\x00\x00\x18'
	for ((i = 0; i < 520; i++)); do
		printf "$hdr" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
		off=$(( (off + 40 + 24 + 131070 + 7) / 8 * 8 ))
	done
	truncate -s $((off + CS)) "$f"
}

NCASES=0
scase()
{
	local tag=$1 fn=$2 base=$3
	NCASES=$((NCASES + 1))
	mkdir "$tag" && cd "$tag" || return
	cp "../$base" img.qcow2
	qemu-img convert -f qcow2 -O raw img.qcow2 pre.raw
	if ! "$fn" img.qcow2 || cmp -s img.qcow2 "../$base"; then
		fail "$tag: could not apply the damage"
		cd ..; return
	fi
	cp img.qcow2 c.qcow2

	run_capture qck qemu-img check -f qcow2 img.qcow2
	local qrc=$RC
	run_capture cck "$COWPOOL" check -f qcow2 c.qcow2
	expect_eq "$tag: check exit status (qemu-img: $(grep -m1 ERROR qck.err))" "$qrc" "$RC"
	if cmp -s c.qcow2 img.qcow2; then ok; else
		fail "$tag: cowpool check without -r modified the image"
	fi
	run_capture qinfo qemu-img info -f qcow2 img.qcow2
	local qi=$RC
	run_capture cinfo "$COWPOOL" info -f qcow2 c.qcow2
	expect_eq "$tag: info opens the image (qemu-img: $(head -c 120 qinfo.err))" "$qi" "$RC"
	run_capture qio qemu-io -r -f qcow2 -c "read -q 0 512" img.qcow2
	qi=$RC
	run_capture cio "$COWPOOL" io -r -f qcow2 -c "read -q 0 512" c.qcow2
	expect_eq "$tag: io -r opens the image" "$qi" "$RC"
	cmp -s c.qcow2 img.qcow2 || fail "$tag: a read-only open modified the image"

	cp img.qcow2 q.qcow2
	run_capture ql qemu-img check -r leaks -f qcow2 q.qcow2
	qi=$RC
	run_capture cl "$COWPOOL" check -r leaks -f qcow2 c.qcow2
	expect_eq "$tag: check -r leaks exit status" "$qi" "$RC"

	repair_both img.qcow2
	local before=$BEFORE qrrc=$QRRC crrc=$CRRC qafter=$QAFTER cafter=$CAFTER
	run_capture cc "$COWPOOL" check -f qcow2 c.qcow2
	expect_eq "$tag: qemu-img check and cowpool check agree after cowpool's repair" "$cafter" "$RC"
	run_capture cq "$COWPOOL" check -f qcow2 q.qcow2
	expect_eq "$tag: qemu-img check and cowpool check agree after qemu-img's repair" "$qafter" "$RC"
	echo "$tag: check $qrc; check -r all: qemu-img $qrrc (then $qafter), cowpool $crrc (then $cafter)"
	if [ "$qafter" -eq 0 ]; then
		expect_eq "$tag: qemu-img check after cowpool check -r all" 0 "$cafter"
		expect_eq "$tag: cowpool check -r all exit status" 0 "$crrc"
		qemu-img snapshot -l q.qcow2 >qsn.txt 2>&1
		qemu-img snapshot -l c.qcow2 >csn.txt 2>&1
		if cmp -s qsn.txt csn.txt; then ok; else
			fail "$tag: the snapshot lists differ after repair: $(diff qsn.txt csn.txt | tr '\n' '|')"
		fi
	else
		# qemu cannot repair this class: we must not make it worse
		expect_not_worse "$tag" "$before" c.qcow2 "$qrc" "$cafter"
		echo "NOTE: $tag: qemu-img check -r all cannot repair this (qemu-img check exit $qafter afterwards)"
	fi

	# the active layer's data is not touched by any of this
	if [ "$cafter" -ne 1 ]; then
		run_capture cpost "$COWPOOL" convert -f qcow2 -O raw c.qcow2 cpost.raw
		if [ "$RC" -ne 0 ]; then
			fail "$tag: cowpool cannot read the image it repaired: $(head -n 1 cpost.err)"
		elif cmp -s pre.raw cpost.raw; then ok; else
			fail "$tag: after the repair cowpool reads different data"
		fi
		if qemu-img convert -f qcow2 -O raw c.qcow2 qpost.raw 2>qpost.err &&
			cmp -s pre.raw qpost.raw; then ok; else
			fail "$tag: after cowpool's repair qemu-img reads different data: $(head -n 1 qpost.err)"
		fi
	fi
	cd .. && rm -rf "$tag"
}

for v in 1.1 0.10; do
	make_base "$v" "base-$v.qcow2" || fail "make_base $v"
	run_capture base qemu-img check "base-$v.qcow2"
	expect_eq "v$v: the undamaged image is clean" 0 "$RC"
	for c in count_over_max count_high count_low off_unaligned \
		off_unaligned_empty off_past_eof off_unreadable off_at_reftable \
		l1_unaligned l1_too_large l1_past_eof l1_is_active extra_too_big \
		dup_id rc_snap_l1 rc_snap_l2; do
		scase "v$v-${c//_/-}" "d_$c" "base-$v.qcow2"
	done
done
scase "v1.1-table-too-big" d_table_too_big base-1.1.qcow2
expect_eq "number of damage cases run" 33 "$NCASES"

cp_finish
