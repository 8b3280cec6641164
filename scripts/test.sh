#!/usr/bin/env bash
# The test command (README.md, .ci/run): on a Debian/Ubuntu machine, installs from Debian
# packages whatever the build and the tests need and is missing (apt-get update first; sudo only
# when not root), then checks formatting and lints and runs the whole test suite.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test it delivery`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: openssl-sys needs pkg-config + libssl-dev. Tests: the openssl CLI (test PKI), python3
# with dnslib (a loopback DNS server), dkim + dnspython (DKIM verification; authres for its ARC
# signing) and aiosmtpd (SMTP receivers), isync (mbsync: a real IMAP syncing client), swaks, faketime (libfaketime: the
# server's clock inside the expired NCA test certificates' validity), strace (fsync counts),
# fail2ban (fail2ban-regex against the shipped filter), dovecot-core (a real Dovecot: doveadm
# writes the maildir `tanba import maildir` reads; not dovecot-imapd, whose packaged service
# would listen on 143/993 of the machine), python3-prometheus-client (its parser reads /metrics),
# pebble (the ACME test CA: tests/it/acme.rs).
# ldnsutils + nsd (DANE: a zone signed with ldns-signzone, served by NSD on a loopback port; the
# install below does not start Debian's nsd service).
# postgresql: the store on PostgreSQL (tests/it/pg.rs start their own cluster with initdb/pg_ctl in
# a temp dir on a loopback port; policy-rc.d keeps Debian's packaged cluster, 5432, from starting).
# The client add-ons' check (docs/clients.md): a real Thunderbird under Xvfb (thunderbird, xvfb,
# xauth, x11-apps for xwd, libnss3-tools for certutil, zip); node and npm for their unit tests and
# web-ext lint. chromium: the self-service page in a real browser (tests/browser/: about 80 MB
# to download, 30 s to install).
PACKAGES=(
  pkg-config libssl-dev openssl ca-certificates
  python3 python3-dnslib python3-dkim python3-dnspython python3-aiosmtpd python3-authres
  isync swaks faketime strace fail2ban dovecot-core python3-prometheus-client pebble
  ldnsutils nsd postgresql
  thunderbird xvfb xauth x11-apps libnss3-tools zip chromium
)
PY_MODULES="dnslib, dkim, dns.message, aiosmtpd, authres, prometheus_client"

if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
      missing+=("$p")
    fi
  done
  # Node.js: any packaging will do (Debian's nodejs + npm, or NodeSource's nodejs with npm inside).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
      as_root=()
    elif command -v sudo >/dev/null 2>&1; then
      as_root=(sudo)
    else
      echo "error: these Debian packages are missing and there is no sudo: ${missing[*]}" >&2
      echo "       install them as root: apt-get update && apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    echo "Installing missing Debian packages: ${missing[*]}"
    # Packages with a service (nsd, dovecot-core) must not start one on the machine: the tests
    # run their own on loopback ports. policy-rc.d (Debian's invoke-rc.d policy) says so for the
    # length of the install, unless the machine already has one.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
      "${as_root[@]}" chmod 755 "$policy"
      own_policy=1
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$own_policy" ]; then "${as_root[@]}" rm -f "$policy"; fi
  fi
else
  echo "note: not a Debian-like system: install by hand the equivalents of ${PACKAGES[*]}" >&2
fi

# The tests start `python3` from PATH. When that is another interpreter (pyenv, a virtualenv)
# without the modules, use Debian's, which has them from the packages above.
if ! python3 -c "import $PY_MODULES" >/dev/null 2>&1 \
   && /usr/bin/python3 -c "import $PY_MODULES" >/dev/null 2>&1; then
  shim="$PWD/target/test-python"
  mkdir -p "$shim"
  ln -sf /usr/bin/python3 "$shim/python3"
  export PATH="$shim:$PATH"
  echo "note: python3 on PATH lacks $PY_MODULES; the tests use /usr/bin/python3"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found: install Rust 1.89 or newer (https://rustup.rs), then run again" >&2
  exit 1
fi

# Tests choose their config with --config; an operator's TANBA_CONFIG must not leak in.
unset TANBA_CONFIG

cargo --version
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked
cargo test --locked "$@"

# The same integration binary again with every test server's store on PostgreSQL (one cluster
# for the process, a fresh database per server: tests/it/support); tests about sled's own files
# print "skipped: sled only". On a whole run, or when the arguments select the `it` binary.
if [ $# -eq 0 ] || [[ " $* " == *" --test it "* ]]; then
  # The pg_* and cluster tests run on PostgreSQL in the first pass already (their own clusters).
  if [ $# -eq 0 ]; then pg_args=(--test it -- --skip pg_ --skip cluster::); else pg_args=("$@"); fi
  TANBA_TEST_BACKEND=postgres cargo test --locked "${pg_args[@]}"
fi

# The client add-ons (docs/clients.md) and the self-service page, on a whole run only (no extra
# arguments): node's test runner on the shared stamp reader and both add-ons (web-ext lint among
# them), the EDS bar in a real Thunderbird under Xvfb, and the page in Debian's chromium driven by
# playwright-core (tests/browser/userpage.mjs), against the tanba binary `cargo test` just built.
if [ $# -eq 0 ]; then
  (cd clients && npm ci --no-audit --no-fund --loglevel=error)
  node --test clients/test/
  SCREENSHOT=target/thunderbird-eds-bar.png bash tests/thunderbird/run.sh
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error \
    && SCREENSHOT="" CHROMIUM="${CHROMIUM:-/usr/bin/chromium}" node userpage.mjs ../../target/debug/tanba)
fi
