//! One call on this node, under a supervisor and a lease: a claimed
//! check-in (its attempts are the [`ladder`](super::ladder)'s) or a call an
//! elder placed.
//!
//! A panic inside a call ends that call only: the supervisor hangs the line
//! up, escalates the call for an operator and reschedules it.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;
use voicecare_core::session::escalation::{self, Trigger};
use voicecare_core::session::policy::{self, DIAL_IN_FLOW};
use voicecare_core::session::{AttemptStatus, CallOutcome, Direction, EndReason, SessionEnd};
use voicecare_store::dialer::{self, CallEnd, Claimed, Party};
use voicecare_telephony::leg::CallLeg;

use super::driver::{self, CallSpec};
use super::engine::Engine;
use super::lease::{self, AbortOnDrop};
use super::line::LineSlot;
use super::{ladder, record};

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
        let opened = dialer::open_inbound(
            &engine.pool,
            elder_id,
            &engine.cfg.node_id,
            DIAL_IN_FLOW,
            engine.lease(),
            Utc::now(),
        )
        .await;
        let call_id = match opened {
            Ok(id) => id,
            Err(e) => {
                // Without a call record nothing can be queued: say so loudly.
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
            if let Some(e) = escalation::decide(Trigger::EngineFault) {
                record::escalate(&engine, call_id, &e).await;
            }
            let now = Utc::now();
            if let Err(e) = dialer::interrupt(&engine.pool, call_id, &engine.cfg.node_id, now).await {
                tracing::error!(error = %e, "cannot close the faulted call; its lease will expire and the rescuer will");
            }
        }
        .instrument(span),
    );
}

async fn run_claimed(engine: Arc<Engine>, c: Claimed, line: LineSlot) {
    let (keeper, lost) = lease::spawn_keeper(engine.clone(), c.id);
    let _keeper = AbortOnDrop(keeper);
    if let Err(e) = ladder::run(&engine, &c, line, lost).await {
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
    let (keeper, lost) = lease::spawn_keeper(engine.clone(), call_id);
    let _keeper = AbortOnDrop(keeper);
    if let Err(e) = answer_inbound(&engine, call_id, elder_id, leg, line, lost).await {
        tracing::warn!(error = %e, "incoming call stopped on a database error; the lease will expire and the call will be rescheduled");
    }
}

async fn answer_inbound(
    engine: &Arc<Engine>,
    call_id: i64,
    elder_id: i64,
    leg: CallLeg,
    line: LineSlot,
    lost: watch::Receiver<bool>,
) -> Result<(), voicecare_store::StoreError> {
    let pool = &engine.pool;
    let callee = dialer::callee(pool, elder_id).await?;
    let attempt = dialer::start_attempt(pool, call_id, Party::Elder, Utc::now()).await?;
    dialer::update_attempt(pool, attempt, AttemptStatus::Answered, None, Utc::now()).await?;
    let end = match engine.flow(DIAL_IN_FLOW) {
        Ok(flow) => {
            let spec = CallSpec {
                call_id,
                attempt_id: Some(attempt),
                direction: Direction::Inbound,
                flow,
                lang: callee.lang(),
                inputs: policy::flow_inputs(&callee.full_name, &engine.cfg.service_name),
                screen: false,
            };
            driver::run(engine, spec, leg, line, lost).await.end
        }
        Err(e) => {
            tracing::error!(error = %e, "no help flow: the elder's call goes straight to an operator");
            leg.control().hang_up();
            if let Some(e) = escalation::decide(Trigger::HelpCallWithoutFlow) {
                record::escalate(engine, call_id, &e).await;
            }
            SessionEnd::no_flow()
        }
    };
    close(engine, call_id, attempt, &end).await
}

/// Close the attempt and the call after a session.
async fn close(
    engine: &Engine,
    call_id: i64,
    attempt: i64,
    end: &SessionEnd,
) -> Result<(), voicecare_store::StoreError> {
    let now = Utc::now();
    let pool = &engine.pool;
    if end.lost {
        let reason = Some(EndReason::LeaseLost);
        return dialer::update_attempt(pool, attempt, AttemptStatus::Interrupted, reason, now)
            .await;
    }
    dialer::update_attempt(pool, attempt, AttemptStatus::Ended, Some(end.reason), now).await?;
    let path = end
        .report
        .as_ref()
        .map(|r| r.path.clone())
        .unwrap_or_default();
    let outcome: CallOutcome = end.outcome();
    let node = &engine.cfg.node_id;
    dialer::finish(pool, call_id, node, CallEnd::Completed(outcome), &path, now).await
}
