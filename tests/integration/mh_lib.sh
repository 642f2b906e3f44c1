# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/mh_lib.sh - a pool of simulated hosts on one machine
# (bash library for multihost.sh).  Sourced after ../lib.sh and
# ../sanlock/harness.sh:
#     . "$here/mh_lib.sh"
#
# Host N (1..) is its own sanlock daemon (harness.sh: SANLOCK_RUN_DIR
# $SL_DIR/hostN, host name hostN) and its own cowpoold (host id N, run_dir
# $SL_DIR/runN for its host id lock file, socket $SL_DIR/cpN.sock, NBD exports on $SL_DIR/nbdN.sock (mh_nbd_sock N), log $SL_DIR/cowpoold-N.log), started with --ready-fd:
# the start returns when the daemon has written "ready" (its socket
# accepts connections), never after a fixed sleep.  Every host sees the
# same storage: the file domain root $MH_FROOT and the loop device $MH_LOOP
# (a private LVM_SYSTEM_DIR whose filter accepts only that device, so the
# machine's own VGs are never touched).
#
# Environment: COWPOOL, COWPOOLD, MH_HELPER, LEASE_TOOL, MEMLOCK_SHIM (meson).
#
# API
#   mh_requires              exit 77 unless root, sanlock, lvm2, losetup and
#                            qemu-img are there; checks the meson variables
#   mh_init SIZE             sl_init, a loop device of SIZE over a sparse
#                            file, the LVM configuration, the file root, and
#                            the cleanup (on any exit: cowpoolds killed,
#                            sanlock daemons killed, VGs removed, loop
#                            device detached, $SL_DIR removed)
#   mh_start N [VAR=VAL...]  start host N's cowpoold with extra environment
#                            (e.g. CP_FAULT_SPM_KILL_AT=3); 0 when ready
#   mh_kill N                kill -9 host N's cowpoold; its exit status in
#                            MH_STATUS (137)
#   mh_reap N                wait for host N's cowpoold (which is dying or
#                            dead by itself); exit status in MH_STATUS
#   mh_stop N                SIGTERM, wait for the clean exit (MH_STATUS)
#   mh_alive N               the cowpoold of host N runs
#   cpw N ARGS...            cowpool --socket <host N> ARGS...: stdout in
#                            $OUT, stderr in $ERR, exit status in $RC
#   cpj N ARGS...            the same with --output=json appended
#   jq_ EXPR [TEXT]          mh_helper json EXPR on TEXT (default $OUT)
#   lvm_ CMD ARGS...         an lvm command with the test's configuration

MH_FROOT=
MH_LOOP=
MH_VGS=()
declare -A MH_DPID=() MH_WPID=()
MH_STATUS=0

mh_requires()
{
	sl_requires
	export PATH="$PATH:/usr/sbin:/sbin"
	local c
	for c in lvm losetup qemu-img; do
		if ! command -v "$c" >/dev/null 2>&1; then
			echo "SKIP: $c is not installed" >&2
			exit 77
		fi
	done
	: "${COWPOOL:?COWPOOL must point to the cowpool binary}"
	: "${COWPOOLD:?COWPOOLD must point to cowpoold}"
	: "${MH_HELPER:?MH_HELPER must point to mh_helper}"
	: "${LEASE_TOOL:?LEASE_TOOL must point to lease_tool}"
	for c in "$COWPOOL" "$COWPOOLD" "$MH_HELPER" "$LEASE_TOOL"; do
		[ -x "$c" ] || { echo "$c is not executable" >&2; exit 1; }
	done
}

_mh_cleanup()
{
	local n p l
	for n in "${!MH_DPID[@]}"; do
		kill -KILL "${MH_DPID[$n]}" 2>/dev/null
	done
	for n in "${!MH_WPID[@]}"; do
		wait "${MH_WPID[$n]}" 2>/dev/null
	done
	# the sanlock daemons hold the loop device open (lockspace, leases)
	for n in "${!SL_DPID[@]}"; do
		sl_kill "$n" KILL
	done
	if [ -n "$MH_LOOP" ]; then
		for l in "${MH_VGS[@]}"; do
			lvm_ vgremove -f "$l" >/dev/null 2>&1
		done
		lvm_ pvremove -ff -y "$MH_LOOP" >/dev/null 2>&1
		losetup -d "$MH_LOOP" 2>/dev/null
	fi
}

mh_init()
{
	local size=$1
	sl_init
	sl_on_exit _mh_cleanup
	export LVM_SYSTEM_DIR=$SL_DIR/lvm LVM_SUPPRESS_FD_WARNINGS=1
	MH_LOOP=$(loop_attach "$SL_DIR/pv0" "$size")
	[ -n "$MH_LOOP" ] || exit 1
	lvm_private_conf "$LVM_SYSTEM_DIR" "$MH_LOOP"
	MH_FROOT=$SL_DIR/nfs
	mkdir -p "$MH_FROOT"
}

lvm_() { lvm "$@"; }

mh_sock() { echo "$SL_DIR/cp$1.sock"; }
mh_nbd_sock() { echo "$SL_DIR/nbd$1.sock"; }

mh_alive() { [ -n "${MH_DPID[$1]:-}" ] && _sl_alive "${MH_DPID[$1]}"; }

# The daemon runs under a wrapper subshell that waits for it and writes
# its exit status to $SL_DIR/status<N>: the main shell never has the
# daemon as a job of its own, so a daemon killed by its crash point is not
# reported ("Killed") on the test's output.  The daemon's pid is written
# (by the subshell that then execs it) before it starts.
mh_start()
{
	local n=$1 fifo="$SL_DIR/ready$1" line=
	shift
	rm -f "$fifo" "$SL_DIR/pid$n" "$SL_DIR/status$n"
	mkfifo "$fifo" || return 1
	(
		(
			echo "$BASHPID" >"$SL_DIR/pid$n"
			export SANLOCK_RUN_DIR="$(sl_rundir "$n")"
			for kv in "$@"; do export "$kv"; done
			exec "$COWPOOLD" --host-id "$n" --run-dir "$SL_DIR/run$n" \
				--socket "$(mh_sock "$n")" \
				--nbd-socket "$(mh_nbd_sock "$n")" \
				--file-root "$MH_FROOT" --lvm-device "$MH_LOOP" \
				--lvm-system-dir "$LVM_SYSTEM_DIR" --monitor-interval 1 \
				--ready-fd 3 3>"$fifo" </dev/null >>"$SL_DIR/cowpoold-$n.log" 2>&1
		) &
		wait $!
		echo $? >"$SL_DIR/status$n"
	) 2>/dev/null &
	MH_WPID[$n]=$!
	# the fifo opens once the daemon has its end open; EOF (no line) when
	# it exits before it is ready.  The timeout only bounds a hang.
	read -r -t 60 line <"$fifo"
	rm -f "$fifo"
	MH_DPID[$n]=$(cat "$SL_DIR/pid$n")
	if [ "$line" != ready ]; then
		echo "cowpoold of host $n did not become ready; its log:" >&2
		tail -n 20 "$SL_DIR/cowpoold-$n.log" >&2
		return 1
	fi
	return 0
}

mh_reap()
{
	local n=$1
	MH_STATUS=
	[ -n "${MH_WPID[$n]:-}" ] || return 0
	wait "${MH_WPID[$n]}"
	MH_STATUS=$(cat "$SL_DIR/status$n" 2>/dev/null)
	unset "MH_WPID[$n]" "MH_DPID[$n]"
}

mh_kill()
{
	local pid=${MH_DPID[$1]:-}
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	mh_reap "$1"
}

mh_stop()
{
	local pid=${MH_DPID[$1]:-}
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
	mh_reap "$1"
}

cpw()
{
	local n=$1
	shift
	OUT=$("$COWPOOL" --socket "$(mh_sock "$n")" "$@" 2>"$SL_DIR/cpw.err")
	RC=$?
	ERR=$(cat "$SL_DIR/cpw.err")
}

cpj() { cpw "$@" --output=json; }

jq_()
{
	if [ $# -ge 2 ]; then
		printf '%s' "$2" | "$MH_HELPER" json "$1"
	else
		printf '%s' "$OUT" | "$MH_HELPER" json "$1"
	fi
}
