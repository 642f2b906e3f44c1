#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# daemon/'s files do not use each other in a circle.  daemon/cowpoold.h
# has one section per .c file ("/* ---- tasks.c: ..."); a file uses
# another when it names a dmn_* function or macro declared in the other's
# section.  Fails when a .c file has no section, when a section declares
# nothing, or when the use graph has a cycle (tsort finds it); prints the
# graph.
#
# Usage: deps.sh DAEMON_DIR
set -u
dir=${1:?usage: deps.sh DAEMON_DIR}
hdr=$dir/cowpoold.h
[ -r "$hdr" ] || { echo "no $hdr"; exit 1; }

declare -A owner count
sec=
while IFS= read -r line; do
	if [[ $line =~ ^/\*\ ----\ ([a-z_]+\.c): ]]; then
		sec=${BASH_REMATCH[1]}
		count[$sec]=0
		continue
	fi
	[ -z "$sec" ] && continue
	# declarations: "name(" at a word start; macros: "#define name("
	for sym in $(grep -oE '\bdmn_[a-z0-9_]+ *\(' <<<"$line" | tr -d ' ('); do
		owner[$sym]=$sec
		count[$sec]=$((count[$sec] + 1))
	done
done <"$hdr"

rc=0
for c in "$dir"/*.c; do
	f=$(basename "$c")
	if [ -z "${count[$f]+x}" ]; then
		echo "FAIL: $f has no section in cowpoold.h"
		rc=1
	elif [ "${count[$f]}" = 0 ] && [ "$f" != main.c ]; then
		echo "FAIL: the section of $f declares no dmn_ function"
		rc=1
	fi
done

edges=$(for c in "$dir"/*.c; do
	f=$(basename "$c")
	# the file's text without comments and strings is close enough:
	# names are unique and prefixed
	for sym in "${!owner[@]}"; do
		[ "${owner[$sym]}" = "$f" ] && continue
		grep -qE "\\b$sym\\b" "$c" && echo "$f ${owner[$sym]}"
	done
done | sort -u)
echo "uses (file -> file it calls into):"
sed 's/^/  /' <<<"$edges"
[ -n "$edges" ] || { echo "FAIL: no uses found (parsing broken?)"; exit 1; }
if ! out=$(tsort <<<"$edges" 2>&1 >/dev/null) || [ -n "$out" ]; then
	echo "FAIL: a cycle:"
	echo "$out"
	rc=1
fi
exit $rc
