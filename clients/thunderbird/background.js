// Tanba EDS for Thunderbird: background (event page).
//
// For the message on display, reads its header section (messages.getRaw, at most
// MAX_HEADER_BYTES of it), applies the trust rule of clients/shared/eds.js with the servers the
// message's account trusts, and hands the bar, as plain data, to the message display script
// (display.js), which draws it. Creates the tags for the $EDSValid / $EDSInvalid keywords.

import { readStampFromText, parseHostList, normHost, MAX_HEADER_BYTES } from "./shared/eds.js";
import { pickLanguage } from "./shared/i18n.js";
import { describe, oneLine } from "./shared/view.js";

const SCRIPT_ID = "tanba-eds-bar";

// IMAP keywords are case-insensitive in Thunderbird: the key `$edsvalid` matches the server's
// `$EDSValid` (docs/signatures.md, "Tags for the keywords").
const TAGS = [
  { key: "$edsvalid", msg: "tagValid", color: "#2E7D32" },
  { key: "$edsinvalid", msg: "tagInvalid", color: "#C62828" },
];

async function ensureTags() {
  let existing = [];
  try {
    existing = (await browser.messages.tags.list()).map((t) => t.key.toLowerCase());
  } catch (e) {
    console.warn("tanba-eds: cannot list tags", e);
  }
  for (const t of TAGS) {
    if (existing.includes(t.key)) continue; // the user's own name and colour stay
    try {
      await browser.messages.tags.create(t.key, browser.i18n.getMessage(t.msg), t.color);
    } catch (e) {
      console.warn("tanba-eds: cannot create tag", t.key, e);
    }
  }
}

async function ensureScript() {
  const have = await browser.scripting.messageDisplay.getRegisteredScripts({ ids: [SCRIPT_ID] });
  if (have.length > 0) return;
  await browser.scripting.messageDisplay.registerScripts([
    { id: SCRIPT_ID, js: ["display.js"], css: ["display.css"], runAt: "document_end" },
  ]);
}

browser.runtime.onInstalled.addListener(() => {
  ensureTags();
});
ensureScript().catch((e) => console.error("tanba-eds: cannot register the display script", e));

/**
 * The servers (authserv-ids) whose stamp an account trusts:
 * - the host names set for that account on the options page (storage.local `trust`);
 * - the organisation's policy (storage.managed, `3rdparty.Extensions["eds@tanba"]` in
 *   policies.json, as `tanba clients policy thunderbird` prints it): `trustedServers`, for the
 *   accounts with an identity in one of `domains` (all accounts when `domains` is absent).
 */
export async function trustedFor(accountId) {
  const hosts = new Set();
  if (!accountId) return hosts;
  const { trust } = await browser.storage.local.get("trust");
  const mine = (trust ?? {})[accountId];
  for (const h of parseHostList(Array.isArray(mine) ? mine.join(" ") : mine)) hosts.add(h);
  let managed = {};
  try {
    managed = await browser.storage.managed.get(["trustedServers", "domains"]);
  } catch {
    managed = {}; // no policy
  }
  const servers = Array.isArray(managed.trustedServers) ? managed.trustedServers : [];
  if (servers.length > 0) {
    let applies = !Array.isArray(managed.domains);
    if (!applies) {
      const domains = new Set(managed.domains.map(normHost));
      const account = await browser.accounts.get(accountId, false);
      applies = (account?.identities ?? []).some((i) => domains.has(normHost(String(i.email).split("@").pop())));
    }
    if (applies) for (const h of parseHostList(servers.join(" "))) hosts.add(h);
  }
  return hosts;
}

async function headerText(messageId) {
  const file = await browser.messages.getRaw(messageId, { data_format: "File" });
  // Only the header section is needed; the bound keeps a huge message cheap.
  const text = await file.slice(0, MAX_HEADER_BYTES).text();
  const end = text.search(/\r?\n\r?\n/);
  return end >= 0 ? text.slice(0, end + 1) : text;
}

const BADGE = {
  pass: ["✔", "#2E7D32"],
  fail: ["✘", "#C62828"],
  permerror: ["✘", "#C62828"],
  temperror: ["!", "#EF6C00"],
};

/**
 * The toolbar button of the message header (message_display_action) carries the verdict too.
 * It lives in Thunderbird's own window, outside the message content, so a message's HTML can
 * imitate the bar in the body but not this button.
 */
async function updateAction(tabId, bar) {
  const a = browser.messageDisplayAction;
  if (!bar) {
    await a.setBadgeText({ tabId, text: "" });
    await a.setLabel({ tabId, label: null });
    await a.setTitle({ tabId, title: null });
    await a.disable(tabId);
    return;
  }
  const [text, color] = BADGE[bar.view.level] ?? ["", "#616161"];
  await a.enable(tabId);
  await a.setBadgeText({ tabId, text });
  await a.setBadgeBackgroundColor({ tabId, color });
  await a.setLabel({ tabId, label: bar.view.title });
  await a.setTitle({ tabId, title: `${bar.view.title}: ${bar.view.subtitle}` });
  console.log(`tanba-eds: action ${bar.view.level}`);
}

/** The bar for the message displayed in `tabId`, or null when there is nothing to show. */
async function barFor(tabId) {
  let messages = [];
  if (browser.messageDisplay.getDisplayedMessages) {
    const got = await browser.messageDisplay.getDisplayedMessages(tabId);
    messages = Array.isArray(got) ? got : (got?.messages ?? []);
  }
  if (messages.length !== 1) {
    const one = await browser.messageDisplay.getDisplayedMessage(tabId);
    messages = one ? [one] : [];
  }
  const message = messages[0];
  if (!message || message.external || !message.folder) return null;
  const trusted = await trustedFor(message.folder.accountId);
  const stamp = readStampFromText(await headerText(message.id), trusted);
  if (!stamp.trusted) {
    console.log(`tanba-eds: not shown (${stamp.why}) message ${message.id}`);
    return null;
  }
  if (stamp.verdict === "none") return null; // unsigned mail: no bar (SPEC §12 shows stamps)
  const lang = pickLanguage(browser.i18n.getUILanguage());
  const view = describe(stamp, lang);
  const line = oneLine(stamp);
  await browser.storage.local.set({ lastShown: { messageId: message.headerMessageId, line, at: Date.now() } });
  return { view, line };
}

browser.messageDisplay.onMessagesDisplayed.addListener((tab) => {
  barFor(tab.id)
    .then((bar) => updateAction(tab.id, bar))
    .catch((e) => console.error("tanba-eds: error", e));
});

// From the display script (its own tab) or the button's popup (the tab it names).
browser.runtime.onMessage.addListener((msg, sender) => {
  if (msg?.type !== "tanba-eds-get") return undefined;
  const tabId = sender?.tab ? sender.tab.id : msg.tabId;
  if (typeof tabId !== "number") return undefined;
  return barFor(tabId).catch((e) => {
    console.error("tanba-eds: error", e);
    return null;
  });
});
