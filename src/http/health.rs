//! `GET /healthz` for load balancers: 200 `ok` while the process serves requests.

use axum::routing::get;
use axum::Router;

use super::Web;

pub fn routes() -> Router<Web> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok"
}
