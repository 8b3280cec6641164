//! `tanba certs list` and `tanba certs fetch-nca` (SPEC §2, §7): what `signatures.trust_dir`
//! trusts, and installing NCA RK's production roots, intermediates and CRLs.
//!
//! `fetch-nca` takes the files from NCA RK's official addresses (plain HTTP, as NCA RK publishes
//! them): certificates from `http://pki.gov.kz/cert/`, CRLs from `http://crl.pki.gov.kz/` and
//! `http://crl.root.gov.kz/`. `--base-url URL` replaces all of them with a mirror laid out as
//! `URL/cert/<name>` and `URL/crl/<name>`. Only CA certificates are installed; a CRL is kept only
//! when its signature verifies with its issuer's certificate. Because the download is not
//! authenticated, the SHA-256 fingerprint of every certificate is printed to be compared with the
//! ones NCA RK publishes (docs/revocation.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::CertsCmd;
use crate::config::Config;
use crate::filter::algo;
use crate::filter::cert::{certs_from_pem_or_der, Cert, KU_KEY_CERT_SIGN};
use crate::filter::crl::{Crl, MAX_CRL_SIZE};
use crate::filter::report::rfc3339;
use crate::revocation::{http, write_atomic};

/// Exit code when something was refused or a required file could not be fetched.
pub const EXIT_INCOMPLETE: i32 = 1;

/// A certificate file NCA RK publishes.
struct CertFile {
    name: &'static str,
    /// The current hierarchy (2020/2022 roots and intermediates); the others are the earlier
    /// hierarchy, still needed for signatures timestamped while it was in use.
    required: bool,
}

/// A CRL NCA RK publishes, and the certificate file of the CA that issues it.
struct CrlFile {
    name: &'static str,
    host: &'static str,
    issuer: &'static str,
}

const PKI: &str = "http://pki.gov.kz/cert";
const CRL_PKI: &str = "http://crl.pki.gov.kz";
const CRL_ROOT: &str = "http://crl.root.gov.kz";

/// NCA RK's roots and intermediates (SPEC §7; the names NCANode, gokalkan and NCA RK's own
/// installers use).
const CERTS: &[CertFile] = &[
    CertFile {
        name: "root_gost_2022.cer",
        required: true,
    },
    CertFile {
        name: "root_rsa_2020.cer",
        required: true,
    },
    CertFile {
        name: "nca_gost_2022.cer",
        required: true,
    },
    CertFile {
        name: "nca_rsa_2022.cer",
        required: true,
    },
    CertFile {
        name: "root_gost.crt",
        required: false,
    },
    CertFile {
        name: "root_rsa.crt",
        required: false,
    },
    CertFile {
        name: "nca_gost.crt",
        required: false,
    },
    CertFile {
        name: "nca_rsa.crt",
        required: false,
    },
];

/// Their CRLs: the intermediates' (end-entity revocations, with deltas) and the roots' (which
/// revoke intermediates).
const CRLS: &[CrlFile] = &[
    CrlFile {
        name: "nca_gost_2022.crl",
        host: CRL_PKI,
        issuer: "nca_gost_2022.cer",
    },
    CrlFile {
        name: "nca_rsa_2022.crl",
        host: CRL_PKI,
        issuer: "nca_rsa_2022.cer",
    },
    CrlFile {
        name: "nca_d_gost_2022.crl",
        host: CRL_PKI,
        issuer: "nca_gost_2022.cer",
    },
    CrlFile {
        name: "nca_d_rsa_2022.crl",
        host: CRL_PKI,
        issuer: "nca_rsa_2022.cer",
    },
    CrlFile {
        name: "gost2015_2022.crl",
        host: CRL_ROOT,
        issuer: "root_gost_2022.cer",
    },
    CrlFile {
        name: "rsa2020.crl",
        host: CRL_ROOT,
        issuer: "root_rsa_2020.cer",
    },
    CrlFile {
        name: "nca_gost.crl",
        host: CRL_PKI,
        issuer: "nca_gost.crt",
    },
    CrlFile {
        name: "nca_rsa.crl",
        host: CRL_PKI,
        issuer: "nca_rsa.crt",
    },
];

pub fn run(cmd: &CertsCmd, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    match cmd {
        CertsCmd::List => list(&config),
        CertsCmd::FetchNca { base_url } => fetch_nca(&config, base_url.as_deref()),
    }
}

/// SHA-256 fingerprint, upper-case hex pairs joined by colons.
pub fn fingerprint(der: &[u8]) -> String {
    openssl::sha::sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn is_ca(c: &Cert) -> bool {
    matches!(c.basic_constraints, Some((true, _)))
        && c.key_usage.is_none_or(|ku| ku & KU_KEY_CERT_SIGN != 0)
}

/// Self-issued and its signature verifies with its own key.
fn is_self_signed(c: &Cert) -> bool {
    c.is_self_issued() && signed_by(c, c)
}

fn signed_by(c: &Cert, issuer: &Cert) -> bool {
    c.issuer == issuer.subject
        && algo::scheme_for_cert(&c.sig_alg)
            .and_then(|s| algo::verify(&s, &issuer.spki, &c.tbs, &c.signature))
            .is_ok()
}

fn key_name(c: &Cert) -> String {
    let Ok(alg) = algo::spki_algorithm(&c.spki) else {
        return "unknown".into();
    };
    if let Some(v) = crate::filter::gost::Variant::from_key_oid(&alg.oid) {
        return v.name().to_string();
    }
    match alg.oid.as_str() {
        algo::OID_RSA => match openssl::pkey::PKey::public_key_from_der(&c.spki) {
            Ok(k) => format!("RSA {} bits", k.bits()),
            Err(_) => "RSA".into(),
        },
        algo::OID_EC => "ECDSA".into(),
        other => other.to_string(),
    }
}

fn validity(c: &Cert, now: i64) -> String {
    let state = if now > c.not_after {
        " (expired)"
    } else if now < c.not_before {
        " (not yet valid)"
    } else {
        ""
    };
    format!(
        "{} to {}{state}",
        rfc3339(c.not_before),
        rfc3339(c.not_after)
    )
}

fn print_cert(c: &Cert, now: i64, issuers: &[Cert]) {
    println!("  Subject:     {}", clean(&c.subject_string()));
    if is_self_signed(c) {
        println!("  Issuer:      (self-signed)");
    } else {
        let found = issuers.iter().find(|i| signed_by(c, i));
        println!(
            "  Issuer:      {}{}",
            clean(&c.issuer_string()),
            if found.is_some() {
                ""
            } else {
                " (not in trust_dir)"
            }
        );
    }
    println!("  Valid:       {}", validity(c, now));
    println!("  SHA-256:     {}", fingerprint(&c.raw));
    println!(
        "  Type:        {}",
        match (is_ca(c), is_self_signed(c)) {
            (true, true) => "root CA",
            (true, false) => "intermediate CA",
            (false, _) => "not a CA (cannot issue certificates)",
        }
    );
    println!("  Key:         {}", key_name(c));
}

/// Certificate text must not drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

fn skipped_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || lower.starts_with("readme")
        || lower.ends_with(".md")
        || lower.ends_with(".txt")
}

/// Files of a directory, sorted (missing directory: none).
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        if skipped_name(&name) || !e.path().is_file() {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Every certificate in `dir`, by file; files that are not certificates are skipped with a
/// warning.
fn load_certs(dir: &Path) -> Result<Vec<(PathBuf, Vec<Cert>)>> {
    let mut out = Vec::new();
    for p in files(dir)? {
        let lower = p.to_string_lossy().to_ascii_lowercase();
        if lower.ends_with(".crl") {
            continue;
        }
        let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        match certs_from_pem_or_der(&data) {
            Ok(c) => out.push((p, c)),
            Err(e) => eprintln!("warning: {}: not a certificate ({e}); skipped", p.display()),
        }
    }
    Ok(out)
}

fn list(config: &Config) -> Result<i32> {
    let dir = &config.signatures.trust_dir;
    let now = crate::filter::unix(std::time::SystemTime::now());
    let loaded = load_certs(dir)?;
    let all: Vec<Cert> = loaded.iter().flat_map(|(_, c)| c.clone()).collect();
    println!("Trusted certificates in {}:", dir.display());
    if all.is_empty() {
        println!("  (none: no signature can pass; install NCA RK's with `tanba certs fetch-nca`)");
    }
    for (p, certs) in &loaded {
        for c in certs {
            println!();
            println!("{}", p.display());
            print_cert(c, now, &all);
        }
    }
    let roots = all.iter().filter(|c| is_ca(c) && is_self_signed(c)).count();
    let inter = all
        .iter()
        .filter(|c| is_ca(c) && !is_self_signed(c))
        .count();
    println!();
    println!(
        "{} certificates: {roots} root, {inter} intermediate, {} other",
        all.len(),
        all.len() - roots - inter
    );

    if let Some(crl_dir) = &config.signatures.crl_dir {
        println!();
        println!("CRLs in {}:", crl_dir.display());
        for p in files(crl_dir)? {
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            match Crl::parse_any(&data) {
                Ok(crls) => {
                    for crl in crls {
                        println!();
                        println!("{}", p.display());
                        print_crl(&crl, &all, now);
                    }
                }
                Err(e) => eprintln!("warning: {}: not a CRL ({e}); skipped", p.display()),
            }
        }
    }
    Ok(0)
}

fn print_crl(crl: &Crl, issuers: &[Cert], now: i64) {
    println!(
        "  Issuer:      {}{}",
        clean(&crl.issuer_string()),
        if crl.is_delta() { " (delta CRL)" } else { "" }
    );
    let stale = match crl.next_update {
        Some(n) if n < now => " (out of date)",
        _ => "",
    };
    println!(
        "  Updated:     {}, next {}{stale}",
        rfc3339(crl.this_update),
        crl.next_update
            .map(rfc3339)
            .unwrap_or_else(|| "not given".into())
    );
    println!("  Entries:     {}", crl.len());
    let sig = match issuers.iter().find(|c| c.subject == crl.issuer) {
        Some(c) => match crl.verify_signature(c) {
            Ok(()) => "verified".to_string(),
            Err(e) => format!("BAD: {e}"),
        },
        None => "issuer not in trust_dir".to_string(),
    };
    println!("  Signature:   {sig}");
}

fn fetch_nca(config: &Config, base_url: Option<&str>) -> Result<i32> {
    let base = base_url.map(|b| b.trim_end_matches('/').to_string());
    if let Some(b) = &base {
        http::parse_url(b).map_err(|e| anyhow::anyhow!("--base-url: {e}"))?;
    }
    let cert_url = |name: &str| match &base {
        Some(b) => format!("{b}/cert/{name}"),
        None => format!("{PKI}/{name}"),
    };
    let crl_url = |f: &CrlFile| match &base {
        Some(b) => format!("{b}/crl/{}", f.name),
        None => format!("{}/{}", f.host, f.name),
    };
    let trust_dir = &config.signatures.trust_dir;
    std::fs::create_dir_all(trust_dir)
        .with_context(|| format!("signatures.trust_dir: creating {}", trust_dir.display()))?;
    let now = crate::filter::unix(std::time::SystemTime::now());
    let mut complete = true;

    // Certificates.
    let mut got: Vec<(&'static str, Vec<Cert>)> = Vec::new();
    let mut downloads: Vec<(&CertFile, Vec<Cert>)> = Vec::new();
    for f in CERTS {
        let url = cert_url(f.name);
        let data = match http::get(&url, 1 << 20, Duration::from_secs(30)) {
            Ok(d) => d,
            Err(e) => {
                if f.required {
                    complete = false;
                    eprintln!("error: {}: {e}", f.name);
                } else {
                    println!("not available: {} ({e})", f.name);
                }
                continue;
            }
        };
        match certs_from_pem_or_der(&data) {
            Ok(certs) => downloads.push((f, certs)),
            Err(e) => {
                complete = false;
                println!("refused: {} from {url}: not a certificate ({e})", f.name);
            }
        }
    }
    let trusted: Vec<Cert> = load_certs(trust_dir)?
        .into_iter()
        .flat_map(|(_, c)| c)
        .collect();
    let pool: Vec<Cert> = trusted
        .iter()
        .cloned()
        .chain(downloads.iter().flat_map(|(_, c)| c.clone()))
        .collect();
    for (f, certs) in downloads {
        if let Some(c) = certs.iter().find(|c| !is_ca(c)) {
            complete = false;
            println!(
                "refused: {}: not a CA certificate ({}, SHA-256 {})",
                f.name,
                clean(&c.subject_string()),
                fingerprint(&c.raw)
            );
            continue;
        }
        let path = trust_dir.join(f.name);
        let bytes = if certs.len() == 1 {
            certs[0].raw.clone()
        } else {
            pem_bundle(&certs)
        };
        let state = match std::fs::read(&path) {
            Ok(old) if old == bytes => "unchanged",
            Ok(_) => "updated",
            Err(_) => "installed",
        };
        if state != "unchanged" {
            write_atomic(&path, &bytes);
            if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                anyhow::bail!("cannot write {}", path.display());
            }
        }
        println!("{state}: {}", path.display());
        for c in &certs {
            print_cert(c, now, &pool);
        }
        got.push((f.name, certs));
    }

    // CRLs.
    match &config.signatures.crl_dir {
        None => println!(
            "note: signatures.crl_dir is not set, so no CRLs were downloaded (with \
             revocation = \"crl\" the server fetches them itself)"
        ),
        Some(crl_dir) => {
            for f in CRLS {
                let issuer_certs: Vec<&Cert> = got
                    .iter()
                    .filter(|(n, _)| *n == f.issuer)
                    .flat_map(|(_, c)| c)
                    .collect();
                if issuer_certs.is_empty() {
                    continue;
                }
                let url = crl_url(f);
                let crl = match http::get(&url, MAX_CRL_SIZE, Duration::from_secs(300)) {
                    Ok(d) => d,
                    Err(e) => {
                        println!("not available: {} ({e})", f.name);
                        continue;
                    }
                };
                let checked = Crl::from_der(&crl)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        let mut last = String::from("no issuer");
                        for i in &issuer_certs {
                            match c.verify_signature(i) {
                                Ok(()) => return Ok(c),
                                Err(e) => last = e,
                            }
                        }
                        Err(last)
                    });
                match checked {
                    Ok(c) => {
                        let path = crl_dir.join(f.name);
                        write_atomic(&path, &crl);
                        println!(
                            "CRL {}: {} entries{}, next update {}",
                            path.display(),
                            c.len(),
                            if c.is_delta() { " (delta)" } else { "" },
                            c.next_update
                                .map(rfc3339)
                                .unwrap_or_else(|| "not given".into())
                        );
                    }
                    Err(e) => {
                        complete = false;
                        println!("refused: {} from {url}: {e}", f.name);
                    }
                }
            }
        }
    }
    println!(
        "Compare the SHA-256 fingerprints above with the ones NCA RK publishes at \
         https://pki.gov.kz before relying on them."
    );
    Ok(if complete { 0 } else { EXIT_INCOMPLETE })
}

fn pem_bundle(certs: &[Cert]) -> Vec<u8> {
    use base64::Engine;
    let mut out = String::new();
    for c in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&c.raw);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}
