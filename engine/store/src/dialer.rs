//! The dialer's side of `calls`: scheduling check-ins, claiming due calls
//! under the concurrent-call caps, leases while a call runs, rescuing calls
//! whose node died, attempts, and how calls end.
//!
//! * One live check-in per elder: `calls_one_live_checkin` makes scheduling
//!   idempotent across nodes (`ON CONFLICT DO NOTHING`).
//! * Claims take a transaction-scoped advisory lock ([`CLAIM_LOCK`]), count
//!   the calls in progress (all nodes, and this node), and claim at most the
//!   free slots with `FOR UPDATE SKIP LOCKED` in one statement that also
//!   writes the audit events. Claimers are serialised by the lock, so two
//!   nodes can never exceed the global cap together; the lock is held for
//!   two short statements, never across network I/O.
//! * A claimed call carries `node_id` and `lease_expires_at`; the node renews
//!   the lease while the call runs. A call whose lease expired is closed as
//!   `interrupted` and a new `scheduled` call replaces it (`calls.replaces`).
//! * Every change writes its audit event in the same transaction.

use chrono::{DateTime, NaiveTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use voicecare_core::session::{AttemptStatus, CallOutcome, DialOutcome, EndReason};

use crate::audit::{self, Actor, NewEvent};
use crate::elders::Phone;
use crate::error::{Result, StoreError};

/// Advisory-lock key serialising claimers (`pg_advisory_xact_lock`).
pub const CLAIM_LOCK: i64 = 0x766f_6963_6563_6c6c; // "voicecll"

/// Concurrent-call limits.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Calls in progress across every node.
    pub global: i64,
    /// Calls in progress on this node.
    pub per_node: i64,
}

/// Store a device's token as its SHA-256 (the token itself is never stored).
/// Returns the elder's id.
pub async fn set_device_token(
    pool: &PgPool,
    device_id: &str,
    token_sha256: &[u8],
    now: DateTime<Utc>,
) -> Result<i64> {
    if token_sha256.len() != 32 {
        return Err(StoreError::invalid("token", "expected a SHA-256 digest"));
    }
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE elders SET device_token_hash = $2 WHERE device_id = $1 RETURNING id",
    )
    .bind(device_id)
    .bind(token_sha256)
    .fetch_optional(&mut *tx)
    .await?;
    // Otherwise it may be an emergency contact's device (the care app).
    let (id, action, contact) = match id {
        Some(id) => (id, "elder.set_device_token", None),
        None => {
            let row: Option<(i64, i16)> = sqlx::query_as(
                "UPDATE emergency_contacts SET device_token_hash = $2 WHERE device_id = $1
                 RETURNING elder_id, position",
            )
            .bind(device_id)
            .bind(token_sha256)
            .fetch_optional(&mut *tx)
            .await?;
            let (id, position) = row.ok_or_else(|| {
                StoreError::invalid("device", "no elder or emergency contact has this device")
            })?;
            (id, "contact.set_device_token", Some(position))
        }
    };
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::System,
            action,
            entity: "elder",
            entity_id: Some(id),
            elder_id: Some(id),
            details: serde_json::json!({"device_id": device_id, "contact_position": contact}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// What a device authenticates against.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceCredential {
    pub elder_id: i64,
    pub token_hash: Option<Vec<u8>>,
    pub active: bool,
    /// Set when the device is an emergency contact's (its position), not the elder's.
    pub contact_position: Option<i16>,
}

/// An elder's device, or an emergency contact's; device ids are one namespace.
pub async fn device_credential<'e>(
    db: impl PgExecutor<'e>,
    device_id: &str,
) -> Result<Option<DeviceCredential>> {
    Ok(sqlx::query_as(
        "SELECT id AS elder_id, device_token_hash AS token_hash, active, NULL::smallint AS contact_position
         FROM elders WHERE device_id = $1
         UNION ALL
         SELECT c.elder_id, c.device_token_hash, e.active, c.position
         FROM emergency_contacts c JOIN elders e ON e.id = c.elder_id WHERE c.device_id = $1
         LIMIT 1",
    )
    .bind(device_id)
    .fetch_optional(db)
    .await?)
}

/// The active elder enrolled with this phone number (E.164), for a call
/// into the service from that number.
pub async fn elder_by_phone<'e>(db: impl PgExecutor<'e>, e164: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM elders WHERE phone = $1 AND active")
            .bind(e164)
            .fetch_optional(db)
            .await?,
    )
}

/// Take an elder's device away so they are reached at their phone number
/// (the demo over SIP); their number must be enrolled.
pub async fn phone_only<'e>(db: impl PgExecutor<'e>, elder_id: i64) -> Result<()> {
    sqlx::query(
        "UPDATE elders SET device_id = NULL, device_token_hash = NULL
         WHERE id = $1 AND phone IS NOT NULL",
    )
    .bind(elder_id)
    .execute(db)
    .await?;
    Ok(())
}

/// The active elder with this care number (the enrolment's external
/// reference, or failing that the elder's id), keyed by a caller.
pub async fn elder_by_care_number<'e>(
    db: impl PgExecutor<'e>,
    number: &str,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM elders WHERE active AND (external_ref = $1 OR id::text = $1)
         ORDER BY (external_ref = $1) IS TRUE DESC LIMIT 1",
    )
    .bind(number)
    .fetch_optional(db)
    .await?)
}

/// Everything the runner needs to know about the elder it calls. `Debug`
/// prints the name as redacted.
#[derive(Clone, sqlx::FromRow)]
pub struct Callee {
    pub elder_id: i64,
    /// Personal data: never log it.
    pub full_name: String,
    pub language: String,
    pub time_zone: String,
    pub device_id: Option<String>,
    /// Personal data: its `Debug` shows only the last two digits.
    pub phone: Option<Phone>,
    pub contacts: i64,
    pub max_attempts: Option<i16>,
    pub retry_minutes: Option<i16>,
}

impl Callee {
    /// The elder's language (the column only holds codes the enrolment accepted).
    pub fn lang(&self) -> voicecare_core::Lang {
        self.language.parse().unwrap_or(voicecare_core::Lang::En)
    }
}

/// An emergency contact the ladder calls. `Debug` prints the name as redacted.
#[derive(Clone, sqlx::FromRow)]
pub struct Contact {
    /// 1-based, the elder's order.
    pub position: i16,
    /// Personal data: never log it.
    pub name: String,
    /// The contact's care-app device, if they have one.
    pub device_id: Option<String>,
}

impl std::fmt::Debug for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callee")
            .field("elder_id", &self.elder_id)
            .field("full_name", &voicecare_core::redact::Personal::new(()))
            .field("language", &self.language)
            .field("time_zone", &self.time_zone)
            .field("device_id", &self.device_id)
            .field("phone", &self.phone)
            .field("contacts", &self.contacts)
            .field("max_attempts", &self.max_attempts)
            .field("retry_minutes", &self.retry_minutes)
            .finish()
    }
}

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("position", &self.position)
            .field("name", &voicecare_core::redact::Personal::new(()))
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// The elder's `index`-th emergency contact (0-based, in their order).
pub async fn contact<'e>(
    db: impl PgExecutor<'e>,
    elder_id: i64,
    index: usize,
) -> Result<Option<Contact>> {
    Ok(sqlx::query_as(
        "SELECT position, name, device_id FROM emergency_contacts WHERE elder_id = $1
         ORDER BY position OFFSET $2 LIMIT 1",
    )
    .bind(elder_id)
    .bind(index as i64)
    .fetch_optional(db)
    .await?)
}

pub async fn callee<'e>(db: impl PgExecutor<'e>, elder_id: i64) -> Result<Callee> {
    sqlx::query_as(
        "SELECT e.id AS elder_id, e.full_name, e.language, e.time_zone, e.device_id, e.phone,
                (SELECT count(*) FROM emergency_contacts c WHERE c.elder_id = e.id) AS contacts,
                s.max_attempts, s.retry_minutes
         FROM elders e LEFT JOIN checkin_schedules s ON s.elder_id = e.id WHERE e.id = $1",
    )
    .bind(elder_id)
    .fetch_optional(db)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "elder",
        id: elder_id,
    })
}

/// An elder with a check-in schedule and no live check-in call.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unscheduled {
    pub elder_id: i64,
    pub time_zone: String,
    pub window_start: NaiveTime,
    pub window_end: NaiveTime,
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub days_of_week: i16,
    pub flow: String,
    /// Start times of this elder's recent check-in calls (started, or due if never started).
    pub recent_attempts: Vec<DateTime<Utc>>,
    /// Pauses as (first day, last day), inclusive.
    pub pause_starts: Vec<chrono::NaiveDate>,
    pub pause_ends: Vec<chrono::NaiveDate>,
}

/// Active elders with a schedule who have no check-in scheduled or running.
pub async fn unscheduled<'e>(
    db: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Unscheduled>> {
    Ok(sqlx::query_as(
        "SELECT s.elder_id, e.time_zone, s.window_start, s.window_end, s.days_of_week, s.flow,
                ARRAY(SELECT coalesce(c.started_at, c.due_at) FROM calls c
                      WHERE c.elder_id = s.elder_id AND c.purpose = 'checkin' AND c.status <> 'cancelled'
                        AND c.due_at > $1 - interval '3 days') AS recent_attempts,
                ARRAY(SELECT p.starts_on FROM schedule_pauses p WHERE p.elder_id = s.elder_id
                      AND p.ends_on >= ($1 - interval '2 days')::date ORDER BY p.id) AS pause_starts,
                ARRAY(SELECT p.ends_on FROM schedule_pauses p WHERE p.elder_id = s.elder_id
                      AND p.ends_on >= ($1 - interval '2 days')::date ORDER BY p.id) AS pause_ends
         FROM checkin_schedules s JOIN elders e ON e.id = s.elder_id
         WHERE e.active AND NOT EXISTS (
             SELECT 1 FROM calls c WHERE c.elder_id = s.elder_id AND c.purpose = 'checkin'
               AND c.status IN ('scheduled', 'in_progress'))
         ORDER BY s.elder_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Schedule an elder's next check-in. Returns the new call's id, or `None`
/// when another node scheduled one first (the partial unique index decides).
pub async fn schedule_checkin(
    pool: &PgPool,
    elder_id: i64,
    flow: &str,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "WITH ins AS (
             INSERT INTO calls (elder_id, direction, purpose, flow, due_at, created_at)
             VALUES ($1, 'outbound', 'checkin', $2, $3, $4)
             ON CONFLICT (elder_id) WHERE purpose = 'checkin' AND status IN ('scheduled', 'in_progress')
             DO NOTHING RETURNING id
         ), sched AS (
             UPDATE checkin_schedules SET next_due_at = $3, updated_at = $4
             WHERE elder_id = $1 AND EXISTS (SELECT 1 FROM ins)
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
             SELECT $4, 'engine', 'call.schedule', 'call', ins.id, $1, jsonb_build_object('due_at', $3)
             FROM ins
         )
         SELECT id FROM ins",
    )
    .bind(elder_id)
    .bind(flow)
    .bind(due_at)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(id)
}

/// A call this node now holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub elder_id: i64,
    pub direction: String,
    pub purpose: String,
    pub flow: Option<String>,
    pub due_at: DateTime<Utc>,
    pub ladder: Option<serde_json::Value>,
}

/// Claim due calls for `node_id`, as many as the caps allow.
pub async fn claim_due(
    pool: &PgPool,
    node_id: &str,
    caps: Caps,
    lease: chrono::Duration,
    max: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    // Read after taking the lock: every claim committed before it is counted.
    let (global, mine): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE node_id = $1) FROM calls WHERE status = 'in_progress'",
    )
    .bind(node_id)
    .fetch_one(&mut *tx)
    .await?;
    let free = (caps.global - global).min(caps.per_node - mine).min(max);
    if free <= 0 {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let claimed: Vec<Claimed> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM calls WHERE status = 'scheduled' AND due_at <= $1
             ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE calls c SET status = 'in_progress', node_id = $2, lease_expires_at = $3,
                    started_at = coalesce(c.started_at, $1)
             FROM due WHERE c.id = due.id
             RETURNING c.id, c.elder_id, c.direction, c.purpose, c.flow, c.due_at, c.ladder
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
             SELECT $1, 'engine', 'call.claim', 'call', id, elder_id, jsonb_build_object('node_id', $2)
             FROM claimed
         )
         SELECT * FROM claimed ORDER BY due_at, id",
    )
    .bind(now)
    .bind(node_id)
    .bind(now + lease)
    .bind(free)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Calls in progress: (all nodes, this node).
pub async fn in_progress<'e>(db: impl PgExecutor<'e>, node_id: &str) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE node_id = $1) FROM calls WHERE status = 'in_progress'",
    )
    .bind(node_id)
    .fetch_one(db)
    .await?)
}

/// Extend this node's lease on a call. `false` means the call is no longer
/// this node's (its lease expired and it was rescued): stop working on it.
pub async fn renew_lease<'e>(
    db: impl PgExecutor<'e>,
    call_id: i64,
    node_id: &str,
    until: DateTime<Utc>,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE calls SET lease_expires_at = $3 WHERE id = $1 AND node_id = $2 AND status = 'in_progress'",
    )
    .bind(call_id)
    .bind(node_id)
    .bind(until)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A call closed as interrupted and the call scheduled in its place.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Rescued {
    pub interrupted: i64,
    pub replacement: Option<i64>,
}

/// Close calls whose lease expired (their node died) as `interrupted`, end
/// their open attempts, and schedule a replacement due now. Safe on every
/// node at once (SKIP LOCKED).
pub async fn rescue_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Rescued>> {
    let mut tx = pool.begin().await?;
    #[derive(sqlx::FromRow)]
    struct Dead {
        id: i64,
        elder_id: i64,
        purpose: String,
        flow: Option<String>,
        node_id: Option<String>,
    }
    let dead: Vec<Dead> = sqlx::query_as(
        "WITH dead AS (
             SELECT id, node_id FROM calls WHERE status = 'in_progress' AND lease_expires_at <= $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE calls c SET status = 'interrupted', outcome = 'interrupted', ended_at = $1,
                node_id = NULL, lease_expires_at = NULL
         FROM dead WHERE c.id = dead.id
         RETURNING c.id, c.elder_id, c.purpose, c.flow, dead.node_id AS node_id",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::new();
    for Dead {
        id,
        elder_id,
        purpose,
        flow,
        node_id: node,
    } in dead
    {
        sqlx::query(
            "UPDATE call_attempts SET status = 'interrupted', ended_at = $2, end_reason = 'engine node stopped'
             WHERE call_id = $1 AND status IN ('dialing', 'ringing', 'answered')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The elder is no longer on a line that is gone: consoles stop
        // offering to join, and conversations on the dead node are closed.
        sqlx::query(
            "WITH e AS (
                 UPDATE escalations SET elder_left_at = $2, version = version + 1
                 WHERE call_id = $1 AND status <> 'resolved' AND elder_on_line AND elder_left_at IS NULL
                 RETURNING id, elder_id
             ), t AS (
                 UPDATE operator_talks
                 SET status = CASE status WHEN 'ringing' THEN 'failed' ELSE 'ended' END,
                     ended_at = $2, ended_by = 'engine', end_reason = 'the engine node running the call stopped'
                 WHERE call_id = $1 AND status IN ('ringing', 'live')
                 RETURNING id
             )
             INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
             SELECT $2, 'system', 'escalation.elder_left', 'escalation', e.id, e.elder_id,
                    jsonb_build_object('call_id', $1::bigint, 'talks_closed', (SELECT count(*) FROM t))
             FROM e",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // A check-in is tried again; an interrupted help call becomes a call back.
        let (purpose, flow) = if purpose == "checkin" {
            ("checkin", flow.unwrap_or_else(|| "daily_checkin".into()))
        } else {
            ("callback", "operator_callback".to_string())
        };
        let replacement: Option<i64> = sqlx::query_scalar(
            "INSERT INTO calls (elder_id, direction, purpose, flow, due_at, created_at, replaces)
             VALUES ($1, 'outbound', $2, $3, $4, $4, $5)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(elder_id)
        .bind(purpose)
        .bind(&flow)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        audit::record(
            &mut *tx,
            now,
            NewEvent {
                actor: Actor::System,
                action: "call.interrupted",
                entity: "call",
                entity_id: Some(id),
                elder_id: Some(elder_id),
                details: serde_json::json!({"node_id": node, "replacement": replacement}),
            },
        )
        .await?;
        out.push(Rescued {
            interrupted: id,
            replacement,
        });
    }
    tx.commit().await?;
    Ok(out)
}

/// Who an attempt rings.
#[derive(Debug, Clone, Copy)]
pub enum Party {
    Elder,
    /// Emergency contact by position (1-based, the elder's order).
    Contact(i16),
}

/// Open an attempt (status `dialing`); returns its id.
pub async fn start_attempt(
    pool: &PgPool,
    call_id: i64,
    party: Party,
    now: DateTime<Utc>,
) -> Result<i64> {
    let (kind, position) = match party {
        Party::Elder => ("elder", None),
        Party::Contact(p) => ("contact", Some(p)),
    };
    Ok(sqlx::query_scalar(
        "INSERT INTO call_attempts (call_id, attempt_no, callee, contact_position, started_at)
         VALUES ($1, (SELECT coalesce(max(attempt_no), 0) + 1 FROM call_attempts WHERE call_id = $1), $2, $3, $4)
         RETURNING id",
    )
    .bind(call_id)
    .bind(kind)
    .bind(position)
    .bind(now)
    .fetch_one(pool)
    .await?)
}

/// Move an attempt on: `ringing`, `answered`, or an end state (`ended`,
/// `no_answer`, `busy`, `failed`, `interrupted`) with its reason.
pub async fn update_attempt<'e>(
    db: impl PgExecutor<'e>,
    attempt_id: i64,
    status: AttemptStatus,
    reason: Option<EndReason>,
    now: DateTime<Utc>,
) -> Result<()> {
    let (status, reason) = (status.as_str(), reason.map(EndReason::as_str));
    sqlx::query(
        "UPDATE call_attempts SET status = $2,
                answered_at = CASE WHEN $2 = 'answered' THEN $4 ELSE answered_at END,
                ended_at = CASE WHEN $2 IN ('ended', 'no_answer', 'busy', 'failed', 'interrupted') THEN $4 ELSE ended_at END,
                end_reason = coalesce($3, end_reason),
                outcome = CASE WHEN $2 = 'answered' THEN coalesce(outcome, 'answered') ELSE outcome END
         WHERE id = $1",
    )
    .bind(attempt_id)
    .bind(status)
    .bind(reason)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// An attempt that did not reach its callee: its end state, reason and
/// outcome code and the audit event, in one transaction. With `fix_number`
/// (the core's [`DialOutcome::needs_number_fix`]) the elder also gets a task
/// for an administrator to correct their number: opened, or counted again
/// when one is already open. `sip_status` is the SIP final response that
/// refused a telephone call, when one did. Returns the task's id, if any.
#[allow(clippy::too_many_arguments)]
pub async fn not_reached(
    pool: &PgPool,
    attempt_id: i64,
    status: AttemptStatus,
    reason: EndReason,
    outcome: DialOutcome,
    fix_number: bool,
    sip_status: Option<u16>,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let mut tx = pool.begin().await?;
    update_attempt(&mut *tx, attempt_id, status, Some(reason), now).await?;
    let (call_id, elder_id, callee): (i64, i64, String) = sqlx::query_as(
        "UPDATE call_attempts a SET outcome = $2, sip_status = $3 FROM calls c
         WHERE a.id = $1 AND c.id = a.call_id RETURNING c.id, c.elder_id, a.callee",
    )
    .bind(attempt_id)
    .bind(outcome.as_str())
    .bind(sip_status.map(|s| s as i16))
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "call attempt",
        id: attempt_id,
    })?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: "call.attempt_outcome",
            entity: "call",
            entity_id: Some(call_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({
                "attempt_id": attempt_id,
                "status": status.as_str(),
                "outcome": outcome.as_str(),
                "reason": reason.as_str(),
                "sip_status": sip_status,
            }),
        },
    )
    .await?;
    // Only the elder's own number: a contact's is not the elder's enrolment.
    let task = if fix_number && callee == "elder" {
        Some(open_number_fix(&mut tx, elder_id, attempt_id, outcome, now).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(task)
}

/// Open the elder's `fix_phone` task, or count another failure on the open one.
async fn open_number_fix(
    tx: &mut sqlx::PgConnection,
    elder_id: i64,
    attempt_id: i64,
    outcome: DialOutcome,
    now: DateTime<Utc>,
) -> Result<i64> {
    let (id, occurrences): (i64, i32) = sqlx::query_as(
        "INSERT INTO enrolment_tasks (elder_id, kind, outcome, first_attempt_id, last_attempt_id, created_at, last_seen_at)
         VALUES ($1, 'fix_phone', $2, $3, $3, $4, $4)
         ON CONFLICT (elder_id, kind) WHERE resolved_at IS NULL
         DO UPDATE SET occurrences = enrolment_tasks.occurrences + 1, outcome = EXCLUDED.outcome,
                       last_attempt_id = EXCLUDED.last_attempt_id, last_seen_at = EXCLUDED.last_seen_at
         RETURNING id, occurrences",
    )
    .bind(elder_id)
    .bind(outcome.as_str())
    .bind(attempt_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let action = if occurrences == 1 {
        "enrolment_task.open"
    } else {
        "enrolment_task.repeat"
    };
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action,
            entity: "elder",
            entity_id: Some(elder_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({
                "task_id": id,
                "kind": "fix_phone",
                "outcome": outcome.as_str(),
                "attempt_id": attempt_id,
                "occurrences": occurrences,
            }),
        },
    )
    .await?;
    Ok(id)
}

/// Put a call this node holds back in the schedule for a later attempt,
/// keeping the ladder's state with it.
pub async fn retry_later(
    pool: &PgPool,
    call_id: i64,
    node_id: &str,
    due_at: DateTime<Utc>,
    ladder: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let elder: Option<i64> = sqlx::query_scalar(
        "UPDATE calls SET status = 'scheduled', node_id = NULL, lease_expires_at = NULL, due_at = $3, ladder = $4
         WHERE id = $1 AND node_id = $2 AND status = 'in_progress' RETURNING elder_id",
    )
    .bind(call_id)
    .bind(node_id)
    .bind(due_at)
    .bind(ladder)
    .fetch_optional(&mut *tx)
    .await?;
    let elder = elder
        .ok_or_else(|| StoreError::Conflict("the call is no longer held by this node".into()))?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: "call.retry",
            entity: "call",
            entity_id: Some(call_id),
            elder_id: Some(elder),
            details: serde_json::json!({"due_at": due_at}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Keep the ladder's state on a call that is still in progress (between a
/// failed attempt and the next one on the same node).
pub async fn save_ladder<'e>(
    db: impl PgExecutor<'e>,
    call_id: i64,
    ladder: &serde_json::Value,
) -> Result<()> {
    sqlx::query("UPDATE calls SET ladder = $2 WHERE id = $1")
        .bind(call_id)
        .bind(ladder)
        .execute(db)
        .await?;
    Ok(())
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// `completed` with the call's outcome.
    Completed(CallOutcome),
    /// Nobody could be reached.
    Unreachable,
}

/// Close a call this node holds, with its flow path.
pub async fn finish(
    pool: &PgPool,
    call_id: i64,
    node_id: &str,
    end: CallEnd,
    flow_path: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    let (status, outcome) = match end {
        CallEnd::Completed(o) => ("completed", o.as_str()),
        CallEnd::Unreachable => ("unreachable", "unreachable"),
    };
    let mut tx = pool.begin().await?;
    let elder: Option<i64> = sqlx::query_scalar(
        "UPDATE calls SET status = $3, outcome = $4, flow_path = $5, ended_at = $6,
                node_id = NULL, lease_expires_at = NULL
         WHERE id = $1 AND node_id = $2 AND status = 'in_progress' RETURNING elder_id",
    )
    .bind(call_id)
    .bind(node_id)
    .bind(status)
    .bind(outcome)
    .bind(flow_path)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let elder = elder
        .ok_or_else(|| StoreError::Conflict("the call is no longer held by this node".into()))?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: if status == "completed" {
                "call.complete"
            } else {
                "call.unreachable"
            },
            entity: "call",
            entity_id: Some(call_id),
            elder_id: Some(elder),
            details: serde_json::json!({"outcome": outcome}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Open a call an elder placed (already answered), held by this node.
pub async fn open_inbound(
    pool: &PgPool,
    elder_id: i64,
    node_id: &str,
    flow: &str,
    lease: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, status, flow, due_at, created_at, started_at, node_id, lease_expires_at)
         VALUES ($1, 'inbound', 'help', 'in_progress', $2, $3, $3, $3, $4, $5) RETURNING id",
    )
    .bind(elder_id)
    .bind(flow)
    .bind(now)
    .bind(node_id)
    .bind(now + lease)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: "call.inbound",
            entity: "call",
            entity_id: Some(id),
            elder_id: Some(elder_id),
            details: serde_json::json!({"node_id": node_id}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// End a call this node holds as `interrupted` after a fault in the engine,
/// and schedule a replacement (as the rescuer would for a dead node).
pub async fn interrupt(
    pool: &PgPool,
    call_id: i64,
    node_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    // Expire the lease now, then rescue it like any other.
    sqlx::query(
        "UPDATE calls SET lease_expires_at = $3 WHERE id = $1 AND node_id = $2 AND status = 'in_progress'",
    )
    .bind(call_id)
    .bind(node_id)
    .bind(now)
    .execute(pool)
    .await?;
    let rescued = rescue_expired(pool, now).await?;
    Ok(rescued
        .iter()
        .find(|r| r.interrupted == call_id)
        .and_then(|r| r.replacement))
}
