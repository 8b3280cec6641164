//! A short-lived cache of verified credentials (like Dovecot's `auth_cache`): a client that logs
//! in again and again with the right password (mail clients open several connections, phones
//! reconnect all day) skips argon2.
//!
//! It cannot help a guesser: only successful verifications are stored, and only as
//! HMAC-SHA256(per-process random key, account NUL password) next to the PHC string they were
//! verified against; a lookup hits only for the same account, the same password and the same
//! stored PHC string (so `tanba user passwd` and `user del` invalidate at once), within the TTL.
//! A wrong password never matches an entry and always costs a full verification. The key never
//! leaves memory, so the entries are useless outside this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::sign::Signer;

/// How long a verified password is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// Most accounts remembered.
pub const MAX_ENTRIES: usize = 10_000;

struct Entry {
    mac: Vec<u8>,
    phc: String,
    expires: Instant,
}

pub struct CredentialCache {
    key: Vec<u8>,
    ttl: Duration,
    cap: usize,
    map: Mutex<HashMap<String, Entry>>,
}

impl CredentialCache {
    pub fn new(ttl: Duration, cap: usize) -> CredentialCache {
        let mut key = vec![0u8; 32];
        openssl::rand::rand_bytes(&mut key).expect("the system random generator");
        CredentialCache {
            key,
            ttl,
            cap: cap.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The keyed digest of (account, password) that entries hold; also the key under which
    /// concurrent verifications of the same credentials wait for each other (`mod.rs`).
    pub(crate) fn mac(&self, account: &str, password: &str) -> Option<Vec<u8>> {
        let key = PKey::hmac(&self.key).ok()?;
        let mut s = Signer::new(openssl::hash::MessageDigest::sha256(), &key).ok()?;
        s.update(account.as_bytes()).ok()?;
        s.update(&[0]).ok()?;
        s.update(password.as_bytes()).ok()?;
        s.sign_to_vec().ok()
    }

    /// Whether `password` was verified for `account` (whose stored PHC string is `phc`) within
    /// the TTL.
    pub fn hit(&self, account: &str, phc: &str, password: &str, now: Instant) -> bool {
        let Some(mac) = self.mac(account, password) else {
            return false;
        };
        let map = lock(&self.map);
        map.get(account).is_some_and(|e| {
            e.expires > now
                && e.phc == phc
                && e.mac.len() == mac.len()
                && openssl::memcmp::eq(&e.mac, &mac)
        })
    }

    /// Remembers a successful verification.
    pub fn insert(&self, account: &str, phc: &str, password: &str, now: Instant) {
        let Some(mac) = self.mac(account, password) else {
            return;
        };
        let mut map = lock(&self.map);
        if !map.contains_key(account) && map.len() >= self.cap {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.cap {
                // Still full of live entries: the ones closest to expiry make room (an eighth,
                // so that this scan is rare).
                let mut times: Vec<Instant> = map.values().map(|e| e.expires).collect();
                let (_, &mut cut, _) = times.select_nth_unstable(self.cap / 8);
                map.retain(|_, e| e.expires > cut);
            }
        }
        map.insert(
            account.to_string(),
            Entry {
                mac,
                phc: phc.to_string(),
                expires: now + self.ttl,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_and_hash_within_the_ttl_hit() {
        let c = CredentialCache::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        assert!(!c.hit("bob@x", "$phc1", "pw-right-one", now));
        c.insert("bob@x", "$phc1", "pw-right-one", now);
        assert!(c.hit("bob@x", "$phc1", "pw-right-one", now));
        // A wrong password, another account, a changed hash (user passwd): misses.
        assert!(!c.hit("bob@x", "$phc1", "pw-right-onE", now));
        assert!(!c.hit("bob@x", "$phc1", "", now));
        assert!(!c.hit("eve@x", "$phc1", "pw-right-one", now));
        assert!(!c.hit("bob@x", "$phc2", "pw-right-one", now));
        // The account name and the password are not confusable across the separator.
        c.insert("a", "$p", "b\0c", now);
        assert!(!c.hit("a\0b", "$p", "c", now));
        // Expired.
        assert!(!c.hit(
            "bob@x",
            "$phc1",
            "pw-right-one",
            now + Duration::from_secs(61)
        ));
        // Another process (another key) does not know the entries.
        let other = CredentialCache::new(Duration::from_secs(60), 100);
        assert_ne!(
            c.mac("bob@x", "pw-right-one"),
            other.mac("bob@x", "pw-right-one")
        );
    }

    #[test]
    fn bounded() {
        let c = CredentialCache::new(Duration::from_secs(60), 64);
        let now = Instant::now();
        for i in 0..1000u32 {
            c.insert(
                &format!("u{i}"),
                "$p",
                "pw",
                now + Duration::from_millis(i as u64),
            );
            assert!(c.len() <= 64);
        }
        // The newest is there.
        assert!(c.hit("u999", "$p", "pw", now + Duration::from_secs(1)));
        // Expired entries make room first.
        let later = now + Duration::from_secs(120);
        c.insert("fresh", "$p", "pw", later);
        assert_eq!(c.len(), 1);
    }
}
