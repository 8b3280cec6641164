//! Graceful shutdown: one "stop now" signal that every session and worker watches, and a way to
//! wait until all of them have finished (each holds a [`Shutdown`] clone; the wait ends when the
//! last clone is dropped).

use tokio::sync::{mpsc, watch};

/// Held by every session/worker task. Dropping it tells [`Coordinator::wait_idle`] one fewer task
/// is running.
#[derive(Clone)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
    /// Never sent on; its only purpose is to be dropped (the channel closes when all are gone).
    _alive: mpsc::Sender<()>,
}

impl Shutdown {
    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when shutdown begins. Safe to call repeatedly and in `select!`.
    pub async fn stopping(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

/// Owned by `serve`: starts shutdown and waits for the tasks.
pub struct Coordinator {
    stop: watch::Sender<bool>,
    alive_tx: Option<mpsc::Sender<()>>,
    alive_rx: mpsc::Receiver<()>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl Coordinator {
    pub fn new() -> Self {
        let (stop, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        Coordinator {
            stop,
            alive_tx: Some(alive_tx),
            alive_rx,
        }
    }

    /// A handle for a new task.
    pub fn handle(&self) -> Shutdown {
        Shutdown {
            stop: self.stop.subscribe(),
            _alive: self.alive_tx.clone().expect("handle() after wait_idle()"),
        }
    }

    pub fn begin(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every handle has been dropped.
    pub async fn wait_idle(mut self) {
        self.alive_tx.take();
        let _ = self.alive_rx.recv().await;
    }
}
