#!/bin/bash
# Header features cowpool must respect when it writes to an image made by
# qemu-img: unknown header extensions and compatible feature bits are
# preserved byte for byte, autoclear bits are cleared (we do not maintain
# what they vouch for), and images with internal snapshots are read at
# their active state but never written.
. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
cp_init

# ---- unknown extension + unknown compatible bit + autoclear bit ------------------
qemu-img create -q -f qcow2 img.qcow2 16M
qemu-io -c 'write -q -P 0x11 0 256k' img.qcow2 >/dev/null
"$CP_GEN" addext img.qcow2 7a7a7a7a "unknown-extension-payload" || fail "addext"
# compatible bit 5 and autoclear bit 10 (both unknown; the autoclear one must
# be cleared by any writer, as the spec says)
compat=$(rd_be img.qcow2 80 8)
wr_be img.qcow2 80 8 $((compat | (1 << 5)))
wr_be img.qcow2 88 8 $((1 << 10))
qemu-img check -q img.qcow2 && ok || fail "qemu-img check of the prepared image"
ext_before=$(od -A n -t x1 -j 112 -N 48 img.qcow2)
"$COWPOOL" io -c 'write -P 0x22 1M 64k' -c 'write -z 2M 64k' img.qcow2 >/dev/null || fail "cowpool write"
ext_after=$(od -A n -t x1 -j 112 -N 48 img.qcow2)
expect_eq "unknown extension preserved" "$ext_before" "$ext_after"
compat2=$(rd_be img.qcow2 80 8)
expect_eq "unknown compatible bit kept" $((compat | (1 << 5))) "$compat2"
expect_eq "autoclear bits cleared by a writer" 0 "$(rd_be img.qcow2 88 8)"
qemu-img check -q img.qcow2 && ok || fail "qemu-img check after cowpool wrote"
qemu-io -c 'read -q -P 0x11 0 256k' -c 'read -q -P 0x22 1M 64k' -c 'read -q -P 0 2M 64k' img.qcow2 >io.out 2>&1 &&
	! grep -q "fail" io.out && ok || fail "content after write: $(cat io.out)"
# a rebase rewrites the header: the extension must survive that too
qemu-img create -q -f qcow2 other.qcow2 16M
"$COWPOOL" rebase -u -b other.qcow2 -F qcow2 img.qcow2 || fail "rebase -u"
qemu-img info img.qcow2 >info.out
grep -q "backing file: other.qcow2" info.out && ok || fail "backing after rebase: $(cat info.out)"
od -A n -t x1 -j 112 -N 4096 img.qcow2 | tr -d ' \n' | grep -q "7a7a7a7a" && ok ||
	fail "unknown extension lost by the header rewrite"
qemu-img check -q img.qcow2 && ok || fail "qemu-img check after rebase"

# ---- internal snapshots ---------------------------------------------------------------
qemu-img create -q -f qcow2 snap.qcow2 8M
qemu-io -c 'write -q -P 0x31 0 1M' snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c 'write -q -P 0x32 512k 1M' -c 'write -q -z 4M 64k' snap.qcow2 >/dev/null
qemu-img convert -O raw snap.qcow2 active.raw
"$COWPOOL" convert -O raw snap.qcow2 ours.raw || fail "cowpool convert of an image with snapshots"
cmp -s active.raw ours.raw && ok || fail "active state read differently"
md5_before=$(md5sum <snap.qcow2)
"$COWPOOL" io -c 'write -P 0x33 0 4k' snap.qcow2 >w.out 2>w.err
rc=$?
[ $rc != 0 ] && ok || fail "writing an image with internal snapshots succeeded"
grep -q "internal snapshot" w.err && ok || fail "refusal does not name the snapshots: $(cat w.err)"
expect_eq "image untouched by the refused write" "$md5_before" "$(md5sum <snap.qcow2)"
"$COWPOOL" check snap.qcow2 >/dev/null && ok || fail "cowpool check of an image with snapshots"
qemu-img snapshot -l snap.qcow2 | grep -q s1 && ok || fail "snapshot list"

cp_finish
