//! Mailbox changes across nodes (docs/cluster.md, "Changes across nodes: LISTEN/NOTIFY").
//!
//! Sending: [`changed`] inside the changing transaction. Receiving: [`listen`], one connection
//! per node outside the pool that runs `LISTEN tanba_change` and forwards each notification to
//! the node's broadcast channel ([`Pg::subscribe`](super::Pg::subscribe)). When that connection
//! is lost it reconnects with backoff and then broadcasts [`Change::resync`]: notifications sent
//! meanwhile are lost, so every session re-reads its mailbox.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

use super::super::{Change, Result, StoreError};

/// The channel every node LISTENs on.
pub(crate) const CHANNEL: &str = "tanba_change";

/// The longest payload [`parse`] looks at: two u64 in decimal and the colon.
const MAX_PAYLOAD: usize = 20 + 1 + 20;

/// Reconnection backoff of the listener: from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Announces a change of `mailbox_id` (of `account_id`) to every node, including this one:
/// called inside the changing transaction, so it is delivered only if, and after, it commits.
/// Payload: `<account_id>:<mailbox_id>` in decimal.
#[allow(dead_code)] // called by the message writes (docs/cluster.md, "Status and next steps")
pub(crate) async fn changed(
    tx: &impl GenericClient,
    account_id: u64,
    mailbox_id: u64,
) -> Result<()> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{account_id}:{mailbox_id}")],
    )
    .await?;
    Ok(())
}

/// The change a payload announces; None for anything but `<u64>:<u64>` (ignored: the channel
/// is open to every role that can connect).
pub(crate) fn parse(payload: &str) -> Option<Change> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let (a, m) = payload.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(a) || !digits(m) {
        return None;
    }
    Some(Change {
        account_id: a.parse().ok()?,
        mailbox_id: m.parse().ok()?,
    })
}

/// Runs this node's listener until the runtime stops: connects with `cfg` and `tls` (outside
/// the pool), LISTENs, forwards notifications to `tx`. `ready` gets the outcome of the first
/// attempt (the store does not open without it); later losses reconnect with backoff and end
/// with a [`Change::resync`].
pub(crate) async fn listen<T>(
    cfg: tokio_postgres::Config,
    tls: T,
    tx: broadcast::Sender<Change>,
    ready: oneshot::Sender<Result<()>>,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut ready = Some(ready);
    let mut backoff = BACKOFF_FIRST;
    loop {
        match session(&cfg, tls.clone(), &tx, &mut ready).await {
            Ok(()) => backoff = BACKOFF_FIRST,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!("store: LISTEN {CHANNEL}: {e}; reconnecting");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: LISTEN, then forward until it ends. `Ok` when it was listening (and so
/// worked) before it ended, `Err` when it failed before.
async fn session<T>(
    cfg: &tokio_postgres::Config,
    tls: T,
    tx: &broadcast::Sender<Change>,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
) -> Result<()>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut conn) = cfg.connect(tls).await.map_err(super::connect_error)?;
    let listen = client.batch_execute("LISTEN tanba_change");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Ok(()));
                    }
                    // A reconnection: what was sent while no connection listened is lost.
                    None => {
                        tracing::info!("store: LISTEN {CHANNEL} again; sessions re-read");
                        let _ = tx.send(Change::resync());
                    }
                }
            }
            m = std::future::poll_fn(|cx| conn.poll_message(cx)) => match m {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if let Some(c) = parse(n.payload()) {
                        let _ = tx.send(c);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if listening => {
                    tracing::warn!("store: LISTEN {CHANNEL} connection: {e}");
                    return Ok(());
                }
                Some(Err(e)) => return Err(e.into()),
                None if listening => {
                    tracing::warn!("store: LISTEN {CHANNEL} connection closed");
                    return Ok(());
                }
                None => {
                    return Err(StoreError::Unavailable("database connection closed".into()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            parse("7:42"),
            Some(Change {
                account_id: 7,
                mailbox_id: 42
            })
        );
        let max = format!("{}:{}", u64::MAX, u64::MAX);
        assert_eq!(parse(&max).map(|c| c.mailbox_id), Some(u64::MAX));
        for bad in [
            "",
            ":",
            "7:",
            ":42",
            "7",
            "7:42:1",
            "+7:42",
            "7: 42",
            "x:y",
            "18446744073709551616:1",
            "٣:4",
            &"9".repeat(100_000),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
