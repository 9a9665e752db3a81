//! What is to be written to one socket: a bounded queue to the task that
//! writes it. A client that does not read what it is sent fills the queue
//! and is then dropped, instead of having its messages buffered without end.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

pub struct Outbox<T> {
    tx: mpsc::Sender<T>,
    dropped: Arc<watch::Sender<bool>>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

impl<T> Outbox<T> {
    /// The outbox and the writer's end of its queue.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(watch::channel(false).0);
        (Self { tx, dropped }, rx)
    }

    /// Queue a message; a full queue drops the client. Never waits.
    pub fn send(&self, msg: T) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.drop_client();
        }
    }

    pub fn drop_client(&self) {
        self.dropped.send_replace(true);
    }

    pub fn is_dropped(&self) -> bool {
        *self.dropped.borrow()
    }

    /// Resolves once the client is to be dropped. Both the writer (which may
    /// be stuck writing to a client that does not read) and the reader wait
    /// on it.
    pub fn dropped(&self) -> impl Future<Output = ()> + Send + use<T> {
        let mut rx = self.dropped.subscribe();
        async move {
            // Every outbox gone is no drop: the writer finishes the queue.
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_the_client() {
        let (out, mut rx) = Outbox::new(2);
        let dropped = out.dropped();
        out.send(1);
        out.send(2);
        assert!(!out.is_dropped());
        out.send(3);
        assert!(out.is_dropped());
        dropped.await;
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn closing_the_outbox_is_not_a_drop() {
        let (out, mut rx) = Outbox::new(2);
        let dropped = out.dropped();
        out.send(1);
        drop(out);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), dropped).await;
        assert!(waited.is_err());
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }
}
