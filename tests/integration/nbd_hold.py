#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""An NBD client that stays connected until told (daemon-export.sh,
multihost.sh): connects to EXPORT on SOCKET, reads its first 4 KiB, prints
"connected" (flushed), then waits for whichever comes first: a line (or
EOF) on stdin, after which it sends NBD_CMD_DISC and prints "closed by
client"; or the server closing the connection, after which it prints
"disconnected by server".  Exit status 0, or 1 with the reason printed.

usage: nbd_hold.py SOCKET EXPORT"""
import os
import select
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbd_raw import CMD_DISC, CMD_READ, Conn, Fail, check  # noqa: E402


def main():
    path, name = sys.argv[1], sys.argv[2]
    try:
        c = Conn(path)
        c.greet()
        c.go(name)
        c.request(CMD_READ, 0, 4096)
        err, data = c.answer(4096)
        check(err == 0 and len(data) == 4096, "first read failed: %d" % err)
        print("connected", flush=True)
        c.s.settimeout(None)
        r, _, _ = select.select([sys.stdin, c.s], [], [])
        if c.s in r:
            check(c.closed_by_server(), "unexpected data from the server")
            print("disconnected by server", flush=True)
            return 0
        c.request(CMD_DISC)
        c.s.close()
        print("closed by client", flush=True)
    except (Fail, EOFError, OSError) as e:
        print("hold: %s" % e, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
