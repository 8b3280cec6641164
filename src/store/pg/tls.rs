//! TLS to the database (docs/cluster.md, "TLS to the database"): `sslmode` of `store.url` with
//! libpq's meaning, checked by rustls (tokio-postgres-rustls), roots from `store.ca_file` or the
//! system.
//!
//! tokio-postgres itself knows `disable`, `prefer` and `require` only, so the mode is taken out
//! of the URL here ([`split_sslmode`]) and the certificate check is ours:
//! - `disable`: plain text;
//! - `prefer` (the default): TLS when the server offers it, else plain; the certificate is not
//!   checked (as libpq: this only guards against passive listening);
//! - `require`: TLS or no connection; the certificate is not checked;
//! - `verify-ca`: TLS, the certificate must chain to a trusted root;
//! - `verify-full`: as verify-ca, and it must name the host of the URL (the mode to use across
//!   any network you do not own).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore};

/// `sslmode` of `store.url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Whether the server's certificate is checked against trusted roots.
    pub(crate) fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The mode tokio-postgres negotiates with.
    pub(crate) fn negotiate(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as M;
        match self {
            SslMode::Disable => M::Disable,
            SslMode::Prefer => M::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => M::Require,
        }
    }
}

/// The URL without its `sslmode` parameter, and the mode (`prefer` when absent). The error
/// never repeats the URL.
pub(crate) fn split_sslmode(url: &str) -> Result<(String, SslMode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), SslMode::Prefer));
    };
    let mut mode = SslMode::Prefer;
    let mut rest: Vec<&str> = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => {
                        return Err("sslmode must be disable, prefer, require, verify-ca or \
                                    verify-full"
                            .into())
                    }
                }
            }
            Some(("sslrootcert", _)) => {
                return Err("sslrootcert is not used: set store.ca_file".into());
            }
            _ if pair.is_empty() => {}
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mode))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `mode` (not `disable`): the roots of `ca_file` only when set
/// (a private CA: public CAs then cannot vouch for the database), else the system's
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured, as for outbound delivery).
pub(crate) fn client_config(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider())
                .build()
                .map_err(|e| format!("TLS certificate verifier: {e}"))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(AnyName(webpki))
        }
    } else {
        Arc::new(crate::tls::AnyCertificate(provider()))
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("store.ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("store.ca_file {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "store.ca_file {}: no CA certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("loading system CA certificates: {e}");
            }
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted CA certificates for the database's certificate \
                            (system store or store.ca_file)"
                    .into());
            }
        }
    }
    Ok(store)
}

/// verify-ca: the chain must be trusted; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (u, m) = split_sslmode("postgres://a@h/db").unwrap();
        assert_eq!((u.as_str(), m), ("postgres://a@h/db", SslMode::Prefer));
        let (u, m) =
            split_sslmode("postgres://a@h/db?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(
            (u.as_str(), m),
            ("postgres://a@h/db?application_name=x", SslMode::VerifyFull)
        );
        let (u, m) = split_sslmode("postgres://a@h/db?connect_timeout=3&sslmode=require").unwrap();
        assert_eq!(
            (u.as_str(), m),
            ("postgres://a@h/db?connect_timeout=3", SslMode::Require)
        );
        assert!(split_sslmode("postgres://a@h/db?sslmode=allow").is_err());
        assert!(split_sslmode("postgres://a@h/db?sslrootcert=/x").is_err());
    }
}
