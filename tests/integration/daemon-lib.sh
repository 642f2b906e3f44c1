# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/daemon-lib.sh - start and watch cowpoold in the
# daemon-*.sh tests (bash library, sourced after ../lib.sh and cp_init).
#
# Environment: COWPOOL, COWPOOLD (meson); MH_HELPER (meson) for jq_.
# Exports COWPOOL_RUN_DIR=$TMP/run: every daemon of the test keeps its host
# id's lock file there (run_dir), not in the machine's /run/cowpool, so
# tests running side by side with the same host id do not collide.
#
# API
#   dl_start LOG ARGS...   start cowpoold ARGS... in the background, its
#                          stderr appended to LOG; returns when it wrote
#                          "ready" on --ready-fd (EOF when it exits first:
#                          1).  Its pid in DPID.
#   dl_stop [SIG]          send SIG (TERM) to $DPID and wait; exit status
#                          in DSTATUS
#   dl_kill_all            (trap) kill -9 every daemon started here
#   wait_for WHAT N CMD... run CMD until it succeeds, at most N times with
#                          a 0.1 s pause (a bounded poll of a condition,
#                          not a sleep standing for one): 0 or 1
#   log_has FILE REGEX     grep -Eq
#   rss_kb PID, nfds PID   VmRSS in kB, open file descriptors
#   cpl ARGS...            cowpool --socket $SOCK ARGS...
#   cpj ARGS...            the same with --output=json: stdout in OUT,
#                          stderr in cpj.err, exit status in RC
#   jq_ EXPR [TEXT]        mh_helper json EXPR on TEXT (default $OUT)
#   spm_start [SECONDS]    cpj spm start --wait=SECONDS (60): the daemon
#                          retries while the lease of a killed daemon is
#                          being released; 0 when this host is the SPM
#   abort MSG              fail MSG, the log's ($LOG) tail, cp_finish
#   expect_match WHAT REGEX FILE

: "${COWPOOLD:?COWPOOLD must point to the cowpoold binary}"
DPID=
DL_PIDS=()
export COWPOOL_RUN_DIR=$TMP/run

dl_start()
{
	local log=$1 line= fifo
	shift
	fifo=$(mktemp -u "$TMP/ready.XXXXXX")
	mkfifo "$fifo" || return 1
	"$COWPOOLD" --ready-fd 3 "$@" 3>"$fifo" 2>>"$log" </dev/null &
	DPID=$!
	DL_PIDS+=("$DPID")
	read -r -t 60 line <"$fifo"
	rm -f "$fifo"
	[ "$line" = ready ]
}

dl_stop()
{
	kill "-${1:-TERM}" "$DPID" 2>/dev/null
	wait "$DPID" 2>/dev/null
	DSTATUS=$?
}

dl_kill_all()
{
	local p
	for p in "${DL_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	for p in "${DL_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
}

wait_for()
{
	local what=$1 n=$2 i
	shift 2
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	echo "wait_for: $what: not after $n tries" >&2
	return 1
}

log_has() { grep -Eq -- "$2" "$1"; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }

cpl() { "$COWPOOL" --socket "$SOCK" "$@"; }
cpj() { OUT=$("$COWPOOL" --socket "$SOCK" "$@" --output=json 2>cpj.err); RC=$?; }
jq_() { printf '%s' "${2-$OUT}" | "$MH_HELPER" json "$1"; }
spm_start() { cpj spm start --wait="${1:-60}"; [ "$RC" = 0 ]; }
abort() { fail "$*"; tail -n 20 "$LOG" >&2; cp_finish; }

expect_match()
{
	if grep -Eq -- "$2" "$3"; then ok; else
		fail "$1: /$2/ not in $3: $(head -c 600 "$3")"
	fi
}
