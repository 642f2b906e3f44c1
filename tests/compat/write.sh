#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-write: images that cowpool creates and writes pass `qemu-img
# check` (no errors, no leaks: exit 0) and equal, under `qemu-img compare`,
# a raw reference file built alongside with dd from the same op script.
#
# Each layer of a case gets seeded random writes (aligned, unaligned, tiny,
# cluster-straddling), zero writes and discards through `cowpool io`;
# overlays are written over backing chains of raw and qcow2 layers.  Also:
# cowpool writing into qemu-made images (plain and compressed), refcount
# table growth, refcount_bits 1/8/64, lazy refcounts, preallocation, and
# `cowpool convert -O qcow2` output.

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
cp_init

SEED=2000

# cluster_of OPTS: the cluster size an -o option string asks for
cluster_of()
{
	case $1 in
	*cluster_size=*)
		local c=${1#*cluster_size=}
		c=${c%%,*}
		case $c in
		*M) echo $(( ${c%M} << 20 )) ;;
		*[Kk]) echo $(( ${c%[Kk]} << 10 )) ;;
		*) echo "$c" ;;
		esac ;;
	*) echo 65536 ;;
	esac
}

size_bytes()
{
	case $1 in
	*M) echo $(( ${1%M} << 20 )) ;;
	*[Kk]) echo $(( ${1%[Kk]} << 10 )) ;;
	*) echo "$1" ;;
	esac
}

# check_layer TAG IMG REF: qemu-img check clean, contents equal REF
check_layer()
{
	local tag=$1 img=$2 ref=$3
	run_capture qck qemu-img check -f qcow2 "$img"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: qemu-img check $img exited $RC: $(tr '\n' ' ' <qck.err | head -c 400) $(head -n 3 qck.out | tr '\n' ' ')"
	else
		ok
	fi
	run_capture qcmp qemu-img compare -f qcow2 -F raw "$img" "$ref"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: qemu-img compare $img vs reference: exit $RC: $(cat qcmp.out qcmp.err | head -n 2 | tr '\n' ' ')"
	else
		ok
	fi
	run_capture cck "$COWPOOL" check "$img"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool check $img exited $RC (qemu-img check: see above)"
	else
		ok
	fi
}

# cow_write TAG IMG FMT OPSFILE
cow_write()
{
	ops_to_io_args "$4"
	run_capture cio "$COWPOOL" io -f "$3" "${IO_ARGS[@]}" "$2"
	if [ "$RC" -ne 0 ]; then
		fail "$1: cowpool io on $2 exited $RC: $(head -n 2 cio.err | tr '\n' ' ')"
	else
		ok
	fi
}

# run_case TAG SIZE LAYER... (bottom to top)
# LAYER: raw                 cowpool create -f raw, written without discards
#        qcow2:OPTS          cowpool create -o OPTS [-b below -F fmt]
#        qemu:OPTS           qemu-img create and qemu-io writes, then cowpool
#        qz:OPTS             qemu-img convert -c of seeded data, then cowpool
# Every layer is written by cowpool with NOPS (default 40) ops.
NOPS=40
CTYPE=zlib
run_case()
{
	local tag=$1 size
	size=$(size_bytes "$2")
	shift 2
	local i=0 prev= prevfmt= prevref= spec kind opts name fmt cs bview ref
	mkdir "$tag" && cd "$tag" || return
	for spec in "$@"; do
		kind=${spec%%:*}
		opts=${spec#*:}
		[ "$opts" = "$spec" ] && opts=
		name=l$i.$([ "$kind" = raw ] && echo raw || echo qcow2)
		fmt=${name##*.}
		ref=l$i.ref
		cs=$(cluster_of "$opts")
		bview=
		# the reference starts as the view of the layer below
		if [ -n "$prevref" ]; then
			cp --sparse=always "$prevref" "$ref"
			truncate -s "$size" "$ref"
		else
			truncate -s "$size" "$ref"
		fi
		local bk=()
		[ -n "$prev" ] && bk=(-b "$prev" -F "$prevfmt")
		case $kind in
		raw)
			if ! "$COWPOOL" create -q -f raw "$name" "$size"; then
				fail "$tag: cowpool create -f raw failed"; cd ..; return
			fi
			;;
		qcow2)
			if ! run_capture cre "$COWPOOL" create -q -f qcow2 \
				${opts:+-o "$opts"} "${bk[@]}" "$name" "$size" ||
				[ "$RC" -ne 0 ]; then
				fail "$tag: cowpool create ${opts:+-o $opts} ${bk[*]} exited $RC: $(cat cre.err)"
				cd ..; return
			fi
			;;
		qemu)
			qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "${bk[@]}" \
				"$name" "$size" || { fail "$tag: qemu-img create"; cd ..; return; }
			SEED=$((SEED + 1))
			"$CP_GEN" ops "$SEED" "$NOPS" "$size" "$cs" >"$name.qops"
			ops_to_io_args "$name.qops"
			qemu-io -f qcow2 "${IO_ARGS[@]}" "$name" >/dev/null ||
				{ fail "$tag: qemu-io"; cd ..; return; }
			case $opts in *compat=0.10*) [ -n "$prev" ] && bview=$prevref ;; esac
			apply_ops_raw "$name.qops" "$ref" "$cs" "$size" ${bview:+"$bview"}
			;;
		qz)
			SEED=$((SEED + 1))
			"$CP_GEN" data "$SEED" "$size" >"$ref"
			qemu-img convert -c -f raw -O qcow2 ${opts:+-o "$opts"} "$ref" "$name" ||
				{ fail "$tag: qemu-img convert -c"; cd ..; return; }
			;;
		esac
		# the cowpool writes
		SEED=$((SEED + 1))
		if [ "$fmt" = raw ]; then
			"$CP_GEN" ops "$SEED" "$NOPS" "$size" "$cs" 20 0 >"$name.ops"
		else
			"$CP_GEN" ops "$SEED" "$NOPS" "$size" "$cs" >"$name.ops"
		fi
		bview=
		case $opts in *compat=0.10*) [ -n "$prev" ] && bview=$prevref ;; esac
		cow_write "$tag/$name" "$name" "$fmt" "$name.ops"
		apply_ops_raw "$name.ops" "$ref" "$cs" "$size" ${bview:+"$bview"}
		if [ "$fmt" = qcow2 ]; then
			check_layer "$tag/$name" "$name" "$ref"
		elif cmp -s "$name" "$ref"; then
			ok
		else
			fail "$tag/$name: raw layer written by cowpool differs from reference"
		fi
		prev=$name
		prevfmt=$fmt
		prevref=$ref
		i=$((i + 1))
	done
	# the top through cowpool convert -O qcow2 (no backing: flattened)
	run_capture cvt "$COWPOOL" convert -O qcow2 -o cluster_size=4096 "$prev" flat.qcow2
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool convert -O qcow2 exited $RC: $(cat cvt.err)"
	else
		check_layer "$tag/flat" flat.qcow2 "$prevref"
	fi
	# and compressed (zlib and zstd by turns)
	CTYPE=$([ "$CTYPE" = zlib ] && echo zstd || echo zlib)
	run_capture cvz "$COWPOOL" convert -c -O qcow2 -o compression_type=$CTYPE "$prev" comp.qcow2
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool convert -c -O qcow2 -o compression_type=$CTYPE exited $RC: $(cat cvz.err)"
	else
		check_layer "$tag/convert -c $CTYPE" comp.qcow2 "$prevref"
		run_capture qcj qemu-img check --output=json comp.qcow2
		if grep -q '"compressed-clusters"' qcj.out; then ok; else
			fail "$tag: cowpool convert -c left no compressed clusters (qemu-img check)"
		fi
	fi
	cd .. && rm -rf "$tag"
}

V3=compat=1.1
V2=compat=0.10

# depth 0
run_case v3-c512   8M  "qcow2:$V3,cluster_size=512"
run_case v3-c4k    16M "qcow2:$V3,cluster_size=4096"
run_case v3-c64k   16M "qcow2:$V3,cluster_size=65536"
run_case v3-c2m    24M "qcow2:$V3,cluster_size=2M"
run_case v2-c512   8M  "qcow2:$V2,cluster_size=512"
run_case v2-c4k    16M "qcow2:$V2,cluster_size=4096"
run_case v2-c64k   16M "qcow2:$V2,cluster_size=65536"
run_case v2-c2m    24M "qcow2:$V2,cluster_size=2M"
run_case xl2-c16k  16M "qcow2:$V3,cluster_size=16384,extended_l2=on"
run_case xl2-c64k  16M "qcow2:$V3,cluster_size=65536,extended_l2=on"
run_case xl2-c2m   24M "qcow2:$V3,cluster_size=2M,extended_l2=on"
run_case rc1       8M  "qcow2:$V3,cluster_size=4096,refcount_bits=1"
run_case rc8       8M  "qcow2:$V3,cluster_size=65536,refcount_bits=8"
run_case rc64      8M  "qcow2:$V3,cluster_size=512,refcount_bits=64"
run_case lazy      8M  "qcow2:$V3,cluster_size=65536,lazy_refcounts=on"
run_case lazy-xl2  8M  "qcow2:$V3,cluster_size=32768,extended_l2=on,lazy_refcounts=on"
run_case zstd-new  8M  "qcow2:$V3,compression_type=zstd"
run_case odd-size  8392704 "qcow2:$V3,cluster_size=65536"

# depth 1 and 3, mixed raw and qcow2 layers
run_case raw-v3    16M raw "qcow2:$V3,cluster_size=65536"
run_case raw-v2    16M raw "qcow2:$V2,cluster_size=4096"
run_case v3-xl2    16M "qcow2:$V3,cluster_size=4096" "qcow2:$V3,cluster_size=65536,extended_l2=on"
run_case v2-v2     16M "qcow2:$V2,cluster_size=65536" "qcow2:$V2,cluster_size=512"
run_case chain3-a  16M raw "qcow2:$V2,cluster_size=4096" \
	"qcow2:$V3,cluster_size=65536,extended_l2=on" "qcow2:$V3,cluster_size=2M"
run_case chain3-b  16M "qcow2:$V3,cluster_size=65536,refcount_bits=8" "qcow2:$V2,cluster_size=65536" \
	"qcow2:$V3,cluster_size=16384,extended_l2=on,lazy_refcounts=on" "qcow2:$V2,cluster_size=512"

# cowpool writing into images qemu made and wrote, incl. compressed ones
run_case qemu-v3   16M "qemu:$V3,cluster_size=4096"
run_case qemu-v2   16M "qemu:$V2,cluster_size=65536"
run_case qemu-xl2  16M "qemu:$V3,cluster_size=65536,extended_l2=on" "qemu:$V3,cluster_size=4096"
run_case qz-zlib   8M  "qz:$V3,cluster_size=65536"
run_case qz-zlib2  4M  "qz:$V2,cluster_size=4096"
run_case qz-zstd   8M  "qz:$V3,cluster_size=65536,compression_type=zstd"
run_case qz-zstd2  8M  "qz:$V3,cluster_size=2M,compression_type=zstd"
run_case qz-xl2    8M  "qz:$V3,cluster_size=32768,extended_l2=on" "qcow2:$V3,cluster_size=65536"

# ---- refcount table growth: > 1 cluster of refcount table ------------------
growth_case()
{
	local tag=$1 opts=$2 size
	size=$(size_bytes "$3")
	mkdir "$tag" && cd "$tag" || return
	"$COWPOOL" create -q -f qcow2 -o "$opts" g.qcow2 "$size" ||
		{ fail "$tag: create"; cd ..; return; }
	truncate -s "$size" g.ref
	# large sequential writes, then a zero write and rewrites across them
	{
		echo "w 90 0 $((size / 2))"
		echo "w 91 $((size / 2 + 777)) $((size / 2 - 777))"
		echo "z 100000 300000"
		echo "w 92 123457 65536"
	} >g.ops
	cow_write "$tag" g.qcow2 qcow2 g.ops
	apply_ops_raw g.ops g.ref "$(cluster_of "$opts")" "$size"
	check_layer "$tag" g.qcow2 g.ref
	local rtc
	rtc=$(rd_be g.qcow2 56 4)
	if [ "$rtc" -gt 1 ]; then ok; else
		fail "$tag: refcount table did not grow (refcount_table_clusters=$rtc): test does not exercise growth"
	fi
	cd .. && rm -rf "$tag"
}
growth_case grow-c512-rc64 "cluster_size=512,refcount_bits=64" 8M
growth_case grow-c512      "cluster_size=512" 24M

# ---- preallocation -----------------------------------------------------------
prealloc_case()
{
	local tag=$1 fmt=$2 opts=$3 size
	size=$(size_bytes "$4")
	mkdir "$tag" && cd "$tag" || return
	local img=p.$fmt
	run_capture cre "$COWPOOL" create -q -f "$fmt" -o "$opts" "$img" "$size"
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool create -f $fmt -o $opts exited $RC: $(cat cre.err)"
		cd ..; return
	fi
	truncate -s "$size" p.ref
	if [ "$fmt" = raw ]; then
		expect_eq "$tag: raw size" "$size" "$(stat -c %s "$img")"
		if cmp -s "$img" p.ref; then ok; else fail "$tag: raw preallocated image is not zero"; fi
		case $opts in *full*|*falloc*)
			# allocated: at least the size in blocks
			local blocks
			blocks=$(( $(stat -c %b "$img") * $(stat -c %B "$img") ))
			if [ "$blocks" -ge "$size" ]; then ok; else
				fail "$tag: raw $opts image has only $blocks bytes allocated"
			fi ;;
		esac
		cd .. && rm -rf "$tag"
		return
	fi
	check_layer "$tag/created" "$img" p.ref
	# qemu's view of the allocation: every cluster allocated
	run_capture qmap qemu-img map --output=json "$img"
	if grep -q '"present": false' qmap.out || ! grep -q '"present": true' qmap.out; then
		fail "$tag: qemu-img map shows clusters that are not preallocated: $(grep -m1 '"present": false' qmap.out)"
	else
		ok
	fi
	SEED=$((SEED + 1))
	"$CP_GEN" ops "$SEED" "$NOPS" "$size" "$(cluster_of "$opts")" >p.ops
	cow_write "$tag" "$img" qcow2 p.ops
	apply_ops_raw p.ops p.ref "$(cluster_of "$opts")" "$size"
	check_layer "$tag/written" "$img" p.ref
	cd .. && rm -rf "$tag"
}
for pa in metadata falloc full; do
	prealloc_case pre-$pa-v3     qcow2 "preallocation=$pa,cluster_size=65536" 8M
	prealloc_case pre-$pa-v2-4k  qcow2 "preallocation=$pa,compat=0.10,cluster_size=4096" 4M
	prealloc_case pre-$pa-xl2    qcow2 "preallocation=$pa,extended_l2=on,cluster_size=65536" 8M
done
prealloc_case pre-falloc-raw raw preallocation=falloc 4M
prealloc_case pre-full-raw   raw preallocation=full 4M

cp_finish
