//! The PostgreSQL backend (`[store] backend = "postgres"`, SPEC §13; design: docs/cluster.md).
//!
//! Work in progress: accounts and mailboxes so far, enough for `tanba store migrate --to URL`
//! to copy them; `Store::open_backend` refuses everything else with a clear error. All SQL of
//! Tanba lives under this directory.
//!
//! The store API is synchronous; [`Pg::run`] runs a query future on this backend's own tokio
//! runtime and waits for it (inside `block_in_place` on a multi-thread tokio worker).

mod account;
mod alias;
pub(crate) mod blob;
mod greylist;
mod mailbox;
pub(crate) mod notify;
pub(crate) mod queue;
pub(crate) mod schema;

use std::future::Future;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{Result, StoreError};

/// Connections per node (docs/cluster.md, "Status and next steps": pool sizing to document).
const POOL_SIZE: usize = 16;

/// A handle to the database: a pool and the runtime its connections live on. Clone freely.
#[derive(Clone)]
pub(crate) struct Pg {
    pool: Pool,
    rt: std::sync::Arc<Rt>,
}

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
            // 23505 unique_violation is mapped by the callers that expect it; this is the rest.
            return StoreError::Db(format!("database: {}", db.message()));
        }
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

/// Whether `e` is PostgreSQL's unique_violation (SQLSTATE 23505).
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Checks the shape of a `store.url` without connecting. The message never repeats the URL
/// (it may hold a password).
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a URL like postgres://user@host:port/db".into());
    }
    let cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|_| "is not a valid PostgreSQL connection URL".to_string())?;
    if cfg.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err("sslmode=require is not supported yet (docs/cluster.md)".into());
    }
    Ok(())
}

impl Pg {
    /// Connects (one connection, to fail early with a clear message) and creates or migrates
    /// the schema (`schema.rs`).
    pub(crate) fn connect(url: &str) -> Result<Pg> {
        check_url(url).map_err(|e| StoreError::Invalid(format!("store.url {e}")))?;
        let cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::Invalid("store.url is not a valid URL".into()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tanba-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Db(format!("starting the database runtime: {e}")))?;
        let mgr = Manager::from_config(
            cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _g = rt.enter();
            Pool::builder(mgr)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Db(format!("database pool: {e}")))?
        };
        let pg = Pg {
            pool,
            rt: std::sync::Arc::new(Rt(Some(rt))),
        };
        pg.run(|pg| async move {
            let mut c = pg.conn().await?;
            schema::migrate(&mut c).await
        })?;
        Ok(pg)
    }

    /// A pooled connection with `synchronous_commit = on` (docs/cluster.md, "Durability"):
    /// COMMIT returns once the WAL is flushed, whatever the server-wide setting.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object> {
        let c = self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Unavailable(format!(
                "cannot connect to the database (store.url): {}",
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            )),
            e => StoreError::Unavailable(format!("database pool: {e}")),
        })?;
        c.batch_execute("SET synchronous_commit TO on").await?;
        Ok(c)
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
