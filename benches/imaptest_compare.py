#!/usr/bin/env python3
"""Dovecot's imaptest against two (or more) IMAP servers side by side.

Runs binaries that are already built and servers that are already running: it builds nothing and
starts nothing (docs/imap.md, "imaptest", has the commands that build imaptest and start Tanba and
Dovecot on loopback). Two modes:

  groups  every scripted test group of imaptest's `src/tests` alone, per server: pass, FAIL or
          skip (skip: the group needs a capability the server does not advertise after login,
          which is how imaptest decides it too). Prints a Markdown table; with --details DIR
          writes each server's failure output to DIR/<server>.txt.

  stress  imaptest's default stress profile (random mixed commands on one mailbox) for --secs
          seconds with --clients clients, --rounds times per server, the servers interleaved
          (a, b, a, b, ...) so that load from elsewhere on the box hits both alike. Prints the
          per-command totals of each run, the mean per server, the ratio to the first server
          and the number of imaptest `Error:` lines (with --details DIR the error lines go to
          DIR/<server>-errors.txt).

    IMAPTEST=/work/imaptest/src/imaptest python3 benches/imaptest_compare.py stress \\
        --server tanba=127.0.0.1:21993 --server dovecot=127.0.0.1:22993 \\
        --user t1@localhost --password imaptest-password --mbox /tmp/ipf/stress.mbox

    python3 benches/imaptest_compare.py groups --tests /work/imaptest/src/tests \\
        --server tanba=127.0.0.1:21993 --server dovecot=127.0.0.1:22993 \\
        --user t1@localhost --user2 t2@localhost --password imaptest-password

All connections use implicit TLS (`ssl=any-cert`: the servers' certificates are self-signed).
Only loopback addresses are accepted. --mbox-gen FILE writes the deterministic 300-message mbox
that docs/benchmarks.md used, and exits.
"""

import argparse
import imaplib
import ipaddress
import os
import random
import re
import ssl
import subprocess
import sys

COMMANDS = ("Logi", "List", "Stat", "Sele", "Fetc", "Fet2", "Stor", "Dele", "Expu", "Appe", "Logo")


def imaptest_bin(a):
    path = a.imaptest or os.environ.get("IMAPTEST")
    if not path:
        sys.exit("give --imaptest PATH or IMAPTEST=PATH (a built imaptest binary)")
    return path


def env():
    e = dict(os.environ)
    # Debian's dovecot-dev links imaptest against libdovecot.so in /usr/lib/dovecot.
    e.setdefault("LD_LIBRARY_PATH", "/usr/lib/dovecot")
    return e


def servers(a):
    out = []
    for s in a.server:
        name, _, addr = s.partition("=")
        host, _, port = addr.rpartition(":")
        if not ipaddress.ip_address(host).is_loopback:
            sys.exit(f"{host}: only loopback servers")
        out.append((name, host, int(port)))
    return out


def capabilities(host, port, user, password):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
    m.login(user, password)
    typ, data = m.capability()
    m.logout()
    return {c.upper() for c in data[0].decode().split()}


def group_caps(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                break
            k, _, v = line.partition(":")
            if k.strip().lower() == "capabilities":
                return v.split()
    return []


def run_groups(a):
    groups = sorted(
        f for f in os.listdir(a.tests)
        if not f.endswith(".mbox") and os.path.isfile(os.path.join(a.tests, f)))
    results = {}
    for name, host, port in servers(a):
        caps = capabilities(host, port, a.user, a.password)
        res, details = {}, []
        for g in groups:
            need = [c for c in group_caps(os.path.join(a.tests, g)) if c.upper() not in caps]
            if need:
                res[g] = "skip (" + " ".join(need) + ")"
                continue
            cmd = [imaptest_bin(a), f"host={host}", f"port={port}", "ssl=any-cert",
                   f"user={a.user}", f"user2={a.user2}", f"pass={a.password}",
                   f"test={os.path.join(a.tests, g)}"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=120,
                               errors="replace")
            out = p.stdout + p.stderr
            m = re.search(r"(\d+) test groups: (\d+) failed, (\d+) skipped", out)
            errors = [l for l in out.splitlines() if l.startswith("Error:")]
            if m is None:
                res[g] = "FAIL (no summary)"
            elif m.group(2) != "0":
                res[g] = "FAIL"
            elif m.group(3) != "0":
                res[g] = "skip"
            elif errors:
                res[g] = f"pass, {len(errors)} Error lines"
            else:
                res[g] = "pass"
            if res[g] != "pass":
                details.append(f"===== {g}: {res[g]}\n{out}")
        results[name] = res
        if a.details:
            os.makedirs(a.details, exist_ok=True)
            with open(os.path.join(a.details, f"{name}.txt"), "w") as f:
                f.write("\n".join(details))
    names = list(results)
    print("| group | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for g in groups:
        print(f"| {g} | " + " | ".join(results[n][g] for n in names) + " |")
    for n in names:
        v = list(results[n].values())
        print(f"{n}: {sum(x == 'pass' for x in v)} pass, "
              f"{sum(x.startswith('FAIL') for x in v)} FAIL, "
              f"{sum(x.startswith('skip') for x in v)} skip, "
              f"{sum(x.startswith('pass,') for x in v)} pass with Error lines, of {len(v)}")


def parse_totals(out):
    lines = out.splitlines()
    i = max(i for i, l in enumerate(lines) if l.startswith("Totals:"))
    head = lines[i + 1].split()
    nums = lines[i + 4].split()
    return {h: int(n) for h, n in zip(head, nums)}


def run_stress(a):
    srv = servers(a)
    runs = {name: [] for name, _, _ in srv}
    errs = {name: [] for name, _, _ in srv}
    for r in range(a.rounds):
        for name, host, port in srv:
            cmd = [imaptest_bin(a), f"host={host}", f"port={port}", "ssl=any-cert",
                   f"user={a.user}", f"pass={a.password}", f"mbox={a.mbox}",
                   f"clients={a.clients}", f"secs={a.secs}"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env(),
                               timeout=a.secs + 120, errors="replace")
            out = p.stdout + p.stderr
            t = parse_totals(out)
            e = [l for l in out.splitlines() if l.startswith("Error:")]
            runs[name].append(t)
            errs[name].extend(e)
            print(f"round {r + 1} {name}: total {sum(t.values())} "
                  + " ".join(f"{k}={v}" for k, v in t.items()) + f" errors={len(e)}",
                  flush=True)
    first = srv[0][0]
    mean = {n: {c: sum(t.get(c, 0) for t in runs[n]) / len(runs[n]) for c in COMMANDS}
            for n in runs}
    names = list(runs)
    print()
    print("| command | " + " | ".join(f"{n} (mean of {len(runs[n])})" for n in names)
          + " | " + " | ".join(f"{n} / {first}" for n in names[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for c in COMMANDS + ("total",):
        vals = [sum(mean[n].values()) if c == "total" else mean[n][c] for n in names]
        ratios = [f"{v / vals[0]:.2f}" if vals[0] else "-" for v in vals[1:]]
        print(f"| {c} | " + " | ".join(f"{v:,.0f}" for v in vals) + " | "
              + " | ".join(ratios) + " |")
    print("| imaptest errors | " + " | ".join(str(len(errs[n])) for n in names) + " |")
    if a.details:
        os.makedirs(a.details, exist_ok=True)
        for n in names:
            with open(os.path.join(a.details, f"{n}-errors.txt"), "w") as f:
                f.write("\n".join(errs[n]) + "\n")


def mbox_gen(path):
    r = random.Random(16)
    words = ("contract invoice meeting report payment signature delivery quarterly agreement "
             "schedule budget review").split()
    out = []
    for i in range(300):
        subj = " ".join(r.choice(words) for _ in range(r.randint(2, 6)))
        n = r.choice([5, 20, 60, 200, 800])
        body = "\n".join(" ".join(r.choice(words) for _ in range(12)) for _ in range(n))
        out.append(
            f"From sender{i % 37}@example.org Mon Nov 20 10:{i % 60:02d}:00 2023\n"
            f"From: Sender {i % 37} <sender{i % 37}@example.org>\nTo: t1@localhost\n"
            f"Cc: other{i % 11}@example.org\nSubject: {subj} {i}\n"
            f"Date: Mon, 20 Nov 2023 10:{i % 60:02d}:00 +0600\n"
            f"Message-ID: <m{i}@example.org>\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=us-ascii\n\n{body}\n\n")
    with open(path, "w") as f:
        f.write("".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("groups", "stress", "mbox-gen"))
    p.add_argument("--imaptest")
    p.add_argument("--server", action="append", default=[], help="name=host:port (TLS)")
    p.add_argument("--user", default="t1@localhost")
    p.add_argument("--user2", default="t2@localhost")
    p.add_argument("--password", default="imaptest-password")
    p.add_argument("--tests", help="imaptest's src/tests directory")
    p.add_argument("--mbox", default="/tmp/ipf/stress.mbox")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--secs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--details", help="directory for failure details / error lines")
    a = p.parse_args()
    if a.mode == "mbox-gen":
        mbox_gen(a.mbox)
    elif a.mode == "groups":
        run_groups(a)
    else:
        run_stress(a)


if __name__ == "__main__":
    main()
