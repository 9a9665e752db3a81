//! What a call writes to the store, retried while the database is away:
//! escalations the session decided on and the replies it heard.

use std::time::Duration;

use chrono::Utc;
use voicecare_core::session::UtteranceRecord;
use voicecare_core::session::escalation::Escalation;
use voicecare_store::calls::{AssessmentRecord, NewUtterance};
use voicecare_store::queue::{self, Flag};

use super::engine::Engine;

/// Put an escalation in the queue, retrying while the database is
/// unreachable: once the session decided a person is needed, the call does
/// not go on without it committed. Returns whether it was stored.
pub async fn escalate(engine: &Engine, call_id: i64, e: &Escalation) -> bool {
    let flag = Flag::from_escalation(call_id, e);
    let mut wait = Duration::from_millis(100);
    for attempt in 0..20 {
        match queue::flag(&engine.pool, &flag, &engine.cfg.sla, Utc::now()).await {
            Ok(esc) => {
                tracing::info!(escalation_id = esc.id, level = %esc.level, elder_on_line = e.elder_on_line, rule = e.reasons.last().map(|r| r.rule()).unwrap_or("-"), "escalation queued");
                return true;
            }
            Err(err) => {
                tracing::warn!(error = %err, attempt, "cannot queue the escalation yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(level = %e.level, "escalation could not be queued");
    false
}

/// Store a reply with its assessment, retrying a few times.
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
    for wait in [100u64, 400, 1000, 2000] {
        match voicecare_store::calls::record_utterance(&engine.pool, &row, &record, Utc::now())
            .await
        {
            Ok(_) => {
                tracing::info!(seq = u.seq, level = %a.level, asr_decode_ms = u.audio.asr_decode_ms, "utterance heard");
                tracing::debug!(transcript = %u.transcript, "utterance transcript");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the utterance yet; retrying");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
    tracing::error!(seq = u.seq, "utterance could not be stored");
    false
}
