//! SEARCH and UID SEARCH (RFC 3501 §6.4.4) with ESEARCH result options (RFC 4731) and SAVE
//! (RFC 5182); SORT (RFC 5256, RFC 5957) and THREAD (RFC 5256). CHARSET may be UTF-8 or
//! US-ASCII; anything else is `NO [BADCHARSET]`. The search, the sort keys and the threads are
//! computed on the blocking pool.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Charset, Tag, Vec1};
use imap_codec::imap_types::extensions::sort::SortCriterion;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::IntoStatic;

use super::selected;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::search::{run, Msg, Scope};
use crate::imap::session::Session;
use crate::imap::{sort, thread};

/// `Err(NO [BADCHARSET])` unless the charset is one we search in.
fn check_charset(charset: Option<&Charset<'_>>) -> Result<(), Reply> {
    let Some(cs) = charset else {
        return Ok(());
    };
    let name = match cs {
        Charset::Atom(a) => a.as_ref().to_string(),
        Charset::Quoted(q) => q.as_ref().to_string(),
    };
    if name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII") {
        return Ok(());
    }
    let allowed = ["UTF-8", "US-ASCII"]
        .iter()
        .filter_map(|c| imap_codec::imap_types::core::Atom::try_from(*c).ok())
        .map(Charset::Atom)
        .collect();
    Err(Reply::no("Unsupported charset").code(Code::BadCharset { allowed }))
}

/// The criteria as one key (several are ANDed).
fn one_key(criteria: Vec1<SearchKey<'_>>) -> SearchKey<'static> {
    match criteria.into_inner() {
        mut v if v.len() == 1 => v.remove(0).into_static(),
        v => SearchKey::And(Vec1::unvalidated(v)).into_static(),
    }
}

/// The selected mailbox as the search sees it, with the store.
fn snapshot(s: &mut Session) -> Result<(crate::store::Store, Vec<Msg>, Scope), Reply> {
    let store = s.app.store.clone();
    let sel = s
        .selected
        .as_ref()
        .ok_or_else(|| Reply::bad("No mailbox selected"))?;
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
    Ok((store, msgs, scope))
}

pub async fn search(
    s: &mut Session,
    tag: &Tag<'_>,
    charset: Option<&Charset<'_>>,
    criteria: Vec1<SearchKey<'_>>,
    uid: bool,
) -> CmdResult {
    let ret = s.search_return.take();
    // RFC 5182 §2.1: a SEARCH with SAVE that fails with NO empties the variable (BAD leaves it).
    let save = ret.is_some_and(|r| r.save);
    if let Err(r) = check_charset(charset) {
        if save {
            s.saved_search.clear();
        }
        return Ok(r);
    }
    let key = one_key(criteria);
    // RFC 7162 §3.1.5: MODSEQ enables CONDSTORE and adds the matches' highest modseq.
    let with_modseq = crate::imap::condstore::search_uses_modseq(&key);
    if with_modseq {
        s.enable_condstore();
    }
    selected(s)?;
    let (store, msgs, scope) = snapshot(s)?;
    let hits = match tokio::task::spawn_blocking(move || run(&store, &key, &scope, &msgs)).await {
        Ok(h) => h,
        Err(e) => {
            if save {
                s.saved_search.clear();
            }
            return Err(e.into());
        }
    };
    let nums: Vec<u32> = hits
        .iter()
        .map(|&(seq, u)| if uid { u } else { seq })
        .collect();
    // The highest modseq of the messages the answer names (RFC 7162 §3.1.5; with ESEARCH, of
    // the MIN/MAX messages when only those are returned).
    let modseq_of = |s: &mut Session, seqs: &mut dyn Iterator<Item = u32>| {
        let sel = s.selected.as_ref()?;
        seqs.filter_map(|seq| sel.msgs.get((seq as usize).checked_sub(1)?))
            .map(|m| m.modseq)
            .max()
            .and_then(std::num::NonZeroU64::new)
    };
    let Some(ret) = ret else {
        let modseq = if with_modseq {
            modseq_of(s, &mut hits.iter().map(|&(seq, _)| seq))
        } else {
            None
        };
        let ids: Vec<NonZeroU32> = nums.into_iter().filter_map(NonZeroU32::new).collect();
        s.conn.write(&response::data(Data::Search(ids, modseq)));
        return Ok(Reply::ok("SEARCH completed"));
    };
    if ret.save {
        let uids: Vec<u32> = hits.iter().map(|&(_, u)| u).collect();
        s.saved_search = ret.saved(&uids);
    }
    if ret.answers() {
        let modseq = if !with_modseq || hits.is_empty() {
            None
        } else if ret.all || ret.count {
            modseq_of(s, &mut hits.iter().map(|&(seq, _)| seq))
        } else {
            let (first, last) = (hits[0].0, hits[hits.len() - 1].0);
            let mut ends = [ret.min.then_some(first), ret.max.then_some(last)]
                .into_iter()
                .flatten();
            modseq_of(s, &mut ends)
        };
        s.conn
            .write(&response::esearch(tag, uid, &ret, &nums, modseq));
    }
    Ok(Reply::ok(if ret.save {
        "SEARCH completed, result saved"
    } else {
        "SEARCH completed"
    }))
}

pub async fn sort(
    s: &mut Session,
    criteria: Vec1<SortCriterion>,
    charset: &Charset<'_>,
    search: Vec1<SearchKey<'_>>,
    uid: bool,
) -> CmdResult {
    check_charset(Some(charset))?;
    let key = one_key(search);
    let (store, msgs, scope) = snapshot(s)?;
    let criteria = criteria.into_inner();
    let order = tokio::task::spawn_blocking(move || {
        let hits = run(&store, &key, &scope, &msgs);
        sort::sort(&store, &msgs, &hits, &criteria)
    })
    .await?;
    let nums: Vec<u32> = order
        .into_iter()
        .map(|(seq, u)| if uid { u } else { seq })
        .collect();
    s.conn.write(&response::numbers("SORT", &nums));
    Ok(Reply::ok("SORT completed"))
}

pub async fn thread(
    s: &mut Session,
    algorithm: &ThreadingAlgorithm<'_>,
    charset: &Charset<'_>,
    search: Vec1<SearchKey<'_>>,
    uid: bool,
) -> CmdResult {
    let references = match algorithm {
        ThreadingAlgorithm::References => true,
        ThreadingAlgorithm::OrderedSubject => false,
        ThreadingAlgorithm::Other(_) => return Ok(Reply::bad("Unknown threading algorithm")),
    };
    check_charset(Some(charset))?;
    let key = one_key(search);
    let (store, msgs, scope) = snapshot(s)?;
    let lists = tokio::task::spawn_blocking(move || {
        let hits = run(&store, &key, &scope, &msgs);
        let infos = thread::infos(&store, &msgs, &hits, uid);
        if references {
            thread::references(&infos)
        } else {
            thread::ordered_subject(&infos)
        }
    })
    .await?;
    s.conn.write(&response::thread_data(&lists));
    Ok(Reply::ok("THREAD completed"))
}
