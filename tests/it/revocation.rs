//! Revocation (issue 7): CRLs and OCSP answers, from files, embedded in the CMS, and fetched
//! over HTTP from servers on loopback; the disk cache; what happens when a responder is down.
//!
//! Two kinds of material:
//! * the real NCA RK test CRLs and OCSP responses (`tests/data/nca/{crl,ocsp}`, GOST and RSA
//!   signed) at fixed `--at` times inside their validity;
//! * a test PKI made with `openssl` ([`TestPki`]) whose certificates name a loopback HTTP server
//!   as their CRL distribution point and OCSP responder ([`HttpServer`], a Python handler that
//!   serves files and answers OCSP with `openssl ocsp` as the responder, nonce included).
//!
//! Also the shared helpers of `tsp.rs` and `certs.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

use serde_json::Value;

use crate::filter_pki::{message_with_signature, SIGNED_PART};
use crate::support::mail::{header, header_fields};
use crate::support::pki::{
    self, ca_issue, cms_sign, config, csr, openssl, rsa_key, self_signed, stamp,
};
use crate::support::{base_toml, closed_port, run, spawn_python_server, TestServer, BIN};

pub fn nca(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/nca")
        .join(rel)
}

/// A temp dir holding the NCA RK test roots and intermediates.
pub fn nca_trust() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(nca("ca")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    dir
}

/// A config file in a temp dir: data dir inside it, `trust_dir` as given, and extra
/// `[signatures]` lines.
pub struct Cli {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Cli {
    pub fn new(trust: &Path, signatures: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tanba.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = \"{}/data\"\n[signatures]\ntrust_dir = \"{}\"\n{signatures}\n",
                dir.path().display(),
                trust.display()
            ),
        )
        .unwrap();
        Cli { dir, config }
    }

    /// Runs `tanba --config CFG ARGS`: (exit code, stdout, stderr).
    pub fn tanba(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        let out = run(cmd, None);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `tanba verify --json FILE ARGS`: (exit code, report).
    pub fn verify_json(&self, file: &Path, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["verify", "--json", file.to_str().unwrap()];
        all.extend_from_slice(args);
        let (code, out, err) = self.tanba(&all);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\nstderr:\n{err}"));
        (code, v)
    }
}

const SERVER_PY: &str = r#"
import http.server, os, subprocess, sys, tempfile, threading
root, logpath = os.path.abspath(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def log(line):
    with lock:
        with open(logpath, 'a') as f:
            f.write(line + '\n')
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a):
        pass
    def reply(self, code, data=b'', ctype='application/octet-stream'):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        log('GET ' + self.path)
        p = os.path.normpath(os.path.join(root, self.path.lstrip('/')))
        if not p.startswith(root) or not os.path.isfile(p):
            return self.reply(404)
        with open(p, 'rb') as f:
            self.reply(200, f.read())
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
        log('POST ' + self.path + ' ' + self.headers.get('Content-Type', ''))
        fixed = os.path.join(root, 'ocsp-fixed')
        if os.path.isdir(fixed):
            for name in sorted(os.listdir(fixed)):
                if bytes.fromhex(name.split('.')[0]) in body:
                    with open(os.path.join(fixed, name), 'rb') as f:
                        return self.reply(200, f.read(), 'application/ocsp-response')
            return self.reply(404)
        ca = os.path.join(root, 'ocsp-ca')
        with tempfile.TemporaryDirectory() as t:
            req, resp = os.path.join(t, 'req.der'), os.path.join(t, 'resp.der')
            with open(req, 'wb') as f:
                f.write(body)
            r = subprocess.run(['openssl', 'ocsp', '-index', os.path.join(ca, 'index.txt'),
                                '-CA', os.path.join(ca, 'ca.pem'), '-rsigner', os.path.join(ca, 'ca.pem'),
                                '-rkey', os.path.join(ca, 'ca.key'), '-reqin', req, '-respout', resp],
                               capture_output=True)
            if r.returncode != 0 or not os.path.exists(resp):
                log('ERR ' + r.stderr.decode(errors='replace'))
                return self.reply(500)
            with open(resp, 'rb') as f:
                self.reply(200, f.read(), 'application/ocsp-response')
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print(srv.server_address[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
srv.serve_forever()
"#;

/// A real HTTP server on loopback (Python's `http.server`) serving the files under `root`:
/// GET returns files; POST answers OCSP, from `root/ocsp-fixed/<serial hex>.der` (the response
/// whose serial number appears in the request) or, without that directory, by running
/// `openssl ocsp` as the responder for the CA in `root/ocsp-ca/` (`index.txt`, `ca.pem`,
/// `ca.key`). Every request is logged. Stopped on drop (and when the test process exits: it
/// quits when its stdin closes).
pub struct HttpServer {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
}

impl HttpServer {
    pub fn start(root: &Path) -> HttpServer {
        std::fs::create_dir_all(root).unwrap();
        let log = root.with_extension("requests.log");
        let _ = std::fs::remove_file(&log);
        let (child, port) = spawn_python_server(SERVER_PY, [root, log.as_path()]);
        HttpServer {
            child,
            port,
            root: root.to_path_buf(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests so far ("GET /path", "POST /path content-type").
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A test PKI made with `openssl`, with its own HTTP server: `root` → `inter` (which publishes
/// `inter.crl` and answers OCSP through the server) → leaves `good`, `revoked` (revoked when
/// the PKI is made), `expired` (valid from ten to five days ago) and `tsa` (timeStamping, valid
/// from ten days ago). `good` and `revoked` are valid from a day ago for two days. The leaves'
/// CRL distribution point and OCSP responder are the server.
pub struct TestPki {
    pub dir: PathBuf,
    pub server: HttpServer,
    pub trust: PathBuf,
    /// When `revoked` was revoked (about when the PKI was made).
    pub revoked_at: chrono::DateTime<chrono::Utc>,
}

/// The CA config: the shared sections plus the CRL settings and the leaves' extensions
/// (`PORT`: the HTTP server's).
fn pki_config() -> String {
    config(
        "dir = .\ncrlnumber = crlnumber\ndefault_crl_days = 3",
        r#"[ v3_leaf ]
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = emailProtection,1.2.398.3.3.4.1.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
crlDistributionPoints = URI:http://127.0.0.1:PORT/inter.crl
authorityInfoAccess = OCSP;URI:http://127.0.0.1:PORT/ocsp
[ delta ]
deltaCRL = critical,DER:02:01:01
[ v3_tsa ]
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"#,
    )
}

const LEAF_SUBJECT: &str =
    "/CN=ТЕСТОВ ТЕСТ/SN=ТЕСТОВ/serialNumber=IIN123456789011/C=KZ/GN=ТЕСТОВИЧ";

impl TestPki {
    /// A server trusting this PKI's root and intermediate, with `signatures` (lines of the
    /// `[signatures]` section) in the base config, and alice@example.test.
    pub fn start_server(&self, signatures: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust");
        std::fs::create_dir_all(&trust).unwrap();
        for f in ["root.pem", "inter.pem"] {
            std::fs::copy(self.trust.join(f), trust.join(f)).unwrap();
        }
        let toml = base_toml(dir.path()).replace("#SIGNATURES", signatures);
        let srv = TestServer::start_toml(dir, &toml);
        srv.add_user("alice@example.test", "secret-pass-1");
        srv
    }

    pub fn new() -> TestPki {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "revocation-pki-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("www");
        let ca = root.join("ocsp-ca");
        std::fs::create_dir_all(ca.join("new")).unwrap();
        let server = HttpServer::start(&root);
        let cnf = pki_config().replace("PORT", &server.port.to_string());
        std::fs::write(ca.join("openssl.cnf"), &cnf).unwrap();
        std::fs::write(ca.join("index.txt"), "").unwrap();
        std::fs::write(ca.join("crlnumber"), "01\n").unwrap();
        let now = chrono::Utc::now();
        let from = stamp(now - chrono::Duration::days(1));
        let to = stamp(now + chrono::Duration::days(1));

        rsa_key(&ca, "root");
        self_signed(&ca, "root", "/C=KZ/CN=ТЕСТ ТҮБІР", None);
        let issue = |ca_name: &str,
                     name: &str,
                     subject: &str,
                     serial: &str,
                     ext: &str,
                     from: &str,
                     to: &str| {
            rsa_key(&ca, name);
            csr(&ca, name, subject, &[]);
            std::fs::write(ca.join("serial"), format!("{serial}\n")).unwrap();
            ca_issue(&ca, Path::new(ca_name), Path::new(name), (from, to), ext);
        };
        let long_ago = stamp(now - chrono::Duration::days(10));
        let ended = stamp(now - chrono::Duration::days(5));
        issue(
            "root",
            "inter",
            "/C=KZ/CN=ТЕСТ ҰКО",
            "1000",
            "v3_inter",
            &long_ago,
            &to,
        );
        // The CA database the OCSP responder reads is the intermediate's alone.
        std::fs::write(ca.join("index.txt"), "").unwrap();
        issue("inter", "good", LEAF_SUBJECT, "2001", "v3_leaf", &from, &to);
        issue(
            "inter",
            "revoked",
            LEAF_SUBJECT,
            "2002",
            "v3_leaf",
            &from,
            &to,
        );
        let tsa_subject = "/C=KZ/CN=TIME-STAMPING AUTHORITY";
        issue(
            "inter",
            "tsa",
            tsa_subject,
            "2003",
            "v3_tsa",
            &long_ago,
            &to,
        );
        issue(
            "inter",
            "expired",
            LEAF_SUBJECT,
            "2004",
            "v3_leaf",
            &long_ago,
            &ended,
        );
        let revoked_at = chrono::Utc::now();
        inter_ca(
            &ca,
            &["-revoke", "revoked.pem", "-crl_reason", "keyCompromise"],
        );
        inter_ca(&ca, &["-gencrl", "-out", "inter.crl.pem"]);
        // Distribution points serve DER.
        openssl(
            &ca,
            &[
                "crl",
                "-in",
                "inter.crl.pem",
                "-outform",
                "DER",
                "-out",
                "../inter.crl",
            ],
        );
        std::fs::copy(ca.join("inter.pem"), ca.join("ca.pem")).unwrap();
        std::fs::copy(ca.join("inter.key"), ca.join("ca.key")).unwrap();
        let trust = base.join("trust");
        std::fs::create_dir_all(&trust).unwrap();
        std::fs::copy(ca.join("root.pem"), trust.join("root.pem")).unwrap();
        std::fs::copy(ca.join("inter.pem"), trust.join("inter.pem")).unwrap();
        TestPki {
            dir: ca,
            server,
            trust,
            revoked_at,
        }
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A scratch directory.
    pub fn scratch(&self) -> PathBuf {
        pki::scratch(&self.dir)
    }

    /// `openssl cms -sign` of `content` by `signer` (DER; detached unless `-nodetach` is in
    /// `opts`), with the intermediate included.
    pub fn sign(&self, signer: &str, content: &[u8], opts: &[&str]) -> Vec<u8> {
        let signer_pem = self.cert(signer).display().to_string();
        let key = self.dir.join(format!("{signer}.key")).display().to_string();
        let inter = self.cert("inter").display().to_string();
        let mut args = vec!["-signer", &signer_pem, "-inkey", &key, "-certfile", &inter];
        args.extend_from_slice(opts);
        cms_sign(&self.scratch(), content, &args)
    }

    /// A top-level multipart/signed message signed by `signer`.
    pub fn signed_message(&self, signer: &str, subject: &str) -> Vec<u8> {
        message_with_signature(subject, &self.sign(signer, SIGNED_PART, &[]))
    }
}

/// `openssl ca` as the intermediate of a [`TestPki`] (in its CA directory `ca`): revoking,
/// making CRLs.
pub fn inter_ca(ca: &Path, args: &[&str]) {
    let mut all = vec![
        "ca",
        "-config",
        "openssl.cnf",
        "-cert",
        "inter.pem",
        "-keyfile",
        "inter.key",
    ];
    all.extend_from_slice(args);
    openssl(ca, &all);
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static SHARED: OnceLock<TestPki> = OnceLock::new();

/// One test PKI shared by the tests that do not count requests.
pub fn shared_pki() -> &'static TestPki {
    SHARED.get_or_init(TestPki::new)
}

/// Writes `data` to a fresh file called `name`.
pub fn write_temp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Signs with an NCA RK test key from a PKCS#12 file (RSA only: OpenSSL does not know the
/// Kazakh GOST OIDs): an attached CMS of `content`.
fn sign_with_p12(dir: &Path, p12: &str, password: &str, content: &[u8]) -> Vec<u8> {
    let pem = dir.join("key.pem");
    openssl(
        dir,
        &[
            "pkcs12",
            "-legacy",
            "-in",
            nca(&format!("p12/{p12}")).to_str().unwrap(),
            "-passin",
            &format!("pass:{password}"),
            "-nodes",
            "-out",
            pem.to_str().unwrap(),
        ],
    );
    cms_sign(
        dir,
        content,
        &["-nodetach", "-signer", pem.to_str().unwrap()],
    )
}

/// Inside the GOST-2015 test signer's validity and just before NCA's OCSP answer about it
/// (produced 2022-09-02T16:58:34Z), which then speaks for this time.
const AT_GOST_OCSP: &str = "2022-09-01T00:00:00Z";

fn signer(v: &Value, n: usize) -> &Value {
    &v["signatures"][0]["signers"][n]
}

/// The GOST-2015 (512-bit) signer of the first signature (panics if there is none).
fn gost_signer(v: &Value) -> &Value {
    v["signatures"][0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["algorithm"] == "gost34310-2015-512")
        .unwrap()
}

/// The NCA RK test CRLs at fixed times: the revoked RSA test certificate is reported revoked,
/// the good RSA and GOST-2015 signers pass (the GOST CRL's signature is GOST 34.310-2015), and
/// a CRL older than the validation time leaves the status unknown.
#[test]
fn nca_test_crls_at_fixed_times() {
    let trust = nca_trust();
    let cli = Cli::new(trust.path(), "");
    let rsa_crl = nca("crl/ncanode_nca_rsa_test.crl");
    let gost_crl = nca("crl/ncanode_nca_gost2022_test.crl");
    let crls = [
        "--crl",
        rsa_crl.to_str().unwrap(),
        "--crl",
        gost_crl.to_str().unwrap(),
    ];

    // Signed with the revoked RSA test key (revoked 2022-01-18T04:40:24Z).
    let work = tempfile::tempdir().unwrap();
    let sig = sign_with_p12(
        work.path(),
        "ncanode_individual_sign_rsa_revoked_2022_Qwerty12.p12",
        "Qwerty12",
        b"test123",
    );
    let file = write_temp(work.path(), "revoked.p7s", &sig);
    let mut args = vec!["--at", "2022-06-01T00:00:00Z"];
    args.extend_from_slice(&crls);
    let (code, v) = cli.verify_json(&file, &args);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "fail");
    assert_eq!(signer(&v, 0)["result"], "fail");
    assert_eq!(signer(&v, 0)["reason"], "revoked");
    assert_eq!(
        signer(&v, 0)["cert_serial"],
        "46757a2158a604189c40fb1fcdab1143f83f32db"
    );
    // The human report says when.
    let mut human = vec!["verify", file.to_str().unwrap()];
    human.extend_from_slice(&args);
    let (code, out, _) = cli.tanba(&human);
    assert_eq!(code, 1);
    assert!(out.contains("revoked 2022-01-18T04:40:24Z"), "{out}");
    // Without the CRLs the same signature passes: the CRL is what made the difference.
    let (code, v) = cli.verify_json(&file, &["--at", "2022-06-01T00:00:00Z"]);
    assert_eq!(code, 0, "{v:#}");

    // The RSA (4279390A…, not revoked) sample at a time both its validity and the RSA CRL
    // cover.
    let rsa = nca("cms/ncanode_attached_1signer_rsa.p7s");
    let mut args = vec!["--at", "2021-06-01T00:00:00Z"];
    args.extend_from_slice(&crls);
    let (code, v) = cli.verify_json(&rsa, &args);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "pass");

    // The GOST-2015 signer of the two-signer sample, checked against the GOST CRL.
    let two = nca("cms/ncanode_attached_2signers_rsa+gost2015.p7s");
    let mut args = vec!["--at", "2022-09-28T00:00:00Z"];
    args.extend_from_slice(&crls);
    let (_, v) = cli.verify_json(&two, &args);
    let gost = gost_signer(&v);
    assert_eq!(gost["result"], "pass", "{v:#}");

    // A revocation stays proven by a CRL that is no longer current (permanent reasons).
    let (code, v) = cli.verify_json(
        &file,
        &[
            "--crl",
            rsa_crl.to_str().unwrap(),
            "--at",
            "2022-10-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(signer(&v, 0)["reason"], "revoked");
    // But "not listed" is only worth something while the CRL is current: after the GOST CRL's
    // nextUpdate (2023-01-23) the GOST signer's status is unknown.
    let (_, v) = cli.verify_json(
        &two,
        &[
            "--crl",
            gost_crl.to_str().unwrap(),
            "--at",
            "2023-03-01T00:00:00Z",
        ],
    );
    let gost = gost_signer(&v);
    assert_eq!(gost["result"], "temperror", "{v:#}");
    assert_eq!(gost["reason"], "revocation-unknown");
}

/// A CRL whose signature was broken is not used: the status is unknown (temperror), and
/// `tanba certs list` shows it as bad.
#[test]
fn crl_with_a_broken_signature_is_rejected() {
    let trust = nca_trust();
    let crl_dir = tempfile::tempdir().unwrap();
    let mut der = std::fs::read(nca("crl/ncanode_nca_rsa_test.crl")).unwrap();
    let n = der.len();
    der[n - 20] ^= 0x55;
    let broken = write_temp(crl_dir.path(), "broken.crl", &der);
    let cli = Cli::new(
        trust.path(),
        &format!("crl_dir = \"{}\"", crl_dir.path().display()),
    );
    let rsa = nca("cms/ncanode_attached_1signer_rsa.p7s");
    let (code, v) = cli.verify_json(
        &rsa,
        &[
            "--crl",
            broken.to_str().unwrap(),
            "--at",
            "2021-06-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["verdict"], "temperror");
    assert_eq!(signer(&v, 0)["reason"], "revocation-unknown");
    let (_, out, _) = cli.tanba(&[
        "verify",
        rsa.to_str().unwrap(),
        "--crl",
        broken.to_str().unwrap(),
        "--at",
        "2021-06-01T00:00:00Z",
    ]);
    assert!(out.contains("does not verify"), "{out}");
    let (code, out, _) = cli.tanba(&["certs", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("Signature:   BAD"), "{out}");
    // Not a CRL at all: a clear error naming the file, exit 2.
    let junk = write_temp(crl_dir.path(), "junk.crl", b"not a crl");
    let (code, _, err) = cli.tanba(&[
        "verify",
        rsa.to_str().unwrap(),
        "--crl",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("junk.crl"), "{err}");
}

/// The real NCA RK OCSP responses, served over HTTP by a responder on loopback: the good RSA
/// signer passes, the GOST-2015 signer on hold is revoked (the response is GOST-signed by a
/// delegated responder), and a signer the responder has no answer for is unknown.
#[test]
fn nca_test_ocsp_responses_over_http() {
    let www = tempfile::tempdir().unwrap();
    let fixed = www.path().join("www/ocsp-fixed");
    std::fs::create_dir_all(&fixed).unwrap();
    for (serial, file) in [
        (
            "4279390A141F5353A62947B61ED65E81741467D1",
            "ncanode_ocsp_response_individual_sign_2004.bin",
        ),
        (
            "0FF06211DC82BEB00253FFA000F1DE84ABEF454F",
            "ncanode_ocsp_response_individual_2015.bin",
        ),
    ] {
        std::fs::copy(
            nca(&format!("ocsp/{file}")),
            fixed.join(format!("{serial}.der")),
        )
        .unwrap();
    }
    let server = HttpServer::start(&www.path().join("www"));
    let trust = nca_trust();
    let cli = Cli::new(
        trust.path(),
        &format!(
            "revocation = \"ocsp\"\nocsp_url = \"{}\"",
            server.url("/ocsp/")
        ),
    );

    let rsa = nca("cms/ncanode_attached_1signer_rsa.p7s");
    let (code, v) = cli.verify_json(&rsa, &["--at", "2021-06-01T00:00:00Z"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "pass");
    let posts = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /ocsp/ application/ocsp-request"))
        .count();
    assert_eq!(posts, 1, "{:?}", server.requests());

    // The GOST-2015 signer (on hold since 1970 in the answer of 2022-09-02; its RSA co-signer
    // has expired by then).
    let two = nca("cms/ncanode_attached_2signers_rsa+gost2015.p7s");
    let (code, v) = cli.verify_json(&two, &["--at", AT_GOST_OCSP]);
    assert_eq!(code, 1, "{v:#}");
    let gost = gost_signer(&v);
    assert_eq!(gost["result"], "fail", "{v:#}");
    assert_eq!(gost["reason"], "revoked");

    // A signer the responder has no answer for: unknown (a fresh data dir, so no cached
    // answer either).
    let cli = Cli::new(
        trust.path(),
        &format!(
            "revocation = \"ocsp\"\nocsp_url = \"{}\"",
            server.url("/ocsp/")
        ),
    );
    let detached = nca("cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s");
    std::fs::remove_file(fixed.join("0FF06211DC82BEB00253FFA000F1DE84ABEF454F.der")).unwrap();
    let content = write_temp(www.path(), "data.txt", b"test123");
    let (code, v) = cli.verify_json(
        &detached,
        &["--at", AT_GOST_OCSP, "--content", content.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v:#}");
    let gost = gost_signer(&v);
    assert_eq!(gost["result"], "temperror", "{v:#}");
    assert_eq!(gost["reason"], "revocation-unknown");
}

/// An OCSP response embedded in the CMS (RFC 5940 `crls` field) is used, with no responder
/// reachable at all.
#[test]
fn ocsp_response_embedded_in_the_cms_is_used() {
    let two = std::fs::read(nca("cms/ncanode_attached_2signers_rsa+gost2015.p7s")).unwrap();
    let resp = std::fs::read(nca("ocsp/ncanode_ocsp_response_individual_2015.bin")).unwrap();
    // [1] OtherRevocationInfoFormat { id-ri-ocsp-response, OCSPResponse }
    let mut other = tanba::filter::asn1::oid_der("1.3.6.1.5.5.7.16.2").unwrap();
    other.extend_from_slice(&resp);
    let choice = tanba::filter::asn1::encode(0xA1, &other);
    let with = crate::tsp::add_revocation_info(&two, &choice);
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(dir.path(), "embedded.p7s", &with);
    let trust = nca_trust();
    let closed = closed_port();
    let cli = Cli::new(
        trust.path(),
        &format!(
            "revocation = \"ocsp\"\nocsp_url = \"http://127.0.0.1:{}/\"",
            closed.port
        ),
    );
    let (_, v) = cli.verify_json(&file, &["--at", AT_GOST_OCSP]);
    let gost = gost_signer(&v);
    assert_eq!(gost["reason"], "revoked", "{v:#}");
    // Without the embedded response, the unreachable responder leaves it unknown.
    let plain = write_temp(dir.path(), "plain.p7s", &two);
    let (_, v) = cli.verify_json(&plain, &["--at", AT_GOST_OCSP]);
    let gost = gost_signer(&v);
    assert_eq!(gost["reason"], "revocation-unknown", "{v:#}");
}

/// A server with `revocation = "crl"` downloads the intermediate's CRL from the distribution
/// point the certificates name, once: later messages use the copy in memory, and after a
/// restart the copy on disk (its nextUpdate is days away). The revoked signer is stamped
/// `fail; reason=revoked`, the good one `pass`.
#[test]
fn crl_from_the_distribution_point_is_cached_on_disk() {
    let pki = TestPki::new();
    let mut srv = pki.start_server("revocation = \"crl\"");
    crate::smtp::mx_to_alice(&srv, &pki.signed_message("good", "good"));
    crate::smtp::mx_to_alice(&srv, &pki.signed_message("revoked", "revoked"));
    crate::smtp::mx_to_alice(&srv, &pki.signed_message("good", "good again"));
    let gets = |pki: &TestPki| {
        pki.server
            .requests()
            .iter()
            .filter(|r| *r == "GET /inter.crl")
            .count()
    };
    assert_eq!(gets(&pki), 1, "{:?}", pki.server.requests());
    srv.restart();
    crate::smtp::mx_to_alice(&srv, &pki.signed_message("good", "after restart"));
    assert_eq!(gets(&pki), 1, "{:?}", pki.server.requests());

    let stored = crate::smtp::stored(&srv, "alice@example.test");
    assert_eq!(stored.len(), 4);
    let results: Vec<(String, String)> = stored
        .iter()
        .map(|m| {
            let f = header_fields(m);
            (
                header(&f, "X-EDS-Status").unwrap_or_default().to_string(),
                header(&f, "X-EDS-Signer-1-Result")
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("pass; signers=1; valid=1".into(), "pass".into()),
            (
                "fail; signers=1; valid=0".into(),
                "fail; reason=revoked".into()
            ),
            ("pass; signers=1; valid=1".into(), "pass".into()),
            ("pass; signers=1; valid=1".into(), "pass".into()),
        ]
    );
    let cached = std::fs::read_dir(srv.data_dir().join("revocation/crl"))
        .unwrap()
        .count();
    assert_eq!(cached, 1);
}

/// OCSP responder down: the message is still delivered, stamped `temperror` /
/// `revocation-unknown`; with `revocation_soft_fail = true` it passes.
#[test]
fn ocsp_responder_down_is_temperror_and_mail_is_still_delivered() {
    let pki = shared_pki();
    let closed = closed_port();
    let down = format!("http://127.0.0.1:{}/ocsp", closed.port);
    for (soft, status, result) in [
        (
            false,
            "temperror; signers=1; valid=0",
            "temperror; reason=revocation-unknown",
        ),
        (true, "pass; signers=1; valid=1", "pass"),
    ] {
        let srv = pki.start_server(&format!(
            "revocation = \"ocsp\"\nocsp_url = \"{down}\"\nrevocation_soft_fail = {soft}"
        ));
        let m = pki.signed_message("good", "responder down");
        crate::smtp::mx_to_alice(&srv, &m);
        let stored = crate::smtp::stored(&srv, "alice@example.test");
        assert_eq!(stored.len(), 1);
        assert!(stored[0].ends_with(&m));
        let f = header_fields(&stored[0]);
        assert_eq!(header(&f, "X-EDS-Status"), Some(status), "soft={soft}");
        assert_eq!(header(&f, "X-EDS-Signer-1-Result"), Some(result));
        assert!(srv.log().contains("cannot connect"), "{}", srv.log());
    }
}

/// A live OCSP responder (`openssl ocsp`, which echoes our nonce) named by the certificates'
/// authorityInfoAccess: good passes, revoked fails, and no CRL is needed.
#[test]
fn live_ocsp_responder_from_the_certificate() {
    let pki = shared_pki();
    let cli = Cli::new(&pki.trust, "revocation = \"ocsp\"");
    let dir = tempfile::tempdir().unwrap();
    for (signer, code, verdict) in [("good", 0, "pass"), ("revoked", 1, "fail")] {
        let m = write_temp(
            dir.path(),
            &format!("{signer}.eml"),
            &pki.signed_message(signer, signer),
        );
        let (c, v) = cli.verify_json(&m, &[]);
        assert_eq!(c, code, "{v:#}");
        assert_eq!(v["verdict"], verdict);
        if signer == "revoked" {
            assert_eq!(signer_of(&v)["reason"], "revoked");
        }
    }
    assert!(pki
        .server
        .requests()
        .iter()
        .any(|r| r == "POST /ocsp application/ocsp-request"));
    assert!(!pki.server.requests().iter().any(|r| r.starts_with("ERR")));
}

fn signer_of(v: &Value) -> &Value {
    &v["signatures"][0]["signers"][0]
}

/// Revoked after the validation time: still `pass`, with the revocation noted in the report.
#[test]
fn revoked_after_the_validation_time_passes_with_a_note() {
    let pki = shared_pki();
    let cli = Cli::new(&pki.trust, "revocation = \"crl\"");
    let dir = tempfile::tempdir().unwrap();
    let m = write_temp(
        dir.path(),
        "revoked.eml",
        &pki.signed_message("revoked", "later"),
    );
    let before = rfc3339(pki.revoked_at - chrono::Duration::hours(1));
    let (code, out, err) = cli.tanba(&["verify", m.to_str().unwrap(), "--at", &before]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Verdict: PASS"), "{out}");
    assert!(out.contains("Note:"), "{out}");
    assert!(out.contains("after the validation time"), "{out}");
    let after = rfc3339(pki.revoked_at + chrono::Duration::minutes(1));
    let (code, v) = cli.verify_json(&m, &["--at", &after]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(signer_of(&v)["reason"], "revoked");
}

/// Delta CRLs (RFC 5280 §5.2.4): a delta based on the complete CRL adds a hold on `good`; a newer
/// delta lifts it again (`removeFromCRL`).
#[test]
fn delta_crls_apply_on_top_of_the_complete_crl() {
    let pki = TestPki::new();
    let ca = &pki.dir;
    // The complete CRL (number 1) lists only `revoked`.
    let base = ca.join("inter.crl.pem");
    inter_ca(
        ca,
        &["-revoke", "good.pem", "-crl_reason", "certificateHold"],
    );
    inter_ca(
        ca,
        &["-gencrl", "-crlexts", "delta", "-out", "delta-hold.pem"],
    );
    // Lift the hold: the CA database entry becomes removeFromCRL.
    let index = std::fs::read_to_string(ca.join("index.txt")).unwrap();
    std::fs::write(
        ca.join("index.txt"),
        index.replace("certificateHold", "removeFromCRL"),
    )
    .unwrap();
    inter_ca(
        ca,
        &["-gencrl", "-crlexts", "delta", "-out", "delta-lifted.pem"],
    );

    let cli = Cli::new(&pki.trust, "");
    let dir = tempfile::tempdir().unwrap();
    let m = write_temp(dir.path(), "good.eml", &pki.signed_message("good", "delta"));
    let at = rfc3339(chrono::Utc::now() + chrono::Duration::minutes(1));
    let run = |crls: &[&Path]| {
        let mut args = vec!["--at".to_string(), at.clone()];
        for c in crls {
            args.push("--crl".into());
            args.push(c.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, v) = cli.verify_json(&m, &args);
        (
            v["verdict"].as_str().unwrap().to_string(),
            signer_of(&v)["reason"].as_str().map(str::to_string),
        )
    };
    let hold = ca.join("delta-hold.pem");
    let lifted = ca.join("delta-lifted.pem");
    assert_eq!(run(&[&base]), ("pass".into(), None));
    assert_eq!(
        run(&[&base, &hold]),
        ("fail".into(), Some("revoked".into()))
    );
    assert_eq!(run(&[&base, &hold, &lifted]), ("pass".into(), None));
    // A delta alone is not a complete CRL: nothing current speaks for `good`.
    assert_eq!(
        run(&[&lifted]),
        ("temperror".into(), Some("revocation-unknown".into()))
    );
}
