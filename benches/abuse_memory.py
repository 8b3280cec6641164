#!/usr/bin/env python3
"""Memory of `tanba serve` under an unauthenticated attack (issue 11, SPEC §8; docs/security.md).

Starts its own server (release binary, fresh data dir, built-in limits), then at the same time:

* 500 idle connections (IMAP plaintext, IMAP TLS, submission, MX; spread over 127.0.0.x source
  addresses as many clients would be, so per-IP limits do not simply refuse them);
* 500 concurrent AUTH attempts with wrong passwords on the submissions port (465, implicit TLS),
  from other 127.0.0.x addresses (each address is banned after `limits.auth_failures` failures;
  attempts past the ban are refused at connect, which is the point);
* 20 MX sessions each sending 40 MB of a DATA that never ends.

While that load stands it samples VmRSS of the server every 0.2 s; it prints the peak (and VmHWM)
and the RSS after everything closed, as a Markdown table row for docs/benchmarks.md.

    cargo build --release
    python3 benches/abuse_memory.py            # --bin target/release/tanba

Only loopback addresses are used; every loop is bounded in count and time.
"""

import argparse
import asyncio
import ssl
import sys
import time

from benchlib import Server, status

def rss_kb(pid: int, key: str = "VmRSS") -> int:
    return status(pid).get(key, 0)


def src(i: int) -> str:
    """A loopback source address for client number i (127.0.1.0 – 127.0.200.255)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def open_from(addr, source, tls=False):
    host, port = addr
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, local_addr=(source, 0)), 20)


async def idle(addr, source, tls, hold, results):
    try:
        r, w = await open_from(addr, source, tls)
        await asyncio.wait_for(r.readline(), 20)
        results["idle_open"] += 1
        await asyncio.sleep(hold)
        w.close()
    except Exception:
        results["idle_refused"] += 1


async def wrong_auth(addr, source, results):
    import base64
    try:
        r, w = await open_from(addr, source, True)
        await asyncio.wait_for(r.readline(), 20)
        w.write(b"EHLO attacker\r\n")
        while True:
            line = await asyncio.wait_for(r.readline(), 20)
            if not line or line[3:4] == b" ":
                break
        cred = base64.b64encode(b"\0alice@example.test\0wrong-password-" + source.encode())
        w.write(b"AUTH PLAIN " + cred + b"\r\n")
        answer = await asyncio.wait_for(r.readline(), 60)
        results["auth_" + (answer[:3].decode(errors="replace") or "closed")] += 1
        w.close()
    except Exception:
        results["auth_refused"] += 1


async def big_data(addr, source, mb, hold, results):
    try:
        r, w = await open_from(addr, source)
        await asyncio.wait_for(r.readline(), 20)
        for cmd in (b"EHLO sender.example\r\n", b"MAIL FROM:<a@sender.example>\r\n",
                    b"RCPT TO:<alice@example.test>\r\n", b"DATA\r\n"):
            w.write(cmd)
            while True:
                line = await asyncio.wait_for(r.readline(), 20)
                if not line or line[3:4] == b" ":
                    break
        chunk = (b"x" * 998 + b"\r\n") * 1024  # 1 MB
        w.write(b"Subject: big\r\n\r\n")
        for _ in range(mb):
            w.write(chunk)
            await w.drain()
        results["data_sent"] += 1
        await asyncio.sleep(hold)
        w.close()
    except Exception as e:
        results["data_failed"] += 1
        results.setdefault("data_errors", set()).add(repr(e)[:80])


async def attack(srv, a):
    from collections import Counter
    results = Counter()
    hold = a.hold
    addr, pid = srv.addr, srv.pid
    mx = addr("smtp.mx")

    tasks = []
    kinds = [("imap.listen", False), ("imap.listen_tls", True), ("smtp.submission", False),
             ("smtp.mx", False)]
    for i in range(a.idle):
        key, tls = kinds[i % len(kinds)]
        tasks.append(idle(addr(key), src(i), tls, hold, results))
    for i in range(a.auth):
        tasks.append(wrong_auth(addr("smtp.submissions"), src(10_000 + i), results))
    for i in range(a.data):
        tasks.append(big_data(mx, src(20_000 + i), a.mb, hold, results))

    peak = 0
    done = asyncio.Event()

    async def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*tasks)
    done.set()
    await sampler
    return results, peak


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="target/release/tanba")
    p.add_argument("--idle", type=int, default=500)
    p.add_argument("--auth", type=int, default=500)
    p.add_argument("--data", type=int, default=20)
    p.add_argument("--mb", type=int, default=40)
    p.add_argument("--hold", type=float, default=20.0, help="seconds the idle/DATA load stands")
    a = p.parse_args()

    with Server(a.bin, users={"alice@example.test": "correct-horse-battery"}) as srv:
        before = rss_kb(srv.pid)
        t0 = time.time()
        results, peak = asyncio.run(attack(srv, a))
        elapsed = time.time() - t0
        time.sleep(2)
        after = rss_kb(srv.pid)
        hwm = rss_kb(srv.pid, "VmHWM")
        alive = srv.alive()
    print(f"load: {a.idle} idle + {a.auth} wrong AUTH (465) + {a.data} × {a.mb} MB unfinished "
          f"DATA, held {a.hold:.0f} s; ran {elapsed:.1f} s; server alive: {alive}")
    print("outcomes:", dict(sorted((k, v) for k, v in results.items() if k != "data_errors")))
    if results.get("data_errors"):
        print("DATA errors:", results["data_errors"])
    print()
    print("| RSS before | peak RSS (sampled) | VmHWM | RSS after |")
    print("|---|---|---|---|")
    print(f"| {before / 1024:.0f} MB | {peak / 1024:.0f} MB | {hwm / 1024:.0f} MB | "
          f"{after / 1024:.0f} MB |")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
