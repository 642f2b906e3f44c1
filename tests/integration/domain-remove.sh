#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A failed `domain create` leaves nothing behind, and `domain remove`
# (cowpoold with a real sanlock daemon, a file root and LVM on a loop
# device with a private LVM_SYSTEM_DIR):
#   - domain create --master while no sanlock daemon runs fails, leaves no
#     directory and no pool entry; the same call succeeds once sanlock runs;
#   - a block domain whose special LVs do not fit fails after its vgcreate:
#     the VG is removed again;
#   - domain remove is refused (EBUSY) for the master of a pool with another
#     domain, and for a domain with a volume prepared for writing;
#   - a data domain (file, then block) is removed: directory / VG gone,
#     gone from `domain list`; the master alone is removed with its pool
#     and a new master domain can be created.
# Root; skips (77) without sanlock, lvm2 or losetup.
#
# Environment: COWPOOL, COWPOOLD, MH_HELPER, MEMLOCK_SHIM (meson).
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"
: "${COWPOOL:?}" "${COWPOOLD:?}" "${MH_HELPER:?}"
sl_requires
lvm_requires "LVM on a loop device"
sl_init
TMP=$SL_DIR
cd "$TMP" || exit 1
. "$here/daemon-lib.sh"

export LVM_SYSTEM_DIR=$TMP/lvm LVM_SUPPRESS_FD_WARNINGS=1
LOOP=
cleanup()
{
	dl_kill_all
	sl_kill 1 KILL
	if [ -n "$LOOP" ]; then
		lvm vgs --noheadings -o vg_name 2>/dev/null | while read -r vg; do
			lvm vgremove -f "$vg" >/dev/null 2>&1
		done
		lvm pvremove -ff -y "$LOOP" >/dev/null 2>&1
		losetup -d "$LOOP"
	fi
}
sl_on_exit cleanup
LOOP=$(loop_attach "$TMP/pv0" 3G)
lvm_private_conf "$LVM_SYSTEM_DIR" "$LOOP"
ROOT=$TMP/root
mkdir -p "$ROOT"
SOCK=$TMP/cp1.sock
LOG=$TMP/cowpoold.log
# sanlock's run directory, with no daemon behind it yet
export SANLOCK_RUN_DIR=$(sl_rundir 1)
mkdir -p "$SANLOCK_RUN_DIR"
dl_start "$LOG" --host-id 1 --socket "$SOCK" --file-root "$ROOT" \
	--lvm-device "$LOOP" --lvm-system-dir "$LVM_SYSTEM_DIR" \
	--monitor-interval 1 --log-level debug || abort "cowpoold did not start"

uuid() { cat /proc/sys/kernel/random/uuid; }
n_domains() { cpj domain list; jq_ '[].uuid' | grep -c .; }
vg_exists() { lvm vgs "$1" >/dev/null 2>&1; }

# ---- a create that fails rolls back ---------------------------------------
M=$(uuid)
cpj domain create --type file --path "$ROOT" --name m --master --uuid "$M" --io-timeout 1
expect_eq "create without sanlock: exit" 1 "$RC"
expect_match "create without sanlock: message" "removed again" cpj.err
expect_eq "create without sanlock: nothing left in the file root" "" "$(ls -A "$ROOT")"
expect_eq "create without sanlock: no domain in the pool" 0 "$(n_domains)"
sl_start 1 || abort "cannot start sanlock"
cpj domain create --type file --path "$ROOT" --name m --master --uuid "$M" --io-timeout 1
expect_eq "the same create, retried with sanlock: exit" 0 "$RC"
[ "$RC" = 0 ] || abort "create: $(cat cpj.err)"
spm_start || abort "spm start: $(cat cpj.err)"

# a block domain whose special LVs need more than the device: the VG made
# by vgcreate is removed again
B=$(uuid)
cpj domain create --type block --device "$LOOP" --name b --uuid "$B" \
	--io-timeout 1 --max-volumes 5000 --extent-size 4M
expect_eq "block create that does not fit: exit" 1 "$RC"
if vg_exists "$B"; then fail "block create that does not fit: VG $B left"; else ok; fi
expect_eq "block create that does not fit: pool" 1 "$(n_domains)"

# ---- remove: refusals -------------------------------------------------------
D=$(uuid)
cpj domain create --type file --path "$ROOT" --name d --uuid "$D" --io-timeout 1
[ "$RC" = 0 ] || abort "create data domain: $(cat cpj.err)"
cpj domain remove "$M"
expect_eq "remove the master of a pool with another domain: exit" 1 "$RC"
expect_match "remove the master: message" "master domain of pool .* 1 other domain" cpj.err
I=$(uuid) V=$(uuid)
cpj volume create "$D" --image "$I" --volume "$V" --size 16M
[ "$RC" = 0 ] || abort "volume create: $(cat cpj.err)"
cpj volume prepare "$D" "$I" "$V" --rw
[ "$RC" = 0 ] || abort "volume prepare: $(cat cpj.err)"
cpj domain remove "$D"
expect_eq "remove with a prepared volume: exit" 1 "$RC"
expect_match "remove with a prepared volume: message" "volume $I/$V is prepared" cpj.err
[ -d "$ROOT/$D" ] && ok || fail "a refused remove wiped $ROOT/$D"

# ---- remove a file data domain ------------------------------------------------
cpj volume teardown "$D" "$I" "$V"
[ "$RC" = 0 ] || abort "volume teardown: $(cat cpj.err)"
cpj domain remove "$D"
expect_eq "remove the file data domain: exit" 0 "$RC"
expect_eq "remove: result" "$D" "$(jq_ .removed)"
[ -e "$ROOT/$D" ] && fail "$ROOT/$D is still there" || ok
expect_eq "domains after removing the data domain" 1 "$(n_domains)"

# ---- a block data domain: created, removed (VG gone) ------------------------------
cpj domain create --type block --device "$LOOP" --name b --uuid "$B" --io-timeout 1
[ "$RC" = 0 ] || abort "block create: $(cat cpj.err)"
vg_exists "$B" && ok || fail "VG $B not created"
cpj domain remove "$B"
expect_eq "remove the block domain: exit" 0 "$RC"
if vg_exists "$B"; then fail "VG $B still there after remove"; else ok; fi
expect_eq "domains after removing the block domain" 1 "$(n_domains)"

# ---- the master alone: the pool goes with it ----------------------------------------
cpj domain remove "$M"
expect_eq "remove the master alone: exit" 0 "$RC"
[ -e "$ROOT/$M" ] && fail "$ROOT/$M is still there" || ok
expect_eq "no domain left" 0 "$(n_domains)"
OUT=$(cpl rpc host.info)
expect_eq "no pool left" null "$(jq_ .pool_uuid)"
cpj domain create --type file --path "$ROOT" --name m2 --master --io-timeout 1
expect_eq "a new master domain after the pool was removed: exit" 0 "$RC"
spm_start && ok || fail "spm start on the new pool: $(cat cpj.err)"

dl_stop
cp_finish
