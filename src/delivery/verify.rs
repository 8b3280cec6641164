//! Certificate trust for outbound delivery: the roots the delivery client trusts (the system's,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured, plus `delivery.tls_ca_file` for private or test CAs),
//! and the check of a remote certificate against a host name (RFC 6125 through webpki).
//!
//! Used for MX hosts under an MTA-STS policy (RFC 8461 §4.2: the certificate must chain to a
//! trusted root, be current and name the MX host), for the MTA-STS policy server (§3.3, through
//! ureq) and for a relay that gets credentials.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use tokio_rustls::TlsConnector;

/// Why a certificate (or a TLS session) did not satisfy a policy: the RFC 8460 result type and
/// a sentence for logs and bounces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `certificate-host-mismatch`, `certificate-expired`, `certificate-not-trusted`,
    /// `validation-failure`, `starttls-not-supported` (RFC 8460 §4.3).
    pub result_type: &'static str,
    pub text: String,
}

/// The trusted roots, loaded once per delivery worker.
pub struct Trust {
    roots: Vec<CertificateDer<'static>>,
    /// None when no root could be loaded: every check fails (and says why).
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// Why there is no verifier.
    missing: String,
}

impl Trust {
    /// The system's roots plus the certificates of `ca_file` (PEM). Problems are logged; a file
    /// that cannot be read leaves the system roots.
    pub fn load(ca_file: Option<&Path>) -> Trust {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("loading system CA certificates: {e}");
        }
        let mut roots = found.certs;
        if let Some(path) = ca_file {
            match CertificateDer::pem_file_iter(path) {
                Ok(iter) => {
                    let before = roots.len();
                    for c in iter {
                        match c {
                            Ok(c) => roots.push(c),
                            Err(e) => {
                                tracing::error!("delivery.tls_ca_file {}: {e}", path.display())
                            }
                        }
                    }
                    tracing::info!(
                        "delivery.tls_ca_file {}: {} CA certificates",
                        path.display(),
                        roots.len() - before
                    );
                }
                Err(e) => tracing::error!("delivery.tls_ca_file {}: {e}", path.display()),
            }
        }
        Self::from_roots(roots)
    }

    fn from_roots(roots: Vec<CertificateDer<'static>>) -> Trust {
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
        let (verifier, missing) = if added == 0 {
            (
                None,
                "no trusted CA certificates (system store, SSL_CERT_FILE or delivery.tls_ca_file)"
                    .to_string(),
            )
        } else {
            match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider()).build() {
                Ok(v) => (Some(v), String::new()),
                Err(e) => (None, format!("certificate verifier: {e}")),
            }
        };
        Trust {
            roots,
            verifier,
            missing,
        }
    }

    /// The roots as ureq takes them (for the MTA-STS policy fetch).
    pub fn ureq_roots(&self) -> ureq::tls::RootCerts {
        ureq::tls::RootCerts::Specific(Arc::new(
            self.roots
                .iter()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect(),
        ))
    }

    /// A connector that checks the server's certificate and name during the handshake (the
    /// relay with credentials).
    pub fn connector(&self) -> Result<TlsConnector, String> {
        let v = self.verifier.clone().ok_or_else(|| self.missing.clone())?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(v)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// Checks a presented chain (end entity first) for `host`, now. The handshake itself
    /// (the peer holds the key) was checked by rustls.
    pub fn check(
        &self,
        chain: &[CertificateDer<'_>],
        host: &ServerName<'_>,
    ) -> Result<(), Failure> {
        let Some(v) = &self.verifier else {
            return Err(Failure {
                result_type: "certificate-not-trusted",
                text: self.missing.clone(),
            });
        };
        let Some((ee, intermediates)) = chain.split_first() else {
            return Err(Failure {
                result_type: "validation-failure",
                text: "no certificate presented".into(),
            });
        };
        v.verify_server_cert(ee, intermediates, host, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| Failure {
                result_type: result_type(&e),
                text: format!("certificate not valid for {}: {e}", host.to_str()),
            })
    }
}

/// The RFC 8460 §4.3.1 result type of a rustls verification error.
fn result_type(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate-host-mismatch"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate-expired"
            }
            CertificateError::UnknownIssuer => "certificate-not-trusted",
            _ => "validation-failure",
        },
        _ => "validation-failure",
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_roots_fails_every_check_with_a_reason() {
        let t = Trust::from_roots(Vec::new());
        let host = ServerName::try_from("mx.example.test").unwrap();
        let f = t.check(&[], &host).unwrap_err();
        assert_eq!(f.result_type, "certificate-not-trusted");
        assert!(f.text.contains("no trusted CA"), "{}", f.text);
        assert!(t.connector().is_err());
    }

    #[test]
    fn result_types() {
        use rustls::Error::InvalidCertificate as I;
        assert_eq!(
            result_type(&I(CertificateError::NotValidForName)),
            "certificate-host-mismatch"
        );
        assert_eq!(
            result_type(&I(CertificateError::Expired)),
            "certificate-expired"
        );
        assert_eq!(
            result_type(&I(CertificateError::UnknownIssuer)),
            "certificate-not-trusted"
        );
        assert_eq!(
            result_type(&I(CertificateError::BadSignature)),
            "validation-failure"
        );
    }
}
