#!/bin/bash
# Persistent dirty bitmaps: cowpool keeps the bitmaps qemu-img made
# consistent across its own writes (QEMU reads back the clusters cowpool
# wrote as dirty), `cowpool bitmap` does what `qemu-img bitmap` does,
# resize/amend/commit/rebase keep the bitmaps, failed commands change
# nothing, measure and info agree with qemu-img, and a damaged bitmap
# directory gives qemu-img check's exit code.
. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io qemu-nbd nbdinfo python3
cp_init

# bml IMG: the bitmap list of qemu-img info --output=json, one line.
bml()
{
	qemu-img info -U --output=json "$1" | python3 -c 'import json,sys
print(json.dumps(json.load(sys.stdin)["format-specific"]["data"].get("bitmaps")))'
}

# dirty IMG BITMAP: the dirty extents QEMU reads from BITMAP ("start+len"
# per line), through qemu-nbd -B and nbdinfo.
dirty()
{
	nbdinfo --map="qemu:dirty-bitmap:$2" -- [ qemu-nbd -r -f qcow2 -B "$2" "$1" ] |
		awk '$3 == 1 { print $1 "+" $2 }' | tr '\n' ' '
}

check0()
{
	qemu-img check -q "$1" >check.out 2>&1 && ok || fail "$2: qemu-img check: $(cat check.out)"
}

# ---- cowpool's writes land in the enabled bitmaps ------------------------------------
qemu-img create -q -f qcow2 img.qcow2 64M
qemu-img bitmap --add img.qcow2 b1
qemu-img bitmap --add -g 128k img.qcow2 b2
qemu-img bitmap --add --disable img.qcow2 off
qemu-io -c 'write -q 0 4k' -c 'write -q 16M 128k' img.qcow2
before=$(bml img.qcow2)
"$COWPOOL" io -c 'write -P 0x22 4M 64k' -c 'write -z 8M 4k' -c 'discard 16M 64k' img.qcow2 >/dev/null ||
	fail "cowpool io write"
check0 img.qcow2 "after cowpool wrote"
expect_eq "bitmaps listed after cowpool wrote (none in use)" "$before" "$(bml img.qcow2)"
expect_eq "b1 dirty where QEMU and cowpool wrote" \
	"0+65536 4194304+65536 8388608+65536 16777216+131072 " "$(dirty img.qcow2 b1)"
expect_eq "b2 (128k granularity) dirty" \
	"0+131072 4194304+131072 8388608+131072 16777216+131072 " "$(dirty img.qcow2 b2)"
expect_eq "disabled bitmap untouched" "" "$(dirty img.qcow2 off)"
diff <("$COWPOOL" info img.qcow2 | sed 1d) <(qemu-img info img.qcow2 | sed 1d) >info.diff &&
	ok || fail "human info differs: $(cat info.diff)"
diff <("$COWPOOL" info --output=json img.qcow2 | grep -v actual-size) \
	<(qemu-img info --output=json img.qcow2 | grep -v actual-size) >info.diff &&
	ok || fail "json info differs: $(cat info.diff)"
# the cowpool-side readout goes through a second cowpool session
"$COWPOOL" io -c 'write 32M 4k' img.qcow2 >/dev/null || fail "second cowpool write"
expect_eq "bits survive a second session" \
	"0+65536 4194304+65536 8388608+65536 16777216+131072 33554432+65536 " "$(dirty img.qcow2 b1)"
check0 img.qcow2 "after the second session"

# ---- a read-write open that writes nothing changes nothing ---------------------------
sum=$(md5sum <img.qcow2)
"$COWPOOL" io -c 'read 0 4k' img.qcow2 >/dev/null || fail "cowpool io read"
expect_eq "read-write open without writes leaves the file as it was" "$sum" "$(md5sum <img.qcow2)"

# ---- failed commands change nothing ----------------------------------------------------
for args in "bitmap --add img.qcow2 b1" "bitmap --add --merge nope img.qcow2 nb" \
	"bitmap --clear img.qcow2 nope" "bitmap --add -g 3k img.qcow2 g3" \
	"bitmap --merge nope img.qcow2 b1" "amend -o compat=0.10 img.qcow2" \
	"commit img.qcow2" "resize img.qcow2 1G x"; do
	# shellcheck disable=SC2086
	"$COWPOOL" $args >fail.out 2>&1 && fail "cowpool $args succeeded"
	expect_eq "failed 'cowpool $args' changed nothing" "$sum" "$(md5sum <img.qcow2)"
done

# ---- cowpool bitmap vs qemu-img bitmap -------------------------------------------------
qemu-img create -q -f qcow2 q.qcow2 64M
cp q.qcow2 c.qcow2
qemu-io -c 'write -q 0 1M' q.qcow2
"$COWPOOL" io -c 'write 0 1M' c.qcow2 >/dev/null
# verb NAME ARGS...: the same action on both; same status, same bitmap list
verb()
{
	local n=$1 a b
	shift
	qemu-img bitmap "$@" q.qcow2 "$n" >/dev/null 2>&1
	a=$?
	"$COWPOOL" bitmap "$@" c.qcow2 "$n" >/dev/null 2>&1
	b=$?
	expect_eq "exit status of bitmap $* $n" "$a" "$b"
	expect_eq "bitmaps after bitmap $* $n" "$(bml q.qcow2)" "$(bml c.qcow2)"
	check0 c.qcow2 "after cowpool bitmap $* $n"
}
verb x --add
verb y --add -g 128k
verb z --add --disable
verb w --add -g 4k --disable
qemu-io -c 'write -q 2M 64k' q.qcow2
"$COWPOOL" io -c 'write 2M 64k' c.qcow2 >/dev/null
verb x --disable
verb z --enable
verb w --merge y
verb x --clear
verb y --remove
verb x --add
verb nope --clear
expect_eq "merged bits as QEMU merges them" "$(dirty q.qcow2 w)" "$(dirty c.qcow2 w)"
expect_eq "cleared bitmap is empty" "" "$(dirty c.qcow2 x)"
for n in x z w; do verb $n --remove; done
expect_eq "no bitmaps left: autoclear bit 0 cleared" 0 "$(rd_be c.qcow2 88 8)"
qemu-img bitmap --add q.qcow2 m1
qemu-io -c 'write -q 5M 64k' q.qcow2
"$COWPOOL" bitmap --add --merge m1 -b q.qcow2 -F qcow2 c.qcow2 m2 || fail "merge from another file"
expect_eq "merge from another file" "5242880+65536 " "$(dirty c.qcow2 m2)"
check0 c.qcow2 "after merge from another file"

# ---- in-use (inconsistent) bitmaps are kept, not used -----------------------------------
qemu-img create -q -f qcow2 iu.qcow2 64M
qemu-img bitmap --add iu.qcow2 live
(qemu-io -c 'write -q 0 4k' -c 'sigraise 9' iu.qcow2; true) >/dev/null 2>&1
bml iu.qcow2 | grep -q in-use && ok || fail "qemu-io crash did not leave the bitmap in use"
"$COWPOOL" io -c 'write 1M 4k' iu.qcow2 >/dev/null || fail "write with an in-use bitmap"
check0 iu.qcow2 "in-use bitmap after cowpool wrote"
bml iu.qcow2 | grep -q in-use && ok || fail "in-use flag lost"
"$COWPOOL" bitmap --clear iu.qcow2 live >/dev/null 2>&1 && fail "clear of an in-use bitmap succeeded"
"$COWPOOL" resize iu.qcow2 128M >/dev/null 2>&1 && fail "resize with an in-use bitmap succeeded (qemu-img refuses)"
qemu-img resize iu.qcow2 128M >/dev/null 2>&1 && fail "qemu-img resize with an in-use bitmap succeeded"
"$COWPOOL" bitmap --remove iu.qcow2 live || fail "remove of an in-use bitmap"
check0 iu.qcow2 "after removing the in-use bitmap"
expect_eq "in-use bitmap removed" "null" "$(bml iu.qcow2)"

# ---- resize, amend, rebase -u, commit keep the bitmaps ----------------------------------
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-img bitmap --add base.qcow2 bb
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-img bitmap --add top.qcow2 tb
"$COWPOOL" io -c 'write 3M 64k' top.qcow2 >/dev/null
"$COWPOOL" resize top.qcow2 128M >/dev/null || fail "resize with bitmaps"
check0 top.qcow2 "after resize"
expect_eq "bitmap follows resize" "3145728+65536 " "$(dirty top.qcow2 tb)"
"$COWPOOL" io -c 'write 100M 64k' top.qcow2 >/dev/null || fail "write past the old end"
expect_eq "bits past the old end" "3145728+65536 104857600+65536 " "$(dirty top.qcow2 tb)"
"$COWPOOL" amend -o lazy_refcounts=on top.qcow2 || fail "amend"
check0 top.qcow2 "after amend"
"$COWPOOL" rebase -u -b base.qcow2 -F qcow2 top.qcow2 || fail "rebase -u"
check0 top.qcow2 "after rebase -u"
expect_eq "bitmap after amend and rebase" "3145728+65536 104857600+65536 " "$(dirty top.qcow2 tb)"
"$COWPOOL" resize base.qcow2 128M >/dev/null || fail "resize base"
"$COWPOOL" commit top.qcow2 >/dev/null || fail "commit"
check0 base.qcow2 "base after commit"
check0 top.qcow2 "top after commit"
expect_eq "commit marks what it copies into the base" "3145728+65536 104857600+65536 " "$(dirty base.qcow2 bb)"
expect_eq "top bitmap kept by commit" "3145728+65536 104857600+65536 " "$(dirty top.qcow2 tb)"

# ---- convert --bitmaps ------------------------------------------------------------------
"$COWPOOL" convert --bitmaps -O qcow2 img.qcow2 cv.qcow2 || fail "convert --bitmaps"
check0 cv.qcow2 "convert --bitmaps target"
expect_eq "converted bitmap list" "$(bml img.qcow2)" "$(bml cv.qcow2)"
for b in b1 b2 off; do
	expect_eq "converted bitmap $b" "$(dirty img.qcow2 $b)" "$(dirty cv.qcow2 $b)"
done
"$COWPOOL" convert --bitmaps -O raw img.qcow2 cv.raw >/dev/null 2>&1 && fail "convert --bitmaps to raw succeeded"
[ -e cv.raw ] && fail "refused convert --bitmaps created its target"
cp img.qcow2 iu2.qcow2
(qemu-io -c 'sigraise 9' iu2.qcow2; true) >/dev/null 2>&1
"$COWPOOL" convert --bitmaps -O qcow2 iu2.qcow2 cv2.qcow2 >/dev/null 2>&1 &&
	fail "convert --bitmaps of an inconsistent bitmap succeeded"
[ -e cv2.qcow2 ] && fail "refused convert --bitmaps created its target"
"$COWPOOL" convert --bitmaps --skip-broken-bitmaps -O qcow2 iu2.qcow2 cv2.qcow2 2>/dev/null ||
	fail "convert --skip-broken-bitmaps"
expect_eq "inconsistent bitmaps skipped" "null" "$(bml cv2.qcow2)"

# ---- measure ----------------------------------------------------------------------------
for o in "" "-o cluster_size=4k" "-o cluster_size=2M"; do
	# shellcheck disable=SC2086
	a=$(qemu-img measure -O qcow2 $o img.qcow2 | grep bitmaps)
	# shellcheck disable=SC2086
	b=$("$COWPOOL" measure -O qcow2 $o img.qcow2 | grep bitmaps)
	expect_eq "measure $o bitmaps size" "$a" "$b"
done

# ---- a damaged bitmap directory: qemu-img check's exit status ---------------------------
qemu-img create -q -f qcow2 dmg.qcow2 64M
qemu-img bitmap --add dmg.qcow2 d
qemu-io -c 'write -q 0 64k' dmg.qcow2 # stored with a data cluster
(qemu-io -c 'sigraise 9' dmg.qcow2; true) >/dev/null 2>&1 # "d" in use
ext=$(rd_be dmg.qcow2 100 4) # header length: extensions follow
dir=""
off=$ext
while :; do
	t=$(rd_be dmg.qcow2 "$off" 4)
	l=$(rd_be dmg.qcow2 $((off + 4)) 4)
	[ "$t" = 0 ] && break
	[ "$t" = $((0x23852875)) ] && dir=$(rd_be dmg.qcow2 $((off + 24)) 8)
	off=$((off + 8 + (l + 7) / 8 * 8))
done
[ -n "$dir" ] && ok || fail "bitmaps extension not found"
tab=$(rd_be dmg.qcow2 "$dir" 8)
data=$(( $(rd_be dmg.qcow2 "$tab" 8) & 0x00fffffffffffe00 ))
[ "$data" != 0 ] && ok || fail "no data cluster in the in-use bitmap"
cb=$(qh_cluster_bits dmg.qcow2)
# damage: the class (open refused, check failed, corruption, leak) and the
# exit status must be qemu-img's, before and after check -r all
for damage in table granularity entry-reserved refcount-table refcount-data; do
	cp dmg.qcow2 d2.qcow2
	case $damage in
	table) wr_be d2.qcow2 "$dir" 8 $((tab + 512)) ;;
	granularity) wr_be d2.qcow2 $((dir + 17)) 1 40 ;;
	entry-reserved) wr_be d2.qcow2 "$tab" 8 $((data | 0x100)) ;;
	refcount-table) wr_be d2.qcow2 "$(refcount_pos d2.qcow2 $((tab >> cb)))" 2 0 ;;
	refcount-data) wr_be d2.qcow2 "$(refcount_pos d2.qcow2 $((data >> cb)))" 2 5 ;;
	esac
	cp d2.qcow2 d3.qcow2
	qemu-img check d2.qcow2 >/dev/null 2>&1
	a=$?
	"$COWPOOL" check d3.qcow2 >/dev/null 2>&1
	b=$?
	expect_eq "check exit status, damaged $damage" "$a" "$b"
	qemu-img check -r all d2.qcow2 >/dev/null 2>&1
	a=$?
	"$COWPOOL" check -r all d3.qcow2 >/dev/null 2>&1
	b=$?
	expect_eq "check -r all exit status, damaged $damage" "$a" "$b"
	qemu-img check d2.qcow2 >/dev/null 2>&1
	a=$?
	qemu-img check d3.qcow2 >/dev/null 2>&1
	b=$?
	expect_eq "qemu-img check after check -r all, damaged $damage" "$a" "$b"
	if [ "$damage" = table ] || [ "$damage" = granularity ]; then
		"$COWPOOL" io -c 'write 0 4k' d3.qcow2 >/dev/null 2>&1 &&
			fail "wrote an image with a damaged $damage"
	fi
done

cp_finish
