#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# integration: malformed images.  Valid images made by qemu-img are broken
# with dd (header fields, table offsets, L1/L2 entries, compressed
# descriptors, feature bits, backing chains).  For each, cowpool info,
# io -r read (of cluster 0 and of the damaged cluster), io read (read-write
# open) and check must:
#   - fail (non-zero exit) where the case says so, never die by a signal;
#   - print exactly one line on stderr, "cowpool: <file>: ...", naming the
#     image (or, for backing-chain damage, the backing file);
#   - print nothing from AddressSanitizer/UBSan;
#   - leave the image byte-for-byte unchanged (info, io -r, check);
#   - check: exit 2 where qemu-img check reports corruption (2) and 1 where
#     qemu-img cannot open the image (1).
# Where cowpool's success/failure differs from qemu-img/qemu-io, a NOTE line
# says so (cowpool may be stricter than qemu; never more lenient when the
# case expects a failure).
# With COWPOOL_ASAN set to an ASan/UBSan build of cowpool, every case runs
# with it too.

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
cp_init

BINS=("$COWPOOL")
if [ -n "${COWPOOL_ASAN:-}" ]; then
	if [ -x "$COWPOOL_ASAN" ]; then
		BINS+=("$COWPOOL_ASAN")
	else
		fail "COWPOOL_ASAN=$COWPOOL_ASAN is not executable"
	fi
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

note()
{
	echo "NOTE: $*"
}

# base image: 64 KiB clusters, data in clusters 0, 1 and 16
make_base()
{
	qemu-img create -q -f qcow2 -o cluster_size=65536 "$1" 4M &&
		qemu-io -c 'write -q -P 0x5a 0 128k' -c 'write -q -P 0x6b 1M 64k' "$1" >/dev/null
}

# check_stderr TAG ERRFILE NAME...: one line, "cowpool: ", names a NAME
check_stderr()
{
	local tag=$1 err=$2 n lines
	shift 2
	if grep -q -e AddressSanitizer -e 'runtime error' -e LeakSanitizer "$err"; then
		fail "$tag: sanitizer report: $(grep -m 3 -e AddressSanitizer -e 'runtime error' -e LeakSanitizer -e '#0' "$err" | tr '\n' ' ')"
		return
	fi
	lines=$(wc -l <"$err")
	if [ "$lines" -ne 1 ]; then
		fail "$tag: expected one line on stderr, got $lines: $(head -n 4 "$err" | tr '\n' '|')"
		return
	fi
	if ! grep -q '^cowpool: ' "$err"; then
		fail "$tag: stderr does not start with 'cowpool: ': $(cat "$err")"
		return
	fi
	for n in "$@"; do
		if grep -qF -- "$n" "$err"; then ok; return; fi
	done
	fail "$tag: stderr does not name the file ($*): $(cat "$err")"
}

# run_cmd TAG EXPECT READONLY NAMES -- CMD...
# EXPECT: fail | ok | any.  NAMES: comma-separated names the message may use.
run_cmd()
{
	local tag=$1 expect=$2 ro=$3 names=$4 img=$5 sum
	shift 6
	sum=$(md5sum <"$img")
	# a hang (e.g. on a backing loop) is a failure, not a test timeout
	timeout -k 5 60 "$@" >cmd.out 2>cmd.err
	RC=$?
	if [ "$RC" -eq 124 ]; then
		fail "$tag: did not finish within 60 s"
		return
	fi
	if [ "$RC" -ge 128 ]; then
		fail "$tag: killed by signal $((RC - 128)): $(tail -n 3 cmd.err | tr '\n' ' ')"
		return
	fi
	ok
	case $expect in
	fail)
		if [ "$RC" -eq 0 ]; then
			fail "$tag: succeeded, expected failure"
		else
			ok
		fi ;;
	ok)
		if [ "$RC" -ne 0 ]; then
			fail "$tag: exit $RC, expected success: $(head -n 2 cmd.err | tr '\n' ' ')"
		else
			ok
		fi ;;
	esac
	if [ "$RC" -ne 0 ] && [ "$RC" -ne 2 ] && [ "$RC" -ne 3 ]; then
		local IFS=,
		# shellcheck disable=SC2086
		check_stderr "$tag" cmd.err $names
	elif grep -q -e AddressSanitizer -e 'runtime error' cmd.err; then
		fail "$tag: sanitizer report: $(grep -m 3 -e AddressSanitizer -e 'runtime error' cmd.err | tr '\n' ' ')"
	fi
	if [ "$ro" = ro ]; then
		if [ "$sum" = "$(md5sum <"$img")" ]; then ok; else
			fail "$tag: read-only command modified the image"
		fi
	fi
}

# mcase NAME INFO READ0 DAMAGED_OFFSET [NAMES]
# The patched image is $NAME.qcow2 in the current directory.
# INFO, READ0: fail | ok | any for `info` and `io -r -c 'read 0 64k'`;
# DAMAGED_OFFSET: guest offset whose read must fail, or -.
mcase()
{
	local name=$1 info=$2 read0=$3 doff=$4 names=${5:-}
	local img=$name.qcow2 bin tag qrc q_info q_read q_dread q_check
	names=${names:+$names,}$img

	# qemu's answers, for the record and for check's exit status (not for
	# backing loops: qemu-io and qemu-img check spin forever on them)
	q_info=-1 q_read=-1 q_dread=-1 q_check=-1
	[ "${NO_QEMU:-0}" = 1 ] || {
	qemu-img info -f qcow2 "$img" >/dev/null 2>&1; q_info=$?
	qemu-io -r -f qcow2 -c 'read 0 64k' "$img" >q.out 2>&1; q_read=$?
	grep -q -e 'read failed' -e 'Could not' -e 'Error' q.out && q_read=1
	q_dread=0
	if [ "$doff" != - ]; then
		qemu-io -r -f qcow2 -c "read $doff 64k" "$img" >q.out 2>&1; q_dread=$?
		grep -q -e 'read failed' -e 'Could not' -e 'Error' q.out && q_dread=1
	fi
	cp "$img" q-check.qcow2
	qemu-img check -f qcow2 q-check.qcow2 >/dev/null 2>&1; q_check=$?
	rm -f q-check.qcow2
	}

	for bin in "${BINS[@]}"; do
		tag="$name[$(basename "$bin")]"
		run_cmd "$tag info" "$info" ro "$names" "$img" -- "$bin" info -f qcow2 "$img"
		[ "$RC" -ne 0 ] && [ "$q_info" -eq 0 ] && note "$name: cowpool info fails, qemu-img info succeeds: $(cat cmd.err)"
		[ "$RC" -eq 0 ] && [ "$q_info" -gt 0 ] && note "$name: cowpool info succeeds, qemu-img info fails"
		run_cmd "$tag info json" "$info" ro "$names" "$img" -- "$bin" info -f qcow2 --output=json "$img"

		run_cmd "$tag io -r read 0" "$read0" ro "$names" "$img" -- \
			"$bin" io -r -f qcow2 -c 'read -q 0 64k' "$img"
		[ "$RC" -ne 0 ] && [ "$q_read" -eq 0 ] && note "$name: cowpool read 0 fails, qemu-io succeeds: $(cat cmd.err)"
		[ "$RC" -eq 0 ] && [ "$q_read" -gt 0 ] && note "$name: cowpool read 0 succeeds, qemu-io fails"
		if [ "$doff" != - ]; then
			run_cmd "$tag io -r read $doff" fail ro "$names" "$img" -- \
				"$bin" io -r -f qcow2 -c "read -q $doff 64k" "$img"
			[ "$q_dread" -eq 0 ] && note "$name: qemu-io reads the damaged cluster without error"
		fi

		run_cmd "$tag check" fail ro "$names" "$img" -- "$bin" check -f qcow2 "$img"
		case $q_check in
		1 | 2) expect_eq "$tag check exit status (qemu-img check: $q_check)" "$q_check" "$RC" ;;
		-1) ;;
		*) note "$name: qemu-img check exits $q_check, cowpool check $RC" ;;
		esac

		# read-write open: may mark the image corrupt, must not crash
		cp "$img" rw.qcow2
		local rwexp=fail
		[ "$doff" = - ] && rwexp=$read0
		[ "$rwexp" = ok ] && rwexp=any
		run_cmd "$tag io read (rw)" "$rwexp" rw "$names,rw.qcow2" rw.qcow2 -- \
			"$bin" io -f qcow2 -c "read -q ${doff/-/0} 64k" rw.qcow2
		rm -f rw.qcow2
	done
}

make_base base.qcow2 || { fail "qemu-img could not make the base image"; cp_finish; }
L1=$(qh_l1_offset base.qcow2)
RT=$(qh_rt_offset base.qcow2)
BEYOND=$((256 << 20))
COPIED=$((1 << 63))

# fresh NAME: copy the base image to NAME.qcow2
fresh() { cp base.qcow2 "$1.qcow2"; }

# ---- header ------------------------------------------------------------------
head -c 50 base.qcow2 >trunc-header.qcow2
mcase trunc-header fail fail -

fresh bad-magic;      wr_be bad-magic.qcow2 0 4 0x51464900
mcase bad-magic fail fail -
fresh version4;       wr_be version4.qcow2 4 4 4
mcase version4 fail fail -
fresh cbits8;         wr_be cbits8.qcow2 20 4 8
mcase cbits8 fail fail -
fresh cbits22;        wr_be cbits22.qcow2 20 4 22
mcase cbits22 fail fail -
fresh l1-beyond;      wr_be l1-beyond.qcow2 40 8 "$BEYOND"
mcase l1-beyond fail fail -
fresh l1-unaligned;   wr_be l1-unaligned.qcow2 40 8 $((L1 + 512))
mcase l1-unaligned fail fail -
fresh l1-absurd;      wr_be l1-absurd.qcow2 36 4 0xffffffff
mcase l1-absurd fail fail -
# 2 GiB needs 4 L1 entries with 64 KiB clusters; the table has 1
fresh l1-small;       wr_be l1-small.qcow2 24 8 $((2 << 30))
mcase l1-small fail fail -
fresh rt-beyond;      wr_be rt-beyond.qcow2 48 8 "$BEYOND"
mcase rt-beyond fail fail -
fresh rt-unaligned;   wr_be rt-unaligned.qcow2 48 8 $((RT + 8))
mcase rt-unaligned fail fail -
fresh rt-overlap-l1;  wr_be rt-overlap-l1.qcow2 48 8 "$L1"
mcase rt-overlap-l1 fail fail -
fresh rorder7;        wr_be rorder7.qcow2 96 4 7
mcase rorder7 fail fail -
fresh size-2p62;      wr_be size-2p62.qcow2 24 8 $((1 << 62))
mcase size-2p62 fail fail -
fresh hlen-odd;       wr_be hlen-odd.qcow2 100 4 108
wr_be hlen-odd.qcow2 100 4 105
mcase hlen-odd fail fail -
fresh incompat-bit10; wr_be incompat-bit10.qcow2 72 8 $((1 << 10))
mcase incompat-bit10 fail fail -
fresh crypt-aes;      wr_be crypt-aes.qcow2 32 4 1
mcase crypt-aes fail fail -
fresh data-file;      wr_be data-file.qcow2 72 8 $((1 << 2))
mcase data-file fail fail -

# ---- tables and entries --------------------------------------------------------
fresh l2e-beyond
wr_be l2e-beyond.qcow2 "$(l2_entry_pos l2e-beyond.qcow2 65536)" 8 $((COPIED | BEYOND))
mcase l2e-beyond ok ok 65536

fresh l1e-beyond
wr_be l1e-beyond.qcow2 "$L1" 8 $((COPIED | BEYOND))
mcase l1e-beyond ok fail 1M

fresh l2e-unaligned
pos=$(l2_entry_pos l2e-unaligned.qcow2 65536)
wr_be l2e-unaligned.qcow2 "$pos" 8 $(( $(rd_be l2e-unaligned.qcow2 "$pos" 8) + 512 ))
mcase l2e-unaligned ok ok 65536

# compressed cluster whose descriptor points beyond the end of the file
"$CP_GEN" data 4242 1M >z.src
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=65536 z.src zbase.qcow2
cp zbase.qcow2 comp-beyond.qcow2
pos=$(l2_entry_pos comp-beyond.qcow2 65536)
ent=$(rd_be comp-beyond.qcow2 "$pos" 8)
if [ $(( (ent >> 62) & 1 )) -ne 1 ]; then
	# cluster 1 of the data may be zero (unallocated): find a compressed one
	for g in 0 131072 196608 262144 327680 393216; do
		pos=$(l2_entry_pos comp-beyond.qcow2 $g)
		ent=$(rd_be comp-beyond.qcow2 "$pos" 8)
		[ $(( (ent >> 62) & 1 )) -eq 1 ] && { zoff=$g; break; }
	done
else
	zoff=65536
fi
if [ $(( (ent >> 62) & 1 )) -ne 1 ]; then
	fail "no compressed cluster found in qemu-img convert -c output (test bug)"
else
	# 64 KiB clusters: host offset in bits 0..53 of a compressed descriptor
	mask=$(( (1 << 54) - 1 ))
	wr_be comp-beyond.qcow2 "$pos" 8 $(( (ent & ~mask) | BEYOND ))
	mcase comp-beyond ok any "$zoff"
fi

# ---- backing chains ----------------------------------------------------------
# loop: a -> b -> a
qemu-img create -q -f qcow2 b.qcow2 4M
qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 loop.qcow2
qemu-img rebase -u -f qcow2 -b loop.qcow2 -F qcow2 b.qcow2
NO_QEMU=1 mcase loop ok fail - b.qcow2
for bin in "${BINS[@]}"; do
	run_cmd "loop[$(basename "$bin")] info --backing-chain" fail ro "loop.qcow2,b.qcow2" loop.qcow2 -- \
		"$bin" info --backing-chain loop.qcow2
done
# self loop
qemu-img create -q -f qcow2 self.qcow2 4M
qemu-img rebase -u -f qcow2 -b self.qcow2 -F qcow2 self.qcow2
NO_QEMU=1 mcase self ok fail -

# missing backing file
qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 -u missing.qcow2 4M
mcase missing ok fail - gone.qcow2

cp_finish
