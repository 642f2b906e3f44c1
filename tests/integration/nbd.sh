#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpool nbd against real NBD clients: qemu-img, qemu-io, nbdinfo, nbdcopy
# and fio.  Block status (base:allocation and qemu:allocation-depth) must
# equal qemu-nbd's on the same images: data, zero clusters, unallocated
# ranges, backing layers (one shorter than the top), a compat=0.10 image
# and a sparse raw file.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
requires qemu-img qemu-io qemu-nbd nbdinfo nbdcopy fio python3
nbd_init

qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# --- images -----------------------------------------------------------------
qemu-img create -q -f qcow2 base.qcow2 32M
qio -c "write -P 0xaa 0 1M" -c "write -z 2M 1M" -c "write -P 0x11 5M 64k" \
	base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 64M
qio -c "write -P 0xbb 512k 1M" -c "write -z 5M 64k" -c "write -P 0 40M 128k" \
	mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qio -c "write -P 0xcc 768k 100k" -c "write -z 33M 1M" -c "discard 0 64k" \
	top.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
qio -c "write -P 0x22 1M 1M" -c "write -z 4M 64k" v2.qcow2
# more extents than one block status reply carries (2048)
qemu-img create -q -f qcow2 frag.qcow2 256M
python3 -c '
for i in range(0, 4096, 2): print("write -P 1 %dk 64k" % (i * 64))
for i in range(1, 4096, 6): print("write -z %dk 64k" % (i * 64))' |
	qemu-io frag.qcow2 >/dev/null || fail "qemu-io frag"
qemu-img create -q -f raw sparse.raw 16M
qio -f raw -c "write -P 0x33 3M 1M" -c "write -P 0 8M 64k" sparse.raw

# --- block status equals qemu-nbd's -----------------------------------------
for img in base.qcow2 mid.qcow2 top.qcow2 v2.qcow2 sparse.raw frag.qcow2; do
	nbd_start cp -r -A -e 0 -t -x e "$img" || fail "cowpool nbd $img"
	qnbd_start qn -r -A -e 0 -t -x e "$img" || fail "qemu-nbd $img"
	for ctx in base:allocation qemu:allocation-depth; do
		nbdinfo --map="$ctx" "$(nbd_uri cp e)" >cp.map 2>&1
		nbdinfo --map="$ctx" "$(nbd_uri qn e)" >qn.map 2>&1
		if cmp -s cp.map qn.map && [ -s qn.map ]; then ok; else
			fail "$img $ctx map differs from qemu-nbd's"
			diff -u qn.map cp.map >&2
		fi
	done
	qemu-img map --output=json "$(nbd_uri cp e)" >cp.json 2>&1
	qemu-img map --output=json "$(nbd_uri qn e)" >qn.json 2>&1
	cmp -s cp.json qn.json && ok || fail "$img: qemu-img map over NBD differs"
	qemu-img compare -q "$(nbd_uri cp e)" "$img" && ok ||
		fail "$img: content over NBD differs from the file"
	vsize() { qemu-img info --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }
	expect_eq "$img: qemu-img info size over NBD" "$(vsize "$img")" \
		"$(vsize "$(nbd_uri cp e)")"
	nbd_stop cp
	nbd_stop qn
done

# --- read-write export: qemu-io over NBD, same result as on the file --------
cp top.qcow2 rw.qcow2
cp top.qcow2 ref.qcow2
ops=(-c "write -P 0x5a 100k 300k" -c "write -z 1M 1M" -c "write -z -u 2M 128k"
     -c "discard 3M 256k" -c "write -P 0x77 63M 1M" -c "flush"
     -c "write -P 0x99 -f 6M 4k" -c "write -z -u 33M 64k"
     -c "write -z -n 8M 64k")
cp top.qcow2 qref.qcow2
nbd_start rw -e 0 -t -x vol --discard=unmap rw.qcow2 || fail "start rw"
qnbd_start qrw -e 0 -t -x vol --discard=unmap qref.qcow2 || fail "start qrw"
qemu-io -f raw "${ops[@]}" "$(nbd_uri qrw vol)" >/dev/null || fail "qemu-io over qemu-nbd"
nbd_stop qrw
qemu-io -f raw "${ops[@]}" "$(nbd_uri rw vol)" >/dev/null || fail "qemu-io over NBD"
qemu-io "${ops[@]}" ref.qcow2 >/dev/null || fail "qemu-io on the file"
qemu-io -f raw -c "read -P 0x5a 100k 300k" -c "read -P 0 1M 1M" \
	-c "read -P 0x77 63M 1M" "$(nbd_uri rw vol)" >qio.out 2>&1
grep -q "verification failed" qio.out && fail "read back over NBD" || ok
qemu-img compare -q "$(nbd_uri rw vol)" ref.qcow2 && ok ||
	fail "NBD writes differ from the same writes on the file"

# nbdcopy round trip and qemu-img convert from the export
nbdcopy "$(nbd_uri rw vol)" out.raw || fail "nbdcopy out"
qemu-img compare -q -f raw out.raw ref.qcow2 && ok || fail "nbdcopy copy differs"
qemu-img convert -O qcow2 "$(nbd_uri rw vol)" conv.qcow2 || fail "convert"
qemu-img compare -q conv.qcow2 ref.qcow2 && ok || fail "converted copy differs"
nbd_stop rw
qemu-img check -q rw.qcow2 && ok || fail "rw.qcow2 does not check clean"
qemu-img compare -q rw.qcow2 ref.qcow2 && ok || fail "rw.qcow2 after stop"
# TRIM and WRITE_ZEROES leave the same allocation as through qemu-nbd.
# Host offsets, and whether the file has a hole under a data cluster (how
# each engine grows the file), are left out of the comparison.
amap() {
	qemu-img map --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["depth"], e["present"], e["data"], e["zero"] and not e["data"])
    if out and out[-1][0] == k and out[-1][1] + out[-1][2] == e["start"]:
        out[-1][2] += e["length"]
    else:
        out.append([k, e["start"], e["length"]])
for k, s, l in out:
    print(s, l, *k)'
}
if [ "$(amap rw.qcow2)" = "$(amap qref.qcow2)" ]; then ok; else
	fail "allocation after TRIM/WRITE_ZEROES differs from qemu-nbd's"
	diff <(amap qref.qcow2) <(amap rw.qcow2) >&2
fi

# nbdcopy into an export (multi-conn with -e 0), then fio with verify
qemu-img create -q -f qcow2 dst.qcow2 64M
# the flags the VM tests use: O_DIRECT and native AIO
nbd_start dst -f qcow2 -e 0 -t --cache=none --aio=native dst.qcow2 ||
	fail "start dst"
nbdcopy out.raw "$(nbd_uri dst "")" || fail "nbdcopy in"
qemu-img compare -q "$(nbd_uri dst "")" out.raw && ok || fail "nbdcopy in differs"
for rw in randwrite write; do
	fio --name=v --ioengine=nbd --uri="$(nbd_uri dst "")" --rw=$rw \
		--bs=4k,64k --size=32M --iodepth=32 --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --output-format=json \
		--output=fio.json >fio.log 2>&1 || fail "fio $rw: $(cat fio.log)"
	python3 -c 'import json,sys
j=json.load(open("fio.json"))
sys.exit(0 if all(x["error"] == 0 for x in j["jobs"]) else 1)' && ok ||
		fail "fio $rw reported an error"
done
nbd_stop dst
qemu-img check -q dst.qcow2 && ok || fail "dst.qcow2 does not check clean"

# --detect-zeroes=unmap: an all-zero write over data deallocates it
cp base.qcow2 dz.qcow2
nbd_start dz -t -x e --detect-zeroes=unmap --discard=unmap dz.qcow2 ||
	fail "start dz"
qemu-io -f raw -c "write -P 0 0 1M" "$(nbd_uri dz e)" >/dev/null || fail "dz write"
nbdinfo --map "$(nbd_uri dz e)" | head -1 >dz.map
grep -q "^ *0 .* 3 *hole,zero" dz.map && ok ||
	fail "detect-zeroes=unmap left data: $(cat dz.map)"
nbd_stop dz

# --- lifetime: without -t the server exits after its last client ---------
nbd_start once -x e base.qcow2 || fail "start once"
pid=$(nbd_pid once)
nbdinfo "$(nbd_uri once e)" >/dev/null || fail "nbdinfo once"
timeout 30 tail --pid="$pid" -f /dev/null && ok ||
	fail "server without -t did not exit after the last client"
[ -e "$TMP/once.sock" ] && fail "socket left behind" || ok
# a bad image fails in the foreground, before --fork returns
"$COWPOOL" nbd -k "$TMP/x.sock" --fork no-such.qcow2 2>err.txt &&
	fail "nbd on a missing image succeeded" || ok
grep -q "no-such.qcow2" err.txt && ok || fail "error does not name the image"
# TCP without TLS only when told --tls=off, on loopback too
"$COWPOOL" nbd -b 192.0.2.1 -p 10809 base.qcow2 2>err.txt &&
	fail "plain TCP on a non-loopback address accepted" || ok
grep -q -- "--tls=off" err.txt && ok || fail "TCP refusal does not name --tls=off"
"$COWPOOL" nbd -b 127.0.0.1 -p 10809 base.qcow2 2>/dev/null &&
	fail "plain TCP on loopback accepted without --tls=off" || ok
"$COWPOOL" nbd -b 127.0.0.1 -p 10809 --tls=off --tls-psk x base.qcow2 \
	2>/dev/null && fail "--tls=off with --tls-psk accepted" || ok
# with --tls=off, plain TCP on loopback serves (a free port: ask the kernel)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NBD_PIDFILES="$NBD_PIDFILES $TMP/tcp.pid"
"$COWPOOL" nbd -b 127.0.0.1 -p "$port" --tls=off -t -x tcp --fork \
	--pid-file "$TMP/tcp.pid" base.qcow2 || fail "nbd --tls=off on TCP"
expect_eq "plain TCP with --tls=off: size" \
	"$(qemu-img info -U --output=json base.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" \
	"$(nbdinfo --size "nbd://127.0.0.1:$port/tcp")"
nbd_stop tcp

cp_finish
