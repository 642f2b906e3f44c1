#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/harden.sh SCENARIO - what a file domain may touch and
# how its failures end: tests/sanlock/harden_test against one sanlock
# daemon (tests/sanlock/harness.sh), one scenario per run (meson runs one
# test per scenario: harden-perms, -confine, -merge, -full, -journal).
#
#   perms    domain and volumes made with a disk group: modes 0660/0750 and
#            the group checked by harden_test; here a throw-away local user
#            (useradd, removed on exit) cannot read the volume, the .meta
#            or the task journal, and the same user in the disk group can
#   confine  foreign/relative/non-canonical domain paths, links in a domain,
#            a backing name that is no volume: refused, nothing written
#            outside (harden_test checks bytes and mtime)
#   merge    the root is a 64 MiB tmpfs: ENOSPC half-way through a merge
#   full     the root is a 64 MiB tmpfs filled to the last block: deletes
#   journal  1000 create + delete rounds
#
# Environment (set by meson): HARDEN_TEST, MEMLOCK_SHIM.  Skips (77) when
# sanlock is missing, not run as root, or (perms) useradd/setpriv missing.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"

scenario=${1:?usage: harden.sh perms|confine|merge|full|journal}
sl_requires
export PATH="$PATH:/usr/sbin:/sbin"
: "${HARDEN_TEST:?HARDEN_TEST must point to harden_test}"
if [ "$scenario" = perms ]; then
	for c in useradd userdel groupadd groupdel setpriv; do
		command -v "$c" >/dev/null 2>&1 ||
			{ echo "SKIP: $c is not installed" >&2; exit 77; }
	done
fi
sl_init

ROOT=$SL_DIR/root ROOT2=$SL_DIR/root2 MOUNTED= USER_MADE= GROUP_MADE=
mkdir -p "$ROOT" "$ROOT2"
cleanup()
{
	[ -n "$MOUNTED" ] && umount -l "$ROOT"
	[ -n "$USER_MADE" ] && userdel "$USER_MADE"
	[ -n "$GROUP_MADE" ] && groupdel "$GROUP_MADE"
}
sl_on_exit cleanup

case $scenario in
merge|full)
	mount -t tmpfs -o size=64m,mode=0755 cowpool-harden "$ROOT" ||
		{ echo "FAIL: cannot mount a tmpfs on $ROOT" >&2; exit 1; }
	MOUNTED=1
	;;
esac

args=(--root "$ROOT" --root2 "$ROOT2")
if [ "$scenario" = perms ]; then
	GROUP_MADE=cpdisk$$
	groupadd "$GROUP_MADE" || { GROUP_MADE=; echo "FAIL: groupadd" >&2; exit 1; }
	USER_MADE=cpuser$$
	useradd -M -N -g nogroup -s /usr/sbin/nologin "$USER_MADE" ||
		{ USER_MADE=; echo "FAIL: useradd" >&2; exit 1; }
	gid=$(getent group "$GROUP_MADE" | cut -d: -f3)
	uid=$(id -u "$USER_MADE")
	ugid=$(id -g "$USER_MADE")
	args+=(--disk-gid "$gid")
	# the user must be able to reach the root itself: only the domain's
	# own modes keep it out
	chmod 0755 "$SL_DIR" "$ROOT" "$ROOT2"
fi

sl_start 1
out=$(sl_run 1 "$HARDEN_TEST" "$scenario" "${args[@]}") || {
	echo "$out"
	echo "FAIL: harden_test $scenario" >&2
	sl_log_tail 1 >&2
	exit 1
}
echo "$out"

if [ "$scenario" = perms ]; then
	as_user() { setpriv --reuid="$uid" --regid="$ugid" --clear-groups "$@"; }
	as_member() { setpriv --reuid="$uid" --regid="$ugid" --groups="$gid" "$@"; }
	for what in VOLUME META TASKS; do
		f=$(echo "$out" | sed -n "s/^$what //p")
		[ -n "$f" ] || { echo "FAIL: no $what path printed" >&2; exit 1; }
		if as_user head -c 512 "$f" >/dev/null 2>&1; then
			echo "FAIL: user $USER_MADE (not in the disk group) read $f" >&2
			ls -l "$f" >&2
			exit 1
		fi
		if ! as_member head -c 512 "$f" >/dev/null; then
			echo "FAIL: user $USER_MADE in the disk group cannot read $f" >&2
			exit 1
		fi
	done
	echo "perms: an unprivileged user cannot read volumes, records or the journal; the disk group can"
fi
echo "PASS"
