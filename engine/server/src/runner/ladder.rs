//! The attempts of one claimed call: ring whom the ladder says, run the
//! session when someone answers, record what happened, and ask the ladder
//! ([`voicecare_core::schedule::Ladder`]) what comes next: another attempt
//! now, one later (the call goes back in the schedule), an escalation, or
//! the end.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use voicecare_core::Level;
use voicecare_core::schedule::{AttemptOutcome, Ladder, LadderAction, LadderResult};
use voicecare_core::session::escalation::{self, Trigger};
use voicecare_core::session::policy::{self, CHECKIN_FLOW, CONTACT_FLOW};
use voicecare_core::session::{
    AttemptStatus, CallOutcome, Direction, EndReason, SessionEnd, SetupFailure,
};
use voicecare_store::StoreError;
use voicecare_store::dialer::{self, CallEnd, Callee, Claimed, Party};
use voicecare_store::elders::Phone;
use voicecare_telephony::leg::CallLeg;

use super::driver::{self, CallSpec};
use super::engine::Engine;
use super::line::{LineSlot, ring_phone, setup_failure};
use super::memory;
use super::record;

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

/// One claimed call.
struct Attempts<'a> {
    engine: &'a Arc<Engine>,
    c: &'a Claimed,
    callee: Callee,
    line: LineSlot,
    lost: watch::Receiver<bool>,
}

/// Run the claimed call's attempts until the ladder is done with it for now.
pub async fn run(
    engine: &Arc<Engine>,
    c: &Claimed,
    line: LineSlot,
    lost: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let callee = dialer::callee(&engine.pool, c.elder_id).await?;
    let mut state = start_state(engine, c, &callee)?;
    let a = Attempts {
        engine,
        c,
        callee,
        line,
        lost,
    };
    let mut answered: Option<SessionEnd> = None;
    loop {
        let outcome = match state.next {
            Next::Elder => {
                let (outcome, end) = a.elder().await?;
                if let Some(end) = end {
                    if end.lost {
                        return Ok(());
                    }
                    answered = Some(end);
                }
                outcome
            }
            Next::Contact { index } => match a.contact(index).await? {
                Some(outcome) => outcome,
                None => return Ok(()), // the lease was lost
            },
        };
        let now = Utc::now();
        let action = state.ladder.record(outcome, now).unwrap_or_else(|e| {
            tracing::error!(error = %e, "ladder refused the outcome");
            LadderAction::Escalate {
                level: Level::Urgent,
                reason: format!("call ladder error: {e}"),
            }
        });
        if !a.follow(&mut state, action, answered.as_ref()).await? {
            return Ok(());
        }
    }
}

/// The ladder kept from an earlier attempt, or a new one for this elder.
fn start_state(engine: &Engine, c: &Claimed, callee: &Callee) -> Result<LadderState, StoreError> {
    if let Some(Ok(s)) = c.ladder.clone().map(serde_json::from_value::<LadderState>) {
        return Ok(s);
    }
    let policy = policy::elder_ladder(
        &engine.cfg.ladder,
        callee.max_attempts,
        callee.retry_minutes,
    );
    let contacts = callee.contacts.max(0) as usize;
    let ladder = match Ladder::start(policy, contacts, Utc::now()) {
        Ok((ladder, _)) => ladder,
        Err(e) => {
            tracing::error!(error = %e, "ladder policy rejected; using the default policy");
            Ladder::start(Default::default(), contacts, Utc::now())
                .map_err(|e| StoreError::invalid("ladder", e.to_string()))?
                .0
        }
    };
    Ok(LadderState {
        ladder,
        next: Next::Elder,
    })
}

impl Attempts<'_> {
    /// Do what the ladder says; `Ok(true)`: ring again now.
    async fn follow(
        &self,
        state: &mut LadderState,
        action: LadderAction,
        answered: Option<&SessionEnd>,
    ) -> Result<bool, StoreError> {
        let (engine, id, node) = (self.engine, self.c.id, &self.engine.cfg.node_id);
        let now = Utc::now();
        match action {
            LadderAction::CallElder { at } | LadderAction::CallContact { at, .. } => {
                state.next = match action {
                    LadderAction::CallContact { index, .. } => Next::Contact { index },
                    _ => Next::Elder,
                };
                let minute_ms = engine.cfg.ladder_minute.as_millis() as u64;
                let due = policy::scaled_due(at, now, minute_ms);
                if due <= now {
                    return Ok(true);
                }
                let json = serde_json::to_value(&*state).unwrap_or_default();
                dialer::retry_later(&engine.pool, id, node, due, &json, now).await?;
                let retry_in_ms = (due - now).num_milliseconds();
                tracing::info!(
                    retry_in_ms,
                    "call placed back in the schedule for the next attempt"
                );
                Ok(false)
            }
            LadderAction::Escalate { level, reason } => {
                let trigger = Trigger::Unreachable {
                    level,
                    reason: &reason,
                };
                if let Some(e) = escalation::decide(trigger) {
                    record::escalate(engine, id, &e).await;
                }
                dialer::finish(&engine.pool, id, node, CallEnd::Unreachable, &[], now).await?;
                Ok(false)
            }
            LadderAction::Done(result) => {
                let (outcome, path) = match (&result, answered) {
                    (LadderResult::ReachedElder, Some(end)) => {
                        (end.outcome(), end.report.as_ref().map(|r| r.path.clone()))
                    }
                    (LadderResult::ContactConfirmed { .. }, _) => {
                        (CallOutcome::ContactConfirmed, None)
                    }
                    _ => (CallOutcome::Ok, None),
                };
                let path = path.unwrap_or_default();
                let end = CallEnd::Completed(outcome);
                dialer::finish(&engine.pool, id, node, end, &path, now).await?;
                Ok(false)
            }
        }
    }

    /// Ring a device for this call's attempt, or, with no device, the phone
    /// number through the SIP trunk; on failure the attempt is recorded as
    /// not reached and the reason returned.
    async fn ring(
        &self,
        attempt: i64,
        device: Option<&str>,
        phone: Option<&Phone>,
        contact: bool,
    ) -> Result<Result<CallLeg, SetupFailure>, StoreError> {
        let pool = &self.engine.pool;
        let offline = if contact {
            SetupFailure::ContactDeviceNotConnected
        } else {
            SetupFailure::DeviceNotConnected
        };
        let ringing =
            || dialer::update_attempt(pool, attempt, AttemptStatus::Ringing, None, Utc::now());
        let mut sip_status = None;
        let reached = match (device, self.engine.hub(), phone, &self.engine.sip) {
            (None, _, Some(number), Some(sip)) => {
                ringing().await?;
                let hear = Some((&*self.engine.asr, self.callee.lang()));
                ring_phone(sip, number, hear).await.map_err(|u| {
                    sip_status = u.sip_status;
                    u.failure
                })
            }
            (None, ..) => Err(SetupFailure::NoDevice),
            (Some(_), None, ..) => Err(SetupFailure::TransportDown),
            (Some(d), Some(hub), ..) if !hub.is_registered(d) => Err(offline),
            (Some(d), Some(hub), ..) => {
                ringing().await?;
                hub.call_device(d).await.map_err(|e| setup_failure(&e))
            }
        };
        // From here on a dropped leg would leave the far end connected: the
        // supervisor hangs up what is in the slot if this task dies.
        if let (Ok(leg), Ok(mut slot)) = (&reached, self.line.lock()) {
            *slot = Some(leg.control());
        }
        let recorded = match &reached {
            Ok(_) => {
                dialer::update_attempt(pool, attempt, AttemptStatus::Answered, None, Utc::now())
                    .await
            }
            Err(f) => {
                let (reason, outcome) = (EndReason::NotReached(*f), f.dial_outcome());
                let fix = outcome.needs_number_fix();
                let task = dialer::not_reached(
                    pool,
                    attempt,
                    f.status(),
                    reason,
                    outcome,
                    fix,
                    sip_status,
                    Utc::now(),
                )
                .await;
                if let Ok(Some(task)) = task {
                    tracing::info!(task, "the elder's telephone number needs correcting");
                }
                task.map(|_| ())
            }
        };
        if let (Err(_), Ok(leg)) = (&recorded, &reached) {
            leg.control().hang_up();
        }
        recorded?;
        Ok(reached)
    }

    /// Ring the elder once. Returns the ladder outcome and, if answered, how the session ended.
    async fn elder(&self) -> Result<(AttemptOutcome, Option<SessionEnd>), StoreError> {
        let (engine, c) = (self.engine, self.c);
        let attempt = dialer::start_attempt(&engine.pool, c.id, Party::Elder, Utc::now()).await?;
        let (device, phone) = (self.callee.device_id.as_deref(), self.callee.phone.as_ref());
        let leg = match self.ring(attempt, device, phone, false).await? {
            Ok(leg) => leg,
            Err(f) => {
                let outcome = f.elder_outcome();
                tracing::info!(outcome = %outcome, "elder not reached");
                return Ok((outcome, None));
            }
        };
        let flow_id = c.flow.as_deref().unwrap_or(CHECKIN_FLOW);
        let mut inputs = policy::flow_inputs(&self.callee.full_name, &engine.cfg.service_name);
        let asked = memory::follow_ups(engine, &self.callee, self.callee.lang(), &mut inputs).await;
        // A telephone may be answered by a machine or the carrier's
        // recording: the session listens first (session::screen).
        let screen = device.is_none() && phone.is_some();
        let end = self.session(attempt, flow_id, inputs, leg, screen).await;
        memory::record_answers(engine, c.id, &asked, end.report.as_ref()).await;
        if end.lost {
            return Ok((AttemptOutcome::Answered, Some(end)));
        }
        if let EndReason::NotReached(f) = end.reason {
            let outcome = f.dial_outcome();
            let fix = outcome.needs_number_fix();
            // Answered, by a machine or a recording: the attempt ended, and
            // its outcome says the elder was not reached.
            dialer::not_reached(
                &engine.pool,
                attempt,
                AttemptStatus::Ended,
                end.reason,
                outcome,
                fix,
                None,
                Utc::now(),
            )
            .await?;
            tracing::info!(outcome = outcome.as_str(), "answered, but not by the elder");
            return Ok((f.elder_outcome(), None));
        }
        let reason = Some(end.reason);
        dialer::update_attempt(
            &engine.pool,
            attempt,
            AttemptStatus::Ended,
            reason,
            Utc::now(),
        )
        .await?;
        let outcome = match end.outcome() {
            CallOutcome::AnsweredSilent => AttemptOutcome::AnsweredSilent,
            _ => AttemptOutcome::Answered,
        };
        Ok((outcome, Some(end)))
    }

    /// Run a flow on an answered leg; a missing flow hangs up and escalates.
    async fn session(
        &self,
        attempt: i64,
        flow_id: &str,
        inputs: std::collections::BTreeMap<String, String>,
        leg: CallLeg,
        screen: bool,
    ) -> SessionEnd {
        let engine = self.engine;
        match engine.flow(flow_id) {
            Ok(flow) => {
                let spec = CallSpec {
                    call_id: self.c.id,
                    attempt_id: Some(attempt),
                    direction: Direction::Outbound,
                    flow,
                    lang: self.callee.lang(),
                    inputs,
                    screen,
                };
                let (line, lost) = (self.line.clone(), self.lost.clone());
                driver::run(engine, spec, leg, line, lost).await.end
            }
            Err(e) => {
                tracing::error!(error = %e, flow = flow_id, "flow missing: cannot talk to the callee");
                leg.control().hang_up();
                let reason = e.to_string();
                if let Some(e) = escalation::decide(Trigger::FlowAborted { reason: &reason }) {
                    record::escalate(engine, self.c.id, &e).await;
                }
                SessionEnd::no_flow()
            }
        }
    }

    /// Ring the elder's `index`-th emergency contact on their care-app device
    /// with the contact notice flow. `None`: the call's lease was lost.
    async fn contact(&self, index: usize) -> Result<Option<AttemptOutcome>, StoreError> {
        let (engine, c) = (self.engine, self.c);
        let pool = &engine.pool;
        let contact = dialer::contact(pool, c.elder_id, index).await?;
        let position = contact
            .as_ref()
            .map_or((index + 1).min(9) as i16, |k| k.position);
        let attempt =
            dialer::start_attempt(pool, c.id, Party::Contact(position), Utc::now()).await?;
        let reached = match &contact {
            None => Err(SetupFailure::ContactRemoved),
            Some(k) if k.device_id.is_none() => Err(SetupFailure::ContactHasNoDevice),
            Some(k) => {
                self.ring(attempt, k.device_id.as_deref(), None, true)
                    .await?
            }
        };
        let (leg, contact) = match (reached, contact) {
            (Ok(leg), Some(k)) => (leg, k),
            (Err(f), _) => {
                if matches!(
                    f,
                    SetupFailure::ContactRemoved | SetupFailure::ContactHasNoDevice
                ) {
                    let reason = EndReason::NotReached(f);
                    let outcome = f.dial_outcome();
                    dialer::not_reached(
                        pool,
                        attempt,
                        f.status(),
                        reason,
                        outcome,
                        false,
                        None,
                        Utc::now(),
                    )
                    .await?;
                }
                tracing::info!(
                    contact = position,
                    reason = f.as_str(),
                    "emergency contact not reached"
                );
                return Ok(Some(AttemptOutcome::ContactNoAnswer));
            }
            (Ok(leg), None) => {
                leg.control().hang_up();
                return Ok(Some(AttemptOutcome::ContactNoAnswer));
            }
        };
        let mut inputs = policy::flow_inputs(&self.callee.full_name, &engine.cfg.service_name);
        inputs.insert("contact_name".into(), contact.name.clone());
        let end = self
            .session(attempt, CONTACT_FLOW, inputs, leg, false)
            .await;
        if end.lost {
            return Ok(None);
        }
        let confirmed = policy::contact_confirmed(end.report.as_ref());
        let reason = if confirmed {
            EndReason::ContactConfirmed
        } else {
            EndReason::ContactNotConfirmed
        };
        dialer::update_attempt(
            pool,
            attempt,
            AttemptStatus::Ended,
            Some(reason),
            Utc::now(),
        )
        .await?;
        tracing::info!(contact = position, confirmed, "emergency contact answered");
        Ok(Some(if confirmed {
            AttemptOutcome::ContactConfirmed
        } else {
            AttemptOutcome::ContactNoAnswer
        }))
    }
}
