//! FETCH and UID FETCH. Messages are rendered in chunks on the blocking pool (store reads and
//! parsing are synchronous) and each chunk is written out before the next is rendered, so a
//! FETCH over a large mailbox streams instead of building the whole reply in memory.

use std::collections::HashSet;
use std::sync::Arc;

use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::selected;
use crate::imap::fetch::{render_checked, BinaryError, Job, Plan};
use crate::imap::response::{CmdResult, Reply};
use crate::imap::session::Session;
use crate::store::FlagOp;

/// At most this many messages per rendering chunk...
const CHUNK_MESSAGES: usize = 256;
/// ...and at most about this many message bytes when bodies are fetched.
const CHUNK_BYTES: u64 = 2 * 1024 * 1024;

pub async fn fetch(
    s: &mut Session,
    set: &SequenceSet,
    names: MacroOrMessageDataItemNames<'_>,
    uid: bool,
    modifiers: &[FetchModifier],
) -> CmdResult {
    let mut plan = match Plan::new(names, uid) {
        Ok(p) => p,
        Err(why) => return Ok(Reply::bad(why)),
    };
    // RFC 7162 §3.1.4: CHANGEDSINCE; §3.2.6: VANISHED (UID FETCH, QRESYNC enabled, with
    // CHANGEDSINCE only).
    let mut since = None;
    let mut vanished = false;
    for m in modifiers {
        match m {
            FetchModifier::ChangedSince(v) => since = Some(v.get()),
            FetchModifier::Vanished => vanished = true,
        }
    }
    if vanished && !(uid && s.qresync && since.is_some()) {
        return Ok(Reply::bad(
            "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled",
        ));
    }
    if since.is_some() {
        plan.add_modseq();
    }
    if plan.has_modseq() {
        s.enable_condstore();
    }
    if since.is_some() {
        // Answer from the current state, not the view as it was (a client asking what
        // changed wants everything up to now); expunges only for UID FETCH (RFC 3501 §7.4.1).
        s.sync(uid).await;
    }
    let store = s.app.store.clone();
    let sel = selected(s)?;
    let mut idx = sel.resolve(set, uid);
    if let Some(since) = since {
        if vanished {
            let uidnext = sel.max_uid().saturating_add(1);
            let out = crate::imap::condstore::vanished_earlier(
                &store,
                sel,
                since,
                Some(set),
                uidnext.max(store.mailbox_by_id(sel.id)?.map(|m| m.uidnext).unwrap_or(0)),
            )?;
            s.conn.write(&out);
        }
        let sel = selected(s)?;
        idx.retain(|&i| sel.msgs[i].modseq > since);
    }
    let sel = selected(s)?;

    // Implicit \Seen (RFC 3501 §6.4.5), not in a read-only (EXAMINE) session.
    let mut now_seen: HashSet<u32> = HashSet::new();
    if plan.sets_seen && !sel.read_only {
        let unseen: Vec<u32> = idx
            .iter()
            .map(|&i| &sel.msgs[i])
            .filter(|m| !m.has_flag("\\Seen"))
            .map(|m| m.uid)
            .collect();
        if !unseen.is_empty() {
            let st = store.clone();
            let id = sel.id;
            let changed = tokio::task::spawn_blocking(move || {
                st.store_flags(id, &unseen, FlagOp::Add, &["\\Seen".to_string()])
            })
            .await??;
            // Not waited for, but committed with the next flush: on disk milliseconds later and
            // before the OK of a CHECK or LOGOUT (docs/imap.md, "Durability per command").
            store.commit_soon().await;
            let sel = selected(s)?;
            let bumps = changed.len() as u64;
            for m in changed {
                now_seen.insert(m.uid);
                if let Ok(i) = sel.msgs.binary_search_by_key(&m.uid, |x| x.uid) {
                    sel.msgs[i] = m;
                }
            }
            sel.absorb_own(&store, bumps);
        }
    }

    let sel = selected(s)?;
    plan.condstore = sel.condstore;
    let jobs: Vec<Job> = idx
        .iter()
        .map(|&i| {
            let meta = sel.msgs[i].clone();
            Job {
                seq: i as u32 + 1,
                recent: sel.is_recent(meta.uid),
                add_flags: now_seen.contains(&meta.uid),
                meta,
            }
        })
        .collect();
    let plan = Arc::new(plan);
    let mut pos = 0;
    while pos < jobs.len() {
        let mut end = pos;
        let mut bytes = 0u64;
        while end < jobs.len() && end - pos < CHUNK_MESSAGES && (end == pos || bytes < CHUNK_BYTES)
        {
            if plan.need_blob {
                bytes += jobs[end].meta.size;
            }
            end += 1;
        }
        let chunk: Vec<Job> = jobs[pos..end].to_vec();
        let (st, pl) = (store.clone(), plan.clone());
        let out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for job in &chunk {
                if let Err(e) = render_checked(&st, &pl, job, &mut out) {
                    return (out, Some(e));
                }
            }
            (out, None)
        })
        .await?;
        let (out, failed) = out;
        s.conn.write_stream(&out).await?;
        // RFC 3516 §4.3: a part whose encoding we cannot undo fails the FETCH.
        match failed {
            Some(BinaryError::UnknownCte) => {
                return Ok(Reply::no("Unknown Content-Transfer-Encoding").code(Code::UnknownCte))
            }
            Some(BinaryError::Undecodable) => {
                return Ok(Reply::no("The section's encoding is damaged; use BODY[]").other("PARSE"))
            }
            None => {}
        }
        pos = end;
    }
    Ok(Reply::ok("FETCH completed"))
}
