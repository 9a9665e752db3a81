//! Queue, escalation and elder handlers. Thin: parse, authorise, call the store.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use voicecare_store::operators::Role;
use voicecare_store::org::UnitLevel;
use voicecare_store::queue::{self, ListFilter, Outcome};
use voicecare_store::{audit, calls, elders, talks};

use super::AppState;
use super::auth::Authed;
use super::error::{ApiError, JsonBody};

pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // Writes kept locally while the database was away: not lost, not queued yet.
    let spool = state.spool.as_ref().map_or(0, |s| s.depth());
    // SIP trunks up of those configured; the details are the supervisors'.
    let trunks = state.engine.as_ref().and_then(|e| e.sip.as_ref()).map(|g| {
        let all = g.trunks();
        json!({"up": all.iter().filter(|t| t.up).count(), "total": all.len()})
    });
    match voicecare_store::db::ping(&state.pool).await {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "database": "ok", "spool": spool, "sip_trunks": trunks})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "degraded", "database": "unreachable", "spool": spool, "sip_trunks": trunks}),
            ),
        ),
    }
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI)
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Query string for the queue list: `?level=emergency&level=urgent&status=open&limit=50`.
pub async fn queue_list(
    State(state): State<AppState>,
    auth: Authed,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut filter = ListFilter::default();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "level" => filter.levels.push(v.to_string()),
            "status" => filter.statuses.push(v.to_string()),
            "limit" => {
                filter.limit = Some(
                    v.parse()
                        .map_err(|_| ApiError::invalid(format!("limit: {v:?} is not a number")))?,
                )
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let key = (
        auth.scope.unit_id,
        filter.levels.clone(),
        filter.statuses.clone(),
        filter.limit,
    );
    let items = state
        .queue_cache
        .get_or_read(key, || {
            queue::list(&state.pool, &auth.scope, &filter, Utc::now())
        })
        .await?;
    Ok(Json(json!({"items": *items, "server_time": Utc::now()})))
}

pub async fn queue_counts(
    State(state): State<AppState>,
    auth: Authed,
) -> Result<Json<Value>, ApiError> {
    let counts = queue::counts(&state.pool, &auth.scope, Utc::now()).await?;
    Ok(Json(json!({"levels": counts})))
}

#[derive(Deserialize)]
pub struct RollupQuery {
    by: String,
}

pub async fn queue_rollup(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<RollupQuery>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Supervisor)?;
    let by = UnitLevel::parse(&q.by)
        .ok_or_else(|| ApiError::invalid("by: expected city, county, street or community"))?;
    let rows = queue::rollup(&state.pool, &auth.scope, by, Utc::now()).await?;
    Ok(Json(json!({"by": by, "units": rows})))
}

#[derive(Deserialize, Default)]
pub struct ClaimNextBody {
    #[serde(default)]
    levels: Vec<String>,
}

pub async fn claim_next(
    State(state): State<AppState>,
    auth: Authed,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: no body means any level.
    let levels = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_json::from_slice::<ClaimNextBody>(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
            .levels
    };
    match queue::claim_next(&state.pool, &auth.scope, &levels, state.lease, Utc::now()).await? {
        Some(e) => {
            // This console's next reload must not be a list read before it.
            state.queue_cache.invalidate();
            metrics::counter!("voicecare_claims_total").increment(1);
            Ok(Json(json!({"escalation": e})))
        }
        None => Ok(Json(json!({"escalation": null}))),
    }
}

pub async fn claim(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let e = queue::claim(&state.pool, &auth.scope, id, state.lease, Utc::now()).await?;
    state.queue_cache.invalidate();
    metrics::counter!("voicecare_claims_total").increment(1);
    Ok(Json(json!({"escalation": e})))
}

pub async fn renew(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let e = queue::renew(&state.pool, &auth.scope, id, state.lease, Utc::now()).await?;
    Ok(Json(json!({"escalation": e})))
}

pub async fn release(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let e = queue::release(&state.pool, &auth.scope, id, Utc::now()).await?;
    state.queue_cache.invalidate();
    Ok(Json(json!({"escalation": e})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    outcome: Outcome,
    #[serde(default)]
    notes: String,
}

pub async fn resolve(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    let e = queue::resolve(
        &state.pool,
        &auth.scope,
        id,
        body.outcome,
        &body.notes,
        Utc::now(),
    )
    .await?;
    state.queue_cache.invalidate();
    metrics::counter!("voicecare_resolutions_total", "outcome" => body.outcome.as_str())
        .increment(1);
    Ok(Json(json!({"escalation": e})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    body: String,
}

pub async fn add_note(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<NoteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = queue::add_note(&state.pool, &auth.scope, id, &body.body, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(json!({"note": n}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReopenBody {
    reason: String,
}

pub async fn reopen(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<ReopenBody>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Role::Supervisor)?;
    let e = queue::reopen(&state.pool, &auth.scope, id, &body.reason, Utc::now()).await?;
    state.queue_cache.invalidate();
    Ok(Json(json!({"escalation": e})))
}

/// Everything an operator needs to act on one escalation. Reading the
/// transcript and the elder's record is audited.
pub async fn escalation_detail(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let e = queue::get(&state.pool, &auth.scope, id).await?;
    let elder = elders::view(&state.pool, &auth.scope, e.elder_id, "escalation", now).await?;
    let call = calls::view(&state.pool, e.call_id).await?;
    let transcript = calls::transcript(&state.pool, &auth.scope, e.call_id, now).await?;
    let history = calls::history(&state.pool, e.elder_id, 20).await?;
    let notes = queue::notes(&state.pool, id).await?;
    let trail = audit::trail(&state.pool, "escalation", id).await?;
    let talks = talks::for_escalation(&state.pool, id).await?;
    // What the elder has been saying was wrong, call by call.
    let concerns = voicecare_store::concerns::open(&state.pool, e.elder_id).await?;
    // Whether this node holds the call for an operator right now: the page
    // offers "talk" only then, and "call back" once the elder has left.
    let holding_here = state
        .engine
        .as_ref()
        .is_some_and(|en| en.holds.is_holding(e.call_id));
    Ok(Json(json!({
        "escalation": e,
        "elder": elder,
        "call": call,
        "transcript": transcript,
        "history": history,
        "notes": notes,
        "audit": trail,
        "talks": talks,
        "concerns": concerns,
        "live": {
            "calls_here": state.engine.is_some(),
            "holding_here": holding_here,
        },
    })))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
}

pub async fn elder_search(
    State(state): State<AppState>,
    auth: Authed,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = elders::search(&state.pool, &auth.scope, &q.q, Utc::now()).await?;
    Ok(Json(json!({"elders": rows})))
}

pub async fn elder_view(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let e = elders::view(&state.pool, &auth.scope, id, "lookup", Utc::now()).await?;
    // In scope and audited by the view above.
    let concerns = voicecare_store::concerns::open(&state.pool, id).await?;
    Ok(Json(json!({"elder": e, "concerns": concerns})))
}

/// `GET /api/v1/utterances/{id}/audio`: the recording of one reply (WAV),
/// read from under the data directory. In scope only, and audited by the
/// store; no recording (or a path that leaves the data directory) is a 404.
pub async fn utterance_audio(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<axum::response::Response, ApiError> {
    let stored = calls::utterance_audio_path(&state.pool, &auth.scope, id, Utc::now()).await?;
    recording(&state, &stored, id).await
}

/// Send a recording stored under the data directory. A file that is gone (or
/// a path that leaves the data directory) is a 404 naming the recording.
pub(super) async fn recording(
    state: &AppState,
    stored: &str,
    id: i64,
) -> Result<axum::response::Response, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("recording {id} not found"),
        )
    };
    let root = tokio::fs::canonicalize(&state.data_dir)
        .await
        .map_err(|_| missing())?;
    let path = tokio::fs::canonicalize(root.join(stored))
        .await
        .map_err(|_| missing())?;
    if !path.starts_with(&root) {
        tracing::warn!(
            recording = id,
            "recording path leaves the data directory; refused"
        );
        return Err(missing());
    }
    let bytes = tokio::fs::read(&path).await.map_err(|_| missing())?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "private, no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}
