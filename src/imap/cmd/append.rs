//! APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315). The literal has already been received
//! within `imap.max_literal_size` (synchronizing or LITERAL+) by the framer.

use std::num::NonZeroU32;

use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use super::mailbox_name;
use super::store::flag_names;
use crate::imap::response::{CmdResult, Reply};
use crate::imap::session::Session;

pub async fn append(
    s: &mut Session,
    m: &Mailbox<'_>,
    flags: &[Flag<'_>],
    date: Option<&DateTime>,
    message: LiteralOrLiteral8<'_>,
) -> CmdResult {
    let name = mailbox_name(m)?;
    let Some(meta) = s.app.store.mailbox(s.account_id(), &name)? else {
        // RFC 3501 §6.3.11: TRYCREATE tells the client that CREATE would help.
        return Ok(Reply::no("No such mailbox").code(Code::TryCreate));
    };
    let flags = match flag_names(flags) {
        Ok(f) => f,
        Err(r) => return Ok(r),
    };
    let data = match message {
        LiteralOrLiteral8::Literal(l) => l.into_inner().into_owned(),
        LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
    };
    if data.is_empty() {
        return Ok(Reply::no("Empty messages cannot be stored").other("CANNOT"));
    }
    let internal_date = match date {
        Some(d) => d.as_ref().timestamp(),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let store = s.app.store.clone();
    let id = meta.id;
    let appended =
        tokio::task::spawn_blocking(move || store.append(id, &data, &flags, internal_date))
            .await??;
    super::durable(s).await?;
    let reply = Reply::ok("APPEND completed");
    Ok(
        match (
            NonZeroU32::new(appended.uidvalidity),
            NonZeroU32::new(appended.uid),
        ) {
            (Some(uid_validity), Some(uid)) => reply.code(Code::AppendUid { uid_validity, uid }),
            _ => reply,
        },
    )
}
