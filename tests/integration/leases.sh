#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/leases.sh - spm/lease.c against three real sanlock
# daemons (hosts 1..3, one SANLOCK_RUN_DIR each) sharing one lockspace file
# (`ids`) and one lease file (`leases`, SDM at 1 MiB), io_timeout 1.
#
#   1. format, join (timed against timeouts.h), status of each host
#   2. 50 rounds: all three hosts acquire SDM at once; exactly one wins, the
#      others get EBUSY naming the winner; status from any host names the
#      holder and the lease version, which grows with every acquisition
#   3. kill -9 of the holder process: another host acquires at once
#   4. kill -9 of the holder's sanlock daemon (host death): the holder
#      processes see ESTALE; another host acquires SDM (polling, no wait:
#      EBUSY, then EAGAIN once the holder is failing) and VOL1 (blocking,
#      wait_dead_owner) only after the leases expired, within the window of
#      timeouts.h
#   5. leave refused while a lease is held, then leave; errors of an
#      unformatted lease and of a host that has not joined
#
# Environment (set by meson): LEASE_TOOL, MEMLOCK_SHIM.  Skips (77) when
# sanlock is not installed or not run as root.  SL_KEEP_LOGS=1 keeps the
# daemon logs of a failed run.  Prints "MEASURE ..." lines: measured times
# next to the ones computed by spm/timeouts.h.

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"

sl_requires
: "${LEASE_TOOL:?LEASE_TOOL must point to lease_tool}"
[ -x "$LEASE_TOOL" ] || { echo "LEASE_TOOL=$LEASE_TOOL is not executable" >&2; exit 1; }
sl_init

IO=1
ROUNDS=${LEASES_ROUNDS:-50}
LT=$LEASE_TOOL

# timeouts.h, through the tool: TO_host_dead, TO_takeover_min, ...
sl_timeouts "$LT" "$IO"

IDS=$SL_DIR/ids
LEASES=$SL_DIR/leases
LS=(--lockspace cpdom --path "$IDS")
RES=(--lockspace cpdom --resource SDM --path "$LEASES" --offset 1048576)
VOL=(--lockspace cpdom --resource VOL1 --path "$LEASES" --offset 2097152)

# ---- sessions: one registered lease_tool process per host --------------------
declare -A SWR=() SRD=() SPID=()

session_start()
{
	local n=$1 f="$SL_DIR/session$n" fd
	rm -f "$f.in" "$f.out"
	mkfifo "$f.in" "$f.out"
	# the redirections belong inside the background process: opening a
	# fifo blocks until its other end is opened, below
	(
		export SANLOCK_RUN_DIR="$(sl_rundir "$n")"
		exec "$LT" session "${RES[@]}" <"$f.in" >"$f.out" 2>>"$f.err"
	) &
	SPID[$n]=$!
	sl_track "$!"
	exec {fd}>"$f.in"
	SWR[$n]=$fd
	exec {fd}<"$f.out"
	SRD[$n]=$fd
}

session_close()
{
	local n=$1
	[ -n "${SWR[$n]:-}" ] && eval "exec ${SWR[$n]}>&-"
	[ -n "${SRD[$n]:-}" ] && eval "exec ${SRD[$n]}<&-"
	unset "SWR[$n]" "SRD[$n]"
}

session_send() { printf '%s\n' "$2" >&"${SWR[$1]}"; }

# session_recv N: the next answer of session N in $ANS
session_recv()
{
	ANS=
	read -r -t 120 -u "${SRD[$1]}" ANS || ANS="timeout (no answer from session $1)"
}

session_cmd() { session_send "$1" "$2"; session_recv "$1"; }

status_of() { sl_run "$1" "$LT" status "${RES[@]}" 2>&1; }

# ---- 1. daemons, format, join ---------------------------------------------------
for n in 1 2 3; do
	sl_start "$n" || { fail "cannot start sanlock for host $n"; cp_finish; }
done
echo "sanlock daemons: 3, LD_PRELOAD shim: $([ "$SL_USE_SHIM" = 1 ] && echo used || echo not needed)"

truncate -s 1M "$IDS"
truncate -s 3M "$LEASES"
sl_run 1 "$LT" init-lockspace "${LS[@]}" --io-timeout "$IO" >/dev/null ||
	fail "init-lockspace"
sl_run 1 "$LT" init-resource "${RES[@]}" >/dev/null || fail "init-resource"
sl_run 1 "$LT" init-resource "${VOL[@]}" >/dev/null || fail "init-resource VOL1"
expect_eq "status of a new lease" "free lver=0" "$(status_of 2)"

pids=()
for n in 1 2 3; do
	sl_run "$n" "$LT" join "${LS[@]}" --host-id "$n" >"$SL_DIR/join$n.out" 2>&1 &
	pids+=($!)
done
for n in 1 2 3; do
	wait "${pids[$((n - 1))]}" || fail "host $n join: $(cat "$SL_DIR/join$n.out")"
	t=$(sed -n 's/^joined host [0-9]* in \([0-9.]*\) s$/\1/p' "$SL_DIR/join$n.out")
	echo "MEASURE join host $n: ${t:-?} s (timeouts.h: $TO_join_free_min..$TO_join_free_max s)"
	if [ -n "$t" ] && in_range "$t" "$TO_join_free_min" "$TO_join_free_max"; then
		ok
	else
		fail "join time of host $n '${t}' outside [$TO_join_free_min, $TO_join_free_max]"
	fi
	expect_eq "host $n joined" joined \
		"$(sl_run "$n" "$LT" ls-status "${LS[@]}" --host-id "$n" 2>&1)"
done
expect_eq "join twice is a no-op" 0 \
	"$(sl_run 1 "$LT" join "${LS[@]}" --host-id 1 >/dev/null 2>&1; echo $?)"

# wait until every host has seen every other one renewing
t0=$(now)
for n in 1 2 3; do
	for m in 1 2 3; do
		[ "$n" = "$m" ] && continue
		st=
		for _ in $(seq 100); do
			st=$(sl_run "$n" "$LT" host-state --lockspace cpdom --host-id "$m" 2>&1)
			[ "$st" = live ] && break
			sleep 0.1
		done
		expect_eq "host $n sees host $m" live "$st"
	done
done
echo "MEASURE all hosts see each other live after $(elapsed "$t0" "$(now)") s more" \
	"(one check per renewal: ${TO_id_renewal} s)"

# ---- 2. the race -------------------------------------------------------------------
for n in 1 2 3; do session_start "$n"; done
prev=0
plus_one=0
named_other=0
t0=$(now)
slow_rounds=0
r=0
while [ "$r" -lt "$ROUNDS" ]; do
	r=$((r + 1))
	for n in 1 2 3; do session_send "$n" acquire; done
	winner=
	declare -A ans=()
	for n in 1 2 3; do
		session_recv "$n"
		ans[$n]=$ANS
		case $ANS in
		"ok acquired lver="*)
			if [ -n "$winner" ]; then
				fail "round $r: hosts $winner and $n both acquired SDM"
			fi
			winner=$n
			lver=${ANS#ok acquired lver=}
			;;
		esac
	done
	if [ -z "$winner" ]; then
		# With io_timeout 1 a ballot whose disk I/O took longer than 1 s
		# fails with EIO and nobody holds the lease: the storage was too
		# slow for the timeout, not a second winner.  Repeat such a
		# round, a few times at most; any other empty round fails.
		if [[ "${ans[1]} ${ans[2]} ${ans[3]}" == *"err EIO "*"timed out"* ]] &&
		   [ "$slow_rounds" -lt 5 ]; then
			slow_rounds=$((slow_rounds + 1))
			echo "MEASURE round $r: lease I/O slower than io_timeout (EIO), round repeated:" \
				"${ans[1]} | ${ans[2]} | ${ans[3]}"
			# the host whose ballot timed out may still own the leader:
			# it releases (or answers that it holds nothing) first
			for n in 1 2 3; do
				[[ ${ans[$n]} == "err EIO "* ]] && session_cmd "$n" release
			done
			r=$((r - 1))
			unset ans
			continue
		fi
		fail "round $r: nobody acquired SDM: ${ans[1]} | ${ans[2]} | ${ans[3]}"
		continue
	fi
	ok
	# A loser names the holder it saw on disk when it failed: normally
	# the winner; sometimes the previous holder that was itself still
	# running the ballot (sanlock answers IDLIVE when the owner's dblock
	# shows it busy), never the loser itself.
	for n in 1 2 3; do
		[ "$n" = "$winner" ] && continue
		case ${ans[$n]} in
		"err EBUSY lease SDM on $LEASES:1048576 is held by host $winner (lease version "*)
			ok ;;
		"err EBUSY lease SDM on $LEASES:1048576 is held by host "[123]" (lease version "*)
			if [[ ${ans[$n]} == *"held by host $n "* ]]; then
				fail "round $r: host $n: names itself: ${ans[$n]}"
			else
				ok
				named_other=$((named_other + 1))
			fi
			;;
		*)
			fail "round $r: host $n: expected EBUSY naming the holder, got: ${ans[$n]}" ;;
		esac
	done
	if [ "$lver" -gt "$prev" ]; then ok; else fail "round $r: lease version $lver after $prev"; fi
	[ "$lver" -eq $((prev + 1)) ] && plus_one=$((plus_one + 1))
	prev=$lver
	asker=$(( (r % 3) + 1 ))
	st=$(status_of "$asker")
	case $st in
	"held host=$winner lver=$lver "*"state=live") ok ;;
	*) fail "round $r: status from host $asker: '$st', expected held by host $winner lver $lver" ;;
	esac
	session_cmd "$winner" release
	expect_eq "round $r: release by host $winner" "ok released" "$ANS"
	expect_eq "round $r: status after release" "free lver=$lver" "$(status_of "$asker")"
	unset ans
done
echo "MEASURE race: $ROUNDS rounds ($slow_rounds repeated after lease I/O timeouts) in $(elapsed "$t0" "$(now)") s; lease version" \
	"+1 in $plus_one rounds, final version $prev; $named_other of" \
	"$((2 * ROUNDS)) EBUSY answers named the previous holder still in" \
	"the ballot rather than the winner"

# ---- 3. kill -9 of the holder process ---------------------------------------------
session_cmd 1 acquire
case $ANS in
"ok acquired lver="*) lver1=${ANS#ok acquired lver=}; ok ;;
*) fail "host 1 acquire before kill: $ANS"; lver1=$prev ;;
esac
session_cmd 1 held
expect_eq "host 1 holds SDM" "ok held lver=$lver1" "$ANS"
session_cmd 2 acquire
case $ANS in
"err EBUSY "*"held by host 1"*) ok ;;
*) fail "host 2 acquire while host 1 holds: $ANS" ;;
esac

t0=$(now)
{ kill -KILL "${SPID[1]}"; wait "${SPID[1]}"; } 2>/dev/null
session_close 1
got=
while in_range "$(elapsed "$t0" "$(now)")" 0 $((TO_release_takeover_max + 5)); do
	session_cmd 2 acquire
	case $ANS in
	"ok acquired lver="*) got=${ANS#ok acquired lver=}; break ;;
	esac
	sleep 0.05
done
t=$(elapsed "$t0" "$(now)")
echo "MEASURE holder process killed -> other host holds SDM: $t s (timeouts.h bound:" \
	"release_takeover_max ${TO_release_takeover_max} s)"
if [ -n "$got" ] && in_range "$t" 0 "$TO_release_takeover_max"; then ok; else
	fail "takeover after kill -9 of the holder process: ${got:+lver $got }in $t s, last answer: $ANS"
fi
[ -n "$got" ] && expect_eq "lease version after process death" $((lver1 + 1)) "$got"
case $(status_of 3) in
"held host=2 lver=${got:-x} "*) ok ;;
*) fail "status after process death: $(status_of 3)" ;;
esac

# ---- 4. kill -9 of the holder's sanlock daemon: host death ------------------------
# host 2 holds SDM (session 2) and VOL1 (a lease_tool acquire --hold)
lver2=${got:-0}
sl_bg 2 "$LT" acquire "${VOL[@]}" --hold >"$SL_DIR/hold2.out" 2>&1
hold2=$SL_BG_PID
for _ in $(seq 100); do
	grep -q '^acquired' "$SL_DIR/hold2.out" && break
	sleep 0.1
done
expect_eq "host 2 holds VOL1" "acquired VOL1 lver=1" "$(head -n 1 "$SL_DIR/hold2.out")"

t0=$(now)
sl_kill 2 KILL
deadline=$((TO_takeover_max + 15))

# host 1 takes VOL1 with a blocking acquire (wait_dead_owner); the first
# attempts may still answer EBUSY while host 1 has just seen host 2 renew
(
	tries=0
	while :; do
		tries=$((tries + 1))
		if out=$(sl_run 1 "$LT" acquire "${VOL[@]}" --wait 2>&1); then
			echo "$(elapsed "$t0" "$(now)") $tries $out" >"$SL_DIR/volwait.out"
			exit 0
		fi
		if ! in_range "$(elapsed "$t0" "$(now)")" 0 "$deadline"; then
			echo "timeout $tries $out" >"$SL_DIR/volwait.out"
			exit 1
		fi
		sleep 0.5
	done
) &
volwait=$!
sl_track "$volwait"

# (sl_kill waited for the daemon's death: its socket is closed, so the
# holder's check sees it at once; no pause needed)
session_cmd 2 check
case $ANS in
"err ESTALE "*) ok ;;
*) fail "holder after its daemon died: expected ESTALE, got: $ANS" ;;
esac
echo "holder process after its daemon died: $ANS"
wait "$hold2"
expect_eq "acquire --hold after its daemon died: exit (ESTALE)" 5 "$?"
case $(sed -n 2p "$SL_DIR/hold2.out") in
"lost: connection to the sanlock daemon"*) ok ;;
*) fail "acquire --hold after its daemon died: $(cat "$SL_DIR/hold2.out")" ;;
esac

got=
last=
seq_log=
while in_range "$(elapsed "$t0" "$(now)")" 0 "$deadline"; do
	session_cmd 3 acquire
	t=$(elapsed "$t0" "$(now)")
	case $ANS in
	"ok acquired lver="*) got=${ANS#ok acquired lver=}; break ;;
	"err EBUSY "*) cls=EBUSY ;;
	"err EAGAIN "*) cls=EAGAIN ;;
	*) cls="other: $ANS" ;;
	esac
	if [ "$cls" != "$last" ]; then
		seq_log+="  t=${t}s: $cls${last:+ (was $last)}"$'\n'
		[ "$cls" = EAGAIN ] && eagain_msg=$ANS
		last=$cls
	fi
	sleep 0.25
done
t=$(elapsed "$t0" "$(now)")
seq_log+="  t=${t}s: acquired${got:+ lver=$got}"$'\n'
echo "host 3's acquire answers after host 2's daemon was killed:"
printf '%s' "$seq_log"
[ -n "${eagain_msg:-}" ] && echo "  EAGAIN message: $eagain_msg"
echo "MEASURE host death -> other host holds SDM: $t s (timeouts.h: host_dead" \
	"${TO_host_dead} s, window [${TO_takeover_min}, ${TO_takeover_max}] s)"
if [ -n "$got" ] && in_range "$t" "$TO_takeover_min" "$TO_takeover_max"; then ok; else
	fail "takeover after host death: ${got:+lver $got }in $t s, outside [$TO_takeover_min, $TO_takeover_max]; last: $ANS"
fi
case $seq_log in
*EAGAIN*) ok ;;
*) fail "no EAGAIN ('stopped renewing') answer while host 2 was failing" ;;
esac
[ -n "$got" ] && expect_eq "lease version after host death" $((lver2 + 1)) "$got"
wait "$volwait"
read -r vt vtries vout <"$SL_DIR/volwait.out"
echo "MEASURE host death -> blocking acquire (wait_dead_owner) of VOL1 on host 1" \
	"returns: $vt s after $vtries call(s): $vout"
case $vout in
"acquired VOL1 lver=2") ok ;;
*) fail "blocking acquire of VOL1 after host death: $vt $vtries $vout" ;;
esac
if in_range "$vt" "$TO_takeover_min" "$TO_takeover_max"; then ok; else
	fail "blocking takeover of VOL1 in $vt s, outside [$TO_takeover_min, $TO_takeover_max]"
fi
expect_eq "host 1 sees host 2" dead \
	"$(sl_run 1 "$LT" host-state --lockspace cpdom --host-id 2 2>&1)"
case $(status_of 1) in
"held host=3 lver=${got:-x} "*) ok ;;
*) fail "status from host 1 after host death: $(status_of 1)" ;;
esac
session_close 2

# ---- 5. leave, errors ---------------------------------------------------------------
out=$(sl_run 3 "$LT" leave "${LS[@]}" --host-id 3 2>&1)
rc=$?
expect_eq "leave while holding a lease: exit (EBUSY)" 2 "$rc"
case $out in *"still hold leases"*) ok ;; *) fail "leave while holding: $out" ;; esac
session_cmd 3 release
expect_eq "host 3 release" "ok released" "$ANS"
session_cmd 3 release
case $ANS in "err ENOENT "*"not held by this process"*) ok ;; *) fail "second release: $ANS" ;; esac
sl_run 3 "$LT" leave "${LS[@]}" --host-id 3 >/dev/null 2>&1 || fail "leave"
expect_eq "host 3 after leave" not-joined \
	"$(sl_run 3 "$LT" ls-status "${LS[@]}" --host-id 3 2>&1)"
session_cmd 3 acquire
case $ANS in
"err ENOTCONN "*"lockspace cpdom is not joined on this host"*) ok ;;
*) fail "acquire after leave: $ANS" ;;
esac
out=$(sl_run 1 "$LT" status --lockspace cpdom --resource SDM --path "$LEASES" --offset 0 2>&1)
expect_eq "status of an unformatted area: exit (ENOENT)" 1 "$?"
case $out in *"ENOENT"*"not formatted"*) ok ;; *) fail "unformatted: $out" ;; esac
out=$(SANLOCK_RUN_DIR=$SL_DIR/nodaemon "$LT" status "${RES[@]}" 2>&1)
expect_eq "no daemon: exit (ECONNREFUSED)" 6 "$?"
case $out in *"no sanlock daemon at $SL_DIR/nodaemon"*) ok ;; *) fail "no daemon: $out" ;; esac
session_cmd 3 quit
session_close 3

cp_finish
