#!/usr/bin/env python3
"""Anchor for the transport benchmark: what a plain blocking-socket loop gets on this machine.

Same framing (u32 magic 'SHLF', u32 length, payload) and the same protocol as bench/src/transport.ts, between
two processes, over TCP loopback and a unix socket. The receiver reads with recv_into a buffer allocated once
per size (the best case for a socket loop); the sender uses sendmsg with [header, payload] (no concatenation).

    python3 transport_socket.py '{"plan": [{"bytes": 1024, "oneway": 20000, "rtt": 2000, "warm": 200}, ...],
                                  "ipc_path": "/tmp/x.sock"}'

Prints {"rows": [{transport: "python-socket", url_scheme, bytes, oneway_mbps, rtt_p50_us, rtt_p99_us, iters,
oneway_iters, rtt_iters, verified}]} on stdout.
"""
import json
import math
import os
import socket
import struct
import sys
import time

MAGIC = 0x464C4853
HDR = struct.Struct("<II")


def payload(n, seed):
    block = min(n, 4093)
    b = bytearray((i * 151 + seed * 17 + 3) & 0xFF for i in range(block))
    out = (bytes(b) * (n // block + 1))[:n] if block else b""
    out = bytearray(out)
    if n >= 8:
        struct.pack_into("<I", out, n - 4, (n ^ seed) & 0xFFFFFFFF)
    return out


def send_msg(s, data):
    view = [HDR.pack(MAGIC, len(data)), memoryview(data)]
    total = 8 + len(data)
    sent = 0
    while sent < total:
        n = s.sendmsg(view)
        sent += n
        # drop what went out
        while n > 0 and view:
            if n >= len(view[0]):
                n -= len(view[0])
                view.pop(0)
            else:
                view[0] = memoryview(view[0])[n:]
                n = 0


def recv_exact(s, buf, n):
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("peer closed")
        got += k
    return view


def recv_msg(s, hdrbuf, buf=None):
    magic, n = HDR.unpack(recv_exact(s, hdrbuf, 8))
    if magic != MAGIC:
        raise ValueError("bad magic")
    if buf is None or len(buf) < n:
        buf = bytearray(n)
    return recv_exact(s, buf, n), buf


def peer(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    for _ in range(500):
        try:
            s.connect(addr)
            break
        except OSError:
            time.sleep(0.01)
    if family == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hdr = bytearray(8)
    buf = None
    while True:
        cmd, buf = recv_msg(s, hdr, buf)
        cmd = json.loads(bytes(cmd))
        op, n, count = cmd["op"], cmd.get("bytes", 0), cmd.get("count", 0)
        if op == "exit":
            break
        if op == "verify":
            got, buf = recv_msg(s, hdr, buf)
            send_msg(s, b"ok" if bytes(got) == bytes(payload(n, 1)) else b"corrupt")
            send_msg(s, payload(n, 2))
        elif op == "sink":
            bad = 0
            for _ in range(count):
                got, buf = recv_msg(s, hdr, buf)
                bad += len(got) != n
            send_msg(s, b"ok" if not bad else b"bad")
        elif op == "echo":
            for _ in range(count):
                got, buf = recv_msg(s, hdr, buf)
                send_msg(s, got)
    s.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def measure(c, step):
    n, oneway, rtt, warm = step["bytes"], step["oneway"], step["rtt"], step["warm"]
    hdr = bytearray(8)
    buf = bytearray(max(n, 64))
    mine = payload(n, 1)
    send_msg(c, json.dumps({"op": "verify", "bytes": n}).encode())
    send_msg(c, mine)
    ok, buf = recv_msg(c, hdr, buf)
    if bytes(ok) != b"ok":
        raise RuntimeError("verify failed")
    theirs, buf = recv_msg(c, hdr, buf)
    if bytes(theirs) != bytes(payload(n, 2)):
        raise RuntimeError("peer payload corrupt")

    def sink(count):
        send_msg(c, json.dumps({"op": "sink", "bytes": n, "count": count}).encode())
        for _ in range(count):
            send_msg(c, mine)
        r, _ = recv_msg(c, hdr, buf)
        if bytes(r) != b"ok":
            raise RuntimeError("sink failed")

    sink(warm)
    t0 = time.perf_counter()
    sink(oneway)
    secs = time.perf_counter() - t0
    w = min(warm, 20)
    send_msg(c, json.dumps({"op": "echo", "bytes": n, "count": rtt + w}).encode())
    times = []
    for i in range(rtt + w):
        t = time.perf_counter()
        send_msg(c, mine)
        back, buf = recv_msg(c, hdr, buf)
        us = (time.perf_counter() - t) * 1e6
        if len(back) != n:
            raise RuntimeError("echo length")
        if i >= w:
            times.append(us)
    return {
        "bytes": n,
        "oneway_mbps": round(oneway * n / secs / 1e6, 1),
        "rtt_p50_us": round(pct(times, 50), 1),
        "rtt_p99_us": round(pct(times, 99), 1),
        "iters": oneway,
        "oneway_iters": oneway,
        "rtt_iters": rtt,
        "verified": True,
    }


def run_scheme(scheme, plan, ipc_path):
    if scheme == "tcp":
        family = socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        addr = ls.getsockname()
    else:
        family = socket.AF_UNIX
        if os.path.exists(ipc_path):
            os.unlink(ipc_path)
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.bind(ipc_path)
        addr = ipc_path
    ls.listen(1)
    pid = os.fork()
    if pid == 0:
        ls.close()
        try:
            peer(family, addr)
        finally:
            os._exit(0)
    c, _ = ls.accept()
    ls.close()
    if scheme == "tcp":
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rows = []
    try:
        for step in plan:
            r = measure(c, step)
            rows.append({"transport": "python-socket", "url_scheme": scheme, **r})
        send_msg(c, json.dumps({"op": "exit"}).encode())
    finally:
        c.close()
        os.waitpid(pid, 0)
        if scheme == "ipc" and os.path.exists(ipc_path):
            os.unlink(ipc_path)
    return rows


def main():
    args = json.loads(sys.argv[1])
    rows = []
    for scheme in ("tcp", "ipc"):
        rows += run_scheme(scheme, args["plan"], args["ipc_path"])
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
