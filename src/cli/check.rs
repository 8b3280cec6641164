//! `tanba config check [--bind]`: everything `tanba serve` would refuse, found before a restart
//! (issue 12, item 6). The config itself is validated by [`Config::load_source`] (keys, lines,
//! files readable: EACCES reported as such); on top of that this reads and parses the TLS pair
//! and checks that the key belongs to the certificate, that `data_dir` is writable by the
//! running user, that the DKIM keys parse, that `trust_dir` exists (and holds no NCA RK test
//! certificate), and with `--bind` that every listener can be bound.
//!
//! Output: one `ok:` / `warning:` / `error:` line per finding on stdout, then a summary. Any
//! error makes the command fail with exit 2.

use std::path::Path;

use anyhow::{bail, Result};

use crate::config::{line_of, Config, Source};
use crate::filter::chain::TrustStore;
use crate::preflight;

struct Report {
    raw: String,
    errors: usize,
    warnings: usize,
}

impl Report {
    /// `key (line N)` when the key is written in the file.
    fn key(&self, key: &str) -> String {
        match line_of(&self.raw, key) {
            Some(n) => format!("{key} (line {n})"),
            None => key.to_string(),
        }
    }
    fn ok(&self, msg: String) {
        println!("ok: {msg}");
    }
    fn warn(&mut self, msg: String) {
        self.warnings += 1;
        println!("WARNING: {msg}");
    }
    fn error(&mut self, msg: String) {
        self.errors += 1;
        println!("error: {msg}");
    }
}

pub fn run(c: &Config, source: &Source, bind: bool) -> Result<i32> {
    let raw = source
        .path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut r = Report {
        raw,
        errors: 0,
        warnings: 0,
    };
    println!("config: {source}");

    check_tls(c, &mut r);

    match preflight::writable_dir(&c.data_dir) {
        Ok(()) => r.ok(format!(
            "server.data_dir {} is writable by this user",
            c.data_dir.display()
        )),
        Err(e) => {
            let k = r.key("server.data_dir");
            r.error(format!("{k}: {e}"))
        }
    }

    for (domain, d) in &c.dkim {
        let key = r.key(&format!("dkim.\"{domain}\".key"));
        match std::fs::read(&d.key) {
            Err(e) => r.error(format!("{key}: {}: {e}", d.key.display())),
            Ok(pem) => match openssl::pkey::PKey::private_key_from_pem(&pem) {
                Ok(_) => r.ok(format!("DKIM key of {domain} {}", d.key.display())),
                Err(_) => r.error(format!(
                    "{key}: {} holds no PEM private key (RSA or Ed25519)",
                    d.key.display()
                )),
            },
        }
    }

    check_trust(c, &mut r);

    if bind {
        let plan = [
            ("smtp.mx", &c.smtp.mx),
            ("smtp.submission", &c.smtp.submission),
            ("smtp.submissions", &c.smtp.submissions),
            ("imap.listen", &c.imap.listen),
            ("imap.listen_tls", &c.imap.listen_tls),
            ("http.listen", &c.http.listen),
            ("http.listen_tls", &c.http.listen_tls),
            ("http.metrics", &c.http.metrics),
        ];
        for (key, addrs) in plan {
            let errs = preflight::try_bind(key, addrs);
            if errs.is_empty() {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                r.ok(format!("{key}: can listen on {}", list.join(", ")));
            }
            for e in errs {
                r.error(e);
            }
        }
    }

    if r.errors > 0 {
        bail!(
            "{} problem{} that `tanba serve` would refuse (listed above)",
            r.errors,
            if r.errors == 1 { "" } else { "s" }
        );
    }
    let cert_note = match &c.tls_cert {
        Some(p) => format!("TLS certificate {}", p.display()),
        None => "self-signed TLS certificate in data_dir".into(),
    };
    println!(
        "{}: OK (hostname {}, domains {}, data in {}, {cert_note}{})",
        source
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into()),
        c.hostname,
        c.domains.join(", "),
        c.data_dir.display(),
        match r.warnings {
            0 => String::new(),
            n => format!("; {n} warning{}", if n == 1 { "" } else { "s" }),
        }
    );
    Ok(0)
}

/// The TLS pair as `serve` loads it: PEM parses, the key is the certificate's, rustls takes it.
fn check_tls(c: &Config, r: &mut Report) {
    let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) else {
        let dir = c.data_dir.join("tls");
        if dir.join("cert.pem").is_file() {
            r.ok(format!(
                "TLS: the self-signed pair in {} (tls.cert and tls.key are empty)",
                dir.display()
            ));
        } else {
            r.ok("TLS: tls.cert and tls.key are empty: serve generates a self-signed pair".into());
        }
        return;
    };
    let (kc, kk) = (r.key("tls.cert"), r.key("tls.key"));
    let certs = match crate::tls::load_certs(cert) {
        Ok(c) => c,
        Err(e) => return r.error(format!("{kc}: {e:#}")),
    };
    let pkey = match crate::tls::load_key(key) {
        Ok(k) => k,
        Err(e) => return r.error(format!("{kk}: {e:#}")),
    };
    let leaf = match openssl::x509::X509::from_der(&certs[0]) {
        Ok(x) => x,
        Err(_) => {
            return r.error(format!(
                "{kc}: the first certificate in {} does not parse",
                cert.display()
            ))
        }
    };
    let key_der = pkey.secret_der();
    let matches = openssl::pkey::PKey::private_key_from_der(key_der)
        .ok()
        .zip(leaf.public_key().ok())
        .map(|(k, p)| p.public_eq(&k));
    match matches {
        Some(true) => {}
        Some(false) => {
            return r.error(format!(
                "{kk}: {} is not the private key of the certificate in {} (tls.cert): \
                 a renewed certificate with the old key, or the other way round?",
                key.display(),
                cert.display()
            ))
        }
        None => {
            return r.error(format!(
                "{kk}: {} could not be read as a private key",
                key.display()
            ))
        }
    }
    if let Err(e) = crate::tls::acceptor(c) {
        return r.error(format!("{kc}/{kk}: {e:#}"));
    }
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok();
    if let Some(now) = now {
        if leaf.not_after() < now {
            r.warn(format!(
                "{kc}: the certificate in {} expired on {}",
                cert.display(),
                leaf.not_after()
            ));
        }
    }
    r.ok(format!(
        "TLS: {} ({} certificate{}) and its key {}",
        cert.display(),
        certs.len(),
        if certs.len() == 1 { "" } else { "s" },
        key.display()
    ));
}

/// `trust_dir` exists, parses, and holds no NCA RK test certificate.
fn check_trust(c: &Config, r: &mut Report) {
    let dir: &Path = &c.signatures.trust_dir;
    let k = r.key("signatures.trust_dir");
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return r.warn(format!(
                "{k}: {} does not exist: nothing is trusted, so no signature can pass \
                 (install the NCA RK roots: tanba certs fetch-nca)",
                dir.display()
            ))
        }
        Err(e) => return r.error(format!("{k}: {}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => {
            return r.error(format!("{k}: {} is not a directory", dir.display()))
        }
        Ok(_) => {}
    }
    let trust = match TrustStore::load_dir(dir) {
        Ok(t) => t,
        Err(e) => return r.error(format!("{k}: {e:#}")),
    };
    if trust.is_empty() {
        r.warn(format!(
            "{k}: {} holds no certificates: no signature can pass until the NCA RK roots are \
             installed there (tanba certs fetch-nca)",
            dir.display()
        ));
    } else {
        r.ok(format!(
            "signatures.trust_dir {} holds {} trusted certificates",
            dir.display(),
            trust.len()
        ));
    }
    let test = preflight::nca_test_certs(&trust);
    if !test.is_empty() {
        r.warn(preflight::nca_test_warning(dir, &test));
    }
}
