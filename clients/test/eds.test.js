// Unit tests of the shared stamp reader (clients/shared): `node --test clients/test/`.
// Fixtures *.txt are header sections written by a real `tanba stamp` (fixtures/make.sh); the
// synthetic stamps below follow the same format (SPEC §5) for the cases the samples lack.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  decode2047,
  parseAuthResults,
  parseHeaderSection,
  fieldsFromDictionary,
  readStamp,
  readStampFromText,
  parseHostList,
  RESULTS,
  REASONS,
} from "../shared/eds.js";
import { TEXTS, LANGUAGES, pickLanguage, t } from "../shared/i18n.js";
import { describe as describeStamp, localTime, oneLine } from "../shared/view.js";

const HOST = "mail.example.test";
const fixture = (name) => readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8");
const b = (s) => `=?UTF-8?B?${Buffer.from(s, "utf8").toString("base64")}?=`;

/** A stamp as Tanba writes it: A-R, X-EDS-Status, X-EDS-Summary, signer fields; then `rest`. */
function stamp({ host = HOST, signers = [], summary = "x", rest = "From: a@b.kz\r\nSubject: s\r\n", methods = "" } = {}) {
  const verdict =
    signers.length === 0
      ? "none"
      : signers.reduce((w, s) => (RESULTS.indexOf(s.result) > RESULTS.indexOf(w) ? s.result : w), "pass");
  const valid = signers.filter((s) => s.result === "pass").length;
  let ar = `Authentication-Results: ${host};${methods}`;
  if (signers.length === 0) ar += " smime=none";
  ar += signers
    .map((s) => ` smime=${s.result}${s.reason ? ` reason="${s.reason}"` : ""} body.smime-part=TEXT\r\n body.smime-serial=0a`)
    .join(";");
  let h = `${ar}\r\nX-EDS-Status: ${verdict}; signers=${signers.length}; valid=${valid}\r\nX-EDS-Summary: ${summary}\r\n`;
  signers.forEach((s, i) => {
    const n = i + 1;
    h += `X-EDS-Signer-${n}-Result: ${s.result}${s.reason ? `; reason=${s.reason}` : ""}\r\n`;
    h += `X-EDS-Signer-${n}-Part: ${s.part ?? "TEXT"}\r\n`;
    for (const [k, v] of Object.entries(s.fields ?? {})) h += `X-EDS-Signer-${n}-${k}: ${v}\r\n`;
  });
  return h + rest + "\r\nbody\r\n";
}

const legal = {
  result: "pass",
  part: '3; file="Договор №5.pdf.p7s"',
  fields: {
    Name: b("ТЕСТОВ ТЕСТ ТЕСТОВИЧ"),
    Email: "test@partner.kz",
    IIN: "123456789011",
    Organization: `${b('АО "ПАРТНЕР"')}`,
    BIN: "123456789021",
    "Signing-Time": "2026-11-22T10:15:00Z; source=tsp",
    Roles: "legal-entity, ceo",
    Certificate: 'serial=0a; issuer="CN=NCA"; algorithm=rsa-sha256',
  },
};

// --- RFC 2047 -------------------------------------------------------------------------------

test("RFC 2047: B and Q words, UTF-8, white space between adjacent words dropped", () => {
  assert.equal(decode2047("=?UTF-8?B?0KLQldCh0KLQntCS?="), "ТЕСТОВ");
  assert.equal(decode2047("=?utf-8?b?0KLQldCh0KLQntCS?= =?UTF-8?B?INCi0JXQodCi?="), "ТЕСТОВ ТЕСТ");
  assert.equal(decode2047("=?UTF-8?Q?=D0=90=D0=9E_=22=D0=A2=D0=95=D0=A1=D0=A2=22?="), 'АО "ТЕСТ"');
  assert.equal(decode2047("=?UTF-8?q?a_b?=\r\n =?UTF-8?Q?_c?="), "a b c");
  // Plain words around encoded ones keep their spaces.
  assert.equal(decode2047("IIN =?UTF-8?B?0JjQmNCd?= 123"), "IIN ИИН 123");
  // A character split across two encoded words (other encoders do this).
  const bytes = Buffer.from("Ә", "utf8");
  const split = `=?UTF-8?B?${bytes.subarray(0, 1).toString("base64")}?= =?UTF-8?B?${bytes.subarray(1).toString("base64")}?=`;
  assert.equal(decode2047(split), "Ә");
  // RFC 2231 language suffix, other charsets TextDecoder knows.
  assert.equal(decode2047("=?UTF-8*kk?B?0JbQodCd?="), "ЖСН");
  assert.equal(decode2047("=?windows-1251?B?yOjN?="), "ИиН");
  // Undecodable words stay as they are; text without words is returned as is.
  assert.equal(decode2047("=?x-unknown?B?QQ==?="), "=?x-unknown?B?QQ==?=");
  assert.equal(decode2047("=?UTF-8?B?@@@?="), "=?UTF-8?B?@@@?=");
  assert.equal(decode2047("plain text"), "plain text");
});

test("header section: folding, order, end at the empty line", () => {
  const f = parseHeaderSection("A: 1\r\n 2\r\nB:\t3\nX-Eds-Status: pass\r\n\r\nC: body\r\n");
  assert.deepEqual(
    f.map((x) => [x.name, x.value]),
    [
      ["A", "1 2"],
      ["B", "3"],
      ["X-Eds-Status", "pass"],
    ],
  );
});

test("Authentication-Results (RFC 8601): authserv-id first, comments, quoted id, several smime results", () => {
  const ar = parseAuthResults(
    ' (c (nested)) "Mail.Example.Test." 1; spf=pass smtp.mailfrom=a@b.kz;\r\n smime=pass body.smime-part=TEXT (x); smime=fail reason="expired" body.smime-part=2',
  );
  assert.equal(ar.authservId, "Mail.Example.Test.");
  assert.deepEqual(
    ar.results.map((r) => [r.method, r.result, r.reason]),
    [
      ["spf", "pass", null],
      ["smime", "pass", null],
      ["smime", "fail", "expired"],
    ],
  );
  assert.equal(ar.results[1].props["body.smime-part"], "TEXT");
  assert.deepEqual(parseAuthResults("example.org; none").results, []);
  assert.equal(parseAuthResults(""), null);
  assert.equal(parseAuthResults("(only a comment)"), null);
  // A resinfo of a syntax this parser does not know is skipped, not fatal; `/` in values and
  // method versions are read.
  const lenient = parseAuthResults(
    "mx.test; dkim=pass header.b=Ab/c+d; =broken; x-odd pass; smime/1=fail reason=expired body.smime-part=1.2",
  );
  assert.deepEqual(
    lenient.results.map((r) => [r.method, r.result, r.reason]),
    [
      ["dkim", "pass", null],
      ["smime", "fail", "expired"],
    ],
  );
  assert.equal(lenient.results[0].props["header.b"], "Ab/c+d");
});

// --- real stamps ----------------------------------------------------------------------------

test("real stamp, one signer, pass: name, IIN, time; ru summary decoded", () => {
  const s = readStampFromText(fixture("pass-en.txt"), [HOST]);
  assert.equal(s.trusted, true, s.why);
  assert.equal(s.verdict, "pass");
  assert.equal(s.signers, 1);
  const [one] = s.signerList;
  assert.equal(one.name, "ТЕСТОВ ТЕСТ ТЕСТОВИЧ");
  assert.equal(one.iin, "123456789011");
  assert.equal(one.organization, null);
  assert.deepEqual(one.roles, ["individual"]);
  assert.equal(one.signingTime.toISOString(), "2022-09-28T14:40:30.000Z");
  assert.equal(one.timeSource, "claimed");
  assert.equal(one.part, "TEXT");
  assert.equal(one.file, null);
  assert.match(one.certificate, /issuer="CN=ҰКО 3\.0 \(RSA TEST\),C=KZ"/);
  assert.equal(s.summary, "✔ Valid EDS: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, IIN 123456789011, 2022-09-28 14:40 UTC");
  const ru = readStampFromText(fixture("pass-ru.txt"), [HOST]);
  assert.equal(ru.summary, "✔ ЭЦП действительна: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, ИИН 123456789011, 2022-09-28 14:40 UTC");
  assert.equal(oneLine(s), "pass: ТЕСТОВ ТЕСТ ТЕСТОВИЧ (IIN 123456789011)");
});

test("real stamp, several signers: one valid GOST signer, one expired; file names", () => {
  const s = readStampFromText(fixture("two-signers.txt"), [HOST]);
  assert.equal(s.trusted, true, s.why);
  assert.equal(s.verdict, "fail");
  assert.equal(s.signers, 2);
  assert.equal(s.valid, 1);
  const [a, c] = s.signerList;
  assert.equal(a.result, "pass");
  assert.equal(a.name, "ТЕСТТОВ ТЕСТТ ТЕСТТОВИЧ");
  assert.equal(a.iin, "123456789012");
  assert.equal(a.part, "2");
  assert.equal(a.file, "contract.txt.cms");
  assert.equal(c.result, "fail");
  assert.equal(c.reason, "expired");
  assert.equal(c.name, undefined);
  assert.equal(c.file, "contract.txt.cms");
  const v = describeStamp(s, "ru", { timeZone: "UTC" });
  assert.equal(v.title, "✘ ЭЦП недействительна");
  assert.match(v.subtitle, /действительных подписей: 1 из 2/);
  assert.equal(v.signers[0].title, "Подписант 1: ✔ действительна");
  assert.deepEqual(v.signers[0].rows.find((r) => r[0] === "ФИО"), ["ФИО", "ТЕСТТОВ ТЕСТТ ТЕСТТОВИЧ"]);
  assert.deepEqual(v.signers[1].rows, [
    ["Причина", "срок действия сертификата истёк"],
    ["Файл", "contract.txt.cms"],
  ]);
});

test("real stamp, tampered content: digest-mismatch for both signers", () => {
  const s = readStampFromText(fixture("tampered.txt"), [HOST]);
  assert.equal(s.trusted, true, s.why);
  assert.equal(s.verdict, "fail");
  assert.deepEqual(
    s.signerList.map((x) => [x.result, x.reason, x.file]),
    [
      ["fail", "digest-mismatch", "test123.txt.p7s"],
      ["fail", "digest-mismatch", "test123.txt.p7s"],
    ],
  );
  const v = describeStamp(s, "en");
  assert.equal(v.title, "✘ Invalid EDS");
  assert.deepEqual(v.signers[0].rows[0], ["Reason", "the content was changed after signing"]);
});

// --- fields ---------------------------------------------------------------------------------

test("legal entity: organisation, BIN, roles, TSP time in local time, file with non-ASCII name", () => {
  const s = readStampFromText(stamp({ signers: [legal] }), [HOST]);
  assert.equal(s.trusted, true, s.why);
  const [x] = s.signerList;
  assert.equal(x.organization, 'АО "ПАРТНЕР"');
  assert.equal(x.bin, "123456789021");
  assert.deepEqual(x.roles, ["legal-entity", "ceo"]);
  assert.equal(x.file, "Договор №5.pdf.p7s");
  assert.equal(x.part, "3");
  const v = describeStamp(s, "kk", { timeZone: "Asia/Almaty" });
  const rows = Object.fromEntries(v.signers[0].rows);
  assert.equal(rows["Аты-жөні"], "ТЕСТОВ ТЕСТ ТЕСТОВИЧ");
  assert.equal(rows["ЖСН"], "123456789011");
  assert.equal(rows["Ұйым"], 'АО "ПАРТНЕР"');
  assert.equal(rows["БСН"], "123456789021");
  assert.equal(rows["Рөлдер"], "заңды тұлға, бірінші басшы");
  assert.equal(rows["Файл"], "Договор №5.pdf.p7s");
  // 10:15 UTC is 15:15 in Almaty (UTC+5 since 2024).
  assert.match(rows["Қол қойылды"], /22\.11\.2026.*15:15.*сенімді уақыт белгісі/);
  assert.match(localTime(new Date("2026-11-22T10:15:00Z"), "en", "UTC"), /22\/11\/2026, 10:15 UTC/);
});

test("missing fields are simply not shown", () => {
  const bare = { result: "pass", fields: { Name: b("ТЕСТОВ ТЕСТ") } };
  const s = readStampFromText(stamp({ signers: [bare] }), [HOST]);
  assert.equal(s.trusted, true, s.why);
  const [x] = s.signerList;
  assert.equal(x.iin, null);
  assert.equal(x.signingTime, null);
  assert.deepEqual(x.roles, []);
  const v = describeStamp(s, "en");
  assert.deepEqual(v.signers[0].rows, [["Name", "ТЕСТОВ ТЕСТ"]]);
  assert.deepEqual(v.signers[0].notes, []);
  // A pass signer without even a name: still a valid signature, nothing invented.
  const nameless = readStampFromText(stamp({ signers: [{ result: "pass" }] }), [HOST]);
  assert.equal(nameless.trusted, true);
  assert.deepEqual(describeStamp(nameless, "en").signers[0].rows, []);
});

test("every verdict and every reason, in every language", () => {
  const byResult = {
    fail: ["digest-mismatch", "bad-signature", "untrusted", "expired", "not-yet-valid", "revoked", "key-usage", "no-certificate"],
    permerror: ["malformed", "unsupported-algorithm"],
    temperror: ["revocation-unknown"],
  };
  assert.deepEqual(Object.values(byResult).flat().sort(), [...REASONS].sort());
  for (const lang of LANGUAGES) {
    for (const [result, reasons] of Object.entries(byResult)) {
      for (const reason of reasons) {
        // Alone, and beside a valid signer (the message verdict is the failure's).
        for (const signers of [[{ result, reason }], [legal, { result, reason }]]) {
          const s = readStampFromText(stamp({ signers }), [HOST]);
          assert.equal(s.trusted, true, `${result}/${reason}: ${s.why}`);
          assert.equal(s.verdict, result);
          const v = describeStamp(s, lang);
          assert.equal(v.level, result);
          assert.ok(v.title.endsWith(TEXTS[lang][`verdict.${result}`]), v.title);
          const last = v.signers.at(-1);
          assert.deepEqual(last.rows[0], [TEXTS[lang]["field.reason"], TEXTS[lang][`reason.${reason}`]]);
          assert.ok(last.title.includes(TEXTS[lang][`result.${result}`]));
        }
      }
    }
    const ok = describeStamp(readStampFromText(stamp({ signers: [legal] }), [HOST]), lang);
    assert.equal(ok.title, `✔ ${TEXTS[lang]["verdict.pass"]}`);
    const none = readStampFromText(stamp({ signers: [] }), [HOST]);
    assert.equal(none.trusted, true, none.why);
    assert.equal(describeStamp(none, lang).title, TEXTS[lang]["verdict.none"]);
  }
  // The filter-failure stamp (src/filter/stamp.rs, stamp_error): a verdict, no signer.
  const err = readStampFromText(
    `Authentication-Results: ${HOST}; smime=permerror reason="MIME nesting is too\r\n deep; the message was not parsed"\r\nX-EDS-Status: permerror; signers=0; valid=0\r\nSubject: x\r\n\r\n`,
    [HOST],
  );
  assert.equal(err.trusted, true, err.why);
  assert.equal(err.verdict, "permerror");
  assert.deepEqual(err.signerList, []);
});

test("MX stamp with sender checks (SPEC §10) before the smime results", () => {
  const methods =
    " spf=pass smtp.mailfrom=test@partner.kz; dkim=pass header.d=partner.kz header.s=sel;\r\n dmarc=pass policy.dmarc=reject header.from=partner.kz;";
  const yes = structuredClone(legal);
  yes.fields["Sender-Match"] = "yes";
  const s = readStampFromText(stamp({ signers: [yes, { result: "fail", reason: "revoked" }], methods }), [HOST]);
  assert.equal(s.trusted, true, s.why);
  assert.equal(s.verdict, "fail");
  assert.equal(s.signerList[0].senderMatch, "yes");
  assert.equal(s.signerList[1].reason, "revoked");
});

test("sender match: yes is a confirmation, no is a warning naming the signer's domain", () => {
  const yes = structuredClone(legal);
  yes.fields["Sender-Match"] = "yes";
  const no = structuredClone(legal);
  no.fields["Sender-Match"] = "no";
  const unknown = structuredClone(legal);
  unknown.fields["Sender-Match"] = "unknown";
  const notes = (signer, lang) =>
    describeStamp(readStampFromText(stamp({ signers: [signer] }), [HOST]), lang).signers[0].notes;
  assert.deepEqual(notes(yes, "en"), [{ level: "pass", text: "The signer's e-mail domain is the sender's domain." }]);
  assert.deepEqual(notes(no, "en"), [
    { level: "warn", text: "The signer's e-mail domain (partner.kz) is not the sender's domain: check who sent this." },
  ]);
  assert.match(notes(no, "ru")[0].text, /partner\.kz/);
  assert.match(notes(no, "kk")[0].text, /partner\.kz/);
  assert.deepEqual(notes(unknown, "en"), []);
});

// --- the trust rule -------------------------------------------------------------------------

test("a stamp from an untrusted authserv-id is ignored entirely", () => {
  const forged = stamp({ host: "evil.example", signers: [legal] });
  assert.equal(readStampFromText(forged, [HOST]).trusted, false);
  assert.equal(readStampFromText(forged, ["evil.example"]).trusted, true);
  // No trusted server configured: nothing is believed.
  assert.equal(readStampFromText(fixture("pass-en.txt"), []).trusted, false);
  // X-EDS-* without any Authentication-Results.
  const bare = fixture("pass-en.txt").replace(/^Authentication-Results:[^\n]*\n( [^\n]*\n)*/, "");
  assert.ok(bare.startsWith("X-EDS-Status"));
  assert.equal(readStampFromText(bare, [HOST]).trusted, false);
  // A trusted A-R without smime (e.g. only spf from a later version or a forger's) is no stamp.
  const nosmime = `Authentication-Results: ${HOST}; spf=pass smtp.mailfrom=a@b.kz\r\nX-EDS-Status: pass; signers=0; valid=0\r\n\r\n`;
  assert.equal(readStampFromText(nosmime, [HOST]).trusted, false);
  // Look-alike hosts are other hosts; case and a trailing dot are not.
  assert.equal(readStampFromText(stamp({ host: "mail.example.test.evil" }), [HOST]).trusted, false);
  assert.equal(readStampFromText(stamp({ host: "evil-mail.example.test" }), [HOST]).trusted, false);
  assert.equal(readStampFromText(stamp({ host: "MAIL.Example.TEST." }), [HOST]).trusted, true);
  assert.equal(readStampFromText(stamp(), ["Mail.Example.Test."]).trusted, true);
});

test("forged X-EDS headers not bound to the trusted Authentication-Results are refused", () => {
  const good = stamp({ signers: [legal] });
  // Another server's forged stamp below a message that our server did not stamp with smime.
  const forgedBelow =
    `Authentication-Results: ${HOST}; spf=pass smtp.mailfrom=x@y.kz\r\n` +
    stamp({ host: "evil.example", signers: [legal] });
  assert.equal(readStampFromText(forgedBelow, [HOST]).trusted, false);
  // Extra X-EDS field elsewhere in the header (Tanba would have removed it).
  const extra = good.replace("From: a@b.kz\r\n", "From: a@b.kz\r\nX-EDS-Signer-1-Name: Someone Else\r\n");
  assert.equal(readStampFromText(extra, [HOST]).trusted, false);
  const extraFar = good.replace("From: a@b.kz\r\n", "From: a@b.kz\r\nX-EDS-Note: hi\r\n");
  assert.equal(readStampFromText(extraFar, [HOST]).trusted, false);
  // A second X-EDS-Status.
  const two = good.replace("X-EDS-Summary:", "X-EDS-Status: pass; signers=1; valid=1\r\nX-EDS-Summary:");
  assert.equal(readStampFromText(two, [HOST]).trusted, false);
  // The A-R says fail, the X-EDS says pass.
  const flipped = good.replace("smime=pass", 'smime=fail reason="expired"');
  assert.equal(readStampFromText(flipped, [HOST]).trusted, false);
  // Status count or verdict not what the results give.
  assert.equal(readStampFromText(good.replace("signers=1", "signers=2"), [HOST]).trusted, false);
  assert.equal(readStampFromText(good.replace("valid=1", "valid=0"), [HOST]).trusted, false);
  const failStamp = stamp({ signers: [{ result: "fail", reason: "expired" }] });
  assert.equal(readStampFromText(failStamp.replace("X-EDS-Status: fail", "X-EDS-Status: pass"), [HOST]).trusted, false);
  // Identity on a failed signer, or a signer beyond the count.
  const idOnFail = failStamp.replace("X-EDS-Signer-1-Part: TEXT\r\n", `X-EDS-Signer-1-Part: TEXT\r\nX-EDS-Signer-1-Name: ${b("ТЕСТ")}\r\n`);
  assert.equal(readStampFromText(idOnFail, [HOST]).trusted, false);
  const beyond = good.replace("From: a@b.kz\r\n", "").replace("Subject: s\r\n", "");
  assert.equal(readStampFromText(beyond.replace("\r\n\r\nbody", "\r\nX-EDS-Signer-2-Name: X\r\n\r\nbody"), [HOST]).trusted, false);
  // The genuine stamp on top, an older forged trusted-looking A-R below (left by nobody in
  // practice, Tanba strips its own): the topmost trusted A-R wins and its block is consistent.
  const older = good.replace("From: a@b.kz\r\n", `From: a@b.kz\r\nAuthentication-Results: ${HOST}; smime=fail reason="expired"\r\n`);
  assert.equal(readStampFromText(older, [HOST]).verdict, "pass");
});

test("header dictionaries (Thunderbird getHeaders): same rule without field order", () => {
  const text = stamp({ signers: [legal] });
  const dict = {};
  for (const f of parseHeaderSection(text)) (dict[f.name.toLowerCase()] ??= []).push(f.value);
  const ok = readStamp(fieldsFromDictionary(dict), [HOST], { ordered: false });
  assert.equal(ok.trusted, true, ok.why);
  assert.equal(ok.signerList[0].organization, 'АО "ПАРТНЕР"');
  dict["authentication-results"] = ["evil.example; smime=pass body.smime-part=TEXT"];
  assert.equal(readStamp(fieldsFromDictionary(dict), [HOST], { ordered: false }).trusted, false);
});

// --- bounds ---------------------------------------------------------------------------------

test("hostile input is bounded", () => {
  const deep = `Authentication-Results: ${"(".repeat(100000)} ${HOST}; smime=pass\r\n\r\n`;
  assert.equal(readStampFromText(deep, [HOST]).trusted, false);
  const huge = "X-Junk: " + "a".repeat(2_000_000) + "\r\n" + stamp({ signers: [legal] });
  assert.equal(readStampFromText(huge, [HOST]).trusted, false); // the stamp lies past the bound
  const many = "X: y\r\n".repeat(100000) + "\r\n";
  assert.ok(parseHeaderSection(many).length <= 2000);
  const lots = stamp({ signers: [legal] }).replace("signers=1", "signers=100000");
  assert.equal(readStampFromText(lots, [HOST]).trusted, false);
  assert.equal(decode2047("=?UTF-8?B?" + "QUFB".repeat(50000) + "?=").length, 150000);
});

// --- i18n and options -----------------------------------------------------------------------

test("every text exists in en, ru and kk; UI locales map to them", () => {
  for (const lang of LANGUAGES) {
    assert.deepEqual(Object.keys(TEXTS[lang]).sort(), Object.keys(TEXTS.en).sort(), lang);
    for (const [k, v] of Object.entries(TEXTS[lang])) assert.ok(v.trim(), `${lang} ${k}`);
  }
  assert.equal(pickLanguage("ru-RU"), "ru");
  assert.equal(pickLanguage("kk"), "kk");
  assert.equal(pickLanguage("kk-KZ"), "kk");
  assert.equal(pickLanguage("en-US"), "en");
  assert.equal(pickLanguage("de"), "en");
  assert.equal(pickLanguage(undefined), "en");
  assert.equal(t("ru", "signer", { n: 2 }), "Подписант 2");
});

test("trusted host lists from the options page", () => {
  assert.deepEqual(parseHostList(" Mail.Example.KZ., mx2.example.kz\nbad_host  ; <x> "), ["mail.example.kz", "mx2.example.kz"]);
  assert.deepEqual(parseHostList(""), []);
});
