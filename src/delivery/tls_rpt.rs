//! TLS-RPT (RFC 8460) data: per UTC day and policy domain (a recipient domain with an MTA-STS
//! policy), how many TLS sessions satisfied the policy and how many failed, by result type
//! (§4.3). Kept in memory and in `<data_dir>/tls-rpt.json` (0600), eight days; what an aggregate
//! report would carry. Reports are not sent (docs/delivery.md).
//!
//! The file is rewritten when a day or domain appears, and otherwise [`WRITE_EVERY`] after a
//! change at the latest (at most that often), so the counts of the last seconds before a crash
//! or stop can be missing: they are statistics, not mail.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "tls-rpt.json";
/// The file is written at most this often (except for new keys).
pub const WRITE_EVERY: Duration = Duration::from_secs(5);
/// Days kept.
const DAYS: usize = 8;
/// Domains counted per day, at most.
const MAX_DOMAINS: usize = 10_000;

/// One policy domain on one day (RFC 8460 §4.4 `summary` and `failure-details`, reduced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// `sts` (MTA-STS) or `tlsa` (DANE).
    pub policy_type: String,
    pub policy_id: String,
    pub success: u64,
    pub failure: u64,
    /// Failures by result type.
    pub failures: BTreeMap<String, u64>,
}

/// Day (`YYYY-MM-DD`, UTC) → policy domain → counts.
type Days = BTreeMap<String, BTreeMap<String, Counts>>;

struct State {
    days: Days,
    last_write: Option<Instant>,
    /// A delayed write is scheduled (it writes whatever has been counted by then).
    pending: bool,
}

pub struct Recorder {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    write: Arc<Mutex<()>>,
}

impl Recorder {
    /// Reads what an earlier run recorded (a missing or broken file is a fresh start).
    pub fn new(data_dir: &std::path::Path) -> Recorder {
        let path = data_dir.join(FILE);
        let days = match std::fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d).unwrap_or_else(|e| {
                tracing::warn!("{}: {e}; TLS-RPT counts start afresh", path.display());
                Days::new()
            }),
            Err(_) => Days::new(),
        };
        Recorder {
            path,
            state: Arc::new(Mutex::new(State {
                days,
                last_write: None,
                pending: false,
            })),
            write: Arc::new(Mutex::new(())),
        }
    }

    /// Counts one session towards `domain` under MTA-STS policy `id`: `Ok` or the failure's
    /// result type.
    pub fn record(&self, domain: &str, id: &str, result: Result<(), &str>) {
        self.record_typed(domain, "sts", id, result)
    }

    /// [`Recorder::record`] for a policy type: `sts` (MTA-STS) or `tlsa` (DANE, `id` the MX
    /// host). A domain's counts carry the type and id of the last session counted.
    pub fn record_typed(
        &self,
        domain: &str,
        policy_type: &str,
        id: &str,
        result: Result<(), &str>,
    ) {
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let write_now = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let new_day = !st.days.contains_key(&day);
            let domains = st.days.entry(day).or_default();
            let new_key = !domains.contains_key(domain);
            if new_key && domains.len() >= MAX_DOMAINS {
                return;
            }
            let c = domains.entry(domain.to_string()).or_default();
            c.policy_type = policy_type.into();
            c.policy_id = id.to_string();
            match result {
                Ok(()) => c.success += 1,
                Err(t) => {
                    c.failure += 1;
                    *c.failures.entry(t.to_string()).or_default() += 1;
                }
            }
            if new_day {
                while st.days.len() > DAYS {
                    st.days.pop_first();
                }
            }
            let due = st.last_write.is_none_or(|t| t.elapsed() >= WRITE_EVERY);
            if new_key || due {
                st.last_write = Some(Instant::now());
                Some(Duration::ZERO)
            } else if !st.pending {
                st.pending = true;
                Some(WRITE_EVERY)
            } else {
                None
            }
        };
        if let Some(delay) = write_now {
            let (state, lock, path) = (self.state.clone(), self.write.clone(), self.path.clone());
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = tokio::task::spawn_blocking(move || write(&state, &lock, &path)).await;
            });
        }
    }

    /// The counts so far (day → domain → counts).
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, Counts>> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .days
            .clone()
    }
}

/// Writes the current counts (snapshot taken under the write lock, so the last write holds the
/// newest state).
fn write(state: &Mutex<State>, lock: &Mutex<()>, path: &std::path::Path) {
    let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
    let data = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.pending = false;
        st.last_write = Some(Instant::now());
        serde_json::to_vec_pretty(&st.days)
    };
    let r = data
        .map_err(std::io::Error::other)
        .and_then(|d| crate::perms::write_atomic(path, &d));
    if let Err(e) = r {
        tracing::warn!("TLS-RPT counts: writing {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_by_day_domain_and_result_type() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::new(dir.path());
        r.record("b.test", "1", Ok(()));
        r.record("b.test", "1", Err("certificate-host-mismatch"));
        r.record("b.test", "2", Err("certificate-host-mismatch"));
        r.record("c.test", "9", Ok(()));
        let s = r.snapshot();
        assert_eq!(s.len(), 1);
        let day = s.values().next().unwrap();
        let b = &day["b.test"];
        assert_eq!((b.success, b.failure), (1, 2));
        assert_eq!(b.failures["certificate-host-mismatch"], 2);
        assert_eq!(b.policy_id, "2");
        assert_eq!(day["c.test"].success, 1);
    }
}
