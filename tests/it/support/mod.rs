//! Shared test helpers: a real `tanba serve` process on loopback with a fresh data dir, and a
//! way to run the CLI against it.

#![allow(dead_code)]

pub mod dns;
pub mod mail;
pub mod pg;
pub mod pki;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tanba");

/// Whether this run puts every test server's store on PostgreSQL (`TANBA_TEST_BACKEND=postgres`,
/// scripts/test.sh's second pass): each [`TestServer`] whose config has no `[store]` section of
/// its own then gets one naming a fresh database on the process's shared cluster ([`pg::shared`]).
/// Any other value, or none, is the embedded default (sled).
pub fn backend_is_postgres() -> bool {
    static PG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PG.get_or_init(|| match std::env::var("TANBA_TEST_BACKEND") {
        Ok(v) if v == "postgres" => true,
        Ok(v) if v.is_empty() || v == "sled" => false,
        Ok(v) => panic!("TANBA_TEST_BACKEND={v:?}: expected \"sled\" or \"postgres\""),
        Err(_) => false,
    })
}

/// For tests that are about the embedded store by nature (its files in the data dir, `store
/// check`/`backup`/`restore`/`rebuild`, its fsyncs, its format version, a full data dir): true,
/// after printing "skipped: sled only", when the run is on PostgreSQL; the test then returns.
pub fn sled_only() -> bool {
    if backend_is_postgres() {
        eprintln!("skipped: sled only");
    }
    backend_is_postgres()
}

/// A `("top", ..)` line for [`TestServer::start_with`] that keeps a server on sled whatever
/// `TANBA_TEST_BACKEND` says (the embedded source of `tanba store migrate`). Last in the list:
/// "top" lines after it would land in `[store]`.
pub const SLED_STORE: (&str, &str) = ("top", "[store]\nbackend = \"sled\"");

/// Whether `toml` has a `[store]` table of its own.
fn has_store_section(toml: &str) -> bool {
    toml.lines().any(|l| l.trim() == "[store]")
}

/// A running server. Killed (SIGKILL) on drop; use [`TestServer::stop`] for a graceful stop.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub mx: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    /// `http.listen`, `http.listen_tls`, `http.metrics` (first address; None when not listening).
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// Extra environment variables for `tanba serve` (kept across restarts).
    env: Vec<(String, String)>,
    /// A command that runs `tanba serve` (e.g. `strace -f -o FILE`), empty for none.
    wrapper: Vec<String>,
    /// The database on the shared PostgreSQL that the harness added to the config
    /// ([`backend_is_postgres`]); dropped with the server.
    pub pg_db: Option<(String, String)>,
}

/// The `[auth]` lines of [`base_toml`]: sender checks off, so that MX mail in tests never asks
/// the system's DNS. Tests of the checks (senderauth.rs) remove them and set a loopback resolver.
pub const AUTH_OFF: &str = "[auth]\nspf = false\ndkim = false\ndmarc = false\narc = false\n";

/// The config every test server starts from; `{dir}` is the temp dir. Sections can be extended
/// by passing extra lines for a section to [`TestServer::start_with`].
pub fn base_toml(dir: &Path) -> String {
    format!(
        r#"[server]
hostname = "mail.example.test"
domains = ["example.test"]
data_dir = "{d}/data"

[smtp]
mx = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
#SMTP

[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
#IMAP

[http]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
metrics = ["127.0.0.1:0"]
#HTTP

[signatures]
trust_dir = "{d}/trust"
#SIGNATURES

[delivery]
#DELIVERY

[limits]
#LIMITS

{AUTH_OFF}"#,
        d = dir.display()
    )
}

impl TestServer {
    /// A server on the base config.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// A server on the base config with extra lines: `("smtp", "max_recipients = 2")` adds the
    /// line to `[smtp]`; sections: smtp, imap, http, signatures, delivery, limits; `("top", ...)` appends at the end.
    pub fn start_with(extra: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("trust")).unwrap();
        let mut toml = base_toml(dir.path());
        for (section, line) in extra {
            if *section == "top" {
                toml.push_str(line);
                toml.push('\n');
            } else {
                let marker = format!("#{}", section.to_uppercase());
                toml = toml.replace(&marker, &format!("{line}\n{marker}"));
            }
        }
        Self::start_toml(dir, &toml)
    }

    pub fn start_toml(dir: tempfile::TempDir, toml: &str) -> TestServer {
        Self::start_toml_env(dir, toml, &[])
    }

    /// Like [`TestServer::start_toml`], with extra environment variables for the server process.
    pub fn start_toml_env(dir: tempfile::TempDir, toml: &str, env: &[(&str, &str)]) -> TestServer {
        Self::spawn_with(dir, toml, env, &[])
    }

    /// Like [`TestServer::start_toml`], with `tanba serve` run by `wrapper` (its arguments
    /// followed by the binary and its own); the process waited for is the wrapper's.
    pub fn start_toml_wrapped(dir: tempfile::TempDir, toml: &str, wrapper: &[&str]) -> TestServer {
        Self::spawn_with(dir, toml, &[], wrapper)
    }

    /// Writes `toml` as the configuration and starts the server with `env` and `wrapper`.
    fn spawn_with(
        dir: tempfile::TempDir,
        toml: &str,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> TestServer {
        let config_path = dir.path().join("tanba.toml");
        std::fs::write(&config_path, toml).unwrap();
        let mut s = TestServer {
            dir,
            config_path,
            child: None,
            mx: "0.0.0.0:0".parse().unwrap(),
            submission: "0.0.0.0:0".parse().unwrap(),
            submissions: "0.0.0.0:0".parse().unwrap(),
            imap: "0.0.0.0:0".parse().unwrap(),
            imaps: "0.0.0.0:0".parse().unwrap(),
            http: None,
            https: None,
            metrics: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            pg_db: None,
        };
        s.spawn();
        s
    }

    /// On a PostgreSQL run, adds a `[store]` naming this server's database (created on first
    /// use) to the config file when it has none: at the first start, and again after a test
    /// rewrote the config without it (a restart must find the same store).
    fn add_store_section(&mut self) {
        if !backend_is_postgres() {
            return;
        }
        let mut toml = std::fs::read_to_string(&self.config_path).unwrap();
        if has_store_section(&toml) {
            return;
        }
        let url = &self.pg_db.get_or_insert_with(pg::fresh_db).1;
        toml.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        ));
        std::fs::write(&self.config_path, toml).unwrap();
    }

    /// Opens the store this server uses (stop the server first on the embedded backend: sled
    /// allows one process).
    pub fn open_store(&self) -> tanba::store::Store {
        let config = tanba::config::Config::load(Some(&self.config_path)).unwrap();
        tanba::store::Store::open_backend(&config.store, &config.data_dir.join("store")).unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The self-signed certificate the server generated (trust it in TLS clients).
    pub fn cert_pem(&self) -> PathBuf {
        self.data_dir().join("tls/cert.pem")
    }

    fn spawn(&mut self) {
        self.add_store_section();
        let listeners = self.data_dir().join("listeners.json");
        let _ = std::fs::remove_file(&listeners);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .env("TANBA_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn tanba serve");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(data) = std::fs::read(&listeners) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) {
                    let get =
                        |k: &str| -> SocketAddr { v[k][0].as_str().unwrap().parse().unwrap() };
                    self.mx = get("smtp.mx");
                    self.submission = get("smtp.submission");
                    self.submissions = get("smtp.submissions");
                    self.imap = get("imap.listen");
                    self.imaps = get("imap.listen_tls");
                    let opt = |k: &str| -> Option<SocketAddr> {
                        v[k].get(0)
                            .and_then(|a| a.as_str())
                            .map(|a| a.parse().unwrap())
                    };
                    self.http = opt("http.listen");
                    self.https = opt("http.listen_tls");
                    self.metrics = opt("http.metrics");
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tanba serve exited early ({status}):\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `tanba --config <cfg> ARGS` with optional stdin.
    pub fn tanba(&self, args: &[&str], stdin: Option<&str>) -> Output {
        tanba_with_config(&self.config_path, args, stdin)
    }

    /// Creates an account through the CLI (and so through the admin socket while running).
    pub fn add_user(&self, email: &str, password: &str) {
        let out = self.tanba(
            &["user", "add", email, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `tanba export EMAIL` output (mboxrd).
    pub fn export(&self, email: &str) -> Vec<u8> {
        let out = self.tanba(&["export", email], None);
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// SIGKILL, like a power cut (for the process; the OS keeps what was flushed).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe { libc_kill(c.id() as i32, 15) };
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(40) {
                let _ = c.kill();
                panic!("server did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same config and data dir (new ports when 0).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits up to `limit` for the server to exit by itself; its exit code (`None`: still
    /// running, or killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let c = self.child.as_mut()?;
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // `TANBA_TEST_SERVER_LOG=1`: a failing test shows its servers' warnings and errors.
        if std::thread::panicking() && std::env::var_os("TANBA_TEST_SERVER_LOG").is_some() {
            for l in self
                .log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                eprintln!("server log: {l}");
            }
        }
        if let Some((db, _)) = &self.pg_db {
            pg::drop_db(db);
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The stdout of a command that must have succeeded (else a panic with its exit and output).
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tanba_with_config(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).args(args);
    run(cmd, stdin)
}

/// Runs a command, feeding `stdin`, and collects its output.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(s) = stdin {
        // A command that exits before reading its input (it refused its arguments) closes the
        // pipe: its exit code and output below say what happened, not this write.
        match child.stdin.take().unwrap().write_all(s.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
            _ => {}
        }
    }
    child.wait_with_output().unwrap()
}

/// Starts `python3 -c SCRIPT ARGS` as a server on loopback: stdin piped (the script exits when
/// it closes), stderr inherited; reads the port the script prints on its first line.
pub fn spawn_python_server<I, S>(script: &str, args: I) -> (Child, u16)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python helper failed to start: {line:?}"));
    (child, port)
}

/// Runs a Python 3 script (stdlib only: smtplib, imaplib, ssl) with arguments; panics with its
/// output if it fails. Returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Splits an mboxrd export into messages (CRLF restored), for byte comparisons.
pub fn mbox_messages(mbox: &[u8]) -> Vec<Vec<u8>> {
    let text = mbox;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    for line in text.split(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            if let Some(m) = cur.take() {
                out.push(m);
            }
            cur = Some(Vec::new());
            continue;
        }
        if let Some(m) = cur.as_mut() {
            let unq = if line
                .iter()
                .position(|&b| b != b'>')
                .map(|i| i > 0 && line[i..].starts_with(b"From "))
                == Some(true)
            {
                &line[1..]
            } else {
                line
            };
            m.extend_from_slice(unq);
            m.extend_from_slice(b"\r\n");
        }
    }
    if let Some(m) = cur.take() {
        out.push(m);
    }
    // Each message ends with the blank separator line plus the split's trailing piece.
    for m in &mut out {
        while m.ends_with(b"\r\n\r\n") {
            m.truncate(m.len() - 2);
        }
    }
    out
}

/// Polls `f` until it returns Some; panics with `what` and the server log after 60 s.
pub fn wait_for<T>(what: &str, srv: &TestServer, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!("timed out waiting for {what}; server log:\n{}", srv.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port that refuses connections for as long as this lives: a TCP socket bound to it
/// that never listens, and without `SO_REUSEADDR`, so no other test's server (whose listeners
/// set it) can bind the port meanwhile. [`free_port`] alone leaves the port to whoever binds
/// next, and a parallel test's listener once took it (the message met "connection closed by the
/// server" instead of a refused connection).
pub struct ClosedPort {
    socket: socket2::Socket,
    pub port: u16,
}

pub fn closed_port() -> ClosedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    ClosedPort { socket, port }
}

impl ClosedPort {
    /// Frees the port for a receiver started right after.
    pub fn release(self) -> u16 {
        drop(self.socket);
        self.port
    }
}

/// What one attempt of [`on_a_free_port`] found.
pub enum Start<T> {
    Started(T),
    /// The port was taken between [`free_port`] and the child's bind: try another.
    PortTaken(String),
    Failed(String),
}

/// Starts a child that binds a port it is given (PostgreSQL, NSD): `start` gets a
/// [`free_port`]; a parallel test's listener can take that port before the child binds it,
/// and then another port is tried (5 attempts).
pub fn on_a_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Start<T>) -> T {
    for attempt in 1..=5 {
        match start(free_port()) {
            Start::Started(t) => return t,
            Start::PortTaken(why) if attempt == 5 => panic!("{what} did not start: {why}"),
            Start::PortTaken(_) => {}
            Start::Failed(why) => panic!("{what} did not start: {why}"),
        }
    }
    unreachable!()
}

/// A port nothing listens on right now (for a receiver that starts at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
