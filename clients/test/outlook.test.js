// The Outlook add-in: the manifest's structure (the validator service is online only, and no
// XSD ships with office-addin-manifest: docs/clients.md) and the task pane's logic.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

import { paneModel, trustedServers } from "../outlook/taskpane.js";

const dir = fileURLToPath(new URL("../outlook/", import.meta.url));
const root = fileURLToPath(new URL("../", import.meta.url));
const xml = readFileSync(dir + "manifest.xml", "utf8");
const fixture = (name) => readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8");

test("manifest: MailApp, read mode, ReadItem, Mailbox 1.8 for getAllInternetHeadersAsync", () => {
  assert.match(xml, /<OfficeApp[^>]*xsi:type="MailApp"/);
  // Children of OfficeApp in the order the schema (appforoffice 1.1, MailApp) requires.
  const order = ["Id", "Version", "ProviderName", "DefaultLocale", "DisplayName", "Description", "IconUrl",
    "HighResolutionIconUrl", "SupportUrl", "AppDomains", "Hosts", "Requirements", "FormSettings", "Permissions",
    "Rule", "DisableEntityHighlighting", "VersionOverrides"];
  const top = xml.replace(/<VersionOverrides[\s\S]*<\/VersionOverrides>/, "<VersionOverrides/>");
  const seen = [...top.matchAll(/\n  <([A-Za-z]+)/g)].map((m) => m[1]);
  assert.deepEqual(seen, order);
  assert.match(xml, /<Form xsi:type="ItemRead">/);
  assert.match(xml, /<Permissions>ReadItem<\/Permissions>/);
  assert.match(xml, /<Rule xsi:type="ItemIs" ItemType="Message" FormType="Read"\/>/);
  assert.match(xml, /VersionOverridesV1_1[\s\S]*<bt:Sets DefaultMinVersion="1.8">/);
  assert.match(xml, /<ExtensionPoint xsi:type="MessageReadCommandSurface">/);
  assert.match(xml, /<SupportsPinning>true<\/SupportsPinning>/);
});

test("manifest: every URL is https://TANBA_HOST/clients/outlook/<a file here>, every resid defined", () => {
  const urls = [...xml.matchAll(/"(https:\/\/[^"]+)"/g)].map((m) => m[1]);
  assert.ok(urls.length > 5);
  for (const u of urls) {
    if (u === "https://TANBA_HOST") continue; // AppDomain
    const m = /^https:\/\/TANBA_HOST\/clients\/outlook\/([a-z0-9.-]+)$/.exec(u);
    assert.ok(m, u);
    assert.ok(existsSync(dir + m[1]), `${m[1]} exists`);
  }
  const ids = new Set([...xml.matchAll(/ id="([^"]+)"/g)].map((m) => m[1]));
  for (const [, r] of xml.matchAll(/resid="([^"]+)"/g)) assert.ok(ids.has(r), r);
  // Localized names for ru and kk.
  for (const loc of ["ru-RU", "kk-KZ"]) assert.ok(xml.includes(`Locale="${loc}"`), loc);
});

const cli = root + "node_modules/.bin/office-addin-manifest";
test("office-addin-manifest reads the manifest", { skip: !existsSync(cli) && "npm ci first" }, () => {
  const r = spawnSync(cli, ["info", dir + "manifest.xml"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Type: MailApp/);
  assert.match(r.stdout, /Permissions: ReadItem/);
});

test("task pane: trusts the server it is served from and the user's list", () => {
  const t = trustedServers("Mail.Example.Test", ["mx2.example.test"]);
  assert.deepEqual([...t].sort(), ["mail.example.test", "mx2.example.test"]);
  const ok = paneModel(fixture("pass-en.txt"), trustedServers("mail.example.test", []), "ru");
  assert.equal(ok.kind, "stamp");
  assert.equal(ok.view.title, "✔ ЭЦП действительна");
  assert.deepEqual(ok.view.signers[0].rows[0], ["ФИО", "ТЕСТОВ ТЕСТ ТЕСТОВИЧ"]);
  // Served from another host: the stamp is not believed.
  const other = paneModel(fixture("pass-en.txt"), trustedServers("addins.example.org", undefined), "en");
  assert.equal(other.kind, "none");
  assert.equal(other.text, "No EDS stamp from a trusted Tanba server on this message.");
  assert.equal(paneModel(undefined, trustedServers("mail.example.test"), "kk").kind, "none");
});
