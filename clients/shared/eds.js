// Tanba EDS stamp reader, shared by the Thunderbird add-on and the Outlook add-in.
//
// Reads the headers that Tanba's inbound filter writes (SPEC §5: Authentication-Results with
// RFC 7281 `smime` results, X-EDS-Status, X-EDS-Summary, X-EDS-Signer-N-*) and decides whether
// the stamp can be believed (the trust rule, see `readStamp`). Plain ES module, no
// dependencies, no DOM: the add-ons build their own UI from what `describe` returns.
//
// Every parser here is bounded: at most MAX_HEADER_BYTES of header text are read, at most
// MAX_FIELDS fields, MAX_SIGNERS signers, and comments nest at most MAX_COMMENT_DEPTH deep.

export const MAX_HEADER_BYTES = 256 * 1024;
export const MAX_FIELDS = 2000;
export const MAX_SIGNERS = 64;
const MAX_COMMENT_DEPTH = 16;
const MAX_VALUE_CHARS = 16 * 1024;

/** The verdicts and per-signer results of SPEC §5, worst last. */
export const RESULTS = ["pass", "temperror", "permerror", "fail"];
/** Reasons of SPEC §5. */
export const REASONS = [
  "digest-mismatch",
  "bad-signature",
  "untrusted",
  "expired",
  "not-yet-valid",
  "revoked",
  "key-usage",
  "no-certificate",
  "malformed",
  "unsupported-algorithm",
  "revocation-unknown",
];

// ---------------------------------------------------------------------------------------------
// Header section

/**
 * The header section of a message (or a bare header block, as Outlook's
 * getAllInternetHeadersAsync returns it) as an ordered list of `{name, value}`, values
 * unfolded (RFC 5322 §2.2.3: the CRLF before folding white space is removed) and not decoded.
 * Stops at the first empty line; reads at most MAX_HEADER_BYTES and MAX_FIELDS.
 */
export function parseHeaderSection(text) {
  if (typeof text !== "string") return [];
  if (text.length > MAX_HEADER_BYTES) text = text.slice(0, MAX_HEADER_BYTES);
  const lines = text.split(/\r\n|\n|\r/);
  const fields = [];
  let cur = null;
  for (const line of lines) {
    if (line === "") break; // end of the header section
    if ((line[0] === " " || line[0] === "\t") && cur) {
      if (cur.value.length < MAX_VALUE_CHARS) cur.value += line;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) {
      cur = null; // not a field (e.g. an mbox "From " line): skipped
      continue;
    }
    if (fields.length >= MAX_FIELDS) break;
    cur = { name: line.slice(0, colon).trim(), value: line.slice(colon + 1) };
    fields.push(cur);
  }
  for (const f of fields) {
    f.value = f.value.slice(0, MAX_VALUE_CHARS).trim();
  }
  return fields;
}

/**
 * Fields from a header dictionary (`{name: [values]}`, as Thunderbird's messages.getHeaders
 * or getFull return). Order between different names is lost, so the caller must pass
 * `{ordered: false}` to readStamp.
 */
export function fieldsFromDictionary(dict) {
  const fields = [];
  if (!dict || typeof dict !== "object") return fields;
  for (const [name, values] of Object.entries(dict)) {
    for (const v of Array.isArray(values) ? values : [values]) {
      if (fields.length >= MAX_FIELDS) return fields;
      fields.push({ name, value: String(v).replace(/\r?\n[ \t]/g, " ").slice(0, MAX_VALUE_CHARS).trim() });
    }
  }
  return fields;
}

// ---------------------------------------------------------------------------------------------
// RFC 2047

const ENCODED_WORD = /=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=/g;

function base64Bytes(s) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const out = [];
  let buf = 0;
  let bits = 0;
  for (const c of s) {
    if (c === "=") break;
    const v = alphabet.indexOf(c);
    if (v < 0) return null;
    buf = (buf << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((buf >> bits) & 0xff);
    }
  }
  return out;
}

function qBytes(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "_") out.push(0x20);
    else if (c === "=" && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(c.charCodeAt(0) & 0xff);
  }
  return out;
}

function decodeBytes(charset, bytes) {
  try {
    return new TextDecoder(charset.toLowerCase()).decode(new Uint8Array(bytes));
  } catch {
    return null; // unknown charset: the caller keeps the word as it is
  }
}

/**
 * Decodes RFC 2047 encoded words (B and Q; UTF-8 and any charset TextDecoder knows). White
 * space between two adjacent encoded words is dropped (RFC 2047 §6.2); adjacent words of the
 * same charset are decoded together, so a character split across two words survives. A word
 * that cannot be decoded is left as it is.
 */
export function decode2047(text) {
  if (typeof text !== "string" || !text.includes("=?")) return text ?? "";
  let out = "";
  let last = 0;
  let pending = null; // {charset, bytes, raw}
  const flush = () => {
    if (!pending) return;
    const s = decodeBytes(pending.charset, pending.bytes);
    out += s === null ? pending.raw : s;
    pending = null;
  };
  ENCODED_WORD.lastIndex = 0;
  let m;
  while ((m = ENCODED_WORD.exec(text)) !== null) {
    const between = text.slice(last, m.index);
    const [raw, charset, enc, payload] = m;
    const bytes = enc.toUpperCase() === "B" ? base64Bytes(payload) : qBytes(payload);
    if (bytes === null) {
      flush();
      out += between + raw;
      last = m.index + raw.length;
      continue;
    }
    const adjacent = pending && /^[ \t\r\n]*$/.test(between);
    if (adjacent && pending.charset.toLowerCase() === charset.toLowerCase()) {
      pending.bytes.push(...bytes);
      pending.raw += raw;
    } else {
      flush();
      if (!adjacent) out += between;
      pending = { charset, bytes: [...bytes], raw };
    }
    last = m.index + raw.length;
  }
  flush();
  return out + text.slice(last);
}

// ---------------------------------------------------------------------------------------------
// RFC 8601 Authentication-Results

/** Host names compared as DNS compares them: case-insensitive, trailing dot ignored. */
export function normHost(h) {
  return String(h ?? "")
    .trim()
    .replace(/\.$/, "")
    .toLowerCase();
}

/**
 * Tokens of a structured header value: `;`, `=`, words (atoms; dots and `/` included) and
 * quoted-strings; comments (nested, RFC 5322 §3.2.2) and white space skipped.
 */
function tokenize(value) {
  const toks = [];
  const s = value;
  let i = 0;
  while (i < s.length && toks.length < 4096) {
    const c = s[i];
    if (c === " " || c === "\t" || c === "\r" || c === "\n") {
      i++;
    } else if (c === "(") {
      let depth = 0;
      while (i < s.length) {
        const d = s[i];
        if (d === "\\") i++;
        else if (d === "(") depth++;
        else if (d === ")") {
          depth--;
          if (depth === 0) {
            i++;
            break;
          }
        }
        if (depth > MAX_COMMENT_DEPTH) return null; // hostile nesting: unreadable
        i++;
      }
    } else if (c === ";" || c === "=") {
      toks.push({ t: c });
      i++;
    } else if (c === '"') {
      let v = "";
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length) i++;
        v += s[i];
        i++;
      }
      i++;
      toks.push({ t: "q", v });
    } else {
      let v = "";
      while (i < s.length && !' \t\r\n();="'.includes(s[i])) {
        v += s[i];
        i++;
      }
      toks.push({ t: "w", v });
    }
  }
  return toks;
}

/**
 * Parses an Authentication-Results value (RFC 8601 §2.2):
 * `authserv-id [version] ( "; none" / 1*( ";" resinfo ) )`, resinfo =
 * `method[/version] "=" result [reason=value] *(ptype "." property "=" pvalue)`.
 * Returns `{authservId, results: [{method, result, reason, props}]}` or null when unreadable.
 */
export function parseAuthResults(value) {
  const toks = tokenize(String(value ?? ""));
  if (!toks || toks.length === 0) return null;
  const first = toks[0];
  if (first.t !== "w" && first.t !== "q") return null;
  const authservId = first.v;
  let i = 1;
  if (toks[i] && toks[i].t === "w" && /^[0-9]+$/.test(toks[i].v)) i++; // version
  if (i < toks.length && toks[i].t !== ";") return null;
  const results = [];
  // One resinfo per `;`. A resinfo this parser cannot read (another method's syntax it does
  // not know) is skipped, not fatal: the trust rule cross-checks the smime results anyway.
  while (i < toks.length) {
    i++; // the ";"
    const end = (() => {
      let j = i;
      while (j < toks.length && toks[j].t !== ";") j++;
      return j;
    })();
    const r = toks.slice(i, end);
    i = end;
    if (r.length === 1 && r[0].t === "w" && r[0].v.toLowerCase() === "none") continue;
    if (r.length < 3 || r[0].t !== "w" || r[1].t !== "=" || r[2].t !== "w") continue;
    const res = { method: r[0].v.split("/")[0].toLowerCase(), result: r[2].v.toLowerCase(), reason: null, props: {} };
    let ok = true;
    for (let k = 3; k < r.length; k += 3) {
      const [key, eq, v] = [r[k], r[k + 1], r[k + 2]];
      if (key.t !== "w" || !eq || eq.t !== "=" || !v || (v.t !== "w" && v.t !== "q")) {
        ok = false;
        break;
      }
      const name = key.v.toLowerCase();
      if (name === "reason") res.reason = v.v;
      else if (!(name in res.props)) res.props[name] = v.v;
    }
    if (ok && results.length < MAX_SIGNERS * 4) results.push(res);
  }
  return { authservId, results };
}

// ---------------------------------------------------------------------------------------------
// X-EDS-* values

/** `pass; signers=2; valid=1` → {verdict, signers, valid}, or null. */
export function parseStatus(value) {
  const m = /^\s*([a-z]+)\s*;\s*signers\s*=\s*([0-9]{1,4})\s*;\s*valid\s*=\s*([0-9]{1,4})\s*$/i.exec(value ?? "");
  if (!m) return null;
  const verdict = m[1].toLowerCase();
  if (verdict !== "none" && !RESULTS.includes(verdict)) return null;
  return { verdict, signers: Number(m[2]), valid: Number(m[3]) };
}

/** `fail; reason=expired` → {result, reason}, or null. */
export function parseResult(value) {
  const m = /^\s*([a-z]+)\s*(?:;\s*reason\s*=\s*"?([a-z-]+)"?\s*)?$/i.exec(value ?? "");
  if (!m || !RESULTS.includes(m[1].toLowerCase())) return null;
  return { result: m[1].toLowerCase(), reason: m[2] ? m[2].toLowerCase() : null };
}

/** `3; file="contract.pdf.p7s"` → {part, file}. */
export function parsePart(value) {
  const v = decode2047(value ?? "");
  const m = /^\s*([^;\s]*)\s*(?:;\s*file\s*=\s*"((?:[^"\\]|\\.)*)")?/.exec(v);
  const fm = m && m[2] !== undefined ? m : /file\s*=\s*"((?:[^"\\]|\\.)*)"/.exec(v);
  let part = m ? m[1] : "";
  let file = null;
  if (m && m[2] !== undefined) file = m[2];
  else if (fm && fm !== m) {
    file = fm[1];
    part = "";
  }
  if (part.startsWith("file=")) part = "";
  if (file !== null) file = file.replace(/\\(.)/g, "$1");
  return { part: part || null, file };
}

/** `2026-11-22T10:15:00Z; source=tsp` → {time: Date, source}, or null. */
export function parseSigningTime(value) {
  const m = /^\s*([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2}))\s*(?:;\s*source\s*=\s*([a-z]+))?/i.exec(
    value ?? "",
  );
  if (!m) return null;
  const time = new Date(m[1]);
  if (Number.isNaN(time.getTime())) return null;
  return { time, source: m[2] ? m[2].toLowerCase() : null };
}

// ---------------------------------------------------------------------------------------------
// The trust rule

const SIGNER_FIELD = /^x-eds-signer-([0-9]{1,4})-([a-z-]+)$/;

function worst(results) {
  let w = "pass";
  for (const r of results) if (RESULTS.indexOf(r) > RESULTS.indexOf(w)) w = r;
  return w;
}

/**
 * Reads and checks the stamp. `trusted` is an iterable of host names (authserv-ids) that the
 * user's account trusts. Returns `{trusted: false, why}` when the stamp must be ignored, or
 * `{trusted: true, authservId, verdict, signers, valid, summary, signerList}`.
 *
 * The rule (docs/clients.md, "The trust rule"):
 * 1. The stamp is the one of the **first** (topmost) `Authentication-Results` whose
 *    authserv-id is trusted and which carries `smime` results. Without one, everything is
 *    ignored, X-EDS-* included: anyone can write those into a message that never passed
 *    through Tanba, and only a trusted server's A-R says it did.
 * 2. The X-EDS-* headers are bound to that A-R: Tanba removes every incoming X-EDS-* field
 *    before stamping, so a message that passed through it has exactly the fields it wrote.
 *    Hence: exactly one X-EDS-Status; each X-EDS-* field at most once; the signer count and
 *    each X-EDS-Signer-N-Result equal the A-R's N-th `smime=` result (reason included); no
 *    signer fields beyond the count; the verdict is the one the results give (SPEC §5).
 * 3. With ordered fields (a raw header section: Outlook, Thunderbird's getRaw), the X-EDS-*
 *    fields must also stand right below that A-R, as one block, and nowhere else.
 * Anything else is "inconsistent" and ignored as a whole: a half-believed stamp would be worse
 * than none.
 */
export function readStamp(fields, trusted, { ordered = true } = {}) {
  const trust = new Set([...(trusted ?? [])].map(normHost).filter(Boolean));
  if (trust.size === 0) return { trusted: false, why: "no-trusted-server" };
  if (!Array.isArray(fields)) return { trusted: false, why: "no-headers" };

  let arIndex = -1;
  let ar = null;
  for (let i = 0; i < fields.length; i++) {
    if (fields[i].name.toLowerCase() !== "authentication-results") continue;
    const parsed = parseAuthResults(fields[i].value);
    if (!parsed || !trust.has(normHost(parsed.authservId))) continue;
    const all = parsed.results.filter((r) => r.method === "smime");
    if (all.length === 0) continue;
    arIndex = i;
    // `smime=none` (RFC 8601 §2.7.1 result "none"): no signature was found.
    ar = { ...parsed, smime: all.filter((r) => r.result !== "none"), none: all.length === 1 && all[0].result === "none" };
    break;
  }
  if (!ar) return { trusted: false, why: "no-trusted-authentication-results" };

  // Collect the X-EDS-* fields, each name once.
  const eds = new Map();
  const edsIdx = [];
  for (let i = 0; i < fields.length; i++) {
    const name = fields[i].name.toLowerCase();
    if (!name.startsWith("x-eds-")) continue;
    if (eds.has(name)) return { trusted: false, why: "inconsistent: duplicate " + name };
    eds.set(name, fields[i].value);
    edsIdx.push(i);
  }
  if (ordered) {
    for (let k = 0; k < edsIdx.length; k++) {
      if (edsIdx[k] !== arIndex + 1 + k) {
        return { trusted: false, why: "inconsistent: X-EDS fields not directly below the trusted Authentication-Results" };
      }
    }
  }
  const status = parseStatus(eds.get("x-eds-status"));
  if (!status) return { trusted: false, why: "inconsistent: no readable X-EDS-Status" };

  const n = status.signers;
  if (n > MAX_SIGNERS) return { trusted: false, why: "inconsistent: too many signers" };
  const smime = ar.smime;
  if (n === 0) {
    // `smime=none` (no signature), or the filter-failure stamp: one smime result with the
    // verdict and a reason, no signer fields (src/filter/stamp.rs, stamp_error).
    const ok =
      (status.verdict === "none" && ar.none) ||
      (status.verdict !== "none" &&
        status.verdict !== "pass" &&
        smime.length === 1 &&
        smime[0].result === status.verdict);
    if (!ok || status.valid !== 0) return { trusted: false, why: "inconsistent: signer count" };
  } else if (smime.length !== n || ar.none || status.verdict === "none") {
    return { trusted: false, why: "inconsistent: signer count" };
  }

  const signerList = [];
  for (let k = 1; k <= n; k++) {
    const get = (f) => eds.get(`x-eds-signer-${k}-${f}`);
    const res = parseResult(get("result"));
    if (!res) return { trusted: false, why: `inconsistent: signer ${k} has no result` };
    const arRes = smime[k - 1];
    if (arRes.result !== res.result || (arRes.reason ?? null) !== (res.reason ?? null)) {
      return { trusted: false, why: `inconsistent: signer ${k} differs from Authentication-Results` };
    }
    const s = { n: k, result: res.result, reason: res.reason };
    const part = parsePart(get("part"));
    s.part = part.part;
    s.file = part.file;
    if (res.result === "pass") {
      const text = (f) => {
        const v = get(f);
        return v === undefined ? null : decode2047(v).trim() || null;
      };
      s.name = text("name");
      s.email = text("email");
      s.iin = text("iin");
      s.organization = text("organization");
      s.bin = text("bin");
      const st = parseSigningTime(get("signing-time"));
      s.signingTime = st ? st.time : null;
      s.timeSource = st ? st.source : null;
      const roles = text("roles");
      s.roles = roles ? roles.split(",").map((r) => r.trim()).filter(Boolean) : [];
      s.certificate = text("certificate");
      const sm = (text("sender-match") ?? "").toLowerCase();
      s.senderMatch = ["yes", "no", "unknown"].includes(sm) ? sm : null;
    } else {
      // SPEC §5: identity fields only on pass. Their presence on a failed signer means the
      // fields did not come from Tanba.
      for (const f of ["name", "email", "iin", "organization", "bin", "signing-time", "roles", "certificate"]) {
        if (get(f) !== undefined) return { trusted: false, why: `inconsistent: identity on failed signer ${k}` };
      }
    }
    signerList.push(s);
  }
  for (const name of eds.keys()) {
    const m = SIGNER_FIELD.exec(name);
    if (m && (Number(m[1]) < 1 || Number(m[1]) > n)) {
      return { trusted: false, why: "inconsistent: signer fields beyond the count" };
    }
  }
  const valid = signerList.filter((s) => s.result === "pass").length;
  if (n > 0) {
    const verdict = worst(signerList.map((s) => s.result));
    if (verdict !== status.verdict || valid !== status.valid) {
      return { trusted: false, why: "inconsistent: verdict" };
    }
  }
  const summary = eds.has("x-eds-summary") ? decode2047(eds.get("x-eds-summary")).trim() : null;
  return {
    trusted: true,
    authservId: normHost(ar.authservId),
    verdict: status.verdict,
    signers: n,
    valid,
    summary,
    signerList,
  };
}

/** Shortcut: a raw header section (text) → readStamp. */
export function readStampFromText(text, trusted) {
  return readStamp(parseHeaderSection(text), trusted, { ordered: true });
}

/** Splits a user-entered list of host names (spaces, commas, new lines) into normalized hosts. */
export function parseHostList(text) {
  return String(text ?? "")
    .split(/[\s,;]+/)
    .map(normHost)
    .filter((h) => /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(h))
    .slice(0, 50);
}
