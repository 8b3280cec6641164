//! STORE and UID STORE (RFC 3501 §6.4.6): FLAGS, +FLAGS, -FLAGS, with or without .SILENT;
//! keywords are stored as given (the filter's `$EDSValid`/`$EDSInvalid` included).

use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;

use super::selected;
use crate::imap::response::{CmdResult, Reply};
use crate::imap::session::Session;
use crate::store::FlagOp;

/// Client flags as store names. `\Recent` is ignored (only the server sets it); other unknown
/// system flags are a BAD.
pub fn flag_names(flags: &[Flag<'_>]) -> Result<Vec<String>, Reply> {
    let mut out = Vec::with_capacity(flags.len());
    for f in flags {
        match f {
            Flag::Extension(_) if f.to_string().eq_ignore_ascii_case("\\Recent") => {}
            Flag::Extension(_) => {
                return Err(Reply::bad(format!("Unknown system flag {f}")));
            }
            other => out.push(other.to_string()),
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub async fn store(
    s: &mut Session,
    set: &SequenceSet,
    kind: StoreType,
    resp: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
    modifiers: &[StoreModifier],
) -> CmdResult {
    let store = s.app.store.clone();
    let names = match flag_names(flags) {
        Ok(f) => f,
        Err(r) => return Ok(r),
    };
    // RFC 7162 §3.1.3: UNCHANGEDSINCE (a CONDSTORE-enabling modifier).
    let unchanged_since = modifiers
        .iter()
        .map(|m| match m {
            StoreModifier::UnchangedSince(v) => *v,
        })
        .next();
    if unchanged_since.is_some() {
        s.enable_condstore();
    }
    let sel = selected(s)?;
    if sel.read_only {
        return Ok(Reply::no("Mailbox is read-only (EXAMINE)").code(Code::ReadOnly));
    }
    let idx = sel.resolve(set, uid);
    let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
    let op = match kind {
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
        StoreType::Replace => FlagOp::Replace,
    };
    let id = sel.id;
    let st = store.clone();
    let (changed, failed) = tokio::task::spawn_blocking(move || {
        st.store_flags_if(id, &uids, op, &names, unchanged_since)
    })
    .await??;
    let sel = selected(s)?;
    let bumps = changed.len() as u64;
    let changed_uids: Vec<u32> = changed.iter().map(|m| m.uid).collect();
    let mut out = Vec::new();
    // RFC 3501 §7.2.6: a new keyword is announced (FLAGS, PERMANENTFLAGS) before any FETCH
    // shows it, here and (selected.rs) in every other session.
    if sel.grow_keywords(changed.iter().map(|m| &m.flags)) {
        out.extend(sel.flags_announcement());
    }
    for m in changed {
        if let Ok(i) = sel.msgs.binary_search_by_key(&m.uid, |x| x.uid) {
            sel.msgs[i] = m;
        }
    }
    sel.absorb_own(&store, bumps);
    // Untagged FETCH for every message named, with its flags as they are now (RFC 3501
    // §6.4.6), unless .SILENT. UID STORE includes the UID (§6.4.8). Messages that failed
    // UNCHANGEDSINCE get none (RFC 7162 §3.1.3). With CONDSTORE enabled the FETCH carries
    // MODSEQ, and .SILENT still reports the new MODSEQ of what changed.
    for &i in &idx {
        let m = &sel.msgs[i];
        if failed.contains(&m.uid) {
            continue;
        }
        if resp == StoreResponse::Answer {
            out.extend(sel.flags_response(i as u32 + 1, uid));
        } else if sel.condstore && changed_uids.contains(&m.uid) {
            out.extend(sel.modseq_response(i as u32 + 1, uid));
        }
    }
    s.conn.write(&out);
    super::durable(s).await?;
    if !failed.is_empty() {
        let sel = selected(s)?;
        // MODIFIED names sequence numbers for STORE, UIDs for UID STORE.
        let nums: Vec<u32> = if uid {
            failed.clone()
        } else {
            failed.iter().filter_map(|u| sel.seq_of(*u)).collect()
        };
        if let Some(set) = crate::imap::response::sequence_set(&nums) {
            return Ok(
                Reply::ok("Conditional STORE failed for some messages").code(Code::Modified(set))
            );
        }
    }
    Ok(Reply::ok("STORE completed"))
}
