#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/daemon-export.sh - cowpoold's NBD exports
# (volume.export, volume.unexport, export.list) against real clients, with
# two simulated hosts (a sanlock daemon and a cowpoold each, run
# directories of their own) sharing a file domain:
#   - a thin volume exported read-write: the URI, the socket's mode, size
#     by nbdinfo and qemu-img info, writes by qemu-io read back, qemu-img
#     compare against a reference file, export.list's counters and clients
#   - exporting again (idempotent / EEXIST), a taken name, a bad name
#   - the lease: host 2 cannot export the volume writable while host 1
#     does (the error names host 1), can after the unexport
#   - unexport while a client is connected: EBUSY without force; with
#     force the client is disconnected; re-export works
#   - volume.delete, image.delete, volume.merge, image.snapshot and
#     volume.teardown refused while exported (EBUSY naming the export)
#   - a domain monitoring hiccup (the domain record moved away until the
#     monitor reports it) leaves the export and its client serving
#   - a read-only export refuses writes (qemu-io fails, data unchanged)
#   - daemon stop with a connected client: the client is disconnected, the
#     daemon exits 0 and logs the export's end; host 2 then exports the
#     volume writable
#   - lease loss (host 2's sanlock daemon killed): its writable export
#     ends at once, the client disconnected
#
# Environment (meson): COWPOOL, COWPOOLD, MH_HELPER, MEMLOCK_SHIM.  Root
# with sanlock, qemu-img, qemu-io, nbdinfo and python3; skips (77)
# otherwise.  Polls only for a client's connection to end on the server
# side (bounded, 10 s), for the monitor's view of the domain (15 s) and
# for the lockspace joins (sanlock's timing).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"

sl_requires
requires qemu-img qemu-io nbdinfo python3
: "${COWPOOLD:?COWPOOLD must point to cowpoold}"
: "${MH_HELPER:?MH_HELPER must point to mh_helper}"
sl_init
trap '' PIPE  # a client that is gone: its fifo gives EPIPE, not SIGPIPE
cd "$SL_DIR" || exit 1
ROOT=$SL_DIR/nfs
mkdir -p "$ROOT"
declare -A DPID=()

sock() { echo "$SL_DIR/run$1/cowpoold.sock"; }
nbdsock() { echo "$SL_DIR/run$1/nbd.sock"; }

# start N: host N's cowpoold; returns once it wrote "ready"
start()
{
	local n=$1 fifo=$SL_DIR/ready$1 line=
	rm -f "$fifo"
	mkfifo "$fifo"
	SANLOCK_RUN_DIR=$(sl_rundir "$n") "$COWPOOLD" --host-id "$n" \
		--run-dir "$SL_DIR/run$n" --socket "$(sock "$n")" --file-root "$ROOT" --monitor-interval 1 \
		--ready-fd 3 3>"$fifo" </dev/null >>"$SL_DIR/cowpoold-$n.log" 2>&1 &
	DPID[$n]=$!
	sl_track "${DPID[$n]}"
	read -r -t 60 line <"$fifo"
	rm -f "$fifo"
	[ "$line" = ready ]
}

# stop N: SIGTERM, wait; the exit status in ST
stop()
{
	kill -TERM "${DPID[$1]}"
	wait "${DPID[$1]}"
	ST=$?
}

cpw()
{
	local n=$1
	shift
	OUT=$("$COWPOOL" --socket "$(sock "$n")" "$@" 2>"$SL_DIR/cpw.err")
	RC=$?
	ERR=$(cat "$SL_DIR/cpw.err")
}
cpj() { cpw "$@" --output=json; }
jq_() { printf '%s' "${2-$OUT}" | "$MH_HELPER" json "$1"; }
must()
{
	cpj "$@"
	if [ "$RC" -ne 0 ]; then fail "host $1: cowpool ${*:2}: exit $RC: $ERR"; return 1; fi
	ok
}
refused()
{
	local what=$1 pat=$2
	shift 2
	cpw "$@"
	if [ "$RC" -eq 1 ] && [[ $ERR == $pat ]]; then ok; else
		fail "$what: expected exit 1 and an error like '$pat'; got exit $RC: ${ERR:-$OUT}"
	fi
}
abort()
{
	fail "$*"
	for n in 1 2; do
		echo "--- cowpoold $n:" >&2
		tail -n 15 "$SL_DIR/cowpoold-$n.log" >&2 2>/dev/null
	done
	cp_finish
}

# field NAME [N]: NAME of the export $V in host N's export.list
field()
{
	cpj "${2:-1}" export list
	jq_ "[].$1" "$(printf '%s' "$OUT")" | head -n 1
}

# wait_clients N COUNT: export.list of host N shows COUNT clients of the
# (only) export.  A client's connection ends on the server side shortly
# after the client exits; bounded at 10 s.
wait_clients()
{
	local i c=
	for i in $(seq 1 100); do
		c=$(field clients "$1")
		[ "$c" = "$2" ] && return 0
		sleep 0.1
	done
	echo "clients: $c, expected $2" >&2
	return 1
}

# hold URI-SOCKET NAME: a client that stays connected (nbd_hold.py); reads
# its "connected" line before returning.  HOLD_IN: its stdin (write a line
# to end it), HOLD_OUT: its output.
hold()
{
	rm -f hold.in hold.out
	mkfifo hold.in hold.out
	python3 "$here/nbd_hold.py" "$1" "$2" <hold.in >hold.out &
	HOLD_PID=$!
	sl_track "$HOLD_PID"
	exec 5>hold.in 6<hold.out
	HOLD_LINE=
	read -r -t 30 HOLD_LINE <&6
}
# hold_end: the client's last line in HOLD_LINE (after telling it to go,
# unless it was disconnected by the server already)
hold_end()
{
	if [ "$HOLD_LINE" = connected ]; then
		echo bye >&5 2>/dev/null
		HOLD_LINE=
		read -r -t 30 HOLD_LINE <&6
	fi
	exec 5>&- 6<&-
	wait "$HOLD_PID"
}

# ---- hosts and a volume ------------------------------------------------------
sl_start 1 || abort "sanlock 1"
sl_start 2 || abort "sanlock 2"
start 1 || abort "cowpoold 1 did not start"
must 1 domain create --type file --path "$ROOT" --name exp --master --io-timeout 1 ||
	abort "domain create"
D=$(jq_ .uuid)
# a second daemon on host 1's NBD socket is refused (its API socket is free)
"$COWPOOLD" --host-id 3 --sanlock no --run-dir "$SL_DIR/run3" --socket "$SL_DIR/other.sock" \
	--nbd-socket "$(nbdsock 1)" >other.out 2>&1 </dev/null
expect_eq "a daemon on a live NBD socket: exit" 1 "$?"
if grep -q "another server is listening on the NBD socket $(nbdsock 1)" other.out; then ok; else
	fail "a daemon on a live NBD socket: $(cat other.out)"
fi
# params the table cannot check
cpw 1 rpc volume.unexport '{"domain": "'"$D"'"}'
case $RC:$ERR in 1:*"'domain', 'image' and 'volume' (or 'name') are required"*) ok ;;
*) fail "unexport without image/volume: exit $RC: $ERR $OUT" ;; esac
cpw 1 rpc export.list
expect_eq "export.list with no export" "[]" "$(tr -d ' \n' <<<"$OUT")"
start 2 || abort "cowpoold 2 did not start"
for n in 1 2; do
	for i in $(seq 1 300); do  # bounded by sanlock's join (< 30 s)
		cpw "$n" rpc host.info
		st=$(jq_ .join)
		[ "$st" = joined ] || [ "$st" = failed ] && break
		sleep 0.1
	done
	expect_eq "host $n joined" joined "$st"
done
must 1 spm start || abort "spm start"
I=$(cat /proc/sys/kernel/random/uuid) V=$(cat /proc/sys/kernel/random/uuid)
must 1 volume create "$D" --image "$I" --volume "$V" --size 64M || abort "volume create"
SIZE=$((64 << 20))

# ---- read-write export --------------------------------------------------------
must 1 volume export "$D" "$I" "$V" --rw || abort "volume export"
URI=$(jq_ .uri)
expect_eq "uri" "nbd+unix:///$V?socket=$(nbdsock 1)" "$URI"
expect_eq "export name defaults to the volume" "$V" "$(jq_ .name)"
expect_eq "export rw" true "$(jq_ .rw)"
expect_eq "export size" "$SIZE" "$(jq_ .size)"
expect_eq "socket member" "$(nbdsock 1)" "$(jq_ .socket)"
expect_eq "nbd socket mode" 660 "$(stat -c %a "$(nbdsock 1)")"
expect_eq "nbdinfo --size" "$SIZE" "$(nbdinfo --size "$URI" 2>&1)"
expect_eq "qemu-img info virtual size" "$SIZE" \
	"$(qemu-img info --output=json "$URI" | "$MH_HELPER" json '.virtual-size')"

W=(-c 'write -P 0xab 0 1M' -c 'write -P 0xcd 8M 64k' -c 'write -P 0x11 63M 1M')
run_capture w qemu-io -f raw "${W[@]}" "$URI"
expect_eq "qemu-io writes through the export" 0 "$RC"
qemu-img create -q -f raw ref.raw 64M
qemu-io -f raw "${W[@]}" ref.raw >/dev/null
run_capture r qemu-io -f raw -r -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 8M 64k' \
	-c 'read -P 0 9M 1M' -c 'read -P 0x11 63M 1M' "$URI"
if [ "$RC" -eq 0 ] && ! grep -q "verification failed" r.out; then ok; else
	fail "read back: exit $RC: $(cat r.out r.err)"
fi
run_capture cmp qemu-img compare -f raw -F raw "$URI" ref.raw
expect_eq "qemu-img compare with the reference" 0 "$RC"
# a mismatch is seen (the comparison is real)
qemu-io -f raw -c 'write -P 0x77 100k 4k' ref.raw >/dev/null
run_capture cmp2 qemu-img compare -f raw -F raw "$URI" ref.raw
expect_eq "qemu-img compare sees a difference" 1 "$RC"
qemu-io -f raw -c 'write -P 0xab 100k 4k' ref.raw >/dev/null

WRITTEN=$(((1 << 20) * 2 + (64 << 10)))  # before the hiccup's write
expect_eq "export.list: bytes written" "$WRITTEN" "$(field bytes_written)"
br=$(field bytes_read) ops=$(field ops)
if [ "$br" -ge $((3 << 20)) ] && [ "$ops" -ge 4 ]; then ok; else
	fail "export.list: bytes_read $br ops $ops"
fi
expect_eq "export.list: the uri" "$URI" "$(field uri)"
hold "$(nbdsock 1)" "$V"
expect_eq "held client connected" connected "$HOLD_LINE"
expect_eq "export.list: one client connected" 1 "$(field clients)"
cpw 1 export list
case $OUT in *"$V"*rw*" 1 "*"$URI"*) ok ;; *) fail "export list (human): $OUT" ;; esac

# ---- a domain monitoring hiccup: the record unreadable for a while -------------------
# domain_error N WANT: poll host N's domain.info until last_error is (WANT
# = set) or is not (WANT = clear) reported; the monitor runs every second,
# bounded at 15 s
domain_error()
{
	local i e=
	for i in $(seq 1 150); do
		cpj "$1" domain info "$D"
		e=$(jq_ .last_error)
		if [ "$2" = set ]; then [ "$e" != null ] && [ -n "$e" ] && return 0
		else [ "$e" = null ] && return 0; fi
		sleep 0.1
	done
	echo "last_error: $e" >&2
	return 1
}
mv "$ROOT/$D/dom_md/metadata" "$ROOT/$D/dom_md/metadata.away"
domain_error 1 set || fail "the monitor did not see the missing record"
run_capture hic qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'write -P 0xab 0 4k' "$URI"
if [ "$RC" -eq 0 ] && ! grep -q "verification failed" hic.out; then ok; else
	fail "I/O through the export while the domain record is unreadable: $(cat hic.out hic.err)"
fi
expect_eq "export.list during the hiccup" "$V" "$(field name)"
mv "$ROOT/$D/dom_md/metadata.away" "$ROOT/$D/dom_md/metadata"
domain_error 1 clear || fail "the domain did not recover"
expect_eq "the held client survived the hiccup" 1 "$(field clients)"

# ---- again, names ---------------------------------------------------------------
must 1 volume export "$D" "$I" "$V" --rw
expect_eq "export again: the same export" "$URI" "$(jq_ .uri)"
refused "export again read-only" "*$V is already exported read-write as '$V'*" \
	1 volume export "$D" "$I" "$V"
refused "export again under another name" "*already exported*" \
	1 volume export "$D" "$I" "$V" --rw --name other
refused "bad export name" "*only letters, digits*" 1 volume export "$D" "$I" "$V" --name 'a/b'

# ---- the lease: one writer across hosts -----------------------------------------------
refused "rw export on host 2 while host 1 exports" "*$V*held by host 1*" \
	2 volume export "$D" "$I" "$V" --rw

# ---- structural calls refused while exported -----------------------------------------
refused "volume.delete of an exported volume" "*volume.delete: volume $D/$I/$V is exported read-write as '$V' on host 1*" \
	1 volume delete "$D" "$I" "$V"
refused "image.delete of an exported image" "*image.delete: *exported*" 1 image delete "$D" "$I"
refused "volume.merge in an exported image" "*volume.merge: *exported*" 1 volume merge "$D" "$I" "$V"
refused "image.snapshot of a writable export" "*image.snapshot: *exported*" 1 image snapshot "$D" "$I"
refused "volume.teardown of an exported volume" "*volume.teardown: *exported*" 1 volume teardown "$D" "$I" "$V"

# ---- unexport with a client connected ----------------------------------------------------
refused "unexport while a client is connected" "*has 1 client(s) connected*force*" \
	1 volume unexport "$D" "$I" "$V"
expect_eq "still exported after the refusal" 1 "$(field clients)"
must 1 volume unexport --name "$V" --force
expect_eq "unexport --force: clients disconnected" 1 "$(jq_ .clients_disconnected)"
read -r -t 30 HOLD_LINE <&6
expect_eq "the held client was disconnected" "disconnected by server" "$HOLD_LINE"
hold_end
cpj 1 export list
expect_eq "export.list empty after unexport" "" "$(jq_ '[].name')"
refused "unexport of a volume not exported" "*not exported on this host*" 1 volume unexport "$D" "$I" "$V"
refused "unexport with name and UUIDs" "*not both*" 1 volume unexport "$D" "$I" "$V" --name x

# the lease is free: host 2 exports writable, host 1 cannot; back again
must 2 volume export "$D" "$I" "$V" --rw --name on-host-2
URI2=$(jq_ .uri)
expect_eq "host 2's uri" "nbd+unix:///on-host-2?socket=$(nbdsock 2)" "$URI2"
refused "rw export on host 1 while host 2 exports" "*held by host 2*" 1 volume export "$D" "$I" "$V" --rw
run_capture cmp3 qemu-img compare -f raw -F raw "$URI2" ref.raw
expect_eq "host 2 serves the same data" 0 "$RC"
must 2 volume unexport "$D" "$I" "$V"

# ---- read-only export -------------------------------------------------------------------------
must 1 volume export "$D" "$I" "$V" --name ro
RO=$(jq_ .uri)
expect_eq "read-only export" false "$(jq_ .rw)"
must 2 volume export "$D" "$I" "$V" --name ro2
expect_eq "read-only exports on two hosts coexist" false "$(jq_ .rw)"
run_capture row qemu-io -f raw -c 'write -P 0xee 0 4k' "$RO"
if [ "$RC" -ne 0 ] || grep -qi "error\|denied\|read-only\|not permitted" row.out row.err; then ok; else
	fail "write to a read-only export: exit $RC: $(cat row.out row.err)"
fi
run_capture cmp4 qemu-img compare -f raw -F raw "$RO" ref.raw
expect_eq "read-only export: data unchanged" 0 "$RC"
# a read-only export takes no lease: volume.delete is refused by this host
refused "volume.delete of a read-only export" "*exported read-only as 'ro'*" 1 volume delete "$D" "$I" "$V"
wait_clients 1 0 || fail "clients of the read-only export did not go"
must 1 volume unexport --name ro
must 2 volume unexport --name ro2

# ---- daemon stop with a client connected ------------------------------------------------------
must 1 volume export "$D" "$I" "$V" --rw
hold "$(nbdsock 1)" "$V"
expect_eq "client before the stop" connected "$HOLD_LINE"
stop 1
expect_eq "cowpoold exits 0 with a client connected" 0 "$ST"
read -r -t 30 HOLD_LINE <&6
expect_eq "the client was disconnected at stop" "disconnected by server" "$HOLD_LINE"
hold_end
if grep -q "export $V (volume $D/$I/$V) ended" "$SL_DIR/cowpoold-1.log" &&
	! grep -q "releasing the lease" "$SL_DIR/cowpoold-1.log"; then ok; else
	fail "stop: the export's end is not logged: $(tail -n 8 "$SL_DIR/cowpoold-1.log")"
fi
[ -e "$(nbdsock 1)" ] && fail "the NBD socket is left after stop" || ok
must 2 volume export "$D" "$I" "$V" --rw
expect_eq "host 2 exports writable after host 1 stopped" true "$(jq_ .rw)"
run_capture cmp5 qemu-img compare -f raw -F raw "$(jq_ .uri)" ref.raw
expect_eq "data after the stop" 0 "$RC"

# ---- lease loss: host 2's sanlock daemon dies --------------------------------------------
# the writable export ends at once (its lease is gone): the held client
# is disconnected by the server
hold "$(nbdsock 2)" "$V"
expect_eq "client of host 2's rw export" connected "$HOLD_LINE"
sl_kill 2
read -r -t 60 HOLD_LINE <&6
expect_eq "lease loss disconnects the writable export's client" "disconnected by server" "$HOLD_LINE"
hold_end
cpj 2 export list
expect_eq "lease loss: the writable export is gone" "" "$(jq_ '[].name')"
if grep -q "export $V (volume $V) ended: its volume lease is lost" "$SL_DIR/cowpoold-2.log"; then ok; else
	fail "lease loss not logged: $(tail -n 5 "$SL_DIR/cowpoold-2.log")"
fi
stop 2
expect_eq "cowpoold 2 exits 0" 0 "$ST"
cp_finish
