//! EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1).

use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::selected;
use crate::imap::response::{CmdResult, Reply};
use crate::imap::session::Session;

pub async fn expunge(s: &mut Session, uids: Option<&SequenceSet>) -> CmdResult {
    let store = s.app.store.clone();
    // Bring the view up to date first: the client expects the \Deleted flags of every session
    // to count, and our EXPUNGE numbers must match what it has been told.
    s.sync(true).await;
    let sel = selected(s)?;
    if sel.read_only {
        return Ok(Reply::no("Mailbox is read-only (EXAMINE)").code(Code::ReadOnly));
    }
    let allowed: Option<Vec<u32>> = uids.map(|set| {
        sel.resolve(set, true)
            .iter()
            .map(|&i| sel.msgs[i].uid)
            .collect()
    });
    let candidates: Vec<u32> = sel
        .msgs
        .iter()
        .filter(|m| m.has_flag("\\Deleted"))
        .filter(|m| {
            allowed
                .as_ref()
                .is_none_or(|a| a.binary_search(&m.uid).is_ok())
        })
        .map(|m| m.uid)
        .collect();
    if candidates.is_empty() {
        return Ok(Reply::ok("EXPUNGE completed"));
    }
    let id = sel.id;
    let st = store.clone();
    let removed = tokio::task::spawn_blocking(move || {
        // Only what is still \Deleted in the store (another session may have undeleted it).
        let still: Vec<u32> = candidates
            .into_iter()
            .filter(|&u| {
                st.message(id, u)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.has_flag("\\Deleted"))
            })
            .collect();
        st.expunge(id, &still)
    })
    .await??;
    super::durable(s).await?;
    let sel = selected(s)?;
    let out = sel.expunge_uids(&removed);
    let current = !removed.is_empty() && sel.absorb_own(&store, 1);
    s.conn.write(&out);
    // RFC 7162 §3.1.10 / §3.2.7: with CONDSTORE enabled, the tagged OK carries the
    // HIGHESTMODSEQ the expunge made (when no other change is still unreported).
    let sel = selected(s)?;
    match std::num::NonZeroU64::new(sel.modseq) {
        Some(m) if current && sel.condstore && sel.ghosts.is_empty() => {
            Ok(Reply::ok("EXPUNGE completed").code(Code::HighestModSeq(m)))
        }
        _ => Ok(Reply::ok("EXPUNGE completed")),
    }
}
