//! Bulk fixtures and the reference claim for `voicecare bench queue`.
//!
//! Only ever run against the benchmark's throwaway database: these functions
//! write rows in bulk without audit events, which the real repositories
//! never do.

use sqlx::PgPool;

use crate::error::Result;

/// The peer the queue claim is measured against: the textbook
/// `FOR UPDATE SKIP LOCKED` claim with no scope, audit or lease bookkeeping.
const RAW_CLAIM: &str =
    "UPDATE escalations SET status = 'claimed', claimed_by = $1, claimed_at = now(),
        lease_expires_at = now() + interval '60 seconds'
    WHERE id = (SELECT id FROM escalations WHERE status = 'open'
                ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id";

/// Claim the next open item the plain way; `None` when the queue is empty.
pub async fn raw_claim(pool: &PgPool, operator_id: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(RAW_CLAIM)
        .bind(operator_id)
        .fetch_optional(pool)
        .await?)
}

/// `n` elders in `community`, each with one call and one open escalation of
/// a rotating level, created up to an hour ago.
pub async fn seed_queue(pool: &PgPool, community: i64, n: i64) -> Result<()> {
    sqlx::query(
        "WITH el AS (
             INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
             SELECT 'Bench ' || g, 'bench-' || g, 'en', 'UTC', $1 FROM generate_series(1, $2) g RETURNING id
         ), c AS (
             INSERT INTO calls (elder_id, direction, purpose) SELECT id, 'outbound', 'checkin' FROM el RETURNING id, elder_id
         )
         INSERT INTO escalations (call_id, elder_id, level, created_at, sla_deadline)
         SELECT c.id, c.elder_id, (ARRAY['emergency','urgent','watch'])[1 + (c.id % 3)],
                now() - (random() * interval '1 hour'), now() + interval '1 hour' FROM c",
    )
    .bind(community)
    .bind(n)
    .execute(pool)
    .await?;
    Ok(())
}

/// Put every claimed item back in the queue and refresh the planner's
/// statistics, so each measured run starts from the same state.
pub async fn reopen_claimed(pool: &PgPool) -> Result<()> {
    sqlx::query(
        "UPDATE escalations SET status = 'open', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL
         WHERE status = 'claimed'",
    )
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE escalations")
        .execute(pool)
        .await?;
    Ok(())
}

/// `n` elders in `community` with one call each and no escalation yet; the
/// call ids, for flagging one at a time. `prefix` keeps device ids unique
/// across batches. The calls are already over, so an engine's dialer
/// running on the same database leaves them alone.
pub async fn seed_calls(pool: &PgPool, community: i64, prefix: &str, n: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "WITH el AS (
             INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
             SELECT $3 || ' ' || g, $3 || '-' || g, 'en', 'UTC', $1 FROM generate_series(1, $2) g RETURNING id
         )
         INSERT INTO calls (elder_id, direction, purpose, status, ended_at)
         SELECT id, 'outbound', 'checkin', 'completed', now() FROM el RETURNING id",
    )
    .bind(community)
    .bind(n)
    .bind(prefix)
    .fetch_all(pool)
    .await?)
}

/// Of the escalations `ids`: how many the audit trail shows resolved exactly
/// once, how many more than once, and how many are not resolved now.
pub async fn resolution_counts(pool: &PgPool, ids: &[i64]) -> Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1),
                (SELECT count(*) FROM escalations WHERE id = ANY($1) AND status <> 'resolved')
           FROM (SELECT entity_id, count(*) AS n FROM audit_events
                  WHERE entity = 'escalation' AND action = 'escalation.resolve' AND entity_id = ANY($1)
                  GROUP BY entity_id) r",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?)
}
