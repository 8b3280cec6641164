//! Outbound delivery of queued mail. STUB: the queue is kept, nothing is sent yet.

use std::sync::Arc;

use crate::server::App;
use crate::shutdown::Shutdown;

/// Runs the delivery workers until shutdown.
pub async fn run(_app: Arc<App>, mut shutdown: Shutdown) {
    shutdown.stopping().await;
}

/// Queue commands of the admin channel (`tanba queue list|retry|drop`).
pub fn admin(
    store: &crate::store::Store,
    _config: &crate::config::Config,
    req: &crate::admin::Request,
) -> anyhow::Result<crate::admin::Response> {
    use crate::admin::{Request, Response};
    match req {
        Request::QueueList => {
            let list = store.queue_list()?;
            let mut text = String::new();
            for q in &list {
                let rcpts: Vec<&str> = q.recipients.iter().map(|r| r.addr.as_str()).collect();
                text.push_str(&format!(
                    "{}\t<{}>\t{}\tattempts={}\tnext={}\t{}\n",
                    q.id,
                    q.sender,
                    rcpts.join(","),
                    q.attempts,
                    chrono::DateTime::from_timestamp(q.next_attempt, 0)
                        .unwrap_or_default()
                        .to_rfc3339(),
                    q.last_error.as_deref().unwrap_or("-")
                ));
            }
            Ok(Response {
                ok: true,
                text,
                data: serde_json::to_value(&list)?,
            })
        }
        Request::QueueRetry { id } => {
            let Some(mut q) = store.queue_get(*id)? else {
                anyhow::bail!("no queue entry {id}")
            };
            q.next_attempt = 0;
            store.queue_update(&q)?;
            store.flush_sync()?;
            Ok(Response {
                ok: true,
                text: format!("{id} will be retried now"),
                data: serde_json::json!({"wake": true}),
            })
        }
        Request::QueueDrop { id, .. } => {
            store.queue_remove(*id)?;
            store.flush_sync()?;
            Ok(Response {
                ok: true,
                text: format!("{id} dropped"),
                data: serde_json::Value::Null,
            })
        }
        _ => anyhow::bail!("not a queue command"),
    }
}
