#!/usr/bin/env python3
"""mbsync (isync) against two or more IMAP servers side by side: a full pull of one large mailbox
into an empty local maildir, then a no-op resync (nothing changed on either side).

Runs servers that are already running (docs/imap.md, "imaptest", starts Tanba and Dovecot on
loopback with the same users); builds nothing. Fills the folder `--folder` of `--user` on every
server with `--messages` generated messages by APPEND first (only when it holds fewer), so every
server serves the same bytes. Then `--rounds` rounds, the servers interleaved (a, b, a, b, ...)
so that load from elsewhere on the box hits both alike; prints each run's wall time and a
Markdown table of the medians.

    python3 benches/mbsync_compare.py \\
        --server tanba=127.0.0.1:21993:/tmp/ipf/tanba/data/tls/cert.pem \\
        --server dovecot=127.0.0.1:22993:/tmp/ipf/dovecot/cert.pem \\
        --user t2@localhost --password imaptest-password --messages 3000

Implicit TLS; mbsync trusts exactly the certificate file given per server. Loopback only. The
local maildir is written without fsync (`FSync no`), so that the client's disk waits do not
drown the servers' differences. mbsync 1.4 (Debian 12).
"""

import argparse
import imaplib
import ipaddress
import os
import random
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time


def message(i: int) -> bytes:
    rnd = random.Random(i)
    words = ["договор", "contract", "invoice", "счёт", "meeting", "report", "акт", "payment"]
    body = " ".join(rnd.choice(words) for _ in range(rnd.randint(150, 450)))
    return (f"From: Sender {i % 97} <sender{i % 97}@example.kz>\r\n"
            f"To: bench@localhost\r\nSubject: pull {i}\r\n"
            f"Date: Mon, 20 Nov 2023 10:{i % 60:02d}:00 +0600\r\n"
            f"Message-ID: <pull-{i}@example.kz>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def fill(host, port, user, password, folder, n):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    c.login(user, password)
    c.create(folder)
    typ, data = c.select(folder)
    have = int(data[0])
    for i in range(have, n):
        c.append(folder, None, None, message(i))
    c.logout()
    return max(n - have, 0)


CONFIG = """FSync no

IMAPAccount acct
Host {host}
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account acct

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel pull
Far :remote:
Near :local:
Patterns {folder}
Create Near
Sync Pull
SyncState *
"""


def run(cfg):
    t = time.monotonic()
    r = subprocess.run(["mbsync", "-q", "-c", cfg, "pull"], capture_output=True, text=True)
    dt = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"mbsync failed ({r.returncode}): {r.stderr.strip()}")
    return dt


def count(local, folder):
    d = os.path.join(local, folder)
    return sum(len(os.listdir(os.path.join(d, s))) for s in ("cur", "new"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", action="append", required=True,
                   help="name=host:port:certificate-file (implicit TLS)")
    p.add_argument("--user", default="t2@localhost")
    p.add_argument("--password", default="imaptest-password")
    p.add_argument("--folder", default="Pull")
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    servers = []
    for s in a.server:
        name, rest = s.split("=", 1)
        host, port, cert = rest.split(":", 2)
        if not ipaddress.ip_address(host).is_loopback:
            raise SystemExit(f"{host}: loopback addresses only")
        servers.append((name, host, int(port), cert))
    for name, host, port, _ in servers:
        added = fill(host, port, a.user, a.password, a.folder, a.messages)
        print(f"{name}: {a.folder} filled ({added} appended)")
    work = tempfile.mkdtemp(prefix="mbsync-compare-")
    full = {s[0]: [] for s in servers}
    noop = {s[0]: [] for s in servers}
    try:
        for rnd in range(1, a.rounds + 1):
            for name, host, port, cert in servers:
                local = os.path.join(work, name)
                shutil.rmtree(local, ignore_errors=True)
                os.makedirs(local)
                cfg = os.path.join(work, f"{name}.mbsyncrc")
                with open(cfg, "w") as f:
                    f.write(CONFIG.format(host=host, port=port, user=a.user,
                                          password=a.password, cert=cert, local=local,
                                          folder=a.folder))
                t_full = run(cfg)
                got = count(local, a.folder)
                if got != a.messages:
                    raise SystemExit(f"{name}: pulled {got} messages, expected {a.messages}")
                t_noop = run(cfg)
                full[name].append(t_full)
                noop[name].append(t_noop)
                print(f"round {rnd} {name}: full pull {t_full:.2f} s, no-op resync {t_noop:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = servers[0][0]
    print()
    # Best and median: mbsync itself sometimes waits whole seconds (its maildir code keeps new
    # file names and timestamps unique), which lands on random runs; the best run is the one
    # without such a wait, so it compares the servers' own work.
    print(f"| server | full pull best / median (s) | no-op resync best / median (s) | "
          f"full best / {first} |")
    print("|---|---:|---:|---:|")
    f0 = min(full[first])
    for name, *_ in servers:
        print(f"| {name} | {min(full[name]):.2f} / {statistics.median(full[name]):.2f} | "
              f"{min(noop[name]):.3f} / {statistics.median(noop[name]):.3f} | "
              f"{min(full[name]) / f0:.2f} |")


if __name__ == "__main__":
    main()
