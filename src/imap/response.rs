//! Every response we send is built from imap-types values and encoded by imap-codec here; the
//! session never writes protocol text by hand (apart from the `+` continuation of the framer).

use std::num::NonZeroU32;

use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{Atom, IString, Literal, NString, Tag, Text, Vec1};
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagPerm};
use imap_codec::imap_types::response::{
    Capability, Code, CodeOther, Data, Response, Status, StatusKind,
};
use imap_codec::imap_types::IntoStatic;
use imap_codec::ResponseCodec;

use crate::store::StoreError;

/// The outcome of a command: what the tagged response says.
#[derive(Debug, Clone)]
pub struct Reply {
    pub kind: StatusKind,
    pub code: Option<Code<'static>>,
    pub text: String,
    /// The handler has already sent the tagged response (STARTTLS must answer before the
    /// handshake).
    pub sent: bool,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            kind: StatusKind::Ok,
            code: None,
            text: text.into(),
            sent: false,
        }
    }
    pub fn no(text: impl Into<String>) -> Reply {
        Reply {
            kind: StatusKind::No,
            code: None,
            text: text.into(),
            sent: false,
        }
    }
    pub fn bad(text: impl Into<String>) -> Reply {
        Reply {
            kind: StatusKind::Bad,
            code: None,
            text: text.into(),
            sent: false,
        }
    }
    pub fn code(mut self, code: Code<'static>) -> Reply {
        self.code = Some(code);
        self
    }
    /// A response code that imap-types has no variant for (`NONEXISTENT`, RFC 5530).
    pub fn other(self, code: &'static str) -> Reply {
        self.code(Code::Other(CodeOther::unvalidated(code.as_bytes())))
    }
}

/// Errors of a command handler: an answer for the client, or an I/O failure that ends the
/// session.
#[derive(Debug)]
pub enum CmdError {
    Reply(Reply),
    Io(std::io::Error),
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        CmdError::Io(e)
    }
}

impl From<Reply> for CmdError {
    fn from(r: Reply) -> Self {
        CmdError::Reply(r)
    }
}

impl From<StoreError> for CmdError {
    fn from(e: StoreError) -> Self {
        CmdError::Reply(store_error(e))
    }
}

impl From<tokio::task::JoinError> for CmdError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!("imap: worker task failed: {e}");
        CmdError::Reply(Reply::no("Internal error").other("SERVERBUG"))
    }
}

/// How a store error looks to the client (RFC 5530 response codes).
pub fn store_error(e: StoreError) -> Reply {
    match e {
        StoreError::NotFound(what) => Reply::no(format!("No such {what}")).other("NONEXISTENT"),
        StoreError::Exists(what) => {
            Reply::no(format!("{what} already exists")).other("ALREADYEXISTS")
        }
        StoreError::Invalid(why) => Reply::no(why).other("CANNOT"),
        // RFC 5530 §3: OVERQUOTA for a full disk, as Dovecot does for ENOSPC (the client
        // tells the user that there is no room; deleting mail may help); UNAVAILABLE ("a
        // subsystem is down", try again later) for other I/O errors under the store.
        StoreError::Full(why) => {
            tracing::warn!("imap: {why}");
            Reply::no("Not enough disk space, try again later").other("OVERQUOTA")
        }
        StoreError::Unavailable(why) => {
            tracing::error!("imap: store unavailable: {why}");
            Reply::no("Mail store temporarily unavailable, try again later").other("UNAVAILABLE")
        }
        // RFC 9208 §4.3: OVERQUOTA in the tagged NO of an APPEND/COPY/MOVE.
        StoreError::OverQuota(why) => Reply::no(why).code(Code::OverQuota),
        StoreError::Db(why) => {
            tracing::error!("imap: store error: {why}");
            Reply::no("Internal error, try again later").other("SERVERBUG")
        }
    }
}

pub type CmdResult = Result<Reply, CmdError>;

/// Text for a response line: no CR/LF, no leading `[` (it would read as a code), never empty.
pub fn text(s: &str) -> Text<'static> {
    let mut t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if t.starts_with('[') {
        t.insert(0, ' ');
    }
    if t.trim().is_empty() {
        t = "Done".into();
    }
    Text::try_from(t).unwrap_or_else(|_| Text::unvalidated("Done"))
}

pub fn encode(r: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(r).dump()
}

pub fn data(d: Data<'_>) -> Vec<u8> {
    encode(&Response::Data(d))
}

/// [`data`] as imap-codec's pieces (lines and literals), each its own buffer: a caller that
/// appends them one at a time, dropping each, never holds the response twice (a FETCH of a
/// large body: `fetch.rs`).
pub fn data_pieces(d: Data<'_>) -> Vec<Vec<u8>> {
    use imap_codec::encode::Fragment;
    ResponseCodec::default()
        .encode(&Response::Data(d))
        .map(|f| match f {
            Fragment::Line { data } | Fragment::Literal { data, .. } => data,
        })
        .collect()
}

/// A LIST response with RFC 5258's CHILDINFO extended data item, `("CHILDINFO" ("SUBSCRIBED"))`
/// (§3.5). imap-types has no extended items in `Data::List`, so the item is appended to the
/// encoded response: it follows the mailbox name, which ends the line (a literal name included).
pub fn list_with_childinfo(d: Data<'_>, tags: &[&str]) -> Vec<u8> {
    let mut out = data(d);
    if tags.is_empty() || !out.ends_with(b"\r\n") {
        return out;
    }
    out.truncate(out.len() - 2);
    out.extend_from_slice(b" (\"CHILDINFO\" (");
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.push(b'"');
        out.extend_from_slice(t.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"))\r\n");
    out
}

pub fn untagged(kind: StatusKind, code: Option<Code<'_>>, t: &str) -> Vec<u8> {
    let s = match kind {
        StatusKind::Ok => Status::ok(None, code, text(t)),
        StatusKind::No => Status::no(None, code, text(t)),
        StatusKind::Bad => Status::bad(None, code, text(t)),
    };
    match s {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => Vec::new(),
    }
}

pub fn bye(t: &str) -> Vec<u8> {
    match Status::bye(None, text(t)) {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BYE\r\n".to_vec(),
    }
}

/// The tagged response; `tag: None` (an unreadable tag) gives an untagged one (`* BAD`).
pub fn tagged(tag: Option<&Tag<'_>>, r: &Reply) -> Vec<u8> {
    let s = Status::new(tag.cloned(), r.kind, r.code.clone(), text(&r.text));
    match s {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => Vec::new(),
    }
}

/// Our capabilities, exactly what works (SPEC §4): STARTTLS and LOGINDISABLED before TLS,
/// AUTH=PLAIN once TLS is on.
pub fn capabilities(tls: bool) -> Vec1<Capability<'static>> {
    let mut names: Vec<&'static str> = vec!["IMAP4rev1"];
    if tls {
        names.push("AUTH=PLAIN");
    } else {
        names.push("STARTTLS");
        names.push("LOGINDISABLED");
    }
    names.extend([
        "LITERAL+",
        "SASL-IR",
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "SPECIAL-USE",
        "NAMESPACE",
        "ID",
        "ENABLE",
        "UNSELECT",
        "CHILDREN",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "STATUS=SIZE",
        // RFC 7162 (imap/condstore.rs).
        "CONDSTORE",
        "QRESYNC",
        // Issue 16: src/imap/search_ext.rs, sort.rs, thread.rs.
        "ESEARCH",
        "SEARCHRES",
        "SORT",
        "SORT=DISPLAY",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "MULTIAPPEND",
        "BINARY",
        "COMPRESS=DEFLATE",
    ]);
    let caps: Vec<Capability<'static>> = names
        .into_iter()
        .map(|n| match n {
            "IMAP4rev1" => Capability::Imap4Rev1,
            "STARTTLS" => Capability::StartTls,
            "LOGINDISABLED" => Capability::LoginDisabled,
            "AUTH=PLAIN" => Capability::Auth(imap_codec::imap_types::auth::AuthMechanism::Plain),
            other => Capability::from(Atom::unvalidated(other)),
        })
        .collect();
    Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
}

/// `* ESEARCH (TAG "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n]` (RFC 4731 §3.1): MIN, MAX
/// and ALL only when something matched, COUNT always when asked for. Written here because
/// imap-types has no ESEARCH response; a tag has no `"` or `\` (RFC 3501 `tag`), so it quotes
/// as it is.
pub fn esearch(
    tag: &Tag<'_>,
    uid: bool,
    ret: &crate::imap::search_ext::ReturnOpts,
    nums: &[u32],
    modseq: Option<std::num::NonZeroU64>,
) -> Vec<u8> {
    use std::fmt::Write;
    let mut out = format!("* ESEARCH (TAG \"{}\")", tag.as_ref());
    if uid {
        out.push_str(" UID");
    }
    if let (true, Some(min)) = (ret.min, nums.iter().min()) {
        let _ = write!(out, " MIN {min}");
    }
    if let (true, Some(max)) = (ret.max, nums.iter().max()) {
        let _ = write!(out, " MAX {max}");
    }
    if ret.all && !nums.is_empty() {
        let mut sorted = nums.to_vec();
        sorted.sort_unstable();
        let _ = write!(
            out,
            " ALL {}",
            crate::imap::search_ext::sequence_set(&sorted)
        );
    }
    if ret.count {
        let _ = write!(out, " COUNT {}", nums.len());
    }
    // RFC 7162 §3.1.5 (search-return-data "MODSEQ").
    if let Some(m) = modseq {
        let _ = write!(out, " MODSEQ {m}");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `* SORT 3 1 2` (RFC 5256 §4 `sort-data`), written here because the arity of imap-types'
/// `Data::Sort` changes with its CONDSTORE feature.
pub fn numbers(name: &str, nums: &[u32]) -> Vec<u8> {
    use std::fmt::Write;
    let mut out = format!("* {name}");
    for n in nums {
        let _ = write!(out, " {n}");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `* THREAD (1 2)(3)` from the thread lists [`crate::imap::thread`] wrote (digits, spaces
/// and parentheses only).
pub fn thread_data(lists: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lists.len() + 12);
    out.extend_from_slice(b"* THREAD");
    if !lists.is_empty() {
        out.push(b' ');
        out.extend_from_slice(lists);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A flag name from the store as an imap-types flag (`None` for names that are not atoms).
pub fn flag(name: &str) -> Option<Flag<'static>> {
    Flag::try_from(name).ok().map(IntoStatic::into_static)
}

/// FLAGS of a message for FETCH: its stored flags plus `\Recent` when recent in this session.
pub fn flag_fetch(flags: &[String], recent: bool) -> Vec<FlagFetch<'static>> {
    let mut out: Vec<FlagFetch<'static>> = flags
        .iter()
        .filter_map(|f| flag(f))
        .map(FlagFetch::Flag)
        .collect();
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

/// The flags list for `* FLAGS` and PERMANENTFLAGS: system flags, then keywords.
pub fn flag_list(keywords: &[String]) -> Vec<Flag<'static>> {
    let mut out = vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ];
    out.extend(keywords.iter().filter_map(|k| flag(k)));
    out
}

pub fn permanent_flags(keywords: &[String]) -> Vec<FlagPerm<'static>> {
    let mut out: Vec<FlagPerm<'static>> = flag_list(keywords)
        .into_iter()
        .map(FlagPerm::Flag)
        .collect();
    out.push(FlagPerm::Asterisk);
    out
}

/// An IMAP string for arbitrary bytes: quoted when possible, else a literal. NUL, which IMAP
/// cannot carry, becomes 0x80 (as Dovecot does).
pub fn istring(b: &[u8]) -> IString<'static> {
    match IString::try_from(b.to_vec()) {
        Ok(s) => s,
        Err(_) => {
            let cleaned: Vec<u8> = b.iter().map(|&c| if c == 0 { 0x80 } else { c }).collect();
            IString::Literal(Literal::unvalidated(cleaned))
        }
    }
}

pub fn nstring(b: Option<&[u8]>) -> NString<'static> {
    NString(b.map(istring))
}

/// Message data as a literal (BODY[...] and friends), borrowing when the bytes allow it.
pub fn literal(b: &[u8]) -> NString<'_> {
    match Literal::try_from(b) {
        Ok(l) => NString(Some(IString::Literal(l))),
        Err(_) => {
            let cleaned: Vec<u8> = b.iter().map(|&c| if c == 0 { 0x80 } else { c }).collect();
            NString(Some(IString::Literal(Literal::unvalidated(cleaned))))
        }
    }
}

/// Ascending numbers as runs of consecutive ones, `(first, last)` each: `1,2,3,7` gives
/// `(1, 3), (7, 7)`. The one walk behind every set we send (VANISHED, MODIFIED, APPENDUID,
/// COPYUID, `$`).
pub fn runs(nums: &[u32]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = *nums.get(i)?;
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = nums[i];
        }
        i += 1;
        Some((start, end))
    })
}

/// Ascending numbers as set text, consecutive ones as ranges: `1:3,7`. Empty gives "".
pub fn set_text(nums: &[u32]) -> String {
    let mut out = String::new();
    for (start, end) in runs(nums) {
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
    }
    out
}

/// A sequence set of ascending numbers (VANISHED, MODIFIED), consecutive ones as ranges.
pub fn sequence_set(nums: &[u32]) -> Option<imap_codec::imap_types::sequence::SequenceSet> {
    use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
    let mut out: Vec<Sequence> = Vec::new();
    for (start, end) in runs(nums) {
        let s = SeqOrUid::Value(NonZeroU32::new(start)?);
        out.push(if end == start {
            Sequence::Single(s)
        } else {
            Sequence::Range(s, SeqOrUid::Value(NonZeroU32::new(end)?))
        });
    }
    Vec1::try_from(out).ok().map(SequenceSet)
}

/// A UID set for APPENDUID/COPYUID, with consecutive UIDs as ranges.
pub fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let mut out: Vec<UidElement> = Vec::new();
    for (start, end) in runs(uids) {
        let s = NonZeroU32::new(start)?;
        out.push(if end == start {
            UidElement::Single(s)
        } else {
            UidElement::Range(s, NonZeroU32::new(end)?)
        });
    }
    Vec1::try_from(out).ok().map(UidSet)
}
