# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers for the nbd*.sh integration tests (sourced after ../lib.sh).
#
# nbd_start NAME ARGS... : start `cowpool nbd ARGS -k $TMP/NAME.sock --fork
#   --pid-file $TMP/NAME.pid` (returns once the socket accepts
#   connections); the server is killed on exit.  qnbd_start does the same
#   with qemu-nbd.  nbd_uri NAME EXPORT prints the nbd+unix URI.

NBD_PIDFILES=""

nbd_cleanup()
{
	local f
	for f in $NBD_PIDFILES; do
		[ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	rm -rf -- "$TMP"
}

nbd_init()
{
	cp_init
	trap 'nbd_cleanup' EXIT
}

nbd_start()
{
	local name=$1
	shift
	NBD_PIDFILES="$NBD_PIDFILES $TMP/$name.pid"
	"$COWPOOL" nbd "$@" -k "$TMP/$name.sock" --fork \
		--pid-file "$TMP/$name.pid"
}

qnbd_start()
{
	local name=$1
	shift
	NBD_PIDFILES="$NBD_PIDFILES $TMP/$name.pid"
	qemu-nbd "$@" -k "$TMP/$name.sock" --fork --pid-file "$TMP/$name.pid"
}

# nbd_stop NAME: SIGTERM and wait for the process to exit.
nbd_stop()
{
	local pid
	pid=$(cat "$TMP/$1.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	timeout 30 tail --pid="$pid" -f /dev/null
}

nbd_pid()
{
	cat "$TMP/$1.pid"
}

nbd_uri()
{
	echo "nbd+unix:///$2?socket=$TMP/$1.sock"
}

# nbd_fds NAME: number of open descriptors of the server.
nbd_fds()
{
	ls "/proc/$(nbd_pid "$1")/fd" | wc -l
}

# nbd_wait_fds NAME COUNT: wait (bounded) until the server holds COUNT
# descriptors again: connection threads close theirs after the client has
# gone, so the count settles shortly after the clients exit.
nbd_wait_fds()
{
	local i
	for i in $(seq 1 100); do
		[ "$(nbd_fds "$1")" -le "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
