#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpool nbd against hostile clients (nbd_raw.py, a raw-socket client):
# malformed options, bad magic, unknown commands and flags, out-of-range
# and oversized requests, writes to a read-only export, clients that
# disconnect mid-request or stall in the handshake, 500 concurrent
# connections, the -e client limit, and read replies whose holes follow
# the image's allocation (not zero bytes).  After each the server must still
# serve and hold no more descriptors than it did before.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
requires qemu-img qemu-io python3 nbdinfo
NBD_RAW=$(cd "$(dirname "$0")" && pwd)/nbd_raw.py
nbd_init
RAW="python3 $NBD_RAW"

qemu-img create -q -f qcow2 disk.qcow2 64M
qemu-io -c "write -P 0xaa 0 4M" -c "write -P 0 4M 64k" disk.qcow2 \
	>/dev/null || fail "qemu-io"

# raw_case SERVER CASE EXPORT [ARGS]: run a case, then check the server
# still answers and its descriptor count is back to the baseline.
raw_case()
{
	local srv=$1 case=$2 exp=$3
	shift 3
	if $RAW "$case" "$TMP/$srv.sock" "$exp" "$@"; then ok; else
		fail "$case against $srv"
	fi
	if nbdinfo "$(nbd_uri "$srv" "$exp")" >/dev/null; then ok; else
		fail "$srv does not serve after $case"
	fi
	if nbd_wait_fds "$srv" "$BASE_FDS"; then ok; else
		fail "$srv holds $(nbd_fds "$srv") descriptors after $case, had $BASE_FDS"
	fi
}

ulimit -n 4096
nbd_start rw -e 0 -t -x vol -D "test volume" --handshake-limit 2 \
	disk.qcow2 || fail "start rw"
BASE_FDS=$(nbd_fds rw)
for c in options badmagic requests midrequest stall; do
	raw_case rw "$c" vol
done
raw_case rw many vol 500
raw_case rw chunks vol $((4 << 20)) $((8 << 20))
$RAW info "$TMP/rw.sock" vol >info.out || fail "INFO"
grep -qx "description=test volume" info.out && ok || fail "description"
nbd_stop rw
qemu-img check -q disk.qcow2 && ok || fail "disk.qcow2 does not check clean"

nbd_start ro -r -e 0 -t -x vol disk.qcow2 || fail "start ro"
BASE_FDS=$(nbd_fds ro)
raw_case ro requests-ro vol
qemu-io -f raw -c "write 0 4k" "$(nbd_uri ro vol)" >/dev/null 2>&1 &&
	fail "qemu-io wrote to a read-only export" || ok
nbd_stop ro

# -e 2: a third client waits in the backlog until one leaves
nbd_start lim -e 2 -t -x vol disk.qcow2 || fail "start lim"
python3 - "$TMP/lim.sock" <<'PY' && ok || fail "-e 2 limit"
import socket, sys
socks = []
for i in range(3):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(sys.argv[1])
    socks.append(s)
assert len(socks[0].recv(18)) == 18 and len(socks[1].recv(18)) == 18
try:
    socks[2].recv(18)
    sys.exit("third client was served over the limit")
except socket.timeout:
    pass
socks[0].close()
socks[2].settimeout(30)
assert len(socks[2].recv(18)) == 18, "third client never served"
PY
nbd_stop lim

cp_finish
