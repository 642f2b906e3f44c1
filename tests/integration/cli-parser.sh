#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# integration: the option parser every qemu-img-style command shares
# (cli/opt.c): --help made from each command's table, short options
# (clustered, value attached or separate), long options (--opt=value,
# --opt value, unique prefixes), options after the file names, "--", the
# error line and exit status of an unknown option, a missing value and a
# value given to a flag.  cowpool only: no qemu-img needed.

. "$(dirname "$0")/../lib.sh"
cp_init

# run ARGS...: cowpool ARGS with stdout in r.out, stderr in r.err, status
# in $rc.
run()
{
	"$COWPOOL" "$@" >r.out 2>r.err
	rc=$?
}

# err_is TAG EXPECTED_LINE ARGS...: fails with exit 1 and exactly this
# line on stderr, nothing on stdout.
err_is()
{
	local tag=$1 want=$2
	shift 2
	run "$@"
	expect_eq "$tag: exit status" 1 "$rc"
	expect_eq "$tag: stderr" "$want" "$(cat r.err)"
	expect_eq "$tag: stdout" "" "$(cat r.out)"
}

# ---- --help lists every option of the command's table ------------------------
# help_has CMD OPTION...: "cowpool CMD --help" exits 0, starts with the
# usage line and has a line starting with each OPTION spelling.
help_has()
{
	local cmd=$1 o
	shift
	run "$cmd" --help
	expect_eq "$cmd --help: exit status" 0 "$rc"
	expect_eq "$cmd --help: usage line" "usage: cowpool $cmd" \
		"$(head -n 1 r.out | cut -d' ' -f1-3)"
	for o in "$@"; do
		if grep -qF -- "  $o " r.out; then ok; else
			fail "$cmd --help does not list '$o': $(tr '\n' '|' <r.out)"
		fi
	done
	"$COWPOOL" "$cmd" -h >h.out 2>&1
	expect_eq "$cmd -h = --help" "$(cat r.out)" "$(cat h.out)"
}

help_has amend "-o options" "-f fmt" "-t cache" "-i aio" "-p" \
	"--output=json" "-q" "--force"
help_has bench "-c count" "-d depth" "-f fmt" "-i aio" "-n" "-o offset" \
	"-s size" "-S step" "-t cache" "-w" "--pattern=byte" \
	"--flush-interval=n" "--no-drain" "--random" "--output=json" "-q" \
	"-U, --force-share"
help_has nbd "-f, --format=fmt" "-k, --socket=SOCKET" "-b, --bind=ADDR" \
	"-p, --port=PORT" "-x, --export-name=NAME" "-r, --read-only" \
	"-e, --shared=SHARED" "-t, --persistent" "-A, --allocation-depth" \
	"--fork" "--pid-file=F" "--cache=MODE" "--aio=MODE" "--discard=M" \
	"--detect-zeroes=M" "--tls-creds=DIR" "--tls-psk=FILE"
help_has chain "-f fmt" "--output=ofmt" "-T src_cache" "-i aio" \
	"-U, --force-share"
help_has check "-f fmt" "--output=ofmt" "-r, --repair=leaks|all" \
	"-T src_cache" "-i aio" "-q" "-U, --force-share"
help_has commit "-f fmt" "-t cache" "-i aio" "-b base" "-d" \
	"-r rate_limit" "-p" "--output=json" "-q"
help_has compare "-f fmt" "-F fmt" "-s" "-T src_cache" "-i aio" "-p" "-q" \
	"-U, --force-share"
help_has convert "-f fmt" "-O output_fmt" "-o options" "-B backing" \
	"-F backing_fmt" "-n" "--target-is-zero" "-S size" "-t cache" \
	"-T src_cache" "-i aio" "-c" "-m num" "-W" "-p" "--output=json" "-q" \
	"-C" "-U, --force-share"
help_has create "-f fmt" "-b backing" "-F backing_fmt" "-o options" "-u" \
	"-q"
help_has info "-f fmt" "--output=ofmt" "--backing-chain" "-T src_cache" \
	"-i aio" "-U, --force-share"
help_has io "-c, --cmd=command" "-f, --format=fmt" "-r, --read-only" \
	"-t, --cache=cache" "-n, --nocache" "-i, --aio=aio" "-U, --force-share"
help_has map "-f fmt" "--output=ofmt" "--start-offset=offset" \
	"--max-length=len" "-T src_cache" "-i aio" "-U, --force-share"
help_has measure "-O output_fmt" "-o options" "--size=N" "-f fmt" \
	"--output=ofmt" "-T src_cache" "-i aio" "-U, --force-share"
help_has rebase "-b backing" "-F backing_fmt" "-u" "-f fmt" "-t cache" \
	"-T src_cache" "-i aio" "-p" "--output=json" "-q" "-U, --force-share"
help_has resize "-f fmt" "--preallocation=off|metadata|falloc|full" \
	"--shrink" "-t cache" "-i aio" "-q"
# a unique prefix of --help is --help
"$COWPOOL" info --he >h.out 2>&1
expect_eq "info --he = --help" "$("$COWPOOL" info --help)" "$(cat h.out)"
# refused options are accepted by the parser but not advertised
run info --help
if grep -q -- "--object\|--image-opts" r.out; then
	fail "info --help lists the refused --object/--image-opts"
else
	ok
fi

# ---- short options ------------------------------------------------------------
# clustered flags: -q and -f with its value attached
run create -qfraw c.raw 64k
expect_eq "create -qfraw: exit status" 0 "$rc"
expect_eq "create -qfraw: quiet" "" "$(cat r.out)"
expect_eq "create -qfraw: size" 65536 "$(stat -c %s c.raw)"
run create -q -f qcow2 -o cluster_size=4k -o lazy_refcounts=on img.qcow2 1M
expect_eq "create with two -o: exit status" 0 "$rc"
run info --output=json img.qcow2
expect_eq "two -o lists joined: cluster size" 4096 \
	"$(json_member r.out cluster-size)"
expect_eq "two -o lists joined: lazy refcounts" true \
	"$(json_member r.out lazy-refcounts)"
run check -qU img.qcow2
expect_eq "check -qU: exit status" 0 "$rc"
expect_eq "check -qU: quiet" "" "$(cat r.out)"
run check -Uf qcow2 img.qcow2
expect_eq "check -Uf qcow2: exit status" 0 "$rc"
run check -fraw img.qcow2
expect_eq "check -fraw: the attached value is the format" \
	"cowpool: img.qcow2: this image format (raw) does not support checks" "$(cat r.err)"

# ---- long options, permutation, "--" --------------------------------------------
"$COWPOOL" info --output=json img.qcow2 >ref.json
for args in "--output json img.qcow2" "--out=json img.qcow2" \
	"img.qcow2 --output=json" "-U img.qcow2 --output json"; do
	# shellcheck disable=SC2086
	run info $args
	expect_eq "info $args: exit status" 0 "$rc"
	expect_eq "info $args: same JSON as --output=json" \
		"$(cat ref.json)" "$(cat r.out)"
done
run create -q -f raw -- -dash.raw 4k
expect_eq "create -- -dash.raw: exit status" 0 "$rc"
expect_eq "create -- -dash.raw: created" 4096 "$(stat -c %s -- -dash.raw)"
# resize takes the size off before parsing: a negative size is no option
run resize -q -f raw --shrink c.raw -32k
expect_eq "resize -32k: exit status" 0 "$rc"
expect_eq "resize -32k: size" 32768 "$(stat -c %s c.raw)"
# io stops at the file name: what follows is no option
err_is "io: option after the file" "cowpool: io: expecting one image file name" \
	io -c 'read 0 512' img.qcow2 -r
run io --read-only --cmd='read -qv 0 512' --cmd 'read -P 0 -q 0 512' img.qcow2
expect_eq "io long options and clustered read flags: exit status" 0 "$rc"

# ---- errors: one line, the command's name, exit status 1 --------------------------
err_is "unknown long option" "cowpool: info: unrecognized option '--bogus'" \
	info --bogus img.qcow2
err_is "unknown long option with a value" \
	"cowpool: info: unrecognized option '--bogus=1'" info --bogus=1 img.qcow2
err_is "ambiguous prefix" "cowpool: convert: unrecognized option '--t'" \
	convert --t img.qcow2 x.raw
err_is "unknown short option" "cowpool: check: invalid option -- 'Z'" \
	check -Z img.qcow2
err_is "unknown short option in a cluster" \
	"cowpool: check: invalid option -- 'Z'" check -qZ img.qcow2
err_is "missing value of a short option" \
	"cowpool: info: option '-f' requires an argument" info -f
err_is "missing value in a cluster" \
	"cowpool: check: option '-f' requires an argument" check -qf
err_is "missing value of a long option" \
	"cowpool: info: option '--output' requires an argument" info --output
err_is "value given to a flag" \
	"cowpool: resize: option '--shrink' doesn't allow an argument" \
	resize --shrink=1 c.raw 1M
err_is "refused option" "cowpool: info: --image-opts is not supported" \
	info --image-opts img.qcow2
err_is "bad value" "cowpool: --output must be used with human or json as argument, not 'xml'" \
	info --output=xml img.qcow2
err_is "io command option" "cowpool: read: invalid option -- 'x'" \
	io -c 'read -x 0 512' img.qcow2
# in command-line order: the first bad option is the one reported
err_is "first error wins (format)" \
	"cowpool: unknown format 'nosuch' (supported: qcow2, raw)" \
	info -f nosuch --bogus img.qcow2
err_is "first error wins (option)" "cowpool: info: unrecognized option '--bogus'" \
	info --bogus -f nosuch img.qcow2
# --help after a bad option is not reached; before one, it wins
err_is "bad option before --help" "cowpool: map: invalid option -- 'Z'" \
	map -Z --help
run map --help -Z
expect_eq "--help before a bad option: exit status" 0 "$rc"
# ---- the daemon verbs and rpc share the parser (no daemon needed: the
# options are refused before any connection) -----------------------------------
run volume info --bogus
expect_eq "volume info --bogus: exit status" 2 "$rc"
expect_eq "volume info --bogus: error and usage" \
	"cowpool: info: unrecognized option '--bogus'|usage: cowpool volume info DOMAIN IMAGE VOLUME [--output=json]" \
	"$(tr '\n' '|' <r.err | sed 's/|$//')"
run volume create --size
expect_eq "volume create --size: exit status" 2 "$rc"
expect_eq "volume create --size: missing value" \
	"cowpool: create: option '--size' requires an argument" \
	"$(head -n 1 r.err)"
run rpc --bogus
expect_eq "rpc --bogus: exit status" 2 "$rc"
expect_eq "rpc --bogus: error" "cowpool: rpc: unrecognized option '--bogus'" \
	"$(cat r.err)"
run rpc --help
expect_eq "rpc --help: exit status" 0 "$rc"
expect_eq "rpc --help lists --raw once" 1 "$(grep -c -- '^  --raw ' r.out)"
no_side_effects=$(ls)
expect_eq "no stray files" "-dash.raw c.raw h.out img.qcow2 r.err r.out ref.json" \
	"$(echo $no_side_effects)"

cp_finish
