#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-damage: every class of metadata damage the qcow2 spec allows,
# made with dd on images that qemu-img/qemu-io created and wrote, checked
# and repaired by cowpool side by side with qemu-img.
#
# For each class, on copies of the same damaged image:
#   - `cowpool check` and `qemu-img check` give the same exit status
#     (0 clean, 1 check failed, 2 corruptions, 3 leaks only), and
#     `cowpool check` without -r leaves the file byte-for-byte unchanged;
#   - `qemu-img check -r all` is run on one copy, `cowpool check -r all` on
#     the other; where qemu's repair leaves a clean image (`qemu-img check`
#     exit 0), so must ours, and our exit status must then be 0 too; where
#     qemu cannot repair the class, we must not make it worse (no more
#     corruptions and leaks than before, by `qemu-img check --output=json`);
#   - the guest data outside the damaged ranges reads back (through qemu-img
#     and through cowpool) exactly as before the damage.
#
# Classes qemu-img check -r all (7.2) cannot repair, where we assert only
# that cowpool does not make things worse: an L2 table that is the
# refcount block (l1-at-refblock), an L2 entry past the end of the file,
# unaligned L2 table offsets in L1 and unaligned data offsets in L2 (qemu
# reports them as corruptions and leaves them; so do we), and an unaligned
# refcount block offset (qemu's check fails, exit 1; cowpool rebuilds the
# refcounts and leaves a clean image).
#
# Offsets are found by parsing the header, L1, L2 and refcount structures
# (lib.sh: rd_be, wr_be, l1_entry, l2_entry_pos, refcount_pos).  The images
# use 4 KiB clusters, so an 8 MiB disk has four L2 tables and damage to one
# of them leaves the others' data to verify.

. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/damage_lib.sh"
requires qemu-img qemu-io od dd
requires_gen
cp_init

CS=4096
SIZE=8M
COPIED=$(( 1 << 63 ))
OFFMASK=$(( 0x00fffffffffffe00 ))

# the plain base image: seeded qemu-io ops all over the disk, then known
# data in the clusters the cases damage (guest 0..64k, 2M..2M+64k, 6M..)
make_plain()
{
	qemu-img create -q -f qcow2 -o "cluster_size=$CS,$1" "$2" "$SIZE" || return 1
	"$CP_GEN" ops "$3" 60 "$SIZE" "$CS" >"$2.ops"
	{
		echo "w 17 0 65536"
		echo "w 34 2097152 65536"
		echo "w 51 6291456 32768"
		echo "w 68 4194304 4096"
	} >>"$2.ops"
	ops_to_io_args "$2.ops"
	qemu-io -f qcow2 "${IO_ARGS[@]}" "$2" >/dev/null
}

# a snapshot image: after `qemu-img snapshot -c`, every cluster is shared
# (refcount 2, COPIED clear); guest 6M.. is rewritten afterwards
make_snap()
{
	make_plain "$1" "$2" "$3" || return 1
	qemu-img snapshot -c s1 "$2" || return 1
	qemu-io -f qcow2 -c "write -q -P 85 6291456 8192" "$2" >/dev/null
}

# a compressed image: several compressed clusters share each host cluster
make_comp()
{
	"$CP_GEN" data "$3" 8388608 >"$2.src" &&
		qemu-img convert -c -f raw -O qcow2 -o "cluster_size=$CS,$1" "$2.src" "$2" &&
		rm -f "$2.src"
}

# host_of IMG GUEST: the host offset of the data cluster mapping GUEST
host_of() { echo $(( $(rd_be "$1" "$(l2_entry_pos "$1" "$2")" 8) & OFFMASK )); }

# set_l2 IMG GUEST VALUE / set_l1 IMG INDEX VALUE
set_l2() { wr_be "$1" "$(l2_entry_pos "$1" "$2")" 8 "$3"; }
set_l1() { wr_be "$1" $(( $(qh_l1_offset "$1") + 8 * $2 )) 8 "$3"; }
get_l1() { rd_be "$1" $(( $(qh_l1_offset "$1") + 8 * $2 )) 8; }

# set_rc IMG HOST_OFFSET VALUE: the 16-bit refcount of a host cluster
set_rc() { wr_be "$1" "$(refcount_pos "$1" $(( $2 / CS )))" 2 "$3"; }
get_rc() { rd_be "$1" "$(refcount_pos "$1" $(( $2 / CS )))" 2; }

# eof_cluster IMG: the first cluster-aligned offset at or past the end
eof_cluster() { local s; s=$(stat -c %s "$1"); echo $(( (s + CS - 1) / CS * CS )); }

# mask FILE RANGES: overwrite the damaged guest ranges ("off:len ...") with
# zeroes, so that only the undamaged data is compared
mask()
{
	local f=$1 r
	for r in $2; do
		dd_fill "$f" 0 "${r%%:*}" "${r#*:}"
	done
}

# dcase TAG KIND DAMAGED_RANGES DAMAGE_FN
# KIND: plain | snap | comp (the base image);  DAMAGE_FN IMG applies the
# damage with dd;  DAMAGED_RANGES: guest ranges whose content the damage
# may change ("" = none).
NCASES=0
dcase()
{
	local tag=$1 kind=$2 ranges=$3 fn=$4
	NCASES=$((NCASES + 1))
	mkdir "$tag" && cd "$tag" || return
	cp "../$kind.qcow2" img.qcow2
	qemu-img convert -f qcow2 -O raw img.qcow2 pre.raw
	if ! "$fn" img.qcow2; then
		fail "$tag: could not apply the damage"
		cd ..; return
	fi
	if cmp -s img.qcow2 "../$kind.qcow2"; then
		fail "$tag: the damage did not change the image"
		cd ..; return
	fi
	cp img.qcow2 c.qcow2
	cp img.qcow2 q.qcow2

	# check without -r: same verdict, nothing written
	run_capture qck qemu-img check -f qcow2 q.qcow2
	local qrc=$RC
	run_capture cck "$COWPOOL" check -f qcow2 c.qcow2
	local crc=$RC
	expect_eq "$tag: check exit status (qemu-img check: $(grep -m1 -e ERROR -e Leaked -e Warning qck.err))" "$qrc" "$crc"
	if [ "$qrc" -eq 0 ]; then
		fail "$tag: qemu-img check finds nothing: the case does not damage the image"
	fi
	if cmp -s c.qcow2 img.qcow2; then ok; else
		fail "$tag: cowpool check without -r modified the image"
	fi

	# repair
	repair_both img.qcow2
	local before=$BEFORE qrrc=$QRRC crrc=$CRRC qafter=$QAFTER cafter=$CAFTER
	echo "$tag: check $qrc; check -r all: qemu-img $qrrc (then $qafter), cowpool $crrc (then $cafter)"
	if [ "$qafter" -eq 0 ]; then
		expect_eq "$tag: qemu-img check after cowpool check -r all (qemu's own repair leaves it clean)" \
			0 "$cafter"
		[ "$cafter" -ne 0 ] && echo "  $(grep -m3 -e ERROR -e Leaked cafter.err | tr '\n' '|')" >&2
		expect_eq "$tag: cowpool check -r all exit status (qemu-img check -r all: $qrrc)" 0 "$crrc"
		run_capture cagain "$COWPOOL" check -f qcow2 c.qcow2
		expect_eq "$tag: cowpool check after its own repair" 0 "$RC"
	else
		# qemu cannot repair this class: we must not make it worse
		expect_not_worse "$tag" "$before" c.qcow2 "$qrc" "$cafter"
		echo "NOTE: $tag: qemu-img check -r all cannot repair this (qemu-img check exit $qafter afterwards; ours $cafter)"
	fi

	# the undamaged guest data, read by qemu-img and by cowpool
	mask pre.raw "$ranges"
	if qemu-img convert -f qcow2 -O raw c.qcow2 qpost.raw 2>qpost.err; then
		mask qpost.raw "$ranges"
		if cmp -s pre.raw qpost.raw; then ok; else
			fail "$tag: after cowpool's repair qemu-img reads different undamaged data: $(cmp pre.raw qpost.raw | head -n 1)"
		fi
	elif [ "$qafter" -eq 0 ]; then
		fail "$tag: qemu-img cannot read the image cowpool repaired: $(head -n 1 qpost.err)"
	fi
	run_capture cpost "$COWPOOL" convert -f qcow2 -O raw c.qcow2 cpost.raw
	if [ "$RC" -eq 0 ]; then
		mask cpost.raw "$ranges"
		if cmp -s pre.raw cpost.raw; then ok; else
			fail "$tag: after its repair cowpool reads different undamaged data: $(cmp pre.raw cpost.raw | head -n 1)"
		fi
	elif [ "$qafter" -eq 0 ]; then
		fail "$tag: cowpool cannot read the image it repaired: $(head -n 1 cpost.err)"
	fi
	cd .. && rm -rf "$tag"
}

# ---- the damage -------------------------------------------------------------
G0=0            # guest cluster 0, L2 table 0
G1=$CS          # guest cluster 1, L2 table 0
R1="$G1:$CS"
RL1="2097152:2097152"

# overlapping metadata: a data cluster that is the refcount block
d_l2_at_refblock()
{
	local rb
	rb=$(rd_be "$1" "$(qh_rt_offset "$1")" 8)
	set_l2 "$1" $G1 $(( rb | COPIED ))
}
# overlapping metadata: an L2 table that is the refcount block
d_l1_at_refblock()
{
	local rb
	rb=$(rd_be "$1" "$(qh_rt_offset "$1")" 8)
	set_l1 "$1" 1 $(( rb | COPIED ))
}
# two L2 entries, one data cluster (refcount 1, two references: too low)
d_dup_l2()
{
	set_l2 "$1" $G1 "$(rd_be "$1" "$(l2_entry_pos "$1" $G0)" 8)"
}
# refcount too low on a shared compressed host cluster (n -> n-1 >= 1)
d_rc_low_comp()
{
	local h rc
	h=$(find_shared "$1") || return 1
	rc=$(get_rc "$1" "$h")
	set_rc "$1" "$h" $((rc - 1))
}
# find_shared IMG: the first host cluster with refcount >= 2
find_shared()
{
	local n i rc
	n=$(( $(stat -c %s "$1") / CS ))
	for ((i = 0; i < n; i++)); do
		rc=$(get_rc "$1" $((i * CS)))
		if [ "$rc" -ge 2 ]; then echo $((i * CS)); return 0; fi
	done
	return 1
}
# refcount too high on a used cluster (2 where one L2 entry refers to it:
# a leak, and COPIED is now wrong, a corruption) and on an unused cluster
# past the last one in use (a plain leak: check exit 3)
d_rc_high() { set_rc "$1" "$(host_of "$1" $G0)" 2; }
d_leak()
{
	local e
	e=$(eof_cluster "$1")
	truncate -s $((e + 2 * CS)) "$1"
	set_rc "$1" "$e" 1 && set_rc "$1" $((e + CS)) 3
}
# refcount 0 on a used data cluster, and on a used L2 table
d_rc_zero_data() { set_rc "$1" "$(host_of "$1" $G1)" 0; }
d_rc_zero_l2() { set_rc "$1" "$(l1_entry "$1" 1)" 0; }
# L2 entry pointing past the end of the file
d_l2_past_eof() { set_l2 "$1" $G1 $(( $(eof_cluster "$1") + 64 * CS | COPIED )); }
# COPIED flag cleared where the refcount is 1
d_l1_copied_clear() { set_l1 "$1" 0 $(( $(get_l1 "$1" 0) & ~COPIED )); }
d_l2_copied_clear()
{
	set_l2 "$1" $G1 $(( $(rd_be "$1" "$(l2_entry_pos "$1" $G1)" 8) & ~COPIED ))
}
# COPIED flag set where the refcount is 2 (snapshot images)
d_l1_copied_set()
{
	[ "$(get_rc "$1" "$(l1_entry "$1" 0)")" -eq 2 ] || return 1
	set_l1 "$1" 0 $(( $(get_l1 "$1" 0) | COPIED ))
}
d_l2_copied_set()
{
	[ "$(get_rc "$1" "$(host_of "$1" $G1)")" -eq 2 ] || return 1
	set_l2 "$1" $G1 $(( $(rd_be "$1" "$(l2_entry_pos "$1" $G1)" 8) | COPIED ))
}
# unaligned L2 table offset in L1
d_l1_unaligned() { set_l1 "$1" 1 $(( $(get_l1 "$1" 1) + 512 )); }
# unaligned data cluster offset in L2
d_l2_unaligned()
{
	set_l2 "$1" $G1 $(( $(rd_be "$1" "$(l2_entry_pos "$1" $G1)" 8) + 512 ))
}
# refcount block beyond the end of the file
d_refblock_past_eof()
{
	wr_be "$1" "$(qh_rt_offset "$1")" 8 $(( $(eof_cluster "$1") + 16 * CS ))
}
# refcount block offset unaligned
d_refblock_unaligned()
{
	local rt
	rt=$(qh_rt_offset "$1")
	wr_be "$1" "$rt" 8 $(( $(rd_be "$1" "$rt" 8) + 512 ))
}

SEED=7000
for v in 1.1 0.10; do
	make_plain "compat=$v" plain.qcow2 $((SEED + 1)) || fail "make_plain $v"
	make_snap "compat=$v" snap.qcow2 $((SEED + 2)) || fail "make_snap $v"
	make_comp "compat=$v" comp.qcow2 $((SEED + 3)) || fail "make_comp $v"
	for b in plain snap comp; do
		run_capture base qemu-img check $b.qcow2
		expect_eq "v$v: the undamaged $b image is clean" 0 "$RC"
	done
	dcase "v$v-l2-at-refblock"   plain "$R1"  d_l2_at_refblock
	dcase "v$v-l1-at-refblock"   plain "$RL1" d_l1_at_refblock
	dcase "v$v-dup-l2"           plain "$R1"  d_dup_l2
	dcase "v$v-rc-low-comp"      comp  ""     d_rc_low_comp
	dcase "v$v-rc-high"          plain ""     d_rc_high
	dcase "v$v-leak"             plain ""     d_leak
	dcase "v$v-rc-zero-data"     plain ""     d_rc_zero_data
	dcase "v$v-rc-zero-l2"       plain ""     d_rc_zero_l2
	dcase "v$v-l2-past-eof"      plain "$R1"  d_l2_past_eof
	dcase "v$v-l1-copied-clear"  plain ""     d_l1_copied_clear
	dcase "v$v-l2-copied-clear"  plain ""     d_l2_copied_clear
	dcase "v$v-l1-copied-set"    snap  ""     d_l1_copied_set
	dcase "v$v-l2-copied-set"    snap  ""     d_l2_copied_set
	dcase "v$v-l1-unaligned"     plain "$RL1" d_l1_unaligned
	dcase "v$v-l2-unaligned"     plain "$R1"  d_l2_unaligned
	dcase "v$v-refblock-past-eof" plain ""    d_refblock_past_eof
	dcase "v$v-refblock-unaligned" plain ""   d_refblock_unaligned
	SEED=$((SEED + 10))
done
expect_eq "number of damage cases run" 34 "$NCASES"

cp_finish
