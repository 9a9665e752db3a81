//! Calls, attempts, utterances and assessments: what happened on the line.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use voicecare_core::redact::{redacted_opt, redacted_words};

use crate::audit::{self, Actor, NewEvent};
use crate::error::{Result, StoreError};
use crate::operators::Scope;

#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Checkin,
    Help,
    Callback,
}

/// Open a call record (scheduled, not yet held by any node).
pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    elder_id: i64,
    direction: Direction,
    purpose: Purpose,
    flow: &str,
    due_at: DateTime<Utc>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, flow, due_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
    )
    .bind(elder_id)
    .bind(match direction {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    })
    .bind(match purpose {
        Purpose::Checkin => "checkin",
        Purpose::Help => "help",
        Purpose::Callback => "callback",
    })
    .bind(flow)
    .bind(due_at)
    .fetch_one(db)
    .await?)
}

/// A transcribed reply to store.
pub struct NewUtterance<'a> {
    pub call_id: i64,
    /// The attempt (ring) of the call it was heard in.
    pub attempt_id: Option<i64>,
    /// Unique within the call, across all its attempts.
    pub seq: i32,
    pub flow_step: Option<&'a str>,
    pub transcript: &'a str,
    pub language: Option<voicecare_core::Lang>,
    pub confidence: Option<f32>,
    pub audio_path: Option<&'a str>,
    pub audio_ms: Option<i32>,
    pub asr_queue_ms: Option<i32>,
    pub asr_decode_ms: Option<i32>,
}

/// The highest utterance number used so far in a call (0 when none): a
/// retried attempt continues the call's numbering instead of reusing it.
pub async fn last_utterance_seq<'e>(db: impl PgExecutor<'e>, call_id: i64) -> Result<i32> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM utterances WHERE call_id = $1")
            .bind(call_id)
            .fetch_one(db)
            .await?,
    )
}

/// Store an utterance and its assessment together.
pub async fn record_utterance(
    pool: &PgPool,
    u: &NewUtterance<'_>,
    assessment: &AssessmentRecord,
    now: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let mut tx = pool.begin().await?;
    let uid: i64 = sqlx::query_scalar(
        "INSERT INTO utterances (call_id, seq, flow_step, transcript, language, confidence, audio_path, audio_ms,
                                 asr_queue_ms, asr_decode_ms, created_at, attempt_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(u.call_id)
    .bind(u.seq)
    .bind(u.flow_step)
    .bind(u.transcript)
    .bind(u.language.map(voicecare_core::Lang::as_str))
    .bind(u.confidence)
    .bind(u.audio_path)
    .bind(u.audio_ms)
    .bind(u.asr_queue_ms)
    .bind(u.asr_decode_ms)
    .bind(now)
    .bind(u.attempt_id)
    .fetch_one(&mut *tx)
    .await?;
    let aid = insert_assessment(&mut *tx, u.call_id, Some(uid), assessment, now).await?;
    crate::concerns::from_reply(
        &mut tx,
        u.call_id,
        u.transcript,
        u.language,
        &assessment.reasons,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((uid, aid))
}

/// `Debug` leaves out the reasons: their evidence quotes the reply.
#[derive(Clone)]
pub struct AssessmentRecord {
    pub level: voicecare_core::Level,
    pub categories: Vec<String>,
    pub reasons: serde_json::Value,
    pub score: f32,
}

impl std::fmt::Debug for AssessmentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssessmentRecord")
            .field("level", &self.level)
            .field("categories", &self.categories)
            .field("reasons", &voicecare_core::redact::Personal::new(()))
            .field("score", &self.score)
            .finish()
    }
}

impl AssessmentRecord {
    /// The classifier's assessment as stored: categories by name, reasons as JSON.
    pub fn from_assessment(a: &voicecare_core::distress::Assessment) -> Self {
        Self {
            level: a.level,
            categories: a
                .categories
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            reasons: serde_json::to_value(&a.reasons).unwrap_or_else(|_| serde_json::json!([])),
            score: a.score,
        }
    }
}

pub async fn insert_assessment<'e>(
    db: impl PgExecutor<'e>,
    call_id: i64,
    utterance_id: Option<i64>,
    a: &AssessmentRecord,
    now: DateTime<Utc>,
) -> Result<i64> {
    if !a.reasons.is_array() {
        return Err(StoreError::invalid("reasons", "must be a JSON array"));
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO distress_assessments (call_id, utterance_id, level, categories, reasons, score, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(call_id)
    .bind(utterance_id)
    .bind(a.level.as_str())
    .bind(&a.categories)
    .bind(&a.reasons)
    .bind(a.score)
    .bind(now)
    .fetch_one(db)
    .await?)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CallView {
    pub id: i64,
    pub elder_id: i64,
    pub direction: String,
    pub purpose: String,
    pub status: String,
    pub outcome: Option<String>,
    pub flow: Option<String>,
    pub flow_path: Vec<String>,
    pub due_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    /// The most severe assessment of the call's replies (`ok` … `emergency`);
    /// `None` before any reply was judged.
    pub level: Option<String>,
}

/// A reply as the console shows it. `Debug` shows the transcript's length
/// and the reasons' presence only: both hold the elder's words.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct UtteranceView {
    pub id: i64,
    pub seq: i32,
    pub speaker: String,
    pub flow_step: Option<String>,
    pub transcript: String,
    pub language: Option<String>,
    pub confidence: Option<f32>,
    pub has_audio: bool,
    pub audio_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub level: Option<String>,
    pub reasons: Option<serde_json::Value>,
}

impl std::fmt::Debug for UtteranceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtteranceView")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("speaker", &self.speaker)
            .field("flow_step", &self.flow_step)
            .field("transcript", &redacted_words(&self.transcript))
            .field("language", &self.language)
            .field("confidence", &self.confidence)
            .field("has_audio", &self.has_audio)
            .field("audio_ms", &self.audio_ms)
            .field("created_at", &self.created_at)
            .field("level", &self.level)
            .field("reasons", &redacted_opt(&self.reasons))
            .finish()
    }
}

pub async fn view<'e>(db: impl PgExecutor<'e>, call_id: i64) -> Result<CallView> {
    sqlx::query_as(
        "SELECT c.id, c.elder_id, c.direction, c.purpose, c.status, c.outcome, c.flow, c.flow_path, c.due_at,
                c.started_at, c.ended_at, (SELECT count(*) FROM call_attempts a WHERE a.call_id = c.id) AS attempts,
                c.level
         FROM calls c WHERE c.id = $1",
    )
    .bind(call_id)
    .fetch_optional(db)
    .await?
    .ok_or(StoreError::NotFound { entity: "call", id: call_id })
}

/// The transcript of a call. Reading it is audited in the same transaction:
/// elders' words are health data.
pub async fn transcript(
    pool: &PgPool,
    scope: &Scope,
    call_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<UtteranceView>> {
    let mut tx = pool.begin().await?;
    let elder_id: Option<i64> = sqlx::query_scalar(
        "SELECT c.elder_id FROM calls c JOIN elders el ON el.id = c.elder_id JOIN org_units u ON u.id = el.community_id
         WHERE c.id = $2 AND $1::bigint = ANY(u.path)",
    )
    .bind(scope.unit_id)
    .bind(call_id)
    .fetch_optional(&mut *tx)
    .await?;
    let elder_id = elder_id.ok_or(StoreError::NotFound {
        entity: "call",
        id: call_id,
    })?;
    let rows: Vec<UtteranceView> = sqlx::query_as(
        "SELECT u.id, u.seq, u.speaker, u.flow_step, u.transcript, u.language, u.confidence,
                (u.audio_path IS NOT NULL) AS has_audio, u.audio_ms, u.created_at,
                a.level, a.reasons
         FROM utterances u LEFT JOIN LATERAL (
             SELECT level, reasons FROM distress_assessments d WHERE d.utterance_id = u.id ORDER BY d.id DESC LIMIT 1
         ) a ON TRUE
         WHERE u.call_id = $1 ORDER BY u.seq",
    )
    .bind(call_id)
    .fetch_all(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "call.read_transcript",
            entity: "call",
            entity_id: Some(call_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({"utterances": rows.len()}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Earlier calls of an elder with the highest level found in each (the trend).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CallHistoryItem {
    pub call_id: i64,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub outcome: Option<String>,
    pub max_level: Option<String>,
}

pub async fn history<'e>(
    db: impl PgExecutor<'e>,
    elder_id: i64,
    limit: i64,
) -> Result<Vec<CallHistoryItem>> {
    Ok(sqlx::query_as(
        "SELECT c.id AS call_id, c.created_at, c.status, c.outcome,
                (SELECT d.level FROM distress_assessments d WHERE d.call_id = c.id
                 ORDER BY CASE d.level WHEN 'emergency' THEN 3 WHEN 'urgent' THEN 2 WHEN 'watch' THEN 1 ELSE 0 END DESC
                 LIMIT 1) AS max_level
         FROM calls c WHERE c.elder_id = $1 ORDER BY c.created_at DESC LIMIT $2",
    )
    .bind(elder_id)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Where the recording of one utterance is stored (relative to the data
/// directory, or absolute), for an operator in scope. Listening is audited in
/// the same transaction as the look-up. Utterances outside the caller's scope,
/// and utterances without a recording, answer `NotFound`.
pub async fn utterance_audio_path(
    pool: &PgPool,
    scope: &Scope,
    utterance_id: i64,
    now: DateTime<Utc>,
) -> Result<String> {
    audit::listened(
        pool,
        "SELECT ut.call_id, c.elder_id, ut.audio_path
         FROM utterances ut JOIN calls c ON c.id = ut.call_id
         JOIN elders el ON el.id = c.elder_id JOIN org_units u ON u.id = el.community_id
         WHERE ut.id = $2 AND ut.audio_path IS NOT NULL AND $1::bigint = ANY(u.path)",
        scope,
        utterance_id,
        now,
        |call_id, elder_id| NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "utterance.listen",
            entity: "utterance",
            entity_id: Some(utterance_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({"call_id": call_id}),
        },
    )
    .await
}

/// Whisper's queue wait and decode time (ms) of every stored utterance, for
/// benchmarks on a throwaway database.
pub async fn asr_times<'e>(db: impl PgExecutor<'e>) -> Result<Vec<(i32, i32)>> {
    Ok(sqlx::query_as(
        "SELECT coalesce(asr_queue_ms, 0), coalesce(asr_decode_ms, 0) FROM utterances",
    )
    .fetch_all(db)
    .await?)
}
