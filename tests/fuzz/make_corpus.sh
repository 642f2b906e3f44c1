#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# make_corpus.sh [OUTDIR] - regenerate the seed corpus of tests/fuzz.
#
# The committed files in tests/fuzz/corpus ARE the corpus; this script
# documents how each was made, so that it can be rebuilt (qemu-img and
# qemu-io 7.2 made the committed set; other versions give files that
# differ in unimportant bytes).  OUTDIR defaults to a new temporary
# directory whose name is printed; copy what you want into the corpus.
# Files named regress-* in the corpus are fuzzer findings kept as
# regression inputs: they are not made here.
#
# Every image is small (512-byte clusters where the feature allows it), so
# that each file stays under ~64 KiB.  Broken variants start from a valid
# image and patch header fields or table entries with dd; table offsets
# are read from the image itself, never assumed.
#
# Header offsets used below (QCOW2 spec, docs/formats/qcow2.md):
#   0 magic  4 version  8 backing_file_offset  16 backing_file_size
#   20 cluster_bits  24 size  32 crypt_method  36 l1_size
#   40 l1_table_offset  48 refcount_table_offset  56 refcount_table_clusters
#   60 nb_snapshots  64 snapshots_offset  72 incompatible_features
#   80 compatible_features  88 autoclear_features  96 refcount_order
#   100 header_length  104 compression_type
set -euo pipefail

out=${1:-$(mktemp -d /tmp/cowpool-corpus.XXXXXXXX)}
mkdir -p "$out"
work=$(mktemp -d /tmp/cowpool-corpus-work.XXXXXXXX)
trap 'rm -rf -- "$work"' EXIT
cd "$work"
ulimit -c 0

qi() { qemu-img "$@"; }
qio() { qemu-io -f qcow2 "$@" >/dev/null; }

# be N FILE OFFSET: read an N-byte big-endian unsigned field (decimal)
be() {
	local hex
	hex=$(od -An -tx1 -v -j "$3" -N "$1" "$2" | tr -d ' \n')
	echo $((16#$hex))
}
# put N FILE OFFSET VALUE: write VALUE as an N-byte big-endian field
put() {
	local n=$1 f=$2 off=$3 v=$4 i s=""
	for ((i = n - 1; i >= 0; i--)); do
		s+=$(printf '\\x%02x' $(((v >> (8 * i)) & 255)))
	done
	printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
l1_off() { be 8 "$1" 40; }
rt_off() { be 8 "$1" 48; }
# first L2 table offset (L1 entry 0, flags masked)
l2_off() { echo $(($(be 8 "$1" "$(l1_off "$1")") & 0x00fffffffffffe00)); }
emit() { cp -- "$1" "$out/$2"; }

# A tiny raw file with compressible, non-zero content
for i in $(seq 0 255); do printf 'cowpool fuzz seed line %04d ........\n' "$i"; done >text.raw
truncate -s 64k text.raw

# --- valid images --------------------------------------------------------------

# v2 (compat=0.10) and v3 (compat=1.1), 512-byte and 4 KiB clusters: a few
# clusters written, a zeroed range (v3: zero clusters; v2: deallocated), a
# discard.
for v in 0.10 1.1; do
	for cs in 512 4096; do
		if [ "$v" = 0.10 ]; then f=v2-$cs.qcow2; else f=v3-$cs.qcow2; fi
		qi create -q -f qcow2 -o compat=$v,cluster_size=$cs "$f" $((32 * cs))
		qio -c "write -P 0x11 0 $((2 * cs))" \
		    -c "write -P 0x22 $((4 * cs)) $((3 * cs / 2))" \
		    -c "write -P 0x33 $((8 * cs)) $((2 * cs))" \
		    -c "write -z $((8 * cs)) $cs" \
		    -c "discard $((4 * cs)) $cs" \
		    -c "write -P 0x44 $((30 * cs + 100)) 700" "$f"
		emit "$f" "$f"
	done
done

# extended L2 entries (needs >= 16 KiB clusters): partial subcluster
# writes, a zeroed subcluster range, a discarded one
qi create -q -f qcow2 -o cluster_size=16k,extended_l2=on extl2.qcow2 64k
qio -c 'write -P 0x55 0 1536' -c 'write -P 0x66 4096 512' \
    -c 'write -z 2048 1024' -c 'write -P 0x77 8k 3k' -c 'discard 8k 512' \
    extl2.qcow2
emit extl2.qcow2 extl2-16k.qcow2

# compressed clusters: zlib at 512 bytes and 4 KiB, zstd at 4 KiB
qi convert -c -O qcow2 -o cluster_size=512 text.raw zlib-512.qcow2
qi convert -c -O qcow2 -o cluster_size=4096 text.raw zlib-4k.qcow2
qi convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd text.raw zstd-4k.qcow2
# a compressed image written over afterwards (COW from compressed data)
cp zlib-512.qcow2 zlib-rw.qcow2
qio -c 'write -P 0x88 700 100' zlib-rw.qcow2
emit zlib-512.qcow2 zlib-512.qcow2
emit zlib-4k.qcow2 zlib-4k.qcow2
emit zstd-4k.qcow2 zstd-4k.qcow2
emit zlib-rw.qcow2 zlib-512-rewritten.qcow2

# every refcount width (1, 2 and 4 bits are packed LSB first)
for rb in 1 2 4 8 32 64; do
	qi create -q -f qcow2 -o cluster_size=512,refcount_bits=$rb rc$rb.qcow2 64k
	qio -c 'write -P 0x99 0 3k' -c 'write -P 0x9a 20k 1k' rc$rb.qcow2
	emit rc$rb.qcow2 refcount$rb.qcow2
done

# lazy refcounts, left dirty: qemu-io aborts before closing, so the dirty
# bit stays set and the refcounts of the new clusters are missing
qi create -q -f qcow2 -o cluster_size=512,lazy_refcounts=on lazy.qcow2 64k
qemu-io -f qcow2 -c 'write -P 0x23 0 2k' -c 'write -P 0x24 9k 1k' -c abort \
	lazy.qcow2 >/dev/null 2>&1 || true
emit lazy.qcow2 lazy-dirty.qcow2

# persistent dirty bitmaps (qcow/bitmap.c): two stored bitmaps, one with a
# data cluster and one disabled; the same left in use by a killed writer
qi create -q -f qcow2 -o cluster_size=512 bm.qcow2 64k
qi bitmap --add -g 512 bm.qcow2 b1
qi bitmap --add --disable bm.qcow2 b2
qio -c 'write -P 0x31 1k 2k' bm.qcow2
emit bm.qcow2 bitmaps.qcow2
qemu-io -f qcow2 -c 'write -P 0x32 8k 1k' -c abort bm.qcow2 >/dev/null 2>&1 || true
emit bm.qcow2 bitmaps-in-use.qcow2

# backing file name + backing format extension (the fuzzer's backing hook
# serves a raw pattern for any name; a name containing "missing" fails)
qi create -q -f raw base.raw 96k
qi create -q -f qcow2 -o cluster_size=512 -b base.raw -F raw backed.qcow2 96k
qio -c 'write -P 0x31 1k 1k' -c 'write -P 0x32 5000 100' -c 'write -z 10k 1k' \
    -c 'discard 1k 512' backed.qcow2
emit backed.qcow2 backing-raw.qcow2
# v2 with a backing name but no format extension (probed)
qi create -q -f qcow2 -o compat=0.10,cluster_size=512 -b base.raw -F raw backed2.qcow2 96k
qio -c 'write -P 0x34 2k 3k' backed2.qcow2
# drop the extension: zero its type/length/data (it follows the 72-byte
# header in v2; the name is located by offset and stays valid)
dd if=/dev/zero of=backed2.qcow2 bs=1 seek=72 count=16 conv=notrunc status=none
emit backed2.qcow2 backing-v2-noformat.qcow2
# backing format qcow2 (the hook's raw pattern then fails to open as qcow2)
qi create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 -u backq.qcow2 96k
emit backq.qcow2 backing-qcow2-fmt.qcow2
# backing that cannot be opened
qi create -q -f qcow2 -o cluster_size=512 -b missing.raw -F raw -u backm.qcow2 96k
emit backm.qcow2 backing-missing.qcow2

# internal snapshot (read-only for cowpool)
qi create -q -f qcow2 -o cluster_size=512 snap.qcow2 64k
qio -c 'write -P 0x41 0 2k' snap.qcow2
qi snapshot -c snap1 snap.qcow2
qio -c 'write -P 0x42 1k 2k' -c 'write -P 0x43 30k 1k' snap.qcow2
emit snap.qcow2 snapshot.qcow2

# --- broken variants -------------------------------------------------------------

base=v3-512.qcow2

# truncated header (v3 needs 104 bytes; v2 72)
head -c 60 "$base" >t.qcow2 && emit t.qcow2 bad-truncated-header.qcow2
head -c 90 "$base" >t.qcow2 && emit t.qcow2 bad-truncated-v3-header.qcow2
# truncated after the header: tables cut off
head -c 1536 "$base" >t.qcow2 && emit t.qcow2 bad-truncated-tables.qcow2

# bad magic (probed as raw; forced qcow2 refuses)
cp "$base" t.qcow2 && put 4 t.qcow2 0 0x514649fa && emit t.qcow2 bad-magic.qcow2
# version 4
cp "$base" t.qcow2 && put 4 t.qcow2 4 4 && emit t.qcow2 bad-version.qcow2
# cluster_bits 8 and 22
cp "$base" t.qcow2 && put 4 t.qcow2 20 8 && emit t.qcow2 bad-cluster-bits-small.qcow2
cp "$base" t.qcow2 && put 4 t.qcow2 20 22 && emit t.qcow2 bad-cluster-bits-large.qcow2
# encrypted (crypt_method 1: AES)
cp "$base" t.qcow2 && put 4 t.qcow2 32 1 && emit t.qcow2 bad-encrypted.qcow2
# huge virtual size with an L1 table too small for it
cp "$base" t.qcow2 && put 8 t.qcow2 24 $((1 << 40)) && emit t.qcow2 bad-l1-too-small.qcow2
# huge virtual size with a matching L1 size, L1 beyond EOF
cp "$base" t.qcow2 && put 8 t.qcow2 24 $((1 << 34)) && put 4 t.qcow2 36 $(((1 << 34) / (512 * 64))) &&
	emit t.qcow2 bad-l1-size-huge.qcow2
# L1 table beyond end of file
cp "$base" t.qcow2 && put 8 t.qcow2 40 $((1 << 20)) && emit t.qcow2 bad-l1-beyond-eof.qcow2
# L1 table offset unaligned
cp "$base" t.qcow2 && put 8 t.qcow2 40 $(($(l1_off t.qcow2) + 8)) && emit t.qcow2 bad-l1-unaligned.qcow2
# refcount table overlapping the L1 table
cp "$base" t.qcow2 && put 8 t.qcow2 48 "$(l1_off t.qcow2)" && emit t.qcow2 bad-reftable-overlaps-l1.qcow2
# refcount table beyond EOF, and of size 0
cp "$base" t.qcow2 && put 8 t.qcow2 48 $((1 << 20)) && emit t.qcow2 bad-reftable-beyond-eof.qcow2
cp "$base" t.qcow2 && put 4 t.qcow2 56 0 && emit t.qcow2 bad-reftable-empty.qcow2
# refcount order 7 (128-bit refcounts)
cp "$base" t.qcow2 && put 4 t.qcow2 96 7 && emit t.qcow2 bad-refcount-order.qcow2
# header length not a multiple of 8 / beyond the cluster
cp "$base" t.qcow2 && put 4 t.qcow2 100 107 && emit t.qcow2 bad-header-length.qcow2
cp "$base" t.qcow2 && put 4 t.qcow2 100 1024 && emit t.qcow2 bad-header-length-big.qcow2
# unknown incompatible feature bit (bit 10; the name table does not name it)
cp "$base" t.qcow2 && put 8 t.qcow2 72 $((1 << 10)) && emit t.qcow2 bad-incompat-unknown.qcow2
# external data file bit
cp "$base" t.qcow2 && put 8 t.qcow2 72 4 && emit t.qcow2 bad-incompat-data-file.qcow2
# corrupt bit set (opens read-only; check -r all clears it)
cp "$base" t.qcow2 && put 8 t.qcow2 72 2 && emit t.qcow2 bad-corrupt-bit.qcow2
# compression type zstd without the compression-type feature bit
cp "$base" t.qcow2 && put 1 t.qcow2 104 1 && emit t.qcow2 bad-compression-type.qcow2
# autoclear bits set (cleared on a read-write open)
cp "$base" t.qcow2 && put 8 t.qcow2 88 3 && emit t.qcow2 autoclear-bits.qcow2
# header extension whose length runs past the header cluster
cp "$base" t.qcow2 && put 4 t.qcow2 116 4000 && emit t.qcow2 bad-extension-length.qcow2
# snapshot table misaligned
cp snap.qcow2 t.qcow2 && put 8 t.qcow2 64 $(($(be 8 t.qcow2 64) + 8)) && emit t.qcow2 bad-snapshot-offset.qcow2
# backing file name past the header cluster
cp backed.qcow2 t.qcow2 && put 4 t.qcow2 16 1000 && emit t.qcow2 bad-backing-name-length.qcow2

# L1 entry pointing at an unaligned L2 table / beyond EOF
cp "$base" t.qcow2 && put 8 t.qcow2 "$(l1_off t.qcow2)" $(((1 << 63) | ($(l2_off t.qcow2) + 256))) &&
	emit t.qcow2 bad-l2-unaligned.qcow2
cp "$base" t.qcow2 && put 8 t.qcow2 "$(l1_off t.qcow2)" $(((1 << 63) | (1 << 24))) &&
	emit t.qcow2 bad-l2-beyond-eof.qcow2
# L2 entry (cluster 1) pointing beyond EOF; L2 entry pointing at the L1 table
cp "$base" t.qcow2 && put 8 t.qcow2 $(($(l2_off t.qcow2) + 8)) $(((1 << 63) | (1 << 24))) &&
	emit t.qcow2 bad-l2-entry-beyond-eof.qcow2
cp "$base" t.qcow2 && put 8 t.qcow2 $(($(l2_off t.qcow2) + 8)) $(((1 << 63) | $(l1_off t.qcow2))) &&
	emit t.qcow2 bad-l2-entry-points-at-l1.qcow2
# L2 entry with reserved bits set and an unaligned data offset
cp "$base" t.qcow2 && put 8 t.qcow2 $(($(l2_off t.qcow2) + 8)) $(((1 << 63) | $(l2_off t.qcow2) + 0x30)) &&
	emit t.qcow2 bad-l2-entry-unaligned.qcow2
# two L2 entries sharing one data cluster (refcount 1, referenced twice)
cp "$base" t.qcow2 && put 8 t.qcow2 $(($(l2_off t.qcow2) + 16)) "$(be 8 t.qcow2 "$(l2_off t.qcow2)")" &&
	emit t.qcow2 bad-l2-shared-cluster.qcow2
# refcount block beyond EOF (refcount table entry 0)
cp "$base" t.qcow2 && put 8 t.qcow2 "$(rt_off t.qcow2)" $((1 << 24)) && emit t.qcow2 bad-refblock-beyond-eof.qcow2
# refcount block zeroed (every refcount 0: check rebuilds)
cp "$base" t.qcow2 && dd if=/dev/zero of=t.qcow2 bs=1 seek="$(be 8 t.qcow2 "$(rt_off t.qcow2)")" count=512 \
	conv=notrunc status=none && emit t.qcow2 bad-refblock-zeroed.qcow2

# compressed cluster descriptors out of range: zlib-512 has its first L2
# entry compressed; point it past EOF, then give it a huge sector count
c=zlib-512.qcow2
e=$(be 8 "$c" "$(l2_off "$c")")
x=$((62 - (9 - 8))) # offset bits for 512-byte clusters
cp "$c" t.qcow2 && put 8 t.qcow2 "$(l2_off t.qcow2)" $(((e & ~((1 << x) - 1)) | (1 << 30))) &&
	emit t.qcow2 bad-compressed-beyond-eof.qcow2
cp "$c" t.qcow2 && put 8 t.qcow2 "$(l2_off t.qcow2)" $(((1 << 62) | (1 << x) | ($(l1_off t.qcow2)))) &&
	emit t.qcow2 bad-compressed-garbage-data.qcow2
# an extended L2 entry whose subcluster 0 is both allocated and zero
cp extl2.qcow2 t.qcow2 && put 8 t.qcow2 $(($(l2_off t.qcow2) + 8)) 0x0000000100000001 &&
	emit t.qcow2 bad-extl2-alloc-and-zero.qcow2

# every file small
for f in "$out"/*; do
	s=$(stat -c %s "$f")
	[ "$s" -le 98304 ] || echo "warning: $f is $s bytes" >&2
done
echo "$out"
