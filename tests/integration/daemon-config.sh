#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpoold refuses a bad configuration at start, naming the key (and
# file:line or the flag), exit status 2, before it creates its socket:
# file_root missing, relative or not a directory; lvm_device missing;
# duplicate keys; numbers outside their documented range; log_file
# relative; socket_group, disk_owner, disk_group unknown; run_dir
# relative.  A good file with every key starts, its host id's lock file
# in its run_dir.
#
# Environment: COWPOOL, COWPOOLD (meson).
here=$(dirname "$0")
. "$here/../lib.sh"
cp_init
. "$here/daemon-lib.sh"

SOCK=$TMP/run/cowpoold.sock
mkdir -p root
touch notadir

# refused WHAT REGEX CONFIG-LINES...: a config file with host_id = 1,
# sanlock = no, the socket and the lines; cowpoold must exit 2 saying REGEX.
refused()
{
	local what=$1 re=$2 kv
	shift 2
	printf 'host_id = 1\nsanlock = no\nsocket = %s\n' "$SOCK" >c.conf
	for kv in "$@"; do echo "$kv" >>c.conf; done
	run_capture cf timeout 30 "$COWPOOLD" -c c.conf
	expect_eq "$what: exit" 2 "$RC"
	expect_match "$what: message" "$re" cf.err
	if [ -e "$SOCK" ]; then fail "$what: socket created"; rm -f "$SOCK"; else ok; fi
}

refused "file_root missing" "c.conf:4: file_root: $TMP/nope: No such file or directory" \
	"file_root = $TMP/nope"
refused "file_root relative" "c.conf:4: file_root: 'root' is not an absolute path" \
	"file_root = root"
refused "file_root not a directory" "c.conf:4: file_root: $TMP/notadir is not a directory" \
	"file_root = $TMP/notadir"
refused "file_root twice" "c.conf:5: file_root: $TMP/root is given twice" \
	"file_root = $TMP/root" "file_root = $TMP/root"
refused "lvm_device missing" "c.conf:4: lvm_device: /dev/cowpool-no-such-dev: No such file or directory" \
	"lvm_device = /dev/cowpool-no-such-dev"
refused "lvm_device not a device" "c.conf:4: lvm_device: $TMP/notadir is not a block device" \
	"lvm_device = $TMP/notadir"
refused "duplicate key" "c.conf:5: duplicate key 'monitor_interval' \\(first set on line 4\\)" \
	"monitor_interval = 5" "monitor_interval = 6"
refused "duplicate host_id" "c.conf:4: duplicate key 'host_id' \\(first set on line 1\\)" \
	"host_id = 2"
refused "io_timeout 0" "c.conf:4: invalid value '0' for io_timeout \\(expected 1..255 seconds\\)" \
	"io_timeout = 0"
refused "io_timeout 256" "c.conf:4: invalid value '256' for io_timeout \\(expected 1..255 seconds\\)" \
	"io_timeout = 256"
refused "monitor_interval range" "invalid value '3601' for monitor_interval \\(expected 1..3600 seconds\\)" \
	"monitor_interval = 3601"
refused "max_connections range" "invalid value '0' for max_connections \\(expected 1..10000\\)" \
	"max_connections = 0"
refused "idle_timeout range" "invalid value '86401' for idle_timeout" \
	"idle_timeout = 86401"
refused "request_timeout range" "invalid value '0' for request_timeout" \
	"request_timeout = 0"
refused "max_request range" "invalid value '1k' for max_request \\(expected 4096..67108864 bytes\\)" \
	"max_request = 1k"
refused "max_answer not a size" "invalid value 'lots' for max_answer" \
	"max_answer = lots"
refused "log_file relative" "log_file: 'd.log' is not an absolute path" \
	"log_file = d.log"
refused "socket_group unknown" "socket_group: no group 'cowpool-no-such-group'" \
	"socket_group = cowpool-no-such-group"
refused "allowed_uids unknown" "allowed_uids: no user 'cowpool-no-such-user'" \
	"allowed_uids = 0, cowpool-no-such-user"
refused "disk_owner unknown" "c.conf:4: disk_owner: unknown user 'cowpool-no-such-user'" \
	"disk_owner = cowpool-no-such-user"
refused "disk_group unknown" "c.conf:4: disk_group: unknown group 'cowpool-no-such-group'" \
	"disk_group = cowpool-no-such-group"
refused "run_dir relative" "c.conf:4: run_dir: 'run' is not an absolute path" \
	"run_dir = run"

# flags are checked the same way, naming the flag
run_capture fl timeout 30 "$COWPOOLD" --host-id 1 --sanlock no --socket "$SOCK" --io-timeout 300
expect_eq "--io-timeout: exit" 2 "$RC"
expect_match "--io-timeout: message" "--io-timeout: invalid value '300' for io_timeout" fl.err
run_capture fl2 timeout 30 "$COWPOOLD" --host-id 1 --sanlock no --socket "$SOCK" --file-root relative/dir
expect_eq "--file-root relative: exit" 2 "$RC"
expect_match "--file-root relative: message" "--file-root: file_root: 'relative/dir' is not an absolute path" fl2.err

# a good file with every new key starts
printf 'host_id = 1\nsanlock = no\nsocket = %s\nfile_root = %s\nio_timeout = 20\nmax_connections = 5\nidle_timeout = 0\nrequest_timeout = 5\nmax_request = 64k\nmax_answer = 1M\nallowed_uids = 0, 65534\nallowed_gids = 0\nsocket_group = 0\nlog_file = %s\ndisk_owner = root\ndisk_group = 0\nrun_dir = %s\n' \
	"$SOCK" "$TMP/root" "$TMP/d.log" "$TMP/rd" >good.conf
if dl_start "$TMP/stderr.log" -c good.conf; then ok; else
	fail "a good configuration refused: $(cat "$TMP/stderr.log" "$TMP/d.log")"; fi
expect_eq "the host id's lock file in run_dir holds the pid" "$DPID" "$(head -n 1 "$TMP/rd/host-1.lock")"
dl_stop TERM
expect_eq "clean stop" 0 "$DSTATUS"
cp_finish
