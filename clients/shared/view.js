// What the EDS bar shows, as plain data (no DOM): both add-ons render it with textContent
// only, so no text from a certificate or a file name is ever parsed as HTML.

import { t } from "./i18n.js";

const ICON = { pass: "✔", fail: "✘", permerror: "✘", temperror: "⚠", none: "" };

/** Local date and time of `date` in `lang`, with the zone, e.g. `28.09.2022, 19:40 GMT+5`. */
export function localTime(date, lang, timeZone) {
  const locale = { en: "en-GB", ru: "ru-RU", kk: "kk-KZ" }[lang] ?? "en-GB";
  const opts = {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    timeZoneName: "short",
  };
  if (timeZone) opts.timeZone = timeZone;
  try {
    return new Intl.DateTimeFormat(locale, opts).format(date);
  } catch {
    return date.toISOString();
  }
}

function roleText(lang, role) {
  const key = "role." + role;
  const s = t(lang, key);
  return s === key ? role : s;
}

function domainOf(email) {
  const at = (email ?? "").lastIndexOf("@");
  return at >= 0 ? email.slice(at + 1) : "";
}

/**
 * The bar for a trusted stamp (`readStamp(...).trusted === true`):
 * `{level, title, subtitle, signers: [{title, level, rows: [[label, value]], notes: [{level, text}]}]}`.
 * `level` is the verdict (pass, fail, permerror, temperror, none): the add-ons colour by it.
 */
export function describe(stamp, lang, { timeZone } = {}) {
  const level = stamp.verdict;
  const title = `${ICON[level] ? ICON[level] + " " : ""}${t(lang, "verdict." + level)}`;
  const sub = [];
  if (stamp.signers > 1) sub.push(t(lang, "count", { valid: stamp.valid, signers: stamp.signers }));
  sub.push(t(lang, "checkedBy", { host: stamp.authservId }));
  const signers = stamp.signerList.map((s) => {
    const rows = [];
    const notes = [];
    const add = (key, value) => {
      if (value) rows.push([t(lang, "field." + key), value]);
    };
    if (s.result === "pass") {
      add("name", s.name);
      add("iin", s.iin);
      add("organization", s.organization);
      add("bin", s.bin);
      add("email", s.email);
      add("roles", s.roles.map((r) => roleText(lang, r)).join(", "));
      if (s.signingTime) {
        const src = s.timeSource === "tsp" || s.timeSource === "claimed" ? ` (${t(lang, "time." + s.timeSource)})` : "";
        add("time", localTime(s.signingTime, lang, timeZone) + src);
      }
      if (s.senderMatch === "yes") notes.push({ level: "pass", text: t(lang, "sender.yes") });
      if (s.senderMatch === "no") {
        notes.push({ level: "warn", text: t(lang, "sender.no", { domain: domainOf(s.email) }) });
      }
    } else if (s.reason) {
      const key = "reason." + s.reason;
      const txt = t(lang, key);
      add("reason", txt === key ? s.reason : txt);
    }
    add("file", s.file);
    return {
      title: `${t(lang, "signer", { n: s.n })}: ${ICON[s.result]} ${t(lang, "result." + s.result)}`,
      level: s.result,
      rows,
      notes,
    };
  });
  return { level, title, subtitle: sub.join(" · "), signers };
}

/** One line for logs and tests: `pass: ТЕСТОВ ТЕСТ ТЕСТОВИЧ (IIN 123456789011)`. */
export function oneLine(stamp) {
  const who = stamp.signerList
    .map((s) => (s.result === "pass" ? `${s.name ?? "?"}${s.iin ? ` (IIN ${s.iin})` : ""}` : `${s.result}${s.reason ? ` ${s.reason}` : ""}`))
    .join("; ");
  return `${stamp.verdict}${who ? ": " + who : ""}`;
}
