//! A fixed pool of argon2 workers: `workers` OS threads (not the tokio blocking pool), each owning
//! one argon2 memory block (19 MiB for our parameters) that it reuses for every job. Jobs come
//! through one bounded channel; the async caller awaits a oneshot answer.
//!
//! Why: argon2 needs 19 MiB per computation. Run on the blocking pool, 128 concurrent logins
//! meant 128 allocations of 19 MiB on up to 512 threads, which glibc keeps in per-thread arenas
//! after they are freed (2.5 GB RSS, held afterwards). Here the memory is workers × 19 MiB,
//! allocated once, whatever the load; further logins wait in the channel (and behind it, in
//! `send().await`, holding nothing but their password string).

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, oneshot};

use crate::store::account;

/// Jobs waiting per worker before senders wait in `send().await`.
const QUEUE_PER_WORKER: usize = 32;

enum Job {
    Verify {
        phc: String,
        password: String,
        answer: oneshot::Sender<bool>,
    },
    Hash {
        password: String,
        answer: oneshot::Sender<Result<String, String>>,
    },
}

/// Handle to the pool; cheap to share behind the `Authenticator`. The workers stop when the last
/// handle is dropped.
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
    workers: usize,
}

impl Hasher {
    /// The number of workers for this machine: one per core, at least 1, at most 4.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
    }

    /// Starts `workers` threads (at least one).
    pub fn start(workers: usize) -> std::io::Result<Hasher> {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel(workers * QUEUE_PER_WORKER);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("tanba-argon2-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Hasher { jobs: tx, workers })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether `password` matches the PHC string `phc`.
    pub async fn verify(&self, phc: String, password: String) -> Result<bool> {
        let (answer, rx) = oneshot::channel();
        self.jobs
            .send(Job::Verify {
                phc,
                password,
                answer,
            })
            .await
            .map_err(|_| anyhow!("the password hashing workers are gone"))?;
        rx.await
            .map_err(|_| anyhow!("a password hashing worker failed"))
    }

    /// A new argon2id PHC string for `password`.
    pub async fn hash(&self, password: String) -> Result<String> {
        let (answer, rx) = oneshot::channel();
        self.jobs
            .send(Job::Hash { password, answer })
            .await
            .map_err(|_| anyhow!("the password hashing workers are gone"))?;
        rx.await
            .map_err(|_| anyhow!("a password hashing worker failed"))?
            .map_err(|e| anyhow!(e))
    }

    /// [`Hasher::hash`] for synchronous code off the async workers (the admin commands run on
    /// the blocking pool). Must not be called from an async task.
    pub fn hash_blocking(&self, password: String) -> Result<String> {
        let (answer, rx) = oneshot::channel();
        self.jobs
            .blocking_send(Job::Hash { password, answer })
            .map_err(|_| anyhow!("the password hashing workers are gone"))?;
        rx.blocking_recv()
            .map_err(|_| anyhow!("a password hashing worker failed"))?
            .map_err(|e| anyhow!(e))
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    // Allocated on first use, then kept: an idle server does not hold it.
    let mut memory = Vec::new();
    loop {
        // One worker waits in blocking_recv holding the lock, the others wait for the lock: a
        // job goes to exactly one of them.
        let job = rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .blocking_recv();
        let Some(job) = job else { return };
        if memory.is_empty() {
            memory = account::argon2_memory();
        }
        match job {
            Job::Verify {
                phc,
                password,
                answer,
            } => {
                let ok = account::verify_password_in(&phc, &password, &mut memory);
                let _ = answer.send(ok);
            }
            Job::Hash { password, answer } => {
                let r =
                    account::hash_password_in(&password, &mut memory).map_err(|e| e.to_string());
                let _ = answer.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_concurrent_jobs_through_two_workers() {
        let h = Arc::new(Hasher::start(2).unwrap());
        assert_eq!(h.workers(), 2);
        let phc = h.hash("a long password".into()).await.unwrap();
        assert!(account::verify_password(&phc, "a long password"));
        // More jobs than the channel holds: senders wait, every answer arrives.
        let mut tasks = Vec::new();
        for i in 0..(2 * QUEUE_PER_WORKER + 8) {
            let (h, phc) = (h.clone(), phc.clone());
            tasks.push(tokio::spawn(async move {
                let pw = if i % 2 == 0 {
                    "a long password"
                } else {
                    "wrong"
                };
                (i, h.verify(phc, pw.into()).await.unwrap())
            }));
        }
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 2 == 0, "job {i}");
        }
        let h2 = h.clone();
        let blocking = tokio::task::spawn_blocking(move || h2.hash_blocking("x y z w".into()))
            .await
            .unwrap()
            .unwrap();
        assert!(h.verify(blocking, "x y z w".into()).await.unwrap());
    }
}
