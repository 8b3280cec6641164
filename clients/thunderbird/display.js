// Tanba EDS for Thunderbird: message display script. Asks the background for the bar of the
// message shown in this tab and draws it above the message. Text only (textContent): nothing
// from the message is parsed as HTML.
(async () => {
  const BAR_ID = "tanba-eds-bar";
  let bar;
  try {
    bar = await browser.runtime.sendMessage({ type: "tanba-eds-get" });
  } catch (e) {
    console.error("tanba-eds: no answer from the background", e);
    return;
  }
  if (!bar || !document.body || document.getElementById(BAR_ID)) return;
  const { view, line } = bar;
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const root = el("div", `tanba-eds tanba-eds-${view.level}`);
  root.id = BAR_ID;
  root.setAttribute("role", "status");
  const head = el("div", "tanba-eds-head");
  head.append(el("span", "tanba-eds-title", view.title), el("span", "tanba-eds-sub", view.subtitle));
  root.append(head);
  for (const s of view.signers) {
    const box = el("div", `tanba-eds-signer tanba-eds-${s.level}`);
    box.append(el("div", "tanba-eds-signer-title", s.title));
    if (s.rows.length) {
      const dl = el("dl", "tanba-eds-rows");
      for (const [k, v] of s.rows) dl.append(el("dt", "", k), el("dd", "", v));
      box.append(dl);
    }
    for (const n of s.notes) box.append(el("div", `tanba-eds-note tanba-eds-note-${n.level}`, n.text));
    root.append(box);
  }
  document.body.insertBefore(root, document.body.firstChild);
  console.log(`tanba-eds: shown ${line}`);
})();
