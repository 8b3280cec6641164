//! Shared set-up for the fuzz targets: configurations, a filter with the test trust anchors, and
//! (for the session targets) a whole `App` over a store in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tanba::config::Config;
use tanba::filter::Filter;
use tanba::server::App;
use tanba::store::account::hash_password;

/// The repository root (the fuzz crate lives in `<root>/fuzz`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

/// A fixed validation time inside the test certificates' validity (2023-06-01T00:00:00Z), so
/// that runs are reproducible.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_685_577_600)
}

/// A configuration over `dir` (data under `dir/data`, trust anchors in `trust_dir`).
pub fn config(dir: &Path, trust_dir: &Path) -> Config {
    let toml = format!(
        r#"[server]
hostname = "mail.example.test"
domains = ["example.test"]
data_dir = "{d}/data"

[smtp]
mx = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
max_message_size = 1048576
idle_timeout = "20s"

[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
max_literal_size = 1048576
idle_timeout = "20s"

[signatures]
trust_dir = "{t}"
keywords = true
subject_tag = true

# No MX message rate: every fuzzed session comes from one address, and after 60 MAILs a minute
# the rest of the MX state machine would only ever see 451.
[limits]
mx_messages_per_ip = 0

# Sender checks off: on by default (SPEC §10), they would send DNS queries for every fuzzed MX
# message to the system resolver, off loopback (the sender_records target fuzzes their parsers).
[auth]
spf = false
dkim = false
dmarc = false
arc = false
"#,
        d = dir.display(),
        t = trust_dir.display()
    );
    Config::from_toml(&toml, None).expect("fuzz config")
}

/// Where temporary state goes: tmpfs when there is one (the store syncs on every commit).
fn temp_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// The filter with the NCA RK test anchors of `tests/data/nca/ca` as its trust store, so that
/// chain building and revocation code are reached, not only parsing.
pub fn filter_with_test_anchors() -> &'static Filter {
    static F: OnceLock<Filter> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir_in(temp_base()).expect("tempdir");
        let trust = repo_root().join("tests/data/nca/ca");
        let cfg = config(dir.path(), &trust);
        Filter::new(&cfg).expect("filter")
    })
}

/// The filter as a fresh server has it: an empty trust directory.
pub fn filter_empty_trust() -> &'static Filter {
    static F: OnceLock<Filter> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir_in(temp_base()).expect("tempdir");
        let trust = dir.path().join("trust");
        std::fs::create_dir_all(&trust).expect("trust dir");
        let cfg = config(dir.path(), &trust);
        Filter::new(&cfg).expect("filter")
    })
}

/// The account the session targets use.
pub const USER: &str = "user@example.test";

/// A whole server state (`App`: config, store, filter, TLS) in a temporary directory, with one
/// account. Rebuilt every [`App::REBUILD_EVERY`] uses so that the store does not grow without
/// bound over a long run.
pub struct Fixture {
    pub app: Arc<App>,
    pub account: tanba::store::Account,
    _dir: tempfile::TempDir,
    uses: u64,
}

/// Messages in every fixture's INBOX.
pub const SAMPLE_MESSAGES: &[&[u8]] = &[
    b"From: =?UTF-8?B?0JDQu9C40Y8=?= <a@example.test>\r\nTo: user@example.test\r\n\
Subject: =?utf-8?q?hello_=D0=BC=D0=B8=D1=80?=\r\nDate: Thu, 01 Jun 2023 10:00:00 +0000\r\n\
Message-ID: <1@example.test>\r\n\r\nplain body\r\n",
    b"From: b@example.test\r\nTo: user@example.test\r\nSubject: multipart\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ntext part\r\n\
--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n\
--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename*=utf-8''%D0%B0.bin\r\n\r\n\
AAECAwQ=\r\n--b1--\r\n",
];

const REBUILD_EVERY: u64 = 2000;

fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password("fuzz-password").expect("hash"))
}

impl Fixture {
    fn build() -> Fixture {
        let dir = tempfile::tempdir_in(temp_base()).expect("tempdir");
        let trust = dir.path().join("trust");
        std::fs::create_dir_all(&trust).expect("trust dir");
        let cfg = config(dir.path(), &trust);
        let app = tanba::server::build_app(cfg).expect("app");
        let account = app
            .store
            .create_account(USER, password_hash())
            .expect("account");
        // Something for FETCH, SEARCH and the MIME/envelope parsers to work on.
        let inbox = app
            .store
            .mailbox(account.id, "INBOX")
            .expect("mailbox")
            .expect("INBOX");
        for m in SAMPLE_MESSAGES {
            app.store
                .append(inbox.id, m, &["\\Seen".to_string()], 1_685_577_600)
                .expect("append");
        }
        Fixture {
            app,
            account,
            _dir: dir,
            uses: 0,
        }
    }

    /// The shared fixture, rebuilt now and then.
    pub fn get() -> (Arc<App>, tanba::store::Account) {
        static F: OnceLock<Mutex<Option<Fixture>>> = OnceLock::new();
        let m = F.get_or_init(|| Mutex::new(None));
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let rebuild = g.as_ref().is_none_or(|f| f.uses >= REBUILD_EVERY);
        if rebuild {
            // Drop the old one (and its directory) before building the next.
            *g = None;
            *g = Some(Fixture::build());
        }
        let f = g.as_mut().expect("fixture");
        f.uses += 1;
        (f.app.clone(), f.account.clone())
    }
}

/// One current-thread runtime for the whole run.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

thread_local! {
    /// Never told to stop: sessions see a server that is up for the whole run.
    static COORDINATOR: tanba::shutdown::Coordinator = tanba::shutdown::Coordinator::new();
}

/// A shutdown handle that never fires.
pub fn shutdown() -> tanba::shutdown::Shutdown {
    COORDINATOR.with(|c| c.handle())
}

/// The client side of an in-memory or loopback session: writes `input` (then closes its
/// writing half) while reading everything the server sends, until the server closes. Returns
/// what the server sent.
pub async fn client<S>(stream: S, input: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(stream);
    let write = async {
        let _ = wr.write_all(input).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Keep the start only: enough to look at, bounded in memory.
                    let room = (1usize << 20).saturating_sub(out.len());
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        out
    };
    let ((), out) = tokio::join!(write, read);
    out
}

/// Lets panics that the server itself catches stay caught. libFuzzer's panic hook aborts on
/// every panic, even one inside `catch_unwind`; but the filter (`find::find`,
/// `Filter::process_report`) and SEARCH deliberately catch panics from mail-parser (its debug
/// assertions fire on some malformed input in builds with debug assertions, as fuzz builds are).
/// With the standard hook back, such a panic is printed and handled as in the server, while a
/// panic that reaches the fuzz target still aborts (libfuzzer-sys checks for it) and counts as
/// a crash.
pub fn tolerate_caught_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Drops libFuzzer's aborting hook; the standard one is installed again.
        drop(std::panic::take_hook());
    });
}
