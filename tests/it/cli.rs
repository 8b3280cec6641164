use crate::support::*;

#[test]
fn config_default_is_valid_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["config", "default"]);
    let out = run(cmd, None);
    assert!(out.status.success());
    let p = dir.path().join("d.toml");
    std::fs::write(&p, &out.stdout).unwrap();
    let out = tanba_with_config(&p, &["config", "check"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_production_config_checks() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tanba.toml");
    let out = tanba_with_config(&p, &["config", "check"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_err(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, toml).unwrap();
    let out = tanba_with_config(&p, &["config", "check"], None);
    assert_eq!(out.status.code(), Some(2), "config check should exit 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_errors_name_the_key() {
    let e = check_err("[smtp]\nmx = [\"127.0.0.1:2525\"]\nmaxrecipients = 3\n");
    assert!(e.contains("maxrecipients") && e.contains("line 3"), "{e}");
    let e = check_err("[imap]\nlisten = [\"127.0.0.1:70000\"]\n");
    assert!(e.contains("imap.listen (line 2)"), "{e}");
    let e = check_err("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert!(
        e.contains("tls.cert (line 2)") && e.contains("no such file"),
        "{e}"
    );
    let e = check_err("[server]\ndomains = [\"a b\"]\n");
    assert!(e.contains("server.domains"), "{e}");
}

#[test]
fn users_without_and_with_a_running_server() {
    let mut srv = TestServer::start();
    // Running: through the admin socket.
    srv.add_user("alice@example.test", "pw-alice-long");
    let out = srv.tanba(&["user", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice@example.test"));
    // Duplicate and foreign domain are refused with a message.
    let out = srv.tanba(
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("long-enough-x\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = srv.tanba(
        &["user", "add", "bob@elsewhere.test", "--password-stdin"],
        Some("long-enough-x\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a local domain"));

    // Stopped: directly on the store.
    assert_eq!(srv.stop(), Some(0));
    let out = srv.tanba(
        &["user", "add", "bob@example.test", "--password-stdin"],
        Some("pw-bob-long-1\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = srv.tanba(
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        Some("pw2-long-enough\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = srv.tanba(&["user", "del", "alice@example.test"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = srv.tanba(&["user", "list"], None);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        list.contains("bob@example.test") && !list.contains("alice"),
        "{list}"
    );
    let out = srv.tanba(&["user", "del", "nobody@example.test"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
