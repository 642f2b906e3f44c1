#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# daemon/cowpoold.h has one section per .c file ("/* ---- tasks.c: ...")
# that declares the file's dmn_* functions.  Fails when a .c file has no
# section or when a section declares nothing.  (No cycle among the files:
# the `deps` test, tests/deps.sh.)
#
# Usage: sections.sh DAEMON_DIR
set -u
dir=${1:?usage: sections.sh DAEMON_DIR}
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

exit $rc
