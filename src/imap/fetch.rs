//! Rendering one message's FETCH response (RFC 3501 §6.4.5, §7.4.2) from its store metadata,
//! its cached structure ([`mime::Cached`]) and, only when an item needs message bytes, the blob.
//!
//! The structure is parsed on the first FETCH that needs it and cached in the store, so
//! ENVELOPE, BODYSTRUCTURE and top-level HEADER.FIELDS never read or parse the message again.

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{IString, LiteralMode, NString, NString8, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::envelope::{Address, Envelope as ImapEnvelope};
use imap_codec::imap_types::extensions::binary::Literal8;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::IntoStatic;

use super::envelope::{Addr, Envelope};
use super::mime::{self, Cached, Kind, Part};
use super::response::{self, istring, nstring};
use crate::store::{MessageMeta, Store};

/// What a FETCH command asks for, and what it takes to answer it.
pub struct Plan {
    pub items: Vec<MessageDataItemName<'static>>,
    /// Some item needs the parsed structure (cache).
    pub need_struct: bool,
    /// Some item needs the message bytes.
    pub need_blob: bool,
    /// BODY[...] without PEEK, RFC822 or RFC822.TEXT: sets \Seen (RFC 3501 §6.4.5).
    pub sets_seen: bool,
    /// CONDSTORE is enabled: FLAGS added because of an implicit \Seen come with MODSEQ
    /// (RFC 7162 §3.1: every flag change a FETCH reports carries its modseq).
    pub condstore: bool,
}

impl Plan {
    /// `Err(reason)` for items we do not offer.
    pub fn new(names: MacroOrMessageDataItemNames<'_>, uid: bool) -> Result<Plan, &'static str> {
        let mut items: Vec<MessageDataItemName<'static>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(IntoStatic::into_static)
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => {
                v.into_iter().map(IntoStatic::into_static).collect()
            }
        };
        // RFC 3501 §6.4.8: UID FETCH always returns the UID.
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        let mut plan = Plan {
            items,
            need_struct: false,
            need_blob: false,
            sets_seen: false,
            condstore: false,
        };
        for it in &plan.items {
            use MessageDataItemName as N;
            match it {
                N::Body | N::BodyStructure | N::Envelope | N::Rfc822Header => {
                    plan.need_struct = true
                }
                N::Rfc822 => {
                    plan.need_blob = true;
                    plan.sets_seen = true;
                }
                N::Rfc822Text => {
                    plan.need_struct = true;
                    plan.need_blob = true;
                    plan.sets_seen = true;
                }
                N::BodyExt { section, peek, .. } => {
                    if !peek {
                        plan.sets_seen = true;
                    }
                    match section {
                        None => plan.need_blob = true,
                        Some(
                            Section::Header(None)
                            | Section::HeaderFields(None, _)
                            | Section::HeaderFieldsNot(None, _),
                        ) => plan.need_struct = true,
                        Some(_) => {
                            plan.need_struct = true;
                            plan.need_blob = true;
                        }
                    }
                }
                // RFC 3516 §4.2: BINARY without PEEK sets \Seen like BODY[].
                N::Binary { peek, .. } => {
                    plan.sets_seen |= !peek;
                    plan.need_struct = true;
                    plan.need_blob = true;
                }
                N::BinarySize { .. } => {
                    plan.need_struct = true;
                    plan.need_blob = true;
                }
                N::Flags | N::InternalDate | N::Rfc822Size | N::Uid | N::ModSeq => {}
                #[allow(unreachable_patterns)]
                _ => return Err("Unsupported FETCH item"),
            }
        }
        Ok(plan)
    }

    pub fn has_flags(&self) -> bool {
        self.items.contains(&MessageDataItemName::Flags)
    }

    /// Adds MODSEQ unless asked for already (RFC 7162 §3.1.4.1: FETCH CHANGEDSINCE implies it).
    pub fn add_modseq(&mut self) {
        if !self.has_modseq() {
            self.items.push(MessageDataItemName::ModSeq);
        }
    }

    pub fn has_modseq(&self) -> bool {
        self.items.contains(&MessageDataItemName::ModSeq)
    }
}

/// One message to render.
#[derive(Clone)]
pub struct Job {
    pub seq: u32,
    pub meta: MessageMeta,
    pub recent: bool,
    /// Include FLAGS even if not asked for (they just changed through an implicit \Seen).
    pub add_flags: bool,
}

/// The cached structure of a blob, parsing (and caching) it on a miss. `blob`: the bytes if the
/// caller already has them.
pub fn structure(store: &Store, blob_id: u64, blob: Option<&[u8]>) -> Option<Cached> {
    if let Ok(Some(raw)) = store.blob_cache(blob_id) {
        if let Some(c) = Cached::decode(&raw) {
            return Some(c);
        }
    }
    let owned;
    let data: &[u8] = match blob {
        Some(b) => b,
        None => {
            owned = store.blob(blob_id).ok()??;
            &owned
        }
    };
    let c = mime::parse(data);
    if let Err(e) = store.put_blob_cache(blob_id, &c.encode()) {
        tracing::warn!("imap: caching the structure of blob {blob_id} failed: {e}");
    }
    Some(c)
}

/// Why a BINARY item cannot be answered (RFC 3516 §4.3: the whole FETCH fails with NO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryError {
    /// A Content-Transfer-Encoding we do not know (`NO [UNKNOWN-CTE]`).
    UnknownCte,
    /// base64 or quoted-printable that does not decode.
    Undecodable,
}

/// Appends the encoded `* seq FETCH (...)` response to `out` (nothing when the message is
/// gone), or says why a BINARY item could not be decoded. The response is encoded while the
/// body is read, and appended after the body is gone, piece by piece: a FETCH of a body holds
/// it about twice at most (the body and its encoding, then the encoding and `out`), not three
/// times (docs/benchmarks.md, "Memory of one large body").
pub fn render_checked(
    store: &Store,
    plan: &Plan,
    job: &Job,
    out: &mut Vec<u8>,
) -> Result<(), BinaryError> {
    let failed = std::cell::Cell::new(None);
    let pieces = render_inner(store, plan, job, &failed);
    if let Some(e) = failed.get() {
        return Err(e);
    }
    for piece in pieces.into_iter().flatten() {
        out.extend_from_slice(&piece);
    }
    Ok(())
}

fn render_inner(
    store: &Store,
    plan: &Plan,
    job: &Job,
    failed: &std::cell::Cell<Option<BinaryError>>,
) -> Option<Vec<Vec<u8>>> {
    let blob = if plan.need_blob {
        Some(store.blob(job.meta.blob_id).ok()??)
    } else {
        None
    };
    let cached = if plan.need_struct {
        Some(structure(store, job.meta.blob_id, blob.as_deref())?)
    } else {
        None
    };
    let blob: Option<&[u8]> = blob.as_deref();
    let cached = cached.as_ref();
    let m = &job.meta;
    let mut items: Vec<MessageDataItem<'_>> = Vec::with_capacity(plan.items.len() + 1);
    // The origin of each partial BINARY item, by position (see `with_origins`).
    let mut origins: Vec<Option<u32>> = Vec::new();
    for name in &plan.items {
        use MessageDataItemName as N;
        let mut origin = None;
        let item = match name {
            N::Uid => MessageDataItem::Uid(NonZeroU32::new(m.uid)?),
            N::Flags => MessageDataItem::Flags(response::flag_fetch(&m.flags, job.recent)),
            N::InternalDate => MessageDataItem::InternalDate(internal_date(m.internal_date)),
            N::Rfc822Size => MessageDataItem::Rfc822Size(m.size.min(u32::MAX as u64) as u32),
            N::ModSeq => MessageDataItem::ModSeq(std::num::NonZeroU64::new(m.modseq)?),
            N::Envelope => MessageDataItem::Envelope(envelope(&cached?.envelope)),
            N::Body => MessageDataItem::Body(body_structure(&cached?.root, false)),
            N::BodyStructure => MessageDataItem::BodyStructure(body_structure(&cached?.root, true)),
            N::Rfc822 => MessageDataItem::Rfc822(response::literal(blob?)),
            N::Rfc822Header => MessageDataItem::Rfc822Header(response::literal(&cached?.header)),
            N::Rfc822Text => {
                let body = blob?.get(cached?.root.body_range())?;
                MessageDataItem::Rfc822Text(response::literal(body))
            }
            N::BodyExt {
                section, partial, ..
            } => {
                let data = section_bytes(section.as_ref(), cached, blob);
                let data = match (data, partial) {
                    (None, _) => NString(None),
                    (Some(d), None) => owned_literal(d),
                    (Some(d), Some((origin, len))) => {
                        let from = (*origin as usize).min(d.len());
                        let to = from.saturating_add(len.get() as usize).min(d.len());
                        owned_literal(match d {
                            Cow::Borrowed(b) => Cow::Borrowed(&b[from..to]),
                            Cow::Owned(b) => Cow::Owned(b[from..to].to_vec()),
                        })
                    }
                };
                MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: partial.map(|p| p.0),
                    data,
                }
            }
            N::Binary {
                section, partial, ..
            } => {
                let data = match binary_bytes(section, cached, blob) {
                    Err(e) => {
                        failed.set(Some(e));
                        return None;
                    }
                    Ok(d) => d,
                };
                origin = partial.map(|p| p.0);
                let value = match (data, partial) {
                    (None, _) => NString8::NString(NString(None)),
                    (Some(d), None) => nstring8(d),
                    (Some(d), Some((origin, len))) => {
                        let from = (*origin as usize).min(d.len());
                        let to = from.saturating_add(len.get() as usize).min(d.len());
                        nstring8(Cow::Owned(d[from..to].to_vec()))
                    }
                };
                MessageDataItem::Binary {
                    section: section.clone(),
                    value,
                }
            }
            N::BinarySize { section } => match binary_bytes(section, cached, blob) {
                Err(e) => {
                    failed.set(Some(e));
                    return None;
                }
                Ok(d) => MessageDataItem::BinarySize {
                    section: section.clone(),
                    size: d.map(|d| d.len()).unwrap_or(0).min(u32::MAX as usize) as u32,
                },
            },
            #[allow(unreachable_patterns)]
            _ => continue,
        };
        items.push(item);
        origins.push(origin);
    }
    if job.add_flags && !plan.has_flags() {
        items.push(MessageDataItem::Flags(response::flag_fetch(
            &m.flags, job.recent,
        )));
        origins.push(None);
    }
    let seq = NonZeroU32::new(job.seq)?;
    if origins.iter().any(Option::is_some) {
        return Some(vec![with_origins(seq, items, &origins)]);
    }
    if job.add_flags && plan.condstore && !plan.has_modseq() {
        if let Some(ms) = std::num::NonZeroU64::new(m.modseq) {
            items.push(MessageDataItem::ModSeq(ms));
        }
    }
    let items = Vec1::try_from(items).ok()?;
    Some(response::data_pieces(Data::Fetch { seq, items }))
}

/// A FETCH response with partial BINARY items, which RFC 3516 §4.2 answers as
/// `BINARY[section]<origin>` and imap-types cannot express: each item is encoded on its own by
/// imap-codec and the origin inserted after its section, whose `]` is the first one of the
/// item's encoding (`BINARY[1.2]`), before any data.
fn with_origins(
    seq: NonZeroU32,
    items: Vec<MessageDataItem<'_>>,
    origins: &[Option<u32>],
) -> Vec<u8> {
    let head = format!("* {seq} FETCH (");
    let mut out = head.clone().into_bytes();
    for (i, item) in items.into_iter().enumerate() {
        let enc = response::data(Data::Fetch {
            seq,
            items: Vec1::from(item),
        });
        let inner = enc
            .get(head.len()..enc.len().saturating_sub(3))
            .unwrap_or_default();
        if i > 0 {
            out.push(b' ');
        }
        match (
            origins.get(i).copied().flatten(),
            memchr::memchr(b']', inner),
        ) {
            (Some(o), Some(close)) => {
                out.extend_from_slice(&inner[..=close]);
                out.extend_from_slice(format!("<{o}>").as_bytes());
                out.extend_from_slice(&inner[close + 1..]);
            }
            _ => out.extend_from_slice(inner),
        }
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// Decoded bytes as a literal8 when they hold a NUL (RFC 3516 §4.3), else a plain literal.
fn nstring8(d: Cow<'_, [u8]>) -> NString8<'static> {
    if d.contains(&0) {
        NString8::Literal8(Literal8 {
            data: Cow::Owned(d.into_owned()),
            mode: LiteralMode::Sync,
        })
    } else {
        NString8::NString(owned_literal(d).into_static())
    }
}

/// The content of `BINARY[section]` (RFC 3516 §4.2): the part's body with its
/// Content-Transfer-Encoding undone; `BINARY[]` is the whole message as stored. `Ok(None)`:
/// no such part.
fn binary_bytes<'a>(
    section: &[NonZeroU32],
    cached: Option<&'a Cached>,
    blob: Option<&'a [u8]>,
) -> Result<Option<Cow<'a, [u8]>>, BinaryError> {
    let (Some(cached), Some(blob)) = (cached, blob) else {
        return Ok(None);
    };
    if section.is_empty() {
        return Ok(Some(Cow::Borrowed(blob)));
    }
    let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
    let Some(part) = mime::resolve(&cached.root, &path) else {
        return Ok(None);
    };
    let Some(body) = blob.get(part.body_range()) else {
        return Ok(None);
    };
    let enc = part
        .encoding
        .as_deref()
        .map(|e| e.trim_ascii().to_ascii_lowercase())
        .unwrap_or_default();
    match enc.as_slice() {
        b"" | b"7bit" | b"8bit" | b"binary" => Ok(Some(Cow::Borrowed(body))),
        b"base64" => mail_parser::decoders::base64::base64_decode(body)
            .map(|d| Some(Cow::Owned(d)))
            .ok_or(BinaryError::Undecodable),
        b"quoted-printable" => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                .map(|d| Some(Cow::Owned(d)))
                .ok_or(BinaryError::Undecodable)
        }
        _ => Err(BinaryError::UnknownCte),
    }
}

fn owned_literal(d: Cow<'_, [u8]>) -> NString<'_> {
    match d {
        Cow::Borrowed(b) => response::literal(b),
        Cow::Owned(b) => response::literal(&b).into_static(),
    }
}

fn internal_date(unix: i64) -> DateTime {
    let dt = chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .fixed_offset();
    DateTime::try_from(dt).unwrap_or_else(|_| {
        // The epoch is always a valid IMAP date-time.
        DateTime::unvalidated(chrono::DateTime::<chrono::Utc>::default().fixed_offset())
    })
}

/// The bytes of a `BODY[section]` (RFC 3501 §6.4.5); `None` when the section does not exist.
pub fn section_bytes<'a>(
    section: Option<&Section<'_>>,
    cached: Option<&'a Cached>,
    blob: Option<&'a [u8]>,
) -> Option<Cow<'a, [u8]>> {
    let part_of = |p: &imap_codec::imap_types::fetch::Part| -> Option<&'a Part> {
        let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
        mime::resolve(&cached?.root, &path)
    };
    let names_of = |names: &Vec1<imap_codec::imap_types::core::AString<'_>>| -> Vec<Vec<u8>> {
        names.as_ref().iter().map(|n| n.as_ref().to_vec()).collect()
    };
    match section {
        None => blob.map(Cow::Borrowed),
        Some(Section::Header(None)) => Some(Cow::Borrowed(&cached?.header)),
        Some(Section::HeaderFields(None, names)) => Some(Cow::Owned(header_fields(
            &cached?.header,
            &names_of(names),
            false,
        ))),
        Some(Section::HeaderFieldsNot(None, names)) => Some(Cow::Owned(header_fields(
            &cached?.header,
            &names_of(names),
            true,
        ))),
        Some(Section::Text(None)) => blob?.get(cached?.root.body_range()).map(Cow::Borrowed),
        Some(Section::Part(p)) => blob?.get(part_of(p)?.body_range()).map(Cow::Borrowed),
        Some(Section::Mime(p)) => blob?.get(part_of(p)?.header_range()).map(Cow::Borrowed),
        Some(Section::Header(Some(p))) => blob?
            .get(inner_of(part_of(p)?).header_range())
            .map(Cow::Borrowed),
        Some(Section::Text(Some(p))) => blob?
            .get(inner_of(part_of(p)?).body_range())
            .map(Cow::Borrowed),
        Some(Section::HeaderFields(Some(p), names)) => {
            let h = blob?.get(inner_of(part_of(p)?).header_range())?;
            Some(Cow::Owned(header_fields(h, &names_of(names), false)))
        }
        Some(Section::HeaderFieldsNot(Some(p), names)) => {
            let h = blob?.get(inner_of(part_of(p)?).header_range())?;
            Some(Cow::Owned(header_fields(h, &names_of(names), true)))
        }
    }
}

/// For `n.HEADER`/`n.TEXT`: the encapsulated message of a message/rfc822 part; other parts
/// stand for themselves (lenient, like Dovecot).
fn inner_of(p: &Part) -> &Part {
    match &p.kind {
        Kind::Message(_, inner) => inner,
        _ => p,
    }
}

/// HEADER.FIELDS / HEADER.FIELDS.NOT: the matching fields in their original order and form,
/// then the blank line, which every header fetch includes (RFC 3501 §6.4.5).
pub fn header_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, _, whole) in mime::fields(header) {
        let hit = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if hit != not {
            out.extend_from_slice(whole);
            if !whole.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn addresses(list: &[Addr]) -> Vec<Address<'static>> {
    list.iter()
        .map(|a| Address {
            name: nstring(a.name.as_deref()),
            adl: nstring(a.adl.as_deref()),
            mailbox: nstring(a.mailbox.as_deref()),
            host: nstring(a.host.as_deref()),
        })
        .collect()
}

pub fn envelope(e: &Envelope) -> ImapEnvelope<'static> {
    ImapEnvelope {
        date: nstring(e.date.as_deref()),
        subject: nstring(e.subject.as_deref()),
        from: addresses(&e.from),
        sender: addresses(&e.sender),
        reply_to: addresses(&e.reply_to),
        to: addresses(&e.to),
        cc: addresses(&e.cc),
        bcc: addresses(&e.bcc),
        in_reply_to: nstring(e.in_reply_to.as_deref()),
        message_id: nstring(e.message_id.as_deref()),
    }
}

fn upper(b: &[u8]) -> IString<'static> {
    istring(&b.to_ascii_uppercase())
}

fn params(p: &[(Vec<u8>, Vec<u8>)]) -> Vec<(IString<'static>, IString<'static>)> {
    p.iter().map(|(k, v)| (upper(k), istring(v))).collect()
}

fn disposition(p: &Part) -> Disposition<'static> {
    Disposition {
        disposition: p.disposition.as_ref().map(|(d, ps)| (upper(d), params(ps))),
        tail: Some(Language {
            language: p
                .language
                .as_ref()
                .map(|l| l.iter().map(|x| istring(x)).collect())
                .unwrap_or_default(),
            tail: Some(Location {
                location: nstring(p.location.as_deref()),
                extensions: Vec::new(),
            }),
        }),
    }
}

/// BODY (`ext = false`) or BODYSTRUCTURE (`ext = true`) of an entity (RFC 3501 §7.4.2).
pub fn body_structure(p: &Part, ext: bool) -> BodyStructure<'static> {
    if let Kind::Multipart(children) = &p.kind {
        let bodies: Vec<BodyStructure<'static>> =
            children.iter().map(|c| body_structure(c, ext)).collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: upper(&p.subtype),
                extension_data: ext.then(|| MultiPartExtensionData {
                    parameter_list: params(&p.params),
                    tail: Some(disposition(p)),
                }),
            };
        }
    }
    let basic = BasicFields {
        parameter_list: params(&p.params),
        id: nstring(p.id.as_deref()),
        description: nstring(p.description.as_deref()),
        content_transfer_encoding: match &p.encoding {
            Some(e) if !e.is_empty() => upper(e),
            _ => istring(b"7BIT"),
        },
        size: (p.end - p.body).min(u32::MAX as usize) as u32,
    };
    let specific = match &p.kind {
        Kind::Message(env, inner) => SpecificFields::Message {
            envelope: Box::new(envelope(env)),
            body_structure: Box::new(body_structure(inner, ext)),
            number_of_lines: p.lines,
        },
        _ if p.is_text() => SpecificFields::Text {
            subtype: upper(&p.subtype),
            number_of_lines: p.lines,
        },
        _ => SpecificFields::Basic {
            r#type: upper(&p.ctype),
            subtype: upper(&p.subtype),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: ext.then(|| SinglePartExtensionData {
            md5: nstring(p.md5.as_deref()),
            tail: Some(disposition(p)),
        }),
    }
}
