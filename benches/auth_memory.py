#!/usr/bin/env python3
"""Server memory under a flood of concurrent wrong passwords (issue 11, finding 3).

Starts its own `tanba serve` on loopback with a fresh data dir, creates one account, then fires
N connections at once to the implicit-TLS submission port (465-style), each sending one
`AUTH PLAIN` with a wrong password, and prints the server's VmRSS (and VmHWM, the peak) from
/proc/PID/status before, right after each round, and after a pause. Several rounds show whether
memory keeps growing or stays put. Clients come from 127.0.0.2-127.0.0.254 (bound source
addresses) so per-address limits do not refuse them; the ban threshold is raised so that the
server really hashes every attempt.

    cargo build --release
    python3 benches/auth_memory.py --bin target/release/tanba -n 128 --rounds 3
    python3 benches/auth_memory.py --bin target/release/tanba -n 500

Only loopback traffic; each round is bounded by --timeout.
"""

import argparse
import base64
import socket
import ssl
import threading
import time

from benchlib import Server, status

PASSWORD = "bench-password-1"


def mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def attempt(addr, i, barrier, results, timeout):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    src = f"127.0.0.{2 + i % 253}"
    try:
        raw = socket.create_connection(addr, timeout=timeout, source_address=(src, 0))
        s = ctx.wrap_socket(raw)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if not line:
                    raise EOFError("closed")
                if line[3:4] != b"-":
                    return line

        reply()
        s.sendall(b"EHLO bench.example\r\n")
        reply()
        cred = base64.b64encode(f"\0bench@example.test\0wrong-{i}".encode()).decode()
        barrier.wait(timeout)
        s.sendall(f"AUTH PLAIN {cred}\r\n".encode())
        results[i] = reply()[:3].decode()
        s.close()
    except Exception as e:  # noqa: BLE001 - reported in the summary
        results[i] = type(e).__name__
        try:
            barrier.abort()
        except Exception:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/tanba")
    ap.add_argument("-n", type=int, default=128, help="concurrent AUTH attempts per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per round, at most")
    args = ap.parse_args()
    n = max(1, min(args.n, 1000))
    extra = {"smtp": "max_connections = 4096\nmax_submission_connections = 4096",
             "limits": "auth_failures = 1000000\nunauthenticated_per_ip = 10000"}
    with Server(args.bin, extra=extra, users={"bench@example.test": PASSWORD},
                env={"TANBA_LOG": "warn"}) as srv:
        addr = srv.addr("smtp.submissions")
        time.sleep(1)
        print(f"tanba pid {srv.pid}, {n} concurrent wrong AUTH PLAIN on {addr[0]}:{addr[1]}")
        print("| when | VmRSS | VmHWM (peak) | threads | answers | seconds |")
        print("|---|---|---|---|---|---|")
        s = status(srv.pid)
        print(f"| before | {mib(s['VmRSS'])} | {mib(s['VmHWM'])} | {s['Threads']} | | |")
        for r in range(args.rounds):
            results = [None] * n
            barrier = threading.Barrier(n)
            threads = [threading.Thread(target=attempt,
                                        args=(addr, i, barrier, results, args.timeout))
                       for i in range(n)]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join(args.timeout)
            took = time.time() - t0
            s = status(srv.pid)
            counts = {}
            for x in results:
                counts[x] = counts.get(x, 0) + 1
            answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str))
            print(f"| after round {r + 1} | {mib(s['VmRSS'])} | {mib(s['VmHWM'])} | "
                  f"{s['Threads']} | {answers} | {took:.1f} |")
        time.sleep(5)
        s = status(srv.pid)
        print(f"| 5 s later | {mib(s['VmRSS'])} | {mib(s['VmHWM'])} | {s['Threads']} | | |")

if __name__ == "__main__":
    main()
