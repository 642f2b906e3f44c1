#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compat-locks: cowpool's image locks against QEMU's, in both directions,
# with real qemu-io, qemu-nbd and qemu-img processes.
#
# A chain base.qcow2 <- top.qcow2 is held open by one program while the
# other tries it:
#   - QEMU holds (qemu-io read-write, qemu-nbd read-write and read-only,
#     qemu-io on the base alone): cowpool refuses to write the top or the
#     base, to commit, rebase or create over the top, naming the file and
#     the holder; cowpool reads the base (both read-only) and, with -U, the
#     top; a refused create leaves the image as it was;
#   - cowpool holds (cp_hold: read-write, read-only, -U, and the commit
#     state with the base reopened read-write): qemu-io, qemu-img info,
#     commit, rebase, create and qemu-nbd are refused where QEMU refuses
#     its own holders, and read-only opens of the base coexist;
#   - cowpool against cowpool: a second writer is refused naming the first.
# Holders are started on FIFOs and are known to hold their locks once they
# answered (qemu-io: a read; cp_hold: "held"; qemu-nbd: --fork returned).

. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io qemu-nbd
: "${CP_HOLD:?CP_HOLD must point to the cp_hold helper}"
cp_init

declare -A HPID HW HR
NBD_PID=

# Close the holders' FIFO ends in a child, so that no other process keeps
# a holder's input open (it ends at end of file).
close_holder_fds()
{
	local fd
	for fd in "${HW[@]}" "${HR[@]}"; do
		eval "exec $fd>&-"
	done
}

cleanup()
{
	local n
	for n in "${!HPID[@]}"; do
		kill "${HPID[$n]}" 2>/dev/null
	done
	[ -n "$NBD_PID" ] && kill "$NBD_PID" 2>/dev/null
	[ -f "$TMP/nbd2.pid" ] && kill "$(cat "$TMP/nbd2.pid")" 2>/dev/null
	rm -rf -- "$TMP"
}
trap cleanup EXIT

# hold NAME READY CMD...: run CMD with stdin/stdout on FIFOs; wait until a
# line of its output contains READY (after sending "read 0 512" to a
# qemu-io).  Returns 1 (output on stderr) if CMD ends first.
hold()
{
	local n=$1 ready=$2 line w r
	shift 2
	mkfifo "$n.in" "$n.out"
	(close_holder_fds; exec "$@" <"$n.in" >"$n.out" 2>&1) &
	HPID[$n]=$!
	exec {w}>"$n.in"
	exec {r}<"$n.out"
	HW[$n]=$w
	HR[$n]=$r
	[ "$1" = qemu-io ] && echo "read 0 512" >&"$w"
	while IFS= read -r -t 60 line <&"$r"; do
		[[ "$line" == *"$ready"* ]] && return 0
		echo "$n: $line" >&2
	done
	fail "$n ($*) did not get hold of the image"
	return 1
}

# release NAME: end the holder (end of its input) and wait for it.
release()
{
	local n=$1 w=${HW[$1]} r=${HR[$1]}
	exec {w}>&-
	wait "${HPID[$n]}" || fail "$n exited with status $?"
	exec {r}<&-
	rm -f "$n.in" "$n.out"
	unset "HPID[$n]"
}

nbd_start()
{
	(close_holder_fds
	 exec qemu-nbd --fork --pid-file="$TMP/nbd.pid" -k "$TMP/nbd.sock" "$@") ||
		{ fail "qemu-nbd $* did not start"; return 1; }
	NBD_PID=$(cat "$TMP/nbd.pid")
}

nbd_stop()
{
	kill "$NBD_PID"
	timeout 60 tail --pid="$NBD_PID" -f /dev/null -s 0.1
	NBD_PID=
}

# refused CMD... -- PATTERN...: CMD fails and says every PATTERN.
refused()
{
	local cmd=() out p
	while [ "$1" != -- ]; do cmd+=("$1"); shift; done
	shift
	if out=$(close_holder_fds; "${cmd[@]}" 2>&1); then
		fail "${cmd[*]}: succeeded, expected a lock refusal"
		return
	fi
	for p in "$@"; do
		if [[ "$out" != *"$p"* ]]; then
			fail "${cmd[*]}: expected '$p' in: $out"
			return
		fi
	done
	ok
}

# works CMD...: CMD succeeds.
works()
{
	local out
	if out=$(close_holder_fds; "$@" 2>&1); then
		ok
	else
		fail "$*: failed: $out"
	fi
}

make_chain()
{
	rm -f base.qcow2 top.qcow2
	qemu-img create -q -f qcow2 base.qcow2 4M
	qemu-io -f qcow2 -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
	qemu-io -f qcow2 -c 'write -P 0x22 1M 1M' top.qcow2 >/dev/null
}

# The chain is intact: top still has its backing file and both layers'
# data (a refused create or commit must not have touched anything).
chain_intact()
{
	local what=$1
	if qemu-io -f qcow2 -r -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' \
		top.qcow2 | grep -q 'Pattern verification failed' ||
	   ! qemu-img info top.qcow2 | grep -q '^backing file: base.qcow2'; then
		fail "$what: the chain changed"
	else
		ok
	fi
}

W='Failed to get "write" lock'
SW='Failed to get shared "write" lock'
make_chain

# ---- QEMU holds, cowpool tries ---------------------------------------------

hold qio 'read 512/512' qemu-io -f qcow2 top.qcow2
refused "$COWPOOL" io -c 'write 0 512' top.qcow2 -- "top.qcow2: $W" "(qemu-io, pid ${HPID[qio]})"
refused "$COWPOOL" info top.qcow2 -- "top.qcow2: $SW" qemu-io
works "$COWPOOL" info -U top.qcow2
works "$COWPOOL" compare -U top.qcow2 top.qcow2
works "$COWPOOL" map -U top.qcow2
# the base is a read-only backing layer of qemu-io's chain
works "$COWPOOL" io -r -c 'read -P 0x11 0 512' base.qcow2
refused "$COWPOOL" io -c 'write 0 512' base.qcow2 -- "base.qcow2: $W"
refused "$COWPOOL" commit top.qcow2 -- "$W"
refused "$COWPOOL" rebase -u -b base.qcow2 -F qcow2 top.qcow2 -- "top.qcow2: $W"
refused "$COWPOOL" create -f qcow2 top.qcow2 1M -- "top.qcow2: $W"
release qio
chain_intact "cowpool create over an image qemu-io held"
# released: cowpool writes now
works "$COWPOOL" io -c 'write -P 0x22 1M 512' top.qcow2

nbd_start -f qcow2 top.qcow2
refused "$COWPOOL" io -c 'write 0 512' top.qcow2 -- "top.qcow2: $W" "(qemu-nbd, pid $NBD_PID)"
refused "$COWPOOL" io -r -c 'read 0 512' top.qcow2 -- "$SW" qemu-nbd
works "$COWPOOL" io -r -U -c 'read -P 0x22 1M 512' top.qcow2
nbd_stop

nbd_start -r -f qcow2 top.qcow2
works "$COWPOOL" io -r -c 'read -P 0x22 1M 512' top.qcow2
refused "$COWPOOL" io -c 'write 0 512' top.qcow2 -- "top.qcow2: $W" qemu-nbd
nbd_stop

# qemu-io reads the base alone: cowpool may write the top above it, but
# not commit into the base
hold qbase 'read 512/512' qemu-io -r -f qcow2 base.qcow2
works "$COWPOOL" io -c 'write -P 0x22 1M 512' top.qcow2
refused "$COWPOOL" commit top.qcow2 -- "base.qcow2: $W" qemu-io
release qbase
chain_intact "cowpool commit refused"

# ---- cowpool holds, QEMU tries ---------------------------------------------

hold cph held "$CP_HOLD" top.qcow2
refused qemu-io -f qcow2 -c 'write 0 512' top.qcow2 -- "$W" "Is another process using the image [top.qcow2]?"
refused qemu-img info top.qcow2 -- "$SW"
works qemu-img info -U top.qcow2
works qemu-io -r -f qcow2 -c 'read -P 0x11 0 512' base.qcow2
refused qemu-io -f qcow2 -c 'write 0 512' base.qcow2 -- "$W"
refused qemu-img commit top.qcow2 -- "$W"
refused qemu-img rebase -u -b base.qcow2 -F qcow2 top.qcow2 -- "$W"
refused qemu-img create -f qcow2 top.qcow2 1M -- "$W"
refused qemu-nbd --fork --pid-file="$TMP/nbd2.pid" -k "$TMP/nbd2.sock" \
	-f qcow2 top.qcow2 -- "$W"
# cowpool against cowpool
refused "$COWPOOL" io -c 'write 0 512' top.qcow2 -- "top.qcow2: $W" "(cp_hold, pid ${HPID[cph]})"
release cph
chain_intact "QEMU refused against cowpool's writer"

hold cpr held "$CP_HOLD" -r top.qcow2
works qemu-io -r -f qcow2 -c 'read -P 0x22 1M 512' top.qcow2
works qemu-img info top.qcow2
works "$COWPOOL" info top.qcow2
refused qemu-io -f qcow2 -c 'write 0 512' top.qcow2 -- "$W"
refused qemu-img commit top.qcow2 -- "$W"
release cpr

# force share: cowpool reads without keeping a writer out
hold cpu held "$CP_HOLD" -r -U top.qcow2
works qemu-io -f qcow2 -c 'write -P 0x22 1M 512' top.qcow2
release cpu

# qemu-io writes, cowpool -U reads alongside
hold qio2 'read 512/512' qemu-io -f qcow2 top.qcow2
hold cpu2 held "$CP_HOLD" -r -U top.qcow2
release cpu2
release qio2

# the commit state: top written, base reopened read-write
hold cpb held "$CP_HOLD" -B top.qcow2
refused qemu-io -r -f qcow2 -c 'read 0 512' base.qcow2 -- "$SW"
works qemu-io -r -U -f qcow2 -c 'read -P 0x11 0 512' base.qcow2
refused qemu-img commit top.qcow2 -- "$W"
release cpb
# and the base is back to a plain backing layer once cowpool is gone
works qemu-io -f qcow2 -c 'write -P 0x11 0 512' base.qcow2
chain_intact "after the commit state"

cp_finish
