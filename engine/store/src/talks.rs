//! Live talk: an operator speaking with the elder from the browser, either by
//! joining the call that kept the elder on the line or by calling back. Each
//! conversation is a row of `operator_talks`; starting, connecting and ending
//! one each write their audit event (on the escalation) in the same
//! transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::audit::{self, Actor, NewEvent};
use crate::elders::Phone;
use crate::error::{Result, StoreError};
use crate::operators::Scope;

/// What an operator who wants to talk about an escalation may reach.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TalkTarget {
    pub escalation_id: i64,
    pub elder_id: i64,
    pub call_id: i64,
    pub call_status: String,
    /// The node that holds the call while it is in progress.
    pub call_node: Option<String>,
    pub elder_on_line: bool,
    pub device_id: Option<String>,
    /// The elder's telephone number, rung through the SIP trunk when there
    /// is no device to ring. Redacted in `Debug`.
    pub phone: Option<Phone>,
    /// `zh` or `en`.
    pub language: String,
}

/// Check that the caller holds a live claim on the escalation and say where
/// its call is. Out of scope answers like missing.
pub async fn target(
    pool: &PgPool,
    scope: &Scope,
    escalation_id: i64,
    now: DateTime<Utc>,
) -> Result<TalkTarget> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        t: TalkTarget,
        status: String,
        claimed_by: Option<i64>,
        holder: Option<String>,
        lease_live: bool,
    }
    let r: Option<Row> = sqlx::query_as(
        "SELECT e.id AS escalation_id, e.elder_id, e.call_id, c.status AS call_status, c.node_id AS call_node,
                e.elder_on_line, el.device_id, el.phone, el.language,
                e.status, e.claimed_by, o.display_name AS holder,
                coalesce(e.lease_expires_at > $3, false) AS lease_live
         FROM escalations e JOIN calls c ON c.id = e.call_id JOIN elders el ON el.id = e.elder_id
         LEFT JOIN operators o ON o.id = e.claimed_by
         WHERE e.id = $2 AND $1::bigint = ANY(e.unit_path)",
    )
    .bind(scope.unit_id)
    .bind(escalation_id)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let r = r.ok_or(StoreError::NotFound {
        entity: "escalation",
        id: escalation_id,
    })?;
    let mine = r.status == "claimed" && r.claimed_by == Some(scope.operator_id);
    if mine && r.lease_live {
        return Ok(r.t);
    }
    Err(StoreError::Conflict(match r.status.as_str() {
        "claimed" if !mine => format!(
            "escalation {escalation_id} is held by {}; only the operator holding the claim can talk to the elder",
            r.holder.unwrap_or_else(|| "another operator".into())
        ),
        "claimed" => {
            format!("your claim on escalation {escalation_id} has expired; claim it again")
        }
        "resolved" => format!("escalation {escalation_id} is already resolved"),
        _ => format!("claim escalation {escalation_id} before talking to the elder"),
    }))
}

/// The claim guard shared by the statements that start a talk: the caller
/// holds the escalation under a live lease, in scope.
const HOLDS_CLAIM: &str = "SELECT 1 FROM escalations e WHERE e.id = $2 AND e.status = 'claimed'
     AND e.claimed_by = $3 AND e.lease_expires_at > $4 AND $1::bigint = ANY(e.unit_path)";

/// The operator joined the call that kept the elder on the line: the talk is
/// live from now. Refused unless the caller still holds the claim.
pub async fn start_join(
    pool: &PgPool,
    scope: &Scope,
    escalation_id: i64,
    call_id: i64,
    node_id: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let id: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH t AS (
             INSERT INTO operator_talks (escalation_id, call_id, operator_id, kind, node_id, status, started_at, bridged_at)
             SELECT $2, $5, $3, 'join', $6, 'live', $4, $4 WHERE EXISTS ({HOLDS_CLAIM})
             RETURNING id
         ), a AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $4, 'operator', $3, 'talk.join', 'escalation', $2, e.elder_id,
                    jsonb_build_object('talk_id', t.id, 'call_id', $5::bigint, 'node_id', $6::text)
             FROM t, escalations e WHERE e.id = $2
         )
         SELECT t.id FROM t"
    )))
    .bind(scope.unit_id)
    .bind(escalation_id)
    .bind(scope.operator_id)
    .bind(now)
    .bind(call_id)
    .bind(node_id)
    .fetch_optional(pool)
    .await?;
    match id {
        Some(id) => Ok(id),
        None => Err(target(pool, scope, escalation_id, now)
            .await
            .err()
            .unwrap_or_else(|| StoreError::Conflict("the talk could not be started".into()))),
    }
}

/// The operator calls the elder back: a new outbound `callback` call held by
/// this node (so its lease is kept and a dead node's call is rescued like any
/// other) and a ringing talk on it. Returns `(call_id, talk_id)`.
pub async fn start_callback(
    pool: &PgPool,
    scope: &Scope,
    escalation_id: i64,
    node_id: &str,
    lease: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let mut tx = pool.begin().await?;
    let elder: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT e.elder_id FROM escalations e WHERE e.id = $2 AND EXISTS ({HOLDS_CLAIM}) FOR UPDATE"
    )))
    .bind(scope.unit_id)
    .bind(escalation_id)
    .bind(scope.operator_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(elder) = elder else {
        drop(tx);
        return Err(target(pool, scope, escalation_id, now)
            .await
            .err()
            .unwrap_or_else(|| StoreError::Conflict("the call back could not be started".into())));
    };
    // The callback notice flow is what a rescued replacement of this call runs.
    let call: i64 = sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, status, flow, due_at, created_at, started_at, node_id, lease_expires_at)
         VALUES ($1, 'outbound', 'callback', 'in_progress', 'operator_callback', $2, $2, $2, $3, $4) RETURNING id",
    )
    .bind(elder)
    .bind(now)
    .bind(node_id)
    .bind(now + lease)
    .fetch_one(&mut *tx)
    .await?;
    let talk: i64 = sqlx::query_scalar(
        "INSERT INTO operator_talks (escalation_id, call_id, operator_id, kind, node_id, status, started_at)
         VALUES ($1, $2, $3, 'callback', $4, 'ringing', $5) RETURNING id",
    )
    .bind(escalation_id)
    .bind(call)
    .bind(scope.operator_id)
    .bind(node_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "talk.call_back",
            entity: "escalation",
            entity_id: Some(escalation_id),
            elder_id: Some(elder),
            details: serde_json::json!({"talk_id": talk, "call_id": call, "node_id": node_id}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((call, talk))
}

/// The elder answered a call back: the talk is live.
pub async fn connected(pool: &PgPool, talk_id: i64, now: DateTime<Utc>) -> Result<()> {
    let n: Option<i64> = sqlx::query_scalar(
        "WITH t AS (
             UPDATE operator_talks SET status = 'live', bridged_at = $2
             WHERE id = $1 AND status = 'ringing' RETURNING id, escalation_id, operator_id, call_id
         ), a AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $2, 'operator', t.operator_id, 'talk.connected', 'escalation', t.escalation_id, e.elder_id,
                    jsonb_build_object('talk_id', t.id, 'call_id', t.call_id)
             FROM t JOIN escalations e ON e.id = t.escalation_id
         )
         SELECT id FROM t",
    )
    .bind(talk_id)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    n.map(|_| ())
        .ok_or_else(|| StoreError::Conflict(format!("talk {talk_id} is not ringing")))
}

/// Who ended a conversation.
pub use voicecare_core::session::TalkEndedBy as EndedBy;

/// How a talk ended, and its recording if one was kept.
#[derive(Debug, Clone)]
pub struct TalkEnd<'a> {
    pub ended_by: EndedBy,
    pub reason: &'a str,
    pub recording_path: Option<&'a str>,
    pub recording_ms: Option<i32>,
}

/// Close a talk: `ended` if it was live, `failed` if it never connected (a
/// call back nobody answered). The audit event carries the durations.
pub async fn end(pool: &PgPool, talk_id: i64, end: &TalkEnd<'_>, now: DateTime<Utc>) -> Result<()> {
    let n: Option<i64> = sqlx::query_scalar(
        "WITH t AS (
             UPDATE operator_talks SET status = CASE status WHEN 'live' THEN 'ended' ELSE 'failed' END,
                    ended_at = $2, ended_by = $3, end_reason = $4, recording_path = $5, recording_ms = $6
             WHERE id = $1 AND status IN ('ringing', 'live')
             RETURNING id, escalation_id, operator_id, call_id, kind, status, started_at, bridged_at
         ), a AS (
             INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
             SELECT $2, 'operator', t.operator_id, 'talk.end', 'escalation', t.escalation_id, e.elder_id,
                    jsonb_build_object('talk_id', t.id, 'call_id', t.call_id, 'kind', t.kind, 'status', t.status,
                        'ended_by', $3::text, 'reason', $4::text, 'recorded', $5::text IS NOT NULL,
                        'talk_ms', CASE WHEN t.bridged_at IS NULL THEN 0
                                        ELSE (extract(epoch FROM $2 - t.bridged_at) * 1000)::bigint END,
                        'total_ms', (extract(epoch FROM $2 - t.started_at) * 1000)::bigint)
             FROM t JOIN escalations e ON e.id = t.escalation_id
         )
         SELECT id FROM t",
    )
    .bind(talk_id)
    .bind(now)
    .bind(end.ended_by.as_str())
    .bind(end.reason)
    .bind(end.recording_path)
    .bind(end.recording_ms)
    .fetch_optional(pool)
    .await?;
    n.map(|_| ())
        .ok_or_else(|| StoreError::Conflict(format!("talk {talk_id} has already ended")))
}

/// The elder of a held call is no longer on the line (hung up, or the
/// operator's conversation ended): `elder_left_at` is set and consoles, told
/// by the change notice, offer a call back instead of joining.
/// `elder_on_line` keeps saying that the flow held the elder for a person.
pub async fn elder_left(pool: &PgPool, call_id: i64, now: DateTime<Utc>) -> Result<bool> {
    let n: Option<i64> = sqlx::query_scalar(
        "WITH e AS (
             UPDATE escalations SET elder_left_at = $2, version = version + 1
             WHERE call_id = $1 AND status <> 'resolved' AND elder_on_line AND elder_left_at IS NULL
             RETURNING id, elder_id
         ), a AS (
             INSERT INTO audit_events (at, actor_kind, action, entity, entity_id, elder_id, details)
             SELECT $2, 'engine', 'escalation.elder_left', 'escalation', e.id, e.elder_id,
                    jsonb_build_object('call_id', $1::bigint)
             FROM e
         )
         SELECT id FROM e",
    )
    .bind(call_id)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(n.is_some())
}

/// One conversation as the console shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TalkView {
    pub id: i64,
    pub call_id: i64,
    pub kind: String,
    pub status: String,
    pub operator_id: i64,
    pub operator_name: String,
    pub started_at: DateTime<Utc>,
    pub bridged_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
    pub has_recording: bool,
    pub recording_ms: Option<i32>,
}

/// Conversations about an escalation, oldest first. The caller has already
/// checked the escalation is in scope.
pub async fn for_escalation(pool: &PgPool, escalation_id: i64) -> Result<Vec<TalkView>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.call_id, t.kind, t.status, t.operator_id, o.display_name AS operator_name,
                t.started_at, t.bridged_at, t.ended_at, t.ended_by, t.end_reason,
                (t.recording_path IS NOT NULL) AS has_recording, t.recording_ms
         FROM operator_talks t JOIN operators o ON o.id = t.operator_id
         WHERE t.escalation_id = $1 ORDER BY t.started_at, t.id",
    )
    .bind(escalation_id)
    .fetch_all(pool)
    .await?)
}

/// Where a conversation's recording is stored, for an operator in scope.
/// Listening is audited (`talk.listen`) in the same transaction as the
/// look-up; out of scope or not recorded answers `NotFound`.
pub async fn recording_path(
    pool: &PgPool,
    scope: &Scope,
    talk_id: i64,
    now: DateTime<Utc>,
) -> Result<String> {
    audit::listened(
        pool,
        "SELECT e.id, e.elder_id, t.recording_path
         FROM operator_talks t JOIN escalations e ON e.id = t.escalation_id
         WHERE t.id = $2 AND t.recording_path IS NOT NULL AND $1::bigint = ANY(e.unit_path)",
        scope,
        talk_id,
        now,
        |escalation, elder| NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "talk.listen",
            entity: "escalation",
            entity_id: Some(escalation),
            elder_id: Some(elder),
            details: serde_json::json!({"talk_id": talk_id}),
        },
    )
    .await
}
