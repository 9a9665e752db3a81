//! One call on this node: the lease, the no-answer ladder around ringing the
//! elder's device, the session once someone answers, and how the call ends.
//!
//! A panic inside a call ends that call only: the supervisor hangs the line
//! up, flags the call `urgent` for an operator and reschedules it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;
use voicecare_core::Level;
use voicecare_core::flow::{CallReport, Lang, Outcome};
use voicecare_core::schedule::{AttemptOutcome, Ladder, LadderAction, LadderResult};
use voicecare_store::dialer::{self, CallEnd, Claimed, Party};
use voicecare_store::queue::{self, Flag};
use voicecare_telephony::TelephonyError;
use voicecare_telephony::leg::{CallLeg, LegControl};
use voicecare_telephony::signalling::HangupReason;

use super::Engine;
use super::session::{self, SessionEnd};

/// The ladder and what it asked for next, kept in `calls.ladder` between attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LadderState {
    ladder: Ladder,
    next: Next,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
enum Next {
    Elder,
    Contact { index: usize },
}

/// The line of a running call, so the supervisor can hang it up after a fault.
pub type LineSlot = Arc<Mutex<Option<LegControl>>>;

/// Run a claimed call in its own task, under a supervisor.
pub fn spawn_claimed(engine: Arc<Engine>, c: Claimed) {
    let call_id = c.id;
    let elder_id = c.elder_id;
    let line: LineSlot = Arc::new(Mutex::new(None));
    let span = tracing::info_span!("call", call_id);
    let task = tokio::spawn(run_claimed(engine.clone(), c, line.clone()).instrument(span.clone()));
    supervise(engine, call_id, elder_id, line, task, span);
}

/// A device called in: open the call and run the help flow.
pub fn spawn_inbound(engine: Arc<Engine>, elder_id: i64, leg: CallLeg) {
    tokio::spawn(async move {
        let flow_id = super::gateway::DIAL_IN_FLOW;
        let call_id = match dialer::open_inbound(
            &engine.pool,
            elder_id,
            &engine.cfg.node_id,
            flow_id,
            engine.lease(),
            Utc::now(),
        )
        .await
        {
            Ok(id) => id,
            Err(e) => {
                // The elder is on the line and asking for help: never drop
                // them silently. Without a call record nothing can be queued,
                // so say so loudly and keep the line to the flow anyway.
                tracing::error!(error = %e, elder_id, "cannot record an incoming call");
                leg.control().hang_up();
                return;
            }
        };
        let line: LineSlot = Arc::new(Mutex::new(Some(leg.control())));
        let span = tracing::info_span!("call", call_id);
        let task = tokio::spawn(
            run_inbound(engine.clone(), call_id, elder_id, leg, line.clone())
                .instrument(span.clone()),
        );
        supervise(engine, call_id, elder_id, line, task, span);
    });
}

fn supervise(
    engine: Arc<Engine>,
    call_id: i64,
    elder_id: i64,
    line: LineSlot,
    task: tokio::task::JoinHandle<()>,
    span: tracing::Span,
) {
    engine.track(call_id, task.abort_handle());
    tokio::spawn(
        async move {
            let result = task.await;
            engine.untrack(call_id);
            let Err(e) = result else { return };
            if let Some(ctl) = line.lock().ok().and_then(|mut l| l.take()) {
                ctl.hang_up();
            }
            if e.is_cancelled() {
                return; // the lease was lost: another node owns the call now
            }
            tracing::error!(elder_id, "call task failed; flagging the call and rescheduling it");
            let now = Utc::now();
            let flag = Flag {
                call_id,
                level: Level::Urgent,
                categories: vec!["engine_fault".into()],
                reasons: serde_json::json!([{
                    "category": "engine_fault",
                    "evidence": "the call stopped because of a fault in the engine",
                    "rule": "runner.fault",
                }]),
                elder_on_line: false,
            };
            flag_until_stored(&engine, &flag, now).await;
            if let Err(e) = dialer::interrupt(&engine.pool, call_id, &engine.cfg.node_id, now).await {
                tracing::error!(error = %e, "cannot close the faulted call; its lease will expire and the rescuer will");
            }
        }
        .instrument(span),
    );
}

/// Flag an escalation, retrying while the database is unreachable: once the
/// flow decided a person is needed, the call does not go on without the
/// escalation committed.
pub async fn flag_until_stored(engine: &Engine, flag: &Flag, now: DateTime<Utc>) -> bool {
    let mut wait = std::time::Duration::from_millis(100);
    for attempt in 0..20 {
        match queue::flag(&engine.pool, flag, &engine.cfg.sla, now).await {
            Ok(esc) => {
                tracing::info!(escalation_id = esc.id, level = %esc.level, elder_on_line = flag.elder_on_line, "escalation queued");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "cannot queue the escalation yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
    tracing::error!("escalation could not be queued");
    false
}

/// Renew the lease every third of its length; tell the call when it is lost.
pub(super) fn spawn_lease_keeper(
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `calls.outcome` of an answered call.
pub fn outcome_code(report: &CallReport) -> &'static str {
    match &report.outcome {
        Outcome::CompletedOk => "ok",
        Outcome::Escalated { .. } => "escalated",
        Outcome::AnsweredSilent => "answered_silent",
        Outcome::NotUnderstood => "not_understood",
        Outcome::ElderHungUp { .. } if report.escalated.is_some() => "escalated",
        Outcome::ElderHungUp { .. } => "hung_up",
        Outcome::Aborted { .. } => "escalated",
    }
}

fn lang_of(code: &str) -> Lang {
    if code == "zh" { Lang::Zh } else { Lang::En }
}

async fn run_claimed(engine: Arc<Engine>, c: Claimed, line: LineSlot) {
    let (keeper, lost) = spawn_lease_keeper(engine.clone(), c.id);
    let _keeper = AbortOnDrop(keeper);
    if let Err(e) = run_ladder(&engine, &c, line, lost).await {
        tracing::warn!(error = %e, "call stopped on a database error; the lease will expire and the call will be rescheduled");
    }
}

async fn run_inbound(
    engine: Arc<Engine>,
    call_id: i64,
    elder_id: i64,
    leg: CallLeg,
    line: LineSlot,
) {
    let (keeper, lost) = spawn_lease_keeper(engine.clone(), call_id);
    let _keeper = AbortOnDrop(keeper);
    let result = async {
        let callee = dialer::callee(&engine.pool, elder_id).await?;
        let attempt = dialer::start_attempt(&engine.pool, call_id, Party::Elder, Utc::now()).await?;
        dialer::update_attempt(&engine.pool, attempt, "answered", None, Utc::now()).await?;
        let flow = engine.flow(super::gateway::DIAL_IN_FLOW);
        let end = match flow {
            Ok(flow) => {
                let inputs = inputs(&engine, &callee.full_name);
                session::run(&engine, call_id, Some(attempt), flow, lang_of(&callee.language), inputs, leg, line, lost).await
            }
            Err(e) => {
                tracing::error!(error = %e, "no help flow: the elder's call goes straight to an operator");
                SessionEnd::no_flow()
            }
        };
        end_session(&engine, call_id, elder_id, attempt, &end).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "incoming call stopped on a database error; the lease will expire and the call will be rescheduled");
    }
}

fn inputs(engine: &Engine, elder_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("elder_name".to_string(), elder_name.to_string()),
        ("service_name".to_string(), engine.cfg.service_name.clone()),
        ("callback_when".to_string(), "today".to_string()),
    ])
}

/// Close the attempt and the call after a session; `Ok(Some(report))` when
/// the flow ran to its end.
async fn end_session(
    engine: &Engine,
    call_id: i64,
    elder_id: i64,
    attempt: i64,
    end: &SessionEnd,
) -> Result<(), voicecare_store::StoreError> {
    let now = Utc::now();
    if end.lost {
        dialer::update_attempt(
            &engine.pool,
            attempt,
            "interrupted",
            Some("lease lost"),
            now,
        )
        .await?;
        return Ok(());
    }
    dialer::update_attempt(&engine.pool, attempt, "ended", Some(end.reason), now).await?;
    let (code, path) = match &end.report {
        Some(r) => {
            if let Outcome::Aborted { reason } = &r.outcome {
                flag_aborted(engine, call_id, reason).await;
            }
            (outcome_code(r), r.path.clone())
        }
        None => {
            if end.no_flow {
                let flag = Flag {
                    call_id,
                    level: Level::Emergency,
                    categories: vec!["help_request".into()],
                    reasons: serde_json::json!([{"category": "help_request", "evidence": "the elder called in and no help flow is loaded", "rule": "runner.no_flow"}]),
                    elder_on_line: false,
                };
                flag_until_stored(engine, &flag, now).await;
            }
            ("hung_up", Vec::new())
        }
    };
    let _ = elder_id;
    dialer::finish(
        &engine.pool,
        call_id,
        &engine.cfg.node_id,
        CallEnd::Completed(code),
        &path,
        now,
    )
    .await
}

async fn flag_aborted(engine: &Engine, call_id: i64, reason: &str) {
    let flag = Flag {
        call_id,
        level: Level::Urgent,
        categories: vec!["flow_fault".into()],
        reasons: serde_json::json!([{"category": "flow_fault", "evidence": reason, "rule": "runner.flow_aborted"}]),
        elder_on_line: false,
    };
    flag_until_stored(engine, &flag, Utc::now()).await;
}

/// The ladder's wait, with ladder minutes scaled to `ladder_minute`.
fn scaled(engine: &Engine, at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let wait_ms = (at - now).num_milliseconds().max(0);
    let minute_ms = engine.cfg.ladder_minute.as_millis() as i64;
    now + chrono::Duration::milliseconds(wait_ms * minute_ms / 60_000)
}

async fn run_ladder(
    engine: &Arc<Engine>,
    c: &Claimed,
    line: LineSlot,
    lost: watch::Receiver<bool>,
) -> Result<(), voicecare_store::StoreError> {
    let callee = dialer::callee(&engine.pool, c.elder_id).await?;
    let mut policy = engine.cfg.ladder.clone();
    if let Some(a) = callee.max_attempts {
        policy.attempts = a.clamp(1, 10) as u32;
    }
    if let Some(r) = callee.retry_minutes {
        policy.retry_after_minutes = r.max(1) as u32;
    }
    let contacts = callee.contacts.max(0) as usize;
    let mut state = match c.ladder.clone().map(serde_json::from_value::<LadderState>) {
        Some(Ok(s)) => s,
        _ => match Ladder::start(policy.clone(), contacts, Utc::now()) {
            Ok((ladder, _)) => LadderState {
                ladder,
                next: Next::Elder,
            },
            Err(e) => {
                tracing::error!(error = %e, "ladder policy rejected; using the default policy");
                let (ladder, _) = Ladder::start(Default::default(), contacts, Utc::now())
                    .map_err(|e| voicecare_store::StoreError::invalid("ladder", e.to_string()))?;
                LadderState {
                    ladder,
                    next: Next::Elder,
                }
            }
        },
    };
    let flow_id = c.flow.clone().unwrap_or_else(|| "daily_checkin".into());
    let mut answered: Option<SessionEnd> = None;
    loop {
        let outcome = match state.next {
            Next::Elder => {
                let (outcome, end) =
                    attempt_elder(engine, c, &callee, &flow_id, line.clone(), lost.clone()).await?;
                if let Some(end) = end {
                    if end.lost {
                        return Ok(());
                    }
                    answered = Some(end);
                }
                outcome
            }
            Next::Contact { index } => {
                let (outcome, lost_lease) =
                    attempt_contact(engine, c, &callee, index, line.clone(), lost.clone()).await?;
                if lost_lease {
                    return Ok(());
                }
                outcome
            }
        };
        let now = Utc::now();
        let action = match state.ladder.record(outcome, now) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "ladder refused the outcome");
                LadderAction::Escalate {
                    level: Level::Urgent,
                    reason: format!("call ladder error: {e}"),
                }
            }
        };
        match action {
            LadderAction::CallElder { at } | LadderAction::CallContact { at, .. } => {
                state.next = match action {
                    LadderAction::CallContact { index, .. } => Next::Contact { index },
                    _ => Next::Elder,
                };
                let due = scaled(engine, at, now);
                if due <= now {
                    continue;
                }
                let json = serde_json::to_value(&state).unwrap_or_default();
                dialer::retry_later(&engine.pool, c.id, &engine.cfg.node_id, due, &json, now)
                    .await?;
                tracing::info!(
                    retry_in_ms = (due - now).num_milliseconds(),
                    "call placed back in the schedule for the next attempt"
                );
                return Ok(());
            }
            LadderAction::Escalate { level, reason } => {
                let flag = Flag {
                    call_id: c.id,
                    level,
                    categories: vec!["unreachable".into()],
                    reasons: serde_json::json!([{"category": "unreachable", "evidence": reason, "rule": "ladder.unreachable"}]),
                    elder_on_line: false,
                };
                flag_until_stored(engine, &flag, now).await;
                dialer::finish(
                    &engine.pool,
                    c.id,
                    &engine.cfg.node_id,
                    CallEnd::Unreachable,
                    &[],
                    now,
                )
                .await?;
                return Ok(());
            }
            LadderAction::Done(result) => {
                let (code, path) = match (&result, &answered) {
                    (LadderResult::ReachedElder, Some(end)) => match &end.report {
                        Some(r) => (outcome_code(r), r.path.clone()),
                        None => ("hung_up", Vec::new()),
                    },
                    (LadderResult::ContactConfirmed { .. }, _) => ("contact_confirmed", Vec::new()),
                    _ => ("ok", Vec::new()),
                };
                dialer::finish(
                    &engine.pool,
                    c.id,
                    &engine.cfg.node_id,
                    CallEnd::Completed(code),
                    &path,
                    now,
                )
                .await?;
                return Ok(());
            }
        }
    }
}

/// Ring the elder once. Returns the ladder outcome and, if answered, how the session ended.
async fn attempt_elder(
    engine: &Arc<Engine>,
    c: &Claimed,
    callee: &dialer::Callee,
    flow_id: &str,
    line: LineSlot,
    lost: watch::Receiver<bool>,
) -> Result<(AttemptOutcome, Option<SessionEnd>), voicecare_store::StoreError> {
    let pool = &engine.pool;
    let attempt = dialer::start_attempt(pool, c.id, Party::Elder, Utc::now()).await?;
    let (Some(device), Some(hub)) = (callee.device_id.as_deref(), engine.hub()) else {
        let why = if callee.device_id.is_none() {
            "the elder has no registered device; telephone numbers need a telephone gateway"
        } else {
            "device signalling is not running on this node"
        };
        dialer::update_attempt(pool, attempt, "failed", Some(why), Utc::now()).await?;
        return Ok((AttemptOutcome::Failed, None));
    };
    if !hub.is_registered(device) {
        dialer::update_attempt(
            pool,
            attempt,
            "failed",
            Some("device not connected"),
            Utc::now(),
        )
        .await?;
        return Ok((AttemptOutcome::Failed, None));
    }
    dialer::update_attempt(pool, attempt, "ringing", None, Utc::now()).await?;
    let leg = match hub.call_device(device).await {
        Ok(leg) => leg,
        Err(e) => {
            let (status, outcome, why) = match &e {
                TelephonyError::NotRegistered => {
                    ("failed", AttemptOutcome::Failed, "device disconnected")
                }
                TelephonyError::NoAnswer => ("no_answer", AttemptOutcome::NoAnswer, "no answer"),
                TelephonyError::Declined(HangupReason::Busy) => {
                    ("busy", AttemptOutcome::Busy, "busy")
                }
                TelephonyError::Declined(_) => ("no_answer", AttemptOutcome::NoAnswer, "declined"),
                _ => ("failed", AttemptOutcome::Failed, "call setup failed"),
            };
            tracing::info!(outcome = %outcome, "elder not reached");
            dialer::update_attempt(pool, attempt, status, Some(why), Utc::now()).await?;
            return Ok((outcome, None));
        }
    };
    dialer::update_attempt(pool, attempt, "answered", None, Utc::now()).await?;
    if let Ok(mut l) = line.lock() {
        *l = Some(leg.control());
    }
    let end = match engine.flow(flow_id) {
        Ok(flow) => {
            session::run(
                engine,
                c.id,
                Some(attempt),
                flow,
                lang_of(&callee.language),
                inputs(engine, &callee.full_name),
                leg,
                line,
                lost,
            )
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "flow missing: cannot talk to the elder");
            leg.control().hang_up();
            flag_aborted(engine, c.id, &e.to_string()).await;
            SessionEnd::no_flow()
        }
    };
    if end.lost {
        return Ok((AttemptOutcome::Answered, Some(end)));
    }
    dialer::update_attempt(pool, attempt, "ended", Some(end.reason), Utc::now()).await?;
    let outcome = match &end.report {
        Some(r) if r.outcome == Outcome::AnsweredSilent => AttemptOutcome::AnsweredSilent,
        _ => AttemptOutcome::Answered,
    };
    Ok((outcome, Some(end)))
}

/// The flow an emergency contact's device is rung with.
pub const CONTACT_FLOW: &str = "contact_confirm";

/// Ring the elder's `index`-th emergency contact on their care-app device
/// with the contact notice flow. A key press that sets `contact_confirmed =
/// "yes"` confirms; anything else lets the ladder move on. A contact with
/// only a telephone number is a recorded failure: there is no telephone
/// gateway. Returns the outcome, and whether the call's lease was lost.
async fn attempt_contact(
    engine: &Arc<Engine>,
    c: &Claimed,
    callee: &dialer::Callee,
    index: usize,
    line: LineSlot,
    lost: watch::Receiver<bool>,
) -> Result<(AttemptOutcome, bool), voicecare_store::StoreError> {
    let pool = &engine.pool;
    let contact = dialer::contact(pool, c.elder_id, index).await?;
    let position = contact
        .as_ref()
        .map_or((index + 1).min(9) as i16, |k| k.position);
    let attempt = dialer::start_attempt(pool, c.id, Party::Contact(position), Utc::now()).await?;
    let fail = |why: &'static str| async move {
        dialer::update_attempt(pool, attempt, "failed", Some(why), Utc::now()).await?;
        tracing::info!(
            contact = position,
            reason = why,
            "emergency contact not reached"
        );
        Ok::<_, voicecare_store::StoreError>((AttemptOutcome::ContactNoAnswer, false))
    };
    let Some(contact) = contact else {
        return fail("the emergency contact was removed").await;
    };
    let (Some(device), Some(hub)) = (contact.device_id.as_deref(), engine.hub()) else {
        return fail(
            "the contact has only a telephone number and no telephone gateway is configured",
        )
        .await;
    };
    if !hub.is_registered(device) {
        return fail("contact's device not connected").await;
    }
    dialer::update_attempt(pool, attempt, "ringing", None, Utc::now()).await?;
    let leg = match hub.call_device(device).await {
        Ok(leg) => leg,
        Err(e) => {
            let (status, why) = match &e {
                TelephonyError::NoAnswer => ("no_answer", "no answer"),
                TelephonyError::Declined(HangupReason::Busy) => ("busy", "busy"),
                TelephonyError::Declined(_) => ("no_answer", "declined"),
                _ => ("failed", "call setup failed"),
            };
            tracing::info!(
                contact = position,
                reason = why,
                "emergency contact not reached"
            );
            dialer::update_attempt(pool, attempt, status, Some(why), Utc::now()).await?;
            return Ok((AttemptOutcome::ContactNoAnswer, false));
        }
    };
    dialer::update_attempt(pool, attempt, "answered", None, Utc::now()).await?;
    let end = match engine.flow(CONTACT_FLOW) {
        Ok(flow) => {
            let mut inputs = inputs(engine, &callee.full_name);
            inputs.insert("contact_name".into(), contact.name.clone());
            session::run(
                engine,
                c.id,
                Some(attempt),
                flow,
                lang_of(&callee.language),
                inputs,
                leg,
                line,
                lost,
            )
            .await
        }
        Err(e) => {
            tracing::error!(error = %e, "no contact notice flow: the contact cannot confirm");
            leg.control().hang_up();
            SessionEnd::no_flow()
        }
    };
    if end.lost {
        return Ok((AttemptOutcome::ContactNoAnswer, true));
    }
    let confirmed = end
        .report
        .as_ref()
        .is_some_and(|r| r.variables.get("contact_confirmed").map(String::as_str) == Some("yes"));
    let reason = if confirmed {
        "confirmed"
    } else {
        "not confirmed"
    };
    dialer::update_attempt(pool, attempt, "ended", Some(reason), Utc::now()).await?;
    tracing::info!(contact = position, confirmed, "emergency contact answered");
    Ok((
        if confirmed {
            AttemptOutcome::ContactConfirmed
        } else {
            AttemptOutcome::ContactNoAnswer
        },
        false,
    ))
}
