#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# docs/admin.md's walkthroughs, run command by command as the doc has
# them: the blocks marked "<!-- walkthrough file -->" are extracted in
# order and run as one script, with only these substitutions (the doc's
# header says so): /srv/cowpool and /etc/cowpool under the test's
# directory, `systemctl start|stop` of sanlock and cowpoold done by the
# test (a sanlock daemon of its own, cowpoold with the doc's config file),
# and io_timeout 1 (monitor_interval 1) added to the doc's configuration.
# Then the results are checked: the disk holds what the client wrote, the
# image checks clean, the daemon stopped cleanly.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"
: "${COWPOOL:?}" "${COWPOOLD:?}"
sl_requires
requires qemu-io qemu-img
sl_init
TMP=$SL_DIR
cd "$TMP" || exit 1
. "$here/daemon-lib.sh"
sl_on_exit dl_kill_all
DOC=$here/../../docs/admin.md

# the blocks, in order
awk '/^<!-- walkthrough file -->$/ { want = 1; next }
	want && /^```/ { if (inb) { inb = 0; want = 0 } else inb = 1; next }
	inb { print }' "$DOC" >walk.sh
[ "$(grep -c . walk.sh)" -ge 15 ] && ok ||
	{ fail "fewer walkthrough lines than expected in docs/admin.md"; cp_finish; }
for c in "systemctl start sanlock" "systemctl start cowpoold" \
	"systemctl stop cowpoold" "cowpool spm start --wait" \
	"cowpool volume export"; do
	grep -qF "$c" walk.sh && ok || fail "the walkthrough no longer runs '$c'"
done

# the substitutions
sed -i -e "s|/srv/cowpool|$TMP/srv/cowpool|g" -e "s|/etc/cowpool|$TMP/etc/cowpool|g" \
	-e 's/^host_id = 1$/host_id = 1\nio_timeout = 1\nmonitor_interval = 1/' \
	-e 's/^systemctl start sanlock$/wt_start_sanlock/' \
	-e 's/^systemctl start cowpoold$/wt_start_cowpoold/' \
	-e 's/^systemctl stop cowpoold$/wt_stop_cowpoold/' walk.sh
if grep -n "systemctl" walk.sh; then
	fail "a systemctl command the test does not stand in for"
fi

wt_start_sanlock()
{
	sl_start 1 || return 1
	SANLOCK_RUN_DIR=$(sl_rundir 1)
	export SANLOCK_RUN_DIR
}
wt_start_cowpoold()
{
	dl_start "$TMP/cowpoold.err" -c "$TMP/etc/cowpool/cowpoold.conf" \
		--log-file "$TMP/cowpoold.log"
}
wt_stop_cowpoold() { dl_stop TERM; [ "$DSTATUS" = 0 ]; }
cowpool() { "$COWPOOL" "$@"; }

# run it: every command must succeed
set -o pipefail
if (set -e; . ./walk.sh; declare -p DOM IMG VOL >vars.sh) >walk.out 2>walk.err; then
	ok
else
	fail "the walkthrough failed: $(tail -5 walk.err) $(tail -5 cowpoold.log 2>/dev/null)"
	cp_finish
fi
set +o pipefail
. ./vars.sh
grep -q "^SPM: this host" walk.out && ok || fail "spm status did not say SPM: $(cat walk.out)"
grep -q "data1" walk.out && ok || fail "domain list does not show data1"
V=$TMP/srv/cowpool/nfs1/$DOM/images/$IMG/$VOL
[ -f "$V" ] && ok || fail "no volume file $V"
"$COWPOOL" io -r -c 'read -P 0x55 0 1M' "$V" >read.out 2>&1 && ok ||
	fail "the volume does not hold the client's data: $(cat read.out)"
qemu-img check -q "$V" && ok || fail "qemu-img check of the volume"
# the stop left the lockspace
"$SANLOCK" client status 2>/dev/null | grep -q "^s $DOM:" &&
	fail "the lockspace is still joined after the stop" || ok
cp_finish
