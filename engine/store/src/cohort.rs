//! Simulated cohorts for `voicecare demo` and `voicecare bench capacity`:
//! enrolling simulated elders, opening their check-in windows seconds from
//! now, and reading back what the engine did with them.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::audit::{self, Actor, NewEvent};
use crate::elders::{self, NewElder, Phone, TimeZoneName};
use crate::error::{Result, StoreError};

/// A simulated elder: a device, a language and a zone, no phone number.
/// `Debug` prints the name as redacted.
#[derive(Clone)]
pub struct SimElder<'a> {
    pub full_name: &'a str,
    pub device_id: &'a str,
    pub language: &'a str,
    pub time_zone: &'a str,
    pub community_id: i64,
}

impl std::fmt::Debug for SimElder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimElder")
            .field("full_name", &voicecare_core::redact::Personal::new(()))
            .field("device_id", &self.device_id)
            .field("language", &self.language)
            .field("time_zone", &self.time_zone)
            .field("community_id", &self.community_id)
            .finish()
    }
}

/// Enrol a simulated elder and store its device token's SHA-256; the elder's id.
pub async fn enrol(
    pool: &PgPool,
    e: &SimElder<'_>,
    token_sha256: &[u8],
    now: DateTime<Utc>,
) -> Result<i64> {
    let time_zone =
        TimeZoneName::parse(e.time_zone).map_err(|m| StoreError::invalid("time_zone", m))?;
    let new = NewElder {
        external_ref: None,
        full_name: e.full_name.to_string(),
        birth_date: None,
        address: None,
        phone: None,
        device_id: Some(e.device_id.to_string()),
        language: e.language.to_string(),
        time_zone,
        community_id: e.community_id,
        notes: None,
        contacts: Vec::new(),
        schedule: None,
    };
    let mut conn = pool.acquire().await?;
    let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
    elders::insert(&mut tx, &new, now).await?;
    tx.commit().await?;
    crate::dialer::set_device_token(pool, e.device_id, token_sha256, now).await
}

/// What a real elder's record holds besides a device, for a simulated one:
/// a phone number (never rung while the device is enrolled), a birth date
/// and an address. The demo checks its log for them.
pub async fn set_particulars(
    pool: &PgPool,
    elder: i64,
    phone: &Phone,
    birth_date: NaiveDate,
    address: &str,
) -> Result<()> {
    sqlx::query("UPDATE elders SET phone = $2, birth_date = $3, address = $4 WHERE id = $1")
        .bind(elder)
        .bind(phone)
        .bind(birth_date)
        .bind(address)
        .execute(pool)
        .await?;
    Ok(())
}

/// Give `elder` a daily window opening `offset_secs` from now in `zone`
/// (three hours long), `max_attempts` rings `retry_minutes` apart.
pub async fn open_window(
    pool: &PgPool,
    elder: i64,
    zone: &str,
    offset_secs: u64,
    max_attempts: i16,
    retry_minutes: i16,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO checkin_schedules (elder_id, window_start, window_end, max_attempts, retry_minutes)
         VALUES ($1, ($5::timestamptz AT TIME ZONE $2 + make_interval(secs => $3))::time,
                     ($5::timestamptz AT TIME ZONE $2 + make_interval(secs => $3) + interval '3 hours')::time, $4, $6)",
    )
    .bind(elder)
    .bind(zone)
    .bind(offset_secs as f64)
    .bind(max_attempts)
    .bind(now)
    .bind(retry_minutes)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::System,
            action: "elder.schedule",
            entity: "elder",
            entity_id: Some(elder),
            elder_id: Some(elder),
            details: serde_json::json!({"offset_secs": offset_secs, "time_zone": zone}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Remove the cohort's check-in windows (its calls and escalations stay), so
/// nothing rings its devices again.
pub async fn close_windows(pool: &PgPool, elders: &[i64], now: DateTime<Utc>) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let removed: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM checkin_schedules WHERE elder_id = ANY($1) RETURNING elder_id",
    )
    .bind(elders)
    .fetch_all(&mut *tx)
    .await?;
    for id in &removed {
        audit::record(
            &mut *tx,
            now,
            NewEvent {
                actor: Actor::System,
                action: "elder.unschedule",
                entity: "elder",
                entity_id: Some(*id),
                elder_id: Some(*id),
                details: serde_json::json!({}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(removed.len() as u64)
}

/// Where a cohort's check-ins stand.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Calls rung at least once.
    pub placed: i64,
    /// Calls someone answered.
    pub answered: i64,
    /// Elders whose check-in is over (completed or unreachable).
    pub done: i64,
    /// Check-ins scheduled or in progress.
    pub live: i64,
    pub flagged: i64,
    /// Escalations waiting for an operator.
    pub queue: i64,
}

pub async fn progress(pool: &PgPool, elders: &[i64]) -> Result<Progress> {
    let (placed, answered, done, live, flagged, queue): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT
               (SELECT count(DISTINCT a.call_id) FROM call_attempts a JOIN calls c ON c.id = a.call_id
                 WHERE c.elder_id = ANY($1) AND a.callee = 'elder'),
               (SELECT count(DISTINCT a.call_id) FROM call_attempts a JOIN calls c ON c.id = a.call_id
                 WHERE c.elder_id = ANY($1) AND a.answered_at IS NOT NULL),
               (SELECT count(DISTINCT elder_id) FROM calls
                 WHERE elder_id = ANY($1) AND purpose = 'checkin' AND status IN ('completed', 'unreachable')),
               (SELECT count(*) FROM calls
                 WHERE elder_id = ANY($1) AND status = 'in_progress'
                    OR elder_id = ANY($1) AND status = 'scheduled' AND due_at < now() + interval '30 minutes'),
               (SELECT count(*) FROM escalations WHERE elder_id = ANY($1)),
               (SELECT count(*) FROM escalations WHERE elder_id = ANY($1) AND status = 'open')",
        )
        .bind(elders)
        .fetch_one(pool)
        .await?;
    Ok(Progress {
        placed,
        answered,
        done,
        live,
        flagged,
        queue,
    })
}

/// One escalation of the cohort and how long it has waited for an operator.
#[derive(Debug, Clone)]
pub struct Flag {
    /// The escalation's id.
    pub id: i64,
    pub elder_id: i64,
    pub level: String,
    /// Seconds from flag to first claim, or to now if unclaimed.
    pub wait_secs: f64,
    pub claimed: bool,
}

/// Everything the engine did with a cohort, for scoring against its truth.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// (elder, outcome or status) of each check-in call, oldest first;
    /// next-day calls are left out.
    pub calls: Vec<(i64, String)>,
    /// Rings, including those to emergency contacts.
    pub attempts: i64,
    /// Rings of the elders themselves by what they came to
    /// (`call_attempts.outcome`), per community: community → outcome → rings.
    pub attempts_by_outcome: BTreeMap<String, BTreeMap<String, i64>>,
    /// The highest level escalated per elder.
    pub highest: BTreeMap<i64, String>,
    pub flags: Vec<Flag>,
    /// (whisper decode ms, wait for a worker ms) per elder utterance.
    pub asr: Vec<(Option<i32>, Option<i32>)>,
    /// Claims of the cohort's calls per node (a call rescued from a dead node
    /// and claimed again counts for both).
    pub calls_by_node: BTreeMap<String, i64>,
    /// Rings of an elder that overlapped another ring of the same elder
    /// (interrupted ones aside): should be none.
    pub double_calls: i64,
}

pub async fn results(pool: &PgPool, elders: &[i64]) -> Result<Results> {
    let calls: Vec<(i64, String)> = sqlx::query_as(
        "SELECT elder_id, coalesce(outcome, status) FROM calls
          WHERE elder_id = ANY($1) AND purpose = 'checkin'
            AND NOT (status = 'scheduled' AND due_at > now() + interval '1 hour')
          ORDER BY id",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id WHERE c.elder_id = ANY($1)",
    )
    .bind(elders)
    .fetch_one(pool)
    .await?;
    let by_outcome: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT u.name, a.outcome, count(*) FROM call_attempts a
           JOIN calls c ON c.id = a.call_id
           JOIN elders el ON el.id = c.elder_id
           JOIN org_units u ON u.id = el.community_id
          WHERE c.elder_id = ANY($1) AND a.callee = 'elder' AND a.outcome IS NOT NULL
          GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    let mut attempts_by_outcome: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (unit, outcome, n) in by_outcome {
        attempts_by_outcome
            .entry(unit)
            .or_default()
            .insert(outcome, n);
    }
    let highest: Vec<(i64, String)> = sqlx::query_as(
        // The call carries its level (a watch finding raises no item), and
        // an item can come without words (a key pressed for help).
        "SELECT DISTINCT ON (elder_id) elder_id, level FROM (
             SELECT elder_id, level FROM calls WHERE elder_id = ANY($1) AND level IS NOT NULL
             UNION ALL
             SELECT elder_id, level FROM escalations WHERE elder_id = ANY($1)) l
          ORDER BY elder_id, level_rank(level) DESC",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    let flags: Vec<(i64, i64, String, f64, bool)> = sqlx::query_as(
        "SELECT id, elder_id, level, extract(epoch FROM coalesce(first_claimed_at, now()) - created_at)::float8,
                first_claimed_at IS NOT NULL
           FROM escalations WHERE elder_id = ANY($1) ORDER BY id",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    let asr: Vec<(Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT u.asr_decode_ms, u.asr_queue_ms FROM utterances u JOIN calls c ON c.id = u.call_id
          WHERE c.elder_id = ANY($1) AND u.speaker = 'elder' ORDER BY u.id",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    let by_node: Vec<(String, i64)> = sqlx::query_as(
        "SELECT details->>'node_id', count(*) FROM audit_events
          WHERE action = 'call.claim' AND entity = 'call' AND elder_id = ANY($1)
          GROUP BY 1 ORDER BY 1",
    )
    .bind(elders)
    .fetch_all(pool)
    .await?;
    // Two rings of the same elder whose spans overlap in time. A ring cut
    // off by a dead node ends when its call is rescued, not when its
    // replacement rings, so interrupted attempts are left out.
    let double_calls: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT a.call_id) FROM call_attempts a
           JOIN calls c ON c.id = a.call_id
           JOIN call_attempts b ON b.id <> a.id AND b.callee = 'elder' AND b.status <> 'interrupted'
           JOIN calls d ON d.id = b.call_id AND d.elder_id = c.elder_id
          WHERE c.elder_id = ANY($1) AND a.callee = 'elder' AND a.status <> 'interrupted'
            AND tstzrange(a.started_at, coalesce(a.ended_at, now()))
             && tstzrange(b.started_at, coalesce(b.ended_at, now()))",
    )
    .bind(elders)
    .fetch_one(pool)
    .await?;
    Ok(Results {
        calls,
        attempts,
        attempts_by_outcome,
        highest: highest.into_iter().collect(),
        flags: flags
            .into_iter()
            .map(|(id, elder_id, level, wait_secs, claimed)| Flag {
                id,
                elder_id,
                level,
                wait_secs,
                claimed,
            })
            .collect(),
        asr,
        calls_by_node: by_node.into_iter().collect(),
        double_calls,
    })
}
