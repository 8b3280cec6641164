//! `openssl` command-line steps shared by the test PKIs of `filter_pki.rs` (the filter's PKI)
//! and `revocation.rs` (`TestPki`, with CRLs and OCSP): keys, a self-signed root, requests,
//! issuing with `openssl ca`, CMS signing, scratch directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// An `openssl.cnf` for `req` and `ca`: the sections both test PKIs share (`[ req ]` with
/// UTF-8 names from `-subj`, the CA `tanba_ca` plus the lines `ca_lines`, `[ v3_root ]`,
/// `[ v3_inter ]`), then `sections`.
pub fn config(ca_lines: &str, sections: &str) -> String {
    format!(
        r#"
[ req ]
distinguished_name = dn
string_mask = utf8only
prompt = no
[ dn ]
CN = unused
[ ca ]
default_ca = tanba_ca
[ tanba_ca ]
database = index.txt
new_certs_dir = new
serial = serial
default_md = sha256
policy = pol
unique_subject = no
{ca_lines}
[ pol ]
countryName = optional
[ v3_root ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ v3_inter ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{sections}"#
    )
}

/// Runs `openssl ARGS` in `dir`; panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate `dir/STEM.pem` and its key `dir/STEM.key`: subject `subj`,
/// valid `days`, plus one `-addext` per entry of `exts`.
pub fn self_signed_p256(dir: &Path, stem: &str, subj: &str, days: u32, exts: &[&str]) {
    let (key, pem, days) = (
        format!("{stem}.key"),
        format!("{stem}.pem"),
        days.to_string(),
    );
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        &days,
        "-subj",
        subj,
    ];
    for e in exts {
        args.extend(["-addext", e]);
    }
    openssl(dir, &args);
}

/// A time as `openssl ca -startdate/-enddate` takes it.
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%d%H%M%SZ").to_string()
}

/// `openssl genpkey -algorithm ALG -pkeyopt OPT -out KEY` in `dir`.
pub fn genpkey(dir: &Path, key: &str, alg: &str, opt: &str) {
    openssl(
        dir,
        &["genpkey", "-algorithm", alg, "-pkeyopt", opt, "-out", key],
    );
}

/// A 2048-bit RSA key `dir/NAME.key`.
pub fn rsa_key(dir: &Path, name: &str) {
    genpkey(dir, &format!("{name}.key"), "RSA", "rsa_keygen_bits:2048");
}

/// `openssl req -new` in `dir` with `dir/openssl.cnf` and the key `dir/NAME.key`, then `extra`.
fn req(dir: &Path, name: &str, subject: &str, extra: &[&str]) {
    let key = format!("{name}.key");
    let mut args = vec![
        "req",
        "-new",
        "-utf8",
        "-config",
        "openssl.cnf",
        "-key",
        &key,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A self-signed CA certificate `dir/NAME.pem` for the key `dir/NAME.key`, ten years, with the
/// `v3_root` section of `dir/openssl.cnf`; `serial` (`-set_serial`) if given.
pub fn self_signed(dir: &Path, name: &str, subject: &str, serial: Option<&str>) {
    let pem = format!("{name}.pem");
    let mut args = vec!["-x509"];
    if let Some(s) = serial {
        args.extend(["-set_serial", s]);
    }
    args.extend([
        "-days",
        "3650",
        "-sha256",
        "-extensions",
        "v3_root",
        "-out",
        &pem,
    ]);
    req(dir, name, subject, &args);
}

/// A certificate request `dir/NAME.csr` for the key `dir/NAME.key` with `dir/openssl.cnf`;
/// `extra` options are appended (e.g. `-section req_bmp`).
pub fn csr(dir: &Path, name: &str, subject: &str, extra: &[&str]) {
    let csr = format!("{name}.csr");
    let mut args = vec!["-out", csr.as_str()];
    args.extend_from_slice(extra);
    req(dir, name, subject, &args);
}

/// `openssl ca -batch` in `cadir` (its `openssl.cnf`, database and serial file): issues
/// `LEAF.pem` from `LEAF.csr` with the CA `CA.pem`/`CA.key`, valid `from`..`to`, with the
/// extension section `ext`. `ca` and `leaf` are paths without extension (relative to `cadir`
/// or absolute).
pub fn ca_issue(cadir: &Path, ca: &Path, leaf: &Path, (from, to): (&str, &str), ext: &str) {
    let with = |p: &Path, ext: &str| format!("{}.{ext}", p.display());
    openssl(
        cadir,
        &[
            "ca",
            "-batch",
            "-config",
            "openssl.cnf",
            "-notext",
            "-utf8",
            "-preserveDN",
            "-cert",
            &with(ca, "pem"),
            "-keyfile",
            &with(ca, "key"),
            "-in",
            &with(leaf, "csr"),
            "-out",
            &with(leaf, "pem"),
            "-startdate",
            from,
            "-enddate",
            to,
            "-extensions",
            ext,
        ],
    );
}

/// `openssl cms -sign -binary` of `content` in the directory `work`, DER out; `args` name the
/// signers and any other options (`-signer`, `-inkey`, `-certfile`, `-nodetach`, ...).
pub fn cms_sign(work: &Path, content: &[u8], args: &[&str]) -> Vec<u8> {
    std::fs::write(work.join("content.bin"), content).unwrap();
    let mut all = vec![
        "cms",
        "-sign",
        "-binary",
        "-in",
        "content.bin",
        "-outform",
        "DER",
        "-out",
        "sig.der",
    ];
    all.extend_from_slice(args);
    openssl(work, &all);
    std::fs::read(work.join("sig.der")).unwrap()
}

/// A fresh directory `work-N` under `dir`.
pub fn scratch(dir: &Path) -> PathBuf {
    let d = dir.join(format!("work-{}", SCRATCH.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Issues `dir/STEM.pem` from the request `dir/STEM.csr` with the CA `dir/ca.pem` + `dir/ca.key`
/// (`openssl x509 -req`), valid `days`, with the extension lines `ext` (kept in `dir/STEM.ext`).
pub fn sign_with_ca(dir: &Path, stem: &str, days: u32, ext: &str) {
    let (csr, ext_file, pem, days) = (
        format!("{stem}.csr"),
        format!("{stem}.ext"),
        format!("{stem}.pem"),
        days.to_string(),
    );
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            &days,
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ],
    );
}
