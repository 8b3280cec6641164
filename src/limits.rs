//! Connections per client address and logged-in sessions per account (SPEC §8).
//!
//! [`ConnTracker`] (one per server, in [`crate::server::App`]) counts, per client address (IPv4:
//! the address; IPv6: its /64, since one host usually owns a whole /64):
//! - MX sessions (`limits.mx_per_ip`);
//! - IMAP and submission connections that have not logged in, both protocols counted together
//!   (`limits.unauthenticated_per_ip`): one limit per address, whatever port it fills;
//! - logged-in IMAP sessions per account and address (`limits.sessions_per_user_ip`).
//!
//! The accept loop asks for a [`Ticket`] before it spawns a session; the ticket moves into the
//! session's task and gives its count back when dropped, however the task ends. A successful
//! login moves the ticket from the unauthenticated count to the account's ([`Ticket::login`]),
//! and registers it for [`ConnTracker::end_sessions`], which `tanba user del` / `user passwd` use
//! to end an account's live sessions: each session selects on [`Ticket::revoked`].
//!
//! Memory is bounded by the live connections: a map entry exists only while its count is above
//! zero, and the number of connections is bounded by the per-protocol pools.
//!
//! It also keeps the MX message rate per client address (`limits.mx_messages_per_ip` per
//! `limits.mx_messages_window`, [`ConnTracker::mx_message`]): a token bucket per address, shared
//! by all of that address's sessions, holding `mx_messages_per_ip` tokens and refilled at that
//! many per window. A bucket that has refilled completely is the same as none, so such entries
//! are swept (at most once per window, O(entries)); at most [`MAX_RATE_ENTRIES`] addresses are
//! tracked, and a new address beyond that is refused like one over its limit until a sweep makes
//! room (docs/security.md, "MX message rate").

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::LimitsConfig;

/// What a new connection counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An MX session (never logs in).
    Mx,
    /// IMAP or submission before login.
    Unauthenticated,
}

/// Which limit refused a connection or a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Mx,
    Unauthenticated,
    UserSessions,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Mx => "too many MX sessions from this address (limits.mx_per_ip)",
            Refused::Unauthenticated => {
                "too many connections not logged in from this address (limits.unauthenticated_per_ip)"
            }
            Refused::UserSessions => {
                "too many sessions of this account from this address (limits.sessions_per_user_ip)"
            }
        })
    }
}

/// A client address as counted: an IPv4 address (IPv4-mapped IPv6 included), or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(_) => Client(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Client(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

#[derive(Default)]
struct State {
    mx: HashMap<Client, usize>,
    unauthenticated: HashMap<Client, usize>,
    /// Logged-in sessions by (account id, client).
    users: HashMap<(u64, Client), usize>,
    /// Logged-in sessions by account, with the channel that ends them.
    accounts: HashMap<u64, Sessions>,
    next_generation: u64,
}

/// The logged-in sessions of one account since its last [`ConnTracker::end_sessions`].
struct Sessions {
    count: usize,
    /// Tells a ticket whether this entry is still the one it registered with.
    generation: u64,
    /// `true` ends every session that holds a receiver.
    end: watch::Sender<bool>,
}

/// Addresses whose MX message rate is tracked at once, at most.
pub const MAX_RATE_ENTRIES: usize = 100_000;

/// Why [`ConnTracker::mx_message`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefused {
    /// The address used up its `limits.mx_messages_per_ip`; `first`: the first refusal since
    /// its last accepted message (log that one, not every retry).
    OverLimit { first: bool },
    /// [`MAX_RATE_ENTRIES`] other addresses are being tracked.
    Full,
}

/// The MX message rate (`limits.mx_messages_per_ip`): token buckets per client address.
struct Rate {
    /// Tokens per bucket (and per window); 0: no limit.
    limit: u32,
    window: Duration,
    buckets: HashMap<Client, Bucket>,
    last_sweep: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refused since the last accepted message.
    refused: bool,
}

impl Rate {
    /// Tokens of `b` at `now`.
    fn refill(&self, b: &Bucket, now: Instant) -> f64 {
        let per_sec = f64::from(self.limit) / self.window.as_secs_f64();
        let t = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec;
        t.min(f64::from(self.limit))
    }

    /// Drops the buckets that are full again (as good as absent).
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let (limit, window) = (f64::from(self.limit), self.window);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < window && b.tokens < limit);
    }
}

/// Counts connections per client address and logged-in sessions per account.
pub struct ConnTracker {
    /// The three limits; atomics so that a reload (SIGHUP) can change them in place
    /// ([`ConnTracker::set_limits`]): counts already held stay, new connections see the new limit.
    mx_per_ip: AtomicUsize,
    unauthenticated_per_ip: AtomicUsize,
    sessions_per_user_ip: AtomicUsize,
    state: Mutex<State>,
    rate: Mutex<Rate>,
}

fn increment<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl ConnTracker {
    pub fn new(limits: &LimitsConfig) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            mx_per_ip: AtomicUsize::new(limits.mx_per_ip),
            unauthenticated_per_ip: AtomicUsize::new(limits.unauthenticated_per_ip),
            sessions_per_user_ip: AtomicUsize::new(limits.sessions_per_user_ip),
            state: Mutex::new(State::default()),
            rate: Mutex::new(Rate {
                limit: limits.mx_messages_per_ip,
                window: limits.mx_messages_window,
                buckets: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        })
    }

    /// New per-address limits (reload): they apply from the next connection or login.
    pub fn set_limits(&self, limits: &LimitsConfig) {
        self.mx_per_ip.store(limits.mx_per_ip, Relaxed);
        self.unauthenticated_per_ip
            .store(limits.unauthenticated_per_ip, Relaxed);
        self.sessions_per_user_ip
            .store(limits.sessions_per_user_ip, Relaxed);
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        if (r.limit, r.window) != (limits.mx_messages_per_ip, limits.mx_messages_window) {
            // Buckets of the old rate mean nothing under the new one: every address starts full.
            r.limit = limits.mx_messages_per_ip;
            r.window = limits.mx_messages_window;
            r.buckets.clear();
        }
    }

    /// Takes one MX message (a MAIL command) from `ip`'s budget, or says why not.
    pub fn mx_message(&self, ip: IpAddr) -> Result<(), RateRefused> {
        self.mx_message_at(ip, Instant::now())
    }

    fn mx_message_at(&self, ip: IpAddr, now: Instant) -> Result<(), RateRefused> {
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        if r.limit == 0 {
            return Ok(());
        }
        let client = Client::of(ip);
        if now.saturating_duration_since(r.last_sweep) >= r.window {
            r.sweep(now);
        }
        if !r.buckets.contains_key(&client) && r.buckets.len() >= MAX_RATE_ENTRIES {
            // Full: sweep now, but at most once a second (each sweep visits every entry).
            if now.saturating_duration_since(r.last_sweep) >= Duration::from_secs(1) {
                r.sweep(now);
            }
            if r.buckets.len() >= MAX_RATE_ENTRIES {
                return Err(RateRefused::Full);
            }
        }
        let (tokens, refused) = match r.buckets.get(&client) {
            Some(b) => (r.refill(b, now), b.refused),
            None => (f64::from(r.limit), false),
        };
        let ok = tokens >= 1.0;
        r.buckets.insert(
            client,
            Bucket {
                tokens: if ok { tokens - 1.0 } else { tokens },
                at: now,
                refused: !ok,
            },
        );
        if ok {
            Ok(())
        } else {
            Err(RateRefused::OverLimit { first: !refused })
        }
    }

    /// Addresses whose message rate is tracked now.
    pub fn rate_entries(&self) -> usize {
        self.rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts stay consistent even if a holder panicked: every change is one statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or says which limit it would exceed.
    pub fn open(self: &Arc<Self>, ip: IpAddr, class: Class) -> Result<Ticket, Refused> {
        let client = Client::of(ip);
        let mut st = self.lock();
        let (map, limit, refused, held) = match class {
            Class::Mx => (
                &mut st.mx,
                self.mx_per_ip.load(Relaxed),
                Refused::Mx,
                Held::Mx,
            ),
            Class::Unauthenticated => (
                &mut st.unauthenticated,
                self.unauthenticated_per_ip.load(Relaxed),
                Refused::Unauthenticated,
                Held::Unauthenticated,
            ),
        };
        if map.get(&client).copied().unwrap_or(0) >= limit {
            return Err(refused);
        }
        increment(map, client);
        Ok(Ticket {
            tracker: Some(self.clone()),
            client,
            held,
            end: None,
        })
    }

    /// Ends every live logged-in session of `account` (IMAP and SMTP): each sees
    /// [`Ticket::revoked`] complete. Returns how many were told.
    pub fn end_sessions(&self, account: u64) -> usize {
        let entry = self.lock().accounts.remove(&account);
        match entry {
            Some(s) => {
                s.end.send_replace(true);
                s.count
            }
            None => 0,
        }
    }

    /// (MX, unauthenticated, logged-in) connections counted for `ip` now.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize, usize) {
        let c = Client::of(ip);
        let st = self.lock();
        let users = st
            .users
            .iter()
            .filter(|((_, k), _)| *k == c)
            .map(|(_, n)| n)
            .sum();
        (
            st.mx.get(&c).copied().unwrap_or(0),
            st.unauthenticated.get(&c).copied().unwrap_or(0),
            users,
        )
    }

    /// Whether nothing is counted at all (every ticket returned).
    pub fn is_empty(&self) -> bool {
        let st = self.lock();
        st.mx.is_empty()
            && st.unauthenticated.is_empty()
            && st.users.is_empty()
            && st.accounts.is_empty()
    }
}

/// Whether `account`, as it was when its password was verified, is still what the store holds
/// (same id, same password hash). Checked after [`Ticket::login`], so that a `user del` /
/// `user passwd` either shows here or ends the session through [`ConnTracker::end_sessions`].
pub fn still_current(store: &crate::store::Store, account: &crate::store::Account) -> bool {
    matches!(
        store.account(&account.email),
        Ok(Some(a)) if a.id == account.id && a.password_hash == account.password_hash
    )
}

/// What a ticket is counted as right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    Mx,
    Unauthenticated,
    User { account: u64, generation: u64 },
}

/// One connection's place in the counts; gives it back when dropped.
pub struct Ticket {
    tracker: Option<Arc<ConnTracker>>,
    client: Client,
    held: Held,
    /// Set once logged in: becomes `true` when the account's sessions are ended.
    end: Option<watch::Receiver<bool>>,
}

impl Ticket {
    /// A ticket that counts nothing and is never revoked (sessions in unit tests).
    pub fn detached(ip: IpAddr) -> Ticket {
        Ticket {
            tracker: None,
            client: Client::of(ip),
            held: Held::Nothing,
            end: None,
        }
    }

    /// The client address as counted (for logs).
    pub fn client(&self) -> Client {
        self.client
    }

    /// A successful login as `account`: the connection leaves the unauthenticated count and
    /// joins the account's sessions. With `per_ip_limit` (IMAP), refused when the account already
    /// has `limits.sessions_per_user_ip` sessions from this address; the ticket is then unchanged.
    pub fn login(&mut self, account: u64, per_ip_limit: bool) -> Result<(), Refused> {
        let Some(tracker) = self.tracker.clone() else {
            return Ok(());
        };
        let mut st = tracker.lock();
        let key = (account, self.client);
        if per_ip_limit
            && st.users.get(&key).copied().unwrap_or(0)
                >= tracker.sessions_per_user_ip.load(Relaxed)
        {
            return Err(Refused::UserSessions);
        }
        release(&mut st, self.client, self.held);
        increment(&mut st.users, key);
        let next = st.next_generation + 1;
        let s = st.accounts.entry(account).or_insert_with(|| Sessions {
            count: 0,
            generation: next,
            end: watch::channel(false).0,
        });
        s.count += 1;
        let generation = s.generation;
        let rx = s.end.subscribe();
        if generation == next {
            st.next_generation = next;
        }
        self.held = Held::User {
            account,
            generation,
        };
        self.end = Some(rx);
        Ok(())
    }

    /// Ends this session as if its account had changed (a login that raced `user del/passwd`).
    pub fn revoke(&mut self) {
        let (tx, rx) = watch::channel(true);
        drop(tx);
        self.end = Some(rx);
    }

    /// Whether the account's sessions have been ended (between commands, sessions check this).
    pub fn is_revoked(&self) -> bool {
        self.end.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Completes when the account's sessions are ended; never before login. Owns what it needs,
    /// so a session can select on it while it uses its connection.
    pub fn revoked(&self) -> impl Future<Output = ()> + Send + 'static {
        let rx = self.end.clone();
        async move {
            if let Some(mut rx) = rx {
                if rx.wait_for(|&ended| ended).await.is_ok() {
                    return;
                }
            }
            std::future::pending::<()>().await
        }
    }
}

/// Gives back what `held` counts.
fn release(st: &mut State, client: Client, held: Held) {
    match held {
        Held::Nothing => {}
        Held::Mx => decrement(&mut st.mx, client),
        Held::Unauthenticated => decrement(&mut st.unauthenticated, client),
        Held::User {
            account,
            generation,
        } => {
            decrement(&mut st.users, (account, client));
            // After end_sessions the account's entry is gone or a newer one: leave it alone.
            if let Some(s) = st.accounts.get_mut(&account) {
                if s.generation == generation {
                    s.count = s.count.saturating_sub(1);
                    if s.count == 0 {
                        st.accounts.remove(&account);
                    }
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(t) = self.tracker.take() {
            release(&mut t.lock(), self.client, self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(unauth: usize, mx: usize, per_user: usize) -> Arc<ConnTracker> {
        let mut l = crate::config::Config::from_toml("", None).unwrap().limits;
        l.unauthenticated_per_ip = unauth;
        l.mx_per_ip = mx;
        l.sessions_per_user_ip = per_user;
        ConnTracker::new(&l)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Client::of(ip("2001:db8:1:2:aaaa::1")),
            Client::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::of(ip("::ffff:192.0.2.7")),
            Client::of(ip("192.0.2.7"))
        );
        assert_eq!(
            Client::of(ip("2001:db8:1:2:aaaa::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        let t = tracker(2, 2, 2);
        let _a = t.open(ip("2001:db8::1"), Class::Mx).unwrap();
        let _b = t.open(ip("2001:db8::2"), Class::Mx).unwrap();
        assert_eq!(
            t.open(ip("2001:db8::3"), Class::Mx).err(),
            Some(Refused::Mx)
        );
        assert!(t.open(ip("2001:db8:0:1::1"), Class::Mx).is_ok());
    }

    #[test]
    fn counts_return_however_tickets_end() {
        let t = tracker(2, 1, 1);
        let a = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        let mut b = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        assert_eq!(
            t.open(ip("10.0.0.1"), Class::Unauthenticated).err(),
            Some(Refused::Unauthenticated)
        );
        // Other classes and other addresses are separate.
        let m = t.open(ip("10.0.0.1"), Class::Mx).unwrap();
        assert_eq!(t.open(ip("10.0.0.1"), Class::Mx).err(), Some(Refused::Mx));
        let _c = t.open(ip("10.0.0.2"), Class::Unauthenticated).unwrap();
        // A login moves the connection out of the unauthenticated count.
        b.login(7, true).unwrap();
        assert_eq!(t.counts(ip("10.0.0.1")), (1, 1, 1));
        let mut d = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        let mut e = t.open(ip("10.0.0.9"), Class::Unauthenticated).unwrap();
        // A second session of account 7 from 10.0.0.1 is over the limit of 1: nothing changes.
        assert_eq!(d.login(7, true).err(), Some(Refused::UserSessions));
        assert_eq!(t.counts(ip("10.0.0.1")), (1, 2, 1));
        // SMTP (no per-IP limit) and another address are fine.
        d.login(7, false).unwrap();
        e.login(7, true).unwrap();
        drop((a, b, m, d, e, _c));
        assert!(t.is_empty());
    }

    #[test]
    fn mx_message_rate_per_address_refills_over_the_window() {
        let mut l = crate::config::Config::from_toml("", None).unwrap().limits;
        l.mx_messages_per_ip = 3;
        l.mx_messages_window = Duration::from_secs(60);
        let t = ConnTracker::new(&l);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.mx_message_at(a, t0), Ok(()));
        }
        assert_eq!(
            t.mx_message_at(a, t0),
            Err(RateRefused::OverLimit { first: true })
        );
        assert_eq!(
            t.mx_message_at(a, t0),
            Err(RateRefused::OverLimit { first: false })
        );
        // Another address has its own budget; one /64 is one address.
        assert_eq!(t.mx_message_at(ip("192.0.2.2"), t0), Ok(()));
        let v6 = |s| t.mx_message_at(ip(s), t0);
        for _ in 0..3 {
            assert_eq!(v6("2001:db8::1"), Ok(()));
        }
        assert_eq!(
            v6("2001:db8::2"),
            Err(RateRefused::OverLimit { first: true })
        );
        // A third of the window gives one message back; a whole window all of them.
        let later = t0 + Duration::from_secs(20);
        assert_eq!(t.mx_message_at(a, later), Ok(()));
        assert_eq!(
            t.mx_message_at(a, later),
            Err(RateRefused::OverLimit { first: true })
        );
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(t.mx_message_at(a, much_later), Ok(()));
        }
        // Refilled buckets are swept: only the address just used is left.
        assert_eq!(t.rate_entries(), 1);
        // 0: no limit, nothing tracked.
        l.mx_messages_per_ip = 0;
        t.set_limits(&l);
        for _ in 0..100 {
            assert_eq!(t.mx_message_at(a, much_later), Ok(()));
        }
        assert_eq!(t.rate_entries(), 0);
    }

    #[tokio::test]
    async fn end_sessions_ends_the_accounts_sessions_only() {
        let t = tracker(10, 10, 10);
        let mut a = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        let mut b = t.open(ip("10.0.0.2"), Class::Unauthenticated).unwrap();
        let mut other = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        let before = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        a.login(1, true).unwrap();
        b.login(1, false).unwrap();
        other.login(2, true).unwrap();
        let wait = tokio::spawn(a.revoked());
        assert!(!a.is_revoked());
        assert_eq!(t.end_sessions(1), 2);
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
        assert!(a.is_revoked() && b.is_revoked());
        assert!(!other.is_revoked() && !before.is_revoked());
        // Never before login.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), before.revoked())
                .await
                .is_err()
        );
        // A new login after the change is a new generation; old tickets dropping later leave it.
        let mut c = t.open(ip("10.0.0.1"), Class::Unauthenticated).unwrap();
        c.login(1, true).unwrap();
        drop((a, b));
        assert!(!c.is_revoked());
        assert_eq!(t.end_sessions(1), 1);
        assert!(c.is_revoked());
        drop((c, other, before));
        assert!(t.is_empty());
    }
}
