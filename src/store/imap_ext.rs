//! Sled operations only the IMAP server needs.

use super::{dec, enc, u64_key, MailboxMeta, Result, Sled, StoreError};

impl Sled {
    /// Claims \Recent up to `upto` for one session (RFC 3501 §2.3.2: a message is recent in only
    /// one session): raises the mailbox's recent mark to `upto` and returns the previous mark.
    /// Messages with `old < uid <= upto` are recent for the caller and for nobody else. Unlike
    /// [`Sled::claim_recent`], messages that arrive after the caller read the mailbox stay
    /// unclaimed for whoever sees them first.
    pub fn claim_recent_upto(&self, mailbox_id: u64, upto: u32) -> Result<u32> {
        let w = self.write_gate();
        let old = self.t.mailboxes.transaction(|mbs| {
            let Some(v) = mbs.get(u64_key(mailbox_id))? else {
                return Err(StoreError::NotFound("mailbox".into()).into());
            };
            let mut m: MailboxMeta = dec(&v)?;
            let old = m.recent_mark;
            if upto > old {
                m.recent_mark = upto;
                mbs.insert(&u64_key(mailbox_id), enc(&m))?;
            }
            Ok(old)
        })?;
        drop(w);
        Ok(old)
    }
}
