#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# run_fuzz.sh FUZZER CORPUS ARTIFACT_PREFIX [libFuzzer options...]
#
# Runs FUZZER over a scratch copy of CORPUS (libFuzzer adds the inputs it
# finds to its first corpus directory, and the committed corpus must stay
# as committed).  Crash, leak and timeout inputs are written with
# ARTIFACT_PREFIX (a directory ending in '/').  The copy is removed on any
# exit; the fuzzer's exit status is returned.
set -u
if [ $# -lt 3 ]; then
	echo "usage: $0 FUZZER CORPUS ARTIFACT_PREFIX [libFuzzer options...]" >&2
	exit 2
fi
fuzzer=$1 corpus=$2 prefix=$3
shift 3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cowpool-fuzz.XXXXXXXX") || exit 1
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cp -R -- "$corpus"/. "$tmp"/ || exit 1
"$fuzzer" -artifact_prefix="$prefix" "$@" "$tmp"
