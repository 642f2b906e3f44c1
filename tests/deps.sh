#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# No source file uses another in a circle, within a folder or across
# folders.  A file uses another when its object file references a symbol
# (a function or a variable, a dispatch table included) that the other's
# object defines; the graph of all the folders' files must have no cycle
# (tsort finds it).  The one cycle allowed is qcow/'s cache.c <-> refcount.c
# (the cache writes back refcount blocks, the refcounts live in the cache):
# the two count as one node, so a longer cycle through them still fails.
# Prints the graph.
#
# Usage: deps.sh BUILD_DIR FOLDER...   (objects in BUILD_DIR/FOLDER/*.p/)
set -u
build=${1:?usage: deps.sh BUILD_DIR FOLDER...}
shift
[ $# -gt 0 ] || { echo "usage: deps.sh BUILD_DIR FOLDER..."; exit 1; }

# node name of an object: folder/file.c, the allowed pair merged
node() {
	local f=$1 d=$2 n
	n=$(basename "$f" .o)
	case "$d/$n" in
	qcow/cache.c | qcow/refcount.c) echo "qcow/cache.c+refcount.c" ;;
	*) echo "$d/$n" ;;
	esac
}

# the functions an object calls (or tail-calls) from its code: call
# relocations in its .text sections (x86-64, AArch64)
calls() {
	readelf -rW "$1" | awk '
		/^Relocation section/ { text = ($3 ~ /^.\.rela\.text/) ; next }
		text && ($3 == "R_X86_64_PLT32" ||
			 $3 == "R_AARCH64_CALL26" || $3 == "R_AARCH64_JUMP26") {
			sym = $5; sub(/@.*/, "", sym); print sym
		}' | sort -u
}

declare -A def
objs=()
for d in "$@"; do
	found=0
	for o in "$build/$d"/*.p/*.c.o; do
		[ -e "$o" ] || continue
		found=1
		objs+=("$d:$o")
		n=$(node "$o" "$d")
		while read -r sym; do
			def[$sym]=$n
		done < <(nm --defined-only -g "$o" | awk 'NF == 3 { print $3 }')
	done
	[ $found = 1 ] || { echo "FAIL: no objects in $build/$d/*.p/"; exit 1; }
done

edges=$(for e in "${objs[@]}"; do
	d=${e%%:*} o=${e#*:}
	n=$(node "$o" "$d")
	calls "$o" | while read -r sym; do
		t=${def[$sym]-}
		[ -n "$t" ] && [ "$t" != "$n" ] && echo "$n $t"
	done
done | sort -u)
echo "uses (file -> file it calls into):"
sed 's/^/  /' <<<"$edges"
[ -n "$edges" ] || { echo "FAIL: no uses found (nm broken?)"; exit 1; }
if ! out=$(tsort <<<"$edges" 2>&1 >/dev/null) || [ -n "$out" ]; then
	echo "FAIL: a cycle:"
	echo "$out"
	exit 1
fi
echo "no cycle among the files of: $*"
