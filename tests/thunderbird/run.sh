#!/usr/bin/env bash
# The EDS bar in a real Thunderbird (docs/clients.md, "Checking it in a real Thunderbird").
#
# Starts `tanba serve` (TANBA_BIN, default target/debug/tanba) on loopback with the NCA RK test
# roots trusted and its clock at 2021-06-01 (libfaketime: the test certificates have expired
# since), delivers a signed message (the NCA sample as pkcs7-mime: pass) and a tampered copy
# over SMTP, prepares a fresh Thunderbird profile (IMAP account on the IMAPS port, the test CA
# in the profile's NSS database, the add-on in <profile>/extensions/eds@tanba.xpi), runs
# Thunderbird under Xvfb, opens both messages and asserts from the add-on's own console output
# (`tanba-eds: shown ...`) that the bar was shown with the signer's name and the verdicts.
# A screenshot goes to SCREENSHOT (default docs/img/thunderbird-eds-bar.png).
#
# Needs Debian's thunderbird, xvfb, x11-apps (xwd), libnss3-tools (certutil), faketime, zip,
# openssl, python3; `--install` apt-installs the missing ones (as root).
# Exit 0: the bar was shown as expected; 1: it was not (the logs are printed); 2: setup failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/thunderbird"
tanba="${TANBA_BIN:-$root/target/debug/tanba}"
shot="${SCREENSHOT:-$root/docs/img/thunderbird-eds-bar.png}"
limit="${TB_WAIT_SECONDS:-180}"
tb="${THUNDERBIRD:-thunderbird}" # another build, e.g. an unpacked ESR 140

if [ "${1:-}" = "--install" ]; then
  need=()
  for p in thunderbird:thunderbird Xvfb:xvfb xwd:x11-apps certutil:libnss3-tools faketime:faketime zip:zip; do
    command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" xauth >/dev/null
  fi
fi
for cmd in thunderbird Xvfb xwd certutil zip openssl python3; do
  command -v "$cmd" >/dev/null || { echo "missing: $cmd (run with --install)"; exit 2; }
done
faketime_lib="$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)"
[ -n "$faketime_lib" ] || { echo "missing: libfaketime (Debian package faketime)"; exit 2; }
[ -x "$tanba" ] || { echo "no tanba binary at $tanba (cargo build, or TANBA_BIN=...)"; exit 2; }

work="$(mktemp -d /tmp/tanba-thunderbird.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- server --------------------------------------------------------------------------------
mkdir -p "$work/trust" "$work/data"
cp "$root"/tests/data/nca/ca/* "$work/trust/"
# A test CA and a server certificate for localhost, valid now (Thunderbird runs on real time).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 30 \
  -subj "/CN=Tanba Thunderbird test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/req.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/ext"
openssl x509 -req -in "$work/req.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 30 -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
cat >"$work/tanba.toml" <<EOF
[server]
hostname = "mail.example.test"
domains = ["example.test"]
data_dir = "$work/data"

[tls]
cert = "$work/cert.pem"
key = "$work/key.pem"

[smtp]
mx = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]

[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]

[http]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
metrics = []

[signatures]
trust_dir = "$work/trust"

[auth]
spf = false
dkim = false
dmarc = false
arc = false
EOF
password="thunderbird-test-password"
LD_PRELOAD="$faketime_lib" FAKETIME="@2021-06-01 12:00:00" FAKETIME_DONT_FAKE_MONOTONIC=1 TZ=UTC \
  "$tanba" --config "$work/tanba.toml" serve >"$work/tanba.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  [ -s "$work/data/listeners.json" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/tanba.log"; exit 2; }
  sleep 0.1
done
# Accounts are added through the running server's admin socket (SPEC §2).
printf '%s\n' "$password" | "$tanba" --config "$work/tanba.toml" user add alice@example.test --password-stdin >/dev/null
read -r mx imaps < <(python3 -c '
import json,sys
v=json.load(open(sys.argv[1]))
print(v["smtp.mx"][0].rsplit(":",1)[1], v["imap.listen_tls"][0].rsplit(":",1)[1])' "$work/data/listeners.json")

# --- mail ----------------------------------------------------------------------------------
python3 - "$root/tests/data/nca/cms/ncanode_attached_1signer_rsa.p7s" "$mx" <<'EOF'
import base64, smtplib, sys
cms = open(sys.argv[1], "rb").read()
# The sample signs "test123"; one changed byte of it makes the digest differ.
assert cms.count(b"test123") == 1
tampered = cms.replace(b"test123", b"test124")
def message(mid, subject, body):
    b64 = base64.encodebytes(body).decode().replace("\n", "\r\n")
    return (f"From: Test <test@example.kz>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\nDate: Tue, 01 Jun 2021 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n"
            "Content-Disposition: attachment; filename=smime.p7m\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{b64}")
with smtplib.SMTP("127.0.0.1", int(sys.argv[2])) as s:
    s.sendmail("test@example.kz", ["alice@example.test"], message("tampered@tanba.test", "Tampered contract", tampered))
    s.sendmail("test@example.kz", ["alice@example.test"], message("signed@tanba.test", "Signed contract", cms))
EOF

# --- profile -------------------------------------------------------------------------------
profile="$work/profile"
mkdir -p "$profile/extensions" "$profile/browser-extension-data/eds@tanba"
certutil -N -d "sql:$profile" --empty-password
certutil -A -d "sql:$profile" -n "tanba-test-ca" -t "C,," -i "$work/ca.pem"
cat >"$profile/user.js" <<EOF
user_pref("mail.account.account1.identities", "id1");
user_pref("mail.account.account1.server", "server1");
user_pref("mail.account.account2.server", "server2");
user_pref("mail.accountmanager.accounts", "account1,account2");
user_pref("mail.accountmanager.defaultaccount", "account1");
user_pref("mail.accountmanager.localfoldersserver", "server2");
user_pref("mail.identity.id1.fullName", "Alice");
user_pref("mail.identity.id1.useremail", "alice@example.test");
user_pref("mail.identity.id1.valid", true);
user_pref("mail.server.server1.hostname", "localhost");
user_pref("mail.server.server1.name", "alice@example.test");
user_pref("mail.server.server1.port", $imaps);
user_pref("mail.server.server1.socketType", 3);
user_pref("mail.server.server1.authMethod", 3);
user_pref("mail.server.server1.type", "imap");
user_pref("mail.server.server1.userName", "alice@example.test");
user_pref("mail.server.server1.login_at_startup", false);
user_pref("mail.server.server1.check_new_mail", false);
user_pref("mail.server.server2.hostname", "Local Folders");
user_pref("mail.server.server2.name", "Local Folders");
user_pref("mail.server.server2.type", "none");
user_pref("mail.server.server2.userName", "nobody");
user_pref("mail.openMessageBehavior", 2);
user_pref("mail.shell.checkDefaultClient", false);
user_pref("mail.rights.version", 1);
user_pref("mail.provider.suppress_dialog_on_startup", true);
user_pref("mail.spotlight.firstRunDone", true);
user_pref("mail.winsearch.firstRunDone", true);
user_pref("mailnews.start_page.enabled", false);
user_pref("mail.inappnotifications.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.donation.eoy.version.viewed", 999);
user_pref("xpinstall.signatures.required", false);
user_pref("extensions.autoDisableScopes", 0);
user_pref("extensions.experiments.enabled", true);
user_pref("extensions.webextensions.ExtensionStorageIDB.enabled", false);
user_pref("devtools.console.stdout.content", true);
user_pref("devtools.console.stdout.chrome", true);
user_pref("browser.dom.window.dump.enabled", true);
user_pref("intl.locale.requested", "${TB_LOCALE:-en-US}");
// Nothing leaves the machine: every HTTP(S) request goes to a closed loopback port (the
// test's own servers are on 127.0.0.1 and not proxied), and the background services that
// would call out are off.
user_pref("network.proxy.type", 1);
user_pref("network.proxy.http", "127.0.0.1");
user_pref("network.proxy.http_port", 9);
user_pref("network.proxy.ssl", "127.0.0.1");
user_pref("network.proxy.ssl_port", 9);
user_pref("network.proxy.share_proxy_settings", true);
user_pref("network.proxy.no_proxies_on", "localhost, 127.0.0.1");
user_pref("network.proxy.allow_hijacking_localhost", false);
user_pref("network.trr.mode", 5);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("app.update.checkInstallTime", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("services.settings.server", "http://127.0.0.1:9/v1");
user_pref("security.OCSP.enabled", 0);
user_pref("security.remote_settings.crlite_filters.enabled", false);
user_pref("security.remote_settings.intermediates.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.server", "");
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("mail.provider.enabled", false);
user_pref("mailnews.auto_config_url", "");
user_pref("geo.enabled", false);
EOF
# The account trusts its Tanba server (the add-on's options page writes the same).
printf '{"trust":{"account1":["mail.example.test"]}}' >"$profile/browser-extension-data/eds@tanba/storage.js"
bash "$root/clients/thunderbird/build.sh" >/dev/null
cp "$root/clients/thunderbird/dist/tanba-eds.xpi" "$profile/extensions/eds@tanba.xpi"
mkdir -p "$work/driver"
cp "$here"/driver/* "$work/driver/"
printf '{"password":"%s","messageIds":["tampered@tanba.test","signed@tanba.test"]}' "$password" >"$work/driver/config.json"
(cd "$work/driver" && zip -q -X "$profile/extensions/driver@tanba.test.xpi" ./*)

# --- Thunderbird ---------------------------------------------------------------------------
n=$((90 + RANDOM % 100))
while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
display=":$n"
Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
start=$(date +%s)
DISPLAY="$display" MOZ_CRASHREPORTER_DISABLE=1 "$tb" --no-remote --profile "$profile" >"$work/thunderbird.log" 2>&1 &
pids+=($!)
want=2
while :; do
  shown=$(grep -c "tanba-eds: shown" "$work/thunderbird.log" || true)
  [ "$shown" -ge "$want" ] && break
  if grep -q "tanba-test: message .* never arrived" "$work/thunderbird.log" ||
    [ $(($(date +%s) - start)) -ge "$limit" ] || ! kill -0 "${pids[2]}" 2>/dev/null; then
    echo "FAIL: the EDS bar was not shown ($shown of $want) within ${limit}s"
    echo "--- thunderbird.log"; grep -v "^$" "$work/thunderbird.log" | tail -60
    echo "--- tanba.log"; tail -20 "$work/tanba.log"
    exit 1
  fi
  sleep 1
done
elapsed=$(($(date +%s) - start))
sleep 2 # let the last tab paint before the screenshot
mkdir -p "$(dirname "$shot")"
xwd -root -silent -display "$display" >"$work/screen.xwd"
python3 "$here/xwd2png.py" "$work/screen.xwd" "$shot"
# The console writes non-ASCII as \uXXXX escapes: decoded before comparing.
python3 - "$work/thunderbird.log" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
text = re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: chr(int(m.group(1), 16)), text)
shown = [l.strip() for l in text.splitlines() if "tanba-eds: shown" in l]
print("\n".join(shown))
want = ["tanba-eds: shown fail: fail digest-mismatch",
        "tanba-eds: shown pass: ТЕСТОВ ТЕСТ ТЕСТОВИЧ (IIN 123456789011)"]
# The header button (outside the message content) got the verdicts too.
shown += [l.strip() for l in text.splitlines() if "tanba-eds: action" in l]
want += ["tanba-eds: action fail", "tanba-eds: action pass"]
missing = [w for w in want if not any(w in l for l in shown)]
for w in missing:
    print("FAIL: not shown:", w)
sys.exit(1 if missing else 0)
EOF
echo "OK: the EDS bar was shown in Thunderbird $("$tb" --version 2>/dev/null | awk "{print \$3}") (${elapsed}s after start); screenshot $shot"
