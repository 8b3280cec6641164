//! Verified TLS on the way out: MTA-STS (RFC 8461) over loopback. The loopback DNS serves
//! `b.test`'s MX, `_mta-sts.b.test` (TXT) and `mta-sts.b.test` (A 127.0.0.1); a Python HTTPS
//! server serves the policy with a certificate for `mta-sts.b.test`; aiosmtpd receivers offer
//! STARTTLS with a certificate for `mx.b.test` (matching) or `wrong.b.test` (not). Every
//! certificate comes from a test CA made with `openssl` here, which the sender trusts through
//! `delivery.tls_ca_file`; `delivery.mta_sts_port` points the policy fetch at the HTTPS server.

use std::path::{Path, PathBuf};
use std::process::Child;

use crate::delivery::{
    give_up_and_get_dsn, instance_a, message, queue_text, received, receiver, submit,
    wait_queue_empty,
};
use crate::support::dns::Dns;
use crate::support::pki::{openssl, sign_with_ca};
use crate::support::*;

/// A test CA and the leaf certificates it issues (P-256 keys: quick to make).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Tanba Test Delivery CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `name` (and its key), issued by the CA.
    fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        sign_with_ca(
            d,
            name,
            2,
            &format!(
                "subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        );
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }
}

/// A helper process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTPS server (argv: cert, key, policy text) serving the policy at
/// `/.well-known/mta-sts.txt` as `text/plain`.
const PY_HTTPS: &str = r#"
import sys, ssl, os, threading, http.server
cert, key, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != '/.well-known/mta-sts.txt':
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
srv.serve_forever()
"#;

/// The policy server for `b.test` with `mode`; returns it and its port.
fn policy_server(pki: &Pki, mode: &str) -> (Proc, u16) {
    policy_server_as(pki, mode, "mta-sts.b.test")
}

/// [`policy_server`] with a certificate for `cert_name`.
fn policy_server_as(pki: &Pki, mode: &str, cert_name: &str) -> (Proc, u16) {
    let (cert, key) = pki.leaf(cert_name);
    let policy = format!("version: STSv1\r\nmode: {mode}\r\nmx: mx.b.test\r\nmax_age: 86400\r\n");
    let (child, port) = spawn_python_server(
        PY_HTTPS,
        [
            cert.as_os_str(),
            key.as_os_str(),
            std::ffi::OsStr::new(&policy),
        ],
    );
    (Proc(child), port)
}

fn sts_dns() -> Dns {
    sts_dns_with("")
}

/// [`sts_dns`] plus the zone lines `more`.
fn sts_dns_with(more: &str) -> Dns {
    Dns::start(
        &format!(
            "b.test. 60 IN MX 10 mx.b.test.\n\
             mx.b.test. 60 IN A 127.0.0.1\n\
             _mta-sts.b.test. 60 IN TXT \"v=STSv1; id=20261127T1;\"\n\
             mta-sts.b.test. 60 IN A 127.0.0.1\n{more}"
        ),
        &[],
    )
}

/// An aiosmtpd receiver on `port` offering STARTTLS with a certificate for `name`.
fn tls_receiver(pki: &Pki, port: u16, name: &str) -> crate::delivery::Py {
    let (cert, key) = pki.leaf(name);
    receiver(port, serde_json::json!({"cert": cert, "key": key}))
}

/// Instance A (alice@example.test) trusting the test CA, fetching policies from `https_port`.
fn sender(dns: &Dns, mx_port: u16, https_port: u16, ca: &Path) -> TestServer {
    instance_a(
        dns,
        mx_port,
        &[
            &format!("tls_ca_file = \"{}\"", ca.display()),
            &format!("mta_sts_port = {https_port}"),
            "retry = [\"1s\"]",
        ],
        "",
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `enforce`, and the MX presents a certificate for another name (from a trusted CA): the
/// message is deferred with the reason in `tanba queue list`, nothing reaches the receiver, the
/// failure is counted for TLS-RPT; when the delivery time runs out the sender gets a DSN whose
/// diagnostic names MTA-STS and the reason.
#[test]
fn enforce_with_a_certificate_for_another_name_defers_then_bounces_naming_mta_sts() {
    let pki = Pki::new();
    let dns = sts_dns();
    let (_https, https_port) = policy_server(&pki, "enforce");
    let port = free_port();
    let r = tls_receiver(&pki, port, "wrong.b.test");
    let mut a = sender(&dns, port, https_port, &pki.ca());
    submit(
        &a,
        &["bob@b.test"],
        &message("Under an enforced policy", "sts-1"),
    );

    let text = wait_for("an MTA-STS deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("MTA-STS").then_some(t)
    });
    assert!(
        text.contains("MTA-STS policy of b.test (enforce): mx.b.test[127.0.0.1]: certificate not valid for mx.b.test"),
        "{text}"
    );
    assert!(received(&r).is_empty(), "nothing may reach the receiver");
    let rpt = wait_for("the TLS-RPT counts", &a, || {
        let t = read(&a.data_dir().join("tls-rpt.json"));
        t.contains("certificate-host-mismatch").then_some(t)
    });
    assert!(
        rpt.contains("\"b.test\"") && rpt.contains("\"sts\""),
        "{rpt}"
    );
    assert!(a.log().contains("MTA-STS policy fetched"), "{}", a.log());

    // The delivery time runs out: a DSN to alice with the MTA-STS reason.
    let d = give_up_and_get_dsn(&mut a);
    assert!(d.contains("Final-Recipient: rfc822; bob@b.test"), "{d}");
    assert!(d.contains("Status: 4.4.7"), "{d}");
    assert!(
        d.contains("Diagnostic-Code: X-Tanba; MTA-STS policy of b.test (enforce): mx.b.test[127.0.0.1]: certificate not valid for mx.b.test"),
        "{d}"
    );
    assert!(received(&r).is_empty());
}

/// `enforce`, and the MX presents a certificate for its name from the CA the sender trusts
/// through `delivery.tls_ca_file`: delivered over TLS, the policy fetched once and cached in
/// `data_dir` (mode 0600), the session counted as a success.
#[test]
fn enforce_with_a_matching_certificate_delivers() {
    let pki = Pki::new();
    let dns = sts_dns();
    let (_https, https_port) = policy_server(&pki, "enforce");
    let port = free_port();
    let r = tls_receiver(&pki, port, "mx.b.test");
    let a = sender(&dns, port, https_port, &pki.ca());
    submit(&a, &["bob@b.test"], &message("Verified", "sts-2"));
    let got = wait_for("the message at the receiver", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(got.0["tls"], true, "{:?}", got.0);
    assert!(String::from_utf8_lossy(&got.1).contains("Subject: Verified"));

    let cache = a.data_dir().join("mta-sts.json");
    let c = read(&cache);
    assert!(
        c.contains("\"b.test\"") && c.contains("\"enforce\"") && c.contains("mx.b.test"),
        "{c}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let rpt = wait_for("the TLS-RPT counts", &a, || {
        let t = read(&a.data_dir().join("tls-rpt.json"));
        t.contains("\"success\": 1").then_some(t)
    });
    assert!(rpt.contains("\"failure\": 0"), "{rpt}");
}

/// `testing`: a certificate for another name is logged (and counted) but the message is
/// delivered, as without a policy.
#[test]
fn testing_mode_delivers_and_logs_the_failure() {
    let pki = Pki::new();
    let dns = sts_dns();
    let (_https, https_port) = policy_server(&pki, "testing");
    let port = free_port();
    let r = tls_receiver(&pki, port, "wrong.b.test");
    let a = sender(&dns, port, https_port, &pki.ca());
    submit(&a, &["bob@b.test"], &message("Testing mode", "sts-3"));
    let got = wait_for("the message at the receiver", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(got.0["tls"], true);
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("MTA-STS policy of b.test (testing)"))
        .unwrap_or_else(|| panic!("no MTA-STS line in the log:\n{log}"));
    assert!(
        line.contains("certificate not valid for mx.b.test")
            && line.contains("delivering anyway (testing mode)")
            && line.contains("certificate-host-mismatch"),
        "{line}"
    );
}

/// The policy survives a restart while the policy server is down (RFC 8461 §5.1: a cached,
/// unexpired policy applies): after the restart a receiver with a certificate for another name
/// gets nothing, where without the cached policy the message would go out opportunistically.
#[test]
fn policy_is_cached_across_a_restart_while_the_policy_server_is_down() {
    let pki = Pki::new();
    let dns = sts_dns();
    let (https, https_port) = policy_server(&pki, "enforce");
    let port = free_port();
    let good = tls_receiver(&pki, port, "mx.b.test");
    let mut a = sender(&dns, port, https_port, &pki.ca());
    submit(
        &a,
        &["bob@b.test"],
        &message("Before the restart", "sts-4a"),
    );
    wait_for("the first message", &a, || {
        received(&good).into_iter().next()
    });
    wait_queue_empty(&a);
    assert!(read(&a.data_dir().join("mta-sts.json")).contains("\"b.test\""));

    drop(https);
    drop(good);
    let bad = tls_receiver(&pki, port, "wrong.b.test");
    a.restart();
    submit(&a, &["bob@b.test"], &message("After the restart", "sts-4b"));
    let text = wait_for("an MTA-STS deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("MTA-STS").then_some(t)
    });
    assert!(
        text.contains("MTA-STS policy of b.test (enforce)")
            && text.contains("certificate not valid"),
        "{text}"
    );
    assert!(received(&bad).is_empty());
    // No fetch after the restart: the policy came from the file.
    assert_eq!(
        a.log().matches("MTA-STS policy fetched").count(),
        1,
        "{}",
        a.log()
    );
}

/// `enforce`: an MX host the policy does not name is skipped (even at a better preference), and
/// the one it names must offer STARTTLS: a receiver without it gets nothing, the message waits
/// with the reason, and both failures are counted by RFC 8460 result type.
#[test]
fn enforce_skips_hosts_outside_the_policy_and_requires_starttls() {
    let pki = Pki::new();
    let dns = sts_dns_with(
        "b.test. 60 IN MX 5 other.b.test.\n\
         other.b.test. 60 IN A 127.0.0.1\n",
    );
    let (_https, https_port) = policy_server(&pki, "enforce");
    let port = free_port();
    let plain = receiver(port, serde_json::json!({}));
    let a = sender(&dns, port, https_port, &pki.ca());
    submit(&a, &["bob@b.test"], &message("No STARTTLS", "sts-5"));
    let text = wait_for("an MTA-STS deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("MTA-STS").then_some(t)
    });
    assert!(
        text.contains(
            "MTA-STS policy of b.test (enforce): mx.b.test[127.0.0.1]: STARTTLS is not offered"
        ),
        "{text}"
    );
    assert!(
        a.log().contains(
            "MTA-STS policy of b.test (enforce): other.b.test is not among the policy's MX hosts (mx.b.test)"
        ),
        "{}",
        a.log()
    );
    let rpt = wait_for("the TLS-RPT counts", &a, || {
        let t = read(&a.data_dir().join("tls-rpt.json"));
        (t.contains("starttls-not-supported") && t.contains("validation-failure")).then_some(t)
    });
    assert!(rpt.contains("\"success\": 0"), "{rpt}");
    assert!(
        received(&plain).is_empty(),
        "nothing may go out in clear text"
    );
}

/// The policy server's certificate must name `mta-sts.<domain>` (RFC 8461 §3.3): one for another
/// name makes the fetch fail, so no policy applies (and none is cached) and the message goes out
/// as without MTA-STS, here to an MX whose certificate would not have passed.
#[test]
fn a_policy_server_with_a_certificate_for_another_name_is_not_believed() {
    let pki = Pki::new();
    let dns = sts_dns();
    let (_https, https_port) = policy_server_as(&pki, "enforce", "wrong.b.test");
    let port = free_port();
    let r = tls_receiver(&pki, port, "wrong.b.test");
    let a = sender(&dns, port, https_port, &pki.ca());
    submit(
        &a,
        &["bob@b.test"],
        &message("No believable policy", "sts-6"),
    );
    wait_for("the message at the receiver", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("MTA-STS policy fetch failed"))
        .unwrap_or_else(|| panic!("no fetch failure in the log:\n{log}"));
    assert!(
        line.contains("https://mta-sts.b.test:") && line.contains("certificate"),
        "{line}"
    );
    assert!(!read(&a.data_dir().join("mta-sts.json")).contains("b.test"));
}
