// The self-service page in a real browser (issue 14 point 6): Debian's chromium driven by
// playwright-core. Starts `tanba serve` on loopback with a fresh data dir, signs in, changes the
// password, checks the new one signs in and the old one does not, checks that a cross-site form
// post is refused, and saves a screenshot to docs/img/userpage.png.
//
//   cd tests/browser && npm ci && node userpage.mjs [path/to/tanba]
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCREENSHOT (default docs/img/userpage.png;
// "" for none). Exit 0 on success; any failure throws (exit 1).

import { chromium } from "playwright-core";
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate, createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const bin = path.resolve(process.argv[2] || path.join(repo, "target/debug/tanba"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const clientsDir = path.resolve(process.env.CLIENTS_DIR || path.join(repo, "clients"));
const screenshot =
  process.env.SCREENSHOT ?? path.join(repo, "docs/img/userpage.png");

const HOST = "mail.example.test";
const USER = "alice@example.test";
const OLD_PW = "alice-old-password";
const NEW_PW = "alice-new-password-2";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tanba-browser-"));
const config = path.join(dir, "tanba.toml");
fs.mkdirSync(path.join(dir, "trust"));
fs.writeFileSync(
  config,
  `[server]
hostname = "${HOST}"
domains = ["example.test"]
data_dir = "${dir}/data"

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
clients_dir = "${clientsDir}"

[signatures]
trust_dir = "${dir}/trust"

[auth]
spf = false
dkim = false
dmarc = false
arc = false
`,
);

const log = fs.openSync(path.join(dir, "server.log"), "a");
const server = spawn(bin, ["--config", config, "serve"], {
  stdio: ["ignore", log, log],
});
let browser;
try {
  // listeners.json appears once every listener is bound.
  const listeners = path.join(dir, "data/listeners.json");
  const started = Date.now();
  while (!fs.existsSync(listeners)) {
    if (server.exitCode !== null || Date.now() - started > 30000) {
      throw new Error(
        "tanba serve did not start:\n" + fs.readFileSync(path.join(dir, "server.log"), "utf8"),
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const bound = JSON.parse(fs.readFileSync(listeners, "utf8"));
  const port = Number(bound["http.listen_tls"][0].split(":").pop());
  const add = spawnSync(bin, ["--config", config, "user", "add", USER, "--password-stdin"], {
    input: OLD_PW + "\n",
  });
  check(add.status === 0, "tanba user add: " + add.stderr);

  // Trust exactly the server's self-signed certificate: its SPKI pin.
  const pem = fs.readFileSync(path.join(dir, "data/tls/cert.pem"), "utf8");
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  const pin = createHash("sha256").update(spki).digest("base64");

  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP ${HOST} 127.0.0.1`,
      `--ignore-certificate-errors-spki-list=${pin}`,
    ],
  });
  const page = await browser.newPage({ viewport: { width: 960, height: 1100 } });
  const base = `https://${HOST}:${port}`;

  async function signIn(password) {
    await page.goto(`${base}/account`);
    await page.fill('input[name="email"]', USER);
    await page.fill('input[name="password"]', password);
    await Promise.all([page.waitForLoadState("load"), page.click('button[type="submit"]')]);
    return page.textContent("main");
  }

  let text = await signIn(OLD_PW);
  check(text.includes(`Signed in as ${USER}`), "signed in with the old password: " + text);
  check(text.includes(HOST), "client settings name the host");
  // The add-on links lead to the files (when the add-ons are built into clients_dir).
  const xpi = page.locator('a[href="/clients/thunderbird/tanba-eds.xpi"]');
  if ((await xpi.count()) > 0) {
    // Fetched by the browser itself (its resolver rules and certificate pin apply).
    const [status, magic] = await page.evaluate(async () => {
      const r = await fetch("/clients/thunderbird/tanba-eds.xpi");
      const b = new Uint8Array(await r.arrayBuffer());
      return [r.status, String.fromCharCode(b[0], b[1])];
    });
    check(status === 200, `xpi download answered ${status}`);
    check(magic === "PK", "the xpi is a zip");
  } else {
    check(text.includes("The add-ons are not installed"), "no add-ons, and the page says so");
  }

  await page.fill('input[name="old"]', OLD_PW);
  await page.fill('input[name="new"]', NEW_PW);
  await page.fill('input[name="new2"]', NEW_PW);
  await Promise.all([
    page.waitForLoadState("load"),
    page.click('form[action="/account/password"] button'),
  ]);
  text = await page.textContent("main");
  check(text.includes("Your password was changed."), "password changed: " + text);
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
  }

  // A form on another site posting to the page: refused (Origin, Sec-Fetch-Site, SameSite).
  const evil = await browser.newPage();
  await evil.setContent(
    `<form method="post" action="${base}/account/password">
       <input name="old" value="${NEW_PW}"><input name="new" value="evil-password-123">
       <input name="new2" value="evil-password-123"><button>go</button></form>`,
  );
  const [resp] = await Promise.all([
    evil.waitForNavigation(),
    evil.click("button"),
  ]);
  check(resp.status() === 403, `cross-site post answered ${resp.status()}`);
  await evil.close();

  await Promise.all([
    page.waitForLoadState("load"),
    page.click('form[action="/account/logout"] button'),
  ]);
  text = await signIn(OLD_PW);
  check(text.includes("Wrong address or password."), "the old password is refused: " + text);
  text = await signIn(NEW_PW);
  check(text.includes(`Signed in as ${USER}`), "signed in with the new password: " + text);
  console.log(`ok: signed in, changed the password, cross-site post refused (${base})`);
  if (screenshot) console.log(`screenshot: ${screenshot}`);
} finally {
  if (browser) await browser.close();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  fs.rmSync(dir, { recursive: true, force: true });
}
