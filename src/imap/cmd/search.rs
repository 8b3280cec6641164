//! SEARCH and UID SEARCH (RFC 3501 §6.4.4). CHARSET may be UTF-8 or US-ASCII; anything else is
//! NO [BADCHARSET].

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Charset, Vec1};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::IntoStatic;

use super::selected;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::search::{run, Msg, Scope};
use crate::imap::session::Session;

pub async fn search(
    s: &mut Session,
    charset: Option<&Charset<'_>>,
    criteria: Vec1<SearchKey<'_>>,
    uid: bool,
) -> CmdResult {
    if let Some(cs) = charset {
        let name = match cs {
            Charset::Atom(a) => a.as_ref().to_string(),
            Charset::Quoted(q) => q.as_ref().to_string(),
        };
        if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
            let allowed = ["UTF-8", "US-ASCII"]
                .iter()
                .filter_map(|c| imap_codec::imap_types::core::Atom::try_from(*c).ok())
                .map(Charset::Atom)
                .collect();
            return Ok(Reply::no("Unsupported charset").code(Code::BadCharset { allowed }));
        }
    }
    let key: SearchKey<'static> = match criteria.into_inner() {
        mut v if v.len() == 1 => v.remove(0).into_static(),
        v => match Vec1::try_from(v) {
            Ok(v1) => SearchKey::And(v1).into_static(),
            Err(_) => return Ok(Reply::bad("Empty search")),
        },
    };
    // RFC 7162 §3.1.5: MODSEQ enables CONDSTORE and adds the matches' highest modseq.
    let with_modseq = crate::imap::condstore::search_uses_modseq(&key);
    if with_modseq {
        s.enable_condstore();
    }
    let sel = selected(s)?;
    let msgs: Vec<Msg> = sel
        .msgs
        .iter()
        .enumerate()
        .map(|(i, m)| Msg {
            seq: i as u32 + 1,
            meta: m.clone(),
            recent: sel.is_recent(m.uid),
        })
        .collect();
    let scope = Scope {
        max_seq: sel.exists(),
        max_uid: sel.max_uid(),
    };
    let store = s.app.store.clone();
    let hits = tokio::task::spawn_blocking(move || run(&store, &key, &scope, &msgs)).await?;
    let modseq = if with_modseq {
        let sel = selected(s)?;
        hits.iter()
            .filter_map(|&(seq, _)| sel.msgs.get((seq as usize).checked_sub(1)?))
            .map(|m| m.modseq)
            .max()
            .and_then(std::num::NonZeroU64::new)
    } else {
        None
    };
    let ids: Vec<NonZeroU32> = hits
        .into_iter()
        .filter_map(|(seq, u)| NonZeroU32::new(if uid { u } else { seq }))
        .collect();
    s.conn.write(&response::data(Data::Search(ids, modseq)));
    Ok(Reply::ok("SEARCH completed"))
}
