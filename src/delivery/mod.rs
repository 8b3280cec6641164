//! Outbound delivery: the queue worker that takes due records from the store, routes them
//! ([`mx`]), sends them ([`client`]) DKIM-signed ([`dkim`]), records each recipient's fate, retries
//! on schedule ([`schedule`]) and bounces what fails ([`dsn`]). Also the `tanba queue` admin
//! commands ([`admin`]).
//!
//! # How a round works
//! The scheduler wakes when something is queued (`App::queue_wakeup`), when `tanba queue retry`
//! asks, when a job ends, or when the earliest record in the due-time index comes due. It takes
//! every due record that is not already in a round, groups the pending recipients by destination
//! (recipient domain, or the one relay), and starts one job per destination: one connection
//! (bounded by `delivery.concurrency`) that carries every message for that domain, one
//! transaction per message with all its recipients there. When the last job of a record's round
//! ends, the round is settled: retry time, give-up, bounce, removal.
//!
//! # Durability and the at-least-once choice
//! A recipient's outcome is written (and flushed, [`Store::durable`]) right after the remote
//! server answers, before the next message. If the process dies between the remote `250` and
//! that flush (a few milliseconds), the recipient is still pending after restart and gets the
//! message again: we prefer a rare duplicate to a lost message (RFC 5321 §6.1, and the same
//! window RFC 1047 describes for the reply to the final dot). Nothing else can duplicate:
//! a record is in at most one round at a time (the `rounds` map), and the end of a round —
//! record update or removal plus its bounce — is one store transaction ([`Store::queue_commit`]).

pub mod client;
pub mod dane;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod mx;
pub mod schedule;
pub mod tls_rpt;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::config::Config;
// Bare LF becomes CRLF (SMTP requires CRLF; RFC 5321 §2.3.8): the same conversion the filter
// applies before hashing (RFC 5751 §3.1.1), so one function serves both.
use crate::filter::find::canonical_crlf as normalize_crlf;
use crate::server::{App, Live};
use crate::shutdown::Shutdown;
use crate::store::{Bounce, QueueRecord, RcptState, Store};
use client::{Failure, Outcome, OutcomeKind};
use mx::{RouteError, Target};

/// Records in rounds at once, at most (beyond it the scheduler waits for rounds to end).
const MAX_RECORDS_IN_FLIGHT: usize = 1000;
/// Messages carried by one connection before a job hands over to a new one.
const MAX_MESSAGES_PER_CONNECTION: usize = 50;
/// How long a record whose round could not be settled (store error) waits before the next.
const SETTLE_ERROR_BACKOFF: Duration = Duration::from_secs(30);
/// The scheduler looks at the index at least this often (clock changes, missed wake-ups).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs the delivery workers until shutdown.
/// `live` is the server's current configuration: a reload (SIGHUP) reaches the next round, job
/// and bounce (`delivery.retry`, `give_up_after`, `require_tls`, DKIM keys, hostname); the relay,
/// its credentials, the resolver, `remote_port`, `concurrency`, `tls_ca_file`, `mta_sts`,
/// `mta_sts_port`, `dane` and `dnssec_trust_anchor` are fixed at start.
pub async fn run(live: Arc<Live>, mut shutdown: Shutdown) {
    let worker = Arc::new(Worker::new(live));
    let store = worker.store.clone();
    match tokio::task::spawn_blocking(move || store.queue_reindex()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!("queue index repaired ({n} keys)"),
        Ok(Err(e)) => tracing::error!("queue index check failed: {e}"),
        Err(e) => tracing::error!("queue index check crashed: {e}"),
    }
    loop {
        if shutdown.is_stopping() {
            break;
        }
        let next = match worker.dispatch(&shutdown) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!("delivery scheduler: {e:#}");
                Some(now_unix() + 5)
            }
        };
        let sleep = schedule::sleep_until(now_unix(), next, MAX_SLEEP);
        tokio::select! {
            _ = worker.wakeup.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.stopping() => break,
        }
    }
    tracing::debug!("delivery scheduler stopped");
}

/// One record's part in a job: the recipients that go to this job's destination.
#[derive(Debug, Clone)]
struct Item {
    id: u64,
    rcpts: Vec<String>,
}

/// A record's current round: how many jobs still work on it, and whether any made an attempt.
struct Round {
    jobs_left: usize,
    attempted: bool,
}

/// A recipient's result with the host that gave it.
struct Result1 {
    addr: String,
    outcome: Outcome,
    remote: Option<String>,
}

/// Shared by the scheduler and its jobs.
struct Worker {
    /// The current configuration and its DKIM keys ([`Worker::app`]).
    live: Arc<Live>,
    store: Store,
    wakeup: Arc<tokio::sync::Notify>,
    router: mx::Router,
    /// STARTTLS towards MX hosts (and a relay without credentials). None: could not be set up,
    /// so plain text only (logged at start).
    opportunistic: Option<TlsConnector>,
    /// Certificate-checking TLS for a relay that gets credentials; the error when unavailable.
    verified: Option<Result<TlsConnector, String>>,
    /// The roots certificates are checked against (system + `delivery.tls_ca_file`).
    trust: verify::Trust,
    /// MTA-STS policies (None: `delivery.mta_sts = false`, or a relay is used).
    sts: Option<mta_sts::Sts>,
    /// DANE (None: `delivery.dane = false`, or a relay is used).
    dane: Option<dane::Dane>,
    /// TLS-RPT counts per policy domain.
    tls_rpt: tls_rpt::Recorder,
    /// One permit per open outbound connection (`delivery.concurrency`).
    slots: Arc<Semaphore>,
    /// Records in a round, by id. A record in here is never dispatched again until its round is
    /// settled, which is what keeps two jobs from sending the same message.
    rounds: Mutex<HashMap<u64, Round>>,
}

impl Worker {
    fn new(live: Arc<Live>) -> Worker {
        let app = live.app();
        let d = &app.config.delivery;
        let opportunistic = client::opportunistic_connector()
            .map_err(|e| tracing::error!("TLS client setup failed, sending without TLS: {e:#}"))
            .ok();
        let trust = verify::Trust::load(d.tls_ca_file.as_deref());
        let verified = (d.relay.is_some() && d.relay_user.is_some()).then(|| {
            trust.connector().map_err(|e| {
                let msg = format!("cannot check the relay's certificate: {e}");
                tracing::error!("{msg}");
                msg
            })
        });
        let sts = (d.mta_sts && d.relay.is_none()).then(|| {
            let resolver = mx::build_resolver(d.resolver, Duration::from_secs(5), 2)
                .map_err(|e| tracing::error!("MTA-STS: DNS resolver: {e}"))
                .ok();
            mta_sts::Sts::new(&app.config, resolver, &trust)
        });
        tracing::info!(
            relay = d.relay.as_deref().unwrap_or("(MX)"),
            concurrency = d.concurrency,
            dkim_domains = app.config.dkim.len(),
            "delivery worker ready"
        );
        Worker {
            router: mx::Router::new(d),
            store: app.store.clone(),
            wakeup: app.queue_wakeup.clone(),
            opportunistic,
            verified,
            trust,
            sts,
            dane: (d.dane && d.relay.is_none()).then(|| dane::Dane::new(d)),
            tls_rpt: tls_rpt::Recorder::new(&app.config.data_dir),
            slots: Arc::new(Semaphore::new(d.concurrency.max(1))),
            rounds: Mutex::new(HashMap::new()),
            live,
        }
    }

    /// The current snapshot of the server's state (changes on reload).
    fn app(&self) -> Arc<App> {
        self.live.app()
    }

    fn store(&self) -> &Store {
        &self.store
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Round>> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts jobs for every due record not yet in a round. Returns when the next record that is
    /// not in a round comes due, if any.
    fn dispatch(self: &Arc<Self>, shutdown: &Shutdown) -> anyhow::Result<Option<i64>> {
        let now = now_unix();
        let relay = self.app().config.delivery.relay.is_some();
        let mut groups: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        let mut settle_only = Vec::new();
        let mut next_due = None;
        {
            let mut rounds = self.rounds();
            let mut due = self.store().queue_due();
            // The limit is checked before the next record is taken: on PostgreSQL taking it
            // claims it for this node (docs/cluster.md, "Outbound queue: leases").
            while rounds.len() < MAX_RECORDS_IN_FLIGHT {
                let Some(entry) = due.next() else { break };
                let (t, id) = entry?;
                if rounds.contains_key(&id) {
                    continue;
                }
                if t > now {
                    next_due = Some(t);
                    break;
                }
                let Some(rec) = self.store().queue_get(id)? else {
                    continue;
                };
                let mut by_dest: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in rec.pending() {
                    let dest = if relay {
                        String::new()
                    } else {
                        domain_of(&r.addr).to_ascii_lowercase()
                    };
                    by_dest.entry(dest).or_default().push(r.addr.clone());
                }
                if by_dest.is_empty() {
                    // Everything decided but not yet settled (a crash in between): settle now.
                    rounds.insert(
                        id,
                        Round {
                            jobs_left: 1,
                            attempted: false,
                        },
                    );
                    settle_only.push(id);
                    continue;
                }
                rounds.insert(
                    id,
                    Round {
                        jobs_left: by_dest.len(),
                        attempted: false,
                    },
                );
                for (dest, rcpts) in by_dest {
                    groups.entry(dest).or_default().push(Item { id, rcpts });
                }
            }
        }
        for id in settle_only {
            let w = self.clone();
            tokio::spawn(async move { w.end_job(id, false).await });
        }
        for (dest, items) in groups {
            for chunk in items.chunks(MAX_MESSAGES_PER_CONNECTION) {
                let w = self.clone();
                let sd = shutdown.clone();
                let chunk = chunk.to_vec();
                let dest = dest.clone();
                tokio::spawn(async move { w.job(dest, chunk, sd).await });
            }
        }
        Ok(next_due)
    }

    /// Delivers `items` to one destination over (at most) one connection at a time.
    async fn job(self: Arc<Self>, dest: String, items: Vec<Item>, mut shutdown: Shutdown) {
        let permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.ok(),
            _ = shutdown.stopping() => None,
        };
        let Some(_permit) = permit else {
            for it in items {
                self.end_job(it.id, false).await;
            }
            return;
        };
        let routed = tokio::select! {
            t = self.targets(&dest) => Some(t),
            _ = shutdown.stopping() => None,
        };
        let routed = match routed {
            Some(Ok(t)) => {
                let extra = tokio::select! {
                    p = async { (self.policy(&dest).await, self.dane_plan(&dest, &t).await) } => Some(p),
                    _ = shutdown.stopping() => None,
                };
                match extra {
                    None => None,
                    Some((_, Err(f))) => {
                        self.tls_rpt
                            .record_typed(&dest, "tlsa", "", Err(f.result_type));
                        tracing::info!(dest = %dest, result = f.result_type, "{}", f.text);
                        Some(Err(RouteError::Temporary(f.text)))
                    }
                    Some((p, Ok(plan))) => Some(Ok((t, p, plan))),
                }
            }
            other => other.map(|r| r.map(|t| (t, None, dane::Plan::new()))),
        };
        let (targets, policy, plan) = match routed {
            None => {
                for it in items {
                    self.end_job(it.id, false).await;
                }
                return;
            }
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                let outcome = match e {
                    RouteError::Temporary(text) => Outcome::temporary(text, "4.4.3"),
                    RouteError::Permanent { status, text } => Outcome::permanent(text, status),
                };
                for it in items {
                    let results = it
                        .rcpts
                        .iter()
                        .map(|a| Result1 {
                            addr: a.clone(),
                            outcome: outcome.clone(),
                            remote: None,
                        })
                        .collect();
                    self.record(it.id, results).await;
                    self.end_job(it.id, true).await;
                }
                return;
            }
        };

        let mut session: Option<client::Session> = None;
        // Set when no host answered: the remaining messages share the verdict.
        let mut down: Option<String> = None;
        for it in items {
            if shutdown.is_stopping() {
                self.end_job(it.id, false).await;
                continue;
            }
            let all = |o: Outcome, remote: Option<String>| -> Vec<Result1> {
                it.rcpts
                    .iter()
                    .map(|a| Result1 {
                        addr: a.clone(),
                        outcome: o.clone(),
                        remote: remote.clone(),
                    })
                    .collect()
            };
            if let Some(err) = &down {
                self.record(it.id, all(Outcome::temporary(err.clone(), "4.4.1"), None))
                    .await;
                self.end_job(it.id, true).await;
                continue;
            }
            let prepared = match self.clone().prepare(it.id).await {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.end_job(it.id, false).await;
                    continue;
                }
                Err(e) => {
                    self.record(it.id, all(Outcome::temporary(e, "4.3.0"), None))
                        .await;
                    self.end_job(it.id, true).await;
                    continue;
                }
            };
            // Only recipients still pending (an admin command may have changed the record).
            let rcpts: Vec<String> = it
                .rcpts
                .iter()
                .filter(|a| prepared.rec.pending().any(|r| &r.addr == *a))
                .cloned()
                .collect();
            if rcpts.is_empty() {
                self.end_job(it.id, false).await;
                continue;
            }
            if !session.as_ref().is_some_and(|s| s.alive) {
                if let Some(old) = session.take() {
                    old.quit().await;
                }
                let connected = tokio::select! {
                    s = self.connect_any(&dest, &targets, policy.as_deref(), &plan) => Some(s),
                    _ = shutdown.stopping() => None,
                };
                match connected {
                    None => {
                        self.end_job(it.id, false).await;
                        continue;
                    }
                    Some(Ok(s)) => session = Some(s),
                    Some(Err(e)) => {
                        tracing::info!(dest = %dest, "no host reachable: {e}");
                        self.record(it.id, all(Outcome::temporary(e.clone(), "4.4.1"), None))
                            .await;
                        self.end_job(it.id, true).await;
                        down = Some(e);
                        continue;
                    }
                }
            }
            let Some(s) = session.as_mut() else { continue };
            let mut results = Vec::with_capacity(rcpts.len());
            for chunk in rcpts.chunks(client::MAX_RCPTS) {
                if !s.alive {
                    for a in chunk {
                        results.push(Result1 {
                            addr: a.clone(),
                            outcome: Outcome::temporary(
                                format!("{}: connection lost", s.remote),
                                "4.4.2",
                            ),
                            remote: Some(s.remote.clone()),
                        });
                    }
                    continue;
                }
                let msg = client::Message {
                    from: &prepared.rec.sender,
                    rcpts: chunk,
                    data: &prepared.data,
                    eight_bit: prepared.eight_bit,
                    utf8_envelope: !prepared.rec.sender.is_ascii()
                        || chunk.iter().any(|a| !a.is_ascii()),
                    utf8_headers: prepared.utf8_headers,
                };
                let outs = s.send(&msg).await;
                for (a, o) in chunk.iter().zip(outs) {
                    results.push(Result1 {
                        addr: a.clone(),
                        outcome: o,
                        remote: Some(s.remote.clone()),
                    });
                }
            }
            self.record(it.id, results).await;
            self.end_job(it.id, true).await;
        }
        if let Some(s) = session {
            s.quit().await;
        }
    }

    async fn targets(&self, dest: &str) -> Result<Vec<Target>, RouteError> {
        match &self.app().config.delivery.relay {
            Some(relay) => mx::relay_targets(relay).await,
            None => self.router.mx_targets(dest).await,
        }
    }

    /// The MTA-STS policy for destination `dest` (a recipient domain), if one applies.
    async fn policy(&self, dest: &str) -> Option<Arc<mta_sts::Policy>> {
        let sts = self.sts.as_ref()?;
        if dest.is_empty() || dest.starts_with('[') {
            return None;
        }
        // The policy host is `mta-sts.` + the domain in its ASCII form (IDNA).
        let ascii = mx::ascii_domain(dest)?;
        sts.policy(&ascii).await
    }

    /// The DANE plan for destination `dest` (a recipient domain): empty without DANE.
    async fn dane_plan(&self, dest: &str, targets: &[Target]) -> Result<dane::Plan, Failure> {
        let Some(d) = &self.dane else {
            return Ok(dane::Plan::new());
        };
        if dest.is_empty() || dest.starts_with('[') {
            return Ok(dane::Plan::new());
        }
        let Some(ascii) = mx::ascii_domain(dest) else {
            return Ok(dane::Plan::new());
        };
        d.plan(&ascii, targets).await
    }

    /// Tries each target in order until one gives a session. The error names the last failure.
    /// Under an MTA-STS policy (RFC 8461 §4, §5) only MX hosts the policy names are used in
    /// `enforce` mode, each must offer STARTTLS and present a certificate valid for its name,
    /// and there is no fallback to clear text; in `testing` mode failures are logged and
    /// delivery goes on as without a policy. Each session's result is counted for TLS-RPT.
    /// DANE (RFC 7672, `plan`) takes precedence over MTA-STS for a host with usable TLSA
    /// records (RFC 8461 §2): STARTTLS required, the certificate must match a TLSA record, no
    /// clear-text fallback; a host whose TLSA lookup was bogus or failed is skipped.
    async fn connect_any(
        &self,
        dest: &str,
        targets: &[Target],
        policy: Option<&mta_sts::Policy>,
        plan: &dane::Plan,
    ) -> Result<client::Session, String> {
        let app = self.app();
        let d = &app.config.delivery;
        let relay = d.relay.as_deref();
        let auth = match (relay, &d.relay_user, &d.relay_password) {
            (Some(_), Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
            (Some(_), Some(u), None) => Some((u.as_str(), "")),
            _ => None,
        };
        let tls = match (&self.verified, auth) {
            (Some(Ok(v)), Some(_)) => Some(v),
            (Some(Err(e)), Some(_)) => return Err(e.clone()),
            _ => self.opportunistic.as_ref(),
        };
        let implicit_tls = relay.is_some_and(|r| r.ends_with(":465"));
        let enforce = policy.is_some_and(|p| p.mode == mta_sts::Mode::Enforce);
        let why = policy
            .map(|p| format!("MTA-STS policy of {dest} ({})", p.mode.as_str()))
            .unwrap_or_default();
        let rpt = |result: Result<(), &str>| {
            if let Some(p) = policy {
                self.tls_rpt.record(dest, &p.id, result);
            }
        };
        let mut last = String::from("no host to try");
        let dane_why = format!("DANE for {dest}");
        for t in targets {
            let dane_rpt = |result: Result<(), &str>| {
                self.tls_rpt.record_typed(dest, "tlsa", &t.host, result);
            };
            match plan.get(&t.host) {
                Some(dane::Host::Unusable(f)) => {
                    dane_rpt(Err(f.result_type));
                    last = format!("{}: {}", t.display(), f.text);
                    tracing::info!(dest, result = f.result_type, "{last}");
                    continue;
                }
                Some(dane::Host::Tlsa(tlsa)) => {
                    let params = client::Params {
                        helo: &app.config.hostname,
                        tls: self.opportunistic.as_ref(),
                        require_tls: true,
                        auth: None,
                        check: Some(client::Check {
                            trust: &self.trust,
                            enforce: true,
                            why: &dane_why,
                            dane: Some(tlsa),
                        }),
                    };
                    match client::connect(t, &params, false).await {
                        Ok(s) => {
                            tracing::debug!(host = %t.display(), "connected, DANE verified");
                            dane_rpt(Ok(()));
                            return Ok(s);
                        }
                        Err(client::Error::Unverified(f)) => {
                            dane_rpt(Err(f.result_type));
                            tracing::info!(dest, result = f.result_type, "{}", f.text);
                            last = f.text;
                        }
                        Err(client::Error::Tls(e)) => {
                            dane_rpt(Err("validation-failure"));
                            last = format!("{dane_why}: {e}");
                            tracing::info!(dest, "{last}");
                        }
                        Err(e) => {
                            tracing::info!(host = %t.display(), "connection failed: {e}");
                            last = match e {
                                client::Error::Refused { .. } => format!("{}: {e}", t.display()),
                                _ => e.to_string(),
                            };
                        }
                    }
                    continue;
                }
                Some(dane::Host::None) | None => {}
            }
            if let Some(p) = policy.filter(|p| !p.matches(&t.host)) {
                // §4.1: an MX host the policy does not name.
                let text = format!(
                    "{why}: {} is not among the policy's MX hosts ({})",
                    t.host,
                    p.mx.join(", ")
                );
                rpt(Err("validation-failure"));
                if enforce {
                    tracing::info!(dest, "{text}");
                    last = text;
                    continue;
                }
                tracing::info!(dest, "{text}; delivering anyway (testing mode)");
            }
            let params = client::Params {
                helo: &app.config.hostname,
                tls,
                require_tls: d.require_tls,
                auth,
                check: policy.map(|p| client::Check {
                    trust: &self.trust,
                    enforce: p.mode == mta_sts::Mode::Enforce,
                    why: &why,
                    dane: None,
                }),
            };
            match client::connect(t, &params, implicit_tls).await {
                Ok(s) => {
                    tracing::debug!(host = %t.display(), tls = s.tls, "connected");
                    match &s.verified {
                        Some(Ok(())) => rpt(Ok(())),
                        Some(Err(f)) => {
                            rpt(Err(f.result_type));
                            tracing::info!(
                                dest,
                                result = f.result_type,
                                "{}; delivering anyway (testing mode)",
                                f.text
                            );
                        }
                        None => {}
                    }
                    return Ok(s);
                }
                Err(client::Error::Unverified(f)) => {
                    rpt(Err(f.result_type));
                    tracing::info!(dest, result = f.result_type, "{}", f.text);
                    last = f.text;
                }
                Err(client::Error::Tls(e)) if enforce => {
                    // No clear-text fallback under an enforced policy.
                    rpt(Err("validation-failure"));
                    last = format!("{why}: {e}");
                    tracing::info!(dest, "{last}");
                }
                Err(client::Error::Tls(e)) if !d.require_tls && auth.is_none() && !implicit_tls => {
                    if policy.is_some() {
                        rpt(Err("validation-failure"));
                        tracing::info!(dest, "{why}: {e}; delivering anyway (testing mode)");
                    }
                    // Opportunistic TLS that fails is retried in clear text (as Postfix does),
                    // rather than never delivering to a host with a broken TLS setup.
                    tracing::info!(host = %t.display(), "STARTTLS failed ({e}); retrying without TLS");
                    let plain = client::Params {
                        tls: None,
                        check: None,
                        ..params
                    };
                    match client::connect(t, &plain, false).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => {
                    tracing::info!(host = %t.display(), "connection failed: {e}");
                    last = match e {
                        client::Error::Refused { .. } => format!("{}: {e}", t.display()),
                        _ => e.to_string(),
                    };
                }
            }
        }
        Err(last)
    }

    /// Loads a record's message and makes it ready to send: CRLF line ends, DKIM signature.
    /// `Ok(None)`: the record is gone (dropped meanwhile).
    async fn prepare(self: Arc<Self>, id: u64) -> Result<Option<Prepared>, String> {
        let w = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = w.store();
            let Some(rec) = store.queue_get(id).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let blob = store
                .blob(rec.blob_id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("queue entry {id}: message bytes are missing"))?;
            let mut data = normalize_crlf(&blob);
            drop(blob);
            if let Some(sig) = w.app().dkim.sign(&rec.sender, &data)? {
                let mut signed = Vec::with_capacity(sig.len() + data.len());
                signed.extend_from_slice(sig.as_bytes());
                signed.extend_from_slice(&data);
                data = signed;
            }
            let head_end = memchr::memmem::find(&data, b"\r\n\r\n").unwrap_or(data.len());
            Ok(Some(Prepared {
                eight_bit: data.iter().any(|b| *b >= 0x80),
                utf8_headers: data[..head_end].iter().any(|b| *b >= 0x80),
                rec,
                data,
            }))
        })
        .await
        .map_err(|e| format!("preparing the message failed: {e}"))?
    }

    /// Writes the outcomes of one transaction into the record and makes them durable.
    async fn record(&self, id: u64, results: Vec<Result1>) {
        for r in &results {
            let kind = match r.outcome.kind {
                OutcomeKind::Delivered => "delivered",
                OutcomeKind::Temporary => "deferred",
                OutcomeKind::Permanent => "failed",
            };
            tracing::info!(
                queue_id = id,
                to = %r.addr,
                relay = r.remote.as_deref().unwrap_or("-"),
                status = %r.outcome.status,
                "{kind}: {}",
                r.outcome.text
            );
        }
        let res = self.store().queue_modify(id, |rec| {
            for r in &results {
                let Some(st) = rec
                    .recipients
                    .iter_mut()
                    .find(|s| s.addr == r.addr && s.state == RcptState::Pending)
                else {
                    continue;
                };
                st.attempts += 1;
                st.status = Some(r.outcome.status.clone());
                st.remote_mta = r.remote.clone();
                match r.outcome.kind {
                    OutcomeKind::Delivered => {
                        st.state = RcptState::Delivered;
                        st.last_error = None;
                    }
                    OutcomeKind::Temporary => st.last_error = Some(r.outcome.text.clone()),
                    OutcomeKind::Permanent => {
                        st.state = RcptState::Failed;
                        st.last_error = Some(r.outcome.text.clone());
                    }
                }
            }
            if let Some(r) = results
                .iter()
                .rev()
                .find(|r| r.outcome.kind != OutcomeKind::Delivered)
            {
                rec.last_error = Some(match (&r.remote, r.outcome.stage) {
                    (Some(host), "RCPT TO" | "MAIL FROM" | "DATA" | "end of DATA") => {
                        format!(
                            "{host}: {} (in reply to {})",
                            r.outcome.text, r.outcome.stage
                        )
                    }
                    _ => r.outcome.text.clone(),
                });
            }
        });
        if let Err(e) = res {
            tracing::error!(queue_id = id, "recording delivery results failed: {e}");
            return;
        }
        for r in &results {
            match r.outcome.kind {
                OutcomeKind::Delivered => crate::metrics::REGISTRY.delivered.inc("remote"),
                OutcomeKind::Temporary => crate::metrics::REGISTRY.deferred.inc(),
                // Counted as bounced when the round settles (with the expired ones).
                OutcomeKind::Permanent => {}
            }
        }
        if let Err(e) = self.store().durable().await {
            tracing::error!(queue_id = id, "flushing delivery results failed: {e}");
        }
    }

    /// One job is done with record `id`; the last one settles the round.
    async fn end_job(&self, id: u64, attempted: bool) {
        let last = {
            let mut rounds = self.rounds();
            match rounds.get_mut(&id) {
                Some(r) => {
                    r.jobs_left = r.jobs_left.saturating_sub(1);
                    r.attempted |= attempted;
                    (r.jobs_left == 0).then_some(r.attempted)
                }
                None => None,
            }
        };
        let Some(attempted) = last else { return };
        if let Err(e) = self.settle(id, attempted).await {
            tracing::error!(queue_id = id, "settling the delivery round failed: {e:#}");
            // The record still looks due: keep it out of the next rounds for a while instead of
            // retrying at once in a loop.
            tokio::time::sleep(SETTLE_ERROR_BACKOFF).await;
        }
        self.rounds().remove(&id);
        self.wakeup.notify_one();
    }

    /// End of a round: schedule the next attempt or give up, bounce failed recipients, remove
    /// the record when nothing is pending. One conditional transaction; re-read on conflict.
    async fn settle(&self, id: u64, attempted: bool) -> anyhow::Result<()> {
        let app = self.app();
        let cfg = &app.config;
        for _ in 0..10 {
            let store = self.store();
            let Some(rec) = store.queue_get(id)? else {
                return Ok(());
            };
            let now = now_unix();
            let mut new = rec.clone();
            if attempted && new.pending().next().is_some() {
                new.attempts += 1;
                match schedule::after_round(
                    now,
                    new.created,
                    new.attempts,
                    &cfg.delivery.retry,
                    cfg.delivery.give_up_after,
                ) {
                    schedule::After::Retry(t) => new.next_attempt = t,
                    schedule::After::GiveUp => {
                        for r in new
                            .recipients
                            .iter_mut()
                            .filter(|r| r.state == RcptState::Pending)
                        {
                            r.state = RcptState::Failed;
                            r.status = Some("4.4.7".into());
                        }
                        tracing::info!(
                            queue_id = id,
                            "giving up after {}",
                            humantime::format_duration(cfg.delivery.give_up_after)
                        );
                    }
                }
            }
            let bounce = self.bounce_for(&rec, &mut new, now)?;
            let remove = new.pending().next().is_none();
            if !remove && new == rec {
                return Ok(());
            }
            let is_queued_bounce = matches!(bounce, Some(Bounce::Queue { .. }));
            // Blocking: a large bounce body is written and fsynced as a file (store/files.rs).
            let committed = {
                let (store, rec, new) = (store.clone(), rec.clone(), new.clone());
                tokio::task::spawn_blocking(move || {
                    store.queue_commit(&rec, (!remove).then_some(&new), bounce.as_ref())
                })
                .await??
            };
            if committed {
                let bounced = rec.recipients.iter().zip(&new.recipients);
                let bounced = bounced.filter(|(o, n)| n.bounced && !o.bounced).count();
                crate::metrics::REGISTRY.bounced.add(bounced as u64);
                store.durable().await?;
                if remove {
                    tracing::info!(queue_id = id, "done; removed from the queue");
                }
                if is_queued_bounce {
                    self.wakeup.notify_one();
                }
                return Ok(());
            }
        }
        bail!("queue entry {id} kept changing")
    }

    /// Marks newly failed recipients as bounced and builds their DSN (none for the null sender).
    fn bounce_for(
        &self,
        rec: &QueueRecord,
        new: &mut QueueRecord,
        now: i64,
    ) -> anyhow::Result<Option<Bounce>> {
        let idx: Vec<usize> = new
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RcptState::Failed && !r.bounced)
            .map(|(i, _)| i)
            .collect();
        if idx.is_empty() {
            return Ok(None);
        }
        for &i in &idx {
            new.recipients[i].bounced = true;
        }
        if rec.sender.is_empty() {
            tracing::warn!(
                queue_id = rec.id,
                "a bounce could not be delivered; it is discarded (no bounce for a bounce)"
            );
            return Ok(None);
        }
        let failed: Vec<&crate::store::RcptStatus> =
            idx.iter().map(|&i| &new.recipients[i]).collect();
        let store = self.store();
        let original = store.blob(rec.blob_id)?;
        let app = self.app();
        let dsn = dsn::build(
            &app.config.hostname,
            rec,
            &failed,
            original.as_deref().unwrap_or(b""),
            now,
        )?;
        dsn::route(store, &app.config, &app.filter, &rec.sender, dsn)
    }
}

struct Prepared {
    rec: QueueRecord,
    data: Vec<u8>,
    eight_bit: bool,
    utf8_headers: bool,
}

fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---- tanba queue list | retry | drop ----

/// Queue commands of the admin channel (`tanba queue list|retry|drop`). Runs in the server when
/// it is up (the caller wakes the worker when the response data says `"wake": true`), else on
/// the store directly.
pub fn admin(
    store: &Store,
    config: &Config,
    req: &crate::admin::Request,
) -> anyhow::Result<crate::admin::Response> {
    use crate::admin::{Request, Response};
    match req {
        Request::QueueList => {
            let list = store.queue_list()?;
            Ok(Response {
                ok: true,
                text: list_text(&list, now_unix()),
                data: serde_json::to_value(&list)?,
            })
        }
        Request::QueueRetry { id } => {
            if store.queue_modify(*id, |r| r.next_attempt = 0)?.is_none() {
                bail!("no queue entry {id}");
            }
            store.flush_sync()?;
            Ok(Response {
                ok: true,
                text: format!("{id} will be retried now"),
                data: serde_json::json!({"wake": true}),
            })
        }
        Request::QueueDrop { id, silent } => {
            let mut filter = None;
            for _ in 0..10 {
                let Some(rec) = store.queue_get(*id)? else {
                    bail!("no queue entry {id}");
                };
                let mut failed = rec.clone();
                let mut any = false;
                for r in failed.recipients.iter_mut() {
                    let unbounced_failure = r.state == RcptState::Failed && !r.bounced;
                    if r.state == RcptState::Pending || unbounced_failure {
                        any = true;
                        if r.state == RcptState::Pending {
                            r.state = RcptState::Failed;
                            r.status = Some("5.0.0".into());
                            r.last_error = Some(match &r.last_error {
                                Some(e) => {
                                    format!("dropped by the postmaster (last error: {e})")
                                }
                                None => "dropped by the postmaster".into(),
                            });
                            r.remote_mta = None;
                        }
                    }
                }
                let bounce = if *silent || rec.sender.is_empty() || !any {
                    None
                } else {
                    if filter.is_none() {
                        filter = Some(crate::filter::Filter::new(config).context("signatures")?);
                    }
                    let list: Vec<&crate::store::RcptStatus> = failed
                        .recipients
                        .iter()
                        .zip(&rec.recipients)
                        .filter(|(n, o)| {
                            n.state == RcptState::Failed
                                && !(o.state == RcptState::Failed && o.bounced)
                        })
                        .map(|(n, _)| n)
                        .collect();
                    let original = store.blob(rec.blob_id)?;
                    let dsn = dsn::build(
                        &config.hostname,
                        &rec,
                        &list,
                        original.as_deref().unwrap_or(b""),
                        now_unix(),
                    )?;
                    match &filter {
                        Some(f) => dsn::route(store, config, f, &rec.sender, dsn)?,
                        None => None,
                    }
                };
                let bounced = bounce.is_some();
                let queued = matches!(bounce, Some(Bounce::Queue { .. }));
                if store.queue_commit(&rec, None, bounce.as_ref())? {
                    store.flush_sync()?;
                    let text = if bounced {
                        format!("{id} dropped; a bounce goes to <{}>", rec.sender)
                    } else {
                        format!("{id} dropped")
                    };
                    return Ok(Response {
                        ok: true,
                        text,
                        data: serde_json::json!({"wake": queued}),
                    });
                }
            }
            bail!("queue entry {id} kept changing; try again")
        }
        _ => bail!("not a queue command"),
    }
}

/// `tanba queue list` as text: one tab-separated line per message (nothing when the queue is
/// empty), for people and for grep: id, sender, recipients (with their state unless pending),
/// attempts, next attempt, last error. `--json` has every detail, per recipient.
fn list_text(list: &[QueueRecord], now: i64) -> String {
    let mut s = String::new();
    for q in list {
        let rcpts: Vec<String> = q
            .recipients
            .iter()
            .map(|r| match r.state {
                RcptState::Pending => r.addr.clone(),
                RcptState::Delivered => format!("{} (delivered)", r.addr),
                RcptState::Failed => format!("{} (failed)", r.addr),
            })
            .collect();
        let next = if q.next_attempt <= now {
            "now".to_string()
        } else {
            chrono::DateTime::from_timestamp(q.next_attempt, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        };
        s.push_str(&format!(
            "{}\t<{}>\t{}\tattempts={}\tnext={next}\t{}\n",
            q.id,
            q.sender,
            rcpts.join(","),
            q.attempts,
            q.last_error.as_deref().unwrap_or("-")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_normalization() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalize_crlf(b""), b"");
    }

    #[test]
    fn list_shows_errors_and_times() {
        let mut store_rec = QueueRecord {
            id: 7,
            sender: "a@a.test".into(),
            recipients: vec![crate::store::RcptStatus {
                addr: "b@b.test".into(),
                state: RcptState::Pending,
                attempts: 1,
                last_error: Some("connect to mx.b.test[127.0.0.1]: refused".into()),
                status: None,
                remote_mta: None,
                bounced: false,
            }],
            blob_id: 1,
            size: 12,
            created: 1000,
            next_attempt: 1060,
            attempts: 1,
            last_error: Some("connect to mx.b.test[127.0.0.1]: refused".into()),
        };
        let t = list_text(std::slice::from_ref(&store_rec), 1000);
        assert_eq!(
            t,
            "7\t<a@a.test>\tb@b.test\tattempts=1\tnext=1970-01-01T00:17:40Z\tconnect to mx.b.test[127.0.0.1]: refused\n"
        );
        store_rec.next_attempt = 0;
        store_rec.recipients[0].state = RcptState::Failed;
        let t = list_text(&[store_rec], 1000);
        assert!(
            t.contains("\tb@b.test (failed)\t") && t.contains("\tnext=now\t"),
            "{t}"
        );
        assert_eq!(list_text(&[], 0), "");
    }
}
