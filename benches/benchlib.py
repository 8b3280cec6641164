"""Shared by the Python benchmark scripts: a throw-away `tanba serve` on loopback and its memory.

    from benchlib import Server, status
    with Server("target/release/tanba", extra={"limits": "auth_failures = 1000000"},
                users={"bench@example.test": "bench-password-1"}) as srv:
        host, port = srv.addr("smtp.submissions")
        print(status(srv.pid)["VmRSS"])          # kB
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CONFIG = """[server]
hostname = "mail.example.test"
domains = ["example.test", "localhost"]
data_dir = "{d}/data"

[smtp]
mx = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
{smtp}
[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
{imap}
[signatures]
trust_dir = "{d}/trust"

[limits]
# Benches send bulk MX traffic from one address: the MX message rate would defer it.
mx_messages_per_ip = 0
{limits}

# Sender checks off: on the MX they would query the system's resolver, off loopback, and the
# benches measure Tanba, not DNS waits. `extra={{"auth": ...}}` may turn them back on.
[auth]
spf = false
dkim = false
dmarc = false
arc = false
{auth}

[store]
{store}

[http]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
metrics = ["127.0.0.1:0"]
"""


def status(pid: int) -> dict:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


class Server:
    """A `tanba serve` with a fresh data dir in a temp dir, stopped (SIGTERM) on exit.

    `extra` adds lines to the [smtp], [imap], [limits], [auth] or [store] sections; `users` are created with
    `tanba user add` once the server listens; `keep` leaves the temp dir (log, data) behind.
    """

    def __init__(self, binary, extra=None, users=None, keep=False, env=None):
        self.binary, self.extra, self.users = binary, extra or {}, users or {}
        self.keep, self.env = keep, env

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="tanba-bench-")
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(os.path.join(self.dir, "trust"))
        self.config = os.path.join(self.dir, "tanba.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(d=self.dir, **{k: self.extra.get(k, "")
                                                 for k in ("smtp", "imap", "limits", "auth", "store")}))
        self.log = os.path.join(self.dir, "server.log")
        env = dict(os.environ, **(self.env or {}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([self.binary, "--config", self.config, "serve"],
                                         stdout=log, stderr=log, env=env)
        self.pid = self.proc.pid
        listeners = os.path.join(self.data_dir, "listeners.json")
        for _ in range(600):
            if os.path.exists(listeners):
                break
            if self.proc.poll() is not None:
                sys.exit(f"server exited:\n{open(self.log).read()}")
            time.sleep(0.05)
        self.listeners = json.load(open(listeners))
        for email, password in self.users.items():
            r = subprocess.run([self.binary, "--config", self.config, "user", "add", email,
                                "--password-stdin"], input=password + "\n", text=True,
                               capture_output=True)
            if r.returncode != 0:
                sys.exit(f"user add {email}: {r.stderr}")
        return self

    def addr(self, key):
        """(host, port) of the first listener of `key` (`smtp.mx`, `imap.listen_tls`, ...)."""
        host, port = self.listeners[key][0].rsplit(":", 1)
        return host, int(port)

    def alive(self):
        return self.proc.poll() is None

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False
