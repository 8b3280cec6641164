#!/usr/bin/env python3
"""One node on sled, one node on PostgreSQL, two nodes on one PostgreSQL (issue 17), side by side.

For each setup: durable SMTP delivery with Postfix's smtp-source (MX → INBOX, filter on, 1 KB
messages; with two nodes the sessions and messages are split evenly over both MX listeners, run at
once), every message then counted over IMAP; and imaptest's default stress profile (with two nodes
half the clients on each, run at once, totals added). PostgreSQL is a throw-away cluster from
Debian's binaries (initdb/pg_ctl in a temp dir, loopback port, fsync and synchronous_commit on),
one fresh database per setup. Release builds; the script builds nothing.

    apt-get install -y postfix postgresql      # smtp-source; neither service is started
    cargo build --release
    python3 benches/imaptest_compare.py mbox-gen --mbox /tmp/cc/stress.mbox
    python3 benches/cluster_compare.py --binary target/release/tanba \\
        --imaptest /work/imaptest/src/imaptest --mbox /tmp/cc/stress.mbox
"""

import argparse
import glob
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Server  # noqa: E402
from imaptest_compare import env as imaptest_env, parse_totals  # noqa: E402

USER, PASSWORD = "bench@localhost", "bench-password-1"
IUSER, IPASSWORD = "t1@localhost", "imaptest-password"


class Postgres:
    """A throw-away cluster (as `nobody` when run as root: initdb refuses root)."""

    def __enter__(self):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                          key=lambda p: int(p.split("/")[4]))[-1].rsplit("/", 1)[0]
        self.dir = tempfile.mkdtemp(prefix="tanba-bench-pg-")
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "nobody", "nogroup")
        data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", data, "-U", "tanba", "--auth=trust", "-E", "UTF8", "--no-locale")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=on "
                "-c synchronous_commit=on -c max_connections=200")
        self.run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w", "-o", opts,
                 "start")
        return self

    def run(self, tool, *args):
        cmd = [os.path.join(self.bin, tool), *args]
        if self.root:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def createdb(self, name):
        subprocess.run([os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "tanba", "-d", "postgres", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True)
        return f"postgres://tanba@127.0.0.1:{self.port}/{name}"

    def __exit__(self, *exc):
        self.run("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "fast", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def imap_count(srv, user, password, mailbox="INBOX"):
    host, port = srv.addr("imap.listen_tls")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(f"a LOGIN {user} {password}\r\nb STATUS {mailbox} (MESSAGES)\r\nc LOGOUT\r\n"
                .encode())
        f.flush()
        for line in f:
            if line.startswith(b"* STATUS"):
                return int(line.rsplit(b"MESSAGES ", 1)[1].split(b")")[0])
    raise RuntimeError("no STATUS reply")


def smtp(a, nodes):
    """smtp-source split over `nodes`, at once; returns (seconds, messages counted over IMAP)."""
    per_m, per_s = a.messages // len(nodes), max(1, a.sessions // len(nodes))
    cmds = [["smtp-source", "-d", "-s", str(per_s), "-m", str(per_m), "-l", str(a.size),
             "-f", "sender@example.kz", "-t", USER, "%s:%d" % n.addr("smtp.mx")] for n in nodes]
    t0 = time.monotonic()
    procs = [subprocess.Popen(c) for c in cmds]
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"smtp-source failed: {p.args}")
    dt = time.monotonic() - t0
    return dt, imap_count(nodes[0], USER, PASSWORD)


def stress(a, nodes):
    """imaptest stress split over `nodes`, at once; returns the summed totals."""
    out = {}
    per = max(1, a.clients // len(nodes))

    def one(n):
        host, port = n.addr("imap.listen_tls")
        cmd = [a.imaptest, f"host={host}", f"port={port}", "ssl=any-cert", f"user={IUSER}",
               f"pass={IPASSWORD}", f"mbox={a.mbox}", f"clients={per}", f"secs={a.secs}"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=imaptest_env(),
                           timeout=a.secs + 120, errors="replace")
        out[n.pid] = parse_totals(p.stdout + p.stderr)

    ts = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    total = {}
    for t in out.values():
        for k, v in t.items():
            total[k] = total.get(k, 0) + v
    return total


def setup(a, pg, name):
    users = {USER: PASSWORD, IUSER: IPASSWORD}
    if name == "sled-1":
        return [Server(a.binary, users=users)]
    url = pg.createdb(name.replace("-", "_"))
    store = f'backend = "postgres"\nurl = "{url}"'
    first = Server(a.binary, users=users, extra={"store": store})
    if name == "pg-1":
        return [first]
    return [first, Server(a.binary, extra={"store": store})]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default="target/release/tanba")
    p.add_argument("--imaptest", required=True)
    p.add_argument("--mbox", required=True)
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--secs", type=int, default=10)
    p.add_argument("--setups", default="sled-1,pg-1,pg-2")
    a = p.parse_args()
    rows = {}
    with Postgres() as pg:
        for name in a.setups.split(","):
            nodes = setup(a, pg, name)
            started = []
            try:
                for n in nodes:
                    started.append(n.__enter__())
                dt, counted = smtp(a, started)
                if counted != a.messages // len(nodes) * len(nodes):
                    sys.exit(f"{name}: {counted} messages in INBOX after smtp-source")
                totals = stress(a, started)
                rows[name] = (dt, counted, totals)
                print(f"{name}: smtp {counted} in {dt:.2f} s ({counted / dt:,.0f} msg/s); "
                      f"imaptest total {sum(totals.values()):,} "
                      + " ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
            finally:
                for n in reversed(started):
                    n.__exit__(None, None, None)
    print()
    print("| setup | SMTP durable delivery | IMAP imaptest stress (commands in %d s) |" % a.secs)
    print("|---|---:|---:|")
    for name, (dt, counted, totals) in rows.items():
        print(f"| {name} | {counted / dt:,.0f} msg/s ({counted} in {dt:.2f} s) | "
              f"{sum(totals.values()):,} |")


if __name__ == "__main__":
    main()
