//! A test PKI made with the `openssl` command line, once per test run, plus builders for signed
//! messages of every shape the filter must find (SPEC §5).
//!
//! Certificates (RSA unless noted), all with Cyrillic UTF-8 names in the NCA RK profile:
//! * `root` (self-signed) → `inter` (CA) → leaves `individual` (SIGN), `legal` (SIGN, legal
//!   entity, names as BMPString, email in the subject), `auth` (AUTH key), `expired` (2020),
//!   `ecdsa` (P-256), `ecdsa384` (P-384), `dsa` (an algorithm the filter does not implement);
//! * `alien_root` → `alien` (a root nobody trusts);
//! * `fake_root` → `fake_inter` → `impostor`: byte-for-byte the same names and serial numbers as
//!   `root` → `inter` → `individual`, with other keys.
//!
//! `trust` holds `root` and `inter`; `trust_root_only` only `root`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use base64::Engine;

use crate::support::pki::{
    self, ca_issue, cms_sign, config, csr, genpkey, openssl, rsa_key, stamp,
};

pub struct Pki {
    pub dir: PathBuf,
    /// `root` + `inter`.
    pub trust: PathBuf,
    /// `root` only (intermediates must come from the CMS).
    pub trust_root_only: PathBuf,
}

static PKI: OnceLock<Pki> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared test PKI (generated on first use).
pub fn pki() -> &'static Pki {
    PKI.get_or_init(generate)
}

pub const ROOT_SUBJECT: &str = "/C=KZ/CN=ТЕСТ ТҮБІР КУӘЛАНДЫРУШЫ ОРТАЛЫҚ";
pub const INTER_SUBJECT: &str = "/C=KZ/CN=ТЕСТ ҰКО (RSA)";
pub const INDIVIDUAL_SUBJECT: &str =
    "/CN=ТЕСТОВ ТЕСТ/SN=ТЕСТОВ/serialNumber=IIN123456789011/C=KZ/GN=ТЕСТОВИЧ";
pub const LEGAL_SUBJECT: &str = "/CN=ДИРЕКТОРОВ ДИРЕКТОР/SN=ДИРЕКТОРОВ/serialNumber=IIN880101300123/C=KZ/O=АО \"ТЕСТ\"/OU=BIN123456789021/GN=ДИРЕКТОРОВИЧ/emailAddress=ceo@test.kz";

/// The CA config: the shared sections plus `req_bmp` (names as BMPString) and the leaves'
/// extensions.
static CONFIG: LazyLock<String> = LazyLock::new(|| {
    config(
        "email_in_dn = yes",
        r#"[ req_bmp ]
distinguished_name = dn
string_mask = default
prompt = no
[ v3_individual ]
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = emailProtection,1.2.398.3.3.4.1.1
subjectAltName = email:test@example.kz
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ v3_legal ]
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = emailProtection,1.2.398.3.3.4.1.2,1.2.398.3.3.4.1.2.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ v3_auth ]
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth,1.2.398.3.3.4.1.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"#,
    )
});

/// A CA directory able to issue with `openssl ca`.
fn ca_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(format!("ca-{name}"));
    std::fs::create_dir_all(d.join("new")).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("openssl.cnf"), CONFIG.as_str()).unwrap();
    d
}

fn genkey(dir: &Path, name: &str, alg: &str) {
    let key = format!("{name}.key");
    match alg {
        "rsa" => rsa_key(dir, name),
        "dsa" => {
            let params = format!("{name}.params");
            openssl(
                dir,
                &[
                    "genpkey",
                    "-genparam",
                    "-algorithm",
                    "DSA",
                    "-pkeyopt",
                    "dsa_paramgen_bits:2048",
                    "-out",
                    &params,
                ],
            );
            openssl(dir, &["genpkey", "-paramfile", &params, "-out", &key]);
        }
        curve => genpkey(dir, &key, "EC", &format!("ec_paramgen_curve:{curve}")),
    }
}

fn self_signed(dir: &Path, name: &str, subject: &str, serial: &str) {
    genkey(dir, name, "rsa");
    std::fs::write(dir.join("openssl.cnf"), CONFIG.as_str()).unwrap();
    pki::self_signed(dir, name, subject, Some(serial));
}

/// Issues `name` (key of type `alg`) from the CA `ca` with the given serial, dates and
/// extension section.
#[allow(clippy::too_many_arguments)]
fn issue(
    base: &Path,
    ca: &str,
    name: &str,
    alg: &str,
    subject: &str,
    serial: &str,
    start: &str,
    end: &str,
    ext: &str,
    bmp: bool,
) {
    genkey(base, name, alg);
    std::fs::write(base.join("openssl.cnf"), CONFIG.as_str()).unwrap();
    let section: &[&str] = if bmp { &["-section", "req_bmp"] } else { &[] };
    csr(base, name, subject, section);
    let cadir = ca_dir(base, ca);
    std::fs::write(cadir.join("serial"), format!("{serial}\n")).unwrap();
    ca_issue(&cadir, &base.join(ca), &base.join(name), (start, end), ext);
}

/// `root` (self-signed) → `inter` → `leaf` (an individual's signing certificate), RSA, with the
/// names and serial numbers of the main chain; made twice: the real one and the impostor.
fn main_chain(dir: &Path, [root, inter, leaf]: [&str; 3], from: &str, to: &str) {
    self_signed(dir, root, ROOT_SUBJECT, "0x5EC0F1A5");
    issue(
        dir,
        root,
        inter,
        "rsa",
        INTER_SUBJECT,
        "1A2B3C4D5E",
        from,
        to,
        "v3_inter",
        false,
    );
    issue(
        dir,
        inter,
        leaf,
        "rsa",
        INDIVIDUAL_SUBJECT,
        "41E45CC8A04C705963E5CD6769848A934D8EAEF5",
        from,
        to,
        "v3_individual",
        false,
    );
}

fn generate() -> Pki {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("filter-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let now = chrono::Utc::now();
    let from = stamp(now - chrono::Duration::days(1));
    let to = stamp(now + chrono::Duration::days(730));

    main_chain(&dir, ["root", "inter", "individual"], &from, &to);
    issue(
        &dir,
        "inter",
        "legal",
        "rsa",
        LEGAL_SUBJECT,
        "0A11CE",
        &from,
        &to,
        "v3_legal",
        true,
    );
    issue(
        &dir,
        "inter",
        "auth",
        "rsa",
        INDIVIDUAL_SUBJECT,
        "0AA7",
        &from,
        &to,
        "v3_auth",
        false,
    );
    issue(
        &dir,
        "inter",
        "expired",
        "rsa",
        INDIVIDUAL_SUBJECT,
        "0E0E",
        "20200101000000Z",
        "20210101000000Z",
        "v3_individual",
        false,
    );
    issue(
        &dir,
        "inter",
        "ecdsa",
        "P-256",
        INDIVIDUAL_SUBJECT,
        "0EC256",
        &from,
        &to,
        "v3_individual",
        false,
    );
    issue(
        &dir,
        "inter",
        "ecdsa384",
        "P-384",
        LEGAL_SUBJECT,
        "0EC384",
        &from,
        &to,
        "v3_legal",
        false,
    );

    // An algorithm the filter does not implement.
    issue(
        &dir,
        "inter",
        "dsa",
        "dsa",
        INDIVIDUAL_SUBJECT,
        "0D5A",
        &from,
        &to,
        "v3_individual",
        false,
    );

    self_signed(&dir, "alien_root", "/C=KZ/CN=БӨГДЕ ОРТАЛЫҚ", "0x0BAD");
    issue(
        &dir,
        "alien_root",
        "alien",
        "rsa",
        INDIVIDUAL_SUBJECT,
        "0BAD01",
        &from,
        &to,
        "v3_individual",
        false,
    );

    // The impostor chain: same names, same serial numbers, other keys.
    main_chain(&dir, ["fake_root", "fake_inter", "impostor"], &from, &to);

    let trust = dir.join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(dir.join("root.pem"), trust.join("root.pem")).unwrap();
    // The intermediate as DER, to load both encodings.
    openssl(
        &dir,
        &[
            "x509",
            "-in",
            "inter.pem",
            "-outform",
            "DER",
            "-out",
            "trust/inter.cer",
        ],
    );
    let trust_root_only = dir.join("trust-root-only");
    std::fs::create_dir_all(&trust_root_only).unwrap();
    std::fs::copy(dir.join("root.pem"), trust_root_only.join("root.pem")).unwrap();
    Pki {
        dir,
        trust,
        trust_root_only,
    }
}

impl Pki {
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A fresh scratch directory for one test.
    pub fn scratch(&self) -> PathBuf {
        pki::scratch(&self.dir)
    }

    /// `openssl cms -sign` over `content` by each of `signers`, DER out. `opts` are extra
    /// options (`-nodetach`, `-stream`, `-nocerts`, `-keyid`, `-md sha384`, ...). The issuing
    /// intermediate is included unless `opts` has `-nocerts`.
    pub fn sign(&self, signers: &[&str], content: &[u8], opts: &[&str]) -> Vec<u8> {
        let mut args: Vec<String> = Vec::new();
        for s in signers {
            args.push("-signer".into());
            args.push(self.cert(s).display().to_string());
            args.push("-inkey".into());
            args.push(self.dir.join(format!("{s}.key")).display().to_string());
        }
        if !opts.contains(&"-nocerts") && !opts.contains(&"-no-inter") {
            let inter = match signers.first() {
                Some(&"alien") => None,
                Some(&"impostor") => Some("fake_inter"),
                _ => Some("inter"),
            };
            if let Some(i) = inter {
                args.push("-certfile".into());
                args.push(self.cert(i).display().to_string());
            }
        }
        args.extend(
            opts.iter()
                .filter(|o| **o != "-no-inter")
                .map(|s| s.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cms_sign(&self.scratch(), content, &args)
    }

    /// Asserts that `openssl cms -verify` accepts the S/MIME message `msg` with `root` and
    /// `inter` trusted; `what` names the message in the failure.
    pub fn assert_openssl_verifies(&self, msg: &[u8], what: &str) {
        let path = self.write("verify.eml", msg);
        let ca = self.write("ca.pem", &{
            let mut v = std::fs::read(self.cert("root")).unwrap();
            v.extend(std::fs::read(self.cert("inter")).unwrap());
            v
        });
        let out = Command::new("openssl")
            .args(["cms", "-verify", "-purpose", "any", "-CAfile"])
            .arg(&ca)
            .arg("-in")
            .arg(&path)
            .args(["-out", "/dev/null"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl cms -verify failed on {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `data` to a new file named `name` in a scratch directory.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.scratch().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// base64 in 76-column CRLF lines.
pub fn b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// Standard top headers of a test message.
pub fn top_headers(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.kz>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
Date: Sun, 22 Nov 2026 10:15:00 +0000\r\nMessage-ID: <{}@example.kz>\r\nMIME-Version: 1.0\r\n",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The first part of a multipart/signed test message (headers included).
pub const SIGNED_PART: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
\xD0\x94\xD0\xBE\xD0\xB3\xD0\xBE\xD0\xB2\xD0\xBE\xD1\x80 \xE2\x84\x96 1 is attached.\r\nRegards\r\n";

/// `multipart/signed` body (boundary `SIG`) with `part` signed by `sig`.
pub fn multipart_signed_body(part: &[u8], sig: &[u8], legacy: bool) -> Vec<u8> {
    let sig_type = if legacy {
        "application/x-pkcs7-signature"
    } else {
        "application/pkcs7-signature"
    };
    let mut m = b"This is an S/MIME signed message\r\n\r\n--SIG\r\n".to_vec();
    m.extend_from_slice(part);
    m.extend_from_slice(
        format!(
            "\r\n--SIG\r\nContent-Type: {sig_type}; name=\"smime.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n{}\r\n--SIG--\r\n",
            b64(sig)
        )
        .as_bytes(),
    );
    m
}

pub fn multipart_signed_ct(legacy: bool) -> String {
    let proto = if legacy {
        "application/x-pkcs7-signature"
    } else {
        "application/pkcs7-signature"
    };
    format!("Content-Type: multipart/signed; protocol=\"{proto}\"; micalg=sha-256; boundary=\"SIG\"\r\n")
}

/// A complete top-level multipart/signed message signed by `signer`.
pub fn signed_message(signer: &str, subject: &str) -> Vec<u8> {
    let pki = pki();
    message_with_signature(subject, &pki.sign(&[signer], SIGNED_PART, &[]))
}

/// A top-level multipart/signed message over `SIGNED_PART` with the detached CMS `sig`.
pub fn message_with_signature(subject: &str, sig: &[u8]) -> Vec<u8> {
    let mut m = top_headers(subject).into_bytes();
    m.extend_from_slice(multipart_signed_ct(false).as_bytes());
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(&multipart_signed_body(SIGNED_PART, sig, false));
    m
}

/// A multipart/mixed message (boundary `MIX`) of text plus the given attachments
/// (name, content type, bytes), each base64.
pub fn with_attachments(subject: &str, files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut m = top_headers(subject).into_bytes();
    m.extend_from_slice(
        b"Content-Type: multipart/mixed; boundary=\"MIX\"\r\n\r\n--MIX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find the signed contract attached.\r\n",
    );
    for (name, ctype, data) in files {
        m.extend_from_slice(
            format!(
                "--MIX\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}",
                b64(data)
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"--MIX--\r\n");
    m
}

/// A multipart/mixed message with `contract.pdf` ([`contract_pdf`]) and, beside it, `sig` as
/// its detached signature `contract.pdf.p7s`.
pub fn contract_with_signature(subject: &str, sig: &[u8]) -> Vec<u8> {
    with_attachments(
        subject,
        &[
            ("contract.pdf", "application/pdf", &contract_pdf()),
            ("contract.pdf.p7s", "application/pkcs7-signature", sig),
        ],
    )
}

/// [`contract_with_signature`] with `contract.pdf` signed by `signer`.
pub fn signed_contract(signer: &str, subject: &str) -> Vec<u8> {
    contract_with_signature(subject, &pki().sign(&[signer], &contract_pdf(), &[]))
}

/// A small stand-in for a PDF contract.
pub fn contract_pdf() -> Vec<u8> {
    let mut v = b"%PDF-1.4\n% test contract\n".to_vec();
    for i in 0..200u32 {
        v.extend_from_slice(format!("{i} 0 obj << /Type /Page >> endobj\n").as_bytes());
    }
    v.extend_from_slice(&[0xE2, 0xE3, 0xCF, 0xD3, 0x00, 0xFF]);
    v
}
