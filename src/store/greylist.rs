//! Greylisting records (RFC 6647): one entry per (client network, MAIL FROM, RCPT TO) triplet,
//! kept in the `greylist` tree. The policy around them (which clients, the log lines, the
//! replies) is `senderauth::greylist`; this file only keeps the records, bounded.
//!
//! Tree `greylist` (all integers big-endian):
//!
//! | key                                       | value                                    |
//! |-------------------------------------------|------------------------------------------|
//! | `e` ‖ hash (16 bytes)                     | [`Entry`] (record)                       |
//! | `x` ‖ kind u8 ‖ expires u64 ‖ hash        | empty: expiry index (kind 0 pending, 1 passed) |
//! | `n`                                       | number of entries u64                    |
//!
//! The hash is the first 16 bytes of SHA-256 over the network, MAIL FROM and RCPT TO (lower-case,
//! NUL-separated): fixed-size keys whatever the addresses, and no address in the tree.
//!
//! Bounds: at most `max_entries` entries. Each check first removes a few expired entries (the
//! start of the index); when a new triplet would go beyond the cap, the entry that expires first
//! is forgotten, pending ones (which expire within `expire`) before passed ones. So a flood of
//! new triplets can only push out other pending triplets (whose senders are then deferred once
//! more), not the passed ones, until pending entries are gone.
//!
//! Every change of one check (the entry, its index key, the count, evictions) is one atomic
//! sled batch, under the store's write gate; checks are serialized by a process-wide lock (one
//! store per server). Nothing here waits for a flush: a deferral lost in a crash only defers
//! the sender once more, and a pass is made durable by the group commit that acknowledges the
//! message it let through (the `250` at the end of DATA waits for a flush that started after
//! the pass was written).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{dec, enc, read_u64, Result, Sled};

const TREE: &str = "greylist";
const ENTRY: u8 = b'e';
const INDEX: u8 = b'x';
const COUNT: &[u8] = b"n";
const PENDING: u8 = 0;
const PASSED: u8 = 1;
/// Expired entries removed per check, at most (the sweep is spread over the checks).
pub(crate) const SWEEP_PER_CHECK: usize = 32;

/// Serializes greylist checks: read, decide, write is not one sled transaction.
static LOCK: Mutex<()> = Mutex::new(());

/// The timing of greylisting, in seconds (from `auth.greylist_*`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub delay: u64,
    pub expire: u64,
    pub lifetime: u64,
    pub max_entries: u64,
}

/// What a check says about a triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First seen now (`new`) or earlier but still within the delay: try again in `retry_in`
    /// seconds.
    Defer { retry_in: u64, new: bool },
    /// Accepted. `waited`: seconds since the first attempt when this is the first pass, None
    /// when the triplet had passed before.
    Pass { waited: Option<u64> },
}

/// One triplet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Unix seconds of the first (deferred) attempt.
    first_seen: u64,
    /// Unix seconds of the last pass; 0 while pending.
    last_pass: u64,
    /// Unix seconds after which the entry is forgotten.
    expires: u64,
    /// Passes so far.
    passes: u64,
}

impl Entry {
    fn kind(&self) -> u8 {
        if self.last_pass == 0 {
            PENDING
        } else {
            PASSED
        }
    }
}

pub(crate) fn hash(network: &str, from: &str, rcpt: &str) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [network, from, rcpt] {
        ctx.update(part.to_lowercase().as_bytes());
        ctx.update(&[0]);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

fn entry_key(h: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(ENTRY);
    k.extend_from_slice(h);
    k
}

fn index_key(kind: u8, expires: u64, h: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(26);
    k.extend_from_slice(&[INDEX, kind]);
    k.extend_from_slice(&expires.to_be_bytes());
    k.extend_from_slice(h);
    k
}

impl Sled {
    fn greylist_tree(&self) -> Result<sled::Tree> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// Checks the triplet (`network`, `from`, `rcpt`) at `now` (Unix seconds) and records what
    /// follows: a new pending entry, a first pass, or a renewed pass.
    pub fn greylist_check(
        &self,
        network: &str,
        from: &str,
        rcpt: &str,
        now: u64,
        p: &Policy,
    ) -> Result<Verdict> {
        let t = self.greylist_tree()?;
        let h = hash(network, from, rcpt);
        let key = entry_key(&h);
        let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _gate = self.write_gate();
        let mut batch = sled::Batch::default();
        let mut count = match t.get(COUNT)? {
            Some(v) => read_u64(&v)?,
            None => 0,
        };
        // Index keys removed by this batch, with their entries.
        let mut gone: Vec<Vec<u8>> = Vec::new();
        let old: Option<Entry> = match t.get(&key)? {
            Some(v) => Some(dec(&v)?),
            None => None,
        };
        // This triplet's own entry when it has expired (it is replaced below).
        if let Some(e) = old.as_ref().filter(|e| e.expires <= now) {
            forget(
                &mut batch,
                &mut gone,
                index_key(e.kind(), e.expires, &h),
                &mut count,
            );
        }
        // Expired entries from the start of both halves of the index (bounded per check).
        for kind in [PENDING, PASSED] {
            let range = index_key(kind, 0, &[])..index_key(kind, now, &[]);
            for kv in t.range(range).take(SWEEP_PER_CHECK) {
                let k = kv?.0.to_vec();
                if !gone.contains(&k) {
                    forget(&mut batch, &mut gone, k, &mut count);
                }
            }
        }
        let live = old.filter(|e| e.expires > now);
        // A pass moves the entry's index key to its new expiry (and kind).
        let live_index = live.as_ref().map(|e| index_key(e.kind(), e.expires, &h));
        let (entry, verdict) = match live {
            Some(e) if e.last_pass != 0 => (
                Entry {
                    last_pass: now,
                    expires: now.saturating_add(p.lifetime),
                    passes: e.passes.saturating_add(1),
                    ..e
                },
                Verdict::Pass { waited: None },
            ),
            Some(e) if now >= e.first_seen.saturating_add(p.delay) => (
                Entry {
                    last_pass: now,
                    expires: now.saturating_add(p.lifetime),
                    passes: 1,
                    ..e
                },
                Verdict::Pass {
                    waited: Some(now - e.first_seen),
                },
            ),
            Some(e) => {
                // Still within the delay: the entry stays as it is (a retry does not restart
                // the clock); only the sweep is written.
                if !gone.is_empty() {
                    batch.insert(COUNT, &count.to_be_bytes()[..]);
                    t.apply_batch(batch)?;
                }
                return Ok(Verdict::Defer {
                    retry_in: e.first_seen.saturating_add(p.delay) - now,
                    new: false,
                });
            }
            None => {
                // A new entry. At the cap, forget the entries that expire first (pending ones
                // come first in the index), at most SWEEP_PER_CHECK per check.
                let mut evicted = 0;
                while count >= p.max_entries && evicted < SWEEP_PER_CHECK {
                    let Some(k) = first_index_key(&t, &gone)? else {
                        break;
                    };
                    forget(&mut batch, &mut gone, k, &mut count);
                    evicted += 1;
                }
                count += 1;
                (
                    Entry {
                        first_seen: now,
                        last_pass: 0,
                        expires: now.saturating_add(p.expire),
                        passes: 0,
                    },
                    Verdict::Defer {
                        retry_in: p.delay,
                        new: true,
                    },
                )
            }
        };
        if let Some(k) = live_index {
            batch.remove(k);
        }
        batch.insert(key, enc(&entry));
        batch.insert(index_key(entry.kind(), entry.expires, &h), &[][..]);
        batch.insert(COUNT, &count.to_be_bytes()[..]);
        t.apply_batch(batch)?;
        Ok(verdict)
    }

    #[cfg(test)]
    /// Triplets remembered now (for tests and `store check`-like reports).
    pub fn greylist_len(&self) -> Result<u64> {
        match self.greylist_tree()?.get(COUNT)? {
            Some(v) => read_u64(&v),
            None => Ok(0),
        }
    }
}

/// Removes the entry of index key `k` and the key, and counts it gone.
fn forget(batch: &mut sled::Batch, gone: &mut Vec<Vec<u8>>, k: Vec<u8>, count: &mut u64) {
    if let Some(hk) = k.get(10..) {
        batch.remove(entry_key(hk));
    }
    batch.remove(k.as_slice());
    gone.push(k);
    *count = count.saturating_sub(1);
}

/// The first index key (the entry that expires first, pending before passed) not in `skip`.
fn first_index_key(t: &sled::Tree, skip: &[Vec<u8>]) -> Result<Option<Vec<u8>>> {
    for kv in t.scan_prefix([INDEX]).take(skip.len() + 1) {
        let (k, _) = kv?;
        if !skip.iter().any(|s| s.as_slice() == &*k) {
            return Ok(Some(k.to_vec()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        delay: 300,
        expire: 86_400,
        lifetime: 36 * 86_400,
        max_entries: 3,
    };

    fn store() -> (tempfile::TempDir, Sled) {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn defer_then_pass_then_renew() {
        let (_d, s) = store();
        let c = |now| s.greylist_check("192.0.2.0/24", "a@x.test", "b@y.test", now, &P);
        assert_eq!(
            c(1000).unwrap(),
            Verdict::Defer {
                retry_in: 300,
                new: true
            }
        );
        assert_eq!(
            c(1100).unwrap(),
            Verdict::Defer {
                retry_in: 200,
                new: false
            }
        );
        assert_eq!(c(1300).unwrap(), Verdict::Pass { waited: Some(300) });
        assert_eq!(c(1301).unwrap(), Verdict::Pass { waited: None });
        // Case does not make another triplet; another recipient does.
        assert_eq!(
            s.greylist_check("192.0.2.0/24", "A@X.test", "b@Y.TEST", 1302, &P)
                .unwrap(),
            Verdict::Pass { waited: None }
        );
        assert!(matches!(
            s.greylist_check("192.0.2.0/24", "a@x.test", "c@y.test", 1302, &P)
                .unwrap(),
            Verdict::Defer { new: true, .. }
        ));
        assert_eq!(s.greylist_len().unwrap(), 2);
        // A pass lasts `lifetime` from the last pass.
        let later = 1301 + P.lifetime - 1;
        assert_eq!(c(later).unwrap(), Verdict::Pass { waited: None });
        assert!(matches!(
            c(later + P.lifetime).unwrap(),
            Verdict::Defer { new: true, .. }
        ));
    }

    /// Entries, index keys and the count agree, whatever the sequence of checks.
    fn consistent(s: &Sled) {
        let t = s.greylist_tree().unwrap();
        let entries = t.scan_prefix([ENTRY]).count() as u64;
        let index = t.scan_prefix([INDEX]).count() as u64;
        assert_eq!((entries, index), (s.greylist_len().unwrap(), entries));
    }

    #[test]
    fn records_stay_consistent_through_defers_passes_sweeps_and_evictions() {
        let (_d, s) = store();
        // Retries within the delay, passes, expiries swept by other checks, and the cap.
        let p = Policy {
            delay: 300,
            expire: 1000,
            lifetime: 400,
            max_entries: 10,
        };
        let mut verdicts = std::collections::HashSet::new();
        for step in 0..600u64 {
            let rcpt = format!("r{}@y.test", step % 7);
            let net = format!("192.0.{}.0/24", (step / 50) % 3);
            let v = s
                .greylist_check(&net, "a@x.test", &rcpt, step * 10, &p)
                .unwrap();
            verdicts.insert(format!("{v:?}").split(' ').next().unwrap().to_string());
            consistent(&s);
            assert!(s.greylist_len().unwrap() <= p.max_entries);
        }
        assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    }

    #[test]
    fn a_retry_after_expire_starts_over() {
        let (_d, s) = store();
        let c = |now| s.greylist_check("192.0.2.0/24", "", "b@y.test", now, &P);
        assert!(matches!(c(0).unwrap(), Verdict::Defer { new: true, .. }));
        assert!(matches!(
            c(P.expire).unwrap(),
            Verdict::Defer { new: true, .. }
        ));
        assert_eq!(s.greylist_len().unwrap(), 1);
        assert!(matches!(
            c(P.expire + P.delay).unwrap(),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn the_cap_forgets_pending_entries_first_and_sweeps_expired_ones() {
        let (_d, s) = store();
        let c = |rcpt: &str, now| s.greylist_check("192.0.2.0/24", "a@x.test", rcpt, now, &P);
        c("passed@y.test", 0).unwrap();
        assert!(matches!(
            c("passed@y.test", 300).unwrap(),
            Verdict::Pass { .. }
        ));
        for i in 0..50 {
            c(&format!("flood{i}@y.test"), 400 + i).unwrap();
            assert!(s.greylist_len().unwrap() <= P.max_entries);
        }
        assert_eq!(s.greylist_len().unwrap(), 3);
        // The passed triplet survived the flood of new ones.
        assert_eq!(
            c("passed@y.test", 500).unwrap(),
            Verdict::Pass { waited: None }
        );
        // The oldest pending ones were forgotten, the newest kept.
        assert!(matches!(
            c("flood0@y.test", 1000).unwrap(),
            Verdict::Defer { new: true, .. }
        ));
        // Everything pending has expired a day later: swept as checks go by.
        let t = s.greylist_tree().unwrap();
        c("passed@y.test", 200_000).unwrap();
        assert_eq!(s.greylist_len().unwrap(), 1);
        assert_eq!(t.len(), 3, "one entry, its index key, the count");
    }
}
