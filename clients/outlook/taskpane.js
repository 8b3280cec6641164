// Tanba EDS for Outlook: the task pane (read mode). Reads the message's Internet headers
// (item.getAllInternetHeadersAsync, Mailbox 1.8), applies the trust rule of clients/shared and
// shows the bar. Trusted servers: the host this pane is served from (the organisation's Tanba
// server, which also serves the manifest) plus the user's list in roaming settings.
import { readStampFromText, parseHostList } from "./shared/eds.js";
import { pickLanguage, t } from "./shared/i18n.js";
import { describe } from "./shared/view.js";

const SETTING = "trustedServers";

/** The trusted servers: the pane's own host and the roaming-settings list. */
export function trustedServers(pageHost, saved) {
  return new Set([...parseHostList(pageHost), ...parseHostList(Array.isArray(saved) ? saved.join(" ") : saved)]);
}

/** What the pane shows for a header block: `{kind: "stamp", view}` or `{kind: "none", text}`. */
export function paneModel(headers, trusted, lang) {
  const stamp = readStampFromText(headers ?? "", trusted);
  if (!stamp.trusted) return { kind: "none", text: t(lang, "outlook.untrusted"), why: stamp.why };
  return { kind: "stamp", view: describe(stamp, lang) };
}

function el(doc, tag, cls, text) {
  const e = doc.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Draws `model` into `root` with textContent only. */
export function draw(doc, root, model) {
  root.replaceChildren();
  if (model.kind !== "stamp") {
    root.append(el(doc, "p", "eds-none", model.text));
    return;
  }
  const { view } = model;
  const box = el(doc, "div", `eds eds-${view.level}`);
  box.append(el(doc, "div", "eds-title", view.title), el(doc, "div", "eds-sub", view.subtitle));
  for (const s of view.signers) {
    const sb = el(doc, "div", `eds-signer eds-${s.level}`);
    sb.append(el(doc, "div", "eds-signer-title", s.title));
    if (s.rows.length) {
      const dl = el(doc, "dl");
      for (const [k, v] of s.rows) dl.append(el(doc, "dt", "", k), el(doc, "dd", "", v));
      sb.append(dl);
    }
    for (const n of s.notes) sb.append(el(doc, "div", `eds-note-${n.level}`, n.text));
    box.append(sb);
  }
  root.append(box);
}

function start() {
  const Office = globalThis.Office;
  const mailbox = Office.context.mailbox;
  const lang = pickLanguage(Office.context.displayLanguage);
  const roaming = Office.context.roamingSettings;
  const root = document.getElementById("bar");
  const servers = document.getElementById("servers");
  document.getElementById("settings-title").textContent = t(lang, "outlook.trusted");
  document.getElementById("settings-help").textContent = t(lang, "options.help");
  document.getElementById("save").textContent = t(lang, "options.save");
  servers.value = (roaming.get(SETTING) ?? []).join(" ");

  const show = () => {
    const item = mailbox.item;
    if (!item || typeof item.getAllInternetHeadersAsync !== "function") {
      draw(document, root, { kind: "none", text: t(lang, "outlook.untrusted") });
      return;
    }
    item.getAllInternetHeadersAsync((result) => {
      const headers = result.status === Office.AsyncResultStatus.Succeeded ? result.value : "";
      draw(document, root, paneModel(headers, trustedServers(location.hostname, roaming.get(SETTING)), lang));
    });
  };
  document.getElementById("save").addEventListener("click", () => {
    const list = parseHostList(servers.value);
    servers.value = list.join(" ");
    roaming.set(SETTING, list);
    roaming.saveAsync(() => {
      document.getElementById("saved").textContent = t(lang, "options.saved");
      show();
    });
  });
  // A pinned pane stays open while the user moves from message to message.
  if (Office.EventType?.ItemChanged) mailbox.addHandlerAsync(Office.EventType.ItemChanged, show);
  show();
}

if (globalThis.Office?.onReady) globalThis.Office.onReady(() => start());
