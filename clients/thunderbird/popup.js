// The popup of the message header button: the same bar as above the message, drawn in
// Thunderbird's own window (textContent only).
const [tab] = await browser.tabs.query({ active: true, currentWindow: true });
const bar = tab ? await browser.runtime.sendMessage({ type: "tanba-eds-get", tabId: tab.id }) : null;
const root = document.getElementById("bar");
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
if (bar) {
  const { view } = bar;
  const box = el("div", `eds eds-${view.level}`);
  box.append(el("div", "eds-title", view.title), el("div", "eds-sub", view.subtitle));
  for (const s of view.signers) {
    const sb = el("div", `eds-signer eds-${s.level}`);
    sb.append(el("div", "eds-signer-title", s.title));
    if (s.rows.length) {
      const dl = el("dl");
      for (const [k, v] of s.rows) dl.append(el("dt", "", k), el("dd", "", v));
      sb.append(dl);
    }
    for (const n of s.notes) sb.append(el("div", `eds-note-${n.level}`, n.text));
    box.append(sb);
  }
  root.append(box);
}
