//! A check-in that remembers: before the call, questions about the elder's
//! open concerns become the flow's `follow_up_1` and `follow_up_2`; after
//! it, their answers close a concern, keep it open, or raise it through the
//! escalation policy. The rules are the core's (`voicecare_core::memory`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use voicecare_core::Lang;
use voicecare_core::flow::CallReport;
use voicecare_core::memory::{self, Decision, answer};
use voicecare_core::session::escalation::{Trigger, decide};
use voicecare_store::concerns::{self, StoredConcern};
use voicecare_store::dialer::Callee;

use super::engine::Engine;
use super::record;

/// The concerns asked about on this call, in the order of their inputs.
pub struct Asked {
    lang: Lang,
    today: NaiveDate,
    concerns: Vec<StoredConcern>,
}

/// The elder's local date at `now`.
fn local_date(callee: &Callee, now: DateTime<Utc>) -> NaiveDate {
    match callee.time_zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => now.with_timezone(&tz).date_naive(),
        Err(_) => now.date_naive(),
    }
}

/// Add today's follow-up questions to `inputs` (empty when there is nothing
/// to ask, or when the concerns cannot be read: the check-in goes on).
pub async fn follow_ups(
    engine: &Engine,
    callee: &Callee,
    lang: Lang,
    inputs: &mut BTreeMap<String, String>,
) -> Asked {
    let today = local_date(callee, Utc::now());
    let open = match concerns::open(&engine.pool, callee.elder_id).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the elder's concerns; no follow-ups this call");
            Vec::new()
        }
    };
    let plain: Vec<_> = open.iter().map(|s| s.concern.clone()).collect();
    let picked: Vec<StoredConcern> = memory::follow_ups(&plain, today)
        .into_iter()
        .map(|i| open[i].clone())
        .collect();
    for n in 1..=memory::MAX_FOLLOW_UPS {
        let q = picked
            .get(n - 1)
            .map(|s| memory::question(&s.concern, lang, today))
            .unwrap_or_default();
        inputs.insert(format!("follow_up_{n}"), q);
    }
    if !picked.is_empty() {
        tracing::info!(follow_ups = picked.len(), "asking about open concerns");
    }
    Asked {
        lang,
        today,
        concerns: picked,
    }
}

/// Read the answers the flow saved and act on them.
pub async fn record_answers(
    engine: &Engine,
    call_id: i64,
    asked: &Asked,
    report: Option<&CallReport>,
) {
    let Some(report) = report else { return };
    for (n, s) in asked.concerns.iter().enumerate() {
        let Some(said) = report.variables.get(&format!("follow_up_{}_answer", n + 1)) else {
            continue;
        };
        let reply = match said.chars().collect::<Vec<_>>().as_slice() {
            [d] if d.is_ascii_digit() => answer::Reply::Digit(*d),
            _ => answer::Reply::Words(said),
        };
        let change = answer::classify(reply, asked.lang);
        let decision = memory::after_answer(&s.concern, change, asked.today, asked.lang);
        let (close, raise) = match &decision {
            Decision::Close => (true, None),
            Decision::Keep => (false, None),
            Decision::Raise { level, .. } => (false, Some(*level)),
        };
        if let Err(e) = concerns::answer(
            &engine.pool,
            s.id,
            call_id,
            change,
            close,
            raise,
            Utc::now(),
        )
        .await
        {
            tracing::warn!(error = %e, concern_id = s.id, "cannot record the answer about a concern");
        }
        tracing::info!(
            concern_id = s.id,
            change = change.as_str(),
            "follow-up answered"
        );
        if let Decision::Raise { level, reason } = decision
            && let Some(e) = decide(Trigger::ConcernTrend {
                level,
                category: s.concern.category.as_str(),
                reason: &reason,
            })
        {
            record::escalate(engine, call_id, &e).await;
        }
    }
}
