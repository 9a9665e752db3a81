//! The escalation queue: the semantics of a real call-centre queue.
//!
//! * Order: level (emergency > urgent > watch), then age, then id — the
//!   `escalations_queue` index has exactly this order.
//! * Claim: one statement finds, locks (`FOR UPDATE SKIP LOCKED`), marks the
//!   item and writes its audit event; two operators can never hold one item.
//! * Lease: a claim lasts `lease` and is renewed by the console; an expired
//!   lease is rescued back to `open` keeping its original `created_at`.
//! * Completion is guarded by the lease: a resolve after the lease expired is
//!   refused, not applied.
//! * Exactly one open escalation per call: flagging a call again raises the
//!   level and appends reasons (a partial unique index enforces it).
//! * Scope: every query takes the caller's [`Scope`]; items outside the
//!   operator's unit are invisible — not readable, claimable or countable.
//! * Nothing is deleted; every change writes an audit event in the same
//!   statement or transaction; the table trigger NOTIFYs listeners.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use voicecare_core::Level;
use voicecare_core::redact::{Personal, redacted_opt, redacted_words};

use crate::audit::{self, Actor, NewEvent};
use crate::error::{Result, StoreError};
use crate::operators::{Role, Scope};

/// The channel the escalations trigger notifies on.
pub const CHANNEL: &str = "voicecare_escalations";

/// How soon an operator must pick up an item of each level (a rule of the core).
pub use voicecare_core::session::policy::SlaPolicy;

/// Outcome codes an operator resolves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    NoAction,
    CalledBack,
    ContactedFamily,
    DispatchedEmergencyServices,
    WelfareVisit,
    FalseAlarm,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NoAction => "no_action",
            Outcome::CalledBack => "called_back",
            Outcome::ContactedFamily => "contacted_family",
            Outcome::DispatchedEmergencyServices => "dispatched_emergency_services",
            Outcome::WelfareVisit => "welfare_visit",
            Outcome::FalseAlarm => "false_alarm",
        }
    }
}

/// `Debug` leaves out the reasons (they quote the reply) and the resolution
/// notes.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct Escalation {
    pub id: i64,
    pub call_id: i64,
    pub elder_id: i64,
    pub level: String,
    pub status: String,
    pub categories: Vec<String>,
    pub reasons: serde_json::Value,
    /// The flow kept the elder on the line for an operator.
    pub elder_on_line: bool,
    /// When a held elder left the line (hung up or the call ended).
    pub elder_left_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub sla_deadline: DateTime<Utc>,
    pub first_claimed_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<i64>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<i64>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub resolution_notes: Option<String>,
    pub version: i32,
}

impl std::fmt::Debug for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalation")
            .field("id", &self.id)
            .field("call_id", &self.call_id)
            .field("elder_id", &self.elder_id)
            .field("level", &self.level)
            .field("status", &self.status)
            .field("categories", &self.categories)
            .field("reasons", &Personal::new(()))
            .field("elder_on_line", &self.elder_on_line)
            .field("elder_left_at", &self.elder_left_at)
            .field("created_at", &self.created_at)
            .field("sla_deadline", &self.sla_deadline)
            .field("first_claimed_at", &self.first_claimed_at)
            .field("claimed_by", &self.claimed_by)
            .field("claimed_at", &self.claimed_at)
            .field("lease_expires_at", &self.lease_expires_at)
            .field("resolved_by", &self.resolved_by)
            .field("resolved_at", &self.resolved_at)
            .field("outcome", &self.outcome)
            .field("resolution_notes", &redacted_opt(&self.resolution_notes))
            .field("version", &self.version)
            .finish()
    }
}

const COLS: &str = "e.id, e.call_id, e.elder_id, e.level, e.status, e.categories, e.reasons, e.elder_on_line,
    e.elder_left_at, e.created_at, e.sla_deadline, e.first_claimed_at, e.claimed_by, e.claimed_at, e.lease_expires_at,
    e.resolved_by, e.resolved_at, e.outcome, e.resolution_notes, e.version";

/// Scope test for an escalation aliased `e`: the elder's community lies under
/// the unit. A plain column test (no join), so the planner keeps walking the
/// queue index in order and checks scope row by row.
const IN_SCOPE: &str = "$1::bigint = ANY(e.unit_path)";

/// A finding to put in front of a person. `Debug` leaves out the reasons.
#[derive(Clone)]
pub struct Flag {
    pub call_id: i64,
    pub level: Level,
    pub categories: Vec<String>,
    /// The classifier's reasons, `[{category, evidence, rule, ...}]`.
    pub reasons: serde_json::Value,
    pub elder_on_line: bool,
}

impl std::fmt::Debug for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flag")
            .field("call_id", &self.call_id)
            .field("level", &self.level)
            .field("categories", &self.categories)
            .field("reasons", &Personal::new(()))
            .field("elder_on_line", &self.elder_on_line)
            .finish()
    }
}

impl Flag {
    /// A call's escalation as the session decided it.
    pub fn from_escalation(
        call_id: i64,
        e: &voicecare_core::session::escalation::Escalation,
    ) -> Self {
        Self {
            call_id,
            level: e.level,
            categories: e.categories.clone(),
            reasons: serde_json::to_value(&e.reasons).unwrap_or_else(|_| serde_json::json!([])),
            elder_on_line: e.elder_on_line,
        }
    }
}

/// Flag a call: open an escalation, or raise the open one for this call.
///
/// Idempotent in effect: flagging the same call twice never creates a second
/// open item; the level only goes up; reasons accumulate.
pub async fn flag(
    pool: &PgPool,
    f: &Flag,
    sla: &SlaPolicy,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    if !f.level.escalates() {
        return Err(StoreError::invalid(
            "level",
            "only watch, urgent or emergency are queued",
        ));
    }
    if !f.reasons.is_array() {
        return Err(StoreError::invalid("reasons", "must be a JSON array"));
    }
    let deadline = now + sla.for_level(f.level);
    let mut tx = pool.begin().await?;
    // `xmax = 0` tells a fresh insert from an update of the existing open row.
    let (esc, inserted): (Escalation, bool) = {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            e: Escalation,
            inserted: bool,
        }
        let r: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO escalations AS e (call_id, elder_id, level, categories, reasons, elder_on_line, created_at, sla_deadline)
             SELECT c.id, c.elder_id, $2, $3, $4, $5, $6, $7 FROM calls c WHERE c.id = $1
             ON CONFLICT (call_id) WHERE status <> 'resolved' DO UPDATE SET
                level = CASE WHEN (CASE EXCLUDED.level WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 ELSE 1 END) > e.priority
                             THEN EXCLUDED.level ELSE e.level END,
                categories = ARRAY(SELECT DISTINCT unnest(e.categories || EXCLUDED.categories) ORDER BY 1),
                reasons = e.reasons || EXCLUDED.reasons,
                elder_on_line = e.elder_on_line OR EXCLUDED.elder_on_line,
                -- A raised level brings its tighter deadline, measured from the original age.
                sla_deadline = LEAST(e.sla_deadline, e.created_at + (EXCLUDED.sla_deadline - EXCLUDED.created_at)),
                version = e.version + 1
             RETURNING {COLS}, (xmax = 0) AS inserted"
        )))
        .bind(f.call_id)
        .bind(f.level.as_str())
        .bind(&f.categories)
        .bind(&f.reasons)
        .bind(f.elder_on_line)
        .bind(now)
        .bind(deadline)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound {
            entity: "call",
            id: f.call_id,
        })?;
        (r.e, r.inserted)
    };
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: if inserted {
                "escalation.open"
            } else {
                "escalation.raise"
            },
            entity: "escalation",
            entity_id: Some(esc.id),
            elder_id: Some(esc.elder_id),
            details: serde_json::json!({
                "flagged_level": f.level.as_str(),
                "level": esc.level,
                "categories": f.categories,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(esc)
}

/// Filters for listing the queue.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListFilter {
    /// Levels to include; empty = all.
    #[serde(default)]
    pub levels: Vec<String>,
    /// Statuses to include; empty = open and claimed.
    #[serde(default)]
    pub statuses: Vec<String>,
    pub limit: Option<i64>,
}

/// One row of the queue as operators see it.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct QueueItem {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub escalation: Escalation,
    pub elder_name: String,
    pub elder_language: String,
    pub community: String,
    pub claimed_by_name: Option<String>,
    pub breached: bool,
}

/// The elder's name prints as redacted: a queue row in a log line or a
/// panic message must not say who called.
impl std::fmt::Debug for QueueItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueItem")
            .field("escalation", &self.escalation)
            .field("elder_name", &voicecare_core::redact::Personal::new(()))
            .field("elder_language", &self.elder_language)
            .field("community", &self.community)
            .field("claimed_by_name", &self.claimed_by_name)
            .field("breached", &self.breached)
            .finish()
    }
}

pub async fn list(
    pool: &PgPool,
    scope: &Scope,
    filter: &ListFilter,
    now: DateTime<Utc>,
) -> Result<Vec<QueueItem>> {
    for l in &filter.levels {
        if !["emergency", "urgent", "watch"].contains(&l.as_str()) {
            return Err(StoreError::invalid("level", format!("unknown level {l:?}")));
        }
    }
    for s in &filter.statuses {
        if !["open", "claimed", "resolved"].contains(&s.as_str()) {
            return Err(StoreError::invalid(
                "status",
                format!("unknown status {s:?}"),
            ));
        }
    }
    let statuses: Vec<String> = if filter.statuses.is_empty() {
        vec!["open".into(), "claimed".into()]
    } else {
        filter.statuses.clone()
    };
    let limit = filter.limit.unwrap_or(200).clamp(1, 1000);
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS}, el.full_name AS elder_name, el.language AS elder_language, u.name AS community,
                o.display_name AS claimed_by_name,
                COALESCE(e.first_claimed_at, $4) > e.sla_deadline AS breached
         FROM escalations e
         JOIN elders el ON el.id = e.elder_id
         JOIN org_units u ON u.id = el.community_id
         LEFT JOIN operators o ON o.id = e.claimed_by
         WHERE $1::bigint = ANY(e.unit_path)
           AND e.status = ANY($2)
           AND (cardinality($3::text[]) = 0 OR e.level = ANY($3))
         ORDER BY (e.status = 'resolved'), e.priority DESC, e.created_at, e.id
         LIMIT $5"
    )))
    .bind(scope.unit_id)
    .bind(&statuses)
    .bind(&filter.levels)
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Completes a statement whose CTE `target` locked one open row: mark it
/// claimed by `$2` at `$3` for lease `$4`, write the audit event, return it.
fn claim_target() -> String {
    format!(
        ", claimed AS (
             UPDATE escalations e SET status = 'claimed', claimed_by = $2, claimed_at = $3,
                    lease_expires_at = $3 + $4, first_claimed_at = COALESCE(e.first_claimed_at, $3),
                    version = e.version + 1
             FROM target WHERE e.id = target.id
             RETURNING {COLS}
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $3, 'operator', $2, 'escalation.claim', 'escalation', c.id, c.elder_id,
                    jsonb_build_object('level', c.level, 'lease_expires_at', c.lease_expires_at)
             FROM claimed c
         )
         SELECT * FROM claimed e"
    )
}

/// Claim the next open item in the caller's scope (optionally of given levels).
pub async fn claim_next(
    pool: &PgPool,
    scope: &Scope,
    levels: &[String],
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Escalation>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH target AS (
             SELECT e.id FROM escalations e
             WHERE e.status = 'open' AND {IN_SCOPE}
               AND (cardinality($5::text[]) = 0 OR e.level = ANY($5))
             ORDER BY e.priority DESC, e.created_at, e.id
             LIMIT 1 FOR UPDATE OF e SKIP LOCKED
         ){claim}",
        claim = claim_target()
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(lease)
    .bind(levels)
    .fetch_optional(pool)
    .await?)
}

/// Claim one specific item. If another operator got there first, the error
/// says who holds it. Unlike `claim_next` this waits for a concurrent claim's
/// row lock instead of skipping the row: after the wait PostgreSQL re-checks
/// `status = 'open'` against the committed row, so the loser's refusal names
/// the winner rather than reporting a stale "open".
pub async fn claim(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    let claimed: Option<Escalation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH target AS (
             SELECT e.id FROM escalations e
             WHERE e.id = $5 AND e.status = 'open' AND {IN_SCOPE}
             FOR UPDATE OF e
         ){claim}",
        claim = claim_target()
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(lease)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match claimed {
        Some(e) => Ok(e),
        None => Err(explain_refusal(pool, scope, id, "claim").await),
    }
}

/// Status, holder id, holder name and lease end of one escalation.
type HolderRow = (String, Option<i64>, Option<String>, Option<DateTime<Utc>>);

/// Why an action on `id` did not apply, in the caller's terms.
async fn explain_refusal(pool: &PgPool, scope: &Scope, id: i64, action: &str) -> StoreError {
    let row: Result<Option<HolderRow>, _> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT e.status, e.claimed_by, o.display_name, e.lease_expires_at
             FROM escalations e LEFT JOIN operators o ON o.id = e.claimed_by
             WHERE e.id = $2 AND {IN_SCOPE}"
    )))
    .bind(scope.unit_id)
    .bind(id)
    .fetch_optional(pool)
    .await;
    match row {
        Err(e) => e.into(),
        Ok(None) => StoreError::NotFound {
            entity: "escalation",
            id,
        },
        Ok(Some((status, by, name, _))) => match status.as_str() {
            "claimed" if by != Some(scope.operator_id) => StoreError::Conflict(format!(
                "cannot {action}: escalation {id} is held by {}",
                name.unwrap_or_else(|| "another operator".into())
            )),
            "claimed" => StoreError::Conflict(format!(
                "cannot {action}: your lease on escalation {id} has expired; claim it again"
            )),
            "resolved" => StoreError::Conflict(format!(
                "cannot {action}: escalation {id} is already resolved"
            )),
            _ => StoreError::Conflict(format!(
                "cannot {action}: escalation {id} is not claimed by you (it is {status}; your lease may have expired)"
            )),
        },
    }
}

/// Extend a live lease held by the caller.
pub async fn renew(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    let e: Option<Escalation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE escalations e SET lease_expires_at = $3 + $4
         WHERE e.id = $5 AND e.status = 'claimed' AND e.claimed_by = $2 AND e.lease_expires_at > $3 AND {IN_SCOPE}
         RETURNING {COLS}"
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(lease)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match e {
        Some(e) => Ok(e),
        None => Err(explain_refusal(pool, scope, id, "renew").await),
    }
}

/// Give an item back to the queue (it keeps its original age).
pub async fn release(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    let e: Option<Escalation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH released AS (
             UPDATE escalations e SET status = 'open', claimed_by = NULL, claimed_at = NULL,
                    lease_expires_at = NULL, version = e.version + 1
             WHERE e.id = $4 AND e.status = 'claimed' AND e.claimed_by = $2 AND e.lease_expires_at > $3 AND {IN_SCOPE}
             RETURNING {COLS}
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $3, 'operator', $2, 'escalation.release', 'escalation', r.id, r.elder_id, '{{}}'::jsonb FROM released r
         )
         SELECT * FROM released e"
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match e {
        Some(e) => Ok(e),
        None => Err(explain_refusal(pool, scope, id, "release").await),
    }
}

pub const MAX_NOTE_CHARS: usize = 4000;

fn check_note(field: &str, notes: &str) -> Result<()> {
    let n = notes.chars().count();
    if n > MAX_NOTE_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("is {n} characters; the limit is {MAX_NOTE_CHARS}"),
        ));
    }
    Ok(())
}

/// Resolve an item the caller holds under a live lease. A late resolve (the
/// lease expired and the item went back to the queue) is refused.
pub async fn resolve(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    outcome: Outcome,
    notes: &str,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    check_note("notes", notes)?;
    let e: Option<Escalation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH resolved AS (
             UPDATE escalations e SET status = 'resolved', resolved_by = $2, resolved_at = $3, outcome = $5,
                    resolution_notes = NULLIF($6, ''), claimed_by = NULL, claimed_at = NULL,
                    lease_expires_at = NULL, version = e.version + 1
             WHERE e.id = $4 AND e.status = 'claimed' AND e.claimed_by = $2 AND e.lease_expires_at > $3 AND {IN_SCOPE}
             RETURNING {COLS}
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $3, 'operator', $2, 'escalation.resolve', 'escalation', r.id, r.elder_id,
                    jsonb_build_object('outcome', r.outcome) FROM resolved r
         )
         SELECT * FROM resolved e"
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(id)
    .bind(outcome.as_str())
    .bind(notes)
    .fetch_optional(pool)
    .await?;
    match e {
        Some(e) => Ok(e),
        None => Err(explain_refusal(pool, scope, id, "resolve").await),
    }
}

/// Put a resolved item back in the queue (supervisors and admins only).
pub async fn reopen(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Escalation> {
    if scope.role < Role::Supervisor {
        return Err(StoreError::Conflict(
            "only a supervisor can reopen an escalation".into(),
        ));
    }
    check_note("reason", reason)?;
    let e: Option<Escalation> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH prev AS (
             SELECT e.id, e.outcome, e.resolved_by FROM escalations e
             WHERE e.id = $4 AND e.status = 'resolved' AND {IN_SCOPE} FOR UPDATE
         ), reopened AS (
             UPDATE escalations e SET status = 'open', resolved_by = NULL, resolved_at = NULL, outcome = NULL,
                    resolution_notes = NULL, version = e.version + 1
             FROM prev WHERE e.id = prev.id
             RETURNING {COLS}, prev.outcome AS prev_outcome, prev.resolved_by AS prev_resolved_by
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $3, 'operator', $2, 'escalation.reopen', 'escalation', r.id, r.elder_id,
                    jsonb_build_object('previous_outcome', r.prev_outcome, 'previous_resolved_by', r.prev_resolved_by,
                                       'reason', $5::text)
             FROM reopened r
         )
         SELECT {COLS} FROM reopened e"
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(id)
    .bind(reason)
    .fetch_optional(pool)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Constraint { constraint, .. } if constraint == "escalations_one_open_per_call" => {
            StoreError::Conflict(format!("cannot reopen escalation {id}: its call already has an open escalation"))
        }
        other => other,
    })?;
    match e {
        Some(e) => Ok(e),
        None => Err(explain_refusal(pool, scope, id, "reopen").await),
    }
}

/// An operator's note on an escalation. `Debug` shows its length only.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct Note {
    pub id: i64,
    pub escalation_id: i64,
    pub operator_id: i64,
    pub operator_name: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Note")
            .field("id", &self.id)
            .field("escalation_id", &self.escalation_id)
            .field("operator_id", &self.operator_id)
            .field("operator_name", &self.operator_name)
            .field("body", &redacted_words(&self.body))
            .field("created_at", &self.created_at)
            .finish()
    }
}

pub async fn add_note(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    body: &str,
    now: DateTime<Utc>,
) -> Result<Note> {
    if body.trim().is_empty() {
        return Err(StoreError::invalid("body", "a note cannot be empty"));
    }
    check_note("body", body)?;
    let note: Option<Note> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH target AS (
             SELECT e.id, e.elder_id FROM escalations e WHERE e.id = $4 AND {IN_SCOPE}
         ), note AS (
             INSERT INTO escalation_notes (escalation_id, operator_id, body, created_at)
             SELECT id, $2, $5, $3 FROM target
             RETURNING id, escalation_id, operator_id, body, created_at
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $3, 'operator', $2, 'escalation.note', 'escalation', t.id, t.elder_id,
                    jsonb_build_object('note_id', n.id) FROM target t, note n
         )
         SELECT n.id, n.escalation_id, n.operator_id, o.display_name AS operator_name, n.body, n.created_at
         FROM note n JOIN operators o ON o.id = n.operator_id"
    )))
    .bind(scope.unit_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(id)
    .bind(body)
    .fetch_optional(pool)
    .await?;
    note.ok_or(StoreError::NotFound {
        entity: "escalation",
        id,
    })
}

/// Put items whose lease ran out back in the queue, keeping their age.
/// Returns how many were rescued. Run periodically by every engine node.
pub async fn rescue_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "WITH rescued AS (
             UPDATE escalations e SET status = 'open', claimed_by = NULL, claimed_at = NULL,
                    lease_expires_at = NULL, version = e.version + 1
             FROM (SELECT id, claimed_by AS prev_holder FROM escalations
                   WHERE status = 'claimed' AND lease_expires_at <= $1 FOR UPDATE SKIP LOCKED) x
             WHERE e.id = x.id
             RETURNING e.id, e.elder_id, x.prev_holder
         ), audit AS (
             INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
             SELECT $1, 'system', 'escalation.lease_expired', 'escalation', r.id, r.elder_id,
                    jsonb_build_object('previous_holder', r.prev_holder) FROM rescued r
         )
         SELECT count(*) FROM rescued",
    )
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// One escalation, if the caller's scope covers it.
pub async fn get<'e>(db: impl PgExecutor<'e>, scope: &Scope, id: i64) -> Result<Escalation> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM escalations e WHERE e.id = $2 AND {IN_SCOPE}"
    )))
    .bind(scope.unit_id)
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "escalation",
        id,
    })
}

pub async fn notes<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<Vec<Note>> {
    Ok(sqlx::query_as(
        "SELECT n.id, n.escalation_id, n.operator_id, o.display_name AS operator_name, n.body, n.created_at
         FROM escalation_notes n JOIN operators o ON o.id = n.operator_id
         WHERE n.escalation_id = $1 ORDER BY n.created_at, n.id",
    )
    .bind(id)
    .fetch_all(db)
    .await?)
}

/// Queue depth and age per level inside the caller's scope.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LevelCount {
    pub level: String,
    pub open: i64,
    pub claimed: i64,
    pub breached: i64,
    pub oldest_open_secs: Option<f64>,
}

pub async fn counts(pool: &PgPool, scope: &Scope, now: DateTime<Utc>) -> Result<Vec<LevelCount>> {
    level_counts(pool, Some(scope.unit_id), now).await
}

/// The same counts over every unit, for the node's metrics (not an operator view).
pub async fn counts_everywhere(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<LevelCount>> {
    level_counts(pool, None, now).await
}

async fn level_counts(
    pool: &PgPool,
    unit: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Vec<LevelCount>> {
    Ok(sqlx::query_as(
        "SELECT l.level,
                count(e.id) FILTER (WHERE e.status = 'open') AS open,
                count(e.id) FILTER (WHERE e.status = 'claimed') AS claimed,
                count(e.id) FILTER (WHERE e.status <> 'resolved' AND COALESCE(e.first_claimed_at, $2) > e.sla_deadline) AS breached,
                EXTRACT(EPOCH FROM $2 - min(e.created_at) FILTER (WHERE e.status = 'open'))::float8 AS oldest_open_secs
         FROM (VALUES ('emergency', 3), ('urgent', 2), ('watch', 1)) AS l(level, p)
         LEFT JOIN escalations e
              ON e.level = l.level AND e.status <> 'resolved'
                 AND ($1::bigint IS NULL OR $1::bigint = ANY(e.unit_path))
         GROUP BY l.level, l.p ORDER BY l.p DESC",
    )
    .bind(unit)
    .bind(now)
    .fetch_all(pool)
    .await?)
}

/// Queue depth rolled up by organisational unit at one level, within scope.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UnitRollup {
    pub unit_id: i64,
    pub unit_name: String,
    pub emergency: i64,
    pub urgent: i64,
    pub watch: i64,
    pub breached: i64,
    pub oldest_open_secs: Option<f64>,
}

pub async fn rollup(
    pool: &PgPool,
    scope: &Scope,
    by: crate::org::UnitLevel,
    now: DateTime<Utc>,
) -> Result<Vec<UnitRollup>> {
    Ok(sqlx::query_as(
        "SELECT g.id AS unit_id, g.name AS unit_name,
                count(e.id) FILTER (WHERE e.level = 'emergency') AS emergency,
                count(e.id) FILTER (WHERE e.level = 'urgent') AS urgent,
                count(e.id) FILTER (WHERE e.level = 'watch') AS watch,
                count(e.id) FILTER (WHERE COALESCE(e.first_claimed_at, $2) > e.sla_deadline) AS breached,
                EXTRACT(EPOCH FROM $2 - min(e.created_at) FILTER (WHERE e.status = 'open'))::float8 AS oldest_open_secs
         FROM org_units g
         LEFT JOIN escalations e
              ON e.status <> 'resolved' AND e.unit_path[$3] = g.id AND $1::bigint = ANY(e.unit_path)
         WHERE g.level = $4
           AND ($1::bigint = ANY(g.path) OR EXISTS (SELECT 1 FROM org_units me WHERE me.id = $1 AND g.id = ANY(me.path)))
         GROUP BY g.id, g.name ORDER BY g.name",
    )
    .bind(scope.unit_id)
    .bind(now)
    .bind(by.path_index())
    .bind(by.as_str())
    .fetch_all(pool)
    .await?)
}
