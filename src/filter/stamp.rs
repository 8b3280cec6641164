//! Stamping (SPEC §5): remove forged `X-EDS-*` headers and `Authentication-Results` headers
//! that claim to be ours, then prepend our own. Headers only: every byte of the message below
//! the prepended block stays as it was, except the removed header fields and, when
//! `subject_tag` is on, the `Subject:` field (which gets a short verdict tag in front; the
//! signed content of multipart/signed and pkcs7-mime is the body, so signatures still verify,
//! but a DKIM signature over Subject would not).

use crate::config::Language;

use super::report::{short_time, Reason, Report, SignerResult, Verdict};

/// Longest header line we aim for (RFC 5322 §2.1.1 recommends 78).
const FOLD_AT: usize = 78;

/// What the MX's sender checks (`crate::senderauth`) found, for the stamp: the `spf=`, `dkim=`,
/// `dmarc=`, `arc=` (or, for submission, `auth=`) results of the one `Authentication-Results`
/// header (SPEC §10), and the authenticated sender domain the `Sender-Match` headers compare with.
#[derive(Debug, Clone, Default)]
pub struct SenderContext {
    /// RFC 8601 `resinfo` clauses, ASCII, in order, e.g. `spf=pass smtp.mailfrom=a@bank.kz`.
    pub methods: Vec<String>,
    /// The authenticated sender domain, lower-case ASCII: DMARC `header.from` if DMARC passed,
    /// else the `d=` of a passing DKIM signature, else the SPF-passing MAIL FROM domain.
    pub domain: Option<String>,
}

thread_local! {
    static SENDER: std::cell::RefCell<Option<SenderContext>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (the filter, which stamps on this thread) with `ctx` as the sender results its stamp
/// carries. The filter's signature stays as it is for its other callers (CLI, revocation pass);
/// the context is cleared when `f` returns or unwinds.
pub fn with_sender<T>(ctx: SenderContext, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SENDER.with(|s| s.borrow_mut().take());
        }
    }
    SENDER.with(|s| *s.borrow_mut() = Some(ctx));
    let _reset = Reset;
    f()
}

fn sender_context() -> Option<SenderContext> {
    SENDER.with(|s| s.borrow().clone())
}

/// `X-EDS-Signer-N-Sender-Match` for a signer's certificate email against the authenticated
/// sender domain: `yes` when the email's domain is that domain or one of them is a subdomain
/// of the other (label boundary: `bank.kz` ~ `mail.bank.kz`, never `evilbank.kz` or
/// `bank.kz.evil.com`); `no` otherwise — a look-alike domain is exactly a `no`; `unknown` when
/// no sender domain was authenticated or the email has no usable domain. No Public Suffix List:
/// sibling subdomains (`a.bank.kz` / `b.bank.kz`) are `no`, the cautious side.
pub fn sender_match(email: &str, sender_domain: Option<&str>) -> &'static str {
    let Some(sender) = sender_domain.map(norm_domain).filter(|d| !d.is_empty()) else {
        return "unknown";
    };
    let Some(cert) = email
        .rsplit_once('@')
        .map(|(_, d)| norm_domain(d))
        .filter(|d| !d.is_empty() && d.is_ascii())
    else {
        return "unknown";
    };
    let within = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
    if within(&cert, &sender) || within(&sender, &cert) {
        "yes"
    } else {
        "no"
    }
}

fn norm_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Stamping settings.
pub struct StampOptions<'a> {
    /// Our authserv-id (`server.hostname`).
    pub hostname: &'a str,
    pub language: Language,
    pub subject_tag: bool,
}

/// The stamped message.
pub fn stamp(raw: &[u8], report: &Report, opts: &StampOptions<'_>) -> Vec<u8> {
    let eol: &str = if uses_bare_lf(raw) { "\n" } else { "\r\n" };
    let headers = headers_for(report, opts);
    let mut out = Vec::with_capacity(raw.len() + 1024);
    for (name, value) in &headers {
        out.extend_from_slice(render(name, value, eol).as_bytes());
    }
    // With tags on, an unsigned message gets none, but a tag the sender typed is still removed:
    // `[EDS valid] Invoice` must not reach the reader looking checked.
    let tag = opts
        .subject_tag
        .then(|| subject_tag(report.verdict).unwrap_or(""));
    strip_into(raw, opts.hostname, tag, &mut out);
    out
}

/// The fallback stamp when the filter itself failed: the message is still delivered.
pub fn stamp_error(raw: &[u8], hostname: &str, verdict: Verdict, why: &str) -> Vec<u8> {
    let eol: &str = if uses_bare_lf(raw) { "\n" } else { "\r\n" };
    let why: String = why
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .take(200)
        .collect();
    let mut out = Vec::with_capacity(raw.len() + 256);
    out.extend_from_slice(
        render(
            "Authentication-Results",
            &{
                let mut v = hostname.to_string();
                push_sender_methods(&mut v);
                format!("{v}; smime={} reason=\"{why}\"", verdict.as_str())
            },
            eol,
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        render(
            "X-EDS-Status",
            &format!("{}; signers=0; valid=0", verdict.as_str()),
            eol,
        )
        .as_bytes(),
    );
    strip_into(raw, hostname, None, &mut out);
    out
}

fn uses_bare_lf(raw: &[u8]) -> bool {
    match memchr::memchr(b'\n', raw) {
        Some(i) => i == 0 || raw[i - 1] != b'\r',
        None => false,
    }
}

/// Our headers, in order, as (name, unfolded value).
pub fn headers_for(report: &Report, opts: &StampOptions<'_>) -> Vec<(String, String)> {
    let mut h = Vec::new();
    h.push((
        "Authentication-Results".to_string(),
        authentication_results(report, opts.hostname),
    ));
    h.push((
        "X-EDS-Status".to_string(),
        format!(
            "{}; signers={}; valid={}",
            report.verdict.as_str(),
            report.signer_count(),
            report.valid_count()
        ),
    ));
    let sender = sender_context();
    let sender_domain = sender.as_ref().and_then(|c| c.domain.as_deref());
    let mut summary_line = summary(report, opts.language);
    for (i, (_, s)) in report.signers().enumerate() {
        if s.result != SignerResult::Pass {
            continue;
        }
        if let (Some(e), Some(d)) = (&s.email, sender_domain) {
            if sender.is_some() && sender_match(e, Some(d)) == "no" {
                summary_line.push_str("; ");
                summary_line.push_str(&mismatch_text(opts.language, i + 1, e, d));
            }
        }
    }
    h.push(("X-EDS-Summary".to_string(), summary_line));
    for (i, (sig, s)) in report.signers().enumerate() {
        let n = i + 1;
        let name = |field: &str| format!("X-EDS-Signer-{n}-{field}");
        let result = match s.reason {
            Some(r) => format!("{}; reason={}", s.result.as_str(), r.as_str()),
            None => s.result.as_str().to_string(),
        };
        h.push((name("Result"), result));
        let part = match (&sig.part, &sig.file) {
            (Some(p), Some(f)) => format!("{p}; file=\"{}\"", quote(f)),
            (Some(p), None) => p.clone(),
            (None, Some(f)) => format!("file=\"{}\"", quote(f)),
            (None, None) => "none".into(),
        };
        h.push((name("Part"), part));
        if s.result != SignerResult::Pass {
            continue;
        }
        let fields = [
            ("Name", s.full_name.clone()),
            ("Email", s.email.clone()),
            ("IIN", s.iin.clone()),
            ("Organization", s.organization.clone()),
            ("BIN", s.bin.clone()),
            (
                "Signing-Time",
                s.shown_time().map(|(t, src)| format!("{t}; source={src}")),
            ),
            ("Roles", (!s.roles.is_empty()).then(|| s.roles.join(", "))),
            (
                "Certificate",
                match (&s.cert_serial, &s.issuer, &s.algorithm) {
                    (Some(serial), Some(issuer), Some(alg)) => Some(format!(
                        "serial={serial}; issuer=\"{}\"; algorithm={alg}",
                        quote(issuer)
                    )),
                    _ => None,
                },
            ),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                h.push((name(field), v));
            }
        }
        // SPEC §10: only with sender checks (MX or submission), only for an email-bearing cert.
        if let (Some(_), Some(e)) = (&sender, &s.email) {
            h.push((
                name("Sender-Match"),
                sender_match(e, sender_domain).to_string(),
            ));
        }
    }
    h
}

/// The summary's warning when a valid signer's email is outside the authenticated sender domain.
fn mismatch_text(lang: Language, n: usize, email: &str, sender: &str) -> String {
    let cert = email.rsplit_once('@').map_or(email, |(_, d)| d);
    match lang {
        Language::En => {
            format!("⚠ signer {n}'s e-mail domain {cert} is not the sender's domain {sender}")
        }
        Language::Ru => format!(
            "⚠ домен e-mail подписанта {n} {cert} не совпадает с доменом отправителя {sender}"
        ),
        Language::Kk => format!(
            "⚠ {n}-қол қоюшының e-mail домені {cert} жіберушінің доменімен {sender} сәйкес емес"
        ),
    }
}

/// Escapes `"` and `\` for a quoted-string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// RFC 8601 Authentication-Results with one RFC 7281 `smime` result per signer. ASCII only:
/// non-ASCII in issuer names is `\XX`-escaped (RFC 4514), a non-ASCII email is left out.
fn authentication_results(report: &Report, hostname: &str) -> String {
    let mut v = hostname.to_string();
    push_sender_methods(&mut v);
    if report.signer_count() == 0 {
        v.push_str("; smime=none");
        return v;
    }
    for (sig, s) in report.signers() {
        v.push_str("; smime=");
        v.push_str(s.result.as_str());
        if let Some(r) = s.reason {
            v.push_str(&format!(" reason=\"{}\"", r.as_str()));
        }
        if let Some(p) = &sig.part {
            v.push_str(&format!(" body.smime-part={}", ar_value(p)));
        }
        if s.result == SignerResult::Pass {
            if let Some(e) = s.email.as_deref().filter(|e| is_ar_address(e)) {
                v.push_str(&format!(" body.smime-identifier={e}"));
            }
        }
        if let Some(serial) = &s.cert_serial {
            v.push_str(&format!(" body.smime-serial={serial}"));
        }
        if let Some(issuer) = &s.issuer_ascii {
            v.push_str(&format!(" body.smime-issuer=\"{}\"", quote(issuer)));
        }
    }
    v
}

/// Appends `; spf=… ; dkim=…` from the sender context, if any.
fn push_sender_methods(v: &mut String) {
    if let Some(ctx) = sender_context() {
        for m in &ctx.methods {
            v.push_str("; ");
            v.push_str(m);
        }
    }
}

/// A `pvalue`: a token as it is, anything else quoted.
fn ar_value(s: &str) -> String {
    let token = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    if token || s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            quote(&s.chars().filter(|c| c.is_ascii()).collect::<String>())
        )
    }
}

fn is_ar_address(e: &str) -> bool {
    e.is_ascii()
        && e.contains('@')
        && e.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>,;:\\\"[]".contains(&b))
}

/// Texts of the summary line per language.
struct Texts {
    pass: &'static str,
    fail: &'static str,
    permerror: &'static str,
    temperror: &'static str,
    none: &'static str,
    signer: &'static str,
    iin: &'static str,
    bin: &'static str,
    unknown: &'static str,
}

fn texts(lang: Language) -> Texts {
    match lang {
        Language::En => Texts {
            pass: "✔ Valid EDS",
            fail: "✘ Invalid EDS",
            permerror: "✘ EDS cannot be verified",
            temperror: "⚠ EDS not fully checked",
            none: "No EDS",
            signer: "signer",
            iin: "IIN",
            bin: "BIN",
            unknown: "unknown signer",
        },
        Language::Ru => Texts {
            pass: "✔ ЭЦП действительна",
            fail: "✘ ЭЦП недействительна",
            permerror: "✘ ЭЦП не удаётся проверить",
            temperror: "⚠ ЭЦП проверена не полностью",
            none: "ЭЦП нет",
            signer: "подписант",
            iin: "ИИН",
            bin: "БИН",
            unknown: "неизвестный подписант",
        },
        Language::Kk => Texts {
            pass: "✔ ЭЦҚ жарамды",
            fail: "✘ ЭЦҚ жарамсыз",
            permerror: "✘ ЭЦҚ тексеру мүмкін емес",
            temperror: "⚠ ЭЦҚ толық тексерілмеді",
            none: "ЭЦҚ жоқ",
            signer: "қол қоюшы",
            iin: "ЖСН",
            bin: "БСН",
            unknown: "белгісіз қол қоюшы",
        },
    }
}

/// A reason in words, per language.
pub fn reason_text(r: Reason, lang: Language) -> &'static str {
    use Language::*;
    use Reason::*;
    match (r, lang) {
        (DigestMismatch, En) => "the content was changed after signing",
        (DigestMismatch, Ru) => "содержимое изменено после подписания",
        (DigestMismatch, Kk) => "мазмұны қол қойылғаннан кейін өзгертілген",
        (BadSignature, En) => "the signature does not match",
        (BadSignature, Ru) => "подпись неверна",
        (BadSignature, Kk) => "қолтаңба дұрыс емес",
        (Untrusted, En) => "certificate not issued by a trusted CA",
        (Untrusted, Ru) => "сертификат выдан недоверенным УЦ",
        (Untrusted, Kk) => "сертификатты сенімді КО бермеген",
        (Expired, En) => "certificate expired",
        (Expired, Ru) => "срок действия сертификата истёк",
        (Expired, Kk) => "сертификаттың мерзімі өткен",
        (NotYetValid, En) => "certificate not yet valid",
        (NotYetValid, Ru) => "сертификат ещё не действителен",
        (NotYetValid, Kk) => "сертификат әлі жарамды емес",
        (Revoked, En) => "certificate revoked",
        (Revoked, Ru) => "сертификат отозван",
        (Revoked, Kk) => "сертификат кері қайтарылған",
        (KeyUsage, En) => "key not meant for signing",
        (KeyUsage, Ru) => "ключ не предназначен для подписи",
        (KeyUsage, Kk) => "кілт қол қоюға арналмаған",
        (NoCertificate, En) => "signer certificate missing",
        (NoCertificate, Ru) => "нет сертификата подписанта",
        (NoCertificate, Kk) => "қол қоюшының сертификаты жоқ",
        (Malformed, En) => "damaged signature",
        (Malformed, Ru) => "повреждённая подпись",
        (Malformed, Kk) => "бүлінген қолтаңба",
        (UnsupportedAlgorithm, En) => "unsupported algorithm",
        (UnsupportedAlgorithm, Ru) => "неподдерживаемый алгоритм",
        (UnsupportedAlgorithm, Kk) => "қолдау көрсетілмейтін алгоритм",
        (RevocationUnknown, En) => "revocation status unknown",
        (RevocationUnknown, Ru) => "статус отзыва неизвестен",
        (RevocationUnknown, Kk) => "кері қайтару күйі белгісіз",
    }
}

/// The one-line human summary, e.g.
/// `✔ Valid EDS: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, IIN 123456789011, АО "ТЕСТ" (BIN 123456789021), 2026-11-22 10:15 UTC`.
pub fn summary(report: &Report, lang: Language) -> String {
    let t = texts(lang);
    let head = match report.verdict {
        Verdict::None => return t.none.to_string(),
        Verdict::Pass => t.pass,
        Verdict::Fail => t.fail,
        Verdict::PermError => t.permerror,
        Verdict::TempError => t.temperror,
    };
    let count = report.signer_count();
    let mut items = Vec::new();
    for (i, (_, s)) in report.signers().enumerate() {
        if s.result == SignerResult::Pass {
            let mut id = s
                .full_name
                .clone()
                .or_else(|| s.common_name.clone())
                .unwrap_or_else(|| t.unknown.to_string());
            if let Some(iin) = &s.iin {
                id.push_str(&format!(", {} {iin}", t.iin));
            }
            match (&s.organization, &s.bin) {
                (Some(o), Some(b)) => id.push_str(&format!(", {o} ({} {b})", t.bin)),
                (Some(o), None) => id.push_str(&format!(", {o}")),
                (None, Some(b)) => id.push_str(&format!(", {} {b}", t.bin)),
                (None, None) => {}
            }
            if let Some((time, _)) = s.shown_time() {
                id.push_str(&format!(", {}", short_time(time)));
            }
            if report.verdict != Verdict::Pass {
                id = format!("✔ {id}");
            }
            items.push(id);
        } else {
            let why = s.reason.map(|r| reason_text(r, lang)).unwrap_or_default();
            if count == 1 {
                items.push(why.to_string());
            } else {
                items.push(format!("{} {}: {why}", t.signer, i + 1));
            }
        }
    }
    format!("{head}: {}", items.join("; "))
}

/// A short ASCII tag for the Subject.
fn subject_tag(v: Verdict) -> Option<&'static str> {
    match v {
        Verdict::None => None,
        Verdict::Pass => Some("[EDS valid]"),
        Verdict::Fail => Some("[EDS INVALID]"),
        Verdict::PermError => Some("[EDS error]"),
        Verdict::TempError => Some("[EDS unchecked]"),
    }
}

const ALL_TAGS: &[&str] = &[
    "[EDS valid]",
    "[EDS INVALID]",
    "[EDS error]",
    "[EDS unchecked]",
];

/// One header field, folded at spaces to at most 78 columns. Space-separated words with
/// non-ASCII text, control characters or `=?` are written as RFC 2047 encoded words (runs of
/// them as one encoded text), so that a value from a certificate or a file name can neither
/// break the header syntax nor pose as an encoded word; the rest stays readable as it is.
pub fn render(name: &str, value: &str, eol: &str) -> String {
    let mut f = Folder {
        out: format!("{name}:"),
        col: name.len() + 1,
        eol,
        first: true,
    };
    let mut run: Vec<&str> = Vec::new();
    for (i, tok) in value.split(' ').enumerate() {
        if i == 0 && tok.is_empty() {
            continue;
        }
        // An empty token is a second space in a row: inside a run of encoded words it is
        // encoded too, since the white space between two encoded words is dropped by decoders
        // (RFC 2047 §6.2; found by the rfc2047 fuzz target).
        if needs_encoding(tok) || (tok.is_empty() && !run.is_empty()) {
            run.push(tok);
            continue;
        }
        if !run.is_empty() {
            f.encoded(&run.join(" "));
            run.clear();
        }
        f.word(tok);
    }
    if !run.is_empty() {
        f.encoded(&run.join(" "));
    }
    f.out.push_str(eol);
    f.out
}

fn needs_encoding(tok: &str) -> bool {
    !tok.is_ascii() || tok.contains("=?") || tok.chars().any(|c| c.is_control())
}

/// Places words on header lines.
struct Folder<'a> {
    out: String,
    col: usize,
    eol: &'a str,
    first: bool,
}

impl Folder<'_> {
    fn word(&mut self, piece: &str) {
        if !self.first && self.col + 1 + piece.len() > FOLD_AT {
            // Fold before the space, which starts the continuation line: unfolding (removing
            // the line break) gives back the value exactly.
            self.out.push_str(self.eol);
            self.col = 0;
        }
        self.out.push(' ');
        self.out.push_str(piece);
        self.col += 1 + piece.len();
        self.first = false;
    }

    fn encoded(&mut self, text: &str) {
        let mut room = FOLD_AT.saturating_sub(self.col + 1);
        if room < 20 && !self.first {
            self.out.push_str(self.eol);
            self.col = 0;
            room = FOLD_AT - 1;
        }
        for w in encoded_words(text, room) {
            self.word(&w);
        }
    }
}

/// RFC 2047 `=?UTF-8?B?...?=` words, split on character boundaries, each short enough for its
/// line: the first shares its line with `Name: ` (`first_room` columns left), the others follow
/// a single space (at most 72 columns).
pub fn encoded_words(text: &str, first_room: usize) -> Vec<String> {
    use base64::Engine;
    // 12 columns of syntax; 4 base64 columns per 3 bytes.
    let bytes_for = |room: usize| (room.saturating_sub(12) / 4 * 3).max(3);
    let mut max = bytes_for(first_room.min(73));
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if !chunk.is_empty() && chunk.len() + c.len_utf8() > max {
            words.push(std::mem::take(&mut chunk));
            max = bytes_for(73);
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect()
}

/// Copies `raw` into `out` without forged headers. With `tag`, the Subject loses every verdict
/// tag it starts with and gets `tag` instead (none when `tag` is empty).
fn strip_into(raw: &[u8], hostname: &str, tag: Option<&str>, out: &mut Vec<u8>) {
    // A bare CR in the header section is a line end for some readers and not for others, so it
    // could hide a header from us that a mail client then shows (`Subject: x\rX-EDS-Status:
    // pass`). It is made a real line end first (RFC 5322 §2.2: CR only in CRLF), so that every
    // reader, and this function, sees the same fields.
    let fixed;
    let raw = match bare_cr_as_line_end(raw) {
        Some(f) => {
            fixed = f;
            &fixed[..]
        }
        None => raw,
    };
    let header_end = header_end(raw);
    let mut pos = 0;
    let mut tagged = false;
    while pos < header_end {
        let end = field_end(raw, pos, header_end);
        let field = &raw[pos..end];
        let name_end = field.iter().position(|&b| b == b':');
        let name = name_end.map(|i| &field[..i]).unwrap_or_default();
        let name = trim_ascii_end(name);
        if is_forged(name, name_end.map(|i| &field[i + 1..]), hostname) {
            pos = end;
            continue;
        }
        match (tag, name_end) {
            (Some(tag), Some(i)) if !tagged && name.eq_ignore_ascii_case(b"subject") => {
                tagged = true;
                out.extend_from_slice(&field[..=i]);
                out.push(b' ');
                out.extend_from_slice(tag.as_bytes());
                let mut rest = &field[i + 1..];
                rest = trim_ascii_start_inline(rest);
                // Tags from an earlier hop (or a forger, in any case, stacked) are replaced.
                while let Some(t) = ALL_TAGS.iter().find(|t| {
                    rest.get(..t.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(t.as_bytes()))
                }) {
                    rest = trim_ascii_start_inline(&rest[t.len()..]);
                }
                if !tag.is_empty() && !rest.starts_with(b"\r\n") && !rest.starts_with(b"\n") {
                    out.push(b' ');
                }
                out.extend_from_slice(rest);
            }
            _ => out.extend_from_slice(field),
        }
        pos = end;
    }
    out.extend_from_slice(&raw[header_end..]);
}

/// `raw` with every bare CR of the header section (CR not followed by LF) written as a line
/// end, the message's own (CRLF, or LF for a bare-LF file); `None` when there is none. Reading
/// bare CR as a line end, the header section can end earlier (`\r\r`); the bytes from there on
/// are the body and stay as they are.
fn bare_cr_as_line_end(raw: &[u8]) -> Option<Vec<u8>> {
    let head = &raw[..header_end(raw)];
    let is_bare = |i: usize| raw.get(i + 1) != Some(&b'\n');
    memchr::memchr_iter(b'\r', head).find(|&i| is_bare(i))?;
    let eol: &[u8] = if uses_bare_lf(raw) { b"\n" } else { b"\r\n" };
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut pos = 0;
    let mut line_start = true;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let (len, ends) = match memchr::memchr2(b'\r', b'\n', rest) {
            None => (rest.len(), 0),
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (i, 2),
            Some(i) => (i, 1),
        };
        let blank = line_start && len == 0 && ends > 0;
        out.extend_from_slice(&rest[..len]);
        if ends == 1 && rest[len] == b'\r' {
            out.extend_from_slice(eol);
        } else {
            out.extend_from_slice(&rest[len..len + ends]);
        }
        pos += len + ends;
        line_start = ends > 0;
        if blank {
            break;
        }
    }
    out.extend_from_slice(&raw[pos..]);
    Some(out)
}

fn trim_ascii_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - n]
}

fn trim_ascii_start_inline(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Index of the end of the header section (the start of the blank line, or the end).
fn header_end(raw: &[u8]) -> usize {
    if raw.starts_with(b"\r\n") || raw.starts_with(b"\n") {
        return 0;
    }
    let mut pos = 0;
    while pos < raw.len() {
        let line_end = match memchr::memchr(b'\n', &raw[pos..]) {
            Some(i) => pos + i + 1,
            None => return raw.len(),
        };
        let next = &raw[line_end..];
        if next.starts_with(b"\r\n") || next.starts_with(b"\n") {
            return line_end;
        }
        pos = line_end;
    }
    raw.len()
}

/// End of the header field starting at `pos` (continuation lines included).
fn field_end(raw: &[u8], pos: usize, limit: usize) -> usize {
    let mut p = pos;
    loop {
        let line_end = match memchr::memchr(b'\n', &raw[p..limit]) {
            Some(i) => p + i + 1,
            None => return limit,
        };
        if line_end >= limit || !matches!(raw[line_end], b' ' | b'\t') {
            return line_end;
        }
        p = line_end;
    }
}

/// A header we must remove: any `X-EDS-*`, or an `Authentication-Results` whose authserv-id is
/// ours.
fn is_forged(name: &[u8], value: Option<&[u8]>, hostname: &str) -> bool {
    if name.len() >= 6 && name[..6].eq_ignore_ascii_case(b"x-eds-") {
        return true;
    }
    if name.eq_ignore_ascii_case(b"authentication-results") {
        let Some(value) = value else { return false };
        return authserv_id(value).is_some_and(|id| same_host(&id, hostname));
    }
    false
}

/// Host names compared as DNS compares them: case-insensitive, and a trailing dot (the root)
/// makes no difference (`MX.example.kz.` is `mx.example.kz`).
fn same_host(a: &str, b: &str) -> bool {
    let bare = |s: &str| s.strip_suffix('.').unwrap_or(s).to_string();
    bare(a).eq_ignore_ascii_case(&bare(b))
}

/// The authserv-id of an Authentication-Results value (RFC 8601 §2.2): the first token or
/// quoted-string after optional CFWS.
fn authserv_id(value: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(value);
    let mut chars = s.chars().peekable();
    // Skip whitespace and (nested) comments.
    loop {
        match chars.peek() {
            Some(c) if c.is_whitespace() => {
                chars.next();
            }
            Some('(') => {
                let mut depth = 0usize;
                for c in chars.by_ref() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => break,
        }
    }
    let mut id = String::new();
    if chars.peek() == Some(&'"') {
        chars.next();
        let mut escaped = false;
        for c in chars {
            if escaped {
                id.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                break;
            } else {
                id.push(c);
            }
        }
    } else {
        for c in chars {
            if c.is_whitespace() || c == ';' || c == '(' {
                break;
            }
            id.push(c);
        }
    }
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two spaces between runs that need encoding survive a decode (the rfc2047 fuzz target's
    /// find: `fuzz/regressions/rfc2047/double-space-between-encoded-words`).
    #[test]
    fn render_keeps_double_spaces_between_encoded_runs() {
        for value in [
            "=?utf,4?q?hello  =?=?_=D0utf\u{fffd}BC=D",
            "Тест  Тестов",
            "Тест   Тестов plain  Әлі ",
            "a  =?x",
        ] {
            let field = render("X-EDS-Signer", value, "\r\n");
            let unfolded = field.trim_end_matches("\r\n").replace("\r\n", "");
            let got = crate::imap::search::decode_words(
                unfolded.strip_prefix("X-EDS-Signer:").unwrap().as_bytes(),
            );
            assert_eq!(got, format!(" {value}"), "{field:?}");
        }
    }

    #[test]
    fn strips_forgeries_only() {
        let raw = b"X-EDS-Status: pass\r\nAuthentication-Results: mx.test;\r\n smime=pass\r\n\
Authentication-Results: other.example; dkim=pass\r\nx-eds-signer-1-name: Forger\r\n\
Subject: hi\r\n\r\nX-EDS-Status: in body stays\r\n";
        let mut out = Vec::new();
        strip_into(raw, "MX.test", None, &mut out);
        assert_eq!(
            out,
            b"Authentication-Results: other.example; dkim=pass\r\nSubject: hi\r\n\r\n\
X-EDS-Status: in body stays\r\n"
        );
    }

    /// Finding 8: our authserv-id with a trailing dot or in other case is ours; so is our
    /// hostname written with a trailing dot in the config.
    #[test]
    fn forged_authserv_id_matches_case_and_trailing_dot_insensitively() {
        let raw = b"Authentication-Results: mx.example.kz.; smime=pass\r\n\
Authentication-Results: MX.EXAMPLE.KZ; smime=pass\r\n\
Authentication-Results: \"Mx.Example.Kz.\" (c); smime=pass\r\n\
Authentication-Results: mx.example.kz.evil; smime=pass\r\n\
Authentication-Results: mx.example.kz..; smime=pass\r\n\r\nbody";
        let want = b"Authentication-Results: mx.example.kz.evil; smime=pass\r\n\
Authentication-Results: mx.example.kz..; smime=pass\r\n\r\nbody";
        for host in ["mx.example.kz", "mx.example.kz.", "MX.Example.KZ"] {
            let mut out = Vec::new();
            strip_into(raw, host, None, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "{host}"
            );
        }
    }

    /// Finding 8: a bare CR in the header section never hides a header.
    #[test]
    fn bare_cr_in_headers_is_a_line_end() {
        let cases: [(&[u8], &[u8]); 5] = [
            (
                b"Subject: x\rX-EDS-Status: pass\r\nFrom: a\r\n\r\nb\rody\r\n",
                b"Subject: x\r\nFrom: a\r\n\r\nb\rody\r\n",
            ),
            (
                b"Subject: x\rAuthentication-Results: h; smime=pass\r\n\r\nbody",
                b"Subject: x\r\n\r\nbody",
            ),
            // Folded after the bare CR: one field.
            (
                b"Subject: x\r X-EDS-Status: pass\r\n\r\nbody",
                b"Subject: x\r\n X-EDS-Status: pass\r\n\r\nbody",
            ),
            // A bare-LF file.
            (
                b"Subject: x\rx-eds-status: pass\nFrom: a\n\nbody\r",
                b"Subject: x\nFrom: a\n\nbody\r",
            ),
            // A bare CR blank line ends the header section; the rest is body, as it was.
            (
                b"Subject: x\r\rX-EDS-Status: pass\r\n\r\nbody",
                b"Subject: x\r\n\r\nX-EDS-Status: pass\r\n\r\nbody",
            ),
        ];
        for (raw, want) in cases {
            let mut out = Vec::new();
            strip_into(raw, "h", None, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // No bare CR: nothing is copied twice.
        assert!(bare_cr_as_line_end(b"A: b\r\n\r\nbody\r").is_none());
    }

    #[test]
    fn authserv_ids() {
        assert_eq!(
            authserv_id(b" (c) mx.test 1; x").as_deref(),
            Some("mx.test")
        );
        assert_eq!(authserv_id(b" \"mx.test\"; x").as_deref(), Some("mx.test"));
        assert_eq!(authserv_id(b" mx.test;").as_deref(), Some("mx.test"));
        assert_eq!(authserv_id(b"").as_deref(), None);
    }

    #[test]
    fn subject_tag_replaces_old_tag() {
        let raw = b"Subject: [EDS valid] Contract\r\n\r\nbody";
        let mut out = Vec::new();
        strip_into(raw, "h", Some("[EDS INVALID]"), &mut out);
        assert_eq!(out, b"Subject: [EDS INVALID] Contract\r\n\r\nbody");
    }

    #[test]
    fn subject_tag_typed_by_the_sender_is_removed() {
        // Unsigned mail (verdict none) with tags on: no tag of ours, none of the sender's either.
        let raw = b"Subject: [EDS valid] Invoice, please pay today\r\n\r\nbody";
        let mut out = Vec::new();
        strip_into(raw, "h", Some(""), &mut out);
        assert_eq!(out, b"Subject: Invoice, please pay today\r\n\r\nbody");
        // Stacked, in another case: all go.
        let raw = b"Subject: [eds VALID] [EDS valid]  Pay\r\n\r\nbody";
        let mut out = Vec::new();
        strip_into(raw, "h", Some("[EDS error]"), &mut out);
        assert_eq!(out, b"Subject: [EDS error] Pay\r\n\r\nbody");
        // Tags off: the Subject is the sender's, untouched.
        let raw = b"Subject: [EDS valid] Pay\r\n\r\nbody";
        let mut out = Vec::new();
        strip_into(raw, "h", None, &mut out);
        assert_eq!(out, raw);
    }

    #[test]
    fn encoded_words_are_short_and_decode() {
        let text =
            "✔ Valid EDS: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, IIN 123456789011, АО \"ТЕСТ\" (BIN 123456789021)";
        let words = encoded_words(text, 60);
        assert!(words.iter().all(|w| w.len() <= 75));
        use base64::Engine;
        let decoded: String = words
            .iter()
            .map(|w| {
                let b64 = w.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(decoded, text);
        let h = render("X-EDS-Summary", text, "\r\n");
        assert!(h.is_ascii());
        assert!(h.lines().all(|l| l.len() <= 78));
    }

    #[test]
    fn hostile_values_cannot_inject_headers() {
        let h = render(
            "X-EDS-Signer-1-Name",
            "Evil\r\nX-EDS-Status: pass =?UTF-8?B?QQ==?= ok",
            "\r\n",
        );
        for line in h.trim_end().split("\r\n").skip(1) {
            assert!(line.starts_with(' '), "{h:?}");
        }
        assert!(h.starts_with("X-EDS-Signer-1-Name: =?UTF-8?B?"), "{h:?}");
        assert!(h.ends_with(" ok\r\n"), "{h:?}");
        assert!(!h.contains("=?UTF-8?B?QQ==?="), "{h:?}");
    }

    #[test]
    fn mixed_values_keep_ascii_words_readable() {
        let h = render(
            "X-EDS-Signer-1-Certificate",
            "serial=0a; issuer=\"CN=ҰКО 3.0 (RSA TEST),C=KZ\"; algorithm=rsa-sha256",
            "\r\n",
        );
        assert!(
            h.starts_with("X-EDS-Signer-1-Certificate: serial=0a; =?UTF-8?B?"),
            "{h}"
        );
        assert!(
            h.contains(" 3.0 (RSA TEST),C=KZ\"; algorithm=rsa-sha256\r\n"),
            "{h}"
        );
    }

    #[test]
    fn folding() {
        let v = format!("host; smime=pass body.smime-part=TEXT {}", "x".repeat(100));
        let h = render("Authentication-Results", &v, "\r\n");
        assert!(h.starts_with("Authentication-Results: host; smime=pass"));
        assert!(h.contains("\r\n "));
        assert_eq!(
            h.replace("\r\n ", " "),
            format!("Authentication-Results: {v}\r\n")
        );
    }

    #[test]
    fn header_end_cases() {
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), 6);
        assert_eq!(header_end(b"A: b\n\nbody"), 5);
        assert_eq!(header_end(b"\r\nbody"), 0);
        assert_eq!(header_end(b"A: b"), 4);
    }
}
