//! Failed logins per client address and per account: growing delays, and a temporary ban of an
//! address after `limits.auth_failures` failures (SPEC §8). Pure bookkeeping: the caller passes
//! the time, sleeps, and logs.
//!
//! - An address (IPv4, or the /64 of an IPv6 address; IPv4-mapped IPv6 counts as IPv4) that
//!   fails `auth_failures` times, each failure less than `ban_time` after the previous one, is
//!   banned for `ban_time`; its count starts again from zero afterwards. Before that, each of its
//!   failures is answered after a growing delay ([`backoff`]). A success does not reset the count
//!   (an attacker owning one account could otherwise interleave it with guesses).
//! - An account name that fails (from any address) gets the same growing delay on each later
//!   attempt, successful ones included, but is never locked: a lockout would hand attackers a
//!   denial of service against the owner.
//!
//! Both tables are bounded: entries whose time is up are dropped first; beyond the cap the least
//! recently active eighth goes (amortised O(1) per insertion).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses (or /64s) remembered.
pub const MAX_ADDRESSES: usize = 65_536;
/// Most account names remembered (names are client input, possibly of no existing account).
pub const MAX_ACCOUNTS: usize = 16_384;
/// First step of the delay; it doubles with each further failure.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(4);

/// The delay after `n` recent failures: 0, 0.5 s, 1 s, 2 s, 4 s, 4 s, …
pub fn backoff(n: u32) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    FIRST_DELAY
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(MAX_DELAY)
}

/// What is counted for an address: IPv4 as is, IPv6 by its /64 (one customer's network).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    banned_until: Option<Instant>,
}

impl Entry {
    /// Until when this entry matters.
    fn relevant_until(&self, window: Duration) -> Instant {
        let f = self.last + window;
        match self.banned_until {
            Some(b) if b > f => b,
            _ => f,
        }
    }
}

struct Table<K> {
    map: HashMap<K, Entry>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: usize) -> Self {
        Table {
            map: HashMap::new(),
            cap: cap.max(8),
        }
    }

    /// The entry for `key` with failures older than `window` forgotten, if any.
    fn get(&mut self, key: &K, now: Instant, window: Duration) -> Option<&mut Entry> {
        let e = self.map.get_mut(key)?;
        if e.banned_until.is_some_and(|b| b <= now) {
            e.banned_until = None;
            e.failures = 0;
        }
        if now.saturating_duration_since(e.last) >= window {
            e.failures = 0;
        }
        Some(e)
    }

    fn get_or_insert(&mut self, key: K, now: Instant, window: Duration) -> &mut Entry {
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.cap {
                self.make_room(now, window);
            }
            self.map.insert(
                key.clone(),
                Entry {
                    failures: 0,
                    last: now,
                    banned_until: None,
                },
            );
        }
        self.get(&key, now, window).expect("present")
    }

    /// Drops what no longer matters; if that is not enough, the least recently active eighth,
    /// entries without a ban before banned ones.
    fn make_room(&mut self, now: Instant, window: Duration) {
        self.map.retain(|_, e| e.relevant_until(window) > now);
        if self.map.len() < self.cap {
            return;
        }
        let rank = |e: &Entry| {
            (
                e.banned_until.is_some_and(|b| b > now),
                e.relevant_until(window),
            )
        };
        let mut ranks: Vec<(bool, Instant)> = self.map.values().map(rank).collect();
        let k = self.cap / 8;
        let (_, &mut cut, _) = ranks.select_nth_unstable(k);
        self.map.retain(|_, e| rank(e) > cut);
        // Many equal ranks: drop arbitrary ones down to the target.
        let excess = self.map.len().saturating_sub(self.cap - k);
        if excess > 0 {
            let victims: Vec<K> = self.map.keys().take(excess).cloned().collect();
            for v in victims {
                self.map.remove(&v);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The outcome of recording one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// How long to wait before answering (the larger of the address's and the account's).
    pub delay: Duration,
    /// `Some(failures)` when this failure banned the address.
    pub banned: Option<u32>,
}

pub struct Throttle {
    max_failures: u32,
    ban_time: Duration,
    addresses: Mutex<Table<IpAddr>>,
    accounts: Mutex<Table<String>>,
}

impl Throttle {
    pub fn new(max_failures: u32, ban_time: Duration) -> Throttle {
        Self::with_caps(max_failures, ban_time, MAX_ADDRESSES, MAX_ACCOUNTS)
    }

    pub fn with_caps(
        max_failures: u32,
        ban_time: Duration,
        max_addresses: usize,
        max_accounts: usize,
    ) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            ban_time,
            addresses: Mutex::new(Table::new(max_addresses)),
            accounts: Mutex::new(Table::new(max_accounts)),
        }
    }

    pub fn ban_time(&self) -> Duration {
        self.ban_time
    }

    /// Failures count while each follows the previous one within this time.
    fn window(&self) -> Duration {
        self.ban_time
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let window = self.window();
        let mut t = lock(&self.addresses);
        t.get(&address_key(ip), now, window)
            .is_some_and(|e| e.banned_until.is_some())
    }

    /// Addresses banned now (the metrics): one pass over the table, at most its cap of entries.
    pub fn banned_now(&self, now: Instant) -> u64 {
        let t = lock(&self.addresses);
        t.map
            .values()
            .filter(|e| e.banned_until.is_some_and(|b| b > now))
            .count() as u64
    }

    /// The delay every attempt for `account` waits (its recent failures from any address).
    pub fn account_delay(&self, account: &str, now: Instant) -> Duration {
        let window = self.window();
        let mut t = lock(&self.accounts);
        backoff(
            t.get(&account.to_string(), now, window)
                .map_or(0, |e| e.failures),
        )
    }

    /// Records a failed login from `ip` for the (normalised) account name `account`.
    pub fn failure(&self, ip: IpAddr, account: &str, now: Instant) -> Failure {
        let window = self.window();
        let (ip_failures, banned) = {
            let mut t = lock(&self.addresses);
            let e = t.get_or_insert(address_key(ip), now, window);
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            let n = e.failures;
            if n >= self.max_failures && e.banned_until.is_none() {
                e.banned_until = Some(now + self.ban_time);
                e.failures = 0;
                (n, Some(n))
            } else {
                (n, None)
            }
        };
        let account_failures = if account.is_empty() {
            0
        } else {
            let mut t = lock(&self.accounts);
            let e = t.get_or_insert(account.to_string(), now, window);
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            e.failures
        };
        Failure {
            delay: backoff(ip_failures).max(backoff(account_failures)),
            banned,
        }
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (lock(&self.addresses).len(), lock(&self.accounts).len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The tables stay consistent at every step: a panic elsewhere cannot leave them half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn delays_grow_and_are_capped() {
        let d: Vec<u64> = (0..8).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(d, [0, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);

        let t = Throttle::new(10, 60 * SEC);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..4)
            .map(|i| t.failure(ip("192.0.2.1"), "bob@x", now + i * SEC).delay)
            .collect();
        assert_eq!(delays, [backoff(1), backoff(2), backoff(3), backoff(4)]);
    }

    #[test]
    fn ban_after_max_failures_and_expiry() {
        let t = Throttle::new(3, 10 * SEC);
        let now = Instant::now();
        let a = ip("192.0.2.7");
        assert_eq!(t.failure(a, "u1", now).banned, None);
        assert_eq!(t.failure(a, "u2", now + SEC).banned, None);
        assert!(!t.is_banned(a, now + SEC));
        assert_eq!(t.failure(a, "u3", now + 2 * SEC).banned, Some(3));
        assert!(t.is_banned(a, now + 2 * SEC));
        assert!(t.is_banned(a, now + 11 * SEC));
        // Other addresses are not affected.
        assert!(!t.is_banned(ip("192.0.2.8"), now + 3 * SEC));
        // Expired: not banned, and the count starts again.
        assert!(!t.is_banned(a, now + 12 * SEC));
        assert_eq!(t.failure(a, "u1", now + 13 * SEC).banned, None);
        assert_eq!(t.failure(a, "u1", now + 14 * SEC).banned, None);
        assert!(!t.is_banned(a, now + 14 * SEC));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_ban() {
        let t = Throttle::new(3, 10 * SEC);
        let now = Instant::now();
        let a = ip("192.0.2.9");
        for i in 0..10 {
            assert_eq!(t.failure(a, "u", now + i * 11 * SEC).banned, None);
        }
        assert!(!t.is_banned(a, now + 100 * SEC));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::new(3, 10 * SEC);
        let now = Instant::now();
        t.failure(ip("2001:db8:1:2::1"), "u", now);
        t.failure(ip("2001:db8:1:2:ffff::9"), "u", now);
        t.failure(ip("2001:db8:1:2:abcd:1:2:3"), "u", now);
        assert!(t.is_banned(ip("2001:db8:1:2::77"), now));
        assert!(!t.is_banned(ip("2001:db8:1:3::1"), now));
        t.failure(ip("::ffff:192.0.2.1"), "u", now);
        t.failure(ip("192.0.2.1"), "u", now);
        t.failure(ip("::ffff:192.0.2.1"), "u", now);
        assert!(t.is_banned(ip("192.0.2.1"), now));
        assert_eq!(address_key(ip("::1")), ip("::"));
    }

    #[test]
    fn one_account_from_many_addresses_is_slowed_never_banned() {
        let t = Throttle::new(3, 60 * SEC);
        let now = Instant::now();
        for i in 0..20u8 {
            let f = t.failure(IpAddr::from([10, 0, 0, i]), "alice@x", now);
            // Each address failed once: the delay comes from the account.
            assert_eq!(f.delay, backoff(i as u32 + 1));
            assert_eq!(f.banned, None);
        }
        assert_eq!(t.account_delay("alice@x", now), MAX_DELAY);
        assert_eq!(t.account_delay("bob@x", now), Duration::ZERO);
        // The owner's address is not banned; the delay fades with the window.
        assert!(!t.is_banned(ip("10.0.1.1"), now));
        assert_eq!(t.account_delay("alice@x", now + 61 * SEC), Duration::ZERO);
    }

    #[test]
    fn tables_stay_bounded_and_keep_bans() {
        let t = Throttle::with_caps(2, 100 * SEC, 64, 32);
        let now = Instant::now();
        let banned = ip("198.51.100.1");
        t.failure(banned, "", now);
        t.failure(banned, "", now);
        assert!(t.is_banned(banned, now));
        for i in 0..10_000u32 {
            let a = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            t.failure(a, &format!("user{i}"), now + SEC);
        }
        let (addresses, accounts) = t.sizes();
        assert!(addresses <= 64, "{addresses}");
        assert!(accounts <= 32, "{accounts}");
        // The ban outlives the flood of one-off failures that came later.
        assert!(t.is_banned(banned, now + 2 * SEC));
        // Expired entries go first.
        let t = Throttle::with_caps(2, SEC, 16, 16);
        for i in 0..16u8 {
            t.failure(IpAddr::from([10, 1, 0, i]), "", now);
        }
        t.failure(ip("10.2.0.1"), "", now + 5 * SEC);
        assert_eq!(t.sizes().0, 1);
    }
}
