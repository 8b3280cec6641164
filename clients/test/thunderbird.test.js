// The Thunderbird add-on package: manifest facts, the committed .xpi equals a fresh build, and
// `web-ext lint` has no error and no warning except those about Thunderbird's own APIs and
// permissions (web-ext lints against Firefox's API schema, which has no `messages`,
// `accounts`, `messageDisplay`; the add-on is for Thunderbird only).

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dir = fileURLToPath(new URL("../thunderbird/", import.meta.url));
const root = fileURLToPath(new URL("../", import.meta.url));
const manifest = JSON.parse(readFileSync(dir + "manifest.json", "utf8"));

test("manifest: id eds@tanba, Thunderbird ESR 140 or later, localized name", () => {
  assert.equal(manifest.browser_specific_settings.gecko.id, "eds@tanba");
  assert.equal(manifest.browser_specific_settings.gecko.strict_min_version, "140.0");
  assert.equal(manifest.manifest_version, 3);
  for (const lang of ["en", "ru", "kk"]) {
    const msgs = JSON.parse(readFileSync(`${dir}_locales/${lang}/messages.json`, "utf8"));
    for (const k of ["extName", "extDescription", "tagValid", "tagInvalid"]) assert.ok(msgs[k]?.message, `${lang} ${k}`);
  }
});

const haveZip = spawnSync("zip", ["-v"]).status === 0;

test("dist/tanba-eds.xpi is what build.sh makes from the sources", { skip: !haveZip && "zip not installed" }, () => {
  const out = execFileSync("bash", [dir + "build.sh", "--check"], { encoding: "utf8" });
  assert.match(out, /up to date/);
});

const webExt = root + "node_modules/.bin/web-ext";
const THUNDERBIRD_ONLY = /^(messages|messages\.tags|messageDisplay|messageDisplayAction|scripting\.messageDisplay|accounts)(\.|$)/;

test("web-ext lint: no errors, no warnings but Thunderbird-only APIs", { skip: !existsSync(webExt) && "npm ci first" }, () => {
  spawnSync("bash", [dir + "build.sh", "--check"]); // fills build/ (dist/ stays as it is)
  const r = spawnSync(webExt, ["lint", "--source-dir", dir + "build", "--output", "json", "--self-hosted"], {
    encoding: "utf8",
  });
  const report = JSON.parse(r.stdout);
  assert.deepEqual(report.errors, []);
  const unexpected = report.warnings.filter((w) => {
    if (w.code === "UNSUPPORTED_API") return !THUNDERBIRD_ONLY.test(w.message.replace(/ is not supported$/, ""));
    if (w.code === "MANIFEST_PERMISSIONS") return !/"(accountsRead|messagesRead|messagesTags|messagesTagsList)"/.test(w.message);
    // data_collection_permissions: Firefox for Android is no target.
    if (w.code === "KEY_FIREFOX_ANDROID_UNSUPPORTED_BY_MIN_VERSION") return false;
    return true;
  });
  assert.deepEqual(unexpected, []);
});
