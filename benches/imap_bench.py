#!/usr/bin/env python3
"""IMAP throughput on a large mailbox, with Python's stock imaplib as the client.

Fills a fresh mailbox `Bench` with N generated messages by APPEND (first 1,000 over one session,
the rest over several sessions at once), then times what a mail client does to such a mailbox:
SELECT, Thunderbird's header scan (cold, when the server parses every message for the first
time, and warm, from the structure cache), ENVELOPE+BODYSTRUCTURE, FLAGS, full bodies, SEARCH
and a STORE over everything. Prints a Markdown table (docs/benchmarks.md).

    cargo build --release
    target/release/tanba serve &          # defaults: IMAPS on 127.0.0.1:2993
    echo bench-password | target/release/tanba user add bench@localhost --password-stdin
    python3 benches/imap_bench.py --cafile data/tls/cert.pem --user bench@localhost --password bench-password

Times include imaplib's own parsing of the responses (a real client's cost, too).
"""

import argparse
import base64
import imaplib
import random
import socket
import ssl
import threading
import time

HEADERS = ("(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID "
           "Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")


def message(i: int) -> bytes:
    rnd = random.Random(i)
    words = ["договор", "contract", "invoice", "счёт", "meeting", "report", "акт", "payment",
             "signature", "ЭЦП", "delivery", "quarterly"]
    body = " ".join(rnd.choice(words) for _ in range(rnd.randint(150, 450)))
    head = (f"From: Sender {i % 97} <sender{i % 97}@example.kz>\r\n"
            f"To: bench@localhost\r\nSubject: msg {i} {rnd.choice(words)}\r\n"
            f"Date: Mon, 20 Nov 2023 10:{i % 60:02d}:00 +0600\r\n"
            f"Message-ID: <bench-{i}@example.kz>\r\nMIME-Version: 1.0\r\n")
    if i % 3:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n" + body + "\r\n").encode()
    attachment = bytes(rnd.getrandbits(8) for _ in range(6000))
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    return (head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n"
            '--b\r\nContent-Type: application/pdf; name="doc.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="doc.pdf"\r\n\r\n'
            + b64 + "--b--\r\n").encode()


def connect(a):
    ctx = ssl.create_default_context(cafile=a.cafile)
    ctx.check_hostname = False
    m = imaplib.IMAP4_SSL(a.host, a.port, ssl_context=ctx)
    # imaplib writes a literal and its closing CRLF as two small writes; with Nagle on, the CRLF
    # waits for the server's delayed ACK (40 ms per APPEND). Real clients do not have this
    # problem (Thunderbird sends the command in one go), so neither should the benchmark.
    if not a.nagle:
        m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m.login(a.user, a.password)
    return m


def timed(label, fn, rows, unit=None):
    t0 = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t0
    rate = f"{n / dt:,.0f} {unit}/s" if unit else ""
    rows.append((label, f"{dt:.2f} s", rate))
    print(f"{label}: {dt:.2f} s {rate}", flush=True)
    return dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2993)
    p.add_argument("--cafile", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--nagle", action="store_true", help="leave imaplib's socket as it is")
    a = p.parse_args()

    msgs = [message(i) for i in range(a.messages)]
    total = sum(len(m) for m in msgs)
    print(f"{a.messages} messages, {total / 1e6:.1f} MB", flush=True)
    rows = []
    m = connect(a)
    m.delete("Bench")
    m.create("Bench")

    first = min(1000, a.messages)

    def append_range(lo, hi, conn=None):
        c = conn or connect(a)
        for i in range(lo, hi):
            typ, _ = c.append("Bench", None, None, msgs[i])
            assert typ == "OK"
        if conn is None:
            c.logout()

    timed(f"APPEND, 1 session ({first} msgs)", lambda: (append_range(0, first, m), first)[1],
          rows, "msg")

    def parallel():
        rest = a.messages - first
        per = (rest + a.sessions - 1) // a.sessions
        ts = [threading.Thread(target=append_range,
                               args=(first + k * per, min(a.messages, first + (k + 1) * per)))
              for k in range(a.sessions)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        return rest

    if a.messages > first:
        timed(f"APPEND, {a.sessions} sessions ({a.messages - first} msgs)", parallel, rows, "msg")

    def select():
        typ, data = m.select("Bench")
        assert typ == "OK" and int(data[0]) == a.messages, data
        return a.messages
    timed("SELECT", select, rows)

    def fetch(items, uid=True):
        def run():
            typ, data = m.uid("FETCH", "1:*", items) if uid else m.fetch("1:*", items)
            assert typ == "OK"
            got = sum(1 for d in data if isinstance(d, tuple) or (d and d != b")"))
            return got
        return run

    timed("UID FETCH 1:* headers (Thunderbird), cold cache", fetch(HEADERS), rows, "msg")
    timed("UID FETCH 1:* headers (Thunderbird), warm cache", fetch(HEADERS), rows, "msg")
    timed("FETCH 1:* (ENVELOPE BODYSTRUCTURE)", fetch("(ENVELOPE BODYSTRUCTURE)", uid=False),
          rows, "msg")
    timed("FETCH 1:* (FLAGS)", fetch("(FLAGS)", uid=False), rows, "msg")

    def bodies():
        typ, data = m.uid("FETCH", "1:*", "BODY.PEEK[]")
        assert typ == "OK"
        n = sum(len(d[1]) for d in data if isinstance(d, tuple))
        assert n == total, (n, total)
        return n / 1e6
    timed("UID FETCH 1:* BODY.PEEK[]", bodies, rows, "MB")

    def search(*crit):
        def run():
            typ, data = m.uid("SEARCH", *crit)
            assert typ == "OK"
            return a.messages
        return run
    timed("UID SEARCH SUBJECT \"msg 9999\"", search("SUBJECT", '"msg 9999"'), rows, "msg")
    timed("UID SEARCH BODY quarterly", search("BODY", "quarterly"), rows, "msg")

    def store():
        typ, _ = m.store("1:*", "+FLAGS.SILENT", "(\\Seen)")
        assert typ == "OK"
        return a.messages
    timed("STORE 1:* +FLAGS.SILENT (\\Seen)", store, rows, "msg")
    m.logout()

    print()
    print("| operation | time | rate |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
