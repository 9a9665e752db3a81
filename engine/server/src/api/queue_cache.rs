//! One queue read for a whole floor of consoles.
//!
//! Every console reloads its queue 50 ms after each escalation event, so one
//! change makes every console in scope ask for the same list at the same
//! moment: with 200 consoles open, 200 identical queries. Operators of the
//! same unit see the same list (the scope test reads only the unit), so the
//! first of them reads the database and the others, waiting behind it, are
//! given its answer.
//!
//! An answer is reused only while no escalation event has arrived since the
//! read began (every notice and every resync bumps the generation, before
//! consoles hear of it) and for at most [`FRESH_FOR`], which bounds how stale
//! the parts that change without a notice can be (a renewed lease, the
//! breached flag crossing its deadline).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voicecare_store::queue::QueueItem;

/// Longest an answer is reused without a notice.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Distinct (unit, filter) lists remembered; past this the map starts over.
const MAX_KEYS: usize = 1024;

/// Unit, levels, statuses, limit: what a list depends on.
pub type Key = (i64, Vec<String>, Vec<String>, Option<i64>);

#[derive(Default)]
pub struct QueueCache {
    generation: AtomicU64,
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

struct Cached {
    generation: u64,
    at: Instant,
    items: Arc<Vec<QueueItem>>,
}

impl QueueCache {
    /// An escalation changed, or changes may have been missed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The list for `key`: a fresh one if a read since the last change is at
    /// hand, else `read`'s, which then serves the readers waiting behind it.
    pub async fn get_or_read<E, F, Fut>(&self, key: Key, read: F) -> Result<Arc<Vec<QueueItem>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<QueueItem>, E>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.len() >= MAX_KEYS && !slots.contains_key(&key) {
                slots.clear();
            }
            slots.entry(key).or_default().clone()
        };
        let mut cached = slot.lock().await;
        let now_gen = self.generation.load(Ordering::SeqCst);
        if let Some(c) = cached.as_ref()
            && c.generation == now_gen
            && c.at.elapsed() < FRESH_FOR
        {
            metrics::counter!("voicecare_queue_reads_shared_total").increment(1);
            return Ok(c.items.clone());
        }
        // The generation is taken before reading: a change committed during
        // the read bumps it, so this answer is not reused after that change.
        let items = Arc::new(read().await?);
        *cached = Some(Cached {
            generation: now_gen,
            at: Instant::now(),
            items: items.clone(),
        });
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(unit: i64) -> Key {
        (unit, vec![], vec!["open".into()], None)
    }

    async fn read(cache: &QueueCache, unit: i64, reads: &AtomicU64) -> usize {
        cache
            .get_or_read(key(unit), || async {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ()>(Vec::new())
            })
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn readers_of_one_unit_share_a_read_until_something_changes() {
        let cache = Arc::new(QueueCache::default());
        let reads = Arc::new(AtomicU64::new(0));
        let mut all = Vec::new();
        for _ in 0..50 {
            let (c, r) = (cache.clone(), reads.clone());
            all.push(tokio::spawn(async move { read(&c, 7, &r).await }));
        }
        for t in all {
            t.await.unwrap();
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "fifty readers, one read");
        // Another unit reads for itself.
        read(&cache, 8, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // A change means a new read.
        cache.invalidate();
        read(&cache, 7, &reads).await;
        read(&cache, 7, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_answer_is_not_reused_past_its_freshness() {
        let cache = QueueCache::default();
        let reads = AtomicU64::new(0);
        read(&cache, 1, &reads).await;
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(50)).await;
        read(&cache, 1, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_change_during_a_read_is_not_hidden_by_it() {
        let cache = Arc::new(QueueCache::default());
        let reads = AtomicU64::new(0);
        let c = cache.clone();
        cache
            .get_or_read(key(1), || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                // The change commits while this read is under way.
                c.invalidate();
                Ok::<_, ()>(Vec::new())
            })
            .await
            .unwrap();
        let again = AtomicU64::new(0);
        read(&cache, 1, &again).await;
        assert_eq!(
            again.load(Ordering::SeqCst),
            1,
            "the read after the change went to the database"
        );
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let cache = QueueCache::default();
        let failed = cache
            .get_or_read(key(1), || async { Err::<Vec<QueueItem>, _>("down") })
            .await;
        assert!(failed.is_err());
        let reads = AtomicU64::new(0);
        read(&cache, 1, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
