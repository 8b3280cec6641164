//! `GET /metrics` (SPEC §11): the process's [`crate::metrics`] in the Prometheus text format,
//! only on the `http.metrics` listener ([`super::metrics_router`]; loopback by default, empty:
//! off), never on the public ones.
//!
//! The gauges measured at scrape time ([`crate::metrics::Scrape`]) are read off the async
//! workers: the queue length walks the keys of the queue's due-time index (O(queue), small
//! values), the oldest entry is one ordered lookup, the store's size is sled's file sizes plus a
//! running total of the message files, and the current bans one pass over the failed-login
//! table (bounded by its cap). Nothing here scans mailboxes or messages.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Web;
use crate::metrics::{Scrape, REGISTRY};

/// The content type of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes() -> Router<Web> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(web): State<Web>) -> Response {
    let app = web.app();
    let gathered = tokio::task::spawn_blocking(move || {
        let now = crate::store::now_unix();
        let queue = app.store.queue_summary().ok();
        let scrape = Scrape {
            queue_messages: queue.map(|(n, _)| n),
            queue_oldest_age: queue.map(|(_, oldest)| {
                Duration::from_secs(oldest.map_or(0, |t| now.saturating_sub(t).max(0) as u64))
            }),
            store_bytes: app.store.size_bytes().ok(),
            bans: Some(app.auth.bans_now()),
        };
        REGISTRY.render(&scrape)
    })
    .await;
    match gathered {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
