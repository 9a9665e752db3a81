//! `/metrics` in Prometheus text format. Queue gauges are read from the
//! database at scrape time, so every node reports the same, true numbers.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Bucket bounds of `voicecare_turn_respond_seconds` (the target is 0.8 s).
pub const TURN_BUCKETS_S: &[f64] = &[
    0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// The process-wide recorder (installed once; later calls reuse it).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Turn latency as a cumulative histogram, not a summary over the
            // last minute: it adds up across nodes and over a whole run.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("voicecare_turn_respond_seconds".into()),
                    TURN_BUCKETS_S,
                )
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "turn latency falls back to a summary");
                    PrometheusBuilder::new()
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. in tests); then ours only renders gauges.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let rows = voicecare_store::queue::counts_everywhere(&state.pool, chrono::Utc::now()).await;
    match rows {
        Ok(rows) => {
            for c in rows {
                let level = c.level;
                metrics::gauge!("voicecare_queue_depth", "level" => level.clone(), "status" => "open").set(c.open as f64);
                metrics::gauge!("voicecare_queue_depth", "level" => level.clone(), "status" => "claimed").set(c.claimed as f64);
                metrics::gauge!("voicecare_queue_sla_breached", "level" => level.clone())
                    .set(c.breached as f64);
                metrics::gauge!("voicecare_queue_oldest_open_seconds", "level" => level)
                    .set(c.oldest_open_secs.unwrap_or(0.0));
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
