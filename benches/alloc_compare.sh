#!/bin/bash
# Allocators under load: runs an already-built `tanba` with glibc's malloc, jemalloc and mimalloc
# (Debian's libjemalloc2 and libmimalloc2.0, by LD_PRELOAD), interleaved round by round, and for
# each: imaptest's default stress profile (10 clients x 10 s, implicit TLS) and 20 SMTP sessions
# x 50 messages of 1 KB to the MX port (Python smtplib), then the server's peak RSS.
# Builds nothing. docs/benchmarks.md ("Allocators") has the figures.
#
#   usage: benches/alloc_compare.sh BINARY CONFIG [ROUNDS]
#   CONFIG: a tanba.toml with IMAPS on 127.0.0.1:21993 and MX on 127.0.0.1:21025 and users
#   t1@localhost / t2@localhost (password imaptest-password), as in docs/imap.md "imaptest";
#   IMAPTEST: the imaptest binary; MBOX: the mbox (benches/imaptest_compare.py mbox-gen).
set -eu
BIN=$1; CONFIG=$2; ROUNDS=${3:-3}
IMAPTEST=${IMAPTEST:-/work/imaptest/src/imaptest}; MBOX=${MBOX:-/tmp/ipf/stress.mbox}
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-/usr/lib/dovecot}
DATA=$(sed -n 's/^data_dir *= *"\(.*\)"/\1/p' "$CONFIG")
declare -A PRE=([glibc]="" [jemalloc]=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
                [mimalloc]=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2)
smtp_load() {
  python3 - <<'PY'
import smtplib, socket, threading, time
body = ("Subject: alloc bench\r\n\r\n" + ("x" * 62 + "\r\n") * 15).encode()
def work():
    s = smtplib.SMTP("127.0.0.1", 21025, local_hostname="bench.example")
    s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.ehlo()
    for _ in range(50):
        s.sendmail("sender@example.kz", ["t2@localhost"], body)
    s.quit()
ths = [threading.Thread(target=work) for _ in range(20)]
t = time.perf_counter(); [x.start() for x in ths]; [x.join() for x in ths]
print(f"{1000 / (time.perf_counter() - t):.0f}")
PY
}
for r in $(seq 1 "$ROUNDS"); do
  for a in glibc jemalloc mimalloc; do
    LD_PRELOAD=${PRE[$a]} "$BIN" --config "$CONFIG" serve > "$DATA/../serve-$a.log" 2>&1 &
    for _ in $(seq 1 50); do
      python3 -c "import socket;socket.create_connection(('127.0.0.1',21993)).close()" 2>/dev/null && break
      sleep 0.2
    done
    out=$("$IMAPTEST" host=127.0.0.1 port=21993 ssl=any-cert user=t1@localhost \
          pass=imaptest-password mbox="$MBOX" clients=10 secs=10 2>&1)
    tot=$(echo "$out" | grep -A4 "^Totals:" | tail -1 | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; print s}')
    smtp=$(smtp_load)
    pid=$(cat "$DATA/tanba.pid")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    echo "round $r $a imaptest_total=$tot smtp_msgs_per_s=$smtp peak_rss_kib=$rss"
    kill "$pid"; sleep 2
  done
done
