//! Issue 12, items 5, 6 and 9: which config a command uses (SPEC §9), admin commands that never
//! create a store, `config check` catching what `serve` refuses, and messages that help (second
//! `serve`, ports below 1024, trust_dir count, empty queue, detached CMS, the validation instant
//! in the local time zone). Everything through the real binary.
//!
//! Some cases need root: running as another user (`setpriv`, for EACCES and ports below 1024,
//! which root is never refused) and a private mount namespace (`unshare -m`, to put a
//! `/etc/tanba/tanba.toml` where only the tested process sees it). They print `SKIPPED` when
//! that is not possible.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::support::pki::self_signed_p256;
use super::support::*;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tanba ARGS` without `--config`, with `TANBA_CONFIG` set or removed, in `cwd`.
fn tanba_env(cwd: &Path, env: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).args(args);
    match env {
        Some(p) => cmd.env("TANBA_CONFIG", p),
        None => cmd.env_remove("TANBA_CONFIG"),
    };
    run(cmd, None)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `tanba --config CFG ARGS` as uid/gid 65534 (nobody), or None when that is not possible.
fn tanba_as_nobody(config: &Path, args: &[&str]) -> Option<Output> {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIPPED: needs root and setpriv to run as another user");
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(BIN)
    .arg("--config")
    .arg(config)
    .args(args);
    Some(run(cmd, None))
}

/// A temp dir that uid 65534 can enter and read (tempfile makes them 0700).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// A config with listeners on port 0 and data in `dir/data`; `extra` is appended.
fn config_text(dir: &Path, hostname: &str, extra: &str) -> String {
    format!(
        "[server]\nhostname = \"{hostname}\"\ndomains = [\"example.test\"]\n\
         data_dir = \"{d}/data\"\n\n\
         [smtp]\nmx = [\"127.0.0.1:0\"]\nsubmission = [\"127.0.0.1:0\"]\n\
         submissions = [\"127.0.0.1:0\"]\n\n\
         [imap]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\n\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nmetrics = []\n\n{extra}",
        d = dir.display()
    )
}

#[test]
fn config_lookup_order_flag_then_env_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_config(dir.path(), "a.toml", &config_text(dir.path(), "a.test", ""));
    let b = write_config(dir.path(), "b.toml", &config_text(dir.path(), "b.test", ""));

    // --config wins over TANBA_CONFIG.
    let out = tanba_env(
        dir.path(),
        Some(&a),
        &["--config", b.to_str().unwrap(), "config", "check"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("config: {} (from --config)", b.display()))
            && t.contains("hostname b.test"),
        "{t}"
    );
    // TANBA_CONFIG when there is no --config.
    let out = tanba_env(dir.path(), Some(&a), &["config", "check"]);
    let t = text(&out);
    assert!(
        t.contains(&format!("config: {} (from TANBA_CONFIG)", a.display()))
            && t.contains("hostname a.test"),
        "{t}"
    );
    // Every failing command says which config it used.
    let missing = dir.path().join("missing.toml");
    let out = tanba_env(dir.path(), Some(&missing), &["user", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "config: {} (from TANBA_CONFIG)",
            missing.display()
        )),
        "{t}"
    );
    // Neither: /etc/tanba/tanba.toml if this machine has one, else the built-in defaults.
    if !Path::new("/etc/tanba/tanba.toml").exists() {
        let out = tanba_env(dir.path(), None, &["config", "check"]);
        let t = text(&out);
        assert!(
            t.contains("config: the built-in defaults (no --config, no TANBA_CONFIG, no /etc/tanba/tanba.toml)")
                && t.contains("hostname localhost"),
            "{t}"
        );
    }
}

/// `/etc/tanba/tanba.toml` is used without --config and TANBA_CONFIG, loses to both, and names
/// itself when an admin command finds no store. Runs in a private mount namespace whose `/etc`
/// is a tmpfs of symlinks to the real one plus our `tanba/tanba.toml`: nothing outside sees it.
#[test]
fn config_lookup_uses_etc_tanba_when_present() {
    if !is_root() || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("SKIPPED: needs root and unshare for a private /etc");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etc_cfg = write_config(
        dir.path(),
        "etc.toml",
        &config_text(dir.path(), "etc.test", ""),
    );
    let env_cfg = write_config(
        dir.path(),
        "env.toml",
        &config_text(dir.path(), "env.test", ""),
    );
    std::fs::create_dir(dir.path().join("orig")).unwrap();
    let script = r#"
set -e
T="$1"; BIN="$2"
mount --bind /etc "$T/orig"
mount -t tmpfs tanba-test-etc /etc
for f in "$T"/orig/*; do
  case "$f" in */tanba) ;; *) ln -s "$f" /etc/ ;; esac
done
mkdir /etc/tanba
cp "$T/etc.toml" /etc/tanba/tanba.toml
cd "$T"
echo "== etc"; env -u TANBA_CONFIG "$BIN" config check 2>&1 || true
echo "== env"; TANBA_CONFIG="$T/env.toml" "$BIN" config check 2>&1 || true
echo "== flag"; TANBA_CONFIG="$T/env.toml" "$BIN" --config "$T/env.toml" config check 2>&1 || true
echo "== admin"; env -u TANBA_CONFIG "$BIN" user list 2>&1 || echo "exit=$?"
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(dir.path())
        .arg(BIN);
    let out = run(cmd, None);
    let t = text(&out);
    if t.contains("Operation not permitted") || t.contains("unshare failed") {
        eprintln!("SKIPPED: no mount namespace here: {t}");
        return;
    }
    let part = |name: &str| -> String {
        let start = t
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("{t}"));
        let rest = &t[start + name.len() + 4..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())].to_string()
    };
    let etc = part("etc");
    assert!(
        etc.contains("config: /etc/tanba/tanba.toml (the default location)")
            && etc.contains("hostname etc.test"),
        "{t}"
    );
    assert!(part("env").contains("hostname env.test"), "{t}");
    assert!(part("flag").contains("(from --config)"), "{t}");
    let admin = part("admin");
    assert!(
        admin.contains("no store in")
            && admin.contains("server.data_dir of /etc/tanba/tanba.toml")
            && admin.contains("exit=2"),
        "{t}"
    );
    let _ = etc_cfg;
    let _ = env_cfg;
    // The real /etc never saw it (unless this machine has its own).
    assert!(
        std::fs::read_to_string("/etc/tanba/tanba.toml")
            .map(|s| !s.contains("etc.test"))
            .unwrap_or(true),
        "the test config leaked into the real /etc"
    );
}

/// Finding: admin commands silently opened a fresh empty store when --config was forgotten.
#[test]
fn admin_commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "t.toml", &config_text(dir.path(), "x.test", ""));
    let store = dir.path().join("data/store");
    for args in [
        &["user", "list"][..],
        &["user", "add", "a@example.test", "--password-stdin"],
        &["user", "del", "a@example.test"],
        &["queue", "list"],
        &["queue", "retry", "1"],
        &["export", "a@example.test"],
    ] {
        let out = tanba_with_config(&cfg, args, Some("a-long-password\n"));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(
            t.contains(&format!("no store in {}", store.display()))
                && t.contains(&format!("server.data_dir of {}", cfg.display()))
                && t.contains(&format!("config: {} (from --config)", cfg.display())),
            "{args:?}: {t}"
        );
        assert!(!store.exists(), "{args:?} created {}", store.display());
    }
}

fn check(cfg: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    let out = tanba_with_config(cfg, &all, None);
    (out.status.code(), text(&out))
}

/// A certificate and key pair `dir/NAME.pem` / `dir/NAME.key` (P-256, self-signed).
fn pair(dir: &Path, name: &str) {
    self_signed_p256(dir, name, "/CN=mail.example.test", 30, &[]);
}

fn tls_config(dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    write_config(dir, "tls.toml", &config_text(dir, "x.test", &extra))
}

/// Finding: `config check` passed configs that `serve` then refused. TLS: a pair that matches,
/// one that does not, a certificate that does not parse, a key that is a directory.
#[test]
fn config_check_tls_pair_parse_and_match() {
    let dir = open_tempdir();
    let d = dir.path();
    pair(d, "a");
    pair(d, "b");
    let (code, t) = check(&tls_config(d, &d.join("a.pem"), &d.join("a.key")), &[]);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("ok: TLS:"), "{t}");

    // Mismatched: serve would hand out a certificate it cannot prove it owns.
    let (code, t) = check(&tls_config(d, &d.join("a.pem"), &d.join("b.key")), &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("tls.key (line ") && t.contains("is not the private key of the certificate"),
        "{t}"
    );

    // Not a certificate.
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    let (code, t) = check(&tls_config(d, &d.join("junk.pem"), &d.join("a.key")), &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("tls.cert (line ") && t.contains("no PEM certificate"),
        "{t}"
    );

    // A directory where the key should be: said as such, not "no such file".
    std::fs::create_dir(d.join("keydir")).unwrap();
    let (code, t) = check(&tls_config(d, &d.join("a.pem"), &d.join("keydir")), &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("is not a regular file") && !t.contains("no such file"),
        "{t}"
    );
}

/// A key the running user may not read is reported as EACCES, not as a missing file.
#[test]
fn config_check_unreadable_key_says_permission_denied() {
    let dir = open_tempdir();
    let d = dir.path();
    pair(d, "a");
    std::fs::set_permissions(d.join("a.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(d.join("a.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = tls_config(d, &d.join("a.pem"), &d.join("a.key"));
    let Some(out) = tanba_as_nobody(&cfg, &["config", "check"]) else {
        return;
    };
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("tls.key (line ")
            && t.contains("permission denied (EACCES)")
            && !t.contains("no such file"),
        "{t}"
    );
}

/// data_dir: a file where the directory should be, a directory below a file, and (as another
/// user) a directory owned by root.
#[test]
fn config_check_data_dir_not_writable() {
    let dir = open_tempdir();
    let d = dir.path();
    std::fs::write(d.join("data"), "a file, not a directory").unwrap();
    let cfg = write_config(d, "t.toml", &config_text(d, "x.test", ""));
    let (code, t) = check(&cfg, &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("server.data_dir (line 4)") && t.contains("data is not a directory"),
        "{t}"
    );

    let below = format!("[server]\ndata_dir = \"{}/data/sub\"\n", d.display());
    let cfg2 = write_config(d, "t2.toml", &below);
    let (code, t) = check(&cfg2, &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("sub cannot be created") && t.contains("is a file, not a directory"),
        "{t}"
    );

    // A read-only file system: a private read-only tmpfs mount that only this command sees.
    if is_root() && Path::new("/usr/bin/unshare").exists() {
        let ro = d.join("ro");
        std::fs::create_dir(&ro).unwrap();
        let cfg3 = write_config(
            d,
            "t3.toml",
            &format!("[server]\ndata_dir = \"{}\"\n", ro.display()),
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o ro tanba-test-ro \"$1\" && exec \"$2\" --config \"$3\" config check",
            "sh",
        ])
        .arg(&ro)
        .arg(BIN)
        .arg(&cfg3);
        let out = run(cmd, None);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!("{} is on a read-only file system", ro.display())),
            "{t}"
        );
    }

    std::fs::remove_file(d.join("data")).unwrap();
    std::fs::create_dir(d.join("data")).unwrap();
    std::fs::set_permissions(d.join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(out) = tanba_as_nobody(&cfg, &["config", "check"]) else {
        return;
    };
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("not writable by uid 65534") && t.contains("permission denied"),
        "{t}"
    );
}

/// `--bind`: a port another program holds, named with what to do.
#[test]
fn config_check_bind_finds_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let toml = config_text(d, "x.test", "").replace(
        "mx = [\"127.0.0.1:0\"]",
        &format!("mx = [\"127.0.0.1:{port}\"]"),
    );
    let cfg = write_config(d, "t.toml", &toml);
    // Without --bind the ports are not touched.
    let (code, t) = check(&cfg, &[]);
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = check(&cfg, &["--bind"]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains(&format!("smtp.mx: cannot listen on 127.0.0.1:{port}"))
            && t.contains("another program listens there")
            && t.contains("ok: imap.listen: can listen on 127.0.0.1:0"),
        "{t}"
    );
    drop(taken);
}

/// Ports below 1024 without the capability: `config check --bind` and `serve` name
/// CAP_NET_BIND_SERVICE and the unit (run as uid 65534: root is never refused).
#[test]
fn port_below_1024_names_cap_net_bind_service() {
    let dir = open_tempdir();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    std::os::unix::fs::chown(d.join("data"), Some(65534), Some(65534)).ok();
    let toml =
        config_text(d, "x.test", "").replace("mx = [\"127.0.0.1:0\"]", "mx = [\"127.0.0.1:25\"]");
    let cfg = write_config(d, "t.toml", &toml);
    let Some(out) = tanba_as_nobody(&cfg, &["config", "check", "--bind"]) else {
        return;
    };
    let t = text(&out);
    if t.contains("ok: smtp.mx: can listen") {
        eprintln!("SKIPPED: unprivileged users may bind port 25 here (ip_unprivileged_port_start)");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("smtp.mx: cannot listen on 127.0.0.1:25")
            && t.contains("CAP_NET_BIND_SERVICE")
            && t.contains("systemd/tanba.service"),
        "{t}"
    );
    let out = tanba_as_nobody(&cfg, &["serve"]).unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("smtp.mx: cannot listen on 127.0.0.1:25") && t.contains("CAP_NET_BIND_SERVICE"),
        "{t}"
    );
}

/// DKIM keys must parse; trust_dir must exist, and NCA RK test roots in it get a loud warning
/// from `config check` and from `serve`, whose log says how many certificates it trusts.
#[test]
fn config_check_dkim_key_and_trust_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("dkim.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let extra = format!(
        "[dkim.\"example.test\"]\nselector = \"s1\"\nkey = \"{}\"\n",
        d.join("dkim.key").display()
    );
    let cfg = write_config(d, "t.toml", &config_text(d, "x.test", &extra));
    let (code, t) = check(&cfg, &[]);
    assert_eq!(code, Some(2), "{t}");
    assert!(
        t.contains("dkim.\"example.test\".key (line ") && t.contains("holds no PEM private key"),
        "{t}"
    );

    // trust_dir missing: a warning (serve runs, but nothing can pass).
    let trust = d.join("trust");
    let extra = format!("[signatures]\ntrust_dir = \"{}\"\n", trust.display());
    let cfg = write_config(d, "t.toml", &config_text(d, "x.test", &extra));
    let (code, t) = check(&cfg, &[]);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("WARNING: signatures.trust_dir (line ") && t.contains("does not exist"),
        "{t}"
    );

    // The NCA RK test roots and intermediates.
    std::fs::create_dir(&trust).unwrap();
    let nca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nca/ca");
    for f in std::fs::read_dir(&nca).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), trust.join(f.file_name())).unwrap();
    }
    let (code, t) = check(&cfg, &[]);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t.contains("holds 6 trusted certificates")
            && t.contains("WARNING: signatures.trust_dir")
            && t.contains("holds 6 NCA RK TEST certificate(s)")
            && t.contains("root RSA TEST"),
        "{t}"
    );
    // serve says the same in its log at start.
    let sdir = tempfile::tempdir().unwrap();
    let strust = sdir.path().join("trust");
    std::fs::create_dir(&strust).unwrap();
    for f in std::fs::read_dir(&nca).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), strust.join(f.file_name())).unwrap();
    }
    let toml = base_toml(sdir.path());
    let mut srv = TestServer::start_toml(sdir, &toml);
    let log = srv.log();
    assert!(
        log.contains(&format!(
            "signatures.trust_dir {} holds 6 trusted certificates",
            strust.display()
        )) && log.contains("NCA RK TEST certificate(s)"),
        "{log}"
    );
    srv.stop();
}

/// Finding: a second `serve` on the same data_dir dumped sled's raw WouldBlock error.
#[test]
fn second_serve_names_the_running_one() {
    let srv = TestServer::start();
    let out = srv.tanba(&["serve"], None);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains(&format!(
            "another tanba is running with data_dir {} (pid {})",
            srv.data_dir().display(),
            srv.pid().unwrap()
        )),
        "{t}"
    );
    assert!(
        !t.contains("WouldBlock") && !t.contains("os error 11"),
        "{t}"
    );
    // The first one still serves.
    let out = srv.tanba(&["user", "list"], None);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn empty_queue_list_says_so() {
    let srv = TestServer::start();
    let out = srv.tanba(&["queue", "list"], None);
    assert!(out.status.success(), "{}", text(&out));
    // Said on stderr; stdout keeps one line per entry for scripts.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "the outbound queue is empty\n"
    );
    assert!(out.stdout.is_empty());
    // --json stays machine-readable.
    let out = srv.tanba(&["queue", "list", "--json"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

fn nca(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/nca")
        .join(rel)
}

/// A detached CMS without `--content` cannot be checked: a usage error (exit 2), not a verdict.
#[test]
fn detached_cms_without_content_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "t.toml", "");
    let file = nca("cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s");
    let out = tanba_with_config(&cfg, &["verify", file.to_str().unwrap()], None);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("is a detached signature") && t.contains("--content FILE"),
        "{t}"
    );
    assert!(out.stdout.is_empty(), "{t}");
}

/// The human report names the instant it validated at, in UTC and in `signatures.timezone`
/// (Asia/Almaty by default: UTC+6 until 2024-03-01, UTC+5 since).
#[test]
fn verify_report_shows_validation_instant_in_almaty_time() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    for f in std::fs::read_dir(nca("ca")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), trust.join(f.file_name())).unwrap();
    }
    let file = nca("cms/ncanode_attached_1signer_rsa.p7s");
    let verify = |cfg: &Path, at: &str| -> String {
        let out = tanba_with_config(
            cfg,
            &[
                "verify",
                file.to_str().unwrap(),
                "--trust",
                trust.to_str().unwrap(),
                "--at",
                at,
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cfg = write_config(dir.path(), "t.toml", "");
    let t = verify(&cfg, "2021-09-28T14:40:30Z");
    assert!(t.starts_with("Verdict: "), "{t}");
    assert!(
        t.lines().nth(1)
            == Some("Validated at: 2021-09-28 14:40:30 UTC = 2021-09-28 20:40:30 Asia/Almaty (UTC+06:00)"),
        "{t}"
    );
    let t = verify(&cfg, "2025-01-01T00:00:00Z");
    assert!(
        t.contains(
            "Validated at: 2025-01-01 00:00:00 UTC = 2025-01-01 05:00:00 Asia/Almaty (UTC+05:00)"
        ),
        "{t}"
    );
    let moscow = write_config(
        dir.path(),
        "m.toml",
        "[signatures]\ntimezone = \"Europe/Moscow\"\n",
    );
    let t = verify(&moscow, "2025-01-01T00:00:00Z");
    assert!(
        t.contains("= 2025-01-01 03:00:00 Europe/Moscow (UTC+03:00)"),
        "{t}"
    );
    let bad = write_config(
        dir.path(),
        "b.toml",
        "[signatures]\ntimezone = \"Almaty\"\n",
    );
    let out = tanba_with_config(&bad, &["config", "check"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("signatures.timezone (line 2)"),
        "{}",
        text(&out)
    );
}

/// `verify --help` points at nothing an operator does not have (it named SPEC §6).
#[test]
fn verify_help_names_no_repository_file() {
    let mut cmd = Command::new(BIN);
    cmd.args(["verify", "--help"]);
    let t = text(&run(cmd, None));
    assert!(t.contains("--content") && !t.contains("SPEC"), "{t}");
}

/// `sudo tanba dkim generate` leaves the key to the owner of data_dir, who runs the server.
#[test]
fn dkim_generate_as_root_gives_the_key_to_the_data_dir_owner() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    std::os::unix::fs::chown(d.join("data"), Some(65534), Some(65534)).unwrap();
    let cfg = write_config(d, "t.toml", &config_text(d, "x.test", ""));
    let out = tanba_with_config(&cfg, &["dkim", "generate", "example.test"], None);
    assert!(out.status.success(), "{}", text(&out));
    for p in [d.join("data/dkim"), d.join("data/dkim/example.test.key")] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", p.display());
    }
    let m = std::fs::metadata(d.join("data/dkim/example.test.key")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}
