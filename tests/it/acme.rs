//! Certificates by ACME (issue 14 point 3): a real RFC 8555 exchange with Debian's `pebble` (the
//! ACME test CA, installed by scripts/test.sh) on loopback, validating HTTP-01 against Tanba's
//! `http.listen` and resolving every name through the loopback DNS server of support::dns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::x509::X509;

use crate::support::dns::Dns;
use crate::support::pki::{openssl, self_signed_p256, sign_with_ca};
use crate::support::tls::Stream;
use crate::support::{base_toml, closed_port, free_port, wait_for, TestServer};

/// The names Tanba derives for `server.hostname` and `server.domains` of the base config.
const NAMES: [&str; 3] = [
    "mail.example.test",
    "autoconfig.example.test",
    "mta-sts.example.test",
];

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 that it signed (`leaf.pem`, `leaf.key`),
/// for pebble's own HTTPS listeners (the Debian package ships none).
fn pebble_pki(dir: &Path) {
    self_signed_p256(
        dir,
        "ca",
        "/CN=pebble listener test CA",
        2,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    sign_with_ca(
        dir,
        "leaf",
        2,
        "basicConstraints = critical,CA:FALSE\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\n",
    );
}

/// A running pebble (killed on drop) with its ACME and management addresses.
struct Pebble {
    child: Child,
    acme: SocketAddr,
    management: SocketAddr,
    /// The CA of its listeners' certificate.
    ca: PathBuf,
    log: PathBuf,
}

impl Pebble {
    /// Validates HTTP-01 on `http_port` of whatever `dns` says a name is (127.0.0.1).
    fn start(dir: &Path, http_port: u16, dns: &Dns) -> Pebble {
        let which = Command::new("sh")
            .args(["-c", "command -v pebble"])
            .output()
            .unwrap();
        assert!(
            which.status.success(),
            "the `pebble` binary is missing: install the Debian package pebble (scripts/test.sh does)"
        );
        pebble_pki(dir);
        let acme: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("leaf.pem"),
                "privateKey": dir.join("leaf.key"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", dns.port))
            // No random sleeps before validation, and a real validation of every challenge.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start pebble");
        let p = Pebble {
            child,
            acme,
            management,
            ca: dir.join("ca.pem"),
            log,
        };
        let start = Instant::now();
        while TcpStream::connect(p.acme).is_err() || TcpStream::connect(p.management).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "pebble did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the management interface (HTTPS, trusting [`Pebble::ca`]): its body.
    fn management_get(&self, path: &str) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca).unwrap();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(self.management).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut raw = Vec::new();
        // Go closes without close_notify after HTTP/1.0; what arrived is complete.
        let _ = tls.read_to_end(&mut raw);
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response from pebble management {path}"));
        assert!(
            raw.starts_with(b"HTTP/1.0 200") || raw.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        raw[end + 4..].to_vec()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a test client reaches TLS on a listener.
#[derive(Clone, Copy, Debug)]
enum Via {
    Implicit,
    ImapStarttls,
    SmtpStarttls,
}

/// Reads one line (up to LF) from the plain stream.
fn read_line(s: &mut Stream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Reads SMTP reply lines until the last one (`NNN ` rather than `NNN-`).
fn read_reply(s: &mut Stream) -> String {
    loop {
        let l = read_line(s);
        assert!(l.len() >= 4, "short SMTP reply {l:?}");
        if l.as_bytes()[3] == b' ' {
            return l;
        }
    }
}

/// The leaf certificate a fresh client gets on `addr`, verified for `mail.example.test` against
/// the roots in `trust` (so a handshake with any other certificate fails here).
fn served_leaf(addr: SocketAddr, how: Via, trust: &Path) -> X509 {
    let mut s = Stream::connect(addr);
    match how {
        Via::Implicit => {}
        Via::ImapStarttls => {
            assert!(read_line(&mut s).starts_with("* OK"));
            s.write_all(b"a STARTTLS\r\n").unwrap();
            let l = read_line(&mut s);
            assert!(l.starts_with("a OK"), "{l}");
        }
        Via::SmtpStarttls => {
            assert!(read_reply(&mut s).starts_with("220"));
            s.write_all(b"EHLO client.example\r\n").unwrap();
            assert!(read_reply(&mut s).starts_with("250"));
            s.write_all(b"STARTTLS\r\n").unwrap();
            assert!(read_reply(&mut s).starts_with("220"));
        }
    }
    s.start_tls(trust);
    let Stream::Tls(t) = &s else { unreachable!() };
    X509::from_der(t.conn.peer_certificates().unwrap()[0].as_ref()).unwrap()
}

fn serial(c: &X509) -> String {
    c.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn first_cert(pem: &Path) -> X509 {
    X509::from_pem(&std::fs::read(pem).unwrap()).unwrap()
}

/// Tanba, started with `acme.directory` pointing at pebble and no certificate yet, gets one by
/// HTTP-01 and stores it (0700/0600); every TLS listener then presents it, issued by pebble's
/// intermediate, without a restart. A reload asking for an early renewal (`acme.renew_before`
/// longer than the lifetime) brings a certificate with a new serial to new connections, from
/// the same stored ACME account.
#[test]
fn pebble_issues_and_renews_a_certificate_served_without_restart() {
    let work = tempfile::tempdir().unwrap();
    let records: Vec<(&str, &str, &str)> = NAMES.iter().map(|n| (*n, "A", "127.0.0.1")).collect();
    let dns = Dns::records(&records);
    // Held until Tanba binds it, so that no parallel test's listener takes it meanwhile.
    let http = closed_port();
    let http_port = http.port;
    let pebble = Pebble::start(work.path(), http_port, &dns);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let acme_section = format!(
        "[acme]\ndirectory = \"https://{}/dir\"\ncontact = [\"mailto:postmaster@example.test\"]\n\
         ca_file = \"{}\"\n",
        pebble.acme,
        pebble.ca.display()
    );
    let base = base_toml(dir.path());
    let http_line = "[http]\nlisten = [\"127.0.0.1:0\"]";
    assert!(base.contains(http_line));
    let toml = format!(
        "{}\n{acme_section}",
        base.replace(
            http_line,
            &format!("[http]\nlisten = [\"127.0.0.1:{http_port}\"]")
        )
    );
    http.release();
    let srv = TestServer::start_toml(dir, &toml);
    let pid = srv.pid();

    let acme_dir = srv.data_dir().join("acme");
    let (cert_pem, key_pem, account) = (
        acme_dir.join("cert.pem"),
        acme_dir.join("key.pem"),
        acme_dir.join("account.json"),
    );
    wait_for("the ACME certificate in data_dir/acme", &srv, || {
        (cert_pem.is_file() && key_pem.is_file()).then_some(())
    });
    assert_eq!(mode(&acme_dir), 0o700);
    for f in [&cert_pem, &key_pem, &account] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let stored = first_cert(&cert_pem);
    let mut sans: Vec<String> = stored
        .subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|n| n.dnsname().map(str::to_string))
        .collect();
    sans.sort();
    let mut want: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(sans, want);

    // Pebble's CA, fetched from its management interface (regenerated at each pebble start).
    let root = work.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.management_get("/roots/0")).unwrap();
    let intermediate = X509::from_pem(&pebble.management_get("/intermediates/0")).unwrap();

    // Every TLS listener of the running server presents the stored certificate: a chain to
    // pebble's root, signed by pebble's intermediate.
    let listeners = [
        (srv.imaps, Via::Implicit),
        (srv.imap, Via::ImapStarttls),
        (srv.submissions, Via::Implicit),
        (srv.submission, Via::SmtpStarttls),
        (srv.mx, Via::SmtpStarttls),
        (srv.https.unwrap(), Via::Implicit),
    ];
    for (addr, how) in listeners {
        let leaf = served_leaf(addr, how, &root);
        assert_eq!(
            leaf.to_der().unwrap(),
            stored.to_der().unwrap(),
            "{addr} {how:?}"
        );
        assert_eq!(
            leaf.issuer_name().to_der().unwrap(),
            intermediate.subject_name().to_der().unwrap()
        );
        assert!(leaf.verify(&intermediate.public_key().unwrap()).unwrap());
    }
    let first_serial = serial(&stored);
    let account_before = std::fs::read(&account).unwrap();

    // Renew early: a reload with acme.renew_before longer than the certificate's lifetime.
    let renew = toml.replace(
        &acme_section,
        &format!("{acme_section}renew_before = \"36500d\"\n"),
    );
    assert_ne!(renew, toml);
    std::fs::write(&srv.config_path, renew).unwrap();
    let st = Command::new("kill")
        .args(["-HUP", &pid.unwrap().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let renewed = wait_for("a certificate with a new serial on IMAPS", &srv, || {
        let leaf = served_leaf(srv.imaps, Via::Implicit, &root);
        (serial(&leaf) != first_serial).then_some(leaf)
    });
    assert!(renewed.verify(&intermediate.public_key().unwrap()).unwrap());
    assert_eq!(
        served_leaf(srv.submission, Via::SmtpStarttls, &root)
            .to_der()
            .unwrap(),
        renewed.to_der().unwrap()
    );
    // What is served is what is stored; same account; same process.
    wait_for("the renewed certificate on disk", &srv, || {
        (first_cert(&cert_pem).to_der().unwrap() == renewed.to_der().unwrap()).then_some(())
    });
    assert_eq!(std::fs::read(&account).unwrap(), account_before);
    assert_eq!(srv.pid(), pid);
    // Pebble really fetched the HTTP-01 answers from Tanba's http.listen.
    let log = pebble.log();
    assert!(
        log.contains(&format!(
            "Attempting to validate w/ HTTP: http://mail.example.test:{http_port}/.well-known/acme-challenge/"
        )),
        "{log}"
    );
    let issued = log.matches("Issued certificate").count();
    assert!(issued >= 2, "{log}");

    // A restart without the early renewal serves the stored certificate and orders nothing.
    std::fs::write(&srv.config_path, &toml).unwrap();
    let valid = "acme: the certificate is valid for another";
    let checks = srv.log().matches(valid).count();
    let mut srv = srv;
    srv.restart();
    wait_for("the check after the restart", &srv, || {
        (srv.log().matches(valid).count() > checks).then_some(())
    });
    let stored = first_cert(&cert_pem);
    assert_eq!(
        served_leaf(srv.imaps, Via::Implicit, &root)
            .to_der()
            .unwrap(),
        stored.to_der().unwrap()
    );
    assert_eq!(pebble.log().matches("Issued certificate").count(), issued);
    assert_eq!(std::fs::read(&account).unwrap(), account_before);
}

/// An ACME CA that cannot be reached does not keep the server from serving: it starts on the
/// self-signed certificate, logs the failure and says when it tries again.
#[test]
fn unreachable_acme_directory_keeps_serving_the_current_certificate() {
    let closed = closed_port();
    let srv = TestServer::start_with(&[(
        "top",
        &format!(
            "[acme]\ndirectory = \"https://127.0.0.1:{}/dir\"\n",
            closed.port
        ),
    )]);
    let log = wait_for("the ACME failure in the log", &srv, || {
        let log = srv.log();
        log.contains("the current certificate keeps serving; next attempt in 1m")
            .then_some(log)
    });
    assert!(log.contains("acme: ordering a certificate for mail.example.test, autoconfig.example.test, mta-sts.example.test"), "{log}");
    let self_signed = first_cert(&srv.cert_pem());
    let leaf = served_leaf(srv.imaps, Via::Implicit, &srv.cert_pem());
    assert_eq!(leaf.to_der().unwrap(), self_signed.to_der().unwrap());
    assert!(!srv.data_dir().join("acme/cert.pem").exists());
}
