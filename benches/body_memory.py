#!/usr/bin/env python3
"""Memory of storing and reading one large body, on sled and on PostgreSQL (issue 17).

For each backend: a fresh `tanba serve` (release build) and one account; a message of `--mb`
MiB (a text part of random base64 lines) is APPENDed over IMAP and the server's RSS read (what
storing it left behind); then the peak RSS is reset (`/proc/PID/clear_refs`, 5) and a new
session FETCHes `BODY.PEEK[]` of it: the peak during that FETCH minus the RSS before it is what
reading and sending the body cost; and the RSS a second after that session ended (what
stays). PostgreSQL is a throw-away cluster (`cluster_compare.Postgres`).

    apt-get install -y postgresql
    cargo build --release
    python3 benches/body_memory.py --binary target/release/tanba --mb 40
"""

import argparse
import base64
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Server, status  # noqa: E402
from cluster_compare import Postgres  # noqa: E402

USER, PASSWORD = "big@localhost", "big-password-1"


def session(srv):
    host, port = srv.addr("imap.listen_tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection((host, port)))
    f = s.makefile("rwb")
    f.readline()
    return s, f


def until(f, tag):
    while True:
        line = f.readline()
        if not line:
            sys.exit("connection closed")
        if line.startswith(tag + b" "):
            if b" OK " not in line:
                sys.exit(line.decode(errors="replace"))
            return
        if line.rstrip().endswith(b"}"):
            n = int(line.rstrip()[:-1].rsplit(b"{", 1)[1])
            while n:
                n -= len(f.read(min(n, 1 << 20)))


def message(mb):
    body = base64.encodebytes(os.urandom(mb * 1024 * 1024 * 3 // 4)).replace(b"\n", b"\r\n")
    return (b"From: a@localhost\r\nTo: big@localhost\r\nSubject: big\r\n"
            b"Content-Type: text/plain\r\n\r\n" + body)


def one(binary, mb, store):
    extra = {"smtp": f"max_message_size = {(mb + 8) * 1024 * 1024}"}
    if store:
        extra["store"] = store
    with Server(binary, users={USER: PASSWORD}, extra=extra) as srv:
        raw = message(mb)
        s, f = session(srv)
        f.write(f"a LOGIN {USER} {PASSWORD}\r\nb APPEND INBOX {{{len(raw)}+}}\r\n".encode())
        f.write(raw + b"\r\n")
        f.flush()
        until(f, b"a")
        until(f, b"b")
        f.write(b"c LOGOUT\r\n")
        f.flush()
        s.close()
        before = status(srv.pid)["VmRSS"]
        with open(f"/proc/{srv.pid}/clear_refs", "w") as c:
            c.write("5")
        s, f = session(srv)
        f.write(f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n"
                .encode())
        f.flush()
        until(f, b"a")
        until(f, b"b")
        until(f, b"c")
        peak = status(srv.pid)["VmHWM"]
        f.write(b"d LOGOUT\r\n")
        f.flush()
        s.close()
        time.sleep(1)
        after = status(srv.pid)["VmRSS"]
        return len(raw), before, peak, after


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--mb", type=int, default=40)
    a = p.parse_args()
    rows = []
    rows.append(("sled", *one(a.binary, a.mb, None)))
    with Postgres() as pg:
        url = pg.createdb("body_memory")
        rows.append(("postgres", *one(a.binary, a.mb, f'backend = "postgres"\nurl = "{url}"')))
    print("| backend | message | RSS after APPEND | peak during FETCH | peak − before | RSS after |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, before, peak, after in rows:
        print(f"| {name} | {size / 2**20:.1f} MiB | {before / 1024:.0f} MiB | "
              f"{peak / 1024:.0f} MiB | {(peak - before) / 1024:.0f} MiB | {after / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
