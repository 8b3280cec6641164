//! SEARCH criteria (RFC 3501 §6.4.4) evaluated against one message at a time. Flags, sizes and
//! dates come from the store metadata; header keys from the cached header (RFC 2047 words
//! decoded); BODY and TEXT from the decoded text parts (mail-parser handles transfer encodings
//! and charsets), or from the raw body of a message too deeply nested to parse
//! ([`crate::mime_guard`]). String matching is case-insensitive substring matching on UTF-8 text.

use chrono::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;

use super::condstore::{in_ranges, ranges};
use super::envelope;
use super::fetch::structure;
use super::mime::{self, Cached};
use crate::store::{MessageMeta, Store};

/// One message of the selected mailbox, as the session sees it.
#[derive(Clone)]
pub struct Msg {
    pub seq: u32,
    pub meta: MessageMeta,
    pub recent: bool,
}

/// What evaluating needs from the mailbox as a whole.
pub struct Scope {
    pub max_seq: u32,
    pub max_uid: u32,
}

/// Everything about one message that is loaded only if a key asks for it.
struct Lazy<'a> {
    store: &'a Store,
    msg: &'a Msg,
    sets: &'a mut SetCache,
    cached: Option<Option<Cached>>,
    body_texts: Option<Vec<String>>,
}

impl Lazy<'_> {
    fn cached(&mut self) -> Option<&Cached> {
        if self.cached.is_none() {
            self.cached = Some(structure(self.store, self.msg.meta.blob_id, None));
        }
        self.cached.as_ref().and_then(|c| c.as_ref())
    }

    /// Decoded text of the fields called `name`.
    fn field_texts(&mut self, name: &[u8]) -> Vec<String> {
        let Some(c) = self.cached() else {
            return Vec::new();
        };
        mime::fields(&c.header)
            .filter(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v, _)| decode_words(&mime::unfold(v)).to_lowercase())
            .collect()
    }

    fn header_text(&mut self) -> String {
        let Some(c) = self.cached() else {
            return String::new();
        };
        let mut out = String::new();
        for (n, v, _) in mime::fields(&c.header) {
            out.push_str(&String::from_utf8_lossy(n));
            out.push_str(": ");
            out.push_str(&decode_words(&mime::unfold(v)));
            out.push('\n');
        }
        out.to_lowercase()
    }

    fn body_texts(&mut self) -> &[String] {
        if self.body_texts.is_none() {
            let texts = match self.store.blob(self.msg.meta.blob_id) {
                Ok(Some(blob)) => body_texts(&blob),
                _ => Vec::new(),
            };
            self.body_texts = Some(texts);
        }
        self.body_texts.as_deref().unwrap_or(&[])
    }

    fn sent_date(&mut self) -> Option<NaiveDate> {
        let c = self.cached()?;
        let v = mime::header_value(&c.header, "Date")?;
        let d = mail_parser::DateTime::parse_rfc822(&String::from_utf8_lossy(&v))?;
        NaiveDate::from_ymd_opt(d.year as i32, d.month as u32, d.day as u32)
    }
}

/// The lower-cased texts BODY and TEXT search in: the decoded text parts, or, for a message
/// whose MIME structure is beyond [`crate::mime_guard`]'s limits (a poison pill for mail-parser,
/// issue 11 finding 1), its raw body as one text, never parsed.
pub fn body_texts(raw: &[u8]) -> Vec<String> {
    if crate::mime_guard::scan(raw).is_err() {
        let body = memchr::memmem::find(raw, b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|i| i + 2))
            .unwrap_or(raw.len());
        return vec![String::from_utf8_lossy(&raw[body..]).to_lowercase()];
    }
    // mail-parser's debug assertions and unchecked offset arithmetic may panic on malformed
    // input; a panic here must not take the SEARCH down (nothing is then found in the body).
    std::panic::catch_unwind(|| {
        let mut texts = Vec::new();
        if let Some(m) = mail_parser::MessageParser::default().parse(raw) {
            collect_texts(&m, &mut texts, 0);
        }
        texts
    })
    .unwrap_or_default()
}

fn collect_texts(m: &mail_parser::Message<'_>, out: &mut Vec<String>, depth: usize) {
    use mail_parser::PartType;
    for p in &m.parts {
        match &p.body {
            PartType::Text(t) | PartType::Html(t) => out.push(t.to_lowercase()),
            PartType::Message(inner) if depth < 8 => collect_texts(inner, out, depth + 1),
            _ => {}
        }
    }
}

/// Decodes RFC 2047 encoded words; other bytes are taken as UTF-8 (lossy).
pub fn decode_words(v: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    // Where the text after the last encoded word starts, while that text is only whitespace.
    let mut after_word: Option<usize> = None;
    while i < v.len() {
        if v[i..].starts_with(b"=?") {
            if let Some((text, len)) = decode_word(&v[i..]) {
                // Whitespace between two encoded words is not part of the text (RFC 2047 §6.2);
                // what the previous word decoded to is, trailing spaces included.
                if let Some(end) = after_word {
                    out.truncate(end);
                }
                out.push_str(&text);
                i += len;
                after_word = Some(out.len());
                continue;
            }
        }
        let next = v[i + 1..]
            .windows(2)
            .position(|w| w == b"=?")
            .map(|p| i + 1 + p)
            .unwrap_or(v.len());
        let chunk = String::from_utf8_lossy(&v[i..next]);
        if !chunk.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
            after_word = None;
        }
        out.push_str(&chunk);
        i = next;
    }
    out
}

/// `=?charset?B|Q?text?=` at the start of `v`: (decoded text, bytes consumed).
fn decode_word(v: &[u8]) -> Option<(String, usize)> {
    use base64::Engine;
    let rest = v.get(2..)?;
    let q1 = memchr::memchr(b'?', rest)?;
    let charset = &rest[..q1];
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let end = rest[text_start..]
        .windows(2)
        .position(|w| w == b"?=")
        .map(|p| text_start + p)?;
    let text = &rest[text_start..end];
    let bytes = match enc.to_ascii_uppercase() {
        b'B' => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()?,
        b'Q' => {
            let mut out = Vec::with_capacity(text.len());
            let mut j = 0;
            while j < text.len() {
                match text[j] {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = text.get(j + 1..j + 3)?;
                        out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                        j += 2;
                    }
                    c => out.push(c),
                }
                j += 1;
            }
            out
        }
        _ => return None,
    };
    // RFC 2231 language suffix: charset*lang.
    let charset = charset.split(|&b| b == b'*').next().unwrap_or(charset);
    let s = match mail_parser::decoders::charsets::map::charset_decoder(charset) {
        Some(dec) => dec(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    Some((s, 2 + end + 2))
}

/// The sequence sets of one search as sorted, merged ranges, made once per set (keyed by its
/// address, stable while the key lives): a large set (a SEARCHRES `$` of many messages) is then
/// a binary search per message, not a scan.
#[derive(Default)]
struct SetCache(std::collections::HashMap<usize, Vec<(u32, u32)>>);

impl SetCache {
    fn contains(&mut self, set: &SequenceSet, n: u32, max: u32) -> bool {
        let ranges = self
            .0
            .entry(set as *const SequenceSet as usize)
            .or_insert_with(|| ranges(set, max));
        in_ranges(ranges, n)
    }
}

fn needle(s: &impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(s.as_ref()).to_lowercase()
}

fn internal_day(meta: &MessageMeta) -> NaiveDate {
    chrono::DateTime::from_timestamp(meta.internal_date, 0)
        .unwrap_or_default()
        .date_naive()
}

fn eval(key: &SearchKey<'_>, scope: &Scope, l: &mut Lazy<'_>) -> bool {
    use SearchKey as K;
    let m = &l.msg.meta;
    let has = |f: &str| m.has_flag(f);
    match key {
        K::And(keys) => keys.as_ref().iter().all(|k| eval(k, scope, l)),
        K::Or(a, b) => eval(a, scope, l) || eval(b, scope, l),
        K::Not(k) => !eval(k, scope, l),
        K::All => true,
        K::SequenceSet(set) => l.sets.contains(set, l.msg.seq, scope.max_seq),
        K::Uid(set) => l.sets.contains(set, m.uid, scope.max_uid),
        K::Answered => has("\\Answered"),
        K::Unanswered => !has("\\Answered"),
        K::Deleted => has("\\Deleted"),
        K::Undeleted => !has("\\Deleted"),
        K::Draft => has("\\Draft"),
        K::Undraft => !has("\\Draft"),
        K::Flagged => has("\\Flagged"),
        K::Unflagged => !has("\\Flagged"),
        K::Seen => has("\\Seen"),
        K::Unseen => !has("\\Seen"),
        K::Keyword(k) => has(k.as_ref()),
        K::Unkeyword(k) => !has(k.as_ref()),
        K::Recent => l.msg.recent,
        // RFC 7162 §3.1.5: one modseq per message, whatever the entry name.
        K::ModSequence { modseq, .. } => m.modseq >= *modseq,
        K::New => l.msg.recent && !has("\\Seen"),
        K::Old => !l.msg.recent,
        K::Larger(n) => m.size > *n as u64,
        K::Smaller(n) => m.size < *n as u64,
        K::Before(d) => internal_day(m) < *d.as_ref(),
        K::On(d) => internal_day(m) == *d.as_ref(),
        K::Since(d) => internal_day(m) >= *d.as_ref(),
        K::SentBefore(d) => l.sent_date().unwrap_or_else(|| internal_day(m)) < *d.as_ref(),
        K::SentOn(d) => l.sent_date().unwrap_or_else(|| internal_day(m)) == *d.as_ref(),
        K::SentSince(d) => l.sent_date().unwrap_or_else(|| internal_day(m)) >= *d.as_ref(),
        K::From(s) => address_contains(l, b"from", s),
        K::To(s) => address_contains(l, b"to", s),
        K::Cc(s) => address_contains(l, b"cc", s),
        K::Bcc(s) => address_contains(l, b"bcc", s),
        K::Subject(s) => field_contains(l, b"subject", s),
        K::Header(name, value) => {
            let texts = l.field_texts(name.as_ref());
            let n = needle(value);
            texts.iter().any(|t| t.contains(&n))
        }
        K::Body(s) => {
            let n = needle(s);
            l.body_texts().iter().any(|t| t.contains(&n))
        }
        K::Text(s) => {
            let n = needle(s);
            l.header_text().contains(&n) || l.body_texts().iter().any(|t| t.contains(&n))
        }
        // Keys of extensions we do not advertise (WITHIN, CONDSTORE) never match.
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// FROM, TO, CC and BCC (RFC 3501 §6.4.4: "the envelope structure's ... field") match the
/// address list as parsed, not the raw header: [`address_text`] of each field, so that
/// `<user (comment)@ (comment) domain.org>` is found by `user@domain.org` and not by `comment`
/// (Dovecot does the same; imaptest `search-addresses`).
fn address_contains(l: &mut Lazy<'_>, name: &[u8], s: &impl AsRef<[u8]>) -> bool {
    let n = needle(s);
    let Some(c) = l.cached() else {
        return false;
    };
    mime::fields(&c.header)
        .filter(|(f, _, _)| f.eq_ignore_ascii_case(name))
        .any(|(_, v, _)| address_text(&mime::unfold(v)).contains(&n))
}

/// An address list as the lower-cased text SEARCH matches: `name <local@domain>` (the name
/// RFC 2047-decoded) or `local@domain` per address, `group: ...;` for groups, comments and
/// quoting gone. The same parser as ENVELOPE ([`envelope::parse_addresses`]).
pub fn address_text(v: &[u8]) -> String {
    let mut out = String::new();
    let mut sep = "";
    for a in envelope::parse_addresses(v) {
        match (&a.mailbox, &a.host) {
            (Some(group), None) => {
                out.push_str(sep);
                out.push_str(&String::from_utf8_lossy(group));
                out.push(':');
                sep = " ";
            }
            (None, _) => {
                out.push(';');
                sep = ", ";
            }
            (Some(mailbox), Some(host)) => {
                out.push_str(sep);
                let spec = format!(
                    "{}@{}",
                    String::from_utf8_lossy(mailbox),
                    String::from_utf8_lossy(host)
                );
                match &a.name {
                    Some(name) => {
                        out.push_str(&decode_words(name));
                        out.push_str(" <");
                        out.push_str(&spec);
                        out.push('>');
                    }
                    None => out.push_str(&spec),
                }
                sep = ", ";
            }
        }
    }
    out.to_lowercase()
}

fn field_contains(l: &mut Lazy<'_>, name: &[u8], s: &impl AsRef<[u8]>) -> bool {
    let n = needle(s);
    l.field_texts(name).iter().any(|t| t.contains(&n))
}

/// The messages (of `msgs`) that match `key`, as (seq, uid) pairs in order.
pub fn run(store: &Store, key: &SearchKey<'_>, scope: &Scope, msgs: &[Msg]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut sets = SetCache::default();
    for msg in msgs {
        let mut l = Lazy {
            store,
            msg,
            sets: &mut sets,
            cached: None,
            body_texts: None,
        };
        if eval(key, scope, &mut l) {
            out.push((msg.seq, msg.meta.uid));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 1 (issue 11): an over-deep message is searched as raw text, never parsed.
    #[test]
    fn over_deep_message_body_is_its_raw_text() {
        let mut m = b"Subject: top\r\n\r\n".to_vec();
        for _ in 0..40_000 {
            m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        m.extend_from_slice(b"NEEDLE\r\n");
        let t = body_texts(&m);
        assert_eq!(t.len(), 1);
        assert!(t[0].ends_with("needle\r\n"));
        assert!(!t[0].contains("subject"));
        // A normal message: its decoded text parts.
        let t = body_texts(b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n");
        assert_eq!(t, vec!["hello".to_string()]);
    }

    #[test]
    fn sequence_sets_as_merged_ranges() {
        let set = SequenceSet::try_from("7,1:3,*,2:4,10:9").unwrap();
        assert_eq!(ranges(&set, 20), vec![(1, 4), (7, 7), (9, 10), (20, 20)]);
        let mut c = SetCache::default();
        let hits: Vec<u32> = (1..=21).filter(|&n| c.contains(&set, n, 20)).collect();
        assert_eq!(hits, vec![1, 2, 3, 4, 7, 9, 10, 20]);
    }

    #[test]
    fn addresses_as_searched() {
        let t = address_text(b"<user-from (comment)@ (comment) domain.org>");
        assert_eq!(t, "user-from@domain.org");
        assert_eq!(
            address_text(b"=?UTF-8?B?0KLQtdGB0YI=?= <T@x.kz>, u@y.kz (Real)"),
            "тест <t@x.kz>, real <u@y.kz>"
        );
        assert_eq!(
            address_text(b"groupname: g1@d.org, g2@d.org;, groupname2: g3@d.org;"),
            "groupname: g1@d.org, g2@d.org;, groupname2: g3@d.org;"
        );
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words(b"=?UTF-8?B?0KLQtdGB0YI=?= x"), "Тест x");
        assert_eq!(decode_words(b"=?utf-8?q?a_b=3Dc?="), "a b=c");
        assert_eq!(decode_words(b"=?UTF-8?B?0KI=?= =?UTF-8?B?0LU=?="), "Те");
        assert_eq!(decode_words(b"plain =? text"), "plain =? text");
        assert_eq!(decode_words(b"=?koi8-r?B?9MXT1A==?="), "Тест");
        assert_eq!(decode_words(b"=?x?Q?=Z?="), "=?x?Q?=Z?=");
        // Found by the rfc2047 fuzz target: a space at the end of an encoded word is text.
        assert_eq!(decode_words(b"=?UTF-8?Q?a_?= =?UTF-8?Q?b?="), "a b");
        assert_eq!(decode_words(b"=?UTF-8?Q?a?= \t =?UTF-8?Q?b?= c"), "ab c");
    }
}
