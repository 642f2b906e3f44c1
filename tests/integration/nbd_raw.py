#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Raw-socket NBD client for nbd-bad.sh: sends malformed and hostile
traffic a real client library would refuse to send, and checks that the
server answers each with the protocol's error (or a clean disconnect).

usage: nbd_raw.py CASE SOCKET [EXPORT]
Exit status 0 when the case behaved as expected, 1 otherwise (the reason
is printed)."""
import socket
import struct
import sys

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3e889045565a9
REQMAGIC = 0x25609513
SIMPLE = 0x67446698
STRUCT = 0x668e33ef

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_SR, OPT_LIST_META, OPT_SET_META = 6, 7, 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR_UNSUP, ERR_POLICY, ERR_INVALID = 0x80000001, 0x80000002, 0x80000003
ERR_UNKNOWN, ERR_TOO_BIG = 0x80000006, 0x80000009
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_WZ, CMD_BS = 6, 7
EPERM, EINVAL, ENOSPC = 1, 22, 28


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Conn:
    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.cookie = 0

    def recv(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise EOFError("server closed the connection")
            b += c
        return b

    def closed_by_server(self):
        """True when the server closed (EOF or reset) without more data."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def greet(self, cflags=3):
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting")
        check(hflags & 1, "server is not fixed newstyle")
        self.s.sendall(struct.pack(">I", cflags))

    def opt(self, opt, data=b"", magic=IHAVEOPT):
        self.s.sendall(struct.pack(">QII", magic, opt, len(data)) + data)

    def reply(self):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recv(20))
        check(magic == REPMAGIC, "bad option reply magic %x" % magic)
        return opt, typ, self.recv(ln)

    def replies_until_final(self):
        out = []
        while True:
            opt, typ, data = self.reply()
            out.append((typ, data))
            if typ == REP_ACK or typ & 0x80000000:
                return out

    def go(self, name, structured=True, meta=()):
        if structured:
            self.opt(OPT_SR)
            check(self.reply()[1] == REP_ACK, "structured replies refused")
        self.structured = structured
        if meta:
            n = name.encode()
            q = b"".join(struct.pack(">I", len(m)) + m.encode() for m in meta)
            self.opt(OPT_SET_META, struct.pack(">I", len(n)) + n +
                     struct.pack(">I", len(meta)) + q)
            rs = self.replies_until_final()
            check(rs[-1][0] == REP_ACK, "SET_META_CONTEXT failed")
        n = name.encode()
        self.opt(OPT_GO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
        rs = self.replies_until_final()
        check(rs[-1][0] == REP_ACK, "GO failed: %x" % rs[-1][0])
        for typ, data in rs:
            if typ == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                self.size, self.tflags = struct.unpack(">QH", data[2:12])

    def request(self, typ, off=0, ln=0, flags=0, payload=b"", magic=REQMAGIC):
        self.cookie += 1
        self.s.sendall(struct.pack(">IHHQQI", magic, flags, typ, self.cookie,
                                   off, ln) + payload)
        return self.cookie

    def chunks(self):
        """Read one whole structured reply; return its chunk types."""
        types = []
        while True:
            magic, flags, typ, cookie, ln = struct.unpack(">IHHQI",
                                                          self.recv(20))
            check(magic == STRUCT, "bad chunk magic")
            self.recv(ln)
            types.append(typ)
            if flags & 1:
                return types

    def answer(self, want_data=0):
        """Read one whole reply; return (error, data)."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            data = self.recv(want_data) if err == 0 and want_data else b""
            return err, data
        check(magic == STRUCT, "bad reply magic %x" % magic)
        err, data = 0, b""
        while True:
            flags, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
            body = self.recv(ln)
            if typ == 32769:
                err = struct.unpack(">I", body[:4])[0]
            elif typ == 1:
                data += body[8:]
            elif typ == 2:
                data += bytes(struct.unpack(">I", body[8:12])[0])
            if flags & 1:
                return err, data
            magic = struct.unpack(">I", self.recv(4))[0]
            check(magic == STRUCT, "bad chunk magic")


def case_options(path, name):
    c = Conn(path)
    c.greet()
    c.opt(99, b"junk")                      # unknown option
    check(c.reply()[1] == ERR_UNSUP, "unknown option not ERR_UNSUP")
    c.opt(OPT_SR, b"x")                     # data where none is allowed
    check(c.reply()[1] == ERR_INVALID, "STRUCTURED_REPLY with data")
    c.opt(OPT_LIST, b"x")
    check(c.reply()[1] == ERR_INVALID, "LIST with data")
    c.opt(OPT_GO, struct.pack(">I", 1000) + b"ab")   # name past the end
    check(c.reply()[1] == ERR_INVALID, "GO with a bad name length")
    c.opt(OPT_GO, struct.pack(">I", 2) + b"ab" + struct.pack(">H", 5))
    check(c.reply()[1] == ERR_INVALID, "GO with a bad request count")
    c.opt(OPT_GO, struct.pack(">I", 7) + b"missing" + struct.pack(">H", 0))
    check(c.reply()[1] == ERR_UNKNOWN, "GO on an unknown export")
    c.opt(OPT_SET_META, b"\0\0\0\0\0\0\0\0")
    check(c.reply()[1] == ERR_INVALID, "SET_META before structured replies")
    c.opt(OPT_STARTTLS)
    check(c.reply()[1] == ERR_POLICY, "STARTTLS without TLS configured")
    c.opt(1234, bytes(1 << 20))             # oversized unknown option
    check(c.reply()[1] in (ERR_TOO_BIG, ERR_UNSUP), "oversized option")
    c.opt(OPT_LIST)
    rs = c.replies_until_final()
    names = [d[4:4 + struct.unpack(">I", d[:4])[0]].decode()
             for t, d in rs if t == REP_SERVER]
    check(name in names and rs[-1][0] == REP_ACK, "LIST lacks the export")
    c.go(name, meta=("base:allocation", "nosuch:context"))
    cookie = c.request(CMD_READ, 0, 4096)
    err, data = c.answer()
    check(err == 0 and len(data) == 4096, "read after the option errors")
    c.request(CMD_DISC)
    check(c.closed_by_server(), "DISC did not close")


def case_badmagic(path, name):
    c = Conn(path)
    c.greet()
    c.opt(OPT_LIST, magic=0x1122334455667788)
    check(c.closed_by_server(), "bad option magic did not disconnect")
    c = Conn(path)
    c.greet(cflags=0x80)
    check(c.closed_by_server(), "unknown client flags did not disconnect")
    c = Conn(path)
    c.greet()
    c.go(name)
    c.request(CMD_READ, 0, 512, magic=0xdeadbeef)
    check(c.closed_by_server(), "bad request magic did not disconnect")


def case_requests(path, name, readonly):
    for structured in (True, False):
        c = Conn(path)
        c.greet()
        c.go(name, structured=structured)
        size = c.size
        c.request(CMD_READ, size - 512, 1024)
        check(c.answer()[0] == EINVAL, "read past the end")
        c.request(CMD_READ, 1 << 62, 512)
        check(c.answer()[0] == EINVAL, "read at a huge offset")
        c.request(CMD_READ, 0, (32 << 20) + 1)
        check(c.answer()[0] == EINVAL, "read over 32 MiB")
        c.request(CMD_READ, 0, 512, flags=0x40)
        check(c.answer()[0] == EINVAL, "unknown command flag")
        c.request(99, 0, 0)
        check(c.answer()[0] == EINVAL, "unknown command")
        c.request(CMD_BS, 0, 4096)
        check(c.answer()[0] == EINVAL, "block status without a context")
        if readonly:
            c.request(CMD_WRITE, 0, 512, payload=bytes(512))
            check(c.answer()[0] == EPERM, "write to a read-only export")
            c.request(CMD_WZ, 0, 4096)
            check(c.answer()[0] == EPERM, "zero a read-only export")
            c.request(CMD_TRIM, 0, 4096)
            check(c.answer()[0] == EPERM, "trim a read-only export")
        else:
            c.request(CMD_WRITE, size - 256, 512, payload=bytes(512))
            check(c.answer()[0] == ENOSPC, "write past the end")
            c.request(CMD_WZ, size, 4096)
            check(c.answer()[0] == ENOSPC, "zero past the end")
            c.request(CMD_TRIM, size, 4096)
            check(c.answer()[0] == EINVAL, "trim past the end")
        # still usable after all of that
        c.request(CMD_READ, 0, 4096)
        err, data = c.answer(4096)
        check(err == 0 and len(data) == 4096, "read after the errors")
        c.request(CMD_FLUSH)
        check(c.answer()[0] == 0, "flush")
        c.request(CMD_DISC)
        check(c.closed_by_server(), "DISC did not close")
    # A write over 32 MiB: an error reply, then the server hangs up (its
    # payload cannot be skipped safely).
    c = Conn(path)
    c.greet()
    c.go(name)
    c.request(CMD_WRITE, 0, (32 << 20) + 512)
    try:
        err = c.answer()[0]
        check(err == EINVAL, "oversized write: error %d" % err)
    except EOFError:
        pass
    check(c.closed_by_server(), "oversized write did not disconnect")


def case_chunks(path, name, zero_off, hole_off):
    # Holes in structured reads follow the image's allocation, as QEMU's:
    # allocated clusters that hold zeroes are data, unallocated ones holes.
    c = Conn(path)
    c.greet()
    c.go(name)
    c.request(CMD_READ, zero_off, 65536)
    t = c.chunks()
    check(t == [1], "allocated zero cluster read as chunks %s" % t)
    c.request(CMD_READ, hole_off, 65536)
    t = c.chunks()
    check(t and all(x == 2 for x in t),
          "unallocated cluster read as chunks %s" % t)
    c.request(CMD_READ, hole_off, 65536, flags=4)  # DF
    check(c.chunks() == [1], "DF read not one data chunk")
    c.request(CMD_DISC)


def case_midrequest(path, name):
    # disconnect in the middle of a write payload, of a request header,
    # and with reads in flight whose replies nobody reads
    c = Conn(path)
    c.greet()
    c.go(name)
    c.request(CMD_WRITE, 0, 1 << 20, payload=bytes(1000))
    c.s.close()
    c = Conn(path)
    c.greet()
    c.go(name)
    c.s.sendall(struct.pack(">IHH", REQMAGIC, 0, CMD_READ))
    c.s.close()
    c = Conn(path)
    c.greet()
    c.go(name)
    for i in range(32):
        c.request(CMD_READ, 0, 1 << 20)
    c.s.close()
    c = Conn(path)
    c.greet()
    c.s.close()   # inside the handshake
    # the server still serves
    c = Conn(path)
    c.greet()
    c.go(name)
    c.request(CMD_READ, 0, 4096)
    check(c.answer()[0] == 0, "read after the broken clients")


def case_many(path, name, n):
    conns = []
    for i in range(n):
        c = Conn(path)
        c.greet()
        c.go(name, structured=bool(i % 2))
        conns.append(c)
    for i, c in enumerate(conns):
        c.request(CMD_READ, (i * 4096) % c.size, 4096)
    for c in conns:
        err, data = c.answer(4096)
        check(err == 0 and len(data) == 4096, "read on one of many")
    for c in conns:
        c.request(CMD_DISC)
        c.s.close()


def case_stall(path, name):
    c = Conn(path, timeout=60)
    c.recv(18)            # greeting, then silence
    check(c.closed_by_server(), "stalled handshake was not dropped")


def case_info(path, name):
    c = Conn(path)
    c.greet()
    n = name.encode()
    c.opt(OPT_INFO, struct.pack(">I", len(n)) + n + struct.pack(">HHH", 2, 1, 2))
    rs = c.replies_until_final()
    check(rs[-1][0] == REP_ACK, "INFO failed")
    kinds = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in rs if t == REP_INFO}
    check(0 in kinds and 3 in kinds, "INFO lacks EXPORT or BLOCK_SIZE")
    check(kinds.get(1) == n, "INFO NAME")
    print("description=%s" % kinds.get(2, b"").decode())
    c.opt(OPT_ABORT)
    check(c.reply()[1] == REP_ACK, "ABORT not acknowledged")
    check(c.closed_by_server(), "ABORT did not close")


def main():
    case, path = sys.argv[1], sys.argv[2]
    name = sys.argv[3] if len(sys.argv) > 3 else ""
    try:
        if case == "options":
            case_options(path, name)
        elif case == "badmagic":
            case_badmagic(path, name)
        elif case == "requests":
            case_requests(path, name, False)
        elif case == "requests-ro":
            case_requests(path, name, True)
        elif case == "chunks":
            case_chunks(path, name, int(sys.argv[4]), int(sys.argv[5]))
        elif case == "midrequest":
            case_midrequest(path, name)
        elif case == "many":
            case_many(path, name, int(sys.argv[4]))
        elif case == "stall":
            case_stall(path, name)
        elif case == "info":
            case_info(path, name)
        else:
            print("unknown case " + case)
            return 2
    except (Fail, EOFError, OSError, struct.error) as e:
        print("%s: %s" % (case, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
