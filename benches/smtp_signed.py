"""Signed mail against unsigned mail of the same size, through a real `tanba serve` (issue 18).

    cargo build --release
    python3 benches/smtp_signed.py                       # defaults: 20 sessions, 10,000 messages, 3 rounds
    python3 benches/smtp_signed.py --messages 2000 --rounds 1 --only rsa

Starts a throw-away server (benches/benchlib.py) on loopback whose trust_dir holds the NCA RK test
roots (tests/data/nca/ca: bench only, never in production), then, per round and per sample,
sends the same number of messages of two kinds over N concurrent SMTP sessions to the MX port:

* signed: a short text part and the real NCA RK CMS as an attachment (`contract.p7s`,
  application/pkcs7-signature, base64), as mail from NCALayer users arrives;
* unsigned: the same message with the CMS bytes replaced by as many bytes of a PDF-like file
  (`contract.pdf`), so that both have exactly the same size and MIME shape.

Every message is delivered durably (fsync before each 250) and goes through the signature filter
(find, CMS, RSA/GOST, chain, stamp). The server validates at arrival: the NCA test certificates
have expired, so the verdicts are `fail; reason=expired`, after the same work a pass costs (every
signature on the path is checked before the validity period is).

The client is a minimal pipelining SMTP client (MAIL, RCPT and DATA in one write, RFC 2920) in
threads, so that it takes as little of the shared CPU as possible. For each batch it prints the
wall time, the rate, and the server's CPU time per message (utime + stime of the server process
from /proc, so the client's share of the machine does not count), and the signed/unsigned ratio.
"""

import argparse
import os
import shutil
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NCA = os.path.join(ROOT, "tests", "data", "nca")
SAMPLES = {
    "rsa": "ncanode_attached_1signer_rsa.p7s",
    "rsa+gost2015": "ncanode_attached_2signers_rsa+gost2015.p7s",
}
RCPT = "bench@example.test"


def b64_lines(data: bytes) -> bytes:
    import base64

    s = base64.b64encode(data)
    return b"".join(s[i:i + 76] + b"\r\n" for i in range(0, len(s), 76))


def message(name: str, ctype: str, data: bytes, pad: int = 0) -> bytes:
    return (
        b"From: ext@example.kz\r\nTo: " + RCPT.encode() + b"\r\nSubject: contract\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n"
        b"--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nContract attached." + b" " * pad + b"\r\n"
        b"--BOUNDARY\r\nContent-Type: " + ctype.encode() + b"; name=\"" + name.encode() + b"\"\r\n"
        b"Content-Disposition: attachment; filename=\"" + name.encode() + b"\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(data) + b"--BOUNDARY--\r\n"
    )


def pair(cms: bytes):
    """(signed, unsigned) messages of exactly the same size."""
    signed = message("contract.p7s", "application/pkcs7-signature", cms)
    pdf = (b"%PDF-1.4\n" + bytes((i * 7 + 3) % 251 for i in range(len(cms))))[:len(cms)]
    unsigned = message("contract.pdf", "application/pdf", pdf)
    unsigned = message("contract.pdf", "application/pdf", pdf, len(signed) - len(unsigned))
    assert len(signed) == len(unsigned), (len(signed), len(unsigned))
    return signed, unsigned


class Smtp:
    """One SMTP session: EHLO once, then MAIL+RCPT+DATA pipelined per message."""

    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.reply()
        self.s.sendall(b"EHLO bench.example\r\n")
        self.reply()

    def reply(self) -> bytes:
        """One (possibly multi-line) reply; raises on a 4xx/5xx."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                if line[:1] in (b"4", b"5"):
                    raise RuntimeError(line.decode(errors="replace"))
                return line

    def send(self, envelope: bytes, body: bytes):
        self.s.sendall(envelope)
        for _ in range(3):
            self.reply()
        self.s.sendall(body)
        self.reply()

    def close(self):
        self.s.sendall(b"QUIT\r\n")
        self.s.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(pid: int) -> int:
    """The `tanba` process: `pid` itself, or its child when --binary is a wrapper (perf)."""
    for _ in range(100):
        if open(f"/proc/{pid}/comm").read().strip().startswith("tanba"):
            return pid
        try:
            children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        except OSError:
            children = []
        for c in children:
            if open(f"/proc/{c}/comm").read().strip().startswith("tanba"):
                return int(c)
        time.sleep(0.05)
    sys.exit("no tanba process found")


def run_batch(addr, pid, raw: bytes, sessions: int, total: int):
    envelope = b"MAIL FROM:<ext@example.kz>\r\nRCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n"
    body = raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    conns = [Smtp(*addr) for _ in range(sessions)]
    errors = []

    def work(conn, n):
        try:
            for _ in range(n):
                conn.send(envelope, body)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    ts = [threading.Thread(target=work, args=(c, n)) for c, n in zip(conns, per)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    for c in conns:
        c.close()
    if errors:
        sys.exit(f"SMTP error: {errors[0]}")
    return dt, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "tanba"))
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=10000, help="per batch (one kind, one round)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(SAMPLES), help="comma-separated: " + ", ".join(SAMPLES))
    ap.add_argument("--kinds", default="unsigned,signed", help="which messages to send (profiling)")
    ap.add_argument("--keep", action="store_true", help="keep the server's temp dir (log, data)")
    a = ap.parse_args()
    a.messages = max(1, min(a.messages, 1_000_000))
    a.sessions = max(1, min(a.sessions, 200))
    a.rounds = max(1, min(a.rounds, 20))
    # Sender checks (SPF, DKIM, DMARC, ARC) are off in benchlib's config: they would query the
    # system's resolver (off loopback) and wait on it; this bench measures the signature filter.
    with Server(a.binary, users={RCPT: "bench-password-1"},
                keep=a.keep) as srv:
        for f in os.listdir(os.path.join(NCA, "ca")):
            shutil.copy(os.path.join(NCA, "ca", f), os.path.join(srv.dir, "trust", f))
        # The trust_dir is read at start and on SIGHUP: reload to pick up the copied roots.
        import signal

        pid = server_pid(srv.pid)
        log_before = open(srv.log, "rb").read().count(b"reloaded:")
        os.kill(pid, signal.SIGHUP)
        for _ in range(200):
            if open(srv.log, "rb").read().count(b"reloaded:") > log_before:
                break
            time.sleep(0.05)
        else:
            sys.exit("the server did not reload")
        addr = srv.addr("smtp.mx")
        kinds = [k for k in a.only.split(",") if k]
        msgs = {}
        for k in kinds:
            cms = open(os.path.join(NCA, "cms", SAMPLES[k]), "rb").read()
            msgs[k] = pair(cms)
        # Warm up (the GOST fixed-base tables, the page cache, sled's first segments).
        for k in kinds:
            for raw in msgs[k]:
                run_batch(addr, pid, raw, min(a.sessions, 4), 40)
        results = {}
        for r in range(a.rounds):
            for k in kinds:
                signed, unsigned = msgs[k]
                # Alternate which kind goes first: the file system's state (inodes freed by
                # earlier runs) makes whichever batch comes first a little slower.
                order = [("unsigned", unsigned), ("signed", signed)]
                for label, raw in order if r % 2 == 0 else order[::-1]:
                    if label not in a.kinds.split(","):
                        continue
                    dt, cpu = run_batch(addr, pid, raw, a.sessions, a.messages)
                    results.setdefault((k, label), []).append((dt, cpu))
                    print(f"round {r + 1} {k:<13} {label:<8} {len(raw):>6} bytes  "
                          f"{a.messages} msgs in {dt:6.2f} s = {a.messages / dt:7.0f} msg/s  "
                          f"server CPU {cpu * 1000 / a.messages:.3f} ms/msg", flush=True)
        print()
        print(f"{a.sessions} sessions x {a.messages} messages x {a.rounds} rounds, best round "
              f"(median in brackets):")
        for k in kinds:
            if len(a.kinds.split(",")) < 2:
                break
            (ud, uc), (sd, sc) = (min(results[(k, x)]) for x in ("unsigned", "signed"))
            (mud, muc), (msd, msc) = (sorted(results[(k, x)])[len(results[(k, x)]) // 2]
                                      for x in ("unsigned", "signed"))
            n = a.messages
            print(f"{k:<13} unsigned {n / ud:5.0f} ({n / mud:5.0f}) msg/s  "
                  f"signed {n / sd:5.0f} ({n / msd:5.0f}) msg/s  "
                  f"ratio {ud / sd:.2f}x ({mud / msd:.2f}x)  "
                  f"extra server CPU {(sc - uc) * 1000 / n:+.3f} ({(msc - muc) * 1000 / n:+.3f}) ms/msg")
        if not srv.alive():
            sys.exit("the server died")


if __name__ == "__main__":
    main()
