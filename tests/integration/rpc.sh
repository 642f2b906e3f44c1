#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpoold's JSON-RPC layer and the daemon verbs of the cowpool CLI, with
# a daemon started here WITHOUT sanlock (sanlock = no): malformed requests
# (invalid JSON, bad envelopes, unknown methods, missing/unknown/mistyped
# params, bad UUIDs and sizes, batches, notifications, an oversized
# request), concurrent clients, the configuration file and flags, the
# CLI's messages and exit codes (0 ok, 1 failed, 2 usage, 3 no daemon),
# SIGTERM.  The SPM flows with sanlock are tested elsewhere (multi-host).
#
# Environment: COWPOOL, COWPOOLD (set by meson).
. "$(dirname "$0")/../lib.sh"

: "${COWPOOLD:?COWPOOLD must point to the cowpoold binary}"
cp_init

DPID=
cleanup()
{
	if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
		kill -KILL "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
	fi
	rm -rf -- "$TMP"
}
trap cleanup EXIT

SOCK=$TMP/run/cowpoold.sock
ZERO=00000000-0000-0000-0000-000000000000
mkdir -p "$TMP/root"

# start_daemon ARGS...: start cowpoold in the background and wait until it
# says "ready" on fd 3 (no sleeps; EOF if it dies first).  Sets DPID.
start_daemon()
{
	rm -f "$TMP/ready"
	mkfifo "$TMP/ready"
	"$COWPOOLD" --ready-fd 3 "$@" 3>"$TMP/ready" 2>>"$TMP/daemon.log" &
	DPID=$!
	local line=
	read -r -t 60 line <"$TMP/ready"
	[ "$line" = ready ]
}

cpl() { "$COWPOOL" --socket "$SOCK" "$@"; }

# raw TEXT: send TEXT as it is, answers to raw.out
raw()
{
	printf '%s' "$1" | cpl rpc --raw >raw.out 2>raw.err
}

# expect_match WHAT REGEX FILE
expect_match()
{
	if grep -Eq -- "$2" "$3"; then ok; else
		fail "$1: /$2/ not in $3: $(head -c 600 "$3")"
	fi
}

# ---- no daemon: exit 3 --------------------------------------------------
run_capture nod "$COWPOOL" --socket "$TMP/none.sock" spm status
expect_eq "no daemon: exit" 3 "$RC"
expect_match "no daemon: message" \
	"^cowpool: cannot connect to cowpoold at $TMP/none.sock: " nod.err

# ---- configuration -------------------------------------------------------
cat >bad.conf <<EOF
# comment
host_id = 1
bogus = 2
EOF
run_capture conf1 "$COWPOOLD" -c bad.conf --sanlock no --socket "$SOCK"
expect_eq "unknown key: exit" 2 "$RC"
expect_match "unknown key names file:line" "bad.conf:3: unknown key 'bogus'" \
	conf1.err
run_capture conf2 "$COWPOOLD" --sanlock no --socket "$SOCK"
expect_eq "no host id: exit" 2 "$RC"
expect_match "no host id: message" "host_id is required" conf2.err
run_capture conf3 "$COWPOOLD" --host-id 2001 --sanlock no
expect_eq "host id range: exit" 2 "$RC"
expect_match "host id range: message" \
	"invalid value '2001' for host_id \\(expected 1..2000\\)" conf3.err
run_capture conf4 "$COWPOOLD" --host-id 1 --bogus
expect_eq "bad flag: exit" 2 "$RC"

cat >good.conf <<EOF
# cowpoold test configuration
host_id = 7
socket = /nonexistent/overridden.sock
file_root = $TMP/root
monitor_interval = 1
sanlock = no
log_level = debug
EOF
# The flag overrides the file's socket; host_id comes from the file.
start_daemon -c good.conf --socket "$SOCK" ||
	{ fail "cowpoold did not start: $(cat "$TMP/daemon.log")"; cp_finish; }
ok

run_capture hi cpl rpc host.info
expect_eq "host.info: exit" 0 "$RC"
expect_match "host.info: host id from the file" '"host_id": 7' hi.out
expect_match "host.info: socket from the flag" "\"socket\": \"$SOCK\"" hi.out

# A second daemon on the same socket is refused.
run_capture second "$COWPOOLD" --host-id 8 --sanlock no --socket "$SOCK"
expect_eq "second daemon: exit" 1 "$RC"
expect_match "second daemon: message" "another cowpoold is listening" \
	second.err

# ---- JSON-RPC envelope ----------------------------------------------------
raw 'this is not json
'
expect_match "parse error" '"code":-32700,"message":"parse error: JSON' raw.out
expect_match "parse error: id null" '"id":null' raw.out

raw '{"jsonrpc":"2.0","method":"host.info","id":1,}
'
expect_match "trailing comma: parse error" '"code":-32700' raw.out

raw '{"method":"host.info","id":1}
'
expect_match "no jsonrpc member" \
	"\"code\":-32600,\"message\":\"invalid request: 'jsonrpc' must be" raw.out
raw '{"jsonrpc":"2.0","id":1}
'
expect_match "no method" "\"code\":-32600,\"message\":\"invalid request: 'method' is missing\"" raw.out
raw '{"jsonrpc":"2.0","method":5,"id":1}
'
expect_match "method not a string" "'method' must be a string" raw.out
raw '{"jsonrpc":"2.0","method":"host.info","id":{}}
'
expect_match "id an object" "'id' must be a string, a number or null" raw.out
raw '{"jsonrpc":"2.0","method":"host.info","id":1,"extra":1}
'
expect_match "unknown member" "unknown member 'extra'" raw.out
raw '"just a string"
'
expect_match "not an object" '"code":-32600.*not string' raw.out

raw '{"jsonrpc":"2.0","method":"no.such","id":"abc"}
'
expect_match "unknown method" \
	"\"code\":-32601,\"message\":\"method not found: 'no.such'\",\"data\":\\{\"method\":\"no.such\"\\}\\},\"id\":\"abc\"" \
	raw.out

raw '{"jsonrpc":"2.0","method":"domain.info","params":[1],"id":1}
'
expect_match "params by position" \
	"\"code\":-32602,\"message\":\"invalid params: 'params' must be an object" \
	raw.out

# ---- params ---------------------------------------------------------------
raw '{"jsonrpc":"2.0","method":"domain.info","params":{},"id":1}
'
expect_match "missing param" \
	"\"code\":-32602,\"message\":\"invalid params: 'domain' is missing\",\"data\":\\{\"param\":\"domain\"\\}" \
	raw.out
raw '{"jsonrpc":"2.0","method":"domain.info","params":{"domain":"'$ZERO'","bogus":1},"id":1}
'
expect_match "unknown param" \
	"invalid params: unknown param 'bogus' \\(domain.info takes domain\\)" raw.out
raw '{"jsonrpc":"2.0","method":"domain.info","params":{"domain":42},"id":1}
'
expect_match "wrong type" "'domain' must be a UUID string, not number" raw.out
raw '{"jsonrpc":"2.0","method":"domain.info","params":{"domain":"not-a-uuid"},"id":1}
'
expect_match "bad UUID" "'domain': bad UUID 'not-a-uuid' \\(expected 8-4-4-4-12 hex digits\\)" raw.out
raw '{"jsonrpc":"2.0","method":"volume.create","params":{"domain":"'$ZERO'","capacity":"1Q"},"id":1}
'
expect_match "bad size" "'capacity': invalid size '1Q'" raw.out
raw '{"jsonrpc":"2.0","method":"volume.create","params":{"domain":"'$ZERO'","capacity":-1},"id":1}
'
expect_match "negative size" "'capacity': invalid size -1" raw.out
raw '{"jsonrpc":"2.0","method":"volume.create","params":{"domain":"'$ZERO'","capacity":"1G","format":"qcow2"},"id":1}
'
expect_match "bad enum" "'format' must be one of \\\\\"cow\\\\\", \\\\\"raw\\\\\", not 'qcow2'" raw.out
raw '{"jsonrpc":"2.0","method":"spm.stop","params":{"force":"yes"},"id":1}
'
expect_match "bool type" "'force' must be a boolean, not string" raw.out
raw '{"jsonrpc":"2.0","method":"host.info","params":{"x":1},"id":1}
'
expect_match "no params taken" "unknown param 'x' \\(host.info takes no params\\)" raw.out

# application errors: code 1000 + errno, data {errno, errno_value}
raw '{"jsonrpc":"2.0","method":"domain.info","params":{"domain":"'$ZERO'"},"id":9}
'
expect_match "unknown domain: ENOENT" \
	'"code":1002,"message":"domain 0+-0+-0+-0+-0+: [^"]*","data":\{"errno":"ENOENT","errno_value":2\}\},"id":9' \
	raw.out
raw '{"jsonrpc":"2.0","method":"volume.create","params":{"domain":"'$ZERO'","capacity":"1G"},"id":10}
'
expect_match "structural call off SPM: EPERM" \
	'"code":1001,"message":"host 7 is not the SPM[^"]*","data":\{"errno":"EPERM","errno_value":1\}' \
	raw.out

# ---- batches and notifications ---------------------------------------------
raw '{"jsonrpc":"2.0","method":"host.info"}
'
expect_eq "notification: no answer" "" "$(cat raw.out)"
raw '[{"jsonrpc":"2.0","method":"host.info"},{"jsonrpc":"2.0","method":"nope"}]
'
expect_eq "batch of notifications: no answer" "" "$(cat raw.out)"
raw '[]
'
expect_match "empty batch" '"code":-32600,"message":"invalid request: empty batch"' raw.out
raw '[{"jsonrpc":"2.0","method":"host.info","id":1},{"jsonrpc":"2.0","method":"host.info"},1,{"jsonrpc":"2.0","method":"nope","id":"x"}]
'
expect_eq "batch: one line" 1 "$(wc -l <raw.out)"
expect_match "batch: result for id 1" '^\[\{"jsonrpc":"2.0","result":\{"host_id":7' raw.out
expect_match "batch: invalid element" '"code":-32600,"message":"invalid request: expected an object, not number"' raw.out
expect_match "batch: unknown method" '"code":-32601.*"id":"x"\}\]$' raw.out
expect_eq "batch: three answers" 3 "$(grep -o '"jsonrpc"' raw.out | wc -l)"

# several requests on one connection, answered in order; blank lines skipped
raw '{"jsonrpc":"2.0","method":"spm.status","id":1}

{"jsonrpc":"2.0","method":"host.info","id":2}
{"jsonrpc":"2.0","method":"task.list","id":3}
'
expect_eq "pipelined: three answers" 3 "$(wc -l <raw.out)"
expect_eq "pipelined: in order" '1 2 3' \
	"$(sed 's/.*"id":\([0-9]*\)}$/\1/' raw.out | tr '\n' ' ' | sed 's/ $//')"
# a request without '\n' before EOF is answered too
raw '{"jsonrpc":"2.0","method":"host.info","id":4}'
expect_match "no newline at EOF" '"id":4' raw.out

# ---- oversized request ------------------------------------------------------
{
	printf '{"jsonrpc":"2.0","method":"host.info","params":{"x":"'
	head -c 1100000 /dev/zero | tr '\0' 'a'
	printf '"},"id":1}\n{"jsonrpc":"2.0","method":"host.info","id":2}\n'
} >big.req
cpl rpc --raw <big.req >raw.out 2>raw.err
expect_match "oversized: -32600" \
	'"code":-32600,"message":"invalid request: request larger than 1048576 bytes"' \
	raw.out
expect_eq "oversized: connection closed (no answer to id 2)" 1 \
	"$(wc -l <raw.out)"
# just under the limit is parsed (and refused for its unknown param)
{
	printf '{"jsonrpc":"2.0","method":"host.info","params":{"x":"'
	head -c 1000000 /dev/zero | tr '\0' 'a'
	printf '"},"id":1}\n'
} >big2.req
cpl rpc --raw <big2.req >raw.out 2>raw.err
expect_match "1 MB request: parsed" "unknown param 'x'" raw.out

# ---- concurrent clients -------------------------------------------------------
pids=()
for i in 1 2 3 4 5 6 7 8; do
	cpl rpc host.info >"conc$i.out" 2>&1 &
	pids+=($!)
done
# one connection left open without a request must not block the others
exec 4> >(cpl rpc --raw >/dev/null 2>&1)
for i in "${!pids[@]}"; do
	wait "${pids[$i]}"
	expect_eq "concurrent client $((i + 1)): exit" 0 "$?"
done
expect_eq "concurrent clients: all answered" 8 \
	"$(cat conc*.out | grep -c '"host_id": 7')"
exec 4>&-

# ---- CLI ----------------------------------------------------------------------
run_capture c1 cpl spm status --output=json
expect_eq "cli spm status off sanlock: exit" 1 "$RC"
expect_match "cli error line" '^cowpool: ' c1.err
run_capture c2 cpl volume create "$ZERO" --size 1G
expect_eq "cli structural call off SPM: exit" 1 "$RC"
expect_match "cli names the SPM problem" "^cowpool: host 7 is not the SPM" c2.err
run_capture c3 cpl volume create "$ZERO"
expect_eq "cli missing --size: exit" 2 "$RC"
expect_match "cli missing --size: message" "size is required" c3.err
run_capture c4 cpl domain bogus
expect_eq "cli unknown subcommand: exit" 2 "$RC"
expect_match "cli unknown subcommand: message" \
	"domain: unknown subcommand 'bogus'" c4.err
run_capture c5 cpl image info "$ZERO"
expect_eq "cli missing argument: exit" 2 "$RC"
run_capture c6 cpl task get "$ZERO" --frobnicate
expect_eq "cli bad option: exit" 2 "$RC"
run_capture c7 cpl domain info not-a-uuid
expect_eq "cli bad UUID (daemon says): exit" 1 "$RC"
expect_match "cli bad UUID: message" "bad UUID 'not-a-uuid'" c7.err
run_capture c8 cpl domain info "$ZERO"
expect_eq "cli unknown domain: exit" 1 "$RC"
run_capture c9 cpl domain list --output=json
expect_eq "cli domain list json: exit" 0 "$RC"
expect_eq "cli domain list json: empty" "[]" "$(cat c9.out)"
run_capture c10 cpl task get "$ZERO"
expect_eq "cli unknown task: exit" 1 "$RC"
expect_match "cli unknown task: message" "task $ZERO: not found" c10.err
run_capture c11 cpl volume create "$ZERO" --size 1Q
expect_eq "cli bad size: exit" 2 "$RC"
run_capture c12 cpl domain create --type file --name x
expect_eq "cli file domain without --path: exit" 2 "$RC"
run_capture c13 cpl spm --help
expect_eq "cli verb help: exit" 0 "$RC"
expect_match "cli verb help: lists subcommands" "spm status" c13.out
run_capture c14 "$COWPOOL" --socket
expect_eq "cli --socket without value: exit" 2 "$RC"
run_capture c15 cpl rpc task.list '{'
expect_eq "cli rpc bad params JSON: exit" 2 "$RC"
# The daemon verbs' options come from api/methods.def: usage, checks.
run_capture c16 cpl volume create --help
expect_eq "cli subcommand help: exit" 0 "$RC"
expect_match "cli help: options from the table" \
	"^usage: cowpool \\[--socket PATH\\] volume create DOMAIN .*\\[--initial-size SIZE\\]" c16.out
expect_match "cli help: doc lines from the table" "^  --prealloc +allocation = preallocated" c16.out
run_capture c17 cpl template create "$ZERO" "$ZERO" --format qcow2
expect_eq "cli enum checked from the table: exit" 2 "$RC"
expect_match "cli enum: message" "template create: --format must be cow or raw" c17.err
run_capture c18 cpl task wait "$ZERO" --timeout soon
expect_eq "cli number option: exit" 2 "$RC"
expect_match "cli number option: message" "invalid timeout 'soon': expected seconds" c18.err
run_capture c19 cpl domain create --type file --path "$TMP/root" --name x --io-timeout 1x
expect_eq "cli integer option: exit" 2 "$RC"
expect_match "cli integer option: message" "invalid io timeout '1x': expected a number" c19.err

# domain inspect: no daemon involved
run_capture i1 "$COWPOOL" domain inspect --path "$TMP/root" "$ZERO"
expect_eq "inspect missing domain: exit" 1 "$RC"
expect_match "inspect missing domain: message" "^cowpool: domain $ZERO" i1.err
run_capture i2 "$COWPOOL" domain inspect "$ZERO"
expect_eq "inspect without --path/--lvm-device: exit" 2 "$RC"

# ---- SIGTERM ------------------------------------------------------------------
kill -TERM "$DPID"
wait "$DPID"
expect_eq "SIGTERM: exit 0" 0 "$?"
DPID=
[ -e "$SOCK" ] && fail "socket left behind after SIGTERM" || ok
expect_match "shutdown logged" "TERM received: shutting down" "$TMP/daemon.log"
run_capture gone cpl rpc host.info
expect_eq "after shutdown: exit 3" 3 "$RC"

cp_finish
