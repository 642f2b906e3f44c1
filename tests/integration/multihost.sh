#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# tests/integration/multihost.sh - three simulated hosts, each with its own
# sanlock daemon and its own cowpoold (host ids 1..3), sharing one file
# domain directory and one block domain (an LVM VG on a loop device, the
# master: the SPM lease and the task journal live there), both with
# io_timeout 1.  Everything goes through the cowpool CLI and the daemons'
# JSON-RPC API; mh_helper (beside this file) parses the JSON answers and
# reads/writes block volumes through the domain where no other tool can
# (no device-mapper here).
#
#   1. domains created by host 1; all three hosts join and see them
#   2. SPM exclusivity: 50 rounds of a three-way `spm start` race: exactly
#      one winner, the others refused naming the holder; `spm status` from
#      every host names the same holder and lease version (growing every
#      round); a structural call on a non-SPM host is refused with
#      "is not the SPM"; `spm stop`
#   3. kill -9 of the SPM's cowpoold: another host is SPM within
#      release_takeover_max; host death (the SPM host's sanlock daemon and
#      cowpoold killed): the old SPM refuses structural calls at once,
#      others are refused until the lease expires, then take over inside
#      [takeover_min, takeover_max] of spm/timeouts.h
#   4. task recovery: cowpoold killed at seeded crash points
#      (CP_FAULT_SPM_KILL_AT) of create-volume (snapshot), merge (snapshot
#      delete), template creation and image copy, on both domains; another
#      host (or the restarted one) recovers at `spm start`; then: task
#      ended, no orphan LV/file/metadata slot, every volume LEGAL with a
#      chain its records describe, data equal to a reference (qemu-img
#      compare: the volume files on the file domain, an export through the
#      domain on the block domain)
#   5. volume leases: rw prepare of a leaf is exclusive across hosts
#      (named holder), released by teardown and by kill -9; read-only
#      prepare of a template works on every host
#   6. bad input: unknown UUIDs, domain extend of a file domain, a full VG,
#      a metadata slot with one corrupted byte on the loop device
#   7. NBD exports (volume.export): a writable export of a leaf is
#      exclusive across hosts (the second host's error names the holder;
#      rw prepare is refused too), handed over by unexport; read-only
#      exports of the leaf on every host at once; data written through one
#      host's export read through another's (qemu-io)
#
# Usage: multihost.sh [SECTION...].  Step 1 always runs; the sections are
# the other steps: race (2), takeover (3), recovery (4), leases (5),
# input (6) and exports (7), in the order given; no argument runs them all in one pool.
# Meson runs each section as its own test (multihost-race, ...), so that a
# failure names its feature; a section that needs an SPM finds the one the
# previous section left, or makes host 1 SPM.  Each section ends with a
# line "section NAME: N checks passed, N failed, T s".
#
# Polling: the only loops that wait are bounded polls for states that an
# external timeout governs (sanlock's lockspace join, lease release and
# expiry) - each documents its bound; `spm start` waits for a lease
# inside the daemon (--wait).  No sleep is used to order events.
#
# Environment (meson): COWPOOL, COWPOOLD, MH_HELPER, LEASE_TOOL,
# MEMLOCK_SHIM.  MH_SEED picks the crash points (default 1; printed),
# MH_POINTS the crash points per operation and domain (default 4, so 32),
# MH_ROUNDS the race rounds (default 50), MH_SKIP_DEATH=1 skips the ~70 s
# host-death step, MH_OPS limits step 4 to some operations (local
# iterations only: fewer than 30 points are then accepted).  MH_TRACE=FILE
# writes a timed bash trace there.  SL_KEEP_LOGS=1 keeps $SL_DIR (daemon
# logs) after a failure.  Skips (77) unless root with sanlock, lvm2,
# losetup and qemu-img.  Prints "MEASURE" lines.

MH_SECTIONS=(race takeover recovery leases input exports)
if [ $# -gt 0 ]; then
	for s in "$@"; do
		if [[ " ${MH_SECTIONS[*]} " != *" $s "* ]]; then
			echo "usage: $0 [SECTION...]; sections: ${MH_SECTIONS[*]}" >&2
			exit 2
		fi
	done
	MH_SECTIONS=("$@")
fi

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../sanlock/harness.sh"
. "$here/mh_lib.sh"

if [ -n "${MH_TRACE:-}" ]; then  # MH_TRACE=FILE: a timed trace (debugging)
	exec 7>"$MH_TRACE"
	BASH_XTRACEFD=7
	PS4='+ $EPOCHREALTIME ${FUNCNAME[0]:-main}: '
	set -x
fi
mh_requires
mh_init 3G
cd "$SL_DIR" || exit 1

IO=1
ROUNDS=${MH_ROUNDS:-50}
SEED=${MH_SEED:-1}
POINTS=${MH_POINTS:-4}
HOSTS=(1 2 3)

sl_timeouts "$LEASE_TOOL" "$IO"
uuid() { cat /proc/sys/kernel/random/uuid; }

# abort MSG: a failure that makes the rest meaningless
abort()
{
	fail "$*"
	local n
	for n in "${HOSTS[@]}"; do
		echo "--- cowpoold host $n (last lines):" >&2
		tail -n 8 "$SL_DIR/cowpoold-$n.log" >&2 2>/dev/null
	done
	cp_finish
}

# must N ARGS...: the cowpool call on host N must succeed (JSON in $OUT)
must()
{
	cpj "$@"
	if [ "$RC" -ne 0 ]; then
		fail "host $1: cowpool ${*:2}: exit $RC: $ERR"
		return 1
	fi
	ok
}

# refused WHAT PATTERN N ARGS...: the call must fail (exit 1) with an error
# matching the glob PATTERN
refused()
{
	local what=$1 pat=$2
	shift 2
	cpw "$@"
	if [ "$RC" -eq 1 ] && [[ $ERR == $pat ]]; then
		ok
	else
		fail "$what: expected exit 1 and an error like '$pat'; got exit $RC: ${ERR:-$OUT}"
	fi
}

# spm_of N: "role host lver self" from host N's spm status
spm_of()
{
	cpj "$1" spm status
	[ "$RC" -eq 0 ] || { echo "error $ERR"; return; }
	echo "$(jq_ .role) $(jq_ .host_id) $(jq_ .lver) $(jq_ .self)"
}

# wait_joined N: host N's daemon has joined every lockspace.  Bounded by
# sanlock's join time (join_held_max: the longest a join may take).
wait_joined()
{
	local n=$1 t0 st=
	t0=$(now)
	while in_range "$(elapsed "$t0" "$(now)")" 0 $((TO_join_held_max + 5)); do
		cpw "$n" rpc host.info
		st=$(jq_ .join 2>/dev/null)
		[ "$st" = joined ] || [ "$st" = failed ] && break
		sleep 0.2
	done
	if [ "$st" = joined ]; then ok; else
		fail "host $n: lockspaces not joined: $st $OUT $ERR"
	fi
	echo "host $n joined after $(elapsed "$t0" "$(now)") s"
}

# spm_start_wait N LIMIT T0: `spm start --wait=LIMIT` on host N: the
# daemon retries while a lease another host's daemon is releasing, or
# that must expire, is in the way.  Sets GOT (the lease version or
# empty), T (seconds since T0) and SEQ (the refusals the daemon logged
# while it waited, classified, in order).
spm_start_wait()
{
	local n=$1 limit=$2 t0=$3 log="$SL_DIR/cowpoold-$n.log" from line cls
	GOT= SEQ=
	from=$(wc -l <"$log")
	cpj "$n" spm start --wait="$limit"
	T=$(elapsed "$t0" "$(now)")
	while IFS= read -r line; do
		line=${line#*INFO: spm start: }
		case $line in
		*"stopped renewing"*) cls=EAGAIN ;;
		*"Resource temporarily unavailable"*) cls=EAGAIN
			EAGAIN_BARE=$line ;;
		*"is held by host"*) cls=EBUSY ;;
		*) cls=other ;;
		esac
		SEQ+="  $cls: $line"$'\n'
	done < <(tail -n +"$((from + 1))" "$log" |
		grep -E "INFO: spm start: .*(waiting up to|still waiting)")
	if [ "$RC" -eq 0 ]; then
		GOT=$(jq_ .lver)
		SEQ+="  t=${T}s: SPM (lease version $GOT)"$'\n'
		return 0
	fi
	SEQ+="  t=${T}s: $ERR"$'\n'
	return 1
}

# ---- 1. hosts and domains ------------------------------------------------------
t_setup=$(now)
for n in "${HOSTS[@]}"; do
	sl_start "$n" || abort "cannot start sanlock for host $n"
done
echo "sanlock daemons: ${#HOSTS[@]}, LD_PRELOAD shim: $([ "$SL_USE_SHIM" = 1 ] && echo used || echo not needed)"

mh_start 1 || abort "cowpoold of host 1"
must 1 domain create --type block --device "$MH_LOOP" --name mh-block --master \
	--io-timeout "$IO" --chunk-size 64M --max-volumes 64 --extent-size 4M ||
	abort "block domain create"
BDOM=$(jq_ .uuid)
MH_VGS+=("$BDOM")
POOL=$(jq_ .pool)
expect_eq "block domain io_timeout" "$IO" "$(jq_ .io_timeout)"
must 1 domain create --type file --path "$MH_FROOT" --name mh-file --io-timeout "$IO" ||
	abort "file domain create"
FDOM=$(jq_ .uuid)
expect_eq "file domain joins the pool" "$POOL" "$(jq_ .pool)"
echo "pool $POOL: block domain $BDOM (master, VG on $MH_LOOP), file domain $FDOM"
# every daemon scans the storage at start: restart host 1 with the others
mh_kill 1
for n in "${HOSTS[@]}"; do
	mh_start "$n" || abort "cowpoold of host $n"
done
for n in "${HOSTS[@]}"; do
	wait_joined "$n"
	must "$n" domain list
	doms=$(jq_ '[].uuid' | sort | tr '\n' ' ')
	expect_eq "host $n sees both domains" "$(printf '%s\n' "$BDOM" "$FDOM" | sort | tr '\n' ' ')" "$doms"
	must "$n" domain info "$BDOM"
	expect_eq "host $n: block domain is master" true "$(jq_ .master)"
done
expect_eq "status with no SPM" "Free 0 0 false" "$(spm_of 2)"
echo "setup: $CP_CHECKS checks passed, $CP_FAILS failed, $(elapsed "$t_setup" "$(now)") s"

# need_spm: SPM is the host that is SPM now (the one the previous section
# left), or host 1 made SPM when there is none
need_spm()
{
	local n
	SPM=
	for n in "${HOSTS[@]}"; do
		case $(spm_of "$n") in "SPM "*) SPM=$n ;; esac
	done
	if [ -z "$SPM" ]; then
		must 1 spm start || abort "spm start on host 1"
		SPM=1
	fi
}

# ---- 2. SPM exclusivity: the race -------------------------------------------------
section_race()
{
	local -A rc=()
	prev=0
	plus_one=0
	named_other=0
	t0=$(now)
	for r in $(seq "$ROUNDS"); do
		pids=()
		for n in "${HOSTS[@]}"; do
			"$COWPOOL" --socket "$(mh_sock "$n")" spm start --output=json \
				>"race$n.out" 2>"race$n.err" &
			pids+=($!)
		done
		winner=
		for n in "${HOSTS[@]}"; do
			wait "${pids[$((n - 1))]}"
			rc[$n]=$?
			if [ "${rc[$n]}" -eq 0 ]; then
				if [ -n "$winner" ]; then
					fail "round $r: hosts $winner and $n both started SPM"
				fi
				winner=$n
			fi
		done
		if [ -z "$winner" ]; then
			fail "round $r: nobody became SPM: $(cat race1.err race2.err race3.err)"
			break
		fi
		ok
		lver=$(jq_ .lver "$(cat "race$winner.out")")
		for n in "${HOSTS[@]}"; do
			[ "$n" = "$winner" ] && continue
			e=$(cat "race$n.err")
			# the loser names the holder it saw: the winner, or now and
			# then the previous holder still running its ballot
			if [ "${rc[$n]}" -eq 1 ] && [[ $e == *"is held by host "[123]" (lease version "* ]] &&
			   [[ $e != *"held by host $n "* ]]; then
				ok
				[[ $e == *"held by host $winner "* ]] || named_other=$((named_other + 1))
			else
				fail "round $r: host $n: expected a refusal naming the holder, got exit ${rc[$n]}: $e"
			fi
		done
		if [ "$lver" -gt "$prev" ]; then ok; else fail "round $r: lease version $lver after $prev"; fi
		[ "$lver" -eq $((prev + 1)) ] && plus_one=$((plus_one + 1))
		prev=$lver
		for n in "${HOSTS[@]}"; do
			if [ "$n" = "$winner" ]; then
				expect_eq "round $r: status on the SPM (host $n)" "SPM $winner $lver true" "$(spm_of "$n")"
			else
				expect_eq "round $r: status on host $n" "Contending $winner $lver false" "$(spm_of "$n")"
			fi
		done
		other=$(( (winner + r % 2) % 3 + 1 ))
		refused "round $r: volume create on host $other" \
			"*host $other is not the SPM (SPM is host $winner, lease version $lver)*" \
			"$other" volume create "$FDOM" --size 1M
		must "$winner" spm stop
		expect_eq "round $r: status after stop" "Free 0 $lver false" "$(spm_of "$other")"
	done
	echo "MEASURE race: $ROUNDS rounds in $(elapsed "$t0" "$(now)") s; lease version +1 in" \
		"$plus_one rounds, final $prev; $named_other of $((2 * ROUNDS)) refusals named" \
		"the previous holder still in its ballot"
}

# ---- 3a. kill -9 of the SPM's cowpoold ------------------------------------------------
section_takeover()
{
	# no SPM yet: the race (when it ran) stopped its last one
	must 1 spm start || abort "spm start on host 1"
	lver1=$(jq_ .lver)
	t0=$(now)
	mh_kill 1
	expect_eq "killed cowpoold exit status" 137 "$MH_STATUS"
	# bound: release_takeover_max (the daemon writes the release at once)
	spm_start_wait 2 $((TO_release_takeover_max + 5)) "$t0"
	echo "host 2's spm start after host 1's cowpoold was killed:"
	printf '%s' "$SEQ"
	echo "MEASURE SPM cowpoold killed -> host 2 is SPM: $T s (timeouts.h: release_takeover_max" \
		"$TO_release_takeover_max s)"
	if [ -n "$GOT" ] && in_range "$T" 0 "$TO_release_takeover_max"; then ok; else
		abort "takeover after kill -9 of the SPM's cowpoold: ${GOT:+lver $GOT }in $T s"
	fi
	expect_eq "lease version after the takeover" $((lver1 + 1)) "$GOT"
	expect_eq "status on host 3" "Contending 2 $GOT false" "$(spm_of 3)"
	mh_start 1 || abort "restart host 1"
	wait_joined 1
	expect_eq "status on the restarted host 1" "Contending 2 $GOT false" "$(spm_of 1)"

	# ---- 3b. host death -------------------------------------------------------------------
	if [ "${MH_SKIP_DEATH:-0}" = 1 ]; then
		echo "host death: skipped (MH_SKIP_DEATH=1)"
	else
		lver2=$GOT
		t0=$(now)
		sl_kill 2 KILL
		# host 2's cowpoold lost its sanlock connection: it must stop acting
		# as SPM at once (ESTALE to the first structural call, or the role
		# already dropped by its monitor)
		refused "structural call on the SPM whose sanlock daemon died" \
			"*host 2 *" 2 volume create "$FDOM" --size 1M
		case $ERR in
		*"lost the SPM lease"*) ok ;;
		# (its monitor may have dropped the role first: the pool remembers
		# why, so the caller still learns ESTALE, not "not the SPM")
		*) fail "old SPM after its sanlock daemon died: $ERR" ;;
		esac
		echo "old SPM's answer to a structural call: $ERR"
		st=$(spm_of 2)
		case $st in SPM*) fail "host 2 still reports SPM after its sanlock daemon died: $st" ;; *) ok ;; esac
		mh_kill 2
		# bound: takeover_max (+5 s of slack)
		spm_start_wait 3 $((TO_takeover_max + 5)) "$t0"
		echo "host 3's spm start after host 2 died:"
		printf '%s' "$SEQ"
		echo "MEASURE host death -> host 3 is SPM: $T s (timeouts.h: host_dead $TO_host_dead s," \
			"window [$TO_takeover_min, $TO_takeover_max] s)"
		if [ -n "$GOT" ] && in_range "$T" "$TO_takeover_min" "$TO_takeover_max"; then ok; else
			fail "takeover after host death: ${GOT:+lver $GOT }in $T s, outside [$TO_takeover_min, $TO_takeover_max]"
		fi
		[ -n "$GOT" ] || abort "no takeover after host death"
		case $SEQ in *EBUSY*) ok ;; *) fail "no 'held by host 2' refusal before the lease expired" ;; esac
		case $SEQ in *EAGAIN*) ok ;; *) fail "no EAGAIN refusal while host 2 was failing" ;; esac
		case $SEQ in *other*) fail "unexpected refusals after host death: $SEQ" ;; *) ok ;; esac
		# lease.c says "held by host 2 (...), which stopped renewing ..."; spm
		# start must pass that on, not a bare strerror
		[ -n "${EAGAIN_BARE:-}" ] && fail "spm start's EAGAIN refusal lost lease.c's" \
			"message: '$EAGAIN_BARE'"
		expect_eq "lease version after host death" $((lver2 + 1)) "$GOT"
		expect_eq "status on host 1" "Contending 3 $GOT false" "$(spm_of 1)"
		# host 2 comes back: a new sanlock daemon, a new cowpoold
		sl_start 2 || abort "restart sanlock of host 2"
		mh_start 2 || abort "restart cowpoold of host 2"
		wait_joined 2
		expect_eq "status on the revived host 2" "Contending 3 $GOT false" "$(spm_of 2)"
	fi
	# whoever is SPM now stays SPM into the next step
	SPM=
	for n in "${HOSTS[@]}"; do
		case $(spm_of "$n") in "SPM "*) SPM=$n ;; esac
	done
	[ -n "$SPM" ] || abort "no SPM after step 3"
}

# ---- 4. task recovery after crash points --------------------------------------------
# A world per operation and domain: image I in D with the chain CHAIN (base
# first, at least three layers, each with its own writes) whose content is
# the raw file $REF.  At each point the SPM hands over, the victim host's
# cowpoold is restarted with CP_FAULT_SPM_KILL_AT=N, becomes SPM and runs
# the operation until the crash point kills it; another host (or the
# victim, restarted without the fault) becomes SPM and recovers.  Then
# everything is checked against what the task's outcome promises, and the
# world moves on: a finished create adds the new leaf to CHAIN, a finished
# merge drops the merged layer (and a new top layer keeps three), a
# finished template or copy is checked and deleted.
CAP=$((64 << 20))
SPECIALS=" ids leases metadata inbox outbox tasks "

domopts() { if [ "$1" = "$FDOM" ]; then echo "--root $MH_FROOT"; else echo "--lvm-device $MH_LOOP"; fi; }
dname() { if [ "$1" = "$FDOM" ]; then echo file; else echo block; fi; }

# wr D I V OFF LEN SEED...: the pattern into the chain of V (through the
# domain) and into the reference $REF
wr()
{
	local d=$1 i=$2 v=$3
	shift 3
	# shellcheck disable=SC2046
	"$MH_HELPER" write $(domopts "$d") "$d" "$i" "$v" "$@" ||
		fail "write into $(dname "$d") volume $v"
	while [ $# -ge 3 ]; do
		"$MH_HELPER" pattern "$REF" "$1" "$2" "$3" || fail "pattern"
		shift 3
	done
}

# layer SEED: a new top layer on CHAIN with two writes of its own
layer()
{
	local v s=$1 off
	v=$(uuid)
	must "$SPM" volume create "$D" --image "$I" --volume "$v" --parent "${CHAIN[-1]}" ||
		abort "snapshot"
	off=$(( (s * 7 % 60) << 20 ))
	wr "$D" "$I" "$v" "$off" 1M "$s" $(( (s * 13 % 62) << 20 )) 2M $((s + 1))
	CHAIN+=("$v")
}

# new_world D SEED: the image, three layers
new_world()
{
	local s=$2
	D=$1 I=$(uuid) CHAIN=("$(uuid)")
	REF=$SL_DIR/ref.raw
	rm -f "$REF"
	truncate -s "$CAP" "$REF"
	must "$SPM" volume create "$D" --image "$I" --volume "${CHAIN[0]}" --size "$CAP" ||
		abort "volume create"
	wr "$D" "$I" "${CHAIN[0]}" 0 4M "$s" 40M 2M $((s + 1))
	layer $((s + 2))
	layer $((s + 4))
}

# clear_tasks N: clear every finished task (host N is the SPM)
clear_tasks()
{
	local n=$1 t st
	cpj "$n" task list
	[ "$RC" -eq 0 ] || { fail "task list: $ERR"; return; }
	paste <(jq_ '[].task') <(jq_ '[].state') >tasks.lst
	while read -r t st; do
		[ -n "$t" ] || continue
		case $st in
		running | recovering) fail "task $t still $st" ;;
		*) cpw "$n" task clear "$t"
		   [ "$RC" -eq 0 ] || fail "task clear $t ($st): $ERR" ;;
		esac
	done <tasks.lst
}

# same_data D I V WHAT: the chain whose top is V reads as $REF: qemu-img
# reads the volume files of a file domain itself; a block domain's LVs are
# exported through the domain first (no device-mapper here)
same_data()
{
	local d=$1 i=$2 v=$3 what=$4 out
	if [ "$d" = "$FDOM" ]; then
		out=$(qemu-img compare -f qcow2 -F raw "$MH_FROOT/$d/images/$i/$v" "$REF" 2>&1)
	else
		rm -f exp.raw
		out=$("$MH_HELPER" export --lvm-device "$MH_LOOP" "$d" "$i" "$v" exp.raw 2>&1) &&
			out=$(qemu-img compare -f raw -F raw exp.raw "$REF" 2>&1)
	fi
	if [ $? -eq 0 ]; then ok; else fail "$what: data differs from the reference: $out"; fi
}

# check_image D I VOL...: image.info on the SPM lists exactly VOL... (base
# first), all LEGAL, parents linked, internal layers under one leaf (or one
# SHARED template when I is $TEMPLATE_IMG); another host sees the same; on
# a file domain qemu-img follows the same backing chain.  Adds the volumes
# to WANT_VOLS / VOL_IMG for check_domain.
check_image()
{
	local d=$1 i=$2 what got want v other
	shift 2
	what="$(dname "$d") image ${i:0:8}"
	must "$SPM" image info "$d" "$i" || return
	got=$(jq_ '.volumes[].uuid' | tr '\n' ' ')
	expect_eq "$what: chain" "$* " "$got"
	expect_eq "$what: unreadable records" "" "$(jq_ '.bad_volumes[].uuid')"
	expect_eq "$what: legality" legal "$(jq_ '.volumes[].legality' | sort -u | tr -d '\n')"
	if [ "${TEMPLATE_IMG:-}" = "$i" ]; then
		want="shared "
	else
		want="leaf "
		for v in "${@:2}"; do want="internal $want"; done
	fi
	expect_eq "$what: roles" "$want" "$(jq_ '.volumes[].role' | tr '\n' ' ')"
	want=null
	for v in "${@:1:$(($# - 1))}"; do want+=" $v"; done
	expect_eq "$what: parents" "$want " "$(jq_ '.volumes[].parent' | tr '\n' ' ')"
	other=$((SPM % 3 + 1))
	cpj "$other" image info "$d" "$i"
	expect_eq "$what: chain seen from host $other" "$* " "$(jq_ '.volumes[].uuid' | tr '\n' ' ')"
	if [ "$d" = "$FDOM" ]; then
		got=$(qemu-img info --backing-chain --output=json "$MH_FROOT/$d/images/$i/${!#}" |
			"$MH_HELPER" json '[].filename' | xargs -n1 basename | tac | tr '\n' ' ')
		expect_eq "$what: qemu-img backing chain" "$* " "$got"
	fi
	WANT_VOLS+=" $*"
	for v in "$@"; do VOL_IMG[$v]=$i; done
}

# check_domain D [IMAGE...]: the domain holds exactly these images (checked
# by check_image first) and nothing else: no LV or file without a volume
# record, LV tags naming the right image, the metadata slots in use being
# exactly those the LVs name
check_domain()
{
	local d=$1 what want got v lv tags s slots= ext pe first exp=
	shift
	what="$(dname "$d") domain"
	must "$SPM" image list "$d"
	want=$( [ $# -gt 0 ] && printf '%s\n' "$@" | sort | tr '\n' ' ')
	expect_eq "$what: images" "$want" "$(jq_ '[]' | sort | tr '\n' ' ')"
	want=$( [ -n "$WANT_VOLS" ] && printf '%s\n' $WANT_VOLS | sort | tr '\n' ' ')
	if [ "$d" = "$FDOM" ]; then
		for v in $WANT_VOLS; do
			exp+="${VOL_IMG[$v]} ${VOL_IMG[$v]}/$v ${VOL_IMG[$v]}/$v.lease ${VOL_IMG[$v]}/$v.meta "
		done
		got=$(cd "$MH_FROOT/$d/images" && find . -mindepth 1 | sed 's|^\./||' | sort | tr '\n' ' ')
		expect_eq "$what: files" "$( [ -n "$exp" ] && printf '%s\n' $exp | sort -u | tr '\n' ' ')" "$got"
		return
	fi
	lvm_ lvs --noheadings -o lv_name,lv_tags --separator ' ' "$d" 2>/dev/null |
		sed 's/^ *//' | sort >lvs.lst
	got=$(while read -r lv tags; do
		[[ $SPECIALS == *" $lv "* ]] || echo "$lv"; done <lvs.lst | tr '\n' ' ')
	expect_eq "$what: volume LVs" "$want" "$got"
	while read -r lv tags; do
		[[ $SPECIALS == *" $lv "* ]] && continue
		case ,$tags, in
		*",IU_${VOL_IMG[$lv]:-none},"*) ok ;;
		*) fail "$what: LV $lv tags '$tags' do not name image ${VOL_IMG[$lv]:-?}" ;;
		esac
		s=$(tr ',' '\n' <<<"$tags" | sed -n 's/^MD_//p')
		slots+="$s "
	done <lvs.lst
	# the metadata LV read straight from the loop device: slots holding a
	# record (any non-zero byte) against the slots the LVs name
	ext=$(lvm_ vgs --noheadings --units b --nosuffix -o vg_extent_size "$d" 2>/dev/null | tr -d ' ')
	pe=$(lvm_ pvs --noheadings --units b --nosuffix -o pe_start "$MH_LOOP" 2>/dev/null | tr -d ' ')
	first=$(lvm_ lvs --noheadings -o seg_pe_ranges "$d/metadata" 2>/dev/null |
		tr -d ' ' | sed 's/.*:\([0-9]*\)-.*/\1/')
	MD_OFF=$((pe + first * ext))
	got=$(dd if="$MH_LOOP" bs=4096 iflag=direct,skip_bytes skip="$MD_OFF" count=64 status=none |
		od -An -v -tx1 -w4096 | awk '{ for (i = 1; i <= NF; i++) if ($i != "00") { printf "%d ", NR - 1; break } }')
	want=$( [ -n "$slots" ] && printf '%s\n' $slots | sort -n | tr '\n' ' ')
	# removal zeroes the slot (docs/formats/domain.md): the slots holding
	# a record are exactly those the LVs name
	if [ "$got" = "$want" ]; then ok; else
		fail "$what: slots with a record '$got', slots named by LVs '$want'"
	fi
}

# the four operations, run by the victim host on the world
op_args()
{
	case $1 in
	create) echo volume create "$D" --image "$I" --volume "$VN" --parent "${CHAIN[-1]}" --async ;;
	merge) echo volume merge "$D" "$I" "${CHAIN[1]}" --async ;;
	template) echo template create "$D" "$I" --template-image "$TI" --template-volume "$TV" --async ;;
	copy) echo image copy "$D" "$I" "$D2" --async ;;
	esac
}

# recovery_spm_start N: spm start on host N, waiting while the lease of a
# killed SPM is being released
recovery_spm_start()
{
	spm_start_wait "$1" $((TO_release_takeover_max + 5)) "$(now)"
	if [ -n "$GOT" ]; then ok; else
		abort "recovery spm start on host $1 (waited ${T} s): $ERR"
	fi
}

# one_point OP N: one crash point (see above); returns 1 if the victim was
# killed by the crash point, 0 if the operation ran to its end
one_point()
{
	local op=$1 N=$2 victim recov st task= crashed=0 tag d2imgs= dimgs
	victim=${HOSTS[$((idx % 3))]}
	if [ $((idx % 3)) -eq 2 ]; then recov=$victim; else recov=${HOSTS[$(((idx + 1) % 3))]}; fi
	idx=$((idx + 1))
	tag="$op $(dname "$D") point $N"
	VN=$(uuid) TI=$(uuid) TV=$(uuid) TEMPLATE_IMG=
	clear_tasks "$SPM"
	must "$SPM" spm stop
	mh_kill "$victim"
	mh_start "$victim" "CP_FAULT_SPM_KILL_AT=$N" || abort "victim host $victim"
	must "$victim" spm start || abort "victim spm start"
	# shellcheck disable=SC2046
	cpj "$victim" $(op_args "$op")
	if [ "$RC" -eq 0 ]; then
		task=$(jq_ .task)
		cpj "$victim" task wait "$task" --timeout 120
	fi
	if [ "$RC" -eq 0 ] && mh_alive "$victim"; then
		mh_kill "$victim"  # the operation ended before point N
		completions=$((completions + 1))
	else
		mh_reap "$victim"
		if [ "$MH_STATUS" = 137 ] &&
		   grep -q "crash point $N " "$SL_DIR/cowpoold-$victim.log"; then
			crashed=1 crashes=$((crashes + 1))
		else
			fail "$tag: victim host $victim: exit $MH_STATUS, cowpool exit $RC: $ERR"
		fi
	fi
	# sanlock releases the killed victim's SPM lease once it sees the
	# process gone: the recovery host polls for it (bound:
	# release_takeover_max, as in step 3a)
	if [ "$recov" = "$victim" ]; then
		mh_start "$victim" || abort "restart host $victim"
		recovery_spm_start "$recov"
	else
		recovery_spm_start "$recov"
		mh_start "$victim" || abort "restart host $victim"
	fi
	SPM=$recov
	# the task ended; "none": killed before the task was journaled
	cpj "$SPM" task list
	st=$(paste <(jq_ '[].task') <(jq_ '[].state') |
		awk -v t="${task:-?}" '$1 == t || t == "?" { print $2 }')
	[ -n "$st" ] || st=none
	case $op/$st in
	*/done | */aborted | */none) ok ;;
	*) fail "$tag: task ${task:-?} is '$st' after recovery" ;;
	esac
	[ "$crashed" = 0 ] && expect_eq "$tag ran to the end: task" done "$st"
	OUTCOMES[$op/$st]=$(( ${OUTCOMES[$op/$st]:-0} + 1 ))
	echo "  $tag: victim host $victim $([ $crashed = 1 ] && echo killed ||
		echo 'ran to the end'), recovered by host $recov: task $st"

	case $op/$st in
	create/done) CHAIN+=("$VN") ;;
	merge/done) CHAIN=("${CHAIN[0]}" "${CHAIN[@]:2}") ;;
	merge/aborted) fail "$tag: a merge must roll forward, not back" ;;
	esac
	WANT_VOLS= VOL_IMG=()
	dimgs=$I
	check_image "$D" "$I" "${CHAIN[@]}"
	same_data "$D" "$I" "${CHAIN[-1]}" "$tag: image"
	if [ "$op/$st" = template/done ]; then
		TEMPLATE_IMG=$TI
		check_image "$D" "$TI" "$TV"
		same_data "$D" "$TI" "$TV" "$tag: template"
		dimgs+=" $TI"
	fi
	# shellcheck disable=SC2086
	check_domain "$D" $dimgs
	if [ "$op" = copy ]; then
		WANT_VOLS= VOL_IMG=()
		if [ "$st" = done ]; then
			check_image "$D2" "$I" "${CHAIN[@]}"
			same_data "$D2" "$I" "${CHAIN[-1]}" "$tag: the copy"
			d2imgs=$I
		fi
		# shellcheck disable=SC2086
		check_domain "$D2" $d2imgs
	fi
	# the world for the next point
	[ "$op/$st" = template/done ] && must "$SPM" image delete "$D" "$TI"
	[ -n "$d2imgs" ] && must "$SPM" image delete "$D2" "$I"
	[ ${#CHAIN[@]} -lt 3 ] && layer $((idx * 16))
	return "$crashed"
}

declare -A VOL_IMG=() OUTCOMES=() KMAX=([create]=12 [merge]=14 [template]=12 [copy]=20)

section_recovery()
{
	need_spm
	RANDOM=$SEED
	crashes=0 completions=0 idx=0
	echo "crash points: seed $SEED, $POINTS per operation and domain"
	t_crash=$(now)
	for op in ${MH_OPS:-create merge template copy}; do
		for dom in "$FDOM" "$BDOM"; do
			if [ "$dom" = "$FDOM" ]; then D2=$BDOM; else D2=$FDOM; fi
			new_world "$dom" $((idx * 16 + 1))
			kmax=${KMAX[$op]} got=0
			declare -A drawn=()
			while [ "$got" -lt "$POINTS" ]; do
				# a point not drawn yet in 1..kmax (kmax shrinks when the
				# operation ends before the drawn point)
				cand=()
				for ((p = 1; p <= kmax; p++)); do
					[ -z "${drawn[$p]:-}" ] && cand+=("$p")
				done
				[ ${#cand[@]} -gt 0 ] || break
				p=${cand[$((RANDOM % ${#cand[@]}))]}
				drawn[$p]=1
				if one_point "$op" "$p"; then kmax=$((p - 1)); else got=$((got + 1)); fi
			done
			unset drawn
			[ "$got" -eq "$POINTS" ] ||
				fail "$op $(dname "$dom"): only $got crash points (the operation has $kmax)"
			# the world goes; nothing may be left of it
			must "$SPM" image delete "$D" "$I"
			WANT_VOLS= VOL_IMG=()
			check_domain "$D"
			clear_tasks "$SPM"
		done
	done
	echo "MEASURE crash recovery: $crashes crash points, $completions runs to the end, in" \
		"$(elapsed "$t_crash" "$(now)") s; outcomes: $(for k in "${!OUTCOMES[@]}"; do
			printf '%s=%s ' "$k" "${OUTCOMES[$k]}"; done)"
	if [ "$crashes" -ge 30 ] || [ -n "${MH_OPS:-}" ] || [ "$POINTS" -lt 4 ]; then ok; else
		fail "only $crashes crash points (at least 30 wanted)"
	fi
}

# ---- 5. volume leases ------------------------------------------------------------------
# hosts A and B take turns writing a leaf; C is the SPM (its cowpoold must
# stay up: it is killed only in step 3)
section_leases()
{
	need_spm
	C=$SPM A=$((SPM % 3 + 1)) B=$(((SPM + 1) % 3 + 1))
	t0=$(now)
	for D in "$FDOM" "$BDOM"; do
		what="$(dname "$D") domain"
		I=$(uuid) V=$(uuid) TI=$(uuid) TV=$(uuid)
		must "$C" volume create "$D" --image "$I" --volume "$V" --size 16M || abort "volume create"
		must "$A" volume prepare "$D" "$I" "$V" --rw
		expect_eq "$what: rw prepare answers rw" true "$(jq_ .rw)"
		for n in "$B" "$C"; do
			refused "$what: rw prepare on host $n while host $A writes" \
				"*prepare volume $V for writing*held by host $A *" "$n" volume prepare "$D" "$I" "$V" --rw
		done
		must "$A" volume prepare "$D" "$I" "$V" --rw   # again on the holder: no-op
		must "$B" volume prepare "$D" "$I" "$V"        # read-only: no lease
		must "$B" volume teardown "$D" "$I" "$V"
		must "$A" volume teardown "$D" "$I" "$V"
		must "$B" volume prepare "$D" "$I" "$V" --rw
		refused "$what: rw prepare on host $A after the hand-over" "*held by host $B *" \
			"$A" volume prepare "$D" "$I" "$V" --rw
		# the holder's cowpoold dies: sanlock releases its leases.  Bound:
		# release_takeover_max (the release is written as the process dies).
		mh_kill "$B"
		t1=$(now)
		while :; do
			cpj "$A" volume prepare "$D" "$I" "$V" --rw
			T=$(elapsed "$t1" "$(now)")
			[ "$RC" -eq 0 ] && break
			in_range "$T" 0 "$TO_release_takeover_max" || break
			sleep 0.1
		done
		if [ "$RC" -eq 0 ]; then ok; else
			fail "$what: rw prepare on host $A after the holder was killed: $ERR"
		fi
		echo "MEASURE $what: volume lease holder killed -> host $A holds it after $T s"
		mh_start "$B" || abort "restart host $B"
		must "$A" volume teardown "$D" "$I" "$V"
		# a template is used read-only by every host at once; never for writing
		TEMPLATE_IMG=$TI
		must "$C" template create "$D" "$I" --template-image "$TI" --template-volume "$TV"
		for n in "${HOSTS[@]}"; do
			must "$n" volume prepare "$D" "$TI" "$TV"
			expect_eq "$what: template prepared read-only on host $n" false "$(jq_ .rw)"
		done
		refused "$what: rw prepare of a template" "*$TV is a template*" \
			"$A" volume prepare "$D" "$TI" "$TV" --rw
		for n in "${HOSTS[@]}"; do must "$n" volume teardown "$D" "$TI" "$TV"; done
		must "$C" image delete "$D" "$I"
		must "$C" image delete "$D" "$TI"
	done
	clear_tasks "$SPM"
	echo "volume leases: $(elapsed "$t0" "$(now)") s"
}

# ---- 6. bad input ------------------------------------------------------------------------
section_input()
{
	need_spm
	t0=$(now)
	D=$BDOM I=$(uuid) V=$(uuid) X=$(uuid)
	must "$SPM" volume create "$D" --image "$I" --volume "$V" --size 16M --desc "bad input" ||
		abort "volume create"
	other=$((SPM % 3 + 1))
	refused "volume info of an unknown volume" "*$X*" "$SPM" volume info "$D" "$I" "$X"
	refused "volume info in an unknown image" "*$X*" "$other" volume info "$D" "$X" "$V"
	refused "image info of an unknown image" "*image $X*not found*" "$other" image info "$FDOM" "$X"
	refused "domain info of an unknown domain" "*domain $X*not found*" "$other" domain info "$X"
	refused "image list of an unknown domain" "*domain $X*" "$other" image list "$X"
	refused "task get of an unknown task" "*task $X*not found*" "$other" task get "$X"
	refused "merge of an unknown volume" "*$X*" "$SPM" volume merge "$D" "$I" "$X"
	refused "snapshot of an unknown image" "*$X*" "$SPM" image snapshot "$FDOM" "$X"
	# wrong domain type: only a block domain grows by a device
	refused "domain extend of a file domain" "*$FDOM*" "$SPM" domain extend "$FDOM" "$MH_LOOP"
	case $ERR in
	*"not supported"* | *"file domain"* | *EOPNOTSUPP* | *ENOTSUP*) ok ;;
	*) fail "domain extend of a file domain: the error does not say why: $ERR" ;;
	esac
	echo "domain extend of a file domain: $ERR"
	# a full VG: ENOSPC naming the VG; nothing is left behind
	refused "a volume larger than the VG" "*VG $D*insufficient free space*" \
		"$SPM" volume create "$D" --image "$(uuid)" --size 100G --format raw --prealloc
	echo "volume larger than the VG: $ERR"
	WANT_VOLS= VOL_IMG=()
	check_image "$D" "$I" "$V"
	check_domain "$D" "$I"
	# malformed requests reach a daemon that runs with sanlock, too
	out=$(printf '{"jsonrpc":"2.0","method":"spm.status","id":1,}\n[]\n' |
		"$COWPOOL" --socket "$(mh_sock "$other")" rpc --raw 2>&1)
	case $out in *'"code":-32700'*'"code":-32600'*) ok ;; *) fail "malformed requests: $out" ;; esac

	# one byte of the volume's metadata slot, changed on the loop device
	slot=$(lvm_ lvs --noheadings -o lv_tags "$D/$V" 2>/dev/null | tr ',' '\n' | sed -n 's/^ *MD_//p')
	[ -n "$slot" ] || abort "no MD_ tag on $V"
	off=$((MD_OFF + slot * 4096))
	dd if="$MH_LOOP" of=slot.orig bs=512 count=1 iflag=direct,skip_bytes skip="$off" status=none
	cp slot.orig slot.bad
	b=$(od -An -tu1 -j 100 -N 1 slot.orig | tr -d ' ')
	printf "\\$(printf '%03o' $((b ^ 0x5a)))" | dd of=slot.bad bs=1 seek=100 conv=notrunc status=none
	cmp -s slot.orig slot.bad && fail "the byte did not change"
	dd if=slot.bad of="$MH_LOOP" bs=512 count=1 oflag=direct,seek_bytes seek="$off" conv=notrunc status=none
	for n in "$SPM" "$other"; do
		refused "volume info on host $n of a record with a bad byte" \
			"*$D/metadata slot $slot (volume $V)*checksum mismatch*" "$n" volume info "$D" "$I" "$V"
	done
	echo "volume info of the damaged record: $ERR"
	must "$other" image info "$D" "$I"
	expect_eq "image info: the damaged record" "$V EUCLEAN" \
		"$(jq_ '.bad_volumes[].uuid') $(jq_ '.bad_volumes[].errno')"
	expect_eq "image info: no volume guessed from it" "" "$(jq_ '.volumes[].uuid')"
	refused "prepare of a volume whose record is damaged" "*slot $slot*" \
		"$other" volume prepare "$D" "$I" "$V"
	"$COWPOOL" domain inspect --lvm-device "$MH_LOOP" --lvm-system-dir "$LVM_SYSTEM_DIR" \
		"$D" >inspect.out 2>inspect.err
	rc=$?
	if [ "$rc" -ne 0 ] && grep -q "slot $slot (volume $V).*checksum" inspect.out inspect.err; then ok; else
		fail "domain inspect of the damaged domain: exit $rc: $(cat inspect.out inspect.err)"
	fi
	echo "domain inspect: exit $rc: $(grep -h "slot $slot" inspect.out inspect.err | head -n 1)"
	# the original sector back: everything reads again
	dd if=slot.orig of="$MH_LOOP" bs=512 count=1 oflag=direct,seek_bytes seek="$off" conv=notrunc status=none
	must "$other" volume info "$D" "$I" "$V"
	expect_eq "record after repair: description" "bad input" "$(jq_ .description)"
	"$COWPOOL" domain inspect --lvm-device "$MH_LOOP" --lvm-system-dir "$LVM_SYSTEM_DIR" "$D" \
		>inspect.out 2>&1
	expect_eq "domain inspect after repair: exit" 0 "$?"
	must "$SPM" image delete "$D" "$I"
	clear_tasks "$SPM"
	echo "bad input: $(elapsed "$t0" "$(now)") s"
}

# ---- 7. NBD exports ---------------------------------------------------------------------
# host A exports a leaf writable, B and C are refused; the export moves to B
# by unexport; then every host exports it read-only at once
section_exports()
{
	if ! command -v qemu-io >/dev/null 2>&1; then
		echo "SKIP: qemu-io is not installed" >&2
		exit 77
	fi
	need_spm
	C=$SPM A=$((SPM % 3 + 1)) B=$(((SPM + 1) % 3 + 1))
	t0=$(now)
	for D in "$FDOM" "$BDOM"; do
		what="$(dname "$D") domain"
		I=$(uuid) V=$(uuid)
		must "$C" volume create "$D" --image "$I" --volume "$V" --size 16M || abort "volume create"
		must "$A" volume export "$D" "$I" "$V" --rw || abort "volume export"
		U=$(jq_ .uri)
		expect_eq "$what: uri on host $A" "nbd+unix:///$V?socket=$(mh_nbd_sock "$A")" "$U"
		out=$(qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 15M 1M' "$U" 2>&1)
		expect_eq "$what: write through host $A's export: exit" 0 "$?"
		for n in "$B" "$C"; do
			refused "$what: rw export on host $n while host $A exports" \
				"*prepare volume $V for writing*held by host $A *" "$n" volume export "$D" "$I" "$V" --rw
		done
		refused "$what: rw prepare on host $B while host $A exports" "*held by host $A *" \
			"$B" volume prepare "$D" "$I" "$V" --rw
		must "$A" volume unexport "$D" "$I" "$V"
		must "$B" volume export "$D" "$I" "$V" --rw
		expect_eq "$what: host $B exports writable after the unexport" true "$(jq_ .rw)"
		U=$(jq_ .uri)
		out=$(qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 15M 1M' -c 'read -P 0 1M 1M' "$U" 2>&1)
		if [ $? -eq 0 ] && [[ $out != *"verification failed"* ]]; then ok; else
			fail "$what: host $A's writes read through host $B's export: $out"
		fi
		refused "$what: rw export on host $A after the hand-over" "*held by host $B *" \
			"$A" volume export "$D" "$I" "$V" --rw
		must "$B" volume unexport --name "$V"
		for n in "${HOSTS[@]}"; do
			must "$n" volume export "$D" "$I" "$V"
			expect_eq "$what: read-only export on host $n" false "$(jq_ .rw)"
		done
		for n in "${HOSTS[@]}"; do
			out=$(qemu-io -f raw -r -c 'read -P 0x5a 0 1M' "$(mh_nbd_uri "$n" "$V")" 2>&1)
			if [ $? -eq 0 ] && [[ $out != *"verification failed"* ]]; then ok; else
				fail "$what: read through host $n's read-only export: $out"
			fi
		done
		cpj "$A" export list
		expect_eq "$what: export.list on host $A" "$V false" "$(jq_ '[].name') $(jq_ '[].rw')"
		refused "$what: image delete while host $C exports" "*image.delete: *exported read-only*" \
			"$C" image delete "$D" "$I"
		for n in "${HOSTS[@]}"; do must "$n" volume unexport "$D" "$I" "$V"; done
		must "$C" image delete "$D" "$I"
	done
	clear_tasks "$SPM"
	echo "exports: $(elapsed "$t0" "$(now)") s"
}
mh_nbd_uri() { echo "nbd+unix:///$2?socket=$(mh_nbd_sock "$1")"; }

# ---- the sections asked for ------------------------------------------------------------
for s in "${MH_SECTIONS[@]}"; do
	c0=$CP_CHECKS f0=$CP_FAILS t_sec=$(now)
	echo "==== section $s"
	"section_$s"
	echo "section $s: $((CP_CHECKS - c0)) checks passed, $((CP_FAILS - f0)) failed," \
		"$(elapsed "$t_sec" "$(now)") s"
done
cp_finish
