//! QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT; SETQUOTA is refused (the limit is the operator's,
//! `tanba user quota`). One quota root per account, named `""`, with the STORAGE resource in
//! KiB; an account without a limit has no quota root (RFC 9208 §4.3: QUOTAROOT then names
//! none).

use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::IntoStatic;

use super::mailbox_name;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::session::Session;
use crate::store::quota::Quota;

/// The only quota root's name.
const ROOT: &str = "";

fn root() -> AString<'static> {
    AString::try_from(ROOT).expect("the empty string is an astring")
}

/// `* QUOTA "" (STORAGE used limit)` for a limited account.
fn quota_data(q: &Quota) -> Option<Vec<u8>> {
    let limit = q.limit_kib?;
    let quotas = Vec1::from(QuotaGet::new(Resource::Storage, q.used_kib(), limit));
    Some(response::data(Data::Quota {
        root: root(),
        quotas,
    }))
}

fn account_quota(s: &Session) -> Result<Quota, crate::imap::response::CmdError> {
    Ok(s.app.store.quota(s.account_id())?)
}

/// GETQUOTA root (RFC 9208 §4.2).
pub async fn get_quota(s: &mut Session, r: &AString<'_>) -> CmdResult {
    let q = account_quota(s)?;
    let name: &[u8] = r.as_ref();
    match quota_data(&q) {
        Some(d) if name == ROOT.as_bytes() => {
            s.conn.write(&d);
            Ok(Reply::ok("GETQUOTA completed"))
        }
        _ => Ok(Reply::no("No such quota root").other("NONEXISTENT")),
    }
}

/// GETQUOTAROOT mailbox (RFC 9208 §4.3): the roots of the mailbox, then each root's QUOTA.
pub async fn get_quota_root(s: &mut Session, m: &Mailbox<'_>) -> CmdResult {
    let name = mailbox_name(m)?;
    if s.app.store.mailbox(s.account_id(), &name)?.is_none() {
        return Ok(Reply::no("No such mailbox").other("NONEXISTENT"));
    }
    let q = account_quota(s)?;
    let data = quota_data(&q);
    let roots = if data.is_some() {
        vec![root()]
    } else {
        Vec::new()
    };
    s.conn.write(&response::data(Data::QuotaRoot {
        mailbox: m.clone().into_static(),
        roots,
    }));
    if let Some(d) = data {
        s.conn.write(&d);
    }
    Ok(Reply::ok("GETQUOTAROOT completed"))
}

/// SETQUOTA (RFC 9208 §4.1): not for users here (QUOTASET is not advertised).
pub async fn set_quota(_s: &mut Session) -> CmdResult {
    Ok(Reply::no("Quotas are set by the administrator (tanba user quota)").other("NOPERM"))
}
