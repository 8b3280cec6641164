//! MULTIAPPEND (RFC 3502): several messages stored into one mailbox in one transaction, so
//! that a failure (quota, a vanished mailbox, a full disk) stores none of them.

use sled::Transactional;

use super::message::{add_ref, insert_message, normalize_flags, put_body};
use super::{Appended, Result, Sled};

/// One message of a MULTIAPPEND: its bytes, flags and INTERNALDATE (Unix seconds).
pub struct NewMessage {
    pub raw: Vec<u8>,
    pub flags: Vec<String>,
    pub internal_date: i64,
}

impl Sled {
    /// Stores every message of `msgs` in `mailbox_id`, in order, or none of them. Each counts
    /// against the account's quota (`quota.rs`).
    pub fn append_many(&self, mailbox_id: u64, msgs: &[NewMessage]) -> Result<Vec<Appended>> {
        let mut ids = Vec::with_capacity(msgs.len());
        for _ in msgs {
            ids.push(self.next_id()?);
        }
        let flags: Vec<Vec<String>> = msgs.iter().map(|m| normalize_flags(&m.flags)).collect();
        let bodies: Vec<(u64, &[u8])> = ids
            .iter()
            .zip(msgs)
            .map(|(id, m)| (*id, m.raw.as_slice()))
            .collect();
        // Body files first, durably, so a committed reference always has its file.
        self.files.write_all(&bodies)?;
        let t = &self.t;
        let trees = (
            &t.mailboxes,
            &t.messages,
            &t.blobs,
            &t.blob_files,
            &t.blob_refs,
            &t.changes,
            &t.quota,
        );
        let w = self.write_gate();
        let out = trees.transaction(|(mbs, msgs_t, blobs, files, refs, changes, qt)| {
            let mut out = Vec::with_capacity(msgs.len());
            for ((id, m), f) in ids.iter().zip(msgs).zip(&flags) {
                put_body(blobs, files, *id, &m.raw)?;
                add_ref(refs, *id, 1)?;
                out.push(insert_message(
                    mbs,
                    msgs_t,
                    changes,
                    qt,
                    true,
                    mailbox_id,
                    *id,
                    m.raw.len() as u64,
                    m.internal_date,
                    f,
                )?);
            }
            Ok(out)
        });
        drop(w);
        let out = self.files.settle(out, &bodies)?;
        if let Some(m) = self.mailbox_by_id(mailbox_id)? {
            self.notify(m.account_id, mailbox_id);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::NewMessage;
    use crate::store::temp_sled;

    #[test]
    fn all_or_nothing() {
        let (_d, s) = temp_sled();
        let a = s.create_account("m@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        let msg = |n: usize| NewMessage {
            raw: vec![b'x'; n],
            flags: vec!["\\seen".into()],
            internal_date: 5,
        };
        let out = s.append_many(inbox.id, &[msg(10), msg(200_000)]).unwrap();
        assert_eq!(out.iter().map(|a| a.uid).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.messages(inbox.id).unwrap()[0].flags, ["\\Seen"]);
        // 200010 bytes used of 196 KiB (200704): the first would fit, both do not.
        s.set_quota_limit("m@x.test", Some(196)).unwrap();
        assert!(s.append_many(inbox.id, &[msg(400), msg(400)]).is_err());
        assert_eq!(s.messages(inbox.id).unwrap().len(), 2);
        let problems = s.check(true).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }
}
