#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus of fuzz_nbd (client byte streams) to DIR.

usage: make_nbd_corpus.py DIR"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def name_req(name, infos=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + \
        b"".join(struct.pack(">H", i) for i in infos)


def meta(name, queries):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries)) + \
        b"".join(struct.pack(">I", len(q)) + q.encode() for q in queries)


def req(typ, off=0, ln=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, typ, cookie, off,
                       ln) + payload


def session(name, structured=True, ctx=("base:allocation",
                                       "qemu:allocation-depth")):
    s = struct.pack(">I", 3)
    if structured:
        s += opt(8)
        s += opt(10, meta(name, list(ctx)))
    s += opt(7, name_req(name, (0, 1, 2, 3)))
    return s


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    seeds = {}
    seeds["options"] = struct.pack(">I", 3) + opt(3) + opt(6, name_req(
        "", (1, 2, 3))) + opt(9, meta("", [])) + opt(8) + \
        opt(9, meta("", ["base:", "qemu:"])) + opt(99, b"xyz") + opt(5) + \
        opt(2)
    io = (req(1, 0, 4096, payload=b"\xab" * 4096) +
          req(0, 0, 8192, cookie=2) +
          req(0, 0, 8192, flags=4, cookie=3) +
          req(6, 65536, 131072, cookie=4) +
          req(6, 65536, 4096, flags=2 | 16, cookie=5) +
          req(4, 196608, 65536, cookie=6) +
          req(7, 0, 1 << 22, cookie=7) +
          req(7, 0, 1 << 22, flags=8, cookie=8) +
          req(1, 4096, 512, flags=1, cookie=9, payload=bytes(512)) +
          req(5, 0, 4096, cookie=10) +
          req(3, cookie=11) + req(0, (4 << 20) - 512, 1024, cookie=12) +
          req(2, cookie=13))
    seeds["rw-structured"] = session("") + io
    seeds["rw-simple"] = session("", structured=False) + io
    seeds["ro"] = session("ro") + io
    seeds["zero-detect"] = session("z") + io
    seeds["export-name"] = struct.pack(">I", 1) + opt(1, b"") + \
        req(0, 0, 512) + req(1, 0, 512, payload=bytes(512), cookie=2) + \
        req(2, cookie=3)
    for k, v in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    main()
