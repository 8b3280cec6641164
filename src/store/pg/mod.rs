//! The PostgreSQL backend (`[store] backend = "postgres"`, SPEC §13; design: docs/cluster.md).
//!
//! Every method of the store API has its PostgreSQL form here; all SQL of Tanba lives under
//! this directory.
//!
//! The store API is synchronous; [`Pg::run`] runs a query future on this backend's own tokio
//! runtime and waits for it (inside `block_in_place` on a multi-thread tokio worker).

mod account;
mod alias;
pub(crate) mod blob;
mod check;
mod greylist;
pub(crate) mod import;
mod mailbox;
pub(crate) mod message;
pub(crate) mod notify;
pub(crate) mod queue;
pub(crate) mod schema;
mod tls;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;

use super::{Change, Result, StoreError};

/// `store.pool` when not set: connections per node (docs/cluster.md, "Pool size").
pub const DEFAULT_POOL: usize = 16;
/// The largest `store.pool`.
pub const MAX_POOL: usize = 1024;

/// Database errors of the "temporary" kind ([`is_transient`], a closed connection) seen by
/// this process. When it moved since a node last took a connection, that node drops its idle
/// pooled connections first ([`Pg::conn`]): after a failover or a fenced primary (read-only,
/// 25006) the next connections go through `store.url`'s host list to the primary
/// (`target_session_attrs=read-write`; docs/cluster.md, "Failover"). Checking each connection
/// before reuse instead costs a round trip per store call (measured: docs/benchmarks.md).
static TRANSIENT_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_transient() {
    TRANSIENT_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// tokio-postgres's keepalive idle time when the URL sets none.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(2 * 60 * 60);

/// Capacity of the change channel, as on sled: a receiver further behind is told it lagged
/// and re-reads.
const CHANGES: usize = 4096;

/// A handle to the database: a pool, the runtime its connections live on, and the changes
/// the node's LISTEN connection hears (`notify.rs`). Clone freely.
#[derive(Clone)]
pub(crate) struct Pg {
    pool: Pool,
    rt: std::sync::Arc<Rt>,
    changes: broadcast::Sender<Change>,
    /// [`TRANSIENT_ERRORS`] when this node last dropped its idle connections.
    seen_errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Whether the server's certificate is checked (sslmode verify-ca / verify-full): then a
    /// failed connection names store.ca_file too.
    verified: bool,
    /// The LISTEN task and its first outcome, built at connect and started by [`Pg::listen`]
    /// (by `tanba serve` only: a CLI command's short run needs no notifications).
    listener: std::sync::Arc<std::sync::Mutex<Option<Listener>>>,
}

/// [`notify::listen`]'s future, not yet running, and the receiver of its first outcome.
type Listener = (
    std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    tokio::sync::oneshot::Receiver<Result<()>>,
);

/// The backend's runtime, shut down without blocking when the last handle goes: a `Store` may
/// be dropped on an async worker (`tanba serve` refusing to start), where dropping a runtime
/// the ordinary way panics.
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives as long as Rt")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            // A failover or restart of the database (docs/cluster.md, "Failover"): temporary.
            if is_transient(db.code().code()) {
                count_transient();
                return StoreError::Unavailable(format!("database: {}", db.message()));
            }
            // 23505 unique_violation is mapped by the callers that expect it; this is the rest.
            return StoreError::Db(format!("database: {}", db.message()));
        }
        count_transient();
        if e.is_closed() {
            return StoreError::Unavailable("database connection closed".into());
        }
        StoreError::Unavailable(format!("database: {e}"))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StoreError::Unavailable(format!("database pool: {e}")),
        }
    }
}

/// SQLSTATEs of a database going away, restarting, still a standby or shedding load
/// (docs/cluster.md, "Failover"): class 08 (connection), 57P01-57P03 (shutdown, crash, not
/// accepting connections yet), 25006 (read-only: a standby), 40001/40P01 (serialization,
/// deadlock), 53300 (too many connections). The client may retry: a 4xx, a `NO [UNAVAILABLE]`.
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01" | "53300"
        )
}

/// Whether `e` is PostgreSQL's unique_violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Checks the shape of a `store.url` without connecting, and reads its client certificate and
/// key when it names them (`sslcert`, `sslkey`). The message never repeats the URL (it may hold
/// a password).
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    parse_url(url).map(|_| ())
}

/// Whether `store.url` asks for the server's certificate to be checked (`sslmode=verify-ca` or
/// `verify-full`), the only modes `store.ca_file` is used with. Assumes [`check_url`] passed.
pub fn url_verifies(url: &str) -> bool {
    tls::split_tls(url).is_ok_and(|t| t.mode.verifies())
}

/// The connection config of `url` (its `sslmode` applied), the TLS mode and the client
/// certificate (`sslcert`, `sslkey`), read and checked.
fn parse_url(
    url: &str,
) -> std::result::Result<
    (
        tokio_postgres::Config,
        tls::SslMode,
        Option<tls::ClientAuth>,
    ),
    String,
> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a URL like postgres://user@host:port/db".into());
    }
    let t = tls::split_tls(url)?;
    let mut cfg: tokio_postgres::Config = t
        .url
        .parse()
        .map_err(|_| "is not a valid PostgreSQL connection URL".to_string())?;
    if cfg.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    cfg.ssl_mode(t.mode.negotiate());
    let client = t.client.map(|c| c.load()).transpose()?;
    Ok((cfg, t.mode, client))
}

/// A connection failure as the operator should read it: which keys to look at, the server's
/// own message when it gave one.
pub(crate) fn connect_error(e: tokio_postgres::Error) -> StoreError {
    let why = match (e.as_db_error(), std::error::Error::source(&e)) {
        // pg_hba.conf's `cert` or `clientcert=`: say where the certificate is set.
        (Some(d), _) if d.code().code() == "28000" && d.message().contains("certificate") => {
            format!(
                "{} (the database wants a client certificate: sslcert and sslkey in store.url; \
                 with the cert method its CN must be the user name)",
                d.message()
            )
        }
        (Some(d), _) => d.message().to_string(),
        // "error performing TLS handshake" alone does not say what was wrong.
        (None, Some(src)) if !e.to_string().contains(&src.to_string()) => format!("{e}: {src}"),
        (None, _) => e.to_string(),
    };
    StoreError::Unavailable(format!("cannot connect to the database (store.url): {why}"))
}

impl Pg {
    /// [`Pg::connect_with`] the default pool size and the system's roots.
    pub(crate) fn connect(url: &str) -> Result<Pg> {
        Self::connect_with(url, DEFAULT_POOL, None)
    }

    /// Connects (one connection, to fail early with a clear message), creates or migrates the
    /// schema (`schema.rs`) and starts the node's LISTEN connection (`notify.rs`). `pool`:
    /// connections at most (`store.pool`); `ca_file`: the roots for sslmode verify-ca and
    /// verify-full (`store.ca_file`; None: the system's).
    pub(crate) fn connect_with(url: &str, pool: usize, ca_file: Option<&Path>) -> Result<Pg> {
        let (mut cfg, mode, client) =
            parse_url(url).map_err(|e| StoreError::Invalid(format!("store.url {e}")))?;
        // synchronous_commit = on for the whole session, in the startup packet: no round trip
        // per use (docs/cluster.md, "Durability"). Appended to the URL's own options.
        let options = match cfg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
            _ => "-c synchronous_commit=on".to_string(),
        };
        cfg.options(&options);
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        // Tanba's connections in pg_stat_activity, unless the URL names them.
        let named = cfg.get_application_name().is_some();
        if !named {
            cfg.application_name("tanba");
        }
        let mut listen_cfg = cfg.clone();
        if !named {
            listen_cfg.application_name("tanba-listen");
        }
        // The LISTEN connection is idle for long stretches: notice a silently dead peer (a
        // partition, a failover) within about a minute rather than the kernel's two hours,
        // unless the URL chose keepalives itself.
        if listen_cfg.get_keepalives() && listen_cfg.get_keepalives_idle() == DEFAULT_KEEPALIVE {
            listen_cfg.keepalives_idle(Duration::from_secs(30));
            if listen_cfg.get_keepalives_interval().is_none() {
                listen_cfg.keepalives_interval(Duration::from_secs(10));
            }
            if listen_cfg.get_keepalives_retries().is_none() {
                listen_cfg.keepalives_retries(3);
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tanba-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Db(format!("starting the database runtime: {e}")))?;
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let (changes, _) = broadcast::channel(CHANGES);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let listen_task: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
        let mgr = if mode == tls::SslMode::Disable {
            listen_task = Box::pin(notify::listen(
                listen_cfg,
                tokio_postgres::NoTls,
                changes.clone(),
                ready_tx,
            ));
            Manager::from_config(cfg, tokio_postgres::NoTls, mgr_config)
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                tls::client_config(mode, ca_file, client).map_err(StoreError::Invalid)?,
            );
            listen_task = Box::pin(notify::listen(
                listen_cfg,
                tls.clone(),
                changes.clone(),
                ready_tx,
            ));
            Manager::from_config(cfg, tls, mgr_config)
        };
        let pool = {
            let _g = rt.enter();
            Pool::builder(mgr)
                .max_size(pool.clamp(1, MAX_POOL))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Db(format!("database pool: {e}")))?
        };
        let pg = Pg {
            pool,
            rt: std::sync::Arc::new(Rt(Some(rt))),
            changes,
            seen_errors: Default::default(),
            verified: mode.verifies(),
            listener: std::sync::Arc::new(std::sync::Mutex::new(Some((listen_task, ready)))),
        };
        pg.run(|pg| async move {
            let mut c = pg.conn().await?;
            schema::migrate(&mut c).await
        })?;
        Ok(pg)
    }

    /// Starts this node's LISTEN connection (`notify.rs`) and waits until it listens, so that
    /// a server that is up hears every change. Once per handle; later calls return at once.
    pub(crate) fn listen(&self) -> Result<()> {
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((task, ready)) = taken else {
            return Ok(());
        };
        self.rt.get().spawn(task);
        self.run(|pg| async move {
            ready
                .await
                .unwrap_or_else(|_| Err(StoreError::Db("the LISTEN task stopped".into())))
                .map_err(|e| pg.name_ca_file(e))
        })
    }

    /// With a checked certificate, a connection failure names store.ca_file too.
    fn name_ca_file(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Unavailable(m) if self.verified => StoreError::Unavailable(format!(
                "{m} (TLS: the database's certificate must chain to store.ca_file, or to the \
                 system's roots when it is not set, and with sslmode=verify-full name the host \
                 of store.url)"
            )),
            e => e,
        }
    }

    /// A pooled connection. Each runs with `synchronous_commit = on` (docs/cluster.md,
    /// "Durability"), set once in its startup packet: COMMIT returns once the WAL is flushed,
    /// whatever the server-wide setting.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object> {
        use std::sync::atomic::Ordering::Relaxed;
        let errors = TRANSIENT_ERRORS.load(Relaxed);
        if self.seen_errors.swap(errors, Relaxed) != errors {
            self.pool.retain(|_, _| false);
        }
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self.name_ca_file(connect_error(e)),
            e => StoreError::Unavailable(format!("database pool: {e}")),
        })
    }

    /// Changes announced by any node (`notify.rs`), this one included.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Runs `f` on this backend's runtime and waits for its result.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Pg) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = f(self.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.get().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = || {
            rx.recv()
                .unwrap_or_else(|_| Err(StoreError::Db("database task stopped".into())))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The schema version recorded in the database.
    pub(crate) fn schema_version(&self) -> Result<i32> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            schema::current(&c).await
        })
    }

    /// A new id from the `ids` sequence (accounts, mailboxes, blobs, queue entries).
    pub(crate) async fn next_id(c: &impl deadpool_postgres::GenericClient) -> Result<u64> {
        let row = c.query_one("SELECT nextval('ids')", &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
