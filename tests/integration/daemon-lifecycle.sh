#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpoold's lifecycle with a real sanlock daemon (tests/sanlock/harness.sh)
# and a file master domain on a small ext4 file system of its own:
#   - a second cowpoold with the same host id is refused at start (exit 1):
#     with the same run_dir by the host id's lock file (naming the host id
#     and the first's pid), with a run_dir of its own because the pool's
#     lockspace is already joined with that host id; either way the first
#     keeps serving, SPM, with its lockspace joined;
#   - the monitor logs one warning when the domain's record cannot be read
#     (dom_md/metadata renamed away) and one "recovered" line when it is
#     back, however many passes see either state;
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
# On any exit (a failed check included): thaw (a frozen file system
# blocks the killed daemon and the umount), kill the daemons, then the
# sanlock daemon (a joined lockspace keeps its ids file open: the file
# system would be busy), unmount, detach the loop device.
fs_cleanup()
{
	mountpoint -q "$MNT" && fsfreeze -u "$MNT" 2>/dev/null
	dl_kill_all
	sl_kill 1 KILL
	if mountpoint -q "$MNT"; then
		umount "$MNT" || umount -l "$MNT"
	fi
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

ls_joined() { "$SANLOCK" client status 2>/dev/null | grep -q "^s $1:1:"; }

dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "cowpoold did not start"
APID=$DPID
cpj domain create --type file --path "$MNT/root" --name lc --master --io-timeout 3 ||
	abort "domain create: $(cat cpj.err)"
DOM=$(jq_ .uuid)
spm_start || abort "spm start: $(cat cpj.err)"
ok

# ---- a second daemon with the same host id --------------------------------
# (a) the same run_dir ($COWPOOL_RUN_DIR), another socket: the lock file
run_capture second timeout 30 "$COWPOOLD" --host-id 1 --socket "$TMP/other/cp.sock" \
	--file-root "$MNT/root" --log-level debug
expect_eq "second daemon, same host id and run_dir: exit" 1 "$RC"
expect_match "second daemon: message" \
	"another cowpoold \\(pid $APID\\) runs with host id 1 \\(lock file $COWPOOL_RUN_DIR/host-1.lock\\): refusing to start" second.err
if [ -e "$TMP/other/cp.sock" ]; then fail "the second daemon made a socket"; else ok; fi
# (b) a run_dir of its own too: the pool's lockspace is joined already.
# The first daemon holds no lease meanwhile (not SPM): sanlock would
# refuse to remove a lockspace with leases held, hiding the harm.
cpj spm stop
expect_eq "spm stop before the second daemon" 0 "$RC"
run_capture third timeout 30 "$COWPOOLD" --host-id 1 --socket "$TMP/other/cp.sock" \
	--run-dir "$TMP/other" --file-root "$MNT/root" --log-level debug
expect_eq "second daemon, own run_dir: exit" 1 "$RC"
expect_match "second daemon, own run_dir: message" \
	"lockspace $DOM is already joined with host id 1 by another process of this host .*refusing to start" third.err
if [ -e "$TMP/other/cp.sock" ]; then fail "the refused daemon left its socket"; else ok; fi
if ls_joined "$DOM"; then ok; else fail "the refused daemon left the first one's lockspace"; fi
spm_start || abort "spm start again: $(cat cpj.err)"
cpj spm status
expect_eq "first daemon still SPM" true "$(jq_ .self)"
if ls_joined "$DOM"; then ok; else fail "the first daemon's lockspace was left"; fi
cpj volume create "$DOM" --size 1M
expect_eq "first daemon serves structural calls" 0 "$RC"

# ---- the monitor: one warning, one recovery line ----------------------------
MD=$MNT/root/$DOM/dom_md/metadata
WARN_RE="WARN: domain $DOM \\(lc\\): "
RECOV_RE="INFO: domain $DOM \\(lc\\): recovered: reachable again"
checked() { cpj domain info "$DOM"; jq_ .checked; }
# passes N: the monitor checked the domain N more times (whole seconds,
# one pass a second: monitor_interval 1)
passes() { [ "$(checked)" -ge $(($1 + $2)) ] 2>/dev/null; }
mv "$MD" "$MD.away" || abort "cannot move the domain record away"
wait_for "the monitor's warning" 300 log_has "$LOG" "$WARN_RE" ||
	fail "no warning when the domain record is unreadable"
t=$(checked)
wait_for "two more passes while unreadable" 300 passes "$t" 2 || fail "the monitor stopped"
mv "$MD.away" "$MD" || abort "cannot put the domain record back"
wait_for "the recovery line" 300 log_has "$LOG" "$RECOV_RE" ||
	fail "no recovered line when the domain record is back"
t=$(checked)
wait_for "two more passes after the recovery" 300 passes "$t" 2 || fail "the monitor stopped"
expect_eq "warnings while the record was unreadable" 1 "$(grep -Ec -- "$WARN_RE" "$LOG")"
expect_eq "recovered lines" 1 "$(grep -Ec -- "$RECOV_RE" "$LOG")"
wl=$(grep -En -- "$WARN_RE" "$LOG" | cut -d: -f1)
rl=$(grep -En -- "$RECOV_RE" "$LOG" | cut -d: -f1)
if [ "${wl:-0}" -lt "${rl:-0}" ]; then ok; else fail "recovered line (line $rl) not after the warning (line $wl)"; fi
expect_match "UTC ISO-8601 timestamps" "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z cowpoold\\[[0-9]+\\] $RECOV_RE" "$LOG"

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
