//! SELECT and EXAMINE (RFC 3501 §6.3.1-2) with the CONDSTORE and QRESYNC parameters (RFC 7162
//! §3.1.8, §3.2.5), CLOSE (§6.4.2), UNSELECT (RFC 3691), CHECK (§6.4.1).

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data, StatusKind};

use super::mailbox_name;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::selected::Selected;
use crate::imap::session::{Session, State};

pub async fn select(
    s: &mut Session,
    m: &Mailbox<'_>,
    read_only: bool,
    params: &[SelectParameter],
) -> CmdResult {
    let mut qresync = None;
    for p in params {
        match p {
            SelectParameter::CondStore => s.enable_condstore(),
            // RFC 7162 §3.2.5: QRESYNC needs ENABLE QRESYNC first.
            SelectParameter::QResync { .. } if !s.qresync => {
                return Ok(Reply::bad("QRESYNC is not enabled (ENABLE QRESYNC first)"));
            }
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                ..
            } => qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids)),
        }
    }
    // A SELECT deselects first, whether or not it succeeds (RFC 3501 §6.3.1); with CONDSTORE
    // advertised, `* OK [CLOSED]` marks where the old mailbox's responses end (RFC 7162 §7).
    if s.selected.take().is_some() {
        s.conn.write(&response::untagged(
            StatusKind::Ok,
            Some(Code::Closed),
            "Previous mailbox closed",
        ));
    }
    s.state = State::Authenticated;
    let name = mailbox_name(m)?;
    let account = s.account_id();
    let Some(meta) = s.app.store.mailbox(account, &name)? else {
        return Ok(Reply::no("No such mailbox").other("NONEXISTENT"));
    };
    let store = s.app.store.clone();
    let mbname = meta.name.clone();
    let (condstore, qr) = (s.condstore, s.qresync);
    let sel = tokio::task::spawn_blocking(move || {
        Selected::open(&store, account, meta.id, mbname, read_only).map(|mut sel| {
            sel.condstore = condstore;
            sel.qresync = qr;
            sel
        })
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
    // RFC 7162 §3.1.2.1: every mailbox keeps modseqs, so HIGHESTMODSEQ with every SELECT (and
    // never NOMODSEQ).
    if let Some(h) = NonZeroU64::new(sel.modseq) {
        out.extend(response::untagged(
            StatusKind::Ok,
            Some(Code::HighestModSeq(h)),
            "Highest",
        ));
    }
    if let Some((uidvalidity, since, known)) = qresync {
        let store = s.app.store.clone();
        let known = known.clone();
        let (sel2, more) = tokio::task::spawn_blocking(move || {
            let r = crate::imap::condstore::qresync_select(
                &store,
                &sel,
                uidvalidity,
                since,
                known.as_ref(),
                uidnext,
            );
            (sel, r)
        })
        .await?;
        out.extend(more?);
        s.conn.write(&out);
        s.selected = Some(sel2);
        s.state = State::Selected;
        return Ok(select_done(read_only));
    }
    s.conn.write(&out);
    s.selected = Some(sel);
    s.state = State::Selected;
    Ok(select_done(read_only))
}

fn select_done(read_only: bool) -> Reply {
    if read_only {
        Reply::ok("EXAMINE completed").code(Code::ReadOnly)
    } else {
        Reply::ok("SELECT completed").code(Code::ReadWrite)
    }
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
