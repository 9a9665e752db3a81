//! A call's lease: renewed while the call runs on this node, and the news
//! when another node took it over.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;
use voicecare_store::dialer;

use super::engine::Engine;

/// Renew the lease every third of its length; tell the call when it is lost.
pub fn spawn_keeper(
    engine: Arc<Engine>,
    call_id: i64,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<bool>) {
    let (lost_tx, lost_rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let every = engine.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = Utc::now() + engine.lease();
            match dialer::renew_lease(&engine.pool, call_id, &engine.cfg.node_id, until).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("call lease lost: another node took the call over");
                    let _ = lost_tx.send(true);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the call lease; retrying"),
            }
        }
    });
    (handle, lost_rx)
}

/// Stops a task when dropped (the lease keeper when its call ends).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
