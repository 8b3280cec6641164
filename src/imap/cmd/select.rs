//! SELECT and EXAMINE (RFC 3501 §6.3.1-2), CLOSE (§6.4.2), UNSELECT (RFC 3691), CHECK (§6.4.1).

use std::num::NonZeroU32;

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data, StatusKind};

use super::mailbox_name;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, State};

pub async fn select(s: &mut Session, m: &Mailbox<'_>, read_only: bool) -> CmdResult {
    // A SELECT deselects first, whether or not it succeeds (RFC 3501 §6.3.1).
    s.selected = None;
    s.state = State::Authenticated;
    let name = mailbox_name(m)?;
    let account = s.account_id();
    let Some(meta) = s.app.store.mailbox(account, &name)? else {
        return Ok(Reply::no("No such mailbox").other("NONEXISTENT"));
    };
    let store = s.app.store.clone();
    let mbname = meta.name.clone();
    let sel = tokio::task::spawn_blocking(move || {
        Selected::open(&store, account, meta.id, mbname, read_only)
    })
    .await??;

    let mut out = sel.flags_announcement();
    out.extend(response::data(Data::Exists(sel.exists())));
    out.extend(response::data(Data::Recent(sel.recent.len() as u32)));
    if let Some(i) = sel.msgs.iter().position(|m| !m.has_flag("\\Seen")) {
        if let Ok(code) = Code::unseen(i as u32 + 1) {
            out.extend(response::untagged(
                StatusKind::Ok,
                Some(code),
                &format!("Message {} is the first unseen", i + 1),
            ));
        }
    }
    if let Some(v) = NonZeroU32::new(sel.uidvalidity) {
        out.extend(response::untagged(
            StatusKind::Ok,
            Some(Code::UidValidity(v)),
            "UIDs valid",
        ));
    }
    let uidnext = s
        .app
        .store
        .mailbox_by_id(sel.id)?
        .map(|m| m.uidnext)
        .unwrap_or(sel.max_uid() + 1)
        .max(sel.max_uid() + 1);
    if let Some(n) = NonZeroU32::new(uidnext) {
        out.extend(response::untagged(
            StatusKind::Ok,
            Some(Code::UidNext(n)),
            "Predicted next UID",
        ));
    }
    s.conn.write(&out);
    s.selected = Some(sel);
    s.state = State::Selected;
    Ok(if read_only {
        Reply::ok("EXAMINE completed").code(Code::ReadOnly)
    } else {
        Reply::ok("SELECT completed").code(Code::ReadWrite)
    })
}

/// CLOSE: expunges \Deleted messages without EXPUNGE responses (unless read-only), then
/// deselects.
pub async fn close(s: &mut Session) -> CmdResult {
    if let Some(sel) = s.selected.take() {
        if !sel.read_only {
            // What is \Deleted in the store now, not in our possibly stale view.
            let store = s.app.store.clone();
            let id = sel.id;
            let removed = tokio::task::spawn_blocking(move || {
                let deleted: Vec<u32> = store
                    .messages(id)?
                    .into_iter()
                    .filter(|m| m.has_flag("\\Deleted"))
                    .map(|m| m.uid)
                    .collect();
                store.expunge(id, &deleted)
            })
            .await??;
            if !removed.is_empty() {
                super::durable(s).await?;
            }
        }
    }
    s.state = State::Authenticated;
    Ok(Reply::ok("CLOSE completed"))
}

pub async fn unselect(s: &mut Session) -> CmdResult {
    s.selected = None;
    s.state = State::Authenticated;
    Ok(Reply::ok("UNSELECT completed"))
}

/// CHECK (RFC 3501 §6.4.1, "a checkpoint of the currently selected mailbox"): its OK comes
/// after everything written before it is on disk, the implicit `\Seen` of FETCH included (which
/// does not wait for its flush, docs/imap.md "Durability per command"); the sync after the
/// command reports news.
pub async fn check(s: &mut Session) -> CmdResult {
    s.app.store.settled().await?;
    Ok(Reply::ok("CHECK completed"))
}
