//! Issue 11, findings 6 and 9: what a client sends cannot forge or garble log lines, the log has
//! colours only on a terminal, and everything the server writes into `data_dir` is its user's
//! alone whatever umask it was started with.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::imap::{text, Imap};
use crate::smtp::{server_with_users, Client};
use crate::support::*;

/// A line a client tries to slip into the log: what a fail2ban filter would count as a failure.
const FAKE: &str =
    "2099-01-01T00:00:00.000000Z  WARN tanba: authentication failed client_ip=203.0.113.7";

#[test]
fn finding_6_client_control_bytes_are_escaped_in_the_log() {
    let srv = server_with_users(&[]);

    // IMAP LOGIN whose user name (a literal) carries CR LF and a whole fake log line.
    let mut imap = Imap::tls(srv.imaps, &srv.cert_pem());
    let user = format!("nobody@example.test\r\n{FAKE}\r\n");
    imap.send(format!("a1 LOGIN {{{}}}\r\n", user.len()).as_bytes());
    let cont = imap.response();
    assert!(cont.starts_with(b"+"), "{}", text(&cont));
    imap.send(format!("{user} wrong-password\r\n").as_bytes());
    let (_, tagged) = imap.until_tagged("a1");
    assert!(tagged.starts_with("a1 NO"), "{tagged}");

    // SMTP: an EHLO name and a MAIL FROM with ESC (a colour sequence), BEL, SOH and a bare LF
    // inside a quoted local part; whatever the server answers, the log must not carry them.
    let mut c = Client::connect(srv.mx);
    c.cmd("EHLO evil\x1b[31m\x07\x01host.example");
    c.ok("EHLO sender.example", "250");
    let r = c.cmd("MAIL FROM:<\"\x1b[2J\x01x\x08\"@example.kz>");
    let mut accepted = false;
    if r.code == 250 {
        if c.cmd("RCPT TO:<alice@example.test>").code == 250 && c.cmd("DATA").code == 354 {
            c.send(b"Subject: x\r\n\r\nx\r\n.\r\n");
            accepted = c.reply().code == 250;
        }
    } else {
        c.cmd("RSET");
    }
    c.ok("QUIT", "221");

    // The server logs asynchronously from the replies: wait for the IMAP failure's line.
    let log = wait_for_log(&srv, "auth failure client_ip=");
    for line in log.lines() {
        assert!(
            !line.starts_with("2099-01-01"),
            "a client wrote a line of its own into the log: {line:?}\n{log}"
        );
    }
    let raw: Vec<u8> = log
        .bytes()
        .filter(|&b| (b < 0x20 && b != b'\n') || b == 0x7f)
        .collect();
    assert!(
        raw.is_empty(),
        "raw control bytes {raw:x?} in the log:\n{}",
        log.escape_debug()
    );
    assert!(
        log.contains(&format!("nobody@example.test\\r\\n{FAKE}\\r\\n")),
        "the user name should be in the log, escaped:\n{log}"
    );
    // The envelope sender is logged when the message is accepted (the server may as well
    // refuse such an address: RFC 5321 §4.1.2 has no control characters in a quoted string).
    if accepted {
        assert!(
            log.contains(r"from=\x1b[2J\x01x\x08@example.kz"),
            "the sender should be in the log, escaped:\n{log}"
        );
    }
}

/// Polls the server's log until it contains `needle` (at most 10 s).
fn wait_for_log(srv: &TestServer, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = srv.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tanba ARGS` under `sh -c 'umask 022; exec …'`, the umask the README's shell has.
fn umask022(args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args);
    cmd
}

/// A `tanba serve` started under umask 022 with stderr to a pipe, read by a thread.
struct PipedServer {
    child: Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    mx: std::net::SocketAddr,
}

impl PipedServer {
    fn start(config: &Path, data_dir: &Path) -> PipedServer {
        let listeners = data_dir.join("listeners.json");
        let mut child = umask022(&["--config", config.to_str().unwrap(), "serve"])
            .env("TANBA_LOG", "debug")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tanba serve");
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        });
        let mut s = PipedServer {
            child,
            stderr: Some(stderr),
            mx: "0.0.0.0:0".parse().unwrap(),
        };
        let start = Instant::now();
        loop {
            if let Ok(v) = std::fs::read(&listeners)
                .map_err(|_| ())
                .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).map_err(|_| ()))
            {
                s.mx = v["smtp.mx"][0].as_str().unwrap().parse().unwrap();
                return s;
            }
            if let Some(st) = s.child.try_wait().unwrap() {
                let err = s.stop_and_stderr();
                panic!(
                    "tanba serve exited early ({st}):\n{}",
                    String::from_utf8_lossy(&err)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait, and everything the server wrote to stderr.
    fn stop_and_stderr(&mut self) -> Vec<u8> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for PipedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every path under `dir` whose mode lets group or others in, with its mode.
fn open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 && !meta.file_type().is_symlink() {
            out.push((p.clone(), mode));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn finding_9_data_dir_is_private_under_umask_022() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let config = dir.path().join("tanba.toml");
    std::fs::write(&config, base_toml(dir.path())).unwrap();
    let data = dir.path().join("data");

    let mut srv = PipedServer::start(&config, &data);
    let add = tanba_with_config(
        &config,
        &["user", "add", "alice@example.test", "--password-stdin"],
        Some("secret-alice-1\n"),
    );
    assert!(add.status.success(), "{add:?}");
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.send_mail_ok(
        "sender@example.kz",
        &["alice@example.test"],
        b"Subject: private\r\n\r\nfor alice only\r\n",
    );
    c.ok("QUIT", "221");
    // A DKIM key generated from the same shell.
    let mut gen = umask022(&[
        "--config",
        config.to_str().unwrap(),
        "dkim",
        "generate",
        "example.test",
    ]);
    let gen = run(
        {
            gen.env("TANBA_LOG", "info");
            gen
        },
        None,
    );
    assert!(gen.status.success(), "{gen:?}");

    let loose = open_to_others(&data);
    let stderr = srv.stop_and_stderr();
    assert!(
        loose.is_empty(),
        "open to other users: {:?}\n{}",
        loose
            .iter()
            .map(|(p, m)| format!("{} {m:04o}", p.display()))
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&stderr)
    );
    // What the walk covered: the data dir, the store with a message file, keys, the socket.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("dkim/example.test.key")), 0o600);
    assert_eq!(mode(&data.join("tls/key.pem")), 0o600);
    assert_eq!(mode(&data.join("store/db")), 0o600);
    let bodies: Vec<PathBuf> = std::fs::read_dir(data.join("store/messages"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(mode(&bodies[0]), 0o600);
}

#[test]
fn finding_9_loose_modes_found_at_start_are_tightened_with_a_warning() {
    if crate::support::sled_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("store")).unwrap();
    for p in [&data, &data.join("store")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A DKIM key outside data_dir, readable by everyone: the operator's file, only reported.
    // (The same key 0640, for a group, would be left alone: docs/security.md.)
    let key = dir.path().join("dkim.key");
    let gen_config = dir.path().join("gen.toml");
    std::fs::write(&gen_config, base_toml(dir.path())).unwrap();
    let gen = tanba_with_config(
        &gen_config,
        &[
            "dkim",
            "generate",
            "example.test",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(gen.status.success(), "{gen:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let toml = format!(
        "{}\n[dkim.\"example.test\"]\nselector = \"tanba\"\nkey = \"{}\"\n",
        base_toml(dir.path()),
        key.display()
    );
    let srv = TestServer::start_toml(dir, &toml);
    let log = srv.log();
    let d = data.display();
    assert!(
        log.contains(&format!(
            "server.data_dir {d} had mode 0755, open to other users; changed to 0700"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "the store {d}/store had mode 0755, open to other users; changed to 0700"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "the DKIM key of example.test {k} has mode 0644, open to other users; run: chmod o-rwx {k}",
            k = key.display()
        )),
        "{log}"
    );
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("store")), 0o700);
    assert_eq!(mode(&key), 0o644);
}

/// A `tanba serve` that logs at info (it generates its TLS pair) and then fails to bind a port
/// the test holds: a short, deterministic run of the real logging path.
fn serve_that_fails(dir: &Path) -> (Command, std::net::TcpListener) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let toml = base_toml(dir).replace(
        "mx = [\"127.0.0.1:0\"]",
        &format!("mx = [\"{}\"]", held.local_addr().unwrap()),
    );
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    let config = dir.join("tanba.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("TANBA_LOG", "info")
        .env_remove("NO_COLOR");
    (cmd, held)
}

/// Runs a command with a pseudo-terminal as stdin, stdout and stderr (Python's `pty`); returns
/// what it wrote there.
fn on_a_terminal(cmd: &Command) -> String {
    const PTY: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b''
while True:
    try:
        d = os.read(fd, 65536)
    except OSError:
        break
    if not d:
        break
    out += d
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
"#;
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(PTY)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => py.env(k, v),
            None => py.env_remove(k),
        };
    }
    let out = run(py, None);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn finding_6_colours_only_on_a_terminal_without_no_color() {
    // stderr to a pipe (journald, a file, a log collector): no colour codes.
    let dir = tempfile::tempdir().unwrap();
    let (cmd, _held) = serve_that_fails(dir.path());
    let out = run(cmd, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("generated a self-signed TLS certificate"),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");

    // A terminal gets colours, unless NO_COLOR is set.
    let dir = tempfile::tempdir().unwrap();
    let (cmd, _held) = serve_that_fails(dir.path());
    let tty = on_a_terminal(&cmd);
    assert!(tty.contains("self-signed TLS certificate"), "{tty:?}");
    assert!(tty.contains("\x1b["), "a terminal gets colours: {tty:?}");

    let dir = tempfile::tempdir().unwrap();
    let (mut cmd, _held) = serve_that_fails(dir.path());
    cmd.env("NO_COLOR", "1");
    let tty = on_a_terminal(&cmd);
    assert!(tty.contains("self-signed TLS certificate"), "{tty:?}");
    assert!(!tty.contains('\x1b'), "NO_COLOR=1 yet colours: {tty:?}");
}
