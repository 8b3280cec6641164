//! TLS to the database (docs/cluster.md, "TLS to the database"): `sslmode` of `store.url` with
//! libpq's meaning, checked by rustls (tokio-postgres-rustls), roots from `store.ca_file` or the
//! system.
//!
//! tokio-postgres itself knows `disable`, `prefer` and `require` only, so the mode is taken out
//! of the URL here ([`split_tls`]) and the certificate check is ours:
//! - `disable`: plain text;
//! - `prefer` (the default): TLS when the server offers it, else plain; the certificate is not
//!   checked (as libpq: this only guards against passive listening);
//! - `require`: TLS or no connection; the certificate is not checked;
//! - `verify-ca`: TLS, the certificate must chain to a trusted root;
//! - `verify-full`: as verify-ca, and it must name the host of the URL (the mode to use across
//!   any network you do not own).
//!
//! A client certificate (`hostssl … cert`, `clientcert=verify-full` in pg_hba.conf): `sslcert`
//! and `sslkey` of the URL, absolute paths to a PEM chain and its PEM key, both or neither, read
//! and checked at start ([`ClientCert::load`]); the key file must be 0600 or stricter (0640 when
//! owned by root), as libpq requires.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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

/// The TLS parameters of `store.url`: what tokio-postgres does not know is taken out.
#[derive(Debug)]
pub(crate) struct UrlTls {
    /// The URL without `sslmode`, `sslcert` and `sslkey`.
    pub(crate) url: String,
    /// `sslmode` (`prefer` when absent).
    pub(crate) mode: SslMode,
    /// `sslcert` and `sslkey`, when given.
    pub(crate) client: Option<ClientCert>,
}

/// The paths of `sslcert` and `sslkey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// A client certificate chain and its key, read and checked.
pub(crate) struct ClientAuth {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Splits `url` into what tokio-postgres parses and the TLS parameters (no files read). The
/// error never repeats the URL.
pub(crate) fn split_tls(url: &str) -> Result<UrlTls, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(UrlTls {
            url: url.to_string(),
            mode: SslMode::Prefer,
            client: None,
        });
    };
    let mut mode = SslMode::Prefer;
    let (mut cert, mut key) = (None, None);
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
            Some(("sslpassword", _)) => {
                return Err(
                    "sslpassword is not supported: sslkey must be an unencrypted key".into(),
                );
            }
            Some(("sslcert", v)) => cert = Some(path_param("sslcert", v)?),
            Some(("sslkey", v)) => key = Some(path_param("sslkey", v)?),
            _ if pair.is_empty() => {}
            _ => rest.push(pair),
        }
    }
    let client = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err("sslcert needs sslkey too (the private key of the certificate)".into())
        }
        (None, Some(_)) => {
            return Err("sslkey needs sslcert too (the certificate of the key)".into())
        }
        (Some(cert), Some(key)) => {
            if mode == SslMode::Disable {
                return Err("sslcert and sslkey are not used with sslmode=disable".into());
            }
            Some(ClientCert { cert, key })
        }
    };
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(UrlTls { url, mode, client })
}

/// The path of URL parameter `name` (percent-decoded, as the rest of the URL); absolute, since
/// a server's working directory is no place to look for its keys.
fn path_param(name: &str, v: &str) -> Result<PathBuf, String> {
    let out: Vec<u8> = percent_encoding::percent_decode_str(v).collect();
    use std::os::unix::ffi::OsStringExt;
    let path = PathBuf::from(std::ffi::OsString::from_vec(out));
    if !path.is_absolute() {
        return Err(format!("{name} must be an absolute path"));
    }
    Ok(path)
}

impl ClientCert {
    /// Reads the chain and the key, checks the key file's permissions and that the key is the
    /// certificate's. Errors name the parameter and the path.
    pub(crate) fn load(&self) -> Result<ClientAuth, String> {
        let (cert, key) = (self.cert.display(), self.key.display());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("sslcert {cert}: {}", pem_error(e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("sslcert {cert}: {}", pem_error(e)))?;
        if chain.is_empty() {
            return Err(format!("sslcert {cert}: no PEM certificate in it"));
        }
        key_permissions(&self.key).map_err(|e| format!("sslkey {key}: {e}"))?;
        let der = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "sslkey {key}: no unencrypted PEM private key in it (PKCS#8, PKCS#1 or SEC1)"
            ),
            e => format!("sslkey {key}: {}", pem_error(e)),
        })?;
        // The same check rustls makes when the config is built, here with the paths named.
        rustls::sign::CertifiedKey::from_der(chain.clone(), der.clone_key(), &provider()).map_err(
            |e| match e {
                TlsError::InconsistentKeys(_) => {
                    format!("sslkey {key} is not the private key of sslcert {cert}")
                }
                e => format!("sslcert {cert} / sslkey {key}: {e}"),
            },
        )?;
        Ok(ClientAuth { chain, key: der })
    }
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".into(),
            std::io::ErrorKind::PermissionDenied => "permission denied".into(),
            _ => e.to_string(),
        },
        e => format!("not valid PEM: {e}"),
    }
}

/// libpq's rule for a client key: a regular file, no access for group or others (0600 or
/// stricter), or group read only when owned by root (0640).
fn key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    })?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    let mode = meta.mode() & 0o777;
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(format!(
            "has permissions {mode:04o}, open to group or others: a private key must be 0600 \
             or stricter (0640 when owned by root), as libpq requires"
        ));
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `mode` (not `disable`): the roots of `ca_file` only when set
/// (a private CA: public CAs then cannot vouch for the database), else the system's
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured, as for outbound delivery).
/// With `client`, that certificate is presented when the server asks for one.
pub(crate) fn client_config(
    mode: SslMode,
    ca_file: Option<&Path>,
    client: Option<ClientAuth>,
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
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => builder
            .with_client_auth_cert(c.chain, c.key)
            .map_err(|e| format!("store.url sslcert/sslkey: {e}")),
    }
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

    fn split_sslmode(url: &str) -> Result<(String, SslMode), String> {
        split_tls(url).map(|t| (t.url, t.mode))
    }

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

    #[test]
    fn sslcert_and_sslkey_are_taken_out_of_the_url() {
        let t = split_tls(
            "postgres://a@h/db?sslcert=/etc/t/c.pem&connect_timeout=3&sslkey=/etc/t%20x/k.pem",
        )
        .unwrap();
        assert_eq!(t.url, "postgres://a@h/db?connect_timeout=3");
        assert_eq!(
            t.client,
            Some(ClientCert {
                cert: "/etc/t/c.pem".into(),
                key: "/etc/t x/k.pem".into()
            })
        );
        let e = split_tls("postgres://a@h/db?sslcert=/c").unwrap_err();
        assert!(e.contains("sslkey"), "{e}");
        let e = split_tls("postgres://a@h/db?sslkey=/k").unwrap_err();
        assert!(e.contains("sslcert"), "{e}");
        let e = split_tls("postgres://a@h/db?sslcert=/c&sslkey=/k&sslmode=disable").unwrap_err();
        assert!(e.contains("disable"), "{e}");
        let e = split_tls("postgres://a@h/db?sslcert=c.pem&sslkey=/k").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        // A malformed escape stays as written (as in the rest of the URL, which tokio-postgres
        // decodes the same lenient way); reading that file then fails naming it.
        let t = split_tls("postgres://a@h/db?sslcert=/c%zz&sslkey=/k").unwrap();
        assert_eq!(t.client.unwrap().cert, PathBuf::from("/c%zz"));
        assert!(split_tls("postgres://a@h/db?sslpassword=x").is_err());
    }
}
