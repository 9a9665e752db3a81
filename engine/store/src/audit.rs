//! Audit events: who did what to which item, written in the same transaction
//! as the change itself. The table is append-only (a trigger refuses UPDATE
//! and DELETE).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

use crate::error::{Result, StoreError};
use crate::operators::Scope;

/// Who acted.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Operator(i64),
    Engine,
    System,
}

impl Actor {
    pub fn kind(self) -> &'static str {
        match self {
            Actor::Operator(_) => "operator",
            Actor::Engine => "engine",
            Actor::System => "system",
        }
    }
    pub fn operator_id(self) -> Option<i64> {
        match self {
            Actor::Operator(id) => Some(id),
            _ => None,
        }
    }
}

pub struct NewEvent<'a> {
    pub actor: Actor,
    pub action: &'a str,
    pub entity: &'a str,
    pub entity_id: Option<i64>,
    pub elder_id: Option<i64>,
    pub details: serde_json::Value,
}

pub async fn record<'e>(
    db: impl PgExecutor<'e>,
    at: DateTime<Utc>,
    ev: NewEvent<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor_kind, actor_id, action, entity, entity_id, elder_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(at)
    .bind(ev.actor.kind())
    .bind(ev.actor.operator_id())
    .bind(ev.action)
    .bind(ev.entity)
    .bind(ev.entity_id)
    .bind(ev.elder_id)
    .bind(ev.details)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<i64>,
    pub actor_name: Option<String>,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<i64>,
    pub details: serde_json::Value,
}

/// The trail of one entity, oldest first.
pub async fn trail<'e>(
    db: impl PgExecutor<'e>,
    entity: &str,
    entity_id: i64,
) -> Result<Vec<AuditEvent>> {
    Ok(sqlx::query_as(
        "SELECT a.id, a.at, a.actor_kind, a.actor_id, o.display_name AS actor_name,
                a.action, a.entity, a.entity_id, a.details
         FROM audit_events a LEFT JOIN operators o ON o.id = a.actor_id
         WHERE a.entity = $1 AND a.entity_id = $2 ORDER BY a.at, a.id",
    )
    .bind(entity)
    .bind(entity_id)
    .fetch_all(db)
    .await?)
}

/// Look up a recording's path for an operator and audit the listen in the
/// same transaction. `sql` takes the caller's unit as `$1` and `id` as `$2`
/// and returns, within scope, one row of (the audited entity's id, the
/// elder's id, the path); no row answers `NotFound`. `event` builds the audit
/// event from those two ids.
pub(crate) async fn listened<'a>(
    pool: &PgPool,
    sql: &'static str,
    scope: &Scope,
    id: i64,
    now: DateTime<Utc>,
    event: impl FnOnce(i64, i64) -> NewEvent<'a>,
) -> Result<String> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64, i64, String)> = sqlx::query_as(sql)
        .bind(scope.unit_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let (entity, elder, path) = row.ok_or(StoreError::NotFound {
        entity: "recording",
        id,
    })?;
    record(&mut *tx, now, event(entity, elder)).await?;
    tx.commit().await?;
    Ok(path)
}
