//! COPY / UID COPY (RFC 3501 §6.4.7) and MOVE / UID MOVE (RFC 6851), with COPYUID (RFC 4315).

use std::num::NonZeroU32;

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, StatusKind};
use imap_codec::imap_types::sequence::SequenceSet;

use super::{mailbox_name, selected};
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::session::Session;

pub async fn copy(
    s: &mut Session,
    set: &SequenceSet,
    m: &Mailbox<'_>,
    uid: bool,
    is_move: bool,
) -> CmdResult {
    let store = s.app.store.clone();
    let name = mailbox_name(m)?;
    let Some(dst) = s.app.store.mailbox(s.account_id(), &name)? else {
        return Ok(Reply::no("No such mailbox").code(Code::TryCreate));
    };
    let sel = selected(s)?;
    if is_move && sel.read_only {
        return Ok(Reply::no("Mailbox is read-only (EXAMINE)").code(Code::ReadOnly));
    }
    let idx = sel.resolve(set, uid);
    let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
    let done = if is_move {
        "MOVE completed"
    } else {
        "COPY completed"
    };
    if uids.is_empty() {
        return Ok(Reply::ok(done));
    }
    let src = sel.id;
    let dst_id = dst.id;
    let st = store.clone();
    let (uidvalidity, pairs) = tokio::task::spawn_blocking(move || {
        if is_move {
            st.move_messages(src, &uids, dst_id)
        } else {
            st.copy_messages(src, &uids, dst_id)
        }
    })
    .await??;
    super::durable(s).await?;
    let code = copyuid(uidvalidity, &pairs);
    if !is_move {
        let reply = Reply::ok(done);
        return Ok(match code {
            Some(c) => reply.code(c),
            None => reply,
        });
    }
    // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
    let mut out = Vec::new();
    if let Some(c) = code {
        out.extend(response::untagged(StatusKind::Ok, Some(c), "Moved UIDs"));
    }
    let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let sel = selected(s)?;
    out.extend(sel.expunge_uids(&moved));
    if dst_id != src {
        sel.absorb_own(&store, moved.len() as u64);
    }
    // Into the selected mailbox itself (RFC 6851 §3.3): the copies are new messages with new
    // UIDs, which the sync after this command reports with EXISTS.
    s.conn.write(&out);
    Ok(Reply::ok(done))
}

fn copyuid(uidvalidity: u32, pairs: &[(u32, u32)]) -> Option<Code<'static>> {
    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    Some(Code::CopyUid {
        uid_validity: NonZeroU32::new(uidvalidity)?,
        source: response::uid_set(&src)?,
        destination: response::uid_set(&dst)?,
    })
}
