//! What verification found: per signature entity, per signer. Serialises to exactly the JSON of
//! SPEC §6 (`tanba verify --json`) and renders the human report (`tanba verify`).

use serde::{Serialize, Serializer};

/// Verdict of a whole message (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    // Order = severity, so that the worst verdict is the maximum.
    None,
    Pass,
    TempError,
    PermError,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Pass => "pass",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
            Verdict::Fail => "fail",
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Result for one signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerResult {
    Pass,
    Fail,
    PermError,
    TempError,
}

impl SignerResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SignerResult::Pass => "pass",
            SignerResult::Fail => "fail",
            SignerResult::PermError => "permerror",
            SignerResult::TempError => "temperror",
        }
    }

    fn verdict(self) -> Verdict {
        match self {
            SignerResult::Pass => Verdict::Pass,
            SignerResult::Fail => Verdict::Fail,
            SignerResult::PermError => Verdict::PermError,
            SignerResult::TempError => Verdict::TempError,
        }
    }
}

impl Serialize for SignerResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a signer did not pass (SPEC §5). Each reason belongs to one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    DigestMismatch,
    BadSignature,
    Untrusted,
    Expired,
    NotYetValid,
    Revoked,
    KeyUsage,
    NoCertificate,
    Malformed,
    UnsupportedAlgorithm,
    RevocationUnknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DigestMismatch => "digest-mismatch",
            Reason::BadSignature => "bad-signature",
            Reason::Untrusted => "untrusted",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not-yet-valid",
            Reason::Revoked => "revoked",
            Reason::KeyUsage => "key-usage",
            Reason::NoCertificate => "no-certificate",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlgorithm => "unsupported-algorithm",
            Reason::RevocationUnknown => "revocation-unknown",
        }
    }

    pub fn result(self) -> SignerResult {
        match self {
            Reason::Malformed | Reason::UnsupportedAlgorithm => SignerResult::PermError,
            Reason::RevocationUnknown => SignerResult::TempError,
            _ => SignerResult::Fail,
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where a signature was found (SPEC §6 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MultipartSigned,
    Pkcs7Mime,
    Attachment,
    Cms,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MultipartSigned => "multipart/signed",
            Kind::Pkcs7Mime => "pkcs7-mime",
            Kind::Attachment => "attachment",
            Kind::Cms => "cms",
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The report for one message or CMS file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub signatures: Vec<SignatureReport>,
}

/// One entity carrying a CMS signature.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    /// IMAP section of the entity (None for a bare CMS file).
    pub part: Option<String>,
    pub kind: Kind,
    /// Name of the signature attachment.
    pub file: Option<String>,
    /// Name of the attachment a detached signature covers.
    pub covers: Option<String>,
    pub signers: Vec<SignerReport>,
}

/// One signer. Identity fields are what the certificate says; they are trustworthy only when
/// `result` is pass (stamped headers carry them only then).
#[derive(Debug, Clone, Serialize)]
pub struct SignerReport {
    pub result: SignerResult,
    pub reason: Option<Reason>,
    pub common_name: Option<String>,
    pub surname: Option<String>,
    pub given_name: Option<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub iin: Option<String>,
    pub bin: Option<String>,
    pub organization: Option<String>,
    pub roles: Vec<String>,
    pub key_usage: Option<String>,
    pub algorithm: Option<String>,
    pub cert_serial: Option<String>,
    pub issuer: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    pub signing_time: Option<String>,
    pub tsp_time: Option<String>,
    /// A sentence for people on why the result is what it is.
    #[serde(skip)]
    pub detail: Option<String>,
    /// Things people should know that did not decide the result (a timestamp that was
    /// ignored, a revocation after the signing time, ...).
    #[serde(skip)]
    pub notes: Vec<String>,
    /// The issuer in ASCII-only RFC 4514 form (for Authentication-Results).
    #[serde(skip)]
    pub issuer_ascii: Option<String>,
}

impl SignerReport {
    /// A signer about which nothing is known yet, with the given outcome.
    pub fn new(result: SignerResult, reason: Option<Reason>) -> SignerReport {
        SignerReport {
            result,
            reason,
            common_name: None,
            surname: None,
            given_name: None,
            full_name: None,
            email: None,
            iin: None,
            bin: None,
            organization: None,
            roles: Vec::new(),
            key_usage: None,
            algorithm: None,
            cert_serial: None,
            issuer: None,
            not_before: None,
            not_after: None,
            signing_time: None,
            tsp_time: None,
            detail: None,
            notes: Vec::new(),
            issuer_ascii: None,
        }
    }

    /// A signer that failed for `reason`, with a sentence saying why.
    pub fn failed(reason: Reason, detail: impl Into<String>) -> SignerReport {
        let mut s = SignerReport::new(reason.result(), Some(reason));
        s.detail = Some(detail.into());
        s
    }

    pub fn set_failure(&mut self, reason: Reason, detail: impl Into<String>) {
        self.result = reason.result();
        self.reason = Some(reason);
        self.detail = Some(detail.into());
    }

    /// The time to show as the signing time, and where it comes from (`tsp` or `claimed`).
    pub fn shown_time(&self) -> Option<(&str, &'static str)> {
        match (&self.tsp_time, &self.signing_time) {
            (Some(t), _) => Some((t, "tsp")),
            (None, Some(t)) => Some((t, "claimed")),
            _ => None,
        }
    }
}

impl Report {
    /// Builds a report and computes the verdict: `none` without signatures, `pass` when every
    /// signer passed, else the worst of fail > permerror > temperror.
    pub fn new(signatures: Vec<SignatureReport>) -> Report {
        let verdict = signatures
            .iter()
            .flat_map(|s| &s.signers)
            .map(|s| s.result.verdict())
            .max()
            .unwrap_or(Verdict::None);
        Report {
            verdict,
            signatures,
        }
    }

    /// Every signer in document order.
    pub fn signers(&self) -> impl Iterator<Item = (&SignatureReport, &SignerReport)> {
        self.signatures
            .iter()
            .flat_map(|sig| sig.signers.iter().map(move |s| (sig, s)))
    }

    pub fn signer_count(&self) -> usize {
        self.signers().count()
    }

    pub fn valid_count(&self) -> usize {
        self.signers()
            .filter(|(_, s)| s.result == SignerResult::Pass)
            .count()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The human report: the verdict first, then one block per signer.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let n = self.signer_count();
        let valid = self.valid_count();
        match self.verdict {
            Verdict::None => out.push_str("Verdict: NONE (no CMS signature found)\n"),
            v => out.push_str(&format!(
                "Verdict: {} ({valid} of {n} signer{} valid)\n",
                v.as_str().to_uppercase(),
                if n == 1 { "" } else { "s" }
            )),
        }
        let mut index = 0;
        for sig in &self.signatures {
            let mut place = sig.kind.as_str().to_string();
            if let Some(p) = &sig.part {
                place.push_str(&format!(", part {p}"));
            }
            if let Some(f) = &sig.file {
                place.push_str(&format!(", file \"{f}\""));
            }
            if let Some(c) = &sig.covers {
                place.push_str(&format!(", signs \"{c}\""));
            }
            for s in &sig.signers {
                index += 1;
                out.push('\n');
                let what = match s.reason {
                    None => s.result.as_str().to_uppercase(),
                    Some(r) => format!("{} ({})", s.result.as_str().to_uppercase(), r.as_str()),
                };
                out.push_str(&format!("Signer {index}: {what}\n"));
                let mut line = |label: &str, value: &str| {
                    // Certificate text must not drive the terminal.
                    let value: String = value
                        .chars()
                        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                        .collect();
                    out.push_str(&format!("  {label:<14}{value}\n"));
                };
                line("Found in:", &place);
                if let Some(d) = &s.detail {
                    line("Why:", d);
                }
                for n in &s.notes {
                    line("Note:", n);
                }
                let claimed = if s.result == SignerResult::Pass {
                    ""
                } else {
                    " (as the certificate claims; not verified)"
                };
                if let Some(v) = &s.full_name {
                    line("Name:", &format!("{v}{claimed}"));
                }
                if let Some(v) = &s.iin {
                    line("IIN:", v);
                }
                if let Some(v) = &s.organization {
                    match &s.bin {
                        Some(b) => line("Organization:", &format!("{v} (BIN {b})")),
                        None => line("Organization:", v),
                    }
                } else if let Some(b) = &s.bin {
                    line("BIN:", b);
                }
                if let Some(v) = &s.email {
                    line("Email:", v);
                }
                if !s.roles.is_empty() {
                    line("Roles:", &s.roles.join(", "));
                }
                if let Some(v) = &s.key_usage {
                    line("Key usage:", v);
                }
                if let Some(t) = &s.tsp_time {
                    line("Signed at:", &format!("{t} (trusted timestamp)"));
                }
                if let Some(t) = &s.signing_time {
                    line("Signing time:", &format!("{t} (the signer's own clock)"));
                }
                if let Some(v) = &s.algorithm {
                    line("Algorithm:", v);
                }
                if let (Some(serial), Some(issuer)) = (&s.cert_serial, &s.issuer) {
                    line("Certificate:", &format!("serial {serial}"));
                    line("Issuer:", issuer);
                }
                if let (Some(a), Some(b)) = (&s.not_before, &s.not_after) {
                    line("Valid:", &format!("{a} to {b}"));
                }
            }
        }
        out
    }
}

/// RFC 3339 UTC (`2022-09-28T14:40:30Z`) of seconds since the epoch.
pub fn rfc3339(secs: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => secs.to_string(),
    }
}

/// Short human form (`2022-09-28 14:40 UTC`) for the summary line.
pub fn short_time(rfc3339_utc: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339_utc) {
        Ok(t) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => rfc3339_utc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_the_worst() {
        let sig = |results: &[SignerResult]| SignatureReport {
            part: Some("TEXT".into()),
            kind: Kind::MultipartSigned,
            file: None,
            covers: None,
            signers: results
                .iter()
                .map(|r| SignerReport::new(*r, None))
                .collect(),
        };
        assert_eq!(Report::new(vec![]).verdict, Verdict::None);
        assert_eq!(
            Report::new(vec![sig(&[SignerResult::Pass, SignerResult::Pass])]).verdict,
            Verdict::Pass
        );
        assert_eq!(
            Report::new(vec![sig(&[
                SignerResult::TempError,
                SignerResult::PermError
            ])])
            .verdict,
            Verdict::PermError
        );
        assert_eq!(
            Report::new(vec![
                sig(&[SignerResult::PermError]),
                sig(&[SignerResult::Fail, SignerResult::Pass])
            ])
            .verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn json_has_exactly_the_spec_fields() {
        let r = Report::new(vec![SignatureReport {
            part: Some("TEXT".into()),
            kind: Kind::MultipartSigned,
            file: None,
            covers: None,
            signers: vec![SignerReport::failed(Reason::Expired, "x")],
        }]);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let signer = v["signatures"][0]["signers"][0].as_object().unwrap();
        let keys: Vec<&str> = signer.keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "result",
            "reason",
            "common_name",
            "surname",
            "given_name",
            "full_name",
            "email",
            "iin",
            "bin",
            "organization",
            "roles",
            "key_usage",
            "algorithm",
            "cert_serial",
            "issuer",
            "not_before",
            "not_after",
            "signing_time",
            "tsp_time",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(v["verdict"], "fail");
        assert_eq!(signer["reason"], "expired");
        assert_eq!(signer["result"], "fail");
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(1_664_376_030), "2022-09-28T14:40:30Z");
        assert_eq!(short_time("2022-09-28T14:40:30Z"), "2022-09-28 14:40 UTC");
    }
}
