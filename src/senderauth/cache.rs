//! Caches of parsed DNS answers for mail-auth (its `ResolverCache` trait): SPF/DKIM/DMARC
//! records, MX, A, AAAA, PTR. Bounded: each map holds at most [`MAX_ENTRIES`]; when full, expired
//! entries go first, then everything (a cache miss only costs a lookup). Entries live until the
//! record's TTL as mail-auth computes it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{RecordSet, ResolverCache, Txt, MX};

/// Entries per map, at most.
pub const MAX_ENTRIES: usize = 4096;

pub struct Cache<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for Cache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            _ => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, valid_until));
    }
}

pub type TxtCache = Cache<Box<str>, Txt>;
pub type MxCache = Cache<Box<str>, RecordSet<MX>>;
pub type Ipv4Cache = Cache<Box<str>, RecordSet<Ipv4Addr>>;
pub type Ipv6Cache = Cache<Box<str>, RecordSet<Ipv6Addr>>;
pub type PtrCache = Cache<IpAddr, RecordSet<Box<str>>>;

#[derive(Default)]
pub struct Caches {
    pub txt: TxtCache,
    pub mx: MxCache,
    pub ipv4: Ipv4Cache,
    pub ipv6: Ipv6Cache,
    pub ptr: PtrCache,
}
