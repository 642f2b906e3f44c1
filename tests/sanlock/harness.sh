# SPDX-License-Identifier: GPL-2.0-or-later
# tests/sanlock/harness.sh - run N sanlock daemons side by side, one per
# simulated host (bash library).  Sourced as:
#     . "$(dirname "$0")/../sanlock/harness.sh"
#
# Each host N gets its own run directory $SL_DIR/hostN (SANLOCK_RUN_DIR of
# its daemon and of every client of it), its host name (-e hostN) and its
# log ($SL_DIR/hostN.log, the daemon runs with -D so everything goes
# there).  Daemons run without a watchdog (-w 0: the sandbox has none), as
# root (-U root -G root: no need for a sanlock user able to open the test's
# files).  Those, and memlock_shim.c, are the two accommodations sanlock
# needs on machines without a watchdog device or CAP_SYS_RESOURCE.
#
# Environment:
#   MEMLOCK_SHIM  the LD_PRELOAD shim (memlock_shim.so, built by meson).
#                 Used only when a plain start of the daemon fails (the
#                 sandbox refuses setrlimit(RLIMIT_MEMLOCK)); from then on
#                 for every daemon of the test.
#   SANLOCK       the daemon binary (default /usr/sbin/sanlock)
#
# API
#   sl_requires            exit 77 unless sanlock is installed and we are root
#   sl_init                make $SL_DIR (mktemp -d) and install the cleanup
#                          trap: on any exit every tracked process and every
#                          daemon is killed and $SL_DIR removed
#   sl_start N             start the daemon of host N; waits until it answers
#   sl_run N CMD...        run CMD as a client of host N's daemon
#   sl_bg N CMD...         same in the background; its pid in $SL_BG_PID
#   sl_daemon_pid N        pid of host N's daemon
#   sl_kill N [SIG]        kill host N's daemon (and its helper); default KILL
#   sl_stop N              shut host N's daemon down cleanly
#   sl_track PID           kill PID (with KILL) at exit
#   sl_on_exit 'CMD'       run CMD at exit, before the daemons are killed
#   sl_log_tail N          last lines of host N's log (for failure messages)
#   sl_timeouts TOOL IO    TO_host_dead, TO_takeover_min... from timeouts.h
#                          for io_timeout IO, as lease_tool TOOL prints them
#   now; elapsed T0 T1; in_range X LO HI
#                          wall clock, T1 - T0, LO <= X <= HI (decimals)

SANLOCK=${SANLOCK:-/usr/sbin/sanlock}
SL_DIR=
SL_USE_SHIM=0
SL_TRACKED=()
SL_EXIT_CMDS=()
declare -A SL_DPID=()

sl_requires()
{
	if [ ! -x "$SANLOCK" ]; then
		echo "SKIP: sanlock is not installed ($SANLOCK)" >&2
		exit 77
	fi
	if [ "$(id -u)" -ne 0 ]; then
		echo "SKIP: sanlock daemons need root" >&2
		exit 77
	fi
}

sl_cleanup()
{
	local rc=$? c p n
	trap - EXIT INT TERM
	for c in "${SL_EXIT_CMDS[@]}"; do
		eval "$c" >/dev/null 2>&1 || :
	done
	# (stderr off: bash reports every killed job)
	{
		for p in "${SL_TRACKED[@]}"; do
			kill -KILL "$p" || :
		done
		for n in "${!SL_DPID[@]}"; do
			p=${SL_DPID[$n]}
			# the daemon leads its own process group (setsid):
			# daemon and helper
			kill -KILL -- "-$p" || kill -KILL "$p" || :
		done
		for n in "${!SL_DPID[@]}"; do
			p=${SL_DPID[$n]}
			for _ in $(seq 50); do
				_sl_alive "$p" || break
				sleep 0.1
			done
		done
		wait
	} 2>/dev/null
	if [ -n "$SL_DIR" ] && [ -d "$SL_DIR" ]; then
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -n "${SL_KEEP_LOGS:-}" ]; then
			echo "harness: logs kept in $SL_DIR" >&2
		else
			rm -rf -- "$SL_DIR"
		fi
	fi
	exit "$rc"
}

sl_init()
{
	SL_DIR=$(mktemp -d /var/tmp/cowpool-sanlock.XXXXXXXX) || exit 1
	trap sl_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# _sl_alive PID: running (a zombie child that exited counts as dead)
_sl_alive()
{
	local st
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

sl_track() { SL_TRACKED+=("$1"); }
sl_on_exit() { SL_EXIT_CMDS+=("$1"); }
sl_daemon_pid() { echo "${SL_DPID[$1]}"; }
sl_rundir() { echo "$SL_DIR/host$1"; }
sl_log_tail() { tail -n "${2:-15}" "$SL_DIR/host$1.log" 2>/dev/null; }

sl_run()
{
	local n=$1
	shift
	SANLOCK_RUN_DIR="$SL_DIR/host$n" "$@"
}

# _sl_spawn N SHIM: start the daemon; 0 when it answers within 10 s.
_sl_spawn()
{
	local n=$1 shim=$2 rd="$SL_DIR/host$n" log="$SL_DIR/host$n.log" pid i
	local -a pre=()
	rm -rf -- "$rd"
	mkdir -p "$rd"
	if [ "$shim" = 1 ]; then
		pre=(env "LD_PRELOAD=$MEMLOCK_SHIM")
	fi
	SANLOCK_RUN_DIR=$rd setsid "${pre[@]}" "$SANLOCK" daemon -D -w 0 \
		-U root -G root -e "host$n" -L -1 -S -1 >>"$log" 2>&1 </dev/null &
	pid=$!
	SL_DPID[$n]=$pid
	for i in $(seq 100); do
		if ! _sl_alive "$pid"; then
			wait "$pid" 2>/dev/null
			unset "SL_DPID[$n]"
			return 1
		fi
		if [ -S "$rd/sanlock.sock" ] &&
		   SANLOCK_RUN_DIR=$rd "$SANLOCK" client status >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	unset "SL_DPID[$n]"
	return 1
}

sl_start()
{
	local n=$1
	if [ "$SL_USE_SHIM" = 0 ]; then
		_sl_spawn "$n" 0 && return 0
		echo "harness: plain start of host$n's sanlock failed:" \
			"$(sl_log_tail "$n" 1)" >&2
		: "${MEMLOCK_SHIM:?MEMLOCK_SHIM must point to memlock_shim.so}"
		[ -r "$MEMLOCK_SHIM" ] || { echo "harness: no $MEMLOCK_SHIM" >&2; return 1; }
		echo "harness: retrying with LD_PRELOAD=$MEMLOCK_SHIM" >&2
		SL_USE_SHIM=1
	fi
	_sl_spawn "$n" 1 && return 0
	echo "harness: cannot start sanlock for host$n:" >&2
	sl_log_tail "$n" >&2
	return 1
}

sl_kill()
{
	local n=$1 sig=${2:-KILL} pid=${SL_DPID[$1]:-}
	[ -n "$pid" ] || return 1
	{
		kill "-$sig" -- "-$pid" || kill "-$sig" "$pid"
		if [ "$sig" = KILL ]; then
			wait "$pid"
			unset "SL_DPID[$n]"
		fi
	} 2>/dev/null
	return 0
}

sl_stop()
{
	local n=$1 pid=${SL_DPID[$1]:-} i
	[ -n "$pid" ] || return 0
	sl_run "$n" "$SANLOCK" client shutdown -f 1 >/dev/null 2>&1
	for i in $(seq 100); do
		_sl_alive "$pid" || break
		sleep 0.1
	done
	sl_kill "$n" KILL
}

# sl_bg N CMD...: run CMD in the background as a client of host N, so that
# $SL_BG_PID is CMD's own pid (signals reach it, not a wrapper shell).  The
# process is tracked (killed at exit).
sl_bg()
{
	local n=$1
	shift
	(
		export SANLOCK_RUN_DIR="$SL_DIR/host$n"
		exec "$@"
	) &
	SL_BG_PID=$!
	sl_track "$SL_BG_PID"
}

sl_timeouts()
{
	local k v
	while IFS='=' read -r k v; do
		printf -v "TO_$k" '%s' "$v"
	done < <("$1" timeouts --io-timeout "$2")
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.3f", a - b }'; }
in_range() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'; }
