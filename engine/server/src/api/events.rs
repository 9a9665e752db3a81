//! Live escalation events for consoles: the store's LISTEN/NOTIFY feed fanned
//! out over server-sent events. One listener connection per node, not per console.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;
use voicecare_store::PgPool;
use voicecare_store::notify::{EscalationEvent, EscalationListener};
use voicecare_store::queue;

use super::AppState;
use super::auth::Authed;

/// What consoles get when they should reload the queue.
const RESYNC: &str = r#"{"op":"resync"}"#;

/// Forward escalation events to `tx`. The listener reconnects after database
/// restarts and says `Resync` each time LISTEN is (re)established, so
/// consoles reload the queue instead of trusting a feed that may have a gap.
pub fn spawn_notify_fanout(pool: PgPool, state: &AppState) -> tokio::task::JoinHandle<()> {
    let tx = state.events.clone();
    let cache = state.queue_cache.clone();
    tokio::spawn(async move {
        let mut listener = EscalationListener::new(pool);
        loop {
            let event = listener.recv().await;
            // Before any console hears of it, so none reloads a list read
            // before the change.
            cache.invalidate();
            // No subscribers is not an error: nobody is watching right now.
            let _ = tx.send(event);
        }
    })
}

/// `GET /api/v1/events`: an SSE stream of `escalation` events. Each event
/// carries only ids and levels; consoles fetch details through the scoped API,
/// so the stream itself leaks nothing across units. Items outside the
/// caller's scope are filtered out before sending. The stream ends, with a
/// `session_ended` event, when the caller's session does.
pub async fn stream(
    State(state): State<AppState>,
    auth: Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = state.events.subscribe();
    let pool = state.pool.clone();
    let scope = auth.scope;
    let ended = auth.session.ended(&state);
    let s = async_stream(move |yielder| async move {
        tokio::pin!(ended);
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut ended => {
                    let _ = yielder.send(Event::default().event("session_ended").data("{}")).await;
                    break;
                }
                next = rx.recv() => next,
            };
            let data = match next {
                Ok(EscalationEvent::Changed(n)) => {
                    let visible = match n.in_scope(scope.unit_id) {
                        Some(v) => v,
                        None => queue::get(&pool, &scope, n.id).await.is_ok(),
                    };
                    if !visible {
                        continue;
                    }
                    serde_json::to_string(&n).unwrap_or_else(|_| RESYNC.to_string())
                }
                Ok(EscalationEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    RESYNC.to_string()
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if yielder
                .send(Event::default().event("escalation").data(data))
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
