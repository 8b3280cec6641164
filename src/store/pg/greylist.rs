//! Greylisting records on PostgreSQL (docs/cluster.md, "Greylist, bans, rate limits"): one
//! shared `greylist` table, so a retry that reaches another node passes. The same rules and
//! bounds as `store/greylist.rs`: the triplet hash as key, a sweep of a few expired entries per
//! check, at most `max_entries` entries (the entries that expire first go, pending before passed).
//!
//! One transaction per check; the triplet's row is locked (`FOR UPDATE`, or created with `ON
//! CONFLICT DO NOTHING`), so two nodes checking the same triplet at once see one another's
//! outcome. The cap is checked only when a triplet is added (a `count(*)`, bounded by the cap).

use super::super::greylist::{hash, Policy, Verdict, SWEEP_PER_CHECK};
use super::super::Result;
use super::Pg;

impl Pg {
    /// Checks the triplet (`network`, `from`, `rcpt`) at `now` and records what follows: a new
    /// pending entry, a first pass, or a renewed pass (`store/greylist.rs`).
    pub(crate) fn greylist_check(
        &self,
        network: &str,
        from: &str,
        rcpt: &str,
        now: u64,
        p: &Policy,
    ) -> Result<Verdict> {
        let h = hash(network, from, rcpt).to_vec();
        let p = *p;
        let now_i = now.min(i64::MAX as u64) as i64;
        let add = |t: u64| now.saturating_add(t).min(i64::MAX as u64) as i64;
        let (expire_at, lifetime_at) = (add(p.expire), add(p.lifetime));
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            // Two tries: the row may be swept by another node between the insert and the lock.
            for _ in 0..2 {
                let tx = c.transaction().await?;
                // Expired entries, a few per check (any node's check sweeps).
                tx.execute(
                    "DELETE FROM greylist WHERE triplet IN (SELECT triplet FROM greylist \
                     WHERE expires <= $1 AND triplet <> $2 LIMIT $3 FOR UPDATE SKIP LOCKED)",
                    &[&now_i, &h, &(SWEEP_PER_CHECK as i64)],
                )
                .await?;
                let inserted = tx
                    .query_opt(
                        "INSERT INTO greylist (triplet, first_seen, passed, expires) \
                         VALUES ($1, $2, false, $3) ON CONFLICT (triplet) DO NOTHING RETURNING 1",
                        &[&h, &now_i, &expire_at],
                    )
                    .await?
                    .is_some();
                if inserted {
                    let n: i64 = tx
                        .query_one(
                            &tx.prepare_cached(
                                "SELECT count(*) FROM (SELECT 1 FROM greylist LIMIT $1) s",
                            )
                            .await?,
                            &[&(p
                                .max_entries
                                .saturating_add(SWEEP_PER_CHECK as u64)
                                .min(i64::MAX as u64) as i64)],
                        )
                        .await?
                        .get(0);
                    let over = (n as u64).saturating_sub(p.max_entries);
                    if over > 0 {
                        tx.execute(
                            "DELETE FROM greylist WHERE triplet IN (SELECT triplet FROM greylist \
                             WHERE triplet <> $1 ORDER BY passed, expires LIMIT $2 \
                             FOR UPDATE SKIP LOCKED)",
                            &[&h, &(over.min(SWEEP_PER_CHECK as u64) as i64)],
                        )
                        .await?;
                    }
                    tx.commit().await?;
                    return Ok(Verdict::Defer {
                        retry_in: p.delay,
                        new: true,
                    });
                }
                let Some(row) = tx
                    .query_opt(
                        "SELECT first_seen, passed, expires FROM greylist WHERE triplet = $1 \
                         FOR UPDATE",
                        &[&h],
                    )
                    .await?
                else {
                    tx.rollback().await?;
                    continue;
                };
                let first_seen = row.get::<_, i64>(0).max(0) as u64;
                let passed: bool = row.get(1);
                let expires = row.get::<_, i64>(2).max(0) as u64;
                let verdict = if expires <= now {
                    // Expired: starts over, as a new triplet.
                    tx.execute(
                        "UPDATE greylist SET first_seen = $2, passed = false, expires = $3 \
                         WHERE triplet = $1",
                        &[&h, &now_i, &expire_at],
                    )
                    .await?;
                    Verdict::Defer {
                        retry_in: p.delay,
                        new: true,
                    }
                } else if passed || now >= first_seen.saturating_add(p.delay) {
                    tx.execute(
                        &tx.prepare_cached(
                            "UPDATE greylist SET passed = true, expires = $2 WHERE triplet = $1",
                        )
                        .await?,
                        &[&h, &lifetime_at],
                    )
                    .await?;
                    Verdict::Pass {
                        waited: (!passed).then(|| now - first_seen),
                    }
                } else {
                    // Within the delay: the entry stays (a retry does not restart the clock).
                    Verdict::Defer {
                        retry_in: first_seen.saturating_add(p.delay) - now,
                        new: false,
                    }
                };
                tx.commit().await?;
                return Ok(verdict);
            }
            Err(super::super::StoreError::Unavailable(
                "greylist entry kept disappearing; try again".into(),
            ))
        })
    }
}
