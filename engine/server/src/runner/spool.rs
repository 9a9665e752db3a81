//! The local spool: escalations, and the replies behind them, that the
//! database could not take when they were decided.
//!
//! An emergency heard during a PostgreSQL outage must not be lost, and the
//! call must not wait minutes for the database either. After a short retry
//! the write goes to an append-only file under the data directory
//! (`spool/pending.jsonl`, one JSON line per write, fsynced before the call
//! goes on). A drainer writes the entries to the database, in order, as soon
//! as it answers again, on this node or, after a crash, on the node that
//! starts next on this data directory. Its depth is on `/healthz` and
//! `/metrics` (`voicecare_spool_depth`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use voicecare_core::session::policy::SlaPolicy;
use voicecare_core::{Lang, Level};
use voicecare_store::StoreError;
use voicecare_store::calls::{AssessmentRecord, NewUtterance};
use voicecare_store::queue::{self, Flag};

/// One write the database did not take. `Debug` leaves the elder's words
/// and the evidence quoted in the reasons out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Escalation {
        call_id: i64,
        level: Level,
        categories: Vec<String>,
        reasons: serde_json::Value,
        elder_on_line: bool,
        at: DateTime<Utc>,
    },
    Utterance {
        call_id: i64,
        attempt_id: Option<i64>,
        seq: i32,
        step: Option<String>,
        transcript: String,
        lang: Lang,
        confidence: f32,
        audio_path: Option<String>,
        audio_ms: i32,
        asr_queue_ms: i32,
        asr_decode_ms: i32,
        level: Level,
        categories: Vec<String>,
        reasons: serde_json::Value,
        score: f32,
        at: DateTime<Utc>,
    },
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Escalation {
                call_id, level, at, ..
            } => f
                .debug_struct("Escalation")
                .field("call_id", call_id)
                .field("level", level)
                .field("at", at)
                .finish_non_exhaustive(),
            Entry::Utterance {
                call_id,
                seq,
                transcript,
                level,
                at,
                ..
            } => f
                .debug_struct("Utterance")
                .field("call_id", call_id)
                .field("seq", seq)
                .field(
                    "transcript",
                    &voicecare_core::redact::redacted_words(transcript),
                )
                .field("level", level)
                .field("at", at)
                .finish_non_exhaustive(),
        }
    }
}

impl Entry {
    pub fn escalation(f: &Flag, at: DateTime<Utc>) -> Self {
        Entry::Escalation {
            call_id: f.call_id,
            level: f.level,
            categories: f.categories.clone(),
            reasons: f.reasons.clone(),
            elder_on_line: f.elder_on_line,
            at,
        }
    }

    pub fn utterance(u: &NewUtterance<'_>, a: &AssessmentRecord, at: DateTime<Utc>) -> Self {
        Entry::Utterance {
            call_id: u.call_id,
            attempt_id: u.attempt_id,
            seq: u.seq,
            step: u.flow_step.map(str::to_string),
            transcript: u.transcript.to_string(),
            lang: u.language.unwrap_or(Lang::En),
            confidence: u.confidence.unwrap_or(0.0),
            audio_path: u.audio_path.map(str::to_string),
            audio_ms: u.audio_ms.unwrap_or(0),
            asr_queue_ms: u.asr_queue_ms.unwrap_or(0),
            asr_decode_ms: u.asr_decode_ms.unwrap_or(0),
            level: a.level,
            categories: a.categories.clone(),
            reasons: a.reasons.clone(),
            score: a.score,
            at,
        }
    }

    /// Write it to the database.
    pub(super) async fn store(&self, pool: &PgPool, sla: &SlaPolicy) -> Result<(), StoreError> {
        match self {
            Entry::Escalation {
                call_id,
                level,
                categories,
                reasons,
                elder_on_line,
                at,
            } => {
                let flag = Flag {
                    call_id: *call_id,
                    level: *level,
                    categories: categories.clone(),
                    reasons: reasons.clone(),
                    elder_on_line: *elder_on_line,
                };
                // Its deadline counts from when it was decided, not from now.
                queue::flag(pool, &flag, sla, *at).await.map(|_| ())
            }
            Entry::Utterance {
                call_id,
                attempt_id,
                seq,
                step,
                transcript,
                lang,
                confidence,
                audio_path,
                audio_ms,
                asr_queue_ms,
                asr_decode_ms,
                level,
                categories,
                reasons,
                score,
                at,
            } => {
                let row = NewUtterance {
                    call_id: *call_id,
                    attempt_id: *attempt_id,
                    seq: *seq,
                    flow_step: step.as_deref(),
                    transcript,
                    language: Some(*lang),
                    confidence: Some(*confidence),
                    audio_path: audio_path.as_deref(),
                    audio_ms: Some(*audio_ms),
                    asr_queue_ms: Some(*asr_queue_ms),
                    asr_decode_ms: Some(*asr_decode_ms),
                };
                let a = AssessmentRecord {
                    level: *level,
                    categories: categories.clone(),
                    reasons: reasons.clone(),
                    score: *score,
                };
                voicecare_store::calls::record_utterance(pool, &row, &a, *at)
                    .await
                    .map(|_| ())
            }
        }
    }
}

/// The spool of one data directory.
pub struct Spool {
    path: PathBuf,
    /// One writer or drainer at a time.
    lock: tokio::sync::Mutex<()>,
    depth: AtomicUsize,
}

impl Spool {
    /// Open (or create) the spool under `data_dir`; entries left by an
    /// earlier run count at once.
    pub fn open(data_dir: &Path) -> std::io::Result<Arc<Self>> {
        let dir = data_dir.join("spool");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("pending.jsonl");
        let depth = match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if depth > 0 {
            tracing::warn!(depth, path = %path.display(), "the spool holds writes the database has not taken yet; they will be written when it answers");
        }
        metrics::gauge!("voicecare_spool_depth").set(depth as f64);
        Ok(Arc::new(Self {
            path,
            lock: tokio::sync::Mutex::new(()),
            depth: AtomicUsize::new(depth),
        }))
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// Append an entry and make it durable before returning.
    pub async fn push(&self, entry: &Entry) -> std::io::Result<()> {
        let _one = self.lock.lock().await;
        let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        line.push('\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(line.as_bytes())?;
            f.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("voicecare_spool_depth").set(depth as f64);
        Ok(())
    }

    /// Write spooled entries to the database, oldest first, until it fails
    /// to answer; keep the rest. Returns how many were written.
    pub async fn drain(&self, pool: &PgPool, sla: &SlaPolicy) -> usize {
        let _one = self.lock.lock().await;
        let entries = match self.read().await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot read the spool");
                return 0;
            }
        };
        if entries.is_empty() {
            return 0;
        }
        let mut written = 0;
        for entry in &entries {
            match entry.store(pool, sla).await {
                Ok(()) => written += 1,
                // The database answered and refused it (a duplicate left by
                // a drain cut short, a call that no longer exists): retrying
                // cannot help, and it must not block the entries behind it.
                Err(
                    e @ (StoreError::Constraint { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::Invalid { .. }),
                ) => {
                    tracing::error!(error = %e, "a spooled write was refused by the database; dropping it");
                    written += 1;
                }
                Err(_) => break,
            }
        }
        if written > 0 {
            let rest = &entries[written..];
            if let Err(e) = self.rewrite(rest).await {
                tracing::error!(error = %e, "cannot rewrite the spool; its entries will be written again");
                return 0;
            }
            self.depth.store(rest.len(), Ordering::SeqCst);
            metrics::gauge!("voicecare_spool_depth").set(rest.len() as f64);
            tracing::info!(
                written,
                left = rest.len(),
                "spooled writes stored in the database"
            );
        }
        written
    }

    async fn read(&self) -> std::io::Result<Vec<Entry>> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(e) => entries.push(e),
                // A line cut short by a crash mid-append: the write it held
                // was never acknowledged, so nothing relied on it.
                Err(e) => {
                    tracing::warn!(line = i + 1, error = %e, "skipping an unreadable spool line")
                }
            }
        }
        Ok(entries)
    }

    /// Replace the file with `rest`, atomically (write, fsync, rename).
    async fn rewrite(&self, rest: &[Entry]) -> std::io::Result<()> {
        let mut text = String::new();
        for e in rest {
            text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("jsonl.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Drain the spool every second while it holds anything.
pub fn spawn_drainer(
    spool: Arc<Spool>,
    pool: PgPool,
    sla: SlaPolicy,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if spool.depth() > 0 {
                spool.drain(&pool, &sla).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(call_id: i64) -> Entry {
        Entry::Escalation {
            call_id,
            level: Level::Emergency,
            categories: vec!["fall".into()],
            reasons: serde_json::json!([{"rule": "en.fall.x"}]),
            elder_on_line: false,
            at: Utc::now(),
        }
    }

    #[test]
    fn debug_output_keeps_the_elders_words_out() {
        let words = "I fell in the kitchen and cannot get up";
        let u = Entry::Utterance {
            call_id: 7,
            attempt_id: None,
            seq: 1,
            step: None,
            transcript: words.into(),
            lang: voicecare_core::Lang::En,
            confidence: 0.9,
            audio_path: None,
            audio_ms: 0,
            asr_queue_ms: 0,
            asr_decode_ms: 0,
            level: Level::Emergency,
            categories: vec!["fall".into()],
            reasons: serde_json::json!([{"evidence": "cannot get up"}]),
            score: 1.0,
            at: Utc::now(),
        };
        let e = Entry::Escalation {
            call_id: 7,
            level: Level::Emergency,
            categories: vec!["fall".into()],
            reasons: serde_json::json!([{"evidence": "cannot get up"}]),
            elder_on_line: true,
            at: Utc::now(),
        };
        for shown in [format!("{u:?}"), format!("{e:?}")] {
            assert!(
                !shown.contains("kitchen") && !shown.contains("get up"),
                "{shown}"
            );
            assert!(shown.contains("call_id: 7"), "{shown}");
        }
    }

    #[tokio::test]
    async fn entries_survive_a_restart_and_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("voicecare-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir).unwrap();
        spool.push(&entry(1)).await.unwrap();
        spool.push(&entry(2)).await.unwrap();
        assert_eq!(spool.depth(), 2);
        // A crash in the middle of a third append.
        let path = dir.join("spool/pending.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"kind\":\"escalation\",\"call_").unwrap();
        drop(f);
        let again = Spool::open(&dir).unwrap();
        let read = again.read().await.unwrap();
        assert_eq!(read, vec![entry_like(&read[0], 1), entry_like(&read[1], 2)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn entry_like(e: &Entry, id: i64) -> Entry {
        match e {
            Entry::Escalation { at, .. } => {
                let mut x = entry(id);
                if let Entry::Escalation { at: a, .. } = &mut x {
                    *a = *at;
                }
                x
            }
            other => other.clone(),
        }
    }
}
