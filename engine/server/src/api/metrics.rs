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
