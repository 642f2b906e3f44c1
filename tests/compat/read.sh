#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-read: images that qemu-img/qemu-io create and write read back
# identically through cowpool.  Oracle: `qemu-img convert -O raw` of the
# same image; cowpool must produce the same bytes with `convert -O raw` and
# `io -r -c read`.
#
# Matrix: cluster sizes 512/4K/64K/2M, compat 0.10 and 1.1, extended L2
# (1.1, cluster >= 16K), refcount_bits 1/8/64, lazy refcounts, backing depth
# 0/1/3 with raw and qcow2 layers (a backing file shorter than its overlay
# included), zlib and zstd compressed images made by `qemu-img convert -c`
# and then partly overwritten.  Every layer gets seeded random writes,
# partial-cluster writes, zero writes and discards from qemu-io.

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
cp_init

SEED=1000

# qemu_layer NAME SPEC BACKING BACKING_FMT DEFAULT_SIZE
# SPEC: raw[:size] | qcow2:opts (opts may hold size=...) | zqcow2:opts
# (compressed: a seeded data file converted with qemu-img convert -c).
qemu_layer()
{
	local name=$1 spec=$2 bk=$3 bkfmt=$4 size=$5
	local kind=${spec%%:*} opts=${spec#*:}
	[ "$opts" = "$spec" ] && opts=
	case $kind in
	raw)
		[ -n "$opts" ] && size=$opts
		qemu-img create -q -f raw "$name" "$size" || return 1
		;;
	qcow2)
		if [ -n "$bk" ]; then
			qemu-img create -q -f qcow2 -o "${opts:+$opts,}size=$size" \
				-b "$bk" -F "$bkfmt" "$name" || return 1
		else
			qemu-img create -q -f qcow2 -o "${opts:+$opts,}size=$size" \
				"$name" || return 1
		fi
		;;
	zqcow2)
		SEED=$((SEED + 1))
		"$CP_GEN" data "$SEED" "$size" >"$name.src" || return 1
		qemu-img convert -c -f raw -O qcow2 -o "$opts" "$name.src" "$name" || return 1
		rm -f "$name.src"
		if [ -n "$bk" ]; then
			qemu-img rebase -u -f qcow2 -b "$bk" -F "$bkfmt" "$name" || return 1
		fi
		;;
	*)
		echo "bad layer spec $spec" >&2
		return 1
		;;
	esac
}

# image_size FILE: virtual size according to qemu-img
image_size()
{
	qemu-img info --output=json "$1" | json_member /dev/stdin virtual-size
}

# cluster_of SPEC
cluster_of()
{
	case $1 in
	raw*) echo 65536 ;;
	*cluster_size=*) local c=${1#*cluster_size=}; c=${c%%,*}
		case $c in *M) echo $(( ${c%M} << 20 )) ;; *K|*k) echo $(( ${c%[Kk]} << 10 )) ;; *) echo "$c" ;; esac ;;
	*) echo 65536 ;;
	esac
}

# verify NAME: cowpool's view of image NAME (with its chain) equals qemu's
verify()
{
	local img=$1 tag=$2
	rm -f q.raw c.raw
	if ! qemu-img convert -O raw "$img" q.raw; then
		fail "$tag: qemu-img convert failed on $img (test bug)"
		return
	fi
	run_capture cvt "$COWPOOL" convert -O raw "$img" c.raw
	if [ "$RC" -ne 0 ]; then
		fail "$tag: cowpool convert -O raw $img exited $RC: $(head -c 300 cvt.err)"
	elif ! cmp -s q.raw c.raw; then
		fail "$tag: cowpool convert of $img differs from qemu-img: $(cmp q.raw c.raw 2>&1 | head -n 1)"
	else
		ok
	fi
	# read through the I/O path too: read -P on sectors whose content is
	# uniform in qemu's view.
	local io=() off pat n=0
	while read -r off pat; do
		io+=(-c "read -q -P $pat $off 512")
		n=$((n + 1))
	done < <("$CP_GEN" sectors q.raw 48)
	if [ "$n" -gt 0 ]; then
		run_capture rd "$COWPOOL" io -r "${io[@]}" "$img"
		if [ "$RC" -ne 0 ] || grep -q "verification failed" rd.out; then
			fail "$tag: cowpool io read -P on $img: exit $RC: $(grep -m1 -h . rd.out rd.err)"
		else
			ok
		fi
	fi
}

# run_case NAME SIZE LAYER_SPEC... (bottom to top)
run_case()
{
	local tag=$1 size=$2
	shift 2
	local i=0 prev= prevfmt= spec name fmt cs lsize
	mkdir "$tag" && cd "$tag" || return
	for spec in "$@"; do
		name=l$i.${spec%%:*}
		name=${name/zqcow2/qcow2}
		case $spec in raw*) fmt=raw ;; *) fmt=qcow2 ;; esac
		if ! qemu_layer "$name" "$spec" "$prev" "$prevfmt" "$size"; then
			fail "$tag: creating layer $name ($spec) with qemu-img failed"
			cd ..
			return
		fi
		lsize=$(image_size "$name")
		cs=$(cluster_of "$spec")
		SEED=$((SEED + 1))
		"$CP_GEN" ops "$SEED" 40 "$lsize" "$cs" >"$name.ops"
		ops_to_io_args "$name.ops"
		if ! qemu-io -f "$fmt" "${IO_ARGS[@]}" "$name" >qio.out 2>&1; then
			fail "$tag: qemu-io on $name failed (test bug): $(head -c 300 qio.out)"
		fi
		verify "$name" "$tag/$name"
		prev=$name
		prevfmt=$fmt
		i=$((i + 1))
	done
	cd .. && rm -rf "$tag"
}

V3=compat=1.1
V2=compat=0.10

# depth 0: cluster size x compat x extended L2
run_case v3-c512    16M "qcow2:$V3,cluster_size=512"
run_case v3-c4k     16M "qcow2:$V3,cluster_size=4096"
run_case v3-c64k    16M "qcow2:$V3,cluster_size=65536"
run_case v3-c2m     24M "qcow2:$V3,cluster_size=2M"
run_case v2-c512    16M "qcow2:$V2,cluster_size=512"
run_case v2-c4k     16M "qcow2:$V2,cluster_size=4096"
run_case v2-c64k    16M "qcow2:$V2,cluster_size=65536"
run_case v2-c2m     24M "qcow2:$V2,cluster_size=2M"
run_case xl2-c16k   16M "qcow2:$V3,cluster_size=16384,extended_l2=on"
run_case xl2-c64k   16M "qcow2:$V3,cluster_size=65536,extended_l2=on"
run_case xl2-c2m    24M "qcow2:$V3,cluster_size=2M,extended_l2=on"
# refcount widths, lazy refcounts, a size that is not a cluster multiple
run_case rc1-lazy   8M  "qcow2:$V3,cluster_size=4096,refcount_bits=1,lazy_refcounts=on"
run_case rc8        8M  "qcow2:$V3,cluster_size=65536,refcount_bits=8"
run_case rc64-odd   8392704 "qcow2:$V3,cluster_size=65536,refcount_bits=64"

# depth 1
run_case raw-v3     16M raw "qcow2:$V3,cluster_size=65536"
run_case raw-v2     16M raw "qcow2:$V2,cluster_size=4096"
run_case v3-xl2     16M "qcow2:$V3,cluster_size=4096" "qcow2:$V3,cluster_size=65536,extended_l2=on"
run_case v2-v3-512  16M "qcow2:$V2,cluster_size=65536" "qcow2:$V3,cluster_size=512"
run_case v3-v2      16M "qcow2:$V3,cluster_size=16384,extended_l2=on" "qcow2:$V2,cluster_size=65536"

# depth 3 (a raw base shorter than the overlays)
run_case chain3-raw  16M raw:6M "qcow2:$V2,cluster_size=4096" \
	"qcow2:$V3,cluster_size=65536,extended_l2=on" "qcow2:$V3,cluster_size=2M"
run_case chain3-qcow 16M "qcow2:$V3,cluster_size=65536" "qcow2:$V2,cluster_size=65536" \
	"qcow2:$V3,cluster_size=16384,extended_l2=on,lazy_refcounts=on" "qcow2:$V2,cluster_size=512"

# compressed images (qemu-img convert -c), then overwritten by qemu-io
run_case zlib-c64k   8M "zqcow2:$V3,cluster_size=65536"
run_case zlib-c512   2M "zqcow2:$V3,cluster_size=512"
run_case zlib-v2-c4k 4M "zqcow2:$V2,cluster_size=4096"
run_case zlib-xl2    8M "zqcow2:$V3,cluster_size=65536,extended_l2=on"
run_case zstd-c4k    4M "zqcow2:$V3,cluster_size=4096,compression_type=zstd"
run_case zstd-c64k   8M "zqcow2:$V3,cluster_size=65536,compression_type=zstd"
run_case zstd-c2m    8M "zqcow2:$V3,cluster_size=2M,compression_type=zstd"
run_case z-chain     8M "zqcow2:$V3,cluster_size=65536,compression_type=zstd" \
	"qcow2:$V3,cluster_size=4096" "zqcow2:$V3,cluster_size=16384"

cp_finish
