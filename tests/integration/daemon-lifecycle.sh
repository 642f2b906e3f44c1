#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpoold's lifecycle with a real sanlock daemon (tests/sanlock/harness.sh)
# and a file master domain on a small ext4 file system of its own:
#   - a second cowpoold with the same host id is refused at start (exit 1,
#     naming the first's pid) and the first keeps serving, SPM, with its
#     lockspace joined;
#   - task.wait callers get ESHUTDOWN when the daemon stops while a task
#     runs (the task is held by freezing the file system: fsfreeze);
#   - a clean stop after `spm start` leaves no lockspace joined in sanlock
#     (`sanlock client status`);
#   - task recovery at `spm start` is logged after a kill at a crash point.
# Root; skips (77) without sanlock, mkfs.ext4, mount or fsfreeze.
#
# Environment: COWPOOL, COWPOOLD, MH_HELPER, MEMLOCK_SHIM (meson).
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"
: "${COWPOOL:?}" "${COWPOOLD:?}" "${MH_HELPER:?}"
sl_requires
export PATH="$PATH:/usr/sbin:/sbin"
requires mkfs.ext4 mount umount losetup fsfreeze
sl_init
TMP=$SL_DIR
cd "$TMP" || exit 1
. "$here/daemon-lib.sh"

MNT=$TMP/mnt
LOOP=
FROZEN=0
fs_cleanup()
{
	[ "$FROZEN" = 1 ] && fsfreeze -u "$MNT"
	dl_kill_all
	mountpoint -q "$MNT" && umount "$MNT"
	[ -n "$LOOP" ] && losetup -d "$LOOP"
}
sl_on_exit fs_cleanup
truncate -s 256M fs.img
mkfs.ext4 -q -F fs.img || exit 1
LOOP=$(losetup -f --show fs.img) || exit 1
mkdir -p "$MNT"
mount "$LOOP" "$MNT" || { echo "SKIP: cannot mount an ext4 loop device" >&2; exit 77; }
mkdir -p "$MNT/root"

sl_start 1 || { fail "cannot start sanlock"; cp_finish; }
export SANLOCK_RUN_DIR=$(sl_rundir 1)
SOCK=$TMP/run/cp1.sock
LOG=$TMP/cowpoold.log
D_ARGS=(--host-id 1 --socket "$SOCK" --file-root "$MNT/root" --monitor-interval 1
	--log-level debug --log-file "$LOG")

abort() { fail "$*"; tail -n 20 "$LOG" >&2; cp_finish; }
cpj() { OUT=$("$COWPOOL" --socket "$SOCK" "$@" --output=json 2>cpj.err); RC=$?; }
jq_() { printf '%s' "$OUT" | "$MH_HELPER" json "$1"; }
spm_start()
{
	local i
	for i in $(seq 400); do
		cpj spm start
		[ "$RC" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}
ls_joined() { "$SANLOCK" client status 2>/dev/null | grep -q "^s $1:1:"; }

dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "cowpoold did not start"
APID=$DPID
cpj domain create --type file --path "$MNT/root" --name lc --master --io-timeout 3 ||
	abort "domain create: $(cat cpj.err)"
DOM=$(jq_ .uuid)
spm_start || abort "spm start: $(cat cpj.err)"
ok

# ---- a second daemon with the same host id --------------------------------
run_capture second "$COWPOOLD" --host-id 1 --socket "$TMP/run/other.sock" \
	--file-root "$MNT/root" --log-level debug
expect_eq "second daemon, same host id: exit" 1 "$RC"
expect_match "second daemon: message" \
	"another cowpoold \\(pid $APID\\) runs with host id 1 .*refusing to start" second.err
if [ -e "$TMP/run/other.sock" ]; then fail "the second daemon made a socket"; else ok; fi
cpj spm status
expect_eq "first daemon still SPM" true "$(jq_ .self)"
if ls_joined "$DOM"; then ok; else fail "the first daemon's lockspace was left"; fi
cpj volume create "$DOM" --size 1M
expect_eq "first daemon serves structural calls" 0 "$RC"

# ---- task.wait gets ESHUTDOWN ---------------------------------------------
sync
fsfreeze -f "$MNT" && FROZEN=1
cpj volume create "$DOM" --size 1M --async
TASK=$(jq_ .task)
[ -n "$TASK" ] || abort "no task: $OUT $(cat cpj.err)"
# (the synchronous creates above called task.wait too)
nwait=$(grep -c "DEBUG: call task.wait" "$LOG")
printf '{"jsonrpc":"2.0","method":"task.wait","params":{"task":"%s"},"id":7}\n' "$TASK" |
	"$COWPOOL" --socket "$SOCK" rpc --raw >tw.out 2>tw.err &
TWPID=$!
waiting() { [ "$(grep -c "DEBUG: call task.wait" "$LOG")" -gt "$nwait" ]; }
wait_for "task.wait called" 300 waiting || fail "task.wait not seen"
kill -TERM "$APID"
wait_for "task.wait answered" 300 bash -c "! kill -0 $TWPID 2>/dev/null" ||
	fail "task.wait got no answer while the daemon stops"
wait "$TWPID"
expect_match "task.wait: ESHUTDOWN" '"errno":"ESHUTDOWN".*"id":7' tw.out
expect_match "task.wait: message" "task $TASK: cowpoold is shutting down" tw.out
fsfreeze -u "$MNT" && FROZEN=0

# ---- a clean stop leaves no lockspace ------------------------------------
# (the stop under way: the task ends once the file system thaws)
wait "$APID"
expect_eq "clean stop: exit" 0 "$?"
expect_match "the running task finished before the stop" "task $TASK \(volume.create\) done" "$LOG"
if ls_joined "$DOM"; then
	fail "lockspace $DOM still joined after a clean stop: $("$SANLOCK" client status)"
else ok; fi

# ---- task recovery at spm start is logged ----------------------------------
dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "restart"
spm_start || abort "spm start after restart"
dl_stop TERM
CP_FAULT_SPM_KILL_AT=2 dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "restart with a crash point"
spm_start || abort "spm start (crash point run)"
cpj volume create "$DOM" --size 1M --async
wait "$DPID" 2>/dev/null
expect_eq "killed at the crash point" 137 "$?"
dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "restart after the crash"
spm_start || abort "spm start after the crash"
expect_match "recovery logged: the task" "INFO: recovery: task [0-9a-f-]{36} \\(create_volume, step [0-9]+, domain $DOM\\) (rolled|done|aborted)" "$LOG"
expect_match "recovery logged: the count" "INFO: recovery: 1 unfinished task\\(s\\) found at spm start" "$LOG"
dl_stop TERM
expect_eq "last stop: exit" 0 "$DSTATUS"
if ls_joined "$DOM"; then fail "lockspace joined after the last stop"; else ok; fi
cp_finish
