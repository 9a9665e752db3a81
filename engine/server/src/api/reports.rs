//! Supervisor reports: queue and SLA roll-ups by unit, per-operator counts and
//! the monthly audit sample. Supervisor role (or above) enforced here; scope
//! enforced in the store's SQL.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{Value, json};
use voicecare_store::operators::Role;
use voicecare_store::org::UnitLevel;
use voicecare_store::reports;

use super::AppState;
use super::auth::Authed;
use super::error::ApiError;

/// The watch list covers the calls of this many days.
pub const WATCH_DAYS: i64 = 14;

/// Resolved reviews drawn per operator per month.
pub const SAMPLE_PER_OPERATOR: i64 = 2;

fn parse_tz(raw: Option<&str>) -> Result<Tz, ApiError> {
    match raw {
        None | Some("") => Ok(Tz::UTC),
        Some(s) => s.parse::<Tz>().map_err(|_| {
            ApiError::invalid(format!(
                "tz: unknown time zone {s:?} (expected an IANA name such as Asia/Shanghai)"
            ))
        }),
    }
}

/// The first instant of the local day `d` in `tz` (the earliest one if a
/// transition makes midnight ambiguous or skipped).
fn local_midnight(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.with_timezone(&Utc)
        }
        // Midnight skipped by a DST change: the day starts an hour later.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    by: Option<String>,
    tz: Option<String>,
}

/// `GET /api/v1/reports/overview?by=community&tz=Asia/Shanghai`
pub async fn overview(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Supervisor)?;
    let by = match q.by.as_deref() {
        None | Some("") => UnitLevel::Community,
        Some(s) => UnitLevel::parse(s)
            .ok_or_else(|| ApiError::invalid("by: expected city, county, street or community"))?,
    };
    let tz = parse_tz(q.tz.as_deref())?;
    let now = Utc::now();
    let day_start = local_midnight(tz, now.with_timezone(&tz).date_naive());
    let totals = reports::totals(&state.pool, &auth.scope, day_start, now).await?;
    let units = reports::by_unit(&state.pool, &auth.scope, by, day_start, now).await?;
    let operators = reports::operators(&state.pool, &auth.scope, day_start).await?;
    // Concerns of the last two weeks: the calls' own levels, so a tired or
    // lonely elder shows here though no item was queued.
    let watch = reports::watch_list(
        &state.pool,
        &auth.scope,
        now - chrono::Duration::days(WATCH_DAYS),
    )
    .await?;
    let attempts = json!({
        "totals": reports::attempts_total(&state.pool, &auth.scope, day_start).await?,
        "units": reports::attempts_by_unit(&state.pool, &auth.scope, by, day_start).await?,
    });
    Ok(Json(json!({
        "by": by,
        "tz": tz.name(),
        "day_start": day_start,
        "server_time": now,
        "emergency_sla_secs": state.sla.emergency_secs,
        "totals": totals,
        "units": units,
        "operators": operators,
        "attempts": attempts,
        "watch_days": WATCH_DAYS,
        "watch_list": watch,
        "trunks": trunks(&state),
    })))
}

/// The SIP trunks of the node that answered, most preferred first: whether
/// each is up (OPTIONS pings and calls, docs/telephony.md), why not, since
/// when, the calls it failed over to the next one, and its registration.
/// Empty when the node has no trunk.
pub fn trunks(state: &AppState) -> Value {
    use voicecare_sip::RegistrationState as R;
    let Some(group) = state.engine.as_ref().and_then(|e| e.sip.as_ref()) else {
        return json!([]);
    };
    let list: Vec<Value> = group
        .trunks()
        .into_iter()
        .map(|t| {
            let registration = match t.registration {
                R::NotUsed => "not_used",
                R::Pending => "pending",
                R::Registered { .. } => "registered",
                R::Failed { .. } => "failed",
            };
            json!({
                "name": t.name,
                "priority": t.priority,
                "up": t.up,
                "reason": t.reason,
                "since": DateTime::<Utc>::from(t.since),
                "failovers": t.failovers,
                "registration": registration,
            })
        })
        .collect();
    Value::Array(list)
}

/// `GET /api/v1/reports/numbers-to-fix`: elders under the caller's unit
/// whose telephone number the network says does not exist. Admins only;
/// the read is audited.
pub async fn numbers_to_fix(
    State(state): State<AppState>,
    auth: Authed,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Admin)?;
    let actor = voicecare_store::audit::Actor::Operator(auth.scope.operator_id);
    let items =
        voicecare_store::elders::numbers_to_fix(&state.pool, actor, auth.scope.unit_id, Utc::now())
            .await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleQuery {
    month: Option<String>,
    tz: Option<String>,
}

/// `GET /api/v1/reports/audit-sample?month=2026-11&tz=Asia/Shanghai`
pub async fn audit_sample(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<SampleQuery>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Supervisor)?;
    let tz = parse_tz(q.tz.as_deref())?;
    let first = match q.month.as_deref() {
        None | Some("") => {
            let today = Utc::now().with_timezone(&tz).date_naive();
            NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("first of month")
        }
        Some(m) => NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
            .map_err(|_| ApiError::invalid(format!("month: expected YYYY-MM, got {m:?}")))?,
    };
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ApiError::invalid("month: out of range"))?;
    let from = local_midnight(tz, first);
    let to = local_midnight(tz, next);
    let items =
        reports::audit_sample(&state.pool, &auth.scope, from, to, SAMPLE_PER_OPERATOR).await?;
    Ok(Json(json!({
        "month": first.format("%Y-%m").to_string(),
        "tz": tz.name(),
        "from": from,
        "to": to,
        "per_operator": SAMPLE_PER_OPERATOR,
        "items": items,
    })))
}
