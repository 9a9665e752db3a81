//! Elders' open concerns (`voicecare_core::memory`), kept call by call.
//!
//! A reply's findings are turned into concerns inside the transaction that
//! stores the reply ([`crate::calls::record_utterance`]), so a reply is never
//! stored without what it raised, and a spooled reply written later raises
//! them then. Updates of one elder's concerns take turns (a lock on the
//! elder's row), so two calls of the same elder on two nodes never both open
//! the same concern or both change one.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use voicecare_core::distress::{Category, Reason};
use voicecare_core::memory::{self, Change, Concern, Mention, Merge};
use voicecare_core::{Lang, Level};

use crate::audit::{self, Actor, NewEvent};
use crate::error::{Result, StoreError};

/// A concern as stored: its id, and the concern with its history.
#[derive(Debug, Clone, Serialize)]
pub struct StoredConcern {
    pub id: i64,
    #[serde(flatten)]
    pub concern: Concern,
}

/// Open or mention the concerns a stored reply raises (`reasons` as stored
/// with its assessment, `transcript` the reply they point into).
pub(crate) async fn from_reply(
    tx: &mut PgConnection,
    call_id: i64,
    transcript: &str,
    lang: Option<Lang>,
    reasons: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(lang) = lang else { return Ok(()) };
    // Reasons stored by other means may lack fields: then nothing is remembered.
    let reasons = Vec::<Reason>::deserialize(reasons).unwrap_or_default();
    if !reasons
        .iter()
        .any(|r| matches!(r.level, Level::Watch | Level::Urgent) && memory::remembered(r.category))
    {
        return Ok(());
    }
    // The elder's row is the turnstile; the elder's local date is the day.
    let (elder_id, date): (i64, NaiveDate) = sqlx::query_as(
        "SELECT el.id, ($2::timestamptz AT TIME ZONE el.time_zone)::date
           FROM calls c JOIN elders el ON el.id = c.elder_id
          WHERE c.id = $1
          FOR NO KEY UPDATE OF el",
    )
    .bind(call_id)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let found = memory::concerns_from(&reasons, transcript, lang, date);
    let open = open_for(&mut *tx, elder_id).await?;
    let concerns: Vec<Concern> = open.iter().map(|s| s.concern.clone()).collect();
    for f in found {
        match memory::merge(&concerns, &f) {
            Merge::Open => {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO concerns (elder_id, category, slot, level, opened_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(elder_id)
                .bind(f.category.as_str())
                .bind(f.slot.as_deref())
                .bind(f.level.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                mention(&mut *tx, elder_id, id, call_id, date, Change::New, now).await?;
            }
            Merge::Again { index, change } => {
                let id = open[index].id;
                if change == Change::Worse {
                    sqlx::query("UPDATE concerns SET level = $2 WHERE id = $1")
                        .bind(id)
                        .bind(f.level.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                mention(&mut *tx, elder_id, id, call_id, date, change, now).await?;
            }
        }
    }
    Ok(())
}

/// One call's word on a concern, once per call, with its audit event.
async fn mention(
    tx: &mut PgConnection,
    elder_id: i64,
    concern_id: i64,
    call_id: i64,
    date: NaiveDate,
    change: Change,
    now: DateTime<Utc>,
) -> Result<()> {
    let added = sqlx::query(
        "INSERT INTO concern_mentions (concern_id, call_id, on_date, change, at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (concern_id, call_id) DO NOTHING",
    )
    .bind(concern_id)
    .bind(call_id)
    .bind(date)
    .bind(change.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 1 {
        audit::record(
            &mut *tx,
            now,
            NewEvent {
                actor: Actor::Engine,
                action: if change == Change::New {
                    "concern.open"
                } else {
                    "concern.mention"
                },
                entity: "elder",
                entity_id: Some(elder_id),
                elder_id: Some(elder_id),
                details: serde_json::json!({
                    "concern_id": concern_id,
                    "call_id": call_id,
                    "change": change.as_str(),
                }),
            },
        )
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct MentionRow {
    id: i64,
    category: String,
    slot: Option<String>,
    level: String,
    on_date: Option<NaiveDate>,
    change: Option<String>,
}

/// An elder's open concerns with their history, oldest first.
pub async fn open_for(db: &mut PgConnection, elder_id: i64) -> Result<Vec<StoredConcern>> {
    // One row per mention, concerns in the order they were opened.
    let rows: Vec<MentionRow> = sqlx::query_as(
        "SELECT k.id, k.category, k.slot, k.level, m.on_date, m.change
           FROM concerns k LEFT JOIN concern_mentions m ON m.concern_id = k.id
          WHERE k.elder_id = $1 AND k.status = 'open'
          ORDER BY k.opened_at, k.id, m.on_date, m.id",
    )
    .bind(elder_id)
    .fetch_all(&mut *db)
    .await?;
    let mut out: Vec<StoredConcern> = Vec::new();
    for MentionRow {
        id,
        category,
        slot,
        level,
        on_date: date,
        change,
    } in rows
    {
        if out.last().is_none_or(|s| s.id != id) {
            out.push(StoredConcern {
                id,
                concern: Concern {
                    category: Category::from_str(&category)
                        .map_err(|e| StoreError::invalid("category", e))?,
                    slot,
                    level: Level::from_str(&level)
                        .map_err(|e| StoreError::invalid("level", e.to_string()))?,
                    history: Vec::new(),
                },
            });
        }
        if let (Some(date), Some(change), Some(s)) = (date, change, out.last_mut()) {
            s.concern.history.push(Mention {
                date,
                change: parse_change(&change),
            });
        }
    }
    Ok(out)
}

/// An elder's open concerns, read from the pool.
pub async fn open(pool: &PgPool, elder_id: i64) -> Result<Vec<StoredConcern>> {
    let mut conn = pool.acquire().await?;
    open_for(&mut conn, elder_id).await
}

fn parse_change(s: &str) -> Change {
    match s {
        "new" => Change::New,
        "better" => Change::Better,
        "same" => Change::Same,
        "worse" => Change::Worse,
        _ => Change::Unclear,
    }
}

/// Record the elder's answer to a follow-up on concern `concern_id` during
/// call `call_id`, and close the concern when `close` (the elder said it is
/// better), in one transaction with its audit event. The answer is the
/// call's word on the concern: it replaces what the call's other replies
/// implied. `level` raises the concern's level when given.
pub async fn answer(
    pool: &PgPool,
    concern_id: i64,
    call_id: i64,
    change: Change,
    close: bool,
    level: Option<Level>,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let (elder_id, date): (i64, NaiveDate) = sqlx::query_as(
        "SELECT el.id, ($2::timestamptz AT TIME ZONE el.time_zone)::date
           FROM concerns k JOIN elders el ON el.id = k.elder_id
          WHERE k.id = $1
          FOR NO KEY UPDATE OF el",
    )
    .bind(concern_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "concern",
        id: concern_id,
    })?;
    sqlx::query(
        "INSERT INTO concern_mentions (concern_id, call_id, on_date, change, at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (concern_id, call_id) DO UPDATE SET change = EXCLUDED.change, at = EXCLUDED.at",
    )
    .bind(concern_id)
    .bind(call_id)
    .bind(date)
    .bind(change.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if close {
        sqlx::query(
            "UPDATE concerns SET status = 'closed', closed_at = $2, closed_by = 'elder'
              WHERE id = $1 AND status = 'open'",
        )
        .bind(concern_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(level) = level.filter(|l| matches!(l, Level::Watch | Level::Urgent)) {
        sqlx::query("UPDATE concerns SET level = $2 WHERE id = $1")
            .bind(concern_id)
            .bind(level.as_str())
            .execute(&mut *tx)
            .await?;
    }
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Engine,
            action: if close {
                "concern.close"
            } else {
                "concern.answer"
            },
            entity: "elder",
            entity_id: Some(elder_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({
                "concern_id": concern_id,
                "call_id": call_id,
                "change": change.as_str(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
