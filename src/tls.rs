//! TLS for the listeners (rustls). Every listener (SMTP 25/587 STARTTLS and 465, IMAP 143
//! STARTTLS and 993, HTTPS) shares one acceptor whose certificate comes from [`Certs`], a
//! resolver holding the current certificate behind a lock: a renewed ACME certificate or a
//! SIGHUP reload replaces it for the next handshake on every listener, without a restart.
//!
//! Which certificate ([`identity`]): with `acme.directory` set, the ACME certificate in
//! `<data_dir>/acme/` once there is one (until then, the `[tls]` pair or the self-signed one);
//! otherwise the `[tls]` pair; when that is empty, a self-signed pair for `server.hostname`
//! generated once into `<data_dir>/tls/` and reused.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// The certificate every TLS listener presents, swappable while serving.
#[derive(Debug)]
pub struct Certs {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    pub fn new(key: CertifiedKey) -> Arc<Certs> {
        Arc::new(Certs {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// The certificate (chain and key) handshakes use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// From the next handshake on, every listener presents `key`.
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Builds the acceptor every listener shares, presenting whatever `certs` holds.
pub fn server_acceptor(certs: Arc<Certs>) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// An acceptor with the certificate [`identity`] picks (for `tanba check`).
pub fn acceptor(config: &Config) -> Result<TlsAcceptor> {
    server_acceptor(Certs::new(identity(config)?))
}

/// The certificate to serve under `config` (see the module docs for the order).
pub fn identity(config: &Config) -> Result<CertifiedKey> {
    if config.acme.directory.is_some() {
        match crate::acme::stored_identity(&config.data_dir) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "acme: the stored certificate is unusable ({e:#}); serving the [tls] or \
                 self-signed one until a new one is issued"
            ),
        }
    }
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => ensure_self_signed(&config.data_dir, &config.hostname)?,
    };
    let certs = load_certs(&cert).context("tls.cert")?;
    let key = load_key(&key).context("tls.key")?;
    certified_key(certs, key).context("tls.cert/tls.key do not form a usable pair")
}

/// A chain and its private key as rustls serves them; refuses a key that does not belong to
/// the first certificate.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| anyhow!("{e}"))
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("parsing PEM certificates in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match PrivateKeyDer::from_pem_slice(&data) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => {
            Err(anyhow!("{}: no PEM private key found", path.display()))
        }
        Err(e) => Err(anyhow!(
            "parsing PEM private key in {}: {e}",
            path.display()
        )),
    }
}

/// Returns the paths of the self-signed pair in `data_dir/tls`, creating it on first use.
pub fn ensure_self_signed(
    data_dir: &Path,
    hostname: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    crate::perms::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_pem, key_pem) = self_signed(hostname)?;
    write_private(&key_path, &key_pem)?;
    // 0600 like everything in data_dir, although a certificate is public.
    write_private(&cert_path, &cert_pem)?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate for {hostname}");
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    crate::perms::write_atomic(path, data).with_context(|| format!("writing {}", path.display()))
}

/// A self-signed ECDSA P-256 certificate for `hostname` (PEM cert, PEM PKCS#8 key), via openssl,
/// which the signature filter needs anyway.
fn self_signed(hostname: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, hostname)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(128, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let (nb, na) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    if hostname.parse::<std::net::IpAddr>().is_ok() {
        san.ip(hostname);
    } else {
        san.dns(hostname);
    }
    let san = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}

/// A certificate verifier that accepts any certificate but still checks the handshake's
/// signatures, so the session is bound to the certificate's key: opportunistic TLS for
/// outbound delivery, and `sslmode=prefer|require` to the database (libpq's meaning).
#[derive(Debug)]
pub(crate) struct AnyCertificate(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
