#!/usr/bin/env bash
# Runs every fuzz target for a short time from its committed seeds (fuzz/seeds/<target>/); a
# crash, a failed assertion, a leak or a timeout fails the script. CI calls it from .ci/run; for
# the long runs see docs/security.md ("Fuzzing").
#
#   fuzz/ci.sh [seconds per target, default 45] [target ...]
#
# Uses `cargo +nightly fuzz` when a nightly toolchain is installed, else `cargo fuzz` on stable
# with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags for the sanitizer and coverage).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-45}"
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if cargo +nightly --version >/dev/null 2>&1; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

# Longest input per target (bytes): what the target's parser can sensibly get at once.
max_len() {
  case "$1" in
    filter) echo 1048576 ;;
    cms | smtp_command | imap_command | sender_records) echo 65536 ;;
    rfc2047) echo 4096 ;;
    *) echo 1024 ;;
  esac
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(fuzz list)
fi

start=$(date +%s)
for t in "${targets[@]}"; do
  fuzz build "$t"
done
echo "fuzz: build took $(($(date +%s) - start)) s"

log="$(mktemp)"
corpus="$(mktemp -d)"
trap 'rm -rf "$log" "$corpus"' EXIT
for t in "${targets[@]}"; do
  rm -rf "$corpus" && mkdir -p "$corpus"
  echo "fuzz: $t for ${secs}s"
  # New inputs go to the scratch corpus; the committed seeds are only read.
  set +e
  # fuzz/regressions/<target>/ holds the minimised inputs of crashes found so far.
  dirs=("fuzz/seeds/$t")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  fuzz run "$t" "$corpus" "${dirs[@]}" -- \
    -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=30 \
    -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (exit $status); the reproducer is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: all targets passed; total $(($(date +%s) - start)) s"
