#!/usr/bin/env python3
"""What one durable acknowledgement costs: a single session, one command at a time, so every
`250` and every tagged `OK` waits for its own group commit (sled flush + fdatasync of its log;
for SMTP also the body file's fdatasync and its directory's fsync). Prints a Markdown table
(docs/benchmarks.md, "Single-session commit latency").

    cargo build --release
    target/release/tanba serve &          # defaults: MX 127.0.0.1:2525, IMAPS 127.0.0.1:2993
    echo pw | target/release/tanba user add bench@localhost --password-stdin
    python3 benches/commit_bench.py --cafile data/tls/cert.pem --user bench@localhost --password pw
"""

import argparse
import imaplib
import smtplib
import socket
import ssl
import time


def smtp(args) -> float:
    body = ("Subject: commit bench\r\n\r\n" + ("x" * 62 + "\r\n") * 15).encode()
    s = smtplib.SMTP(args.host, args.mx, local_hostname="bench.example")
    s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.ehlo()
    t = time.perf_counter()
    for _ in range(args.messages):
        s.sendmail("sender@example.kz", [args.user], body)
    dt = time.perf_counter() - t
    s.quit()
    return dt


def imap_store(args) -> float:
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.check_hostname = False
    c = imaplib.IMAP4_SSL(args.host, args.imaps, ssl_context=ctx)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.login(args.user, args.password)
    typ, data = c.select("INBOX")
    n = int(data[0])
    assert n > 0, "deliver some mail first (the SMTP part does)"
    t = time.perf_counter()
    for i in range(args.stores):
        op = "+FLAGS.SILENT" if (i // n) % 2 == 0 else "-FLAGS.SILENT"
        typ, _ = c.store(str(1 + i % n), op, "(\\Flagged)")
        assert typ == "OK", typ
    dt = time.perf_counter() - t
    c.logout()
    return dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mx", type=int, default=2525)
    p.add_argument("--imaps", type=int, default=2993)
    p.add_argument("--cafile", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--stores", type=int, default=1000)
    args = p.parse_args()
    s = smtp(args)
    i = imap_store(args)
    print("| operation (1 session, one at a time) | count | time | rate | per acknowledgement |")
    print("|---|---|---|---|---|")
    print(f"| SMTP message, 1 KB (MX → INBOX) | {args.messages} | {s:.2f} s | "
          f"{args.messages / s:,.0f} msg/s | {1000 * s / args.messages:.2f} ms |")
    print(f"| IMAP STORE of one message's flag | {args.stores} | {i:.2f} s | "
          f"{args.stores / i:,.0f} cmd/s | {1000 * i / args.stores:.2f} ms |")


if __name__ == "__main__":
    main()
