//! The inbound signature filter (pure: no network, no store).
//!
//! STUB: replaced by the signature filter work.

pub mod gost;

use std::time::SystemTime;

use crate::config::Config;

/// The filter, built once at start-up (trust anchors loaded from `signatures.trust_dir`).
pub struct Filter {
    _hostname: String,
}

/// What the filter made of one message.
pub struct Processed {
    /// The message to store: the prepended stamp headers, then the original bytes with forged
    /// `X-EDS-*` / own `Authentication-Results` headers removed. No other byte changes.
    pub message: Vec<u8>,
    /// IMAP keywords to set on delivery (`$EDSValid` / `$EDSInvalid`), empty when disabled.
    pub keywords: Vec<String>,
    /// Message verdict (`none`, `pass`, `fail`, `permerror`, `temperror`).
    pub verdict: String,
}

impl Filter {
    pub fn new(config: &Config) -> anyhow::Result<Filter> {
        Ok(Filter {
            _hostname: config.hostname.clone(),
        })
    }

    /// Verifies every signature `raw` carries, as of `now`, and stamps the result.
    pub fn process(&self, raw: &[u8], _now: SystemTime) -> Processed {
        Processed {
            message: raw.to_vec(),
            keywords: Vec::new(),
            verdict: "none".into(),
        }
    }
}
