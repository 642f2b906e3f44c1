#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Soak: many clients send thousands of mixed requests to cowpoold (with a
# real sanlock daemon, a file master domain): batches of reads
# (host.info, image.list, volume.list, volume.info, task.list) and
# structural calls (volume create, image snapshot, image delete), while
# the daemon is killed with SIGKILL at seeded points and restarted (spm
# start recovers).  Afterwards: nothing lost (every volume whose create or
# snapshot a client saw finish is there, unless its image was being
# deleted), nothing ILLEGAL, and a fresh daemon's RSS and fds as at the
# start.  Bounded to about two minutes.  Root; skips (77) without sanlock.
#
# Environment: COWPOOL, COWPOOLD, MH_HELPER, MEMLOCK_SHIM (meson);
# SOAK_SEED (default 1), SOAK_ROUNDS (8), SOAK_CLIENTS (8).
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"
: "${COWPOOL:?}" "${COWPOOLD:?}" "${MH_HELPER:?}"
sl_requires
sl_init
TMP=$SL_DIR
cd "$TMP" || exit 1
. "$here/daemon-lib.sh"
sl_on_exit dl_kill_all

SEED=${SOAK_SEED:-1}
ROUNDS=${SOAK_ROUNDS:-8}
CLIENTS=${SOAK_CLIENTS:-8}
RANDOM=$SEED
echo "seed $SEED, $ROUNDS rounds, $CLIENTS clients"

mkdir -p root
sl_start 1 || { fail "cannot start sanlock"; cp_finish; }
export SANLOCK_RUN_DIR=$(sl_rundir 1)
SOCK=$TMP/run/cp1.sock
LOG=$TMP/cowpoold.log
D_ARGS=(--host-id 1 --socket "$SOCK" --file-root "$TMP/root" --monitor-interval 1
	--log-file "$LOG")


# client ID: until the daemon goes away.  Appends "IMG VOL" to
# created.ID once a create/snapshot finished, "IMG" to deleting.ID before
# a delete, and one line per request to ops.ID.
client()
{
	local id=$1 r out img vol imgs reads i
	RANDOM=$((SEED * 1000 + id * 17 + ROUND))
	while :; do
		r=$((RANDOM % 10))
		mapfile -t imgs < <(cut -d' ' -f1 "created.$id" 2>/dev/null | sort -u)
		if [ "$r" -lt 6 ] || [ "${#imgs[@]}" = 0 -a "$r" -ge 8 ]; then
			reads=
			for ((i = 0; i < 20; i++)); do
				img=${imgs[RANDOM % (${#imgs[@]} + 1)]:-}
				case $((RANDOM % 5)) in
				0) reads+="{\"jsonrpc\":\"2.0\",\"method\":\"host.info\",\"id\":$i}" ;;
				1) reads+="{\"jsonrpc\":\"2.0\",\"method\":\"image.list\",\"params\":{\"domain\":\"$DOM\"},\"id\":$i}" ;;
				2) reads+="{\"jsonrpc\":\"2.0\",\"method\":\"task.list\",\"id\":$i}" ;;
				*) reads+="{\"jsonrpc\":\"2.0\",\"method\":\"volume.list\",\"params\":{\"domain\":\"$DOM\",\"image\":\"${img:-$DOM}\"},\"id\":$i}" ;;
				esac
				[ "$i" -lt 19 ] && reads+=,
			done
			out=$(printf '[%s]\n' "$reads" | "$COWPOOL" --socket "$SOCK" rpc --raw 2>/dev/null)
			[ -n "$out" ] || return 0
			echo "reads 20" >>"ops.$id"
		elif [ "$r" -lt 8 ]; then
			out=$("$COWPOOL" --socket "$SOCK" volume create "$DOM" --size 1M --output=json 2>/dev/null)
			[ $? = 3 ] && return 0
			[ "$(jq_ .state "$out" 2>/dev/null)" = done ] &&
				echo "$(jq_ .result.volume.image "$out") $(jq_ .result.volume.uuid "$out")" >>"created.$id"
			echo create >>"ops.$id"
		elif [ "$r" -lt 9 ]; then
			img=${imgs[RANDOM % ${#imgs[@]}]}
			grep -qx "$img" "deleting.$id" 2>/dev/null && continue
			out=$("$COWPOOL" --socket "$SOCK" image snapshot "$DOM" "$img" --output=json 2>/dev/null)
			[ $? = 3 ] && return 0
			[ "$(jq_ .state "$out" 2>/dev/null)" = done ] &&
				echo "$img $(jq_ .result.volume.uuid "$out")" >>"created.$id"
			echo snapshot >>"ops.$id"
		else
			img=${imgs[RANDOM % ${#imgs[@]}]}
			grep -qx "$img" "deleting.$id" 2>/dev/null && continue
			echo "$img" >>"deleting.$id"
			"$COWPOOL" --socket "$SOCK" image delete "$DOM" "$img" >/dev/null 2>&1
			[ $? = 3 ] && return 0
			echo delete >>"ops.$id"
		fi
	done
}
nops() { cat ops.* 2>/dev/null | wc -l; }
ops_at_least() { [ "$(nops)" -ge "$1" ]; }

dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "cowpoold did not start"
cpj domain create --type file --path "$TMP/root" --name soak --master --io-timeout 1 ||
	abort "domain create: $(cat cpj.err)"
DOM=$(jq_ .uuid)
spm_start || abort "spm start: $(cat cpj.err)"
cpj volume list "$DOM" "$DOM" >/dev/null
base_rss=$(rss_kb "$DPID")
base_fds=$(nfds "$DPID")

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	target=$(( $(nops) + 30 + RANDOM % 60 ))
	pids=()
	for ((c = 1; c <= CLIENTS; c++)); do
		client "$c" &
		pids+=($!)
	done
	wait_for "round $ROUND: $target requests" 600 ops_at_least "$target" ||
		fail "round $ROUND: only $(nops) of $target operations"
	kill -KILL "$DPID"
	wait "$DPID" 2>/dev/null
	wait "${pids[@]}"
	dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "restart in round $ROUND"
	spm_start || abort "spm start in round $ROUND: $(cat cpj.err)"
done
reads=$(( $(grep -c '^reads' ops.* | awk -F: '{s += $2} END {print s}') * 20 ))
echo "requests: $reads reads, $(grep -hvc '^reads' ops.* | awk '{s += $1} END {print s}') structural calls, $ROUNDS kills"
if [ "$reads" -ge 1000 ]; then ok; else fail "only $reads reads"; fi

# ---- nothing lost, nothing ILLEGAL -----------------------------------------
cat deleting.* 2>/dev/null | sort -u >deleting.all
checked=0 lost=0
while read -r img vol; do
	grep -qx "$img" deleting.all && continue
	checked=$((checked + 1))
	cpj volume info "$DOM" "$img" "$vol"
	if [ "$RC" != 0 ]; then
		lost=$((lost + 1))
		fail "volume $img/$vol (its task finished) is gone: $(cat cpj.err)"
	elif [ "$(jq_ .legality)" != legal ]; then
		fail "volume $img/$vol is $(jq_ .legality) after recovery"
	fi
done < <(cat created.* 2>/dev/null)
echo "volumes checked: $checked (lost: $lost)"
if [ "$checked" -gt 0 ]; then ok; else fail "no volume to check"; fi
cpj image list "$DOM"
illegal=0
for img in $(printf '%s' "$OUT" | tr -d '[]", ' | tr '\n' ' '); do
	cpj image info "$DOM" "$img"
	case $OUT in *'"legality": "illegal"'*) illegal=$((illegal + 1)); echo "illegal: $OUT" >&2 ;; esac
done
expect_eq "no volume ILLEGAL after recovery" 0 "$illegal"

# ---- a fresh daemon at its baseline ----------------------------------------
dl_stop TERM
expect_eq "clean stop" 0 "$DSTATUS"
dl_start "$TMP/stderr.log" "${D_ARGS[@]}" || abort "final restart"
spm_start || abort "final spm start"
cpj volume list "$DOM" "$DOM" >/dev/null
rss=$(rss_kb "$DPID")
fds=$(nfds "$DPID")
echo "fresh daemon: RSS $rss kB (first $base_rss), fds $fds (first $base_fds)"
if [ "$rss" -le $((base_rss + 16384)) ]; then ok; else fail "RSS $rss kB, baseline $base_rss kB"; fi
if [ "$fds" -le $((base_fds + 2)) ]; then ok; else fail "fds $fds, baseline $base_fds"; fi
dl_stop TERM
expect_eq "last stop" 0 "$DSTATUS"
cp_finish
