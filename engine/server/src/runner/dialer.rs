//! The loop every node runs: schedule check-ins, rescue calls of dead nodes,
//! claim due calls under the caps and start them.

use std::sync::Arc;

use chrono::{Utc, Weekday};
use voicecare_core::schedule::{Pause, Schedule};
use voicecare_store::dialer::{self, Unscheduled};

use super::engine::Engine;

/// Start the node's dialer loop.
pub fn spawn(engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(engine.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            round(&engine).await;
        }
    })
}

/// One pass: each step logs its own failure and the next pass retries.
pub async fn round(engine: &Arc<Engine>) {
    let now = Utc::now();
    match schedule_checkins(engine, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(scheduled = n, "check-in calls scheduled"),
        Err(e) => tracing::warn!(error = %e, "scheduling check-ins failed; will retry"),
    }
    rescue(&engine.pool).await;
    let lease = engine.lease();
    match dialer::claim_due(
        &engine.pool,
        &engine.cfg.node_id,
        engine.cfg.caps,
        lease,
        64,
        Utc::now(),
    )
    .await
    {
        Ok(claimed) => {
            for c in claimed {
                super::call::spawn_claimed(engine.clone(), c);
            }
        }
        Err(e) => tracing::warn!(error = %e, "claiming due calls failed; will retry"),
    }
}

/// Close the calls of nodes that stopped (their lease expired) and put them
/// back in the schedule. Safe on every node at once (SKIP LOCKED).
async fn rescue(pool: &sqlx::PgPool) {
    match dialer::rescue_expired(pool, Utc::now()).await {
        Ok(r) if r.is_empty() => {}
        Ok(r) => {
            for x in &r {
                tracing::warn!(call_id = x.interrupted, replacement = ?x.replacement,
                    "call lease expired (its node stopped); closed as interrupted and rescheduled");
            }
        }
        Err(e) => tracing::warn!(error = %e, "call lease rescue failed; will retry"),
    }
}

/// A node that runs no calls still rescues those of dead nodes, so a
/// centre whose call nodes all died still gets its calls rescheduled.
pub fn spawn_rescuer(
    pool: sqlx::PgPool,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            rescue(&pool).await;
        }
    })
}

fn days(mask: i16) -> Vec<Weekday> {
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .into_iter()
    .filter(|d| mask & (1 << d.num_days_from_monday()) != 0)
    .collect()
}

/// The core schedule for a stored one.
pub fn core_schedule(u: &Unscheduled) -> Schedule {
    Schedule {
        days: days(u.days_of_week),
        window_start: u.window_start,
        window_end: u.window_end,
        paused: u
            .pause_starts
            .iter()
            .zip(&u.pause_ends)
            .map(|(from, until)| Pause {
                from: *from,
                until: Some(*until),
                reason: None,
            })
            .collect(),
    }
}

/// Give every elder with a schedule and no live check-in their next one.
async fn schedule_checkins(
    engine: &Arc<Engine>,
    now: chrono::DateTime<Utc>,
) -> Result<usize, voicecare_store::StoreError> {
    let mut n = 0;
    for u in dialer::unscheduled(&engine.pool, now, 500).await? {
        let Ok(tz) = u.time_zone.parse::<chrono_tz::Tz>() else {
            tracing::warn!(
                elder_id = u.elder_id,
                "elder's time zone is not an IANA zone; no check-in scheduled"
            );
            continue;
        };
        let Some(due) = core_schedule(&u).next_due(tz, &u.recent_attempts, now) else {
            continue;
        };
        if dialer::schedule_checkin(&engine.pool, u.elder_id, &u.flow, due, now)
            .await?
            .is_some()
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_bits_start_on_monday() {
        assert_eq!(days(1), vec![Weekday::Mon]);
        assert_eq!(days(0b110_0000), vec![Weekday::Sat, Weekday::Sun]);
        assert_eq!(days(127).len(), 7);
    }
}
