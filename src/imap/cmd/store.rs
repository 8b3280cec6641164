//! STORE and UID STORE (RFC 3501 §6.4.6): FLAGS, +FLAGS, -FLAGS, with or without .SILENT;
//! keywords are stored as given (the filter's `$EDSValid`/`$EDSInvalid` included).

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

pub async fn store(
    s: &mut Session,
    set: &SequenceSet,
    kind: StoreType,
    resp: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
) -> CmdResult {
    let store = s.app.store.clone();
    let names = match flag_names(flags) {
        Ok(f) => f,
        Err(r) => return Ok(r),
    };
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
    let changed =
        tokio::task::spawn_blocking(move || store.store_flags(id, &uids, op, &names)).await??;
    let sel = selected(s)?;
    for m in changed {
        if let Ok(i) = sel.msgs.binary_search_by_key(&m.uid, |x| x.uid) {
            sel.msgs[i] = m;
        }
    }
    // Untagged FETCH for every message named, with its flags as they are now (RFC 3501
    // §6.4.6), unless .SILENT. UID STORE includes the UID (§6.4.8).
    if resp == StoreResponse::Answer {
        let mut out = Vec::new();
        for &i in &idx {
            out.extend(sel.flags_response(i as u32 + 1, uid));
        }
        s.conn.write(&out);
    }
    super::durable(s).await?;
    Ok(Reply::ok("STORE completed"))
}
