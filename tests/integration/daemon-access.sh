#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Who may call cowpoold (without sanlock): the socket's mode and group
# (socket_group), a local unprivileged user refused by the peer check
# (SO_PEERCRED) with a clear error and a log line, then allowed by
# allowed_uids / allowed_gids after a SIGHUP reload; the audit line of a
# structural call; SIGHUP keeps serving and reopens log_file after a
# rotation; UTC ISO-8601 timestamps.
#
# Root (useradd, setpriv); skips (77) otherwise.
# Environment: COWPOOL, COWPOOLD (meson).
here=$(dirname "$0")
. "$here/../lib.sh"
cp_init
. "$here/daemon-lib.sh"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (useradd, setpriv)" >&2; exit 77; }
requires useradd userdel groupadd groupdel setpriv

U=cpdaccess$$
G=cpdgrp$$
cleanup()
{
	dl_kill_all
	userdel "$U" 2>/dev/null
	groupdel "$G" 2>/dev/null
	rm -rf -- "$TMP"
}
trap cleanup EXIT
groupadd "$G" || exit 1
useradd -M -N -g "$G" -s /usr/sbin/nologin "$U" || exit 1
UID_U=$(id -u "$U")
GID_G=$(getent group "$G" | cut -d: -f3)

# The user must reach the socket through the directories.
chmod 0755 "$TMP"
mkdir -p "$TMP/run"
SOCK=$TMP/run/cowpoold.sock
LOG=$TMP/cowpoold.log
cat >d.conf <<EOC
host_id = 1
sanlock = no
socket = $SOCK
socket_group = $G
log_file = $LOG
log_level = info
EOC
dl_start "$TMP/stderr.log" -c d.conf ||
	{ fail "cowpoold did not start: $(cat "$TMP/stderr.log" "$LOG")"; cp_finish; }
ok

# ---- the socket -----------------------------------------------------------
expect_eq "socket mode" 660 "$(stat -c %a "$SOCK")"
expect_eq "socket group" "$G" "$(stat -c %G "$SOCK")"
expect_eq "socket owner" root "$(stat -c %U "$SOCK")"

# ---- a user in the socket's group but not allowed -----------------------
as_user() { setpriv --reuid "$UID_U" --regid "$GID_G" --clear-groups "$@"; }
run_capture u1 as_user "$COWPOOL" --socket "$SOCK" rpc host.info
expect_eq "refused user: exit" 1 "$RC"
expect_match "refused user: message" \
	"permission denied: uid $UID_U \\(pid [0-9]+\\) may not call cowpoold" u1.err
expect_match "refused user: log line" \
	"WARN: connection [0-9]+ refused: permission denied: uid $UID_U " "$LOG"
# raw: the error line names EACCES, then the connection is closed
printf '{"jsonrpc":"2.0","method":"host.info","id":1}\n' |
	as_user "$COWPOOL" --socket "$SOCK" rpc --raw >u2.out 2>u2.err
expect_match "refused user: EACCES line" '"errno":"EACCES"' u2.out
if grep -q '"result"' u2.out; then fail "refused user got a result"; else ok; fi

# A user outside the group cannot even connect (mode 0660).
run_capture u3 setpriv --reuid 65534 --regid 65534 --clear-groups \
	"$COWPOOL" --socket "$SOCK" rpc host.info
expect_eq "other user: no connection (exit 3)" 3 "$RC"

# root is always allowed
run_capture r1 cpl rpc host.info
expect_eq "root: exit" 0 "$RC"

# ---- allowed_uids by SIGHUP -------------------------------------------------
echo "allowed_uids = $U" >>d.conf
kill -HUP "$DPID"
wait_for "reload logged" 100 log_has "$LOG" "SIGHUP: configuration reloaded" || fail "no reload line"
run_capture u4 as_user "$COWPOOL" --socket "$SOCK" rpc host.info
expect_eq "allowed uid: exit" 0 "$RC"
expect_match "allowed uid: result" '"host_id": 1' u4.out
# allowed_gids instead
sed -i '/^allowed_uids/d' d.conf
echo "allowed_gids = $GID_G" >>d.conf
: >"$LOG.mark"
kill -HUP "$DPID"
wait_for "second reload" 100 bash -c "[ \$(grep -c 'SIGHUP: configuration reloaded' '$LOG') -ge 2 ]" || fail "no second reload"
run_capture u5 as_user "$COWPOOL" --socket "$SOCK" rpc host.info
expect_eq "allowed gid: exit" 0 "$RC"
# the daemon survived its SIGHUPs
expect_eq "alive after SIGHUP" 0 "$(kill -0 "$DPID" 2>/dev/null; echo $?)"

# ---- audit line -------------------------------------------------------------
run_capture a1 as_user "$COWPOOL" --socket "$SOCK" rpc volume.create \
	'{"domain":"11111111-2222-3333-4444-555555555555","capacity":"1G","description":"audit me"}'
expect_eq "structural call without SPM: exit" 1 "$RC"
expect_match "audit line: uid, pid, method, params" \
	"INFO: audit: uid $UID_U pid [0-9]+ connection [0-9]+: volume.create \\{domain=\"11111111-2222-3333-4444-555555555555\", capacity=\"1G\", description=\"audit me\"\\}" \
	"$LOG"
if grep -q "audit: .*host.info" "$LOG"; then fail "a read was audited"; else ok; fi

# ---- log rotation ---------------------------------------------------------
mv "$LOG" "$LOG.1"
kill -HUP "$DPID"
wait_for "new log file" 100 test -s "$LOG" || fail "SIGHUP did not reopen $LOG"
expect_match "reopen line in the new file" "SIGHUP: log file $LOG reopened" "$LOG"
run_capture r2 cpl rpc host.info
expect_eq "serves after the rotation" 0 "$RC"
cpl rpc volume.create '{"domain":"11111111-2222-3333-4444-555555555555","capacity":1,"description":"rotated"}' >/dev/null 2>&1
expect_match "lines after the rotation go to the new file" 'description="rotated"' "$LOG"
if grep -q 'description="rotated"' "$LOG.1"; then
	fail "the old file got lines after the rotation"; else ok; fi
expect_match "timestamps: UTC ISO-8601" \
	'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z cowpoold\[[0-9]+\] INFO: ' "$LOG"

# ---- a bad file at SIGHUP keeps the running configuration -------------------
echo "max_connections = 0" >>d.conf
kill -HUP "$DPID"
wait_for "refused reload" 100 log_has "$LOG" "the running one stays" || fail "no refused-reload line"
expect_match "refused reload names the key" "invalid value '0' for max_connections" "$LOG"
run_capture u6 as_user "$COWPOOL" --socket "$SOCK" rpc host.info
expect_eq "still allowed after a bad reload" 0 "$RC"

dl_stop TERM
expect_eq "clean stop" 0 "$DSTATUS"
if [ -e "$SOCK" ]; then fail "socket left after stop"; else ok; fi
cp_finish
