//! The escalation feed: LISTEN on the channel the `escalations_announce`
//! trigger NOTIFYs, parsed into typed events.
//!
//! Notices are delivered at commit, so a listener never sees an escalation
//! that then rolls back. PostgreSQL does not queue notices for a connection
//! that is gone: whenever LISTEN is (re)established the listener says
//! [`EscalationEvent::Resync`] so readers reload instead of trusting a feed
//! that may have a gap.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use voicecare_core::Level;

use crate::error::Result;
use crate::queue::CHANNEL;

/// The first wait before reconnecting after the connection was lost.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Waits double up to this while the database stays unreachable.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// A connection that lived this long was not part of an outage: the next
/// loss starts again from [`FIRST_RETRY`].
const STABLE: Duration = Duration::from_secs(30);

/// What the trigger did to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Insert,
    Update,
}

/// An escalation's status as announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Claimed,
    Resolved,
}

/// One notice: ids and levels only, no personal data, so it may be fanned
/// out before the reader's scope is checked.
///
/// Fields are in alphabetical order so that serialising a notice gives the
/// same JSON object the trigger's payload re-encoded compactly would, less
/// the unit path, which is never sent on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationNotice {
    pub id: i64,
    pub level: Level,
    pub op: Change,
    pub status: Status,
    /// The units the item belongs to, city down to community (migration
    /// 0008); empty from a node that does not send it.
    #[serde(default, skip_serializing)]
    pub unit_path: Vec<i64>,
    pub version: i32,
}

impl EscalationNotice {
    /// Whether an operator scoped to `unit_id` may see the item, decided
    /// from the notice alone; `None` when the notice has no path (ask the
    /// database).
    pub fn in_scope(&self, unit_id: i64) -> Option<bool> {
        (!self.unit_path.is_empty()).then(|| self.unit_path.contains(&unit_id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscalationEvent {
    /// An escalation was created or changed (committed).
    Changed(EscalationNotice),
    /// LISTEN was (re)established, or a notice could not be read: earlier
    /// changes may have been missed, reload.
    Resync,
}

impl EscalationEvent {
    /// Parse a trigger payload. `None` for anything else.
    pub fn parse(payload: &str) -> Option<Self> {
        serde_json::from_str(payload).ok().map(Self::Changed)
    }
}

/// A LISTEN connection that survives database outages: [`recv`](Self::recv)
/// reconnects with backoff and never fails.
pub struct EscalationListener {
    pool: PgPool,
    conn: Option<(PgListener, Instant)>,
    retry: Duration,
    /// The last attempt failed or the connection was lost: wait before the next.
    wait: bool,
}

impl EscalationListener {
    /// A listener that connects on the first [`recv`](Self::recv), which then
    /// yields [`EscalationEvent::Resync`] once LISTEN is active.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            conn: None,
            retry: FIRST_RETRY,
            wait: false,
        }
    }

    /// Connect and LISTEN now: every change committed after this returns is
    /// seen, with no initial `Resync`.
    pub async fn connect(pool: &PgPool) -> Result<Self> {
        let listener = listen(pool).await?;
        Ok(Self {
            conn: Some((listener, Instant::now())),
            ..Self::new(pool.clone())
        })
    }

    /// The next event, waiting as long as it takes. Cancel-safe.
    pub async fn recv(&mut self) -> EscalationEvent {
        loop {
            if let Some((listener, since)) = &mut self.conn {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        return EscalationEvent::parse(n.payload()).unwrap_or_else(|| {
                            tracing::warn!(
                                payload = n.payload(),
                                "unreadable escalation notice; readers resync"
                            );
                            EscalationEvent::Resync
                        });
                    }
                    // The connection dropped and sqlx has already reconnected
                    // and re-issued LISTEN: whatever came in between is lost.
                    Ok(None) => {
                        tracing::warn!("escalation listener reconnected; readers resync");
                        return EscalationEvent::Resync;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "escalation listener failed; reconnecting")
                    }
                }
                if since.elapsed() >= STABLE {
                    self.retry = FIRST_RETRY;
                }
                self.conn = None;
                self.wait = true;
            }
            if self.wait {
                tokio::time::sleep(self.retry).await;
                self.retry = (self.retry * 2).min(MAX_RETRY);
            }
            match listen(&self.pool).await {
                Ok(listener) => {
                    self.conn = Some((listener, Instant::now()));
                    self.wait = false;
                    return EscalationEvent::Resync;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = self.retry.as_millis() as u64,
                        "cannot LISTEN for escalations; retrying");
                    self.wait = true;
                }
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_payload_parses_and_reencodes_compactly_in_key_order() {
        // As json_build_object writes it.
        let payload = r#"{"id" : 7, "level" : "urgent", "status" : "claimed", "version" : 3, "op" : "update"}"#;
        let Some(EscalationEvent::Changed(n)) = EscalationEvent::parse(payload) else {
            panic!("payload not understood");
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            serde_json::from_str::<serde_json::Value>(payload)
                .unwrap()
                .to_string()
        );
        assert_eq!(EscalationEvent::parse(r#"{"op":"resync"}"#), None);
    }
}
