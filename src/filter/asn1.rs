//! Bounded ASN.1 plumbing for the filter: a DER TLV reader that hands out the exact bytes of each
//! element (signatures cover exact bytes, so we never re-encode what was signed), and a BER → DER
//! normaliser for the CMS that streaming signers produce (indefinite lengths, constructed OCTET
//! STRINGs).
//!
//! Every parser here is bounded: nesting depth ([`MAX_DEPTH`]), element count ([`MAX_ELEMENTS`])
//! and lengths (a length longer than the bytes that follow is an error at once, so a header that
//! claims 2 GiB costs nothing). No function here panics on any input.

/// Deepest nesting accepted. CMS with certificates needs about 12 levels; 5,000 nested
/// indefinite lengths (a classic stack-exhaustion attack) stop here.
pub const MAX_DEPTH: usize = 64;

/// Most elements one normalisation may visit.
pub const MAX_ELEMENTS: usize = 200_000;

/// Declares an error type that is one message for people: `pub struct $name(pub String)`,
/// whose `Display` is the message.
macro_rules! message_error {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}
pub(crate) use message_error;

message_error!(
    /// Why bytes are not (acceptable) BER/DER.
    Asn1Error
);

fn err<T>(msg: impl Into<String>) -> Result<T, Asn1Error> {
    Err(Asn1Error(msg.into()))
}

pub const TAG_BOOLEAN: u8 = 0x01;
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_BIT_STRING: u8 = 0x03;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_NULL: u8 = 0x05;
pub const TAG_OID: u8 = 0x06;
pub const TAG_UTF8_STRING: u8 = 0x0C;
pub const TAG_SEQUENCE: u8 = 0x30;
pub const TAG_SET: u8 = 0x31;
pub const TAG_PRINTABLE_STRING: u8 = 0x13;
pub const TAG_T61_STRING: u8 = 0x14;
pub const TAG_IA5_STRING: u8 = 0x16;
pub const TAG_UTC_TIME: u8 = 0x17;
pub const TAG_GENERALIZED_TIME: u8 = 0x18;
pub const TAG_UNIVERSAL_STRING: u8 = 0x1C;
pub const TAG_BMP_STRING: u8 = 0x1E;

/// One DER element: its identifier octet(s), its contents, and its whole encoding.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    /// The first identifier octet (class, constructed bit, low tag number). High tag numbers
    /// (`0x1F`) are accepted structurally; their number is not kept.
    pub tag: u8,
    /// The contents octets.
    pub value: &'a [u8],
    /// The whole element: identifier, length and contents.
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    pub fn is_constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }

    /// Context-specific tag number `n` (either form), e.g. `[0]`.
    pub fn is_context(&self, n: u8) -> bool {
        self.tag & 0xC0 == 0x80 && self.tag & 0x1F == n
    }

    /// The children of a constructed element.
    pub fn children(&self) -> Result<Vec<Tlv<'a>>, Asn1Error> {
        if !self.is_constructed() {
            return err("expected a constructed element");
        }
        read_all(self.value)
    }

    /// A reader over the contents.
    pub fn reader(&self) -> Reader<'a> {
        Reader::new(self.value)
    }
}

/// Reads consecutive DER elements from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next element without consuming it.
    pub fn peek(&self) -> Option<Tlv<'a>> {
        let rest = self.data.get(self.pos..)?;
        parse_definite(rest).ok().map(|(tlv, _)| tlv)
    }

    /// The next element.
    pub fn next_tlv(&mut self) -> Result<Tlv<'a>, Asn1Error> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return err("unexpected end of data");
        }
        let (tlv, used) = parse_definite(rest)?;
        self.pos += used;
        Ok(tlv)
    }

    /// The next element, which must carry `tag`.
    pub fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, Asn1Error> {
        let t = self
            .next_tlv()
            .map_err(|e| Asn1Error(format!("{what}: {e}")))?;
        if t.tag != tag {
            return err(format!("{what}: unexpected tag 0x{:02x}", t.tag));
        }
        Ok(t)
    }

    /// The next element if it carries `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, Asn1Error> {
        match self.peek() {
            Some(t) if t.tag == tag => self.next_tlv().map(Some),
            _ => Ok(None),
        }
    }

    /// A `BOOLEAN DEFAULT FALSE`: the next element if it is a BOOLEAN (any non-zero octet is
    /// true), else false.
    pub fn optional_bool(&mut self) -> Result<bool, Asn1Error> {
        Ok(self
            .optional(TAG_BOOLEAN)?
            .is_some_and(|b| b.value.first().is_some_and(|&v| v != 0)))
    }
}

/// Offset of `inner` within `outer` (both slices of the same buffer).
pub fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Byte range `(start, end)` of `inner` within `outer` (both slices of the same buffer).
pub fn range_in(outer: &[u8], inner: &[u8]) -> (usize, usize) {
    let start = offset_in(outer, inner);
    (start, start + inner.len())
}

/// Parses all elements of `data` (DER, definite lengths).
pub fn read_all(data: &[u8]) -> Result<Vec<Tlv<'_>>, Asn1Error> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.next_tlv()?);
        if out.len() > MAX_ELEMENTS {
            return err("too many elements");
        }
    }
    Ok(out)
}

/// Parses exactly one element that spans all of `data`.
pub fn parse_one(data: &[u8]) -> Result<Tlv<'_>, Asn1Error> {
    let (tlv, used) = parse_definite(data)?;
    if used != data.len() {
        return err("trailing bytes after the element");
    }
    Ok(tlv)
}

/// Identifier and length of the element at the start of `data`:
/// (first identifier octet, header length, content length or None when indefinite).
fn header(data: &[u8]) -> Result<(u8, usize, Option<usize>), Asn1Error> {
    let Some(&tag) = data.first() else {
        return err("unexpected end of data");
    };
    let mut pos = 1;
    if tag & 0x1F == 0x1F {
        // High tag number form: base-128 digits, bounded.
        loop {
            let Some(&b) = data.get(pos) else {
                return err("truncated tag");
            };
            pos += 1;
            if b & 0x80 == 0 {
                break;
            }
            if pos > 6 {
                return err("tag number too large");
            }
        }
    }
    let Some(&first) = data.get(pos) else {
        return err("truncated length");
    };
    pos += 1;
    if first < 0x80 {
        return Ok((tag, pos, Some(first as usize)));
    }
    if first == 0x80 {
        return Ok((tag, pos, None));
    }
    let n = (first & 0x7F) as usize;
    if n > 4 {
        return err("length field too long");
    }
    let mut len: usize = 0;
    for _ in 0..n {
        let Some(&b) = data.get(pos) else {
            return err("truncated length");
        };
        pos += 1;
        len = (len << 8) | b as usize;
    }
    Ok((tag, pos, Some(len)))
}

/// One definite-length element at the start of `data`; returns it and the bytes it used.
fn parse_definite(data: &[u8]) -> Result<(Tlv<'_>, usize), Asn1Error> {
    let (tag, hlen, len) = header(data)?;
    let Some(len) = len else {
        return err("indefinite length in DER");
    };
    let end = hlen
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| Asn1Error(format!("length {len} runs past the end of the data")))?;
    Ok((
        Tlv {
            tag,
            value: &data[hlen..end],
            raw: &data[..end],
        },
        end,
    ))
}

/// Appends a DER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encodes one element.
pub fn encode(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    out.push(tag);
    push_len(&mut out, value.len());
    out.extend_from_slice(value);
    out
}

/// Converts BER to DER as far as structure goes: indefinite lengths become definite, lengths
/// become minimal, and constructed string types (OCTET STRING, BIT STRING, character strings)
/// are flattened into primitive ones. Contents of primitive elements are copied as they are.
/// DER input comes out byte-identical. Trailing bytes after the first element are ignored (mail
/// transports pad attachments).
pub fn ber_to_der(input: &[u8]) -> Result<Vec<u8>, Asn1Error> {
    let mut n = Normaliser { input, elements: 0 };
    let mut out = Vec::with_capacity(input.len());
    n.element(0, 0, &mut out)?;
    Ok(out)
}

/// [`ber_to_der`] without the copy when there is nothing to convert: the input's first element
/// borrowed when it is already DER as far as [`ber_to_der`] goes (definite, minimal lengths;
/// no constructed strings), else the converted copy. The result is always byte-identical to
/// [`ber_to_der`]'s, errors included (anything the check does not accept goes through the
/// conversion). NCA RK and most signers send DER, so the usual case costs one walk over the
/// headers and no allocation (issue 18).
pub fn normalise(input: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Asn1Error> {
    let mut elements = 0;
    match der_end(input, 0, 0, &mut elements) {
        Some(end) => Ok(std::borrow::Cow::Borrowed(&input[..end])),
        None => ber_to_der(input).map(std::borrow::Cow::Owned),
    }
}

/// The end of the element at `pos` when [`Normaliser::element`] would copy it unchanged and
/// succeed: the same bounds (depth, element count) and the same checks, and only the forms it
/// leaves as they are. `None` for anything else (BER to convert, or an error to report).
fn der_end(input: &[u8], pos: usize, depth: usize, elements: &mut usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    *elements += 1;
    if *elements > MAX_ELEMENTS {
        return None;
    }
    let data = input.get(pos..)?;
    let (tag, hlen, len) = header(data).ok()?;
    let len = len?;
    if tag == 0 && len == 0 {
        return None;
    }
    // The length as the conversion would write it (minimal) must be the one given.
    // Short form below 0x80, else the long form without leading zero octets (what `push_len`
    // writes; `header` read at most four length octets).
    let tag_len = hlen_tag_len(data, hlen);
    let minimal = if len < 0x80 {
        hlen - tag_len == 1
    } else {
        data.get(tag_len + 1).is_some_and(|&b| b != 0)
    };
    if !minimal {
        return None;
    }
    let content_start = pos + hlen;
    let end = content_start
        .checked_add(len)
        .filter(|&e| e <= input.len())?;
    if tag & 0x20 == 0 {
        return Some(end);
    }
    if is_string_type(tag) {
        return None;
    }
    let mut cur = content_start;
    while cur < end {
        cur = der_end(input, cur, depth + 1, elements)?;
    }
    (cur == end).then_some(end)
}

struct Normaliser<'a> {
    input: &'a [u8],
    elements: usize,
}

/// What one parsed BER element turned into.
struct Parsed {
    /// Index just past the element (including its end-of-contents octets).
    end: usize,
}

impl Normaliser<'_> {
    /// Normalises the element at `pos` into `out`.
    fn element(
        &mut self,
        pos: usize,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<Parsed, Asn1Error> {
        if depth > MAX_DEPTH {
            return err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return err("too many elements");
        }
        let data = self.input.get(pos..).unwrap_or_default();
        let (tag, hlen, len) = header(data)?;
        let tag_bytes = &data[..hlen_tag_len(data, hlen)];
        let constructed = tag & 0x20 != 0;
        let content_start = pos + hlen;
        if tag == 0 && len == Some(0) {
            return err("unexpected end-of-contents");
        }
        if !constructed {
            let Some(len) = len else {
                return err("indefinite length on a primitive element");
            };
            let end = content_start
                .checked_add(len)
                .filter(|&e| e <= self.input.len())
                .ok_or_else(|| Asn1Error(format!("length {len} runs past the end of the data")))?;
            out.extend_from_slice(tag_bytes);
            push_len(out, len);
            out.extend_from_slice(&self.input[content_start..end]);
            return Ok(Parsed { end });
        }
        // Constructed: normalise the children into a buffer, then write a definite header.
        let limit = match len {
            Some(len) => Some(
                content_start
                    .checked_add(len)
                    .filter(|&e| e <= self.input.len())
                    .ok_or_else(|| {
                        Asn1Error(format!("length {len} runs past the end of the data"))
                    })?,
            ),
            None => None,
        };
        let flatten = is_string_type(tag);
        let mut body = Vec::new();
        let mut cur = content_start;
        loop {
            match limit {
                Some(l) if cur == l => break,
                Some(l) if cur > l => return err("child element runs past its parent"),
                _ => {}
            }
            if limit.is_none() {
                match self.input.get(cur..cur + 2) {
                    Some([0, 0]) => {
                        cur += 2;
                        break;
                    }
                    Some(_) => {}
                    None => return err("missing end-of-contents"),
                }
            }
            if flatten {
                let mut child = Vec::new();
                let p = self.element(cur, depth + 1, &mut child)?;
                // The child is a (now primitive) string segment: keep its contents only.
                let seg = parse_one(&child)?;
                if seg.tag & !0x20 != tag & !0x20 {
                    return err("constructed string with a segment of another type");
                }
                if tag & !0x20 == TAG_BIT_STRING {
                    // Each segment has its own unused-bits octet; only the last may be non-zero.
                    match seg.value.split_first() {
                        Some((_, rest)) if body.is_empty() => {
                            body.push(0);
                            body.extend_from_slice(rest);
                        }
                        Some((_, rest)) => body.extend_from_slice(rest),
                        None => return err("empty BIT STRING segment"),
                    }
                    if let (Some(first), Some(u)) = (body.first_mut(), seg.value.first()) {
                        *first = *u;
                    }
                } else {
                    body.extend_from_slice(seg.value);
                }
                cur = p.end;
            } else {
                let p = self.element(cur, depth + 1, &mut body)?;
                cur = p.end;
            }
        }
        if flatten {
            // Primitive form of the same type.
            out.push(tag & !0x20);
            out.extend_from_slice(&tag_bytes[1..]);
        } else {
            out.extend_from_slice(tag_bytes);
        }
        push_len(out, body.len());
        out.extend_from_slice(&body);
        Ok(Parsed { end: cur })
    }
}

/// Length of the identifier octets inside a header of length `hlen`.
fn hlen_tag_len(data: &[u8], hlen: usize) -> usize {
    let mut n = 1;
    if data.first().is_some_and(|t| t & 0x1F == 0x1F) {
        while data.get(n).is_some_and(|b| b & 0x80 != 0) {
            n += 1;
        }
        n += 1;
    }
    n.min(hlen)
}

/// Universal string types that BER may send in constructed (segmented) form.
fn is_string_type(tag: u8) -> bool {
    tag & 0xC0 == 0
        && tag & 0x20 != 0
        && matches!(
            tag & 0x1F,
            0x03 | 0x04 | 0x0C | 0x12 | 0x13 | 0x14 | 0x15 | 0x16 | 0x1A | 0x1B | 0x1C | 0x1E
        )
}

/// Decodes an OBJECT IDENTIFIER's contents to dotted form.
pub fn oid_string(value: &[u8]) -> Result<String, Asn1Error> {
    if value.is_empty() || value.len() > 128 {
        return err("bad OBJECT IDENTIFIER length");
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    let mut in_arc = false;
    for &b in value {
        if !in_arc && b == 0x80 {
            return err("non-minimal OBJECT IDENTIFIER arc");
        }
        if acc > (u64::MAX >> 8) {
            return err("OBJECT IDENTIFIER arc too large");
        }
        acc = (acc << 7) | (b & 0x7F) as u64;
        in_arc = true;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
            in_arc = false;
        }
    }
    if in_arc {
        return err("truncated OBJECT IDENTIFIER");
    }
    Ok(arcs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("."))
}

/// Reads an OBJECT IDENTIFIER element to dotted form.
pub fn read_oid(t: &Tlv<'_>) -> Result<String, Asn1Error> {
    if t.tag != TAG_OID {
        return err(format!(
            "expected an OBJECT IDENTIFIER, got tag 0x{:02x}",
            t.tag
        ));
    }
    oid_string(t.value)
}

/// Encodes a dotted OID as a DER element (for tests and fixed constants).
pub fn oid_der(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().ok())
        .collect::<Option<_>>()?;
    if arcs.len() < 2 || arcs[0] > 2 {
        return None;
    }
    let mut body = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7F) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        tmp.reverse();
        body.extend_from_slice(&tmp);
    };
    push(arcs[0] * 40 + arcs[1]);
    for &a in &arcs[2..] {
        push(a);
    }
    Some(encode(TAG_OID, &body))
}

/// The big-endian magnitude of an INTEGER with redundant leading zero octets removed (serial
/// numbers are compared and printed this way).
pub fn integer_bytes(value: &[u8]) -> &[u8] {
    let skip = value
        .iter()
        .take_while(|&&b| b == 0)
        .count()
        .min(value.len().saturating_sub(1));
    &value[skip..]
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A small INTEGER's value (up to 8 octets, non-negative).
pub fn small_uint(t: &Tlv<'_>) -> Result<u64, Asn1Error> {
    if t.tag != TAG_INTEGER || t.value.is_empty() {
        return err("expected an INTEGER");
    }
    if t.value[0] & 0x80 != 0 {
        return err("negative INTEGER");
    }
    let v = integer_bytes(t.value);
    if v.len() > 8 {
        return err("INTEGER too large");
    }
    Ok(v.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// Parses UTCTime or GeneralizedTime contents (the `Z` forms DER and CMS use, with optional
/// seconds and fractions) to seconds since the Unix epoch.
pub fn read_time(t: &Tlv<'_>) -> Result<i64, Asn1Error> {
    let s = std::str::from_utf8(t.value).map_err(|_| Asn1Error("time is not ASCII".into()))?;
    let (year, rest) = match t.tag {
        TAG_UTC_TIME => {
            let yy: i64 = num(s.get(0..2))?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..))
        }
        TAG_GENERALIZED_TIME => (num(s.get(0..4))?, s.get(4..)),
        _ => return err("expected UTCTime or GeneralizedTime"),
    };
    let rest = rest.unwrap_or_default();
    let month: i64 = num(rest.get(0..2))?;
    let day: i64 = num(rest.get(2..4))?;
    let hour: i64 = num(rest.get(4..6))?;
    let min: i64 = num(rest.get(6..8))?;
    let mut tail = rest.get(8..).unwrap_or_default();
    let mut sec = 0;
    if tail.len() >= 2 && tail.as_bytes()[0].is_ascii_digit() {
        sec = num(tail.get(0..2))?;
        tail = &tail[2..];
    }
    if let Some(frac) = tail.strip_prefix(['.', ',']) {
        let digits = frac.bytes().take_while(|b| b.is_ascii_digit()).count();
        tail = &frac[digits..];
    }
    let offset = match tail {
        "Z" => 0,
        t if (t.starts_with('+') || t.starts_with('-')) && t.len() == 5 => {
            let h: i64 = num(t.get(1..3))?;
            let m: i64 = num(t.get(3..5))?;
            let o = h * 3600 + m * 60;
            if t.starts_with('+') {
                o
            } else {
                -o
            }
        }
        _ => return err(format!("unsupported time form {s:?}")),
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return err(format!("invalid time {s:?}"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

fn num(s: Option<&str>) -> Result<i64, Asn1Error> {
    let s = s.ok_or_else(|| Asn1Error("truncated time".into()))?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return err("non-digit in time");
    }
    s.parse()
        .map_err(|_| Asn1Error("bad number in time".into()))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_is_unchanged() {
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xAA];
        assert_eq!(ber_to_der(&der).unwrap(), der);
    }

    #[test]
    fn indefinite_and_segmented_strings() {
        // SEQUENCE(indef) { OCTET STRING(constructed, indef) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x00,
            0x00,
        ];
        assert_eq!(
            ber_to_der(&ber).unwrap(),
            [0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn non_minimal_length_is_fixed() {
        let ber = [0x04, 0x81, 0x01, 0x41];
        assert_eq!(ber_to_der(&ber).unwrap(), [0x04, 0x01, 0x41]);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ber = Vec::new();
        for _ in 0..5000 {
            ber.extend_from_slice(&[0x30, 0x80]);
        }
        for _ in 0..5000 {
            ber.extend_from_slice(&[0, 0]);
        }
        let e = ber_to_der(&ber).unwrap_err();
        assert!(e.0.contains("nesting"), "{e}");
    }

    #[test]
    fn huge_length_is_refused_at_once() {
        let ber = [0x30, 0x84, 0x80, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00];
        assert!(ber_to_der(&ber).is_err());
        assert!(parse_one(&ber).is_err());
    }

    #[test]
    fn truncated_is_refused() {
        assert!(ber_to_der(&[0x30, 0x80, 0x02, 0x01]).is_err());
        assert!(ber_to_der(&[0x30, 0x80, 0x02, 0x01, 0x00]).is_err());
        assert!(ber_to_der(&[]).is_err());
        assert!(ber_to_der(&[0x1F]).is_err());
    }

    /// `normalise` borrows exactly when `ber_to_der` would copy unchanged, and otherwise gives
    /// its result or its error: on real CMS (DER and BER), the cases above, and every single-byte
    /// change of a DER CMS.
    #[test]
    fn normalise_agrees_with_ber_to_der() {
        use std::borrow::Cow;
        let nca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/cms/");
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for entry in std::fs::read_dir(nca).unwrap() {
            let raw = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(bin) = crate::filter::cms::decode_input(&raw) {
                inputs.push(bin);
            }
        }
        let der_cms = inputs
            .iter()
            .find(|b| ber_to_der(b).is_ok_and(|d| d == **b))
            .expect("a DER sample")
            .clone();
        let mut der_samples = 0;
        for input in &inputs {
            let n = normalise(input).unwrap();
            assert_eq!(*n, ber_to_der(input).unwrap()[..]);
            if matches!(n, Cow::Borrowed(_)) {
                der_samples += 1;
            }
        }
        assert!(der_samples > 0, "some samples are DER");
        let small: [&[u8]; 9] = [
            &[0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xAA],
            &[
                0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
            ],
            &[0x04, 0x81, 0x01, 0x41],
            &[0x30, 0x84, 0x80, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00],
            &[0x30, 0x80, 0x02, 0x01],
            &[0x30, 0x03, 0x02, 0x01, 0x00, 0xFF, 0xFF],
            &[0x24, 0x03, 0x04, 0x01, 0x41],
            &[0x30, 0x02, 0x00, 0x00],
            &[0x1F],
        ];
        for input in small.iter().copied().chain([der_cms.as_slice()]) {
            match (normalise(input), ber_to_der(input)) {
                (Ok(a), Ok(b)) => assert_eq!(*a, b[..]),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} vs {b:?} for {input:02x?}"),
            }
        }
        let mut changed = der_cms.clone();
        for i in 0..der_cms.len().min(600) {
            for v in [
                0x00,
                0x80,
                0xFF,
                der_cms[i] ^ 0x20,
                der_cms[i].wrapping_add(1),
            ] {
                changed[i] = v;
                match (normalise(&changed), ber_to_der(&changed)) {
                    (Ok(a), Ok(b)) => assert_eq!(*a, b[..], "byte {i} = {v:02x}"),
                    (Err(a), Err(b)) => assert_eq!(a, b, "byte {i} = {v:02x}"),
                    (a, b) => panic!("byte {i} = {v:02x}: {a:?} vs {b:?}"),
                }
            }
            changed[i] = der_cms[i];
        }
    }

    #[test]
    fn oids_round_trip() {
        for s in ["1.2.840.113549.1.7.2", "1.2.398.3.10.1.1.2.3.2", "2.5.4.3"] {
            let der = oid_der(s).unwrap();
            let t = parse_one(&der).unwrap();
            assert_eq!(read_oid(&t).unwrap(), s);
        }
    }

    #[test]
    fn times() {
        let t = Tlv {
            tag: TAG_UTC_TIME,
            value: b"220928144030Z",
            raw: b"",
        };
        assert_eq!(read_time(&t).unwrap(), 1_664_376_030);
        let g = Tlv {
            tag: TAG_GENERALIZED_TIME,
            value: b"20220928144030Z",
            raw: b"",
        };
        assert_eq!(read_time(&g).unwrap(), 1_664_376_030);
        let bad = Tlv {
            tag: TAG_UTC_TIME,
            value: b"2209",
            raw: b"",
        };
        assert!(read_time(&bad).is_err());
    }
}
