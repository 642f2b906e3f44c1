#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpoold's limits (without sanlock), each changed by a SIGHUP reload:
# max_connections (one more is refused with EBUSY, a freed slot serves
# again), request_timeout (a connection that sends nothing is closed),
# idle_timeout (one that stops sending is closed), max_request (a longer
# line is refused), max_answer (a batch whose answer would be larger gets
# -32001 saying how many calls ran), and memory: 40 clients sending a
# 1 MiB batch each at once keep the peak RSS bounded, and afterwards the
# daemon's RSS and open fds are back to their baseline.
#
# Environment: COWPOOL, COWPOOLD (meson).
here=$(dirname "$0")
. "$here/../lib.sh"
cp_init
. "$here/daemon-lib.sh"
HOLD=()
cleanup()
{
	local fd
	for fd in "${HOLD[@]}"; do eval "exec $fd>&-"; done
	dl_kill_all
	rm -rf -- "$TMP"
}
trap cleanup EXIT

SOCK=$TMP/run/cowpoold.sock
LOG=$TMP/cowpoold.log
conf()
{
	cat >d.conf <<EOC
host_id = 1
sanlock = no
socket = $SOCK
log_file = $LOG
EOC
	local kv
	for kv in "$@"; do echo "$kv" >>d.conf; done
}
NRELOAD=0
reload()
{
	conf "$@"
	NRELOAD=$((NRELOAD + 1))
	kill -HUP "$DPID"
	wait_for "reload $NRELOAD" 100 bash -c \
		"[ \$(grep -c 'SIGHUP: configuration reloaded' '$LOG') -ge $NRELOAD ]" ||
		fail "reload $NRELOAD not logged"
}
REQ='{"jsonrpc":"2.0","method":"host.info","id":1}'

# hold N [nosend]: a client on fd 10+N that sends one request (cowpool
# rpc --raw reads its answers only after its input ends: hold.N.out);
# the connection stays until release N.
hold()
{
	local n=$1 fd=$((10 + $1))
	rm -f "hold.$n.fifo"
	mkfifo "hold.$n.fifo"
	# (without the other holds' fifo ends: their EOF must not wait on us)
	cpl rpc --raw <"hold.$n.fifo" >"hold.$n.out" 2>"hold.$n.err" \
		11>&- 12>&- 13>&- 14>&- 15>&- &
	HPID[$n]=$!
	eval "exec $fd>hold.$n.fifo"
	HOLD+=("$fd")
	[ "${2:-send}" = send ] && echo "$REQ" >&"$fd"
}
declare -A HPID=()
# release N: end client N's input; it then prints its answers and exits
release() { eval "exec $((10 + $1))>&-"; wait "${HPID[$1]}"; }
answered() { grep -q '"result"' "hold.$1.out"; }
# calls N: the daemon has run host.info N times (log_level debug)
calls() { [ "$(grep -c 'DEBUG: call host.info' "$LOG")" -ge "$1" ]; }

conf "max_connections = 3" "log_level = debug"
dl_start "$TMP/stderr.log" -c d.conf ||
	{ fail "cowpoold did not start: $(cat "$TMP/stderr.log" "$LOG")"; cp_finish; }

# ---- max_connections --------------------------------------------------------
for i in 1 2 3; do
	hold "$i"
	wait_for "held connection $i" 300 calls "$i" || fail "connection $i not served"
done
run_capture mc1 cpl rpc host.info
expect_eq "4th connection: exit" 1 "$RC"
expect_match "4th connection: message" \
	"too many connections: 3 open \\(max_connections\\)" mc1.err
expect_match "4th connection: log line" \
	"WARN: connection [0-9]+ \\(uid 0, pid [0-9]+\\) refused: too many connections" "$LOG"
release 1
wait_for "a freed slot serves" 300 cpl rpc host.info >/dev/null 2>&1 ||
	fail "no connection after one was released"
release 2
release 3
answered 1 && answered 2 && answered 3 && ok || fail "a held connection was not answered"

# ---- request_timeout, idle_timeout ----------------------------------------
reload "request_timeout = 1" "idle_timeout = 1" "log_level = debug"
hold 4 nosend
wait_for "request_timeout closes" 300 log_has "$LOG" \
	"no request within request_timeout 1 s; closing it" || fail "no request_timeout line"
echo "$REQ" >&14 2>/dev/null
release 4
if answered 4; then fail "served after request_timeout closed it"; else ok; fi

ncalls=$(grep -c 'DEBUG: call host.info' "$LOG")
hold 5
wait_for "first call" 300 calls $((ncalls + 1)) || fail "connection 5 not served"
wait_for "idle_timeout closes" 300 log_has "$LOG" \
	"idle for idle_timeout 1 s; closing it" || fail "no idle_timeout line"
echo "$REQ" >&15 2>/dev/null
release 5
expect_eq "one answer only after idle_timeout" 1 "$(grep -c '"result"' hold.5.out)"

# ---- max_request, max_answer -----------------------------------------------
reload "max_request = 4096"
{ printf '{"jsonrpc":"2.0","method":"host.info","id":"'; head -c 5000 /dev/zero | tr '\0' x; printf '"}\n'; } |
	cpl rpc --raw >mr.out 2>&1
expect_match "request over max_request" \
	'"code":-32600,"message":"invalid request: request larger than 4096 bytes"' mr.out
reload "max_answer = 65536"
# 1000 host.info calls: ~150 kB of answers
{ printf '['; for i in $(seq 999); do printf '%s,' "$REQ"; done; printf '%s]\n' "$REQ"; } >batch1k
cpl rpc --raw <batch1k >ma.out 2>&1
expect_match "answer over max_answer" \
	'"code":-32001,"message":"answer too large: the answers to the first [0-9]+ of the batch.s 1000 calls exceed 65536 bytes' ma.out
expect_match "answer over max_answer: how many ran" '"data":\{"ran":"[0-9]+"\}' ma.out
if [ "$(wc -c <ma.out)" -lt 65536 ]; then ok; else fail "refused answer is $(wc -c <ma.out) bytes"; fi
run_capture after1 cpl rpc host.info
expect_eq "serves after a refused answer" 0 "$RC"

# ---- a spike: 40 clients, a 1 MiB batch each ------------------------------
reload "max_answer = 8M"
# a batch just under 1 MiB (the default max_request)
n=$(( (1048576 - 16) / (${#REQ} + 1) ))
{ printf '['; for ((i = 1; i < n; i++)); do printf '%s,' "$REQ"; done; printf '%s]\n' "$REQ"; } >batch1m
cpl rpc host.info >/dev/null
base_rss=$(rss_kb "$DPID")
base_fds=$(nfds "$DPID")
pids=()
for i in $(seq 40); do
	cpl rpc --raw <batch1m >"spike.$i.out" 2>&1 &
	pids+=($!)
done
wait "${pids[@]}"
bad=0
for i in $(seq 40); do
	[ "$(grep -o '"result"' "spike.$i.out" | wc -l)" = "$n" ] || bad=$((bad + 1))
done
expect_eq "spike: every batch fully answered" 0 "$bad"
rm -f spike.*.out
fds_back() { [ "$(nfds "$DPID")" -le "$base_fds" ]; }
wait_for "fds back to baseline" 300 fds_back ||
	fail "fds: $(nfds "$DPID") after the spike, $base_fds before"
rss=$(rss_kb "$DPID")
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DPID/status")
echo "RSS: $base_rss kB before the spike, $rss kB after, peak $hwm kB"
if [ "$rss" -le $((base_rss + 16384)) ]; then ok; else
	fail "RSS not back after the spike: $rss kB, baseline $base_rss kB"; fi
# The peak (VmHWM, no sampling): 40 request buffers of 1 MiB plus two
# big requests' parse trees and answers at a time (~90 MB); answering all
# forty at once took ~500 MB.
if [ "$hwm" -le $((base_rss + 196608)) ]; then ok; else
	fail "peak RSS during the spike: $hwm kB (more than 192 MiB over the baseline)"; fi

dl_stop TERM
expect_eq "clean stop" 0 "$DSTATUS"
cp_finish
