#!/usr/bin/env python3
"""Server memory while many large messages are unfinished (issue 11, finding 3b).

Starts its own `tanba serve` on loopback with a fresh data dir, opens N MX sessions, sends
MAIL/RCPT/DATA and then S megabytes of message text on each, all at once, without the final
dot, and reports the server's RSS (VmRSS and VmHWM from /proc/PID/status) and what is in
`data_dir/spool` at each step; then it finishes one of the messages (so that it goes through the
filter and the store) and closes the rest. Prints a Markdown table (docs/benchmarks.md).

    cargo build --release
    python3 benches/smtp_memory.py --bin target/release/tanba --sessions 20 --megabytes 40

Loopback only; every session is closed at the end and the server stopped.
"""

import argparse
import os
import socket
import threading
import time

from benchlib import Server, status


def rss(pid):
    return {k: v / 1024 for k, v in status(pid).items()}  # MiB


def spool(data_dir):
    d = os.path.join(data_dir, "spool")
    try:
        files = [os.path.join(d, n) for n in os.listdir(d)]
    except FileNotFoundError:
        return 0, 0
    return len(files), sum(os.path.getsize(f) for f in files if os.path.exists(f)) / 2**20


def reply(sock):
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return line.decode()


def session(addr):
    s = socket.create_connection(addr)
    reply(s)
    for cmd, want in ((b"EHLO bench.example", "250"), (b"MAIL FROM:<s@bench.example>", "250"),
                      (b"RCPT TO:<bench@localhost>", "250"), (b"DATA", "354")):
        s.sendall(cmd + b"\r\n")
        r = reply(s)
        assert r.startswith(want), r
    s.sendall(b"Subject: big\r\n\r\n")
    return s


LINE = (b"x" * 998) + b"\r\n"


def send_mb(s, mb):
    block = LINE * 1048  # ~1 MiB
    for _ in range(mb):
        s.sendall(block)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/tanba")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--megabytes", type=int, default=40)
    p.add_argument("--step", type=int, default=10, help="report every STEP megabytes")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (log, data)")
    a = p.parse_args()

    extra = {"smtp": f"max_connections = {a.sessions + 10}"}
    with Server(a.bin, extra=extra, users={"bench@localhost": "bench-password-1"},
                keep=a.keep) as srv:
        data = srv.data_dir
        addr = srv.addr("smtp.mx")
        rows = []

        def row(what):
            r = rss(srv.pid)
            n, mb = spool(data)
            rows.append((what, r["VmRSS"], r["VmHWM"], n, mb))
            print(f"{what}: VmRSS {r['VmRSS']:.0f} MiB, peak {r['VmHWM']:.0f} MiB, "
                  f"spool {n} files {mb:.0f} MiB", flush=True)

        row("idle")
        socks = [session(addr) for _ in range(a.sessions)]
        row(f"{a.sessions} sessions in DATA")
        sent = 0
        while sent < a.megabytes:
            step = min(a.step, a.megabytes - sent)
            threads = [threading.Thread(target=send_mb, args=(s, step)) for s in socks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent += step
            time.sleep(1)  # let the server drain its socket buffers
            row(f"{a.sessions} × {sent} MiB unfinished")
        # One message completed: filter + store under the processing budget.
        socks[0].sendall(b".\r\n")
        r = reply(socks[0])
        assert r.startswith("250"), r
        row(f"one {a.megabytes} MiB message finished")
        for s in socks:
            s.close()
        time.sleep(2)
        row("all sessions closed")
        print()
        print(f"| state | VmRSS | peak (VmHWM) | spool files | spool size |")
        print("|---|---|---|---|---|")
        for what, cur, peak, n, mb in rows:
            print(f"| {what} | {cur:.0f} MiB | {peak:.0f} MiB | {n} | {mb:.0f} MiB |")
        if a.keep:
            print(f"(server log and data in {srv.dir})")


if __name__ == "__main__":
    main()
