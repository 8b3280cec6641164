//! Retry timing as pure functions of the clock (Unix seconds) and `[delivery]`: when a deferred
//! message is tried again, and when it is given up and bounced.

use std::time::Duration;

/// What follows a delivery round that left recipients pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Try again at this time (Unix seconds).
    Retry(i64),
    /// `give_up_after` has passed: bounce what is still pending.
    GiveUp,
}

/// The wait after the `rounds`-th failed round (1-based): `retry[rounds-1]`, then the last
/// interval for ever.
pub fn retry_delay(retry: &[Duration], rounds: u32) -> Duration {
    let i = (rounds.max(1) - 1) as usize;
    retry
        .get(i)
        .or(retry.last())
        .copied()
        .unwrap_or(Duration::from_secs(300))
}

/// Decides the next step for a message queued at `created` whose `rounds`-th round just ended
/// at `now` with recipients still pending. The retry time never passes the give-up deadline, so
/// the last attempt happens at the deadline and the bounce is not late by a whole interval.
pub fn after_round(
    now: i64,
    created: i64,
    rounds: u32,
    retry: &[Duration],
    give_up_after: Duration,
) -> After {
    let deadline = created.saturating_add(secs(give_up_after));
    if now >= deadline {
        return After::GiveUp;
    }
    let next = now.saturating_add(secs(retry_delay(retry, rounds)).max(1));
    After::Retry(next.min(deadline))
}

fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

/// How long the scheduler sleeps until `next_due` (Unix seconds), given the current time. At
/// least nothing, at most `cap` (so that a changed wall clock is noticed).
pub fn sleep_until(now: i64, next_due: Option<i64>, cap: Duration) -> Duration {
    match next_due {
        Some(t) if t <= now => Duration::ZERO,
        Some(t) => Duration::from_secs((t - now) as u64).min(cap),
        None => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        humantime::parse_duration(s).unwrap()
    }

    #[test]
    fn retry_follows_the_list_then_repeats_the_last() {
        let r = [d("5m"), d("15m"), d("1h")];
        assert_eq!(retry_delay(&r, 1), d("5m"));
        assert_eq!(retry_delay(&r, 2), d("15m"));
        assert_eq!(retry_delay(&r, 3), d("1h"));
        assert_eq!(retry_delay(&r, 40), d("1h"));
        assert_eq!(retry_delay(&r, 0), d("5m"));
    }

    #[test]
    fn give_up_after_the_deadline_and_never_schedule_past_it() {
        let r = [d("1h")];
        let day = d("1d");
        assert_eq!(
            after_round(1000, 1000, 1, &r, day),
            After::Retry(1000 + 3600)
        );
        // Close to the deadline: the retry is at the deadline itself.
        let created = 0;
        let now = 86_400 - 60;
        assert_eq!(after_round(now, created, 5, &r, day), After::Retry(86_400));
        assert_eq!(after_round(86_400, created, 6, &r, day), After::GiveUp);
    }

    #[tokio::test(start_paused = true)]
    async fn scheduler_sleep_matches_the_retry_time() {
        // With paused time, sleeping the computed duration lands exactly on the retry time.
        let r = [d("30s"), d("2m")];
        let start = tokio::time::Instant::now();
        let now = 10_000;
        let After::Retry(next) = after_round(now, now, 1, &r, d("5d")) else {
            panic!("expected a retry")
        };
        tokio::time::sleep(sleep_until(now, Some(next), d("1h"))).await;
        assert_eq!(start.elapsed(), d("30s"));
        assert_eq!(sleep_until(now, Some(now - 5), d("1h")), Duration::ZERO);
        assert_eq!(sleep_until(now, None, d("1h")), d("1h"));
        assert_eq!(sleep_until(now, Some(now + 7200), d("1h")), d("1h"));
    }
}
