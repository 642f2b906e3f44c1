#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# integration: bad command lines and impossible requests give one clear
# line on stderr ("cowpool: ..." naming the bad value or file), a non-zero
# exit status (the same as qemu-img's where the command exists there), no
# crash, and no side effect (no file created, image unchanged).

. "$(dirname "$0")/../lib.sh"
requires qemu-img
cp_init

# err_case TAG TOKEN QEMU_ARGS -- COWPOOL_ARGS
# TOKEN: a string the error line must contain ("" = any).  QEMU_ARGS: the
# same command for qemu-img ("-" when it has no equivalent); its exit
# status must equal cowpool's.
err_case()
{
	local tag=$1 token=$2 qargs=() qrc=
	shift 2
	while [ "$1" != -- ]; do qargs+=("$1"); shift; done
	shift
	"$COWPOOL" "$@" >e.out 2>e.err
	local rc=$?
	if [ "$rc" -eq 0 ]; then
		fail "$tag: exit 0, expected failure (stdout: $(head -c 200 e.out))"
		return
	fi
	if [ "$rc" -ge 124 ]; then
		fail "$tag: exit $rc (signal?): $(head -n 3 e.err | tr '\n' ' ')"
		return
	fi
	ok
	local lines
	lines=$(wc -l <e.err)
	if [ "$lines" -ne 1 ]; then
		fail "$tag: expected one line on stderr, got $lines: $(head -n 4 e.err | tr '\n' '|')"
	elif ! grep -q '^cowpool: ' e.err; then
		fail "$tag: stderr line does not start with 'cowpool: ': $(cat e.err)"
	elif [ -n "$token" ] && ! grep -qF -- "$token" e.err; then
		fail "$tag: error line does not mention '$token': $(cat e.err)"
	else
		ok
	fi
	if [ "${qargs[0]}" != - ]; then
		qemu-img "${qargs[@]}" >/dev/null 2>&1
		qrc=$?
		expect_eq "$tag: exit status (qemu-img: ${qargs[*]})" "$qrc" "$rc"
	fi
}

# no_file TAG FILE
no_file()
{
	if [ -e "$2" ]; then
		fail "$1: $2 was created"
		rm -f "$2"
	else
		ok
	fi
}

qemu-img create -q -f qcow2 img.qcow2 4M
qemu-img create -q -f raw img.raw 1M

# ---- option parsing --------------------------------------------------------
err_case "unknown option" "--bogus" info --bogus img.qcow2 -- info --bogus img.qcow2
err_case "unknown short option" "" check -Z img.qcow2 -- check -Z img.qcow2
err_case "unknown command" "frobnicate" frobnicate img.qcow2 -- frobnicate img.qcow2
err_case "missing file name" "" info -- info
err_case "bad --output" "xml" info --output=xml img.qcow2 -- info --output=xml img.qcow2
err_case "check -r bogus" "bogus" check -r bogus img.qcow2 -- check -r bogus img.qcow2

# ---- create ------------------------------------------------------------------
err_case "bad size 12X" "12X" create -f qcow2 q1.qcow2 12X -- create -f qcow2 n1.qcow2 12X
no_file "bad size 12X" n1.qcow2
err_case "negative size" "-5" - -- create -f qcow2 n2.qcow2 -- -5
no_file "negative size" n2.qcow2
err_case "unknown -o key" "bogus" create -f qcow2 -o bogus=1 q3.qcow2 1M -- create -f qcow2 -o bogus=1 n3.qcow2 1M
no_file "unknown -o key" n3.qcow2
err_case "cluster_size not a power of 2" "cluster" create -f qcow2 -o cluster_size=1000 q4.qcow2 1M -- \
	create -f qcow2 -o cluster_size=1000 n4.qcow2 1M
no_file "cluster_size 1000" n4.qcow2
err_case "cluster_size 4M" "cluster" create -f qcow2 -o cluster_size=4M q5.qcow2 1M -- \
	create -f qcow2 -o cluster_size=4M n5.qcow2 1M
no_file "cluster_size 4M" n5.qcow2
err_case "extended_l2 on compat 0.10" "" create -f qcow2 -o compat=0.10,extended_l2=on q6.qcow2 1M -- \
	create -f qcow2 -o compat=0.10,extended_l2=on n6.qcow2 1M
no_file "extended_l2 on v2" n6.qcow2
err_case "extended_l2 with 4k clusters" "" create -f qcow2 -o extended_l2=on,cluster_size=4k q7.qcow2 1M -- \
	create -f qcow2 -o extended_l2=on,cluster_size=4k n7.qcow2 1M
no_file "extended_l2 4k" n7.qcow2
err_case "refcount_bits 3" "refcount" create -f qcow2 -o refcount_bits=3 q8.qcow2 1M -- \
	create -f qcow2 -o refcount_bits=3 n8.qcow2 1M
no_file "refcount_bits 3" n8.qcow2
err_case "compat 2.0" "2.0" create -f qcow2 -o compat=2.0 q9.qcow2 1M -- \
	create -f qcow2 -o compat=2.0 n9.qcow2 1M
no_file "compat 2.0" n9.qcow2
err_case "bad preallocation" "sideways" create -f qcow2 -o preallocation=sideways q10.qcow2 1M -- \
	create -f qcow2 -o preallocation=sideways n10.qcow2 1M
no_file "bad preallocation" n10.qcow2
err_case "unknown format" "nosuchfmt" create -f nosuchfmt q11.img 1M -- create -f nosuchfmt n11.img 1M
no_file "unknown format" n11.img
# formats qemu-img has and cowpool does not (no qemu-img oracle)
err_case "unsupported format" "vmdk" - -- create -f vmdk n11.img 1M
no_file "unsupported format" n11.img
err_case "no size, no backing" "" create -f qcow2 q12.qcow2 -- create -f qcow2 n12.qcow2
no_file "no size" n12.qcow2
err_case "backing without -F" "" create -f qcow2 -b img.qcow2 q13.qcow2 -- \
	create -f qcow2 -b img.qcow2 n13.qcow2
no_file "backing without -F" n13.qcow2
err_case "missing backing file" "nosuch.qcow2" create -f qcow2 -b nosuch.qcow2 -F qcow2 q14.qcow2 -- \
	create -f qcow2 -b nosuch.qcow2 -F qcow2 n14.qcow2
no_file "missing backing" n14.qcow2

# ---- opening -------------------------------------------------------------------
for c in info check map; do
	err_case "$c on a missing file" "nosuch.qcow2" "$c" nosuch.qcow2 -- "$c" nosuch.qcow2
done
err_case "io on a missing file" "nosuch.qcow2" - -- io -c 'read 0 512' nosuch.qcow2
err_case "convert from a missing file" "nosuch.qcow2" convert nosuch.qcow2 q.raw -- convert nosuch.qcow2 n15.raw
no_file "convert missing" n15.raw
err_case "info -f nosuchfmt" "nosuchfmt" info -f nosuchfmt img.qcow2 -- info -f nosuchfmt img.qcow2
err_case "convert -O vmdk" "vmdk" - -- convert -O vmdk img.qcow2 n16.vmdk
no_file "convert -O vmdk" n16.vmdk
err_case "info -f qcow2 on a raw file" "img.raw" info -f qcow2 img.raw -- info -f qcow2 img.raw
err_case "directory as image" "" info "$TMP" -- info "$TMP"

# ---- I/O requests that cannot be honoured ------------------------------------
sum=$(md5sum <img.qcow2)
err_case "write beyond the end" "" - -- io -c 'write 4M 512' img.qcow2
err_case "write across the end" "" - -- io -c 'write 4095k 2k' img.qcow2
err_case "read beyond the end" "" - -- io -r -c 'read 4M 512' img.qcow2
err_case "write on read-only open" "" - -- io -r -c 'write -P 1 0 512' img.qcow2
err_case "write -z on read-only open" "" - -- io -r -c 'write -z 0 512' img.qcow2
err_case "discard on read-only open" "" - -- io -r -c 'discard 0 64k' img.qcow2
err_case "unknown io command" "frob" - -- io -c 'frob 0 1' img.qcow2
err_case "bad io offset" "12X" - -- io -c 'read 12X 512' img.qcow2
err_case "bad pattern" "" - -- io -c 'write -P zz 0 512' img.qcow2
err_case "io without -c" "" - -- io img.qcow2
expect_eq "image unchanged by failed commands" "$sum" "$(md5sum <img.qcow2)"
# a read-only file (permissions): a write-open must fail cleanly (root
# bypasses permissions, so only when not root)
if [ "$(id -u)" -ne 0 ]; then
	cp img.qcow2 ro.qcow2 && chmod 0444 ro.qcow2
	err_case "write to a read-only file" "ro.qcow2" - -- io -c 'write 0 512' ro.qcow2
fi

# ---- resize / compare / convert --------------------------------------------------
cp img.qcow2 r.qcow2
qemu-io -c 'write -P 1 3M 64k' r.qcow2 >/dev/null
err_case "shrink without --shrink" "" resize r.qcow2 1M -- resize r.qcow2 1M
err_case "bad resize size" "12X" resize r.qcow2 12X -- resize r.qcow2 12X
expect_eq "resize errors leave the size" 4194304 "$(qemu-img info --output=json r.qcow2 | json_member /dev/stdin virtual-size)"
err_case "compare with a missing file" "nosuch.qcow2" compare img.qcow2 nosuch.qcow2 -- compare img.qcow2 nosuch.qcow2
err_case "convert -c -O raw" "" convert -c -O raw img.qcow2 q17.raw -- convert -c -O raw img.qcow2 n17.raw
no_file "convert -c -O raw" n17.raw
err_case "convert -l (snapshots, unsupported)" "" - -- convert -l snap -O qcow2 img.qcow2 n19.qcow2
no_file "convert -l" n19.qcow2
err_case "convert -n to a missing target" "n18.qcow2" convert -n -O qcow2 img.qcow2 q18.qcow2 -- \
	convert -n -O qcow2 img.qcow2 n18.qcow2

cp_finish
