// Options: the Tanba servers (authserv-ids) each account trusts, kept in storage.local as
// `trust: {accountId: ["mail.example.kz", ...]}`. Servers from the organisation's policy
// (storage.managed) are shown but not editable here.
import { parseHostList } from "./shared/eds.js";
import { pickLanguage, t } from "./shared/i18n.js";

const lang = pickLanguage(browser.i18n.getUILanguage());
document.getElementById("title").textContent = t(lang, "options.title");
document.getElementById("help").textContent = t(lang, "options.help");
const saveButton = document.getElementById("save");
saveButton.textContent = t(lang, "options.save");

const form = document.getElementById("form");
const { trust = {} } = await browser.storage.local.get("trust");
let managed = {};
try {
  managed = await browser.storage.managed.get(["trustedServers", "domains"]);
} catch {
  managed = {};
}
const inputs = new Map();
for (const account of await browser.accounts.list(false)) {
  if (account.type !== "imap" && account.type !== "pop3") continue;
  const label = document.createElement("label");
  label.textContent = account.name;
  const input = document.createElement("input");
  input.type = "text";
  input.value = (trust[account.id] ?? []).join(" ");
  input.placeholder = "mail.example.kz";
  label.append(input);
  form.append(label);
  inputs.set(account.id, input);
}
if (Array.isArray(managed.trustedServers) && managed.trustedServers.length) {
  const p = document.createElement("p");
  p.className = "help";
  p.textContent = `Policy: ${managed.trustedServers.join(", ")}${Array.isArray(managed.domains) ? ` (${managed.domains.join(", ")})` : ""}`;
  form.append(p);
}
saveButton.addEventListener("click", async () => {
  const next = {};
  for (const [id, input] of inputs) {
    const hosts = parseHostList(input.value);
    if (hosts.length) next[id] = hosts;
    input.value = hosts.join(" ");
  }
  await browser.storage.local.set({ trust: next });
  document.getElementById("status").textContent = t(lang, "options.saved");
});
