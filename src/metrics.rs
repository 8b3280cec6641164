//! What the running server counts, for Prometheus (`GET /metrics` on the `http.metrics`
//! listener, SPEC §11; the route is `http/metrics.rs`).
//!
//! One process-wide [`Registry`], [`REGISTRY`], of plain atomics: counters and histograms that
//! the code bumps where the thing happens (one line at each place), the connection gauge that
//! moves with a guard ([`Registry::connection`]), and gauges measured only when scraped
//! ([`Scrape`]: queue, store size, current bans), so that no event pays for them. Every label
//! value comes from a fixed list below, never from a client's string: the set of series is
//! fixed when the process starts, nothing here allocates per event or grows with traffic, and a
//! value outside its list is counted under `other` (or, in a list without one, not at all).
//!
//! [`Registry::render`] writes the Prometheus text exposition format 0.0.4 (`# HELP`,
//! `# TYPE`, one `name{label="value"} number` line per series; label values and help texts
//! escaped as the format says). Nothing here depends on the rest of the crate: the store, the
//! sessions and the filter's caller call into it, it calls none of them.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The registry of this process (there is one server per process).
pub static REGISTRY: Registry = Registry::new();

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// Counters by one label whose values come from a fixed list.
pub struct Family<const N: usize> {
    label: &'static str,
    values: [&'static str; N],
    cells: [AtomicU64; N],
}

/// Where `value` sits in `values`, else where `other` does.
fn index_of(values: &[&str], value: &str) -> Option<usize> {
    values
        .iter()
        .position(|v| *v == value)
        .or_else(|| values.iter().position(|v| *v == "other"))
}

impl<const N: usize> Family<N> {
    pub const fn new(label: &'static str, values: [&'static str; N]) -> Family<N> {
        Family {
            label,
            values,
            cells: [const { AtomicU64::new(0) }; N],
        }
    }

    /// Adds `n` to the series of `value` (see the module docs for values not in the list).
    pub fn add(&self, value: &str, n: u64) {
        if let Some(i) = index_of(&self.values, value) {
            self.cells[i].fetch_add(n, Relaxed);
        }
    }

    pub fn inc(&self, value: &str) {
        self.add(value, 1);
    }

    pub fn get(&self, value: &str) -> u64 {
        index_of(&self.values, value).map_or(0, |i| self.cells[i].load(Relaxed))
    }
}

/// Counters by two labels, each with a fixed list of values.
pub struct Family2<const A: usize, const B: usize> {
    labels: (&'static str, &'static str),
    a: [&'static str; A],
    b: [&'static str; B],
    cells: [[AtomicU64; B]; A],
}

impl<const A: usize, const B: usize> Family2<A, B> {
    pub const fn new(
        labels: (&'static str, &'static str),
        a: [&'static str; A],
        b: [&'static str; B],
    ) -> Family2<A, B> {
        Family2 {
            labels,
            a,
            b,
            cells: [const { [const { AtomicU64::new(0) }; B] }; A],
        }
    }

    pub fn inc(&self, a: &str, b: &str) {
        if let (Some(i), Some(j)) = (index_of(&self.a, a), index_of(&self.b, b)) {
            self.cells[i][j].fetch_add(1, Relaxed);
        }
    }

    pub fn get(&self, a: &str, b: &str) -> u64 {
        match (index_of(&self.a, a), index_of(&self.b, b)) {
            (Some(i), Some(j)) => self.cells[i][j].load(Relaxed),
            _ => 0,
        }
    }
}

/// Most bucket bounds a [`Histogram`] has (plus the `+Inf` bucket).
const MAX_BUCKETS: usize = 15;

/// A histogram of durations with fixed bucket bounds (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative: `buckets[i]` counts `bounds[i-1] < v <=
    /// bounds[i]`, the one after the last bound everything larger. Summed when rendered.
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `bounds` ascending, at most [`MAX_BUCKETS`] of them (checked when the registry is built,
    /// at compile time for [`REGISTRY`]).
    pub const fn new(bounds: &'static [f64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS);
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets[..=self.bounds.len()]
            .iter()
            .map(|b| b.load(Relaxed))
            .sum()
    }
}

/// What a connection is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP on the MX port.
    Smtp,
    /// SMTP submission (587 and 465).
    Submission,
    /// IMAP (143 and 993).
    Imap,
}

impl Protocol {
    pub const NAMES: [&'static str; 3] = ["smtp", "submission", "imap"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Open connections by protocol; also counts each one accepted.
pub struct Connections {
    open: [AtomicI64; 3],
    pub accepted: Family<3>,
}

/// One open connection in [`Registry::connections`]; leaves the gauge when dropped, however
/// its session ends.
pub struct ConnectionGuard {
    registry: &'static Registry,
    protocol: Protocol,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.registry.connections.open[self.protocol as usize].fetch_sub(1, Relaxed);
    }
}

/// Measured when scraped (see the module docs); `None` when that failed, and the series is
/// left out.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Messages in the outbound queue.
    pub queue_messages: Option<u64>,
    /// Age of the oldest queued message (0 when the queue is empty).
    pub queue_oldest_age: Option<Duration>,
    /// Bytes the store takes on disk.
    pub store_bytes: Option<u64>,
    /// Client addresses banned for failed logins now.
    pub bans: Option<u64>,
}

/// Every metric the server exposes. Field docs are the `# HELP` texts' short form; the render
/// order is [`Registry::render`]'s.
pub struct Registry {
    /// Unix time (seconds) when `tanba serve` started; 0 before.
    start_time: AtomicU64,
    /// Messages accepted (`250` after DATA), by the listener that received them.
    pub received: Family<2>,
    /// Local: copies stored into a mailbox. Remote: recipients another server accepted.
    pub delivered: Family<2>,
    /// Remote recipients answered with a temporary failure (each attempt).
    pub deferred: Counter,
    /// Remote recipients given up: refused permanently, or expired in the queue.
    pub bounced: Counter,
    /// Signature verdicts of filtered messages (SPEC §5).
    pub verdicts: Family<5>,
    /// Why signers did not pass (SPEC §5 reasons), one per such signer.
    pub reasons: Family<12>,
    /// Time the signature filter took per message (with revocation fetches).
    pub filter_duration: Histogram,
    pub connections: Connections,
    /// Connections refused at accept, by protocol and why.
    pub refused: Family2<3, 3>,
    /// Password logins by protocol and result.
    pub logins: Family2<3, 4>,
    /// Addresses banned for failed logins.
    pub bans: Counter,
    /// One group commit: sled's flush and the fdatasync of its log.
    pub store_sync: Histogram,
    /// Sender authentication results on MX mail, one per Authentication-Results clause.
    pub sender_auth: Family2<4, 9>,
}

/// SPEC §5's reasons, and `other` for one added later.
pub const REASONS: [&str; 12] = [
    "digest-mismatch",
    "bad-signature",
    "untrusted",
    "expired",
    "not-yet-valid",
    "revoked",
    "key-usage",
    "no-certificate",
    "malformed",
    "unsupported-algorithm",
    "revocation-unknown",
    "other",
];

/// Latency bounds (seconds): the filter takes about a millisecond per signature, seconds with
/// a revocation fetch.
const FILTER_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// A group commit is an fdatasync: sub-millisecond on NVMe, tens of ms on a busy disk.
const SYNC_BOUNDS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            start_time: AtomicU64::new(0),
            received: Family::new("listener", ["mx", "submission"]),
            delivered: Family::new("destination", ["local", "remote"]),
            deferred: Counter::new(),
            bounced: Counter::new(),
            verdicts: Family::new("result", ["pass", "fail", "permerror", "temperror", "none"]),
            reasons: Family::new("reason", REASONS),
            filter_duration: Histogram::new(&FILTER_BOUNDS),
            connections: Connections {
                open: [const { AtomicI64::new(0) }; 3],
                accepted: Family::new("protocol", Protocol::NAMES),
            },
            refused: Family2::new(
                ("protocol", "reason"),
                Protocol::NAMES,
                ["pool", "per_address", "banned"],
            ),
            logins: Family2::new(
                ("protocol", "result"),
                ["smtp", "imap", "http"],
                ["success", "failure", "banned", "error"],
            ),
            bans: Counter::new(),
            store_sync: Histogram::new(&SYNC_BOUNDS),
            sender_auth: Family2::new(
                ("method", "result"),
                ["spf", "dkim", "dmarc", "arc"],
                [
                    "pass",
                    "fail",
                    "softfail",
                    "neutral",
                    "none",
                    "policy",
                    "temperror",
                    "permerror",
                    "other",
                ],
            ),
        }
    }

    /// Records the process start (once, by `serve`).
    pub fn started(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.start_time.store(now, Relaxed);
    }

    /// Counts an accepted connection; it stays in the open gauge while the guard lives.
    pub fn connection(&'static self, protocol: Protocol) -> ConnectionGuard {
        self.connections.open[protocol as usize].fetch_add(1, Relaxed);
        self.connections.accepted.inc(protocol.as_str());
        ConnectionGuard {
            registry: self,
            protocol,
        }
    }

    /// Connections of `protocol` open now.
    pub fn open_connections(&self, protocol: Protocol) -> i64 {
        self.connections.open[protocol as usize].load(Relaxed)
    }

    /// Counts the clauses of an `Authentication-Results` list (`spf=pass smtp.mailfrom=…`):
    /// each `method=result` of a method in the list, by its result.
    pub fn sender_auth_clauses<'a>(&self, clauses: impl IntoIterator<Item = &'a str>) {
        for c in clauses {
            let word = c.split([' ', ';']).next().unwrap_or("");
            if let Some((method, result)) = word.split_once('=') {
                if self.sender_auth.a.contains(&method) {
                    self.sender_auth.inc(method, result);
                }
            }
        }
    }

    /// The whole registry and `scrape` in the text format (module docs).
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut e = Encoder::default();
        e.header(
            "tanba_build_info",
            "Tanba's version; the value is always 1.",
            "gauge",
        );
        e.sample(
            "tanba_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            Value::U(1),
        );
        e.single(
            "tanba_process_start_time_seconds",
            "Start time of the server process since the Unix epoch, in seconds.",
            "gauge",
            Value::U(self.start_time.load(Relaxed)),
        );
        e.family(
            "tanba_messages_received_total",
            "Messages accepted over SMTP (250 after DATA), by the listener that received them.",
            &self.received,
        );
        e.family(
            "tanba_messages_delivered_total",
            "Deliveries: local = copies stored into a mailbox, remote = recipients another \
             server accepted.",
            &self.delivered,
        );
        e.single(
            "tanba_messages_deferred_total",
            "Remote recipients answered with a temporary failure, counted per attempt.",
            "counter",
            Value::U(self.deferred.get()),
        );
        e.single(
            "tanba_messages_bounced_total",
            "Remote recipients given up (refused permanently or expired in the queue).",
            "counter",
            Value::U(self.bounced.get()),
        );
        e.family(
            "tanba_signature_verdicts_total",
            "Signature verdicts of messages the filter checked (SPEC §5), by result.",
            &self.verdicts,
        );
        e.family(
            "tanba_signature_reasons_total",
            "Signers that did not pass, by reason (SPEC §5).",
            &self.reasons,
        );
        e.histogram(
            "tanba_filter_duration_seconds",
            "Time the signature filter took per message, revocation fetches included.",
            &self.filter_duration,
        );
        e.header(
            "tanba_queue_messages",
            "Messages in the outbound queue.",
            "gauge",
        );
        if let Some(n) = scrape.queue_messages {
            e.sample("tanba_queue_messages", &[], Value::U(n));
        }
        e.header(
            "tanba_queue_oldest_age_seconds",
            "Age of the oldest message in the outbound queue, in seconds (0: empty).",
            "gauge",
        );
        if let Some(d) = scrape.queue_oldest_age {
            e.sample("tanba_queue_oldest_age_seconds", &[], Value::U(d.as_secs()));
        }
        e.header(
            "tanba_connections",
            "Connections open now, by protocol.",
            "gauge",
        );
        for (i, p) in Protocol::NAMES.iter().enumerate() {
            let n = self.connections.open[i].load(Relaxed).max(0);
            e.sample("tanba_connections", &[("protocol", p)], Value::I(n));
        }
        e.family(
            "tanba_connections_accepted_total",
            "Connections accepted, by protocol.",
            &self.connections.accepted,
        );
        e.family2(
            "tanba_connections_refused_total",
            "Connections refused at accept, by protocol and reason (pool full, too many from \
             the address, banned address).",
            &self.refused,
        );
        e.family2(
            "tanba_logins_total",
            "Password logins, by protocol and result.",
            &self.logins,
        );
        e.header(
            "tanba_bans",
            "Client addresses banned for failed logins now.",
            "gauge",
        );
        if let Some(n) = scrape.bans {
            e.sample("tanba_bans", &[], Value::U(n));
        }
        e.single(
            "tanba_bans_total",
            "Client addresses banned for failed logins since start.",
            "counter",
            Value::U(self.bans.get()),
        );
        e.histogram(
            "tanba_store_sync_duration_seconds",
            "Time of one group commit of the store: database flush and fdatasync.",
            &self.store_sync,
        );
        e.header(
            "tanba_store_bytes",
            "Bytes the store takes on disk: database files and message files.",
            "gauge",
        );
        if let Some(n) = scrape.store_bytes {
            e.sample("tanba_store_bytes", &[], Value::U(n));
        }
        e.family2(
            "tanba_sender_auth_results_total",
            "Sender authentication results of MX mail, one per Authentication-Results clause.",
            &self.sender_auth,
        );
        e.out
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    U(u64),
    I(i64),
    F(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::U(n) => write!(f, "{n}"),
            Value::I(n) => write!(f, "{n}"),
            // The format's spellings of the special values (Go's ParseFloat reads them).
            Value::F(x) if x.is_nan() => f.write_str("NaN"),
            Value::F(x) if x == f64::INFINITY => f.write_str("+Inf"),
            Value::F(x) if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::F(x) => write!(f, "{x}"),
        }
    }
}

/// Writes the text exposition format, version 0.0.4.
#[derive(Default)]
struct Encoder {
    out: String,
}

impl Encoder {
    /// `# HELP` (backslash and line feed escaped) and `# TYPE` lines of a metric.
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line; label values escaped (backslash, double quote, line feed).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, help: &str, kind: &str, value: Value) {
        self.header(name, help, kind);
        self.sample(name, &[], value);
    }

    fn family<const N: usize>(&mut self, name: &str, help: &str, f: &Family<N>) {
        self.header(name, help, "counter");
        for (v, c) in f.values.iter().zip(&f.cells) {
            self.sample(name, &[(f.label, v)], Value::U(c.load(Relaxed)));
        }
    }

    fn family2<const A: usize, const B: usize>(
        &mut self,
        name: &str,
        help: &str,
        f: &Family2<A, B>,
    ) {
        self.header(name, help, "counter");
        for (a, row) in f.a.iter().zip(&f.cells) {
            for (b, c) in f.b.iter().zip(row) {
                self.sample(
                    name,
                    &[(f.labels.0, a), (f.labels.1, b)],
                    Value::U(c.load(Relaxed)),
                );
            }
        }
    }

    /// Cumulative `_bucket` series with `le`, then `_sum` and `_count` (= the `+Inf` bucket).
    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut total = 0;
        for (i, bound) in h.bounds.iter().enumerate() {
            total += h.buckets[i].load(Relaxed);
            let le = Value::F(*bound).to_string();
            self.sample(&bucket, &[("le", &le)], Value::U(total));
        }
        total += h.buckets[h.bounds.len()].load(Relaxed);
        self.sample(&bucket, &[("le", "+Inf")], Value::U(total));
        let sum = h.sum_nanos.load(Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], Value::F(sum));
        self.sample(&format!("{name}_count"), &[], Value::U(total));
    }
}

/// `# HELP` text: backslash and line feed escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_writes_help_type_and_escapes() {
        let mut e = Encoder::default();
        e.header("tanba_x_total", "Back\\slash and\nline feed.", "counter");
        e.sample(
            "tanba_x_total",
            &[("a", "q\"uote"), ("b", "back\\slash\nnl")],
            Value::U(7),
        );
        e.sample("tanba_y", &[], Value::F(0.25));
        e.sample("tanba_z", &[], Value::F(f64::INFINITY));
        e.sample("tanba_w", &[], Value::I(-3));
        assert_eq!(
            e.out,
            "# HELP tanba_x_total Back\\\\slash and\\nline feed.\n\
             # TYPE tanba_x_total counter\n\
             tanba_x_total{a=\"q\\\"uote\",b=\"back\\\\slash\\nnl\"} 7\n\
             tanba_y 0.25\n\
             tanba_z +Inf\n\
             tanba_w -3\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_is_the_inf_bucket() {
        static BOUNDS: [f64; 2] = [0.01, 1.0];
        let h = Histogram::new(&BOUNDS);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(10)); // on the bound: `le` is inclusive
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(3));
        let mut e = Encoder::default();
        e.histogram("tanba_h_seconds", "H.", &h);
        assert_eq!(
            e.out,
            "# HELP tanba_h_seconds H.\n\
             # TYPE tanba_h_seconds histogram\n\
             tanba_h_seconds_bucket{le=\"0.01\"} 2\n\
             tanba_h_seconds_bucket{le=\"1\"} 3\n\
             tanba_h_seconds_bucket{le=\"+Inf\"} 4\n\
             tanba_h_seconds_sum 3.515\n\
             tanba_h_seconds_count 4\n"
        );
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn labels_outside_their_list_go_to_other_or_nowhere() {
        let r = Registry::new();
        r.reasons.inc("expired");
        r.reasons.inc("a-reason-added-later");
        assert_eq!(r.reasons.get("expired"), 1);
        assert_eq!(r.reasons.get("other"), 1);
        // `verdicts` has no `other`: an unknown value is not counted.
        r.verdicts.inc("bogus");
        let text = r.render(&Scrape::default());
        assert!(!text.contains("bogus"));
        assert!(text.contains("tanba_signature_verdicts_total{result=\"pass\"} 0\n"));
        r.sender_auth_clauses([
            "spf=pass smtp.mailfrom=a@b.kz",
            "spf=softfail smtp.helo=b.kz",
            "dkim=neutral header.d=b.kz",
            "dmarc=weird",
            "auth=pass smtp.auth=x",
            "garbage",
        ]);
        assert_eq!(r.sender_auth.get("spf", "pass"), 1);
        assert_eq!(r.sender_auth.get("spf", "softfail"), 1);
        assert_eq!(r.sender_auth.get("dkim", "neutral"), 1);
        assert_eq!(r.sender_auth.get("dmarc", "other"), 1);
        let text = r.render(&Scrape::default());
        assert!(!text.contains("method=\"auth\""));
    }

    #[test]
    fn connection_gauge_follows_the_guard() {
        static R: Registry = Registry::new();
        let a = R.connection(Protocol::Imap);
        let b = R.connection(Protocol::Imap);
        assert_eq!(R.open_connections(Protocol::Imap), 2);
        drop(a);
        assert_eq!(R.open_connections(Protocol::Imap), 1);
        drop(b);
        assert_eq!(R.open_connections(Protocol::Imap), 0);
        assert_eq!(R.connections.accepted.get("imap"), 2);
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        let r = Registry::new();
        let text = r.render(&Scrape {
            queue_messages: Some(2),
            queue_oldest_age: Some(Duration::from_secs(90)),
            store_bytes: Some(12345),
            bans: Some(0),
        });
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                assert!(rest.starts_with("HELP tanba_") || rest.starts_with("TYPE tanba_"));
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("tanba_"), "{line}");
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "{line}: value"
            );
        }
        assert!(text.contains("tanba_queue_oldest_age_seconds 90\n"));
        assert!(text.contains("tanba_store_bytes 12345\n"));
    }
}
