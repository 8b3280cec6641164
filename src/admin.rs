//! The admin channel: user, queue and export commands, executed either directly on the store
//! (server stopped) or by the running server over a Unix socket in `data_dir` (mode 0600),
//! because sled admits one process.
//!
//! Wire format: the client sends one JSON [`Request`] line; the server answers one JSON
//! [`Response`] line, followed, for `Export`, by the raw mboxrd bytes until EOF.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::server::{App, Live};
use crate::shutdown::Shutdown;
use crate::store::{self, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    UserAdd {
        email: String,
        password: String,
    },
    UserPasswd {
        email: String,
        password: String,
    },
    UserDel {
        email: String,
    },
    UserList,
    /// `tanba user quota EMAIL [SIZE|none]`: shows (`set` false) or sets the STORAGE limit.
    UserQuota {
        email: String,
        set: bool,
        limit_kib: Option<u64>,
    },
    Export {
        email: String,
        mailbox: Option<String>,
    },
    QueueList,
    QueueRetry {
        id: u64,
    },
    QueueDrop {
        id: u64,
        silent: bool,
    },
    AliasAdd {
        address: String,
        targets: Vec<String>,
    },
    AliasDel {
        address: String,
    },
    AliasList,
    /// `tanba store check` while the server runs: problems in `data.problems`.
    StoreCheck,
    /// `tanba backup DIR` while the server runs (DIR absolute): the manifest in `data`.
    Backup {
        dir: std::path::PathBuf,
    },
    /// `tanba import`: followed on the socket by message frames (`crate::import`); only over
    /// the socket.
    Import {
        email: String,
        stamp: bool,
        dedup: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Human text to print (stdout on success, stderr on failure).
    pub text: String,
    /// Machine data (e.g. the queue as JSON), if any.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    fn ok(text: impl Into<String>) -> Self {
        Response {
            ok: true,
            text: text.into(),
            data: serde_json::Value::Null,
        }
    }
}

/// Executes a request against an open store. `Export` writes the mbox to `out`. New passwords
/// are hashed in this thread.
pub fn execute(
    store: &Store,
    config: &Config,
    req: &Request,
    out: &mut dyn Write,
) -> Result<Response> {
    execute_with(store, config, req, out, &|p| {
        Ok(store::account::hash_password(p)?)
    })
}

/// [`execute`] with the password hashing function to use (the running server's worker pool).
pub fn execute_with(
    store: &Store,
    config: &Config,
    req: &Request,
    out: &mut dyn Write,
    hash_password: &dyn Fn(&str) -> Result<String>,
) -> Result<Response> {
    match req {
        Request::UserAdd { email, password } => {
            let email = store::account::normalize_email(email)?;
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            if !config.is_local_domain(domain) {
                bail!(
                    "{domain} is not a local domain: add it to server.domains first ({})",
                    config.domains.join(", ")
                );
            }
            check_password(password, config)?;
            let hash = hash_password(password)?;
            let a = store.create_account(&email, &hash)?;
            // `limits.default_quota`: the new account's storage limit.
            if let Some(kib) = config.limits.default_quota_kib {
                store.set_quota_limit(&a.email, Some(kib))?;
            }
            store.flush_sync()?;
            Ok(Response::ok(format!(
                "created {} with INBOX, Drafts, Sent, Trash, Junk, Archive",
                a.email
            )))
        }
        Request::UserPasswd { email, password } => {
            check_password(password, config)?;
            let hash = hash_password(password)?;
            store.set_password(email, &hash)?;
            store.flush_sync()?;
            Ok(Response::ok(format!(
                "password changed for {}",
                email.to_ascii_lowercase()
            )))
        }
        Request::UserDel { email } => {
            let a = store.delete_account(email)?;
            store.flush_sync()?;
            Ok(Response::ok(format!("deleted {} and its mail", a.email)))
        }
        Request::UserList => {
            let mut text = String::new();
            for a in store.accounts()? {
                let mut count = 0u64;
                let mut bytes = 0u64;
                for m in store.mailboxes(a.id)? {
                    count += m.messages as u64;
                    bytes += store.messages(m.id)?.iter().map(|x| x.size).sum::<u64>();
                }
                text.push_str(&format!("{}\t{count} messages\t{bytes} bytes\n", a.email));
            }
            Ok(Response::ok(text))
        }
        Request::UserQuota {
            email,
            set,
            limit_kib,
        } => {
            let email = email.trim().to_ascii_lowercase();
            let q = if *set {
                let q = store.set_quota_limit(&email, *limit_kib)?;
                store.flush_sync()?;
                q
            } else {
                let Some(a) = store.account(&email)? else {
                    bail!("account {email} not found");
                };
                store.quota(a.id)?
            };
            let limit = match q.limit_kib {
                Some(l) => format!("{l} KiB"),
                None => "none".into(),
            };
            let mut r = Response::ok(format!(
                "{email}\tquota {limit}\tused {} KiB ({} bytes) in {} messages",
                q.used_kib(),
                q.bytes,
                q.messages
            ));
            r.data = serde_json::to_value(&q).unwrap_or_default();
            Ok(r)
        }
        Request::Export { email, mailbox } => {
            let Some(a) = store.account(email)? else {
                bail!("no account {email}")
            };
            let boxes = match mailbox {
                Some(name) => vec![store
                    .mailbox(a.id, name)?
                    .ok_or_else(|| anyhow!("{email} has no mailbox {name}"))?],
                None => store.mailboxes(a.id)?,
            };
            let mut n = 0;
            for m in boxes {
                for meta in store.messages(m.id)? {
                    let Some(blob) = store.blob(meta.blob_id)? else {
                        continue;
                    };
                    write_mboxrd(out, &a.email, meta.internal_date, &blob)?;
                    n += 1;
                }
            }
            Ok(Response::ok(format!("{n} messages exported")))
        }
        Request::QueueList | Request::QueueRetry { .. } | Request::QueueDrop { .. } => {
            crate::delivery::admin(store, config, req)
        }
        Request::AliasAdd { address, targets } => alias_add(store, config, address, targets),
        Request::AliasDel { address } => {
            let a = store.delete_alias(address)?;
            store.flush_sync()?;
            Ok(Response::ok(format!("deleted alias {}", a.address)))
        }
        Request::AliasList => {
            let mut text = String::new();
            let aliases = store.aliases()?;
            for a in &aliases {
                text.push_str(&format!("{}\t{}\n", a.address, a.targets.join(" ")));
            }
            if aliases.is_empty() {
                text.push_str("no aliases\n");
            }
            let mut r = Response::ok(text);
            r.data = serde_json::json!(aliases
                .iter()
                .map(|a| serde_json::json!({"address": a.address, "targets": a.targets}))
                .collect::<Vec<_>>());
            Ok(r)
        }
        Request::StoreCheck => {
            // Through the server: body files without a record are not listed, since a delivery
            // in progress writes its file before its record (store/check.rs).
            let problems = store.check(false)?;
            Ok(Response {
                ok: true,
                text: String::new(),
                data: serde_json::json!({ "problems": problems }),
            })
        }
        Request::Backup { dir } => {
            let b = store.backup(dir)?;
            Ok(Response {
                ok: true,
                text: format!("{} body files linked, {} copied", b.linked, b.copied),
                data: serde_json::to_value(&b.manifest)?,
            })
        }
        Request::Import { .. } => bail!("import runs through cli::import"),
    }
}

/// `tanba alias add ADDRESS TARGET…` (docs/operations.md, "Aliases"): adds the targets to the
/// alias (creating it), after checking that the source is in a local domain, that every local
/// target resolves, and that the result makes no loop.
fn alias_add(
    store: &Store,
    config: &Config,
    address: &str,
    targets: &[String],
) -> Result<Response> {
    use store::alias::{self, Alias, Resolution, Rules};
    let address = alias::normalize_source(address)?;
    let domain_wide = address.starts_with('@');
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !config.is_local_domain(domain) {
        bail!(
            "{domain} is not a local domain: aliases are for addresses in server.domains ({})",
            config.domains.join(", ")
        );
    }
    if targets.is_empty() {
        bail!("no target given");
    }
    let mut new = Vec::new();
    for t in targets {
        let t = alias::normalize_source(t)?;
        if t.starts_with('@') && !domain_wide {
            bail!("{t}: a domain (@domain) can only be the target of a domain (@domain)");
        }
        if !new.contains(&t) {
            new.push(t);
        }
    }
    let mut entry = store.alias(&address)?.unwrap_or(Alias {
        address: address.clone(),
        targets: Vec::new(),
    });
    for t in new {
        if !entry.targets.contains(&t) {
            entry.targets.push(t);
        }
    }
    if entry.targets.len() > alias::MAX_TARGETS {
        bail!("an alias has at most {} targets", alias::MAX_TARGETS);
    }
    let domains = entry.targets.iter().filter(|t| t.starts_with('@')).count();
    if domains > 0 && (domains > 1 || entry.targets.len() > 1) {
        bail!(
            "{address} would have targets {}: a domain alias (@old → @new) has exactly one \
             target; a catch-all (@domain → addresses) has no @domain target",
            entry.targets.join(" ")
        );
    }
    let rules = Rules {
        domains: &config.domains,
        postmaster: config.postmaster.as_deref(),
        own_only: false,
    };
    // The source itself, through the new entry: catches cycles that run through domain
    // aliases, catch-alls or sub-addresses. For `@domain`, an address no rule but the new
    // entry matches stands for the whole domain.
    let probe = if domain_wide {
        format!("tanba-alias-check{address}")
    } else {
        address.clone()
    };
    if let Resolution::Loop(path) = store.resolve(&probe, rules, Some(&entry))? {
        bail!("refused: this alias would make a loop: {path}");
    }
    // Every target must exist, and nothing may loop (checked with the new entry in place).
    // (A domain alias's target domain is checked through the source probe below.)
    for probe in entry.targets.iter().filter(|t| !t.starts_with('@')) {
        match store.resolve(probe, rules, Some(&entry))? {
            Resolution::Found(_) => {}
            Resolution::Loop(path) => bail!("refused: this alias would make a loop: {path}"),
            Resolution::Unknown | Resolution::NoPostmaster => {
                bail!("{probe} is neither an account nor an alias: add it first")
            }
        }
    }
    store.put_alias(&entry)?;
    store.flush_sync()?;
    Ok(Response::ok(format!(
        "{address} → {}",
        entry.targets.join(" ")
    )))
}

fn check_password(p: &str, config: &Config) -> Result<()> {
    if p.is_empty() {
        bail!("the password is empty");
    }
    if p.contains(['\r', '\n', '\0']) {
        bail!("the password contains a line break or NUL");
    }
    let min = config.limits.min_password_length;
    let len = p.chars().count();
    if len < min {
        bail!(
            "the password is too short: {len} characters, at least {min} are needed \
             (limits.min_password_length)"
        );
    }
    Ok(())
}

/// One message in mboxrd format: a `From ` line, `>`-quoting of `From ` lines (adding one `>` to
/// any `>*From ` line), LF line ends, a blank line after.
pub fn write_mboxrd(
    out: &mut dyn Write,
    sender: &str,
    date: i64,
    raw: &[u8],
) -> std::io::Result<()> {
    let when = chrono::DateTime::from_timestamp(date, 0)
        .unwrap_or_default()
        .format("%a %b %e %H:%M:%S %Y");
    writeln!(out, "From {sender} {when}")?;
    // The line end of the last line is the one written below, not the start of another line
    // (else every message would gain a blank line on the way through `tanba import mbox`).
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let unquoted = line
            .iter()
            .position(|&b| b != b'>')
            .map(|i| &line[i..])
            .unwrap_or(&[]);
        if unquoted.starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")?;
    Ok(())
}

// ---- server side ----

/// Binds the admin socket (mode 0600). A stale socket from a crashed server is replaced; a live
/// one means another server runs on this data_dir.
pub fn bind(config: &Config) -> Result<UnixListener> {
    let path = config.admin_socket();
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!(
                "another tanba server is already running on {}",
                config.data_dir.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Restrictive umask while binding so the socket is never world-accessible, even briefly.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(&path);
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("binding admin socket {}", path.display()))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, live: Arc<Live>, mut shutdown: Shutdown) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.stopping() => return,
        };
        let Ok((stream, _)) = conn else { continue };
        // The configuration current now (`server.domains` for `user add`, after a reload too).
        let app = live.app();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _sd = sd;
            if let Err(e) = handle(stream, app).await {
                tracing::warn!("admin connection: {e:#}");
            }
        });
    }
}

async fn handle(stream: UnixStream, app: Arc<App>) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r);
    (&mut r).take(1 << 20).read_line(&mut line).await?;
    let req: Request = serde_json::from_str(&line).context("bad admin request")?;
    if let Request::Import {
        email,
        stamp,
        dedup,
    } = &req
    {
        return crate::import::serve_stream(r, w, app, email, *stamp, *dedup).await;
    }
    let pool = app.clone();
    let (mut resp, body, changed) = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        // `user del` and `user passwd` end the account's live sessions (SPEC §8): its id, looked
        // up before the change (a deleted account has none afterwards).
        let changed = match &req {
            Request::UserDel { email } | Request::UserPasswd { email, .. } => {
                pool.store.account(email).ok().flatten().map(|a| a.id)
            }
            _ => None,
        };
        // New passwords are hashed on the server's argon2 workers (bounded memory).
        let hash = |p: &str| pool.auth.hasher().hash_blocking(p.to_string());
        let resp = match execute_with(&pool.store, &pool.config, &req, &mut body, &hash) {
            Ok(r) => r,
            Err(e) => Response {
                ok: false,
                text: format!("{e:#}"),
                data: serde_json::Value::Null,
            },
        };
        let changed = changed.filter(|_| resp.ok);
        (resp, body, changed)
    })
    .await?;
    if let Some(id) = changed {
        // After the store changed: a session that ends now cannot write for a deleted account
        // any more (the store refuses), and a new login needs the new password.
        let n = app.conns.end_sessions(id);
        if n > 0 {
            tracing::info!("admin: ended {n} live sessions of account {id}");
            resp.text.push_str(&format!("\nended {n} live sessions"));
        }
        // And its sessions on the self-service page (`src/http/account.rs`).
        let pages = crate::http::account::end_account_sessions(id, None);
        if pages > 0 {
            tracing::info!("admin: ended {pages} account page sessions of account {id}");
        }
    }
    if matches!(resp.data.get("wake"), Some(serde_json::Value::Bool(true))) {
        app.queue_wakeup.notify_one();
    }
    let mut head = serde_json::to_vec(&resp)?;
    head.push(b'\n');
    w.write_all(&head).await?;
    w.write_all(&body).await?;
    w.shutdown().await?;
    Ok(())
}

// ---- client side ----

/// Runs a request: through the running server if its socket answers, else on the store directly.
/// Export bytes go to `out`.
pub fn run(config: &Config, req: &Request, out: &mut dyn Write) -> Result<Response> {
    let path = config.admin_socket();
    if let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) {
        return via_socket(stream, req, out);
    }
    let store = open_store(config)?;
    let resp = execute(&store, config, req, out)?;
    store.flush_sync()?;
    Ok(resp)
}

/// Opens the store for an admin command with the server stopped; never creates one (SPEC §9).
pub fn open_store(config: &Config) -> Result<Store> {
    let dir = config.data_dir.join("store");
    if config.store != store::Backend::Embedded {
        // Refuses with what is missing (docs/cluster.md); creates or migrates the schema.
        return Ok(Store::open_backend(&config.store, &dir)?);
    }
    let store = match Store::open_existing(&dir) {
        Err(store::StoreError::NotFound(_)) => bail!(
            "no store in {} (server.data_dir of {}): admin commands never create one. Is this \
             the config `tanba serve` uses? (--config, else TANBA_CONFIG, else \
             /etc/tanba/tanba.toml, else the built-in defaults)",
            dir.display(),
            match &config.path {
                Some(p) => p.display().to_string(),
                None => "the built-in defaults".into(),
            }
        ),
        r => r?,
    };
    Ok(store)
}

fn via_socket(
    mut stream: std::os::unix::net::UnixStream,
    req: &Request,
    out: &mut dyn Write,
) -> Result<Response> {
    use std::io::{BufRead, Read};
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut r = std::io::BufReader::new(stream);
    let mut head = String::new();
    r.read_line(&mut head)?;
    let resp: Response =
        serde_json::from_str(&head).context("bad answer from the server's admin socket")?;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    Ok(resp)
}

/// Whether a server is running on this data dir (its admin socket answers).
pub fn server_running(config: &Config) -> bool {
    let p: &Path = &config.admin_socket();
    std::os::unix::net::UnixStream::connect(p).is_ok()
}

/// `tanba user quota` SIZE: `none` (unlimited), bytes, or a number with a unit K, M, G or T
/// (powers of 1024; `KB`, `KiB`, ... also accepted), as KiB rounded up (RFC 9208's unit).
pub fn parse_quota_size(s: &str) -> Result<Option<u64>> {
    crate::store::quota::parse_limit(s).map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod quota_size_tests {
    #[test]
    fn sizes() {
        use super::parse_quota_size as p;
        assert_eq!(p("none").unwrap(), None);
        assert_eq!(p("500M").unwrap(), Some(500 * 1024));
        assert_eq!(p("2GiB").unwrap(), Some(2 * 1024 * 1024));
        assert_eq!(p("1k").unwrap(), Some(1));
        assert_eq!(p("1000").unwrap(), Some(1));
        assert_eq!(p("0").unwrap(), Some(0));
        assert!(p("5X").is_err());
        assert!(p("").is_err());
        assert!(p("99999999999T").is_err());
    }
}
