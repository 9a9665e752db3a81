//! `/metrics` in Prometheus text format. Queue gauges are read from the
//! database at scrape time, so every node reports the same, true numbers.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// The process-wide recorder (installed once; later calls reuse it).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. in tests); then ours only renders gauges.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Level, open, claimed, breached, oldest open age in seconds.
type LevelGauges = (String, i64, i64, i64, Option<f64>);

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let rows: Result<Vec<LevelGauges>, _> = sqlx::query_as(
        "SELECT l.level,
                count(e.id) FILTER (WHERE e.status = 'open'),
                count(e.id) FILTER (WHERE e.status = 'claimed'),
                count(e.id) FILTER (WHERE COALESCE(e.first_claimed_at, now()) > e.sla_deadline),
                EXTRACT(EPOCH FROM now() - min(e.created_at) FILTER (WHERE e.status = 'open'))::float8
         FROM (VALUES ('emergency'), ('urgent'), ('watch')) l(level)
         LEFT JOIN escalations e ON e.level = l.level AND e.status <> 'resolved'
         GROUP BY l.level",
    )
    .fetch_all(&state.pool)
    .await;
    match rows {
        Ok(rows) => {
            for (level, open, claimed, breached, oldest) in rows {
                metrics::gauge!("voicecare_queue_depth", "level" => level.clone(), "status" => "open").set(open as f64);
                metrics::gauge!("voicecare_queue_depth", "level" => level.clone(), "status" => "claimed").set(claimed as f64);
                metrics::gauge!("voicecare_queue_sla_breached", "level" => level.clone())
                    .set(breached as f64);
                metrics::gauge!("voicecare_queue_oldest_open_seconds", "level" => level)
                    .set(oldest.unwrap_or(0.0));
            }
            metrics::gauge!("voicecare_database_up").set(1.0);
        }
        Err(_) => metrics::gauge!("voicecare_database_up").set(0.0),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
