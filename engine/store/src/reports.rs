//! Supervisor reports: the queue rolled up by organisational unit, SLA
//! attainment, per-operator workload and the monthly audit sample.
//!
//! Every query takes the caller's [`Scope`] and counts only escalations of
//! elders, and operators, whose unit lies under the caller's unit. Time
//! windows ("today", "this month") are passed in as instants so the caller
//! decides the time zone they are measured in.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::Result;
use crate::operators::Scope;
use crate::org::UnitLevel;

/// One unit's line in the supervisor's roll-up.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UnitReport {
    pub unit_id: i64,
    pub unit_name: String,
    /// Unresolved items (open or claimed) per level.
    pub emergency: i64,
    pub urgent: i64,
    pub watch: i64,
    /// Of those, held by an operator right now.
    pub claimed: i64,
    /// Unresolved items not picked up within their SLA.
    pub breached: i64,
    /// Age of the oldest unclaimed item.
    pub oldest_open_secs: Option<f64>,
    /// Emergencies flagged since the start of the day whose SLA has been
    /// decided: picked up, or still waiting past their deadline.
    pub emergencies_today: i64,
    /// Of those, picked up within their deadline.
    pub emergencies_in_sla: i64,
}

/// The figures of [`UnitReport`] over escalations `e` already joined in scope
/// (unresolved, or created since `$3`, the start of the reporting day); `$2` is now.
const UNIT_COUNTS: &str = "
    count(e.id) FILTER (WHERE e.status <> 'resolved' AND e.level = 'emergency') AS emergency,
    count(e.id) FILTER (WHERE e.status <> 'resolved' AND e.level = 'urgent') AS urgent,
    count(e.id) FILTER (WHERE e.status <> 'resolved' AND e.level = 'watch') AS watch,
    count(e.id) FILTER (WHERE e.status = 'claimed') AS claimed,
    count(e.id) FILTER (WHERE e.status <> 'resolved' AND COALESCE(e.first_claimed_at, $2) > e.sla_deadline) AS breached,
    EXTRACT(EPOCH FROM $2 - min(e.created_at) FILTER (WHERE e.status = 'open'))::float8 AS oldest_open_secs,
    count(e.id) FILTER (WHERE e.level = 'emergency' AND e.created_at >= $3
                          AND (e.first_claimed_at IS NOT NULL OR e.sla_deadline < $2)) AS emergencies_today,
    count(e.id) FILTER (WHERE e.level = 'emergency' AND e.created_at >= $3
                          AND e.first_claimed_at <= e.sla_deadline) AS emergencies_in_sla";

/// The queue and today's SLA attainment per unit at level `by`, within scope.
/// Units above the caller's own unit appear with only the caller's part.
pub async fn by_unit(
    pool: &PgPool,
    scope: &Scope,
    by: UnitLevel,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<UnitReport>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT g.id AS unit_id, g.name AS unit_name, {UNIT_COUNTS}
         FROM org_units g
         LEFT JOIN (org_units u JOIN elders el ON el.community_id = u.id
                    JOIN escalations e ON e.elder_id = el.id AND (e.status <> 'resolved' OR e.created_at >= $3))
              ON u.path[$4] = g.id AND $1::bigint = ANY(u.path)
         WHERE g.level = $5
           AND ($1::bigint = ANY(g.path) OR EXISTS (SELECT 1 FROM org_units me WHERE me.id = $1 AND g.id = ANY(me.path)))
         GROUP BY g.id, g.name ORDER BY g.name"
    )))
    .bind(scope.unit_id)
    .bind(now)
    .bind(day_start)
    .bind(by.path_index())
    .bind(by.as_str())
    .fetch_all(pool)
    .await?)
}

/// The same figures for the caller's whole scope.
pub async fn totals(
    pool: &PgPool,
    scope: &Scope,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<UnitReport> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT me.id AS unit_id, me.name AS unit_name, {UNIT_COUNTS}
         FROM org_units me
         LEFT JOIN (org_units u JOIN elders el ON el.community_id = u.id
                    JOIN escalations e ON e.elder_id = el.id AND (e.status <> 'resolved' OR e.created_at >= $3))
              ON $1::bigint = ANY(u.path)
         WHERE me.id = $1
         GROUP BY me.id, me.name"
    )))
    .bind(scope.unit_id)
    .bind(now)
    .bind(day_start)
    .fetch_one(pool)
    .await?)
}

/// Calls to elders by what they came to (`call_attempts.outcome`), for one unit.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct AttemptsReport {
    pub unit_id: i64,
    pub unit_name: String,
    /// A person answered.
    pub reached: i64,
    pub busy: i64,
    pub no_answer: i64,
    pub declined: i64,
    pub voicemail: i64,
    pub invalid_number: i64,
    pub switched_off: i64,
    pub trunk_failure: i64,
    /// Codec mismatch, care-app device offline, anything else.
    pub other: i64,
}

/// The figures of [`AttemptsReport`] over attempts `a`.
const ATTEMPT_COUNTS: &str = "
    count(a.id) FILTER (WHERE a.outcome = 'answered') AS reached,
    count(a.id) FILTER (WHERE a.outcome = 'busy') AS busy,
    count(a.id) FILTER (WHERE a.outcome = 'no_answer') AS no_answer,
    count(a.id) FILTER (WHERE a.outcome = 'declined') AS declined,
    count(a.id) FILTER (WHERE a.outcome = 'voicemail') AS voicemail,
    count(a.id) FILTER (WHERE a.outcome = 'invalid_number') AS invalid_number,
    count(a.id) FILTER (WHERE a.outcome = 'switched_off') AS switched_off,
    count(a.id) FILTER (WHERE a.outcome = 'trunk_failure') AS trunk_failure,
    count(a.id) FILTER (WHERE a.outcome IN ('codec_mismatch', 'device_offline', 'failed')) AS other";

/// Calls to elders started since `since`, by outcome, per unit at level
/// `by` within scope (units above the caller's own show only its part).
pub async fn attempts_by_unit(
    pool: &PgPool,
    scope: &Scope,
    by: UnitLevel,
    since: DateTime<Utc>,
) -> Result<Vec<AttemptsReport>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT g.id AS unit_id, g.name AS unit_name, {ATTEMPT_COUNTS}
         FROM org_units g
         LEFT JOIN (org_units u JOIN elders el ON el.community_id = u.id
                    JOIN calls c ON c.elder_id = el.id
                    JOIN call_attempts a ON a.call_id = c.id AND a.callee = 'elder'
                         AND a.outcome IS NOT NULL AND a.started_at >= $2)
              ON u.path[$3] = g.id AND $1::bigint = ANY(u.path)
         WHERE g.level = $4
           AND ($1::bigint = ANY(g.path) OR EXISTS (SELECT 1 FROM org_units me WHERE me.id = $1 AND g.id = ANY(me.path)))
         GROUP BY g.id, g.name ORDER BY g.name"
    )))
    .bind(scope.unit_id)
    .bind(since)
    .bind(by.path_index())
    .bind(by.as_str())
    .fetch_all(pool)
    .await?)
}

/// The same figures for the caller's whole scope.
pub async fn attempts_total(
    pool: &PgPool,
    scope: &Scope,
    since: DateTime<Utc>,
) -> Result<AttemptsReport> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT me.id AS unit_id, me.name AS unit_name, {ATTEMPT_COUNTS}
         FROM org_units me
         LEFT JOIN (org_units u JOIN elders el ON el.community_id = u.id
                    JOIN calls c ON c.elder_id = el.id
                    JOIN call_attempts a ON a.call_id = c.id AND a.callee = 'elder'
                         AND a.outcome IS NOT NULL AND a.started_at >= $2)
              ON $1::bigint = ANY(u.path)
         WHERE me.id = $1
         GROUP BY me.id, me.name"
    )))
    .bind(scope.unit_id)
    .bind(since)
    .fetch_one(pool)
    .await?)
}

/// One operator's workload.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OperatorReport {
    pub operator_id: i64,
    pub display_name: String,
    pub username: String,
    pub role: String,
    pub unit_name: String,
    /// Items the operator holds right now.
    pub holding: i64,
    /// Claims made since the start of the day.
    pub claims_today: i64,
    /// Items resolved since the start of the day.
    pub resolved_today: i64,
    /// Of those, emergencies.
    pub emergencies_resolved_today: i64,
}

/// Per-operator counts for the active operators under the caller's unit.
pub async fn operators(
    pool: &PgPool,
    scope: &Scope,
    day_start: DateTime<Utc>,
) -> Result<Vec<OperatorReport>> {
    Ok(sqlx::query_as(
        "SELECT o.id AS operator_id, o.display_name, o.username, o.role, u.name AS unit_name,
                (SELECT count(*) FROM escalations e WHERE e.status = 'claimed' AND e.claimed_by = o.id) AS holding,
                (SELECT count(*) FROM audit_events a WHERE a.actor_id = o.id AND a.action = 'escalation.claim'
                    AND a.at >= $2) AS claims_today,
                (SELECT count(*) FROM escalations e WHERE e.resolved_by = o.id AND e.resolved_at >= $2) AS resolved_today,
                (SELECT count(*) FROM escalations e WHERE e.resolved_by = o.id AND e.resolved_at >= $2
                    AND e.level = 'emergency') AS emergencies_resolved_today
         FROM operators o JOIN org_units u ON u.id = o.unit_id
         WHERE o.active AND $1::bigint = ANY(u.path)
         ORDER BY o.display_name, o.id",
    )
    .bind(scope.unit_id)
    .bind(day_start)
    .fetch_all(pool)
    .await?)
}

/// A resolved escalation drawn for a supervisor to review.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct SampleItem {
    pub operator_id: i64,
    pub operator_name: String,
    pub escalation_id: i64,
    pub call_id: i64,
    pub elder_name: String,
    pub level: String,
    pub outcome: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The elder's name prints as redacted (see `voicecare_core::redact`).
impl std::fmt::Debug for SampleItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleItem")
            .field("operator_id", &self.operator_id)
            .field("operator_name", &self.operator_name)
            .field("escalation_id", &self.escalation_id)
            .field("call_id", &self.call_id)
            .field("elder_name", &voicecare_core::redact::Personal::new(()))
            .field("level", &self.level)
            .field("outcome", &self.outcome)
            .field("resolved_at", &self.resolved_at)
            .finish()
    }
}

/// Up to `per_operator` resolved escalations per operator under the caller's
/// unit, resolved in `[from, to)`. The draw is random but stable for the
/// period (a hash of the escalation id and the period start), so every
/// supervisor sees the same sample all month and operators cannot choose it.
pub async fn audit_sample(
    pool: &PgPool,
    scope: &Scope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    per_operator: i64,
) -> Result<Vec<SampleItem>> {
    Ok(sqlx::query_as(
        "SELECT operator_id, operator_name, escalation_id, call_id, elder_name, level, outcome, resolved_at
         FROM (
             SELECT o.id AS operator_id, o.display_name AS operator_name, e.id AS escalation_id, e.call_id,
                    el.full_name AS elder_name, e.level, e.outcome, e.resolved_at,
                    row_number() OVER (PARTITION BY o.id ORDER BY md5(e.id::text || '@' || $2::text)) AS n
             FROM escalations e
             JOIN operators o ON o.id = e.resolved_by
             JOIN org_units ou ON ou.id = o.unit_id
             JOIN elders el ON el.id = e.elder_id
             JOIN org_units u ON u.id = el.community_id
             WHERE e.status = 'resolved' AND e.resolved_at >= $2 AND e.resolved_at < $3
               AND $1::bigint = ANY(ou.path) AND $1::bigint = ANY(u.path)
         ) s
         WHERE n <= $4
         ORDER BY operator_name, operator_id, resolved_at",
    )
    .bind(scope.unit_id)
    .bind(from)
    .bind(to)
    .bind(per_operator)
    .fetch_all(pool)
    .await?)
}

/// An elder on the supervisors' watch list: calls with a concern (watch or
/// above) within the window. `Debug` leaves the name out.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct WatchEntry {
    pub elder_id: i64,
    pub elder_name: String,
    pub community: String,
    /// Calls in the window whose level is watch or above.
    pub flagged_calls: i64,
    /// Levels of the elder's last calls with a level, newest first (at most 7).
    pub recent_levels: Vec<String>,
    /// The concerns' categories in the window (fall, loneliness, …).
    pub categories: Vec<String>,
    pub last_call_at: DateTime<Utc>,
    /// `worse`, `better` or `steady`: the latest call against the ones before.
    #[sqlx(skip)]
    pub trend: &'static str,
}

impl std::fmt::Debug for WatchEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchEntry")
            .field("elder_id", &self.elder_id)
            .field("elder_name", &voicecare_core::redact::Personal::new(()))
            .field("flagged_calls", &self.flagged_calls)
            .field("recent_levels", &self.recent_levels)
            .field("trend", &self.trend)
            .finish_non_exhaustive()
    }
}

/// Where an elder's level is going: the latest call above every one of the
/// calls before it is `worse`, below every one `better`, else `steady`.
pub fn trend(recent_newest_first: &[String]) -> &'static str {
    let rank = |l: &str| match l {
        "emergency" => 3,
        "urgent" => 2,
        "watch" => 1,
        _ => 0,
    };
    let Some((last, before)) = recent_newest_first.split_first() else {
        return "steady";
    };
    if before.is_empty() {
        return "steady";
    }
    let last = rank(last);
    let ranks = before.iter().map(|l| rank(l));
    if ranks.clone().all(|r| last > r) {
        "worse"
    } else if ranks.clone().all(|r| last < r) {
        "better"
    } else {
        "steady"
    }
}

/// Elders under the caller's unit with a concern on a call since `since`,
/// most severe and most often flagged first (at most 500).
pub async fn watch_list(
    pool: &PgPool,
    scope: &Scope,
    since: DateTime<Utc>,
) -> Result<Vec<WatchEntry>> {
    let mut rows: Vec<WatchEntry> = sqlx::query_as(
        "SELECT el.id AS elder_id, el.full_name AS elder_name, u.name AS community,
                count(*) FILTER (WHERE level_rank(c.level) >= 1) AS flagged_calls,
                (array_agg(c.level ORDER BY c.due_at DESC))[1:7] AS recent_levels,
                array(SELECT DISTINCT r->>'category'
                        FROM calls c2, jsonb_array_elements(c2.level_reasons) r
                       WHERE c2.elder_id = el.id AND c2.due_at >= $2
                         AND level_rank(c2.level) >= 1 AND r ? 'category'
                       ORDER BY 1) AS categories,
                max(c.due_at) AS last_call_at
           FROM calls c
           JOIN elders el ON el.id = c.elder_id
           JOIN org_units u ON u.id = el.community_id
          WHERE c.level IS NOT NULL AND c.due_at >= $2 AND $1::bigint = ANY(u.path)
          GROUP BY el.id, el.full_name, u.name
         HAVING count(*) FILTER (WHERE level_rank(c.level) >= 1) > 0
          ORDER BY max(level_rank(c.level)) DESC, 4 DESC, max(c.due_at) DESC
          LIMIT 500",
    )
    .bind(scope.unit_id)
    .bind(since)
    .fetch_all(pool)
    .await?;
    for r in &mut rows {
        r.trend = trend(&r.recent_levels);
    }
    Ok(rows)
}

#[cfg(test)]
mod watch_tests {
    use super::trend;

    fn levels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_trend_compares_the_latest_call_with_those_before() {
        assert_eq!(trend(&levels(&["urgent", "watch", "ok"])), "worse");
        assert_eq!(trend(&levels(&["ok", "watch", "urgent"])), "better");
        assert_eq!(trend(&levels(&["watch", "watch", "ok"])), "steady");
        assert_eq!(trend(&levels(&["watch"])), "steady");
        assert_eq!(trend(&[]), "steady");
    }
}
