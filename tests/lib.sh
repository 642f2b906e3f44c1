# SPDX-License-Identifier: GPL-2.0-or-later
# Shared helpers for the compat and integration suites (bash).
# Sourced as: . "$(dirname "$0")/../lib.sh"
#
# Environment:
#   COWPOOL   the cowpool binary under test (set by meson)
#   CP_GEN    the cp_gen data/op generator (set by meson)
#   COWPOOL_ASAN  optional: an ASan/UBSan build of cowpool (integration)
#
# A test calls cp_init (temp dir + cleanup trap; exports COWPOOL_RUN_DIR
# there, so a cowpoold it starts locks its host id in the test's own
# run_dir), reports each failed
# assertion with fail "..." and ends with cp_finish (exit 1 when anything
# failed).  Exit status 77 means a prerequisite is missing (skip).

set -u

CP_FAILS=0
CP_CHECKS=0

cp_init()
{
	: "${COWPOOL:?COWPOOL must point to the cowpool binary}"
	[ -x "$COWPOOL" ] || { echo "COWPOOL=$COWPOOL is not executable" >&2; exit 1; }
	TMP=$(mktemp -d /var/tmp/cowpool-test.XXXXXXXX) || exit 1
	# cowpoold's run_dir (host id lock files): the test's own
	export COWPOOL_RUN_DIR=$TMP/run
	trap 'rm -rf -- "$TMP"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	cd "$TMP" || exit 1
}

# requires CMD...: skip (77) when a prerequisite program is missing.
requires()
{
	local c
	for c in "$@"; do
		if ! command -v "$c" >/dev/null 2>&1; then
			echo "SKIP: $c is not installed" >&2
			exit 77
		fi
	done
}

requires_gen()
{
	: "${CP_GEN:?CP_GEN must point to the cp_gen helper}"
	[ -x "$CP_GEN" ] || { echo "CP_GEN=$CP_GEN is not executable" >&2; exit 1; }
}

fail()
{
	CP_FAILS=$((CP_FAILS + 1))
	echo "FAIL: $*" >&2
}

ok()
{
	CP_CHECKS=$((CP_CHECKS + 1))
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq()
{
	if [ "$2" = "$3" ]; then ok; else fail "$1: expected '$2', got '$3'"; fi
}

cp_finish()
{
	echo "$CP_CHECKS checks passed, $CP_FAILS failed"
	[ "$CP_FAILS" -eq 0 ] || exit 1
	exit 0
}

# run_capture NAME CMD...: run CMD, stdout to NAME.out, stderr to NAME.err,
# exit status in RC.
run_capture()
{
	local name=$1
	shift
	"$@" >"$name.out" 2>"$name.err"
	RC=$?
}

# ---- op scripts (see cp_gen ops) -------------------------------------------

# ops_to_io_args OPSFILE: fill the array IO_ARGS with -c commands that
# qemu-io and cowpool io both understand.
ops_to_io_args()
{
	local k a b c
	IO_ARGS=()
	while read -r k a b c; do
		case $k in
		w) IO_ARGS+=(-c "write -q -P $a $b $c") ;;
		z) IO_ARGS+=(-c "write -q -z $a $b") ;;
		u) IO_ARGS+=(-c "write -q -z -u $a $b") ;;
		d) IO_ARGS+=(-c "discard -q $a $b") ;;
		esac
	done <"$1"
}

# dd_fill FILE PATTERN OFFSET LENGTH
dd_fill()
{
	"$CP_GEN" fill "$2" "$4" |
		dd of="$1" bs=64K iflag=fullblock oflag=seek_bytes seek="$3" \
			conv=notrunc status=none
}

# dd_copy SRC DST OFFSET LENGTH: copy a byte range between two files at
# the same offset.
dd_copy()
{
	dd if="$1" of="$2" bs=64K iflag=skip_bytes,count_bytes,fullblock \
		oflag=seek_bytes skip="$3" seek="$3" count="$4" conv=notrunc \
		status=none
}

# apply_ops_raw OPSFILE REF CLUSTER SIZE [BACKING_VIEW]
# Apply an op script to the raw reference REF of an image of SIZE bytes
# with CLUSTER-byte clusters, the way qemu's qcow2 driver defines the
# result: zero writes read as zeroes; a discard affects only the whole
# clusters inside the range (plus a complete partial cluster at the end
# of the image) and those then read as zeroes, except when BACKING_VIEW is
# given (a compat=0.10 layer with a backing file): there discard changes
# nothing, as in QEMU (version 2 has no zero flag, and deallocating would
# show the backing file's data; BACKING_VIEW, the raw view of the backing
# chain, is kept for the callers).
apply_ops_raw()
{
	local ops=$1 ref=$2 cs=$3 size=$4 bview=${5:-}
	local k a b c s e
	while read -r k a b c; do
		case $k in
		w) dd_fill "$ref" "$a" "$b" "$c" ;;
		z | u) dd_fill "$ref" 0 "$a" "$b" ;;
		d)
			s=$(( (a + cs - 1) / cs * cs ))
			e=$(( a + b ))
			if [ "$e" -ne "$size" ]; then e=$(( e / cs * cs )); fi
			if [ "$s" -lt "$e" ]; then
				[ -n "$bview" ] || dd_fill "$ref" 0 "$s" $((e - s))
			fi
			;;
		esac
	done <"$ops"
}

# ---- on-disk patching -------------------------------------------------------

# rd_be FILE OFFSET NBYTES: print the big-endian unsigned value (decimal).
rd_be()
{
	local hex
	hex=$(od -An -tx1 -v -j "$2" -N "$3" "$1" | tr -d ' \n')
	[ -n "$hex" ] || { echo "rd_be: cannot read $1 at $2" >&2; return 1; }
	printf '%u\n' "0x$hex"
}

# wr_be FILE OFFSET NBYTES VALUE: store VALUE big-endian (VALUE may be hex).
wr_be()
{
	local f=$1 off=$2 n=$3 v=$(( $4 )) i esc=
	for ((i = n - 1; i >= 0; i--)); do
		esc+=$(printf '\\x%02x' $(( (v >> (8 * i)) & 0xff )))
	done
	printf "$esc" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# QCOW2 header fields
qh_l1_size()      { rd_be "$1" 36 4; }
qh_l1_offset()    { rd_be "$1" 40 8; }
qh_rt_offset()    { rd_be "$1" 48 8; }
qh_cluster_bits() { rd_be "$1" 20 4; }

# l1_entry FILE INDEX: the L2 table offset stored in L1[INDEX].
l1_entry()
{
	local l1
	l1=$(qh_l1_offset "$1")
	echo $(( $(rd_be "$1" $((l1 + 8 * $2)) 8) & 0x00fffffffffffe00 ))
}

# l2_entry_pos FILE GUEST_OFFSET: file offset of the L2 entry mapping
# GUEST_OFFSET (standard L2 entries; the L2 table must exist).
l2_entry_pos()
{
	local cb l2bits l2
	cb=$(qh_cluster_bits "$1")
	l2bits=$((cb - 3))
	l2=$(l1_entry "$1" $(( $2 >> (cb + l2bits) )))
	echo $(( l2 + 8 * ( ($2 >> cb) & ((1 << l2bits) - 1) ) ))
}

# refcount_pos FILE HOST_CLUSTER_INDEX: file offset of the 16-bit refcount
# of a host cluster (refcount_bits=16 images only).
refcount_pos()
{
	local cb rt rb per
	cb=$(qh_cluster_bits "$1")
	rt=$(qh_rt_offset "$1")
	per=$(( (1 << cb) / 2 ))
	rb=$(rd_be "$1" $(( rt + 8 * ($2 / per) )) 8)
	echo $(( rb + 2 * ($2 % per) ))
}

# ---- JSON (pretty-printed, one member per line, as qemu-img prints) --------

# json_member FILE KEY: the first value of "KEY" (scalar members only).
json_member()
{
	sed -n "s/^ *\"$2\": \\(.*[^,]\\),\\{0,1\\}\$/\\1/p" "$1" | head -n 1
}

# ---- loop devices and a private LVM configuration -----------------------------

# loop_attach FILE SIZE: make FILE sparse of SIZE, attach it to a free loop
# device and print the device; exits the test if losetup fails.
loop_attach()
{
	local dev
	truncate -s "$2" "$1" || exit 1
	dev=$(losetup -f --show "$1") || { echo "losetup $1 failed" >&2; exit 1; }
	echo "$dev"
}

# lvm_private_conf DIR DEV...: DIR/lvm.conf (for LVM_SYSTEM_DIR=DIR) that
# lets LVM see only the given devices, with activation off, so a test never
# touches the machine's own volume groups.
lvm_private_conf()
{
	local dir=$1 d accept="" devfile=""
	shift
	for d in "$@"; do
		accept="$accept\"a|^$d\$|\", "
	done
	if lvmconfig --type default devices/use_devicesfile >/dev/null 2>&1; then
		devfile="use_devicesfile = 0"
	fi
	mkdir -p "$dir" || exit 1
	cat >"$dir/lvm.conf" <<EOC
devices {
	filter = [ $accept"r|.*|" ]
	$devfile
}
global {
	activation = 0
}
EOC
}

# lvm_requires WHAT: exit 77 unless running as root (WHAT: what needs it)
# with lvm2 and losetup installed; puts /usr/sbin and /sbin on PATH.
lvm_requires()
{
	local c
	if [ "$(id -u)" -ne 0 ]; then
		echo "SKIP: needs root ($1)" >&2
		exit 77
	fi
	for c in lvm losetup; do
		if ! command -v "$c" >/dev/null 2>&1 && [ ! -x "/sbin/$c" ] &&
		   [ ! -x "/usr/sbin/$c" ]; then
			echo "SKIP: $c is not installed" >&2
			exit 77
		fi
	done
	export PATH="$PATH:/usr/sbin:/sbin"
}

# lvm_two_pvs DIR: two sparse 256M loop devices over DIR/pv0 and DIR/pv1
# (LOOPS, A and B; CP_LVM_DEVICES="A,B") and a private LVM configuration
# in $LVM_SYSTEM_DIR that sees only them.  lvm_cleanup undoes it.
lvm_two_pvs()
{
	local f
	for f in pv0 pv1; do
		LOOPS+=("$(loop_attach "$1/$f" 256M)")
	done
	A=${LOOPS[0]}
	B=${LOOPS[1]}
	[ -n "$A" ] && [ -n "$B" ] || exit 1
	lvm_private_conf "$LVM_SYSTEM_DIR" "$A" "$B"
	export CP_LVM_DEVICES="$A,$B"
}

# lvm_cleanup VG: remove VG and the PVs on LOOPS (once the private LVM
# configuration exists), then detach LOOPS.
lvm_cleanup()
{
	local l
	if [ -f "$LVM_SYSTEM_DIR/lvm.conf" ]; then
		vgremove -f "$1" >/dev/null 2>&1
		for l in "${LOOPS[@]}"; do
			pvremove -ff -y "$l" >/dev/null 2>&1
		done
	fi
	for l in "${LOOPS[@]}"; do
		losetup -d "$l" 2>/dev/null
	done
}

# lvm_report lvs|vgs|pvs ARGS...: plain text, no header, sizes in bytes
lvm_report()
{
	"$@" --noheadings --units b --nosuffix 2>/dev/null |
		sed 's/^ *//; s/ *$//'
}

# ---- tests that drive a C helper --------------------------------------------
# The test defines h CMD... to run its helper $H: output in h.out, errors
# in h.err, status in RC.

# h_must CMD...: the helper must succeed
h_must()
{
	h "$@"
	if [ "$RC" -ne 0 ]; then
		fail "${H##*/} $*: $(cat h.err)"
		return 1
	fi
	ok
}

# h_must_fail ERRNO REGEX CMD...: the helper must fail with errno ERRNO and
# a message matching REGEX
h_must_fail()
{
	local e=$1 re=$2
	shift 2
	h "$@"
	if [ "$RC" -eq 0 ]; then
		fail "${H##*/} $*: succeeded, expected errno $e"
	elif grep -Eq "errno $e: .*$re" h.err; then
		ok
	else
		fail "${H##*/} $*: expected errno $e /$re/, got: $(cat h.err)"
	fi
}
