//! What a call writes to the store, retried while the database is away:
//! escalations the session decided on and the replies it heard.

use std::time::Duration;

use chrono::Utc;
use voicecare_core::session::UtteranceRecord;
use voicecare_core::session::escalation::Escalation;
use voicecare_store::calls::{AssessmentRecord, NewUtterance};
use voicecare_store::queue::{self, Flag};

use super::engine::Engine;
use super::spool::Entry;

/// How long a write may wait for the database before it goes to the spool:
/// long enough to ride out a failover, short enough that the call goes on.
const RETRIES_MS: [u64; 4] = [100, 300, 600, 1000];

/// Put an escalation in the queue. Once the session decided a person is
/// needed, the escalation is never lost: if the database does not take it
/// within a couple of seconds it goes to the durable spool and is queued
/// when the database returns. Returns whether it is in the queue now.
pub async fn escalate(engine: &Engine, call_id: i64, e: &Escalation) -> bool {
    let flag = Flag::from_escalation(call_id, e);
    let rule = e.reasons.last().map(|r| r.rule()).unwrap_or("-");
    let at = Utc::now();
    for (attempt, wait) in RETRIES_MS.iter().enumerate() {
        match queue::flag(&engine.pool, &flag, &engine.cfg.sla, at).await {
            Ok(esc) => {
                tracing::info!(escalation_id = esc.id, level = %esc.level, elder_on_line = e.elder_on_line, rule, "escalation queued");
                return true;
            }
            Err(err) => {
                tracing::warn!(error = %err, attempt, "cannot queue the escalation yet; retrying");
                tokio::time::sleep(Duration::from_millis(*wait)).await;
            }
        }
    }
    spool(engine, &Entry::escalation(&flag, at), "escalation").await;
    false
}

/// Store a reply with its assessment; spooled like an escalation when the
/// database is away, so the words behind an escalation are never lost.
pub async fn utterance(
    engine: &Engine,
    call_id: i64,
    attempt_id: Option<i64>,
    u: &UtteranceRecord,
) -> bool {
    let a = &u.assessment;
    let record = AssessmentRecord::from_assessment(a);
    let row = NewUtterance {
        call_id,
        attempt_id,
        seq: u.seq,
        flow_step: u.step.as_deref(),
        transcript: &u.transcript,
        language: Some(u.lang),
        confidence: Some(u.confidence),
        audio_path: u.audio.path.as_deref(),
        audio_ms: Some(u.audio.audio_ms),
        asr_queue_ms: Some(u.audio.asr_queue_ms),
        asr_decode_ms: Some(u.audio.asr_decode_ms),
    };
    let at = Utc::now();
    for wait in RETRIES_MS {
        match voicecare_store::calls::record_utterance(&engine.pool, &row, &record, at).await {
            Ok(_) => {
                tracing::info!(seq = u.seq, level = %a.level, asr_decode_ms = u.audio.asr_decode_ms, "utterance heard");
                // The words are personal data: their length and language only.
                tracing::debug!(chars = u.transcript.chars().count(), lang = %u.lang, "utterance transcript");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the utterance yet; retrying");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
    spool(engine, &Entry::utterance(&row, &record, at), "utterance").await;
    false
}

/// Keep a write in the spool; if even the disk refuses, keep trying the
/// database and the disk until one takes it.
async fn spool(engine: &Engine, entry: &Entry, what: &'static str) {
    let mut wait = Duration::from_millis(500);
    loop {
        match engine.spool.push(entry).await {
            Ok(()) => {
                tracing::warn!(
                    what,
                    depth = engine.spool.depth(),
                    "the database is unreachable: kept in the local spool, to be written when it returns"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, what, "cannot write the spool either; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                if entry.store(&engine.pool, &engine.cfg.sla).await.is_ok() {
                    tracing::info!(what, "written to the database after all");
                    return;
                }
            }
        }
    }
}
