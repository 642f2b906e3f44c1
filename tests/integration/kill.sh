#!/bin/bash
# kill -9 the real cowpool at seeded points of commit, rebase and convert -n.
#
# blockcore's CP_FAULT_KILL_AFTER_WRITES=N makes the process SIGKILL itself
# just before its (N+1)th write request, so every point is reproducible
# from the seed (KILL_SEED, default 1).  After each kill, once the image
# locks of the killed process are gone (cp_hold -W: the kernel drops them
# after the process's last in-flight io_uring requests have finished):
#   - qemu-img check finds no corruption in any image (leaks are allowed);
#   - the chain still reads exactly the reference content;
#   - running the same command again succeeds, and the result equals the
#     reference (qemu-img compare) and checks clean.
# Points: 200 for commit, 60 each for rebase and convert -n.
. "$(dirname "$0")/../lib.sh"
requires qemu-img qemu-io
requires_gen
: "${CP_HOLD:?CP_HOLD must point to the cp_hold helper (tests/compat)}"
cp_init

SEED=${KILL_SEED:-1}
SIZE=$((32 << 20))

# pick N distinct seeded points in [0, TOTAL)
points()
{
	local n=$1 total=$2
	awk -v n="$n" -v t="$total" -v s="$SEED" 'BEGIN {
		srand(s);
		if (n >= t) { for (i = 0; i < t; i++) print i; exit }
		while (c < n) { p = int(rand() * t); if (!(p in seen)) { seen[p] = 1; print p; c++ } }
	}' | sort -n
}

# count_writes CMD...: number of write requests CMD makes
count_writes()
{
	CP_FAULT_COUNT_WRITES=1 "$@" >/dev/null 2>cw.err || {
		fail "dry run failed: $* : $(cat cw.err)"
		return 1
	}
	sed -n 's/^cp-writes: //p' cw.err | tail -1
}

# check_ok IMG CONTEXT: qemu-img check exit 0 (clean) or 3 (leaks only)
check_ok()
{
	qemu-img check -q "$1" >chk.out 2>&1
	local rc=$?
	if [ $rc = 0 ] || [ $rc = 3 ]; then ok; else fail "$2: qemu-img check $1 exit $rc: $(head -3 chk.out)"; fi
}

same_as()
{
	if qemu-img compare -q "$1" "$2" >cmp.out 2>&1; then ok; else
		fail "$3: $1 differs from $2: $(cat cmp.out)"; fi
}

# ---- the images ------------------------------------------------------------
mkimg()
{
	local img=$1 backing=$2 seed=$3 count=$4
	if [ -n "$backing" ]; then
		qemu-img create -q -f qcow2 -b "$backing" -F qcow2 "$img" "$SIZE"
	else
		qemu-img create -q -f qcow2 "$img" "$SIZE"
	fi
	"$CP_GEN" ops "$seed" "$count" "$SIZE" 65536 10 0 >"$img.ops"
	ops_to_io_args "$img.ops"
	qemu-io -f qcow2 "${IO_ARGS[@]}" "$img" >/dev/null || fail "qemu-io on $img"
}

mkdir pristine
(cd pristine && mkimg base.qcow2 "" 11 120 && mkimg mid.qcow2 base.qcow2 12 150 &&
	mkimg top.qcow2 mid.qcow2 13 400)
qemu-img convert -O raw pristine/top.qcow2 ref.raw

fresh()
{
	rm -rf w
	cp -r pristine w
}

# ---- commit: top into mid -------------------------------------------------------
fresh
total=$(count_writes "$COWPOOL" commit w/top.qcow2) || cp_finish
[ "${total:-0}" -ge 200 ] && ok || fail "commit made only ${total:-0} writes; need >= 200 points"
n=0
for k in $(points 200 "$total"); do
	fresh
	CP_FAULT_KILL_AFTER_WRITES=$k "$COWPOOL" commit w/top.qcow2 >/dev/null 2>&1
	rc=$?
	"$CP_HOLD" -W w/*.qcow2  # its last requests finished
	[ $rc = 137 ] && ok || fail "commit kill at $k: exit $rc, expected 137 (SIGKILL)"
	for i in base mid top; do check_ok w/$i.qcow2 "commit kill at $k"; done
	same_as w/top.qcow2 ref.raw "commit kill at $k (chain view)"
	"$COWPOOL" commit w/top.qcow2 >rerun.out 2>&1 || fail "commit re-run after kill at $k: $(cat rerun.out)"
	same_as w/top.qcow2 ref.raw "commit re-run after $k (chain)"
	same_as w/mid.qcow2 ref.raw "commit re-run after $k (mid holds everything)"
	check_ok w/mid.qcow2 "commit re-run after $k"
	n=$((n + 1))
done
echo "commit: $n kill points of $total writes"

# ---- rebase (safe): top from mid onto base ------------------------------------------
fresh
total=$(count_writes "$COWPOOL" rebase -b base.qcow2 -F qcow2 w/top.qcow2) || cp_finish
for k in $(points 60 "$total"); do
	fresh
	CP_FAULT_KILL_AFTER_WRITES=$k "$COWPOOL" rebase -b base.qcow2 -F qcow2 w/top.qcow2 >/dev/null 2>&1
	rc=$?
	"$CP_HOLD" -W w/*.qcow2  # its last requests finished
	[ $rc = 137 ] && ok || fail "rebase kill at $k: exit $rc"
	check_ok w/top.qcow2 "rebase kill at $k"
	same_as w/top.qcow2 ref.raw "rebase kill at $k"
	"$COWPOOL" rebase -b base.qcow2 -F qcow2 w/top.qcow2 >rerun.out 2>&1 || fail "rebase re-run after $k: $(cat rerun.out)"
	same_as w/top.qcow2 ref.raw "rebase re-run after $k"
	bf=$(qemu-img info --output=json w/top.qcow2 | sed -n 's/.*"backing-filename": "\([^"]*\)".*/\1/p')
	expect_eq "backing after rebase re-run ($k)" base.qcow2 "$bf"
done
echo "rebase: kill points of $total writes done"

# ---- convert -n into an existing target --------------------------------------------
fresh
qemu-img create -q -f qcow2 target.qcow2 "$SIZE"
cp target.qcow2 target.pristine
total=$(count_writes "$COWPOOL" convert -n -O qcow2 w/top.qcow2 target.qcow2) || cp_finish
for k in $(points 60 "$total"); do
	cp target.pristine target.qcow2
	CP_FAULT_KILL_AFTER_WRITES=$k "$COWPOOL" convert -n -O qcow2 w/top.qcow2 target.qcow2 >/dev/null 2>&1
	rc=$?
	"$CP_HOLD" -W w/*.qcow2 target.qcow2  # its last requests finished
	[ $rc = 137 ] && ok || fail "convert kill at $k: exit $rc"
	check_ok target.qcow2 "convert kill at $k"
	"$COWPOOL" convert -n -O qcow2 w/top.qcow2 target.qcow2 >rerun.out 2>&1 || fail "convert re-run after $k: $(cat rerun.out)"
	same_as target.qcow2 ref.raw "convert re-run after $k"
done
echo "convert -n: kill points of $total writes done"

cp_finish
