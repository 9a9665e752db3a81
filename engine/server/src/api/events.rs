//! Live escalation events for consoles: PostgreSQL LISTEN/NOTIFY fanned out
//! over server-sent events. One listener connection per node, not per console.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use voicecare_store::queue::{self, CHANNEL};

use super::AppState;
use super::auth::Authed;

/// Listen for escalation changes and forward them to `tx`, reconnecting
/// after database restarts. A reconnect sends a `resync` notice so consoles
/// reload the queue instead of trusting a feed that may have a gap.
pub fn spawn_notify_fanout(
    pool: PgPool,
    tx: broadcast::Sender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if listener.listen(CHANNEL).await.is_ok() {
                        let _ = tx.send(r#"{"op":"resync"}"#.to_string());
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => {
                                    // Re-encode compactly: json_build_object pads with spaces.
                                    let payload =
                                        serde_json::from_str::<serde_json::Value>(n.payload())
                                            .map(|v| v.to_string())
                                            .unwrap_or_else(|_| n.payload().to_string());
                                    let _ = tx.send(payload);
                                }
                                Ok(None) => {
                                    // Connection lost and re-established inside sqlx: notices may have been missed.
                                    let _ = tx.send(r#"{"op":"resync"}"#.to_string());
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "escalation listener failed; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot LISTEN for escalations; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// `GET /api/v1/events`: an SSE stream of `escalation` events. Each event
/// carries only ids and levels; consoles fetch details through the scoped API,
/// so the stream itself leaks nothing across units. Items outside the
/// caller's scope are filtered out before sending.
pub async fn stream(
    State(state): State<AppState>,
    auth: Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = state.events.subscribe();
    let pool = state.pool.clone();
    let scope = auth.scope;
    let s = async_stream(move |yielder| async move {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => r#"{"op":"resync"}"#.to_string(),
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let v: serde_json::Value = serde_json::from_str(&msg).unwrap_or_default();
            if let Some(id) = v.get("id").and_then(|i| i.as_i64())
                && queue::get(&pool, &scope, id).await.is_err()
            {
                continue;
            }
            if yielder
                .send(Event::default().event("escalation").data(msg))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A tiny generator: run `f` with a sender, expose the receiver as a stream.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}
