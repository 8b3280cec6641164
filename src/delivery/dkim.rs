//! DKIM (RFC 6376) for outbound mail: signing with the keys named in `[dkim]`, and
//! `tanba dkim generate`, which writes a key and tells the operator what to publish.
//!
//! Which domain signs: the domain of the `From:` header when `[dkim]` has a key for it (that is
//! what DMARC aligns with), else the envelope sender's domain when it has one; otherwise the
//! message goes out unsigned. Signatures are `relaxed/relaxed`, `rsa-sha256` (RSA keys) or
//! `ed25519-sha256` (RFC 8463, Ed25519 keys). Keys are PEM: PKCS#8 (`PRIVATE KEY`, RSA or
//! Ed25519) or PKCS#1 (`RSA PRIVATE KEY`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;

use crate::config::Config;

/// Header fields signed when present (RFC 6376 §5.4.1 recommendations).
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-ID",
    "Content-Description",
    "In-Reply-To",
    "References",
    "Sender",
    "List-Id",
    "List-Unsubscribe",
];

enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// The signing keys, loaded once when the worker starts. A key that cannot be loaded is kept as
/// its error: mail from that domain is deferred (and the error shown in `tanba queue list`) rather
/// than sent unsigned or lost.
pub struct Signers {
    keys: BTreeMap<String, Result<Key, String>>,
}

impl Signers {
    pub fn load(config: &Config) -> Signers {
        let mut keys = BTreeMap::new();
        for (domain, k) in &config.dkim {
            let key = load_key(domain, &k.selector, &k.key).map_err(|e| {
                let msg = format!("DKIM key for {domain} ({}): {e:#}", k.key.display());
                tracing::error!("{msg}");
                msg
            });
            keys.insert(domain.to_ascii_lowercase(), key);
        }
        Signers { keys }
    }

    /// Like [`Signers::load`], but a key that does not load is an error: a reload (SIGHUP) with
    /// a broken key is refused and the running keys stay.
    pub fn load_strict(config: &Config) -> anyhow::Result<Signers> {
        let mut keys = BTreeMap::new();
        for (domain, k) in &config.dkim {
            let key = load_key(domain, &k.selector, &k.key)
                .with_context(|| format!("dkim.\"{domain}\".key: {}", k.key.display()))?;
            keys.insert(domain.to_ascii_lowercase(), Ok(key));
        }
        Ok(Signers { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `DKIM-Signature:` header field (with its CRLF) to prepend to `message`, or `None`
    /// when neither the From domain nor the sender's domain has a key.
    pub fn sign(&self, sender: &str, message: &[u8]) -> Result<Option<String>, String> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let from = from_domain(message);
        let envelope = sender.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        let Some(key) = [from, envelope]
            .into_iter()
            .flatten()
            .find_map(|d| self.keys.get(&d))
        else {
            return Ok(None);
        };
        let sig = match key {
            Err(e) => return Err(e.clone()),
            Ok(Key::Rsa(s)) => s.sign(message).map(|s| s.to_header()),
            Ok(Key::Ed25519(s)) => s.sign(message).map(|s| s.to_header()),
        };
        sig.map(Some)
            .map_err(|e| format!("DKIM signing failed: {e}"))
    }
}

/// The domain of the first address in the `From:` header, lower-case. `parse_headers` stops after
/// the top-level header, so no MIME tree is built and nothing nests (see `crate::mime_guard`).
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let addr = parsed.from()?.first()?.address()?;
    addr.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase())
}

fn load_key(domain: &str, selector: &str, path: &Path) -> Result<Key> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    use rustls::pki_types::pem::PemObject;
    let der = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => bail!("no private key in the file"),
        Err(e) => bail!("parsing the PEM key: {e}"),
    };
    let key = match der {
        PrivateKeyDer::Pkcs1(_) => Key::Rsa(rsa_signer(
            RsaKey::<Sha256>::from_key_der(der)?,
            domain,
            selector,
        )),
        PrivateKeyDer::Pkcs8(ref k) => match RsaKey::<Sha256>::from_key_der(der.clone_key()) {
            Ok(rsa) => Key::Rsa(rsa_signer(rsa, domain, selector)),
            Err(_) => {
                let ed = Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                    .map_err(|e| anyhow::anyhow!("neither an RSA nor an Ed25519 key: {e}"))?;
                Key::Ed25519(
                    DkimSigner::from_key(ed)
                        .domain(domain)
                        .selector(selector)
                        .headers(SIGNED_HEADERS.iter().copied())
                        .header_canonicalization(Canonicalization::Relaxed)
                        .body_canonicalization(Canonicalization::Relaxed),
                )
            }
        },
        _ => bail!("unsupported key type (use RSA or Ed25519)"),
    };
    Ok(key)
}

fn rsa_signer(
    key: RsaKey<Sha256>,
    domain: &str,
    selector: &str,
) -> DkimSigner<RsaKey<Sha256>, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// What `tanba dkim generate` did, and the text to show the operator.
pub struct Generated {
    pub key_path: PathBuf,
    /// `selector._domainkey.domain`
    pub record_name: String,
    /// `v=DKIM1; k=rsa; p=...`
    pub record_value: String,
    /// Everything to print.
    pub text: String,
}

/// Writes a new RSA-2048 key (PKCS#8 PEM, mode 0600; never overwrites) to `out` or
/// `<data_dir>/dkim/<domain>.key`.
pub fn generate(
    config: &Config,
    domain: &str,
    selector: &str,
    out: Option<&Path>,
) -> Result<Generated> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty()
        || !domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        bail!("{domain:?} is not a domain name (use the ASCII/punycode form)");
    }
    if selector.is_empty()
        || !selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("{selector:?} is not a valid selector (letters, digits, '-', '_', '.')");
    }
    let path = match out {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
        None => config.data_dir.join("dkim").join(format!("{domain}.key")),
    };

    let rsa = openssl::rsa::Rsa::generate(2048).context("generating an RSA key")?;
    let pkey = openssl::pkey::PKey::from_rsa(rsa)?;
    let pem = pkey.private_key_to_pem_pkcs8()?;
    let spki = pkey.public_key_to_der()?;
    write_new_private(&path, &pem)?;
    give_to_data_dir_owner(&config.data_dir, &path)?;

    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(spki);
    let record_name = format!("{selector}._domainkey.{domain}");
    let record_value = format!("v=DKIM1; k=rsa; p={p}");
    // Zone-file syntax: a TXT character-string holds at most 255 bytes.
    let strings: Vec<String> = record_value
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let mut text = format!(
        "Wrote the DKIM key for {domain} to {} (RSA-2048, mode 0600).\n\n",
        path.display()
    );
    if !config.is_local_domain(&domain) {
        text.push_str(&format!(
            "Note: {domain} is not in server.domains ({}); only mail from local domains is signed.\n\n",
            config.domains.join(", ")
        ));
    }
    text.push_str(&format!(
        "1. Publish this TXT record in the DNS zone of {domain}:\n\n\
         {record_name}. 3600 IN TXT ( {} )\n\n\
         2. Add these lines to the configuration and restart tanba:\n\n\
         [dkim.\"{domain}\"]\n\
         selector = \"{selector}\"\n\
         key = \"{}\"\n\n\
         3. Publish SPF and DMARC too (see docs/delivery.md), for example:\n\n\
         {domain}. 3600 IN TXT \"v=spf1 mx -all\"\n\
         _dmarc.{domain}. 3600 IN TXT \"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\"\n",
        strings.join(" "),
        path.display()
    ));
    Ok(Generated {
        key_path: path,
        record_name,
        record_value,
        text,
    })
}

/// Run as root (`sudo tanba dkim generate`), the key would belong to root and the server (user
/// `tanba`) could not read it: give the key, and the `dkim/` directory when inside `data_dir`,
/// to the owner of `data_dir`.
fn give_to_data_dir_owner(data_dir: &Path, key: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return Ok(());
    };
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(());
    }
    if let Some(dir) = key
        .parent()
        .filter(|d| d.starts_with(data_dir) && *d != data_dir)
    {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    std::os::unix::fs::chown(key, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", key.display()))?;
    Ok(())
}

fn write_new_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists: keep it (it may be published already) or choose another --out",
                    path.display()
                )
            } else {
                anyhow::anyhow!("writing {}: {e}", path.display())
            }
        })?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, dkim: &str) -> Config {
        let toml = format!(
            "[server]\ndomains = [\"a.test\"]\ndata_dir = \"{}\"\n{dkim}",
            dir.display()
        );
        Config::from_toml(&toml, None).unwrap()
    }

    #[test]
    fn generate_then_sign_with_the_from_domain() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let g = generate(&c, "A.test", "sel", None).unwrap();
        assert_eq!(g.key_path, dir.path().join("dkim/a.test.key"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&g.key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(g.text.contains("sel._domainkey.a.test. 3600 IN TXT"));
        assert!(g.record_value.starts_with("v=DKIM1; k=rsa; p=MII"));
        // Never overwrites.
        let e = generate(&c, "a.test", "sel", None).err().unwrap();
        assert!(format!("{e}").contains("already exists"));

        let c = config(
            dir.path(),
            &format!(
                "[dkim.\"a.test\"]\nselector = \"sel\"\nkey = \"{}\"\n",
                g.key_path.display()
            ),
        );
        let s = Signers::load(&c);
        let msg = b"From: Alice <alice@A.test>\r\nTo: b@b.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let h = s.sign("bounce@other.test", msg).unwrap().unwrap();
        assert!(h.starts_with("DKIM-Signature: v=1; a=rsa-sha256;"), "{h}");
        assert!(h.contains("d=a.test") && h.contains("s=sel"), "{h}");
        assert!(h.contains("c=relaxed/relaxed"), "{h}");
        // No key for either domain: unsigned.
        let other = b"From: x@c.test\r\n\r\nbody\r\n";
        assert_eq!(s.sign("x@c.test", other).unwrap(), None);
        // Envelope domain as fallback.
        assert!(s.sign("alice@a.test", other).unwrap().is_some());
    }

    #[test]
    fn ed25519_keys_and_broken_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ed = openssl::pkey::PKey::generate_ed25519().unwrap();
        let p = dir.path().join("ed.key");
        std::fs::write(&p, ed.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, b"not a key").unwrap();
        let c = config(
            dir.path(),
            &format!(
                "[dkim.\"a.test\"]\nselector = \"ed\"\nkey = \"{}\"\n[dkim.\"b.test\"]\nselector = \"x\"\nkey = \"{}\"\n",
                p.display(),
                bad.display()
            ),
        );
        let s = Signers::load(&c);
        let h = s.sign("", b"From: a@a.test\r\n\r\nx\r\n").unwrap().unwrap();
        assert!(h.contains("a=ed25519-sha256"), "{h}");
        let e = s.sign("", b"From: a@b.test\r\n\r\nx\r\n").unwrap_err();
        assert!(e.contains("DKIM key for b.test"), "{e}");
    }
}
