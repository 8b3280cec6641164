#!/usr/bin/env bash
# Builds clients/thunderbird/dist/tanba-eds.xpi from this directory and clients/shared/.
# Deterministic: the same sources give the same bytes (sorted entries, fixed mtime, no extra
# fields), so the committed .xpi can be checked against a fresh build (`build.sh --check`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$here/build"
out="$here/dist/tanba-eds.xpi"
rm -rf "$build"
mkdir -p "$build/shared" "$here/dist"
cp "$here/manifest.json" "$here"/*.js "$here"/*.css "$here"/*.html "$build/"
rm -f "$build/build.sh"
cp -r "$here/_locales" "$here/icons" "$build/"
cp "$here/../shared/"*.js "$build/shared/"
find "$build" -type f -exec chmod 0644 {} +
find "$build" -type d -exec chmod 0755 {} +
find "$build" -exec touch -h -d "2020-01-01T00:00:00Z" {} +
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$build" && find . -type f | sed 's|^\./||' | LC_ALL=C sort >"$tmp/list" &&
  TZ=UTC zip -q -X -D -9 "$tmp/tanba-eds.xpi" -@ <"$tmp/list")
if [ "${1:-}" = "--check" ]; then
  cmp "$tmp/tanba-eds.xpi" "$out" && echo "dist/tanba-eds.xpi is up to date"
else
  mv "$tmp/tanba-eds.xpi" "$out"
  echo "$out ($(wc -c <"$out") bytes)"
fi
