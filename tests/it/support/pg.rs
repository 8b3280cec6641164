//! A throw-away PostgreSQL for the store-backend tests (docs/cluster.md, "Tests"): Debian's
//! `postgresql` binaries (`initdb`, `pg_ctl`), a cluster in a temp dir listening on a free
//! loopback port and on a unix socket inside the temp dir, `fsync=on`. initdb refuses to run as
//! root, so as root the cluster belongs to `nobody` (`runuser`). Stopped when dropped.
//!
//! [`shared`] is the one cluster of the whole test process (`TANBA_TEST_BACKEND=postgres` and the
//! two-node tests): started on first use, stopped by a watchdog when the process ends in any way
//! (even SIGKILL), since a `static` is never dropped. [`fresh_db`] gives each server a database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    as_nobody: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql package (scripts/test.sh installs it)")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb")
        .1
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// How to start a [`Postgres`] beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// TLS: the server's certificate chain and key (PEM), copied into the cluster's dir.
    pub ssl: Option<(PathBuf, PathBuf)>,
    /// More settings, each `name=value` (passed as `-c name=value`).
    pub settings: Vec<String>,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(Options::default())
    }

    pub fn start_with(o: Options) -> Postgres {
        let pg = Postgres::empty();
        let data = pg.data();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "tanba",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        assert!(out.status.success(), "initdb: {}", show(&out));
        pg.listen_with(o)
    }

    /// A temp dir for a cluster (owned by `nobody` as root); no cluster yet.
    fn empty() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let as_nobody = is_root();
        if as_nobody {
            let st = Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the PostgreSQL temp dir");
        }
        Postgres {
            port: 0,
            bin: bin_dir(),
            as_nobody,
            dir,
        }
    }

    /// Starts the cluster in `data()` on a free loopback port.
    fn listen(self) -> Postgres {
        self.listen_with(Options::default())
    }

    /// [`Postgres::listen`] with TLS and more settings.
    fn listen_with(mut self, o: Options) -> Postgres {
        let as_nobody = self.as_nobody;
        let pg = &mut self;
        let data = pg.data();
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on",
            pg.dir.path().display()
        );
        if let Some((cert, key)) = &o.ssl {
            // The server refuses a key others can read; as root it runs as nobody.
            let (c, k) = (
                pg.dir.path().join("server.crt"),
                pg.dir.path().join("server.key"),
            );
            std::fs::copy(cert, &c).unwrap();
            std::fs::copy(key, &k).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_nobody {
                let st = Command::new("chown")
                    .args(["nobody:nogroup"])
                    .args([&c, &k])
                    .status()
                    .unwrap();
                assert!(st.success(), "chown of the PostgreSQL TLS files");
            }
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            ));
        }
        for s in &o.settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let log = pg.dir.path().join("postgres.log");
        pg.port = super::on_a_free_port("PostgreSQL", |port| {
            let out = pg.run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!("{opts} -p {port}"),
                    "start",
                ],
            );
            if out.status.success() {
                return super::Start::Started(port);
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let why = format!("pg_ctl start: {}\n{text}", show(&out));
            if text.contains("could not bind") {
                super::Start::PortTaken(why)
            } else {
                super::Start::Failed(why)
            }
        });
        self
    }

    /// A streaming replica of this cluster (docs/cluster.md, "Two nodes"): `pg_basebackup -R`
    /// through a replication slot, started on its own port as a hot standby. Call
    /// [`Postgres::require_sync_standby`] to make this cluster's COMMITs wait for it.
    pub fn replica(&self) -> Postgres {
        let r = Postgres::empty();
        let data = r.data();
        let port = self.port.to_string();
        let out = r.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "tanba",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-c",
                "fast",
                "-X",
                "stream",
                "-C",
                "-S",
                "tanba_replica",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", show(&out));
        r.listen()
    }

    /// Makes every COMMIT on this cluster wait until a standby has flushed it
    /// (`synchronous_standby_names = '*'`, set after the base backup so that the replica does
    /// not inherit it), and waits until a standby streams in sync.
    pub fn require_sync_standby(&self) {
        self.query(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        );
        self.query("postgres", "SELECT pg_reload_conf()");
        for _ in 0..600 {
            let state = self.query(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            );
            if state == "1" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no synchronous standby after 60 s");
    }

    /// Stops this cluster the way a crash does (`pg_ctl stop -m immediate`: no checkpoint,
    /// connections cut).
    pub fn crash(&self) {
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", show(&out));
    }

    /// Promotes this standby to primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-w", "-t", "60", "promote"],
        );
        assert!(out.status.success(), "pg_ctl promote: {}", show(&out));
    }

    /// A URL naming this cluster and then `other`, for database `db`, that connects to the one
    /// accepting writes (`target_session_attrs=read-write`, tried in order).
    pub fn failover_url(&self, other: &Postgres, db: &str) -> String {
        format!(
            "postgres://tanba@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
            self.port, other.port
        )
    }

    /// The server's log (`log_statement=all` etc. go there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path());
        cmd.output().unwrap()
    }

    /// A URL for database `db` (created by [`Postgres::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://tanba@127.0.0.1:{}/{db}", self.port)
    }

    pub fn create_db(&self, db: &str) {
        let out = self.psql("postgres", &format!("CREATE DATABASE {db}"));
        assert!(out.status.success(), "createdb: {}", show(&out));
    }

    /// Runs `sql` with psql (unaligned, tuples only) and returns the output.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        let psql = self.bin.join("psql");
        let psql = if psql.is_file() {
            psql
        } else {
            Path::new("psql").to_path_buf()
        };
        Command::new(psql)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "tanba",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap()
    }

    /// A psql session on database `db` that runs what is written to its stdin (to hold a lock
    /// or a transaction open while a test goes on); it ends when its stdin is closed.
    pub fn session(&self, db: &str) -> std::process::Child {
        let psql = self.bin.join("psql");
        Command::new(psql)
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "tanba", "-d", db])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The trimmed output of a query that must succeed.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(out.status.success(), "psql {sql}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The cluster shared by the whole test process, started on first use. Its temp dir and its
/// processes outlive every test; a watchdog (`sh`, in a process group of its own so that a ^C to
/// the test run reaches it only through the pipe) waits for EOF on a pipe whose only writer is this
/// process, then stops the cluster (`pg_ctl stop -m immediate`) and removes the dir: so a test
/// process that exits, panics or is killed (-9) leaves no postgres running.
pub fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Several servers per test and two test threads, each server a pool of 16 + LISTEN.
        let pg = Postgres::start_with(Options {
            settings: [
                "max_connections=400",
                "shared_buffers=32MB",
                "max_wal_size=256MB",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        });
        let data = pg.data();
        let pg_ctl = pg.bin.join("pg_ctl");
        let stop = format!(
            "{} '{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            if pg.as_nobody {
                "runuser -u nobody --"
            } else {
                ""
            },
            pg_ctl.display(),
            data.display()
        );
        let script = format!(
            "cat >/dev/null; {stop}; rm -rf '{}'",
            pg.dir.path().display()
        );
        use std::os::unix::process::CommandExt;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("the shared PostgreSQL's watchdog (sh)");
        // Never written to, never closed by us: the OS closes it when this process ends. (Rust
        // opens pipes close-on-exec, so no child of the tests holds it.)
        std::mem::forget(watchdog.stdin.take());
        std::mem::forget(watchdog);
        pg
    })
}

/// A new, empty database `t_<n>` on the [`shared`] cluster; returns its name and URL.
pub fn fresh_db() -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let pg = shared();
    let name = format!("t_{}", N.fetch_add(1, Ordering::Relaxed));
    pg.create_db(&name);
    let url = pg.url(&name);
    (name, url)
}

/// Drops a database of [`fresh_db`] (its server stopped or killed first), so that a whole run
/// does not keep hundreds of databases on disk.
pub fn drop_db(name: &str) {
    let _ = shared().psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn show(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The base test config in `dir` (with its `trust` dir) with `extra` lines per section (as
/// [`super::TestServer::start_with`] takes them) and `[store]` on PostgreSQL at `url`.
pub fn server_toml(dir: &Path, url: &str, extra: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    let mut toml = super::base_toml(dir);
    for (section, line) in extra {
        let marker = format!("#{}", section.to_uppercase());
        toml = toml.replace(&marker, &format!("{line}\n{marker}"));
    }
    toml.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ));
    toml
}
