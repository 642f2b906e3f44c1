#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-info-map: `cowpool info`, `map` and `check` agree with qemu-img on
# the same images.
#
#   info --output=json: the listed members must agree (hard), then the whole
#       document, human output and --backing-chain are compared as text
#       (cowpool.md promises the same output, key order included);
#   map --output=json and human: equal text;
#   check: same exit status on clean images, images with leaks and images
#       with refcount corruption (made with dd), same --output=json; and
#       `cowpool check -r` repairs so that qemu-img check then passes.

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
cp_init

SEED=3000
INFO_KEYS="virtual-size cluster-size format backing-filename backing-filename-format
full-backing-filename compat lazy-refcounts refcount-bits extended-l2
compression-type corrupt dirty-flag actual-size"

# same_text TAG FILE_QEMU FILE_COWPOOL
same_text()
{
	if cmp -s "$2" "$3"; then
		ok
	else
		fail "$1: cowpool output differs from qemu-img:
$(diff "$2" "$3" | head -n 12)"
	fi
}

compare_info_map()
{
	local img=$1 tag=$2 k qv cv
	qemu-img info --output=json "$img" >qi.json
	run_capture ci "$COWPOOL" info --output=json "$img"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool info --output=json exited $RC: $(cat ci.err)"
		return
	fi
	for k in $INFO_KEYS; do
		qv=$(json_member qi.json "$k")
		cv=$(json_member ci.out "$k")
		expect_eq "$tag: info member $k" "$qv" "$cv"
	done
	same_text "$tag: info --output=json" qi.json ci.out
	qemu-img info "$img" >qh.txt
	"$COWPOOL" info "$img" >ch.txt 2>&1
	same_text "$tag: info (human)" qh.txt ch.txt
	qemu-img info --backing-chain --output=json "$img" >qbc.json
	"$COWPOOL" info --backing-chain --output=json "$img" >cbc.json 2>&1
	same_text "$tag: info --backing-chain --output=json" qbc.json cbc.json

	qemu-img map --output=json "$img" >qm.json
	run_capture cm "$COWPOOL" map --output=json "$img"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool map --output=json exited $RC: $(cat cm.err)"
	else
		same_text "$tag: map --output=json" qm.json cm.out
	fi
	qemu-img map "$img" >qmh.txt 2>qmh.err
	local qrc=$?
	run_capture cmh "$COWPOOL" map "$img"
	expect_eq "$tag: map (human) exit status" "$qrc" "$RC"
	[ "$qrc" -eq 0 ] && same_text "$tag: map (human)" qmh.txt cmh.out
	# a window in the middle
	qemu-img map --output=json --start-offset=1536K --max-length=3M "$img" >qmw.json
	"$COWPOOL" map --output=json --start-offset=1536K --max-length=3M "$img" >cmw.json 2>&1
	same_text "$tag: map --start-offset --max-length" qmw.json cmw.json
}

compare_check()
{
	local img=$1 tag=$2 qrc
	qemu-img check --output=json "$img" >qc.json 2>qc.err
	qrc=$?
	run_capture cc "$COWPOOL" check --output=json "$img"
	expect_eq "$tag: check exit status" "$qrc" "$RC"
	same_text "$tag: check --output=json" qc.json cc.out
	qemu-img check "$img" >qch.txt 2>qch.err
	"$COWPOOL" check "$img" >cch.txt 2>cch.err
	same_text "$tag: check (human, stdout)" qch.txt cch.txt
	# the per-cluster report lines (the error message of a failed check
	# differs by design: "cowpool: file: ..." instead of "qemu-img: ...")
	case $qrc in 0|2|3) same_text "$tag: check (human, stderr)" qch.err cch.err ;; esac
}

# qemu_image NAME OPTS [BACKING FMT]: qemu-img create + seeded qemu-io writes
qemu_image()
{
	local name=$1 opts=$2 bk=()
	[ $# -ge 4 ] && bk=(-b "$3" -F "$4")
	qemu-img create -q -f qcow2 -o "$opts" "${bk[@]}" "$name" 8M || return 1
	SEED=$((SEED + 1))
	local cs=65536
	case $opts in *cluster_size=*) cs=${opts#*cluster_size=}; cs=${cs%%,*} ;; esac
	"$CP_GEN" ops "$SEED" 30 8M "$cs" >"$name.ops"
	ops_to_io_args "$name.ops"
	qemu-io -f qcow2 "${IO_ARGS[@]}" "$name" >/dev/null
}

# ---- info / map on qemu-made images -----------------------------------------
i=0
for opts in \
	"compat=1.1,cluster_size=65536" \
	"compat=1.1,cluster_size=512" \
	"compat=1.1,cluster_size=4096,refcount_bits=1" \
	"compat=1.1,cluster_size=2M,refcount_bits=64" \
	"compat=1.1,cluster_size=16384,extended_l2=on" \
	"compat=1.1,cluster_size=65536,lazy_refcounts=on,refcount_bits=8" \
	"compat=1.1,compression_type=zstd" \
	"compat=0.10,cluster_size=65536" \
	"compat=0.10,cluster_size=4096" \
	"compat=1.1,preallocation=metadata" \
	"compat=1.1,preallocation=falloc,cluster_size=4096" \
	"compat=0.10,preallocation=full"; do
	i=$((i + 1))
	if qemu_image q$i.qcow2 "$opts"; then
		compare_info_map q$i.qcow2 "qemu[$opts]"
		compare_check q$i.qcow2 "qemu[$opts]"
	else
		fail "qemu-img/qemu-io failed for $opts (test bug)"
	fi
done

# chains: raw <- v2 <- v3/extended L2, a relative backing name in a subdir
qemu-img create -q -f raw base.raw 6M
qemu-io -f raw -c 'write -P 7 0 1M' -c 'write -P 8 3M 100k' base.raw >/dev/null
qemu_image mid.qcow2 "compat=0.10,cluster_size=4096" base.raw raw
mkdir sub
qemu_image sub/top.qcow2 "compat=1.1,cluster_size=65536,extended_l2=on" ../mid.qcow2 qcow2
compare_info_map mid.qcow2 "chain mid"
compare_info_map sub/top.qcow2 "chain top"
compare_check sub/top.qcow2 "chain top"
# a backing file stored without a format (probed)
qemu-img create -q -f qcow2 -o compat=1.1 -b mid.qcow2 -F qcow2 nofmt.qcow2
qemu-img rebase -u -b mid.qcow2 nofmt.qcow2 2>/dev/null
compare_info_map nofmt.qcow2 "backing without format"

# compressed images: offsets are absent from qemu's map, the rest agrees
"$CP_GEN" data 77 4M >z.src
qemu-img convert -c -O qcow2 z.src z.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=4096 z.src zs.qcow2
qemu-io -c 'write -P 3 100k 8k' z.qcow2 >/dev/null
compare_info_map z.qcow2 "compressed zlib"
compare_info_map zs.qcow2 "compressed zstd"
compare_check z.qcow2 "compressed zlib"

# raw images
"$CP_GEN" data 78 3M >r.raw
compare_info_map r.raw "raw"
compare_check r.raw "raw"

# images cowpool made: qemu-img's view of them is the oracle
for opts in "compat=1.1,cluster_size=65536" "compat=0.10,cluster_size=512" \
	"compat=1.1,cluster_size=32768,extended_l2=on,lazy_refcounts=on,refcount_bits=64" \
	"compat=1.1,compression_type=zstd,preallocation=metadata"; do
	rm -f c.qcow2
	if "$COWPOOL" create -q -f qcow2 -o "$opts" c.qcow2 8M &&
		"$COWPOOL" io -c 'write -q -P 9 1M 100k' -c 'write -q -z 3M 70k' c.qcow2 >/dev/null; then
		compare_info_map c.qcow2 "cowpool[$opts]"
		compare_check c.qcow2 "cowpool[$opts]"
	else
		fail "cowpool create/io failed for $opts"
	fi
done

# ---- check on damaged images --------------------------------------------------
# leak: drop the L2 entry of an allocated cluster
qemu-img create -q -f qcow2 -o cluster_size=4096 leak.qcow2 4M
qemu-io -c 'write -P 1 0 16k' -c 'write -P 2 1M 4k' leak.qcow2 >/dev/null
wr_be leak.qcow2 "$(l2_entry_pos leak.qcow2 4096)" 8 0
compare_check leak.qcow2 "leak"
qemu-img convert -O raw leak.qcow2 leak.before
cp leak.qcow2 leak-q.qcow2
qemu-img check -r leaks leak-q.qcow2 >ql.out 2>ql.err
qrc=$?
run_capture rl "$COWPOOL" check -r leaks leak.qcow2
expect_eq "check -r leaks exit status" "$qrc" "$RC"
same_text "check -r leaks (stdout)" ql.out rl.out
run_capture qa qemu-img check leak.qcow2
expect_eq "qemu-img check after cowpool check -r leaks" 0 "$RC"
qemu-img convert -O raw leak.qcow2 leak.after
if cmp -s leak.before leak.after; then ok; else fail "check -r leaks changed the guest content"; fi

# a leaked cluster made by raising the refcount of a free cluster
qemu-img create -q -f qcow2 -o cluster_size=65536 free.qcow2 4M
qemu-io -c 'write -P 1 0 64k' -c 'write -P 2 64k 64k' -c 'discard 0 64k' free.qcow2 >/dev/null
# the discarded host cluster: the first data cluster (after header, L1,
# refcount table and block, L2), which is free now
host=$(( ($(rd_be free.qcow2 $(l2_entry_pos free.qcow2 65536) 8) & 0x00fffffffffffe00) / 65536 - 1 ))
wr_be free.qcow2 "$(refcount_pos free.qcow2 "$host")" 2 1
compare_check free.qcow2 "leak by refcount"

# corruption: refcount 0 for a cluster in use, refcount 2 for one used once
for bad in 0 2; do
	qemu-img create -q -f qcow2 -o cluster_size=4096 bad$bad.qcow2 4M
	qemu-io -c 'write -P 1 0 16k' bad$bad.qcow2 >/dev/null
	host=$(( ($(rd_be bad$bad.qcow2 "$(l2_entry_pos bad$bad.qcow2 8192)" 8) & 0x00fffffffffffe00) / 4096 ))
	wr_be bad$bad.qcow2 "$(refcount_pos bad$bad.qcow2 "$host")" 2 "$bad"
	compare_check bad$bad.qcow2 "refcount $bad for a cluster used once"
	cp bad$bad.qcow2 bad$bad-q.qcow2
	qemu-img check -r all bad$bad-q.qcow2 >/dev/null 2>&1
	qrc=$?
	run_capture ra "$COWPOOL" check -r all bad$bad.qcow2
	expect_eq "refcount $bad: check -r all exit status" "$qrc" "$RC"
	run_capture qa qemu-img check bad$bad.qcow2
	expect_eq "refcount $bad: qemu-img check after cowpool check -r all" 0 "$RC"
	qemu-img convert -O raw bad$bad.qcow2 b.raw
	qemu-img convert -O raw bad$bad-q.qcow2 bq.raw
	if cmp -s b.raw bq.raw; then ok; else fail "refcount $bad: content after cowpool repair differs from qemu's repair"; fi
done

# json:{...} backing names: info --backing-chain shows, for the layer a json:
# name opens, the file name inside it (relative names as they are), both
# as the human "image:" line and as the JSON "filename"; the overlay keeps
# the json: name in backing-filename and full-backing-filename.  The same
# for a json: name given as the image argument.
mkdir jdir
qemu-img create -q -f qcow2 -o cluster_size=65536 jdir/jb.qcow2 4M
qemu-img create -q -f raw jb.raw 4M
n=0
for j in "{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$TMP/jdir/jb.qcow2\"}}" \
	 '{"driver":"qcow2","file":{"driver":"file","filename":"jdir/jb.qcow2"}}' \
	 '{"file.driver":"file","file.filename":"jdir/jb.qcow2","driver":"qcow2"}' \
	 '{"driver":"raw","file":{"driver":"file","filename":"jb.raw"}}' \
	 '{"driver":"qcow2","file":{"driver":"file","filename":"jdir/jb.qcow2","aio":"threads"}}' \
	 '{"driver":"qcow2","cache":{"direct":false},"l2-cache-size":65536,"file":{"driver":"file","filename":"jdir/jb.qcow2"}}' \
	 '{"driver":"raw","file":{"driver":"file","filename":"jdir/jb.qcow2"}}' \
	 '{"driver":"file","filename":"jdir/jb.qcow2"}'; do
	n=$((n + 1))
	bf=qcow2
	[[ $j == *jb.raw* ]] && bf=raw
	qemu-img create -q -f qcow2 -u -b "json:$j" -F $bf jtop$n.qcow2 4M
	qemu-img create -q -f qcow2 -u -b jtop$n.qcow2 -F qcow2 jover$n.qcow2 4M
	for img in jtop$n.qcow2 jover$n.qcow2 "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"jtop$n.qcow2\"}}"; do
		for o in human json; do
			qemu-img info --backing-chain --output=$o "$img" >qj.out 2>qj.err
			qrc=$?
			run_capture cj "$COWPOOL" info --backing-chain --output=$o "$img"
			expect_eq "info --backing-chain --output=$o $img (json:$j): exit status" "$qrc" "$RC"
			same_text "info --backing-chain --output=$o $img (json:$j)" qj.out cj.out
		done
	done
	# the data read through the chain: as in QEMU, the overlay's backing
	# format wins over the json: name's driver, and the file protocol
	# alone with a backing format is refused
	qemu-io -r -c "read -q -P 0 0 64k" jtop$n.qcow2 >qr.out 2>&1
	qrc=$?
	grep -q -e fail -e "can't open" qr.out && qrc=1
	run_capture cr "$COWPOOL" io -r -c "read -q -P 0 0 64k" jtop$n.qcow2
	expect_eq "read through json:$j: exit status (qemu-io: $(head -c 100 qr.out))" "$qrc" "$RC"
done
qemu-io -c "write -q -P 0x66 0 64k" jdir/jb.qcow2
qemu-img create -q -f qcow2 -u -b 'json:{"driver":"raw","file":{"driver":"file","filename":"jdir/jb.qcow2"}}' -F qcow2 jfmt.qcow2 4M
"$COWPOOL" io -r -c "read -q -P 0x66 0 64k" jfmt.qcow2 && ok ||
	fail "the backing format qcow2 does not win over the json: name's driver raw"

cp_finish
