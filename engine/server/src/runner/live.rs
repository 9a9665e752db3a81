//! Live talk: operators' browser legs bridged with elders' legs.
//!
//! Once a held call's session hands the call over ([`super::hold`]), its
//! driver runs [`converse`]: the two legs bridged, the conversation
//! recorded, the talk closed in the database with who left first. An
//! operator can also [`call_back`] an elder whose call has ended, on their
//! device or, through the SIP trunk, their telephone.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use voicecare_core::Lang;
use voicecare_core::session::policy;
use voicecare_core::session::{AttemptStatus, CallOutcome, EndReason, SetupFailure};
use voicecare_store::dialer::{self, CallEnd, Party};
use voicecare_store::elders::Phone;
use voicecare_store::operators::Scope;
use voicecare_store::talks::{self, EndedBy, TalkEnd};
use voicecare_telephony::TelephonyError;
use voicecare_telephony::bridge::{self, BridgeEnd, BridgeOptions, Direction};
use voicecare_telephony::leg::{CallLeg, EndReason as LegEnd};

use super::engine::Engine;
use super::hold::TalkState;
use super::lease::{self, AbortOnDrop};
use super::line::{ring_phone, setup_failure};

/// Bridge the elder (`a`) with the operator (`b`) until one side leaves or
/// the call's lease is lost; record the conversation and close the talk.
/// Returns who ended it.
pub async fn converse(
    engine: &Arc<Engine>,
    call_id: i64,
    talk_id: i64,
    elder: CallLeg,
    operator: CallLeg,
    state: &watch::Sender<TalkState>,
    lost: &mut watch::Receiver<bool>,
) -> EndedBy {
    let (elder_ctl, operator_ctl) = (elder.control(), operator.control());
    let recorder = engine
        .cfg
        .keep_recordings
        .then(|| Recorder::start(recording_path(engine, call_id, talk_id)));
    let handle = bridge::bridge(
        elder,
        operator,
        BridgeOptions {
            record: None,
            tap: recorder.as_ref().map(|r| r.tap.clone()),
        },
    );
    let _ = state.send(TalkState::Live { talk_id });
    tracing::info!(talk_id, "operator and elder bridged");
    let mut lease_lost = false;
    let finished = handle.finished();
    tokio::pin!(finished);
    let outcome = loop {
        tokio::select! {
            r = &mut finished => break r,
            c = lost.changed(), if !lease_lost => {
                if c.is_ok() && *lost.borrow() {
                    // Another node owns the call now: end the conversation here.
                    lease_lost = true;
                    elder_ctl.hang_up();
                    operator_ctl.hang_up();
                } else if c.is_err() {
                    lease_lost = true; // the keeper is gone; nothing more to hear from it
                }
            }
        }
    };
    let (ended_by, reason) = who_ended(&outcome, lease_lost && *lost.borrow());
    if !matches!(&outcome, Ok(o) if matches!(o.end, BridgeEnd::HungUp { .. })) {
        elder_ctl.hang_up();
        operator_ctl.hang_up();
    }
    let recording = match recorder {
        Some(r) => r.finish().await,
        None => None,
    };
    let path = recording.as_ref().map(|(p, _)| p.display().to_string());
    let end = TalkEnd {
        ended_by,
        reason,
        recording_path: path.as_deref(),
        recording_ms: recording.as_ref().map(|(_, ms)| *ms),
    };
    store_end(engine, talk_id, &end).await;
    metrics::counter!("voicecare_operator_talks_total", "ended_by" => ended_by.as_str())
        .increment(1);
    tracing::info!(
        talk_id,
        ended_by = ended_by.as_str(),
        reason,
        "conversation ended"
    );
    let _ = state.send(TalkState::Ended {
        talk_id: Some(talk_id),
        ended_by,
        reason: reason.to_string(),
    });
    ended_by
}

/// Who ended a bridged conversation, and how, in words for the talk record.
fn who_ended(
    outcome: &Result<bridge::BridgeOutcome, TelephonyError>,
    lease_lost: bool,
) -> (EndedBy, &'static str) {
    if lease_lost {
        return (EndedBy::Engine, "the call's lease was lost");
    }
    match outcome {
        Ok(o) => match &o.end {
            BridgeEnd::HungUp { side, reason } => match (side, reason) {
                (Direction::AToB, LegEnd::RemoteHangup) => (EndedBy::Elder, "elder hung up"),
                (Direction::AToB, LegEnd::ConnectionFailed) => {
                    (EndedBy::Elder, "the elder's line dropped")
                }
                (Direction::AToB, LegEnd::LocalHangup) => {
                    (EndedBy::Engine, "the engine ended the elder's leg")
                }
                (Direction::BToA, LegEnd::ConnectionFailed) => {
                    (EndedBy::Operator, "the operator's connection dropped")
                }
                (Direction::BToA, _) => (EndedBy::Operator, "operator hung up"),
            },
            BridgeEnd::Unbridged { a, b } => {
                a.control().hang_up();
                b.control().hang_up();
                (EndedBy::Engine, "unbridged")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "bridge failed");
            (EndedBy::Engine, "bridge failed")
        }
    }
}

/// Close a talk that was never bridged (or was cut short before it could
/// be) and tell the operator's page.
pub async fn close_unbridged(
    engine: &Engine,
    talk_id: i64,
    state: &watch::Sender<TalkState>,
    ended_by: EndedBy,
    reason: &'static str,
) {
    let end = TalkEnd {
        ended_by,
        reason,
        recording_path: None,
        recording_ms: None,
    };
    store_end(engine, talk_id, &end).await;
    let _ = state.send(TalkState::Ended {
        talk_id: Some(talk_id),
        ended_by,
        reason: reason.to_string(),
    });
}

/// Close a talk, retrying while the database is unreachable.
pub async fn store_end(engine: &Engine, talk_id: i64, end: &TalkEnd<'_>) {
    for wait in [100u64, 400, 1000, 2000, 4000] {
        match talks::end(&engine.pool, talk_id, end, Utc::now()).await {
            Ok(()) => return,
            Err(voicecare_store::StoreError::Conflict(m)) => {
                tracing::warn!(talk_id, message = %m, "talk already closed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, talk_id, "cannot close the talk yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
        }
    }
    tracing::error!(talk_id, "the talk could not be closed in the database");
}

/// `<data-dir>/recordings/YYYY-MM-DD/talk-<call>-<talk>.wav`: next to the
/// elder's utterances, so the same retention clean-up covers it.
fn recording_path(engine: &Engine, call_id: i64, talk_id: i64) -> PathBuf {
    engine
        .cfg
        .data_dir
        .join("recordings")
        .join(Utc::now().format("%Y-%m-%d").to_string())
        .join(format!("talk-{call_id}-{talk_id}.wav"))
}

/// Frames buffered between the bridge and the file writer (60 s). The bridge
/// drops frames rather than wait, so this is generous.
const TAP_FRAMES: usize = 3000;

/// Writes the bridged conversation to a stereo WAV as it happens (left: the
/// elder, right: the operator), on a blocking thread, so a long call does not
/// accumulate in memory.
struct Recorder {
    tap: mpsc::Sender<(Direction, Vec<i16>)>,
    done: tokio::task::JoinHandle<Option<(PathBuf, i32)>>,
}

impl Recorder {
    fn start(path: PathBuf) -> Recorder {
        let (tap, mut rx) = mpsc::channel::<(Direction, Vec<i16>)>(TAP_FRAMES);
        let done = tokio::task::spawn_blocking(move || {
            let mut write = || -> Result<i32, String> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                let spec = hound::WavSpec {
                    channels: 2,
                    sample_rate: 16_000,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                };
                let mut w = hound::WavWriter::create(&path, spec).map_err(|e| e.to_string())?;
                let (mut left, mut right) = (
                    std::collections::VecDeque::<i16>::new(),
                    std::collections::VecDeque::<i16>::new(),
                );
                let mut pairs: i64 = 0;
                let mut pair = |l: i16, r: i16, w: &mut hound::WavWriter<_>| {
                    pairs += 1;
                    w.write_sample(l)
                        .and_then(|_| w.write_sample(r))
                        .map_err(|e| e.to_string())
                };
                while let Some((dir, frame)) = rx.blocking_recv() {
                    match dir {
                        Direction::AToB => left.extend(frame),
                        Direction::BToA => right.extend(frame),
                    }
                    while !left.is_empty() && !right.is_empty() {
                        let (l, r) = (left.pop_front(), right.pop_front());
                        pair(l.unwrap_or(0), r.unwrap_or(0), &mut w)?;
                    }
                }
                // The side that sent more is padded with silence, as the bridge's own recorder does.
                while !left.is_empty() || !right.is_empty() {
                    let (l, r) = (left.pop_front(), right.pop_front());
                    pair(l.unwrap_or(0), r.unwrap_or(0), &mut w)?;
                }
                w.finalize().map_err(|e| e.to_string())?;
                Ok((pairs / 16).min(i32::MAX as i64) as i32)
            };
            match write() {
                Ok(ms) => Some((path, ms)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record the conversation");
                    None
                }
            }
        });
        Recorder { tap, done }
    }

    /// Wait for the writer once the bridge (the tap's other holder) is gone.
    async fn finish(self) -> Option<(PathBuf, i32)> {
        drop(self.tap);
        self.done.await.ok().flatten()
    }
}

/// Play a call-back notice to the elder once their leg is up.
async fn play_notice(engine: &Engine, elder: &mut CallLeg, lang: Lang, missed: bool) {
    if elder
        .wait_connected(std::time::Duration::from_secs(10))
        .await
        .is_err()
    {
        return;
    }
    let text = policy::callback_notice(lang, &engine.cfg.service_name, missed);
    let prompts = engine.prompts.clone();
    match tokio::task::spawn_blocking(move || prompts.pcm(&text, None, lang, 0.9)).await {
        Ok(Ok(pcm)) => {
            let _ = elder.control().play(pcm).finished().await;
        }
        _ => tracing::warn!("call-back notice unavailable"),
    }
}

/// How a call back reaches the elder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Their device, connected to this node.
    Device(&'a str),
    /// Their telephone number, through the SIP trunk.
    Phone(&'a Phone),
}

/// The elder's device when it is connected to this node, else their
/// telephone number when this node has a SIP trunk; else why neither can
/// be rung.
pub fn callback_route<'a>(
    engine: &Engine,
    t: &'a talks::TalkTarget,
) -> Result<Route<'a>, SetupFailure> {
    let hub = engine.hub();
    let device = t.device_id.as_deref();
    if let (Some(d), Some(hub)) = (device, &hub)
        && hub.is_registered(d)
    {
        return Ok(Route::Device(d));
    }
    if let (Some(number), Some(_)) = (t.phone.as_ref(), &engine.sip) {
        return Ok(Route::Phone(number));
    }
    Err(match (device, hub) {
        (None, _) => SetupFailure::NoDevice,
        (Some(_), None) => SetupFailure::TransportDown,
        (Some(_), Some(_)) => SetupFailure::DeviceNotConnected,
    })
}

/// Ring the elder for an operator whose leg is connected, on their device
/// or their telephone ([`callback_route`]), and bridge the two when the
/// elder answers. The call back is a call of its own (`purpose =
/// 'callback'`) held by this node under a lease like any other.
pub async fn call_back(
    engine: &Arc<Engine>,
    t: &talks::TalkTarget,
    scope: Scope,
    operator: CallLeg,
    state: &watch::Sender<TalkState>,
) {
    let route = match callback_route(engine, t) {
        Ok(r) => r,
        Err(f) => {
            operator.control().hang_up();
            let (code, message) = f.for_operator();
            let _ = state.send(TalkState::Failed {
                code,
                message: message.into(),
            });
            return;
        }
    };
    let Some(cb) = CallBack::open(engine, t, scope, &operator, state).await else {
        return;
    };
    // The ring runs to its end even if the operator hangs up meanwhile: an
    // elder who answers then is hung up at once rather than left ringing.
    let mut sip_status = None;
    let ringing = match (route, engine.hub(), &engine.sip) {
        (Route::Device(d), Some(hub), _) => hub.call_device(d).await.map_err(|e| setup_failure(&e)),
        (Route::Phone(number), _, Some(sip)) => ring_phone(sip, number, None).await.map_err(|u| {
            sip_status = u.sip_status;
            u.failure
        }),
        _ => Err(SetupFailure::TransportDown),
    };
    match ringing {
        Ok(elder) => cb.answered(t, elder, operator).await,
        Err(f) => cb.not_reached(f, sip_status, &operator).await,
    }
}

/// A call back in progress: its call, talk, attempt and lease.
struct CallBack<'a> {
    engine: &'a Arc<Engine>,
    state: &'a watch::Sender<TalkState>,
    call_id: i64,
    talk_id: i64,
    attempt: Option<i64>,
    _keeper: AbortOnDrop,
    lost: watch::Receiver<bool>,
}

impl<'a> CallBack<'a> {
    /// Open the call and its talk (the operator must hold the claim) and
    /// start ringing; `None` when refused, with the page told why.
    async fn open(
        engine: &'a Arc<Engine>,
        t: &talks::TalkTarget,
        scope: Scope,
        operator: &CallLeg,
        state: &'a watch::Sender<TalkState>,
    ) -> Option<CallBack<'a>> {
        let fail = |code: &'static str, message: String| {
            operator.control().hang_up();
            let _ = state.send(TalkState::Failed { code, message });
        };
        let pool = &engine.pool;
        let node = &engine.cfg.node_id;
        let opened = talks::start_callback(
            pool,
            &scope,
            t.escalation_id,
            node,
            engine.lease(),
            Utc::now(),
        )
        .await;
        let (call_id, talk_id) = match opened {
            Ok(x) => x,
            Err(voicecare_store::StoreError::Conflict(m)) => {
                fail("not_claimed", m);
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the call back");
                fail("internal", "internal error; see the server log".into());
                return None;
            }
        };
        let (keeper, lost) = lease::spawn_keeper(engine.clone(), call_id);
        let _ = state.send(TalkState::Ringing { talk_id });
        tracing::info!(call_id, talk_id, "calling the elder back for an operator");
        let attempt = dialer::start_attempt(pool, call_id, Party::Elder, Utc::now())
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot record the call-back attempt"))
            .ok();
        let cb = CallBack {
            engine,
            state,
            call_id,
            talk_id,
            attempt,
            _keeper: AbortOnDrop(keeper),
            lost,
        };
        cb.set_attempt(AttemptStatus::Ringing, None).await;
        Some(cb)
    }

    async fn set_attempt(&self, status: AttemptStatus, reason: Option<EndReason>) {
        if let Some(a) = self.attempt
            && let Err(e) =
                dialer::update_attempt(&self.engine.pool, a, status, reason, Utc::now()).await
        {
            tracing::warn!(error = %e, "cannot update the call-back attempt");
        }
    }

    async fn finish(&self, end: CallEnd) {
        let node = &self.engine.cfg.node_id;
        if let Err(e) =
            dialer::finish(&self.engine.pool, self.call_id, node, end, &[], Utc::now()).await
        {
            tracing::warn!(error = %e, "cannot close the call back");
        }
    }

    /// Everything is recorded before the page is told.
    async fn not_reached(self, f: SetupFailure, sip_status: Option<u16>, operator: &CallLeg) {
        if let Some(a) = self.attempt {
            let outcome = f.dial_outcome();
            let (pool, reason) = (&self.engine.pool, EndReason::NotReached(f));
            let fix = outcome.needs_number_fix();
            let now = Utc::now();
            if let Err(e) =
                dialer::not_reached(pool, a, f.status(), reason, outcome, fix, sip_status, now)
                    .await
            {
                tracing::warn!(error = %e, "cannot record the call-back attempt");
            }
        }
        operator.control().hang_up();
        let (code, why) = f.for_operator();
        let end = TalkEnd {
            ended_by: EndedBy::Engine,
            reason: why,
            recording_path: None,
            recording_ms: None,
        };
        store_end(self.engine, self.talk_id, &end).await;
        self.finish(CallEnd::Unreachable).await;
        let _ = self.state.send(TalkState::Failed {
            code,
            message: why.to_string(),
        });
    }

    async fn answered(mut self, t: &talks::TalkTarget, mut elder: CallLeg, operator: CallLeg) {
        self.set_attempt(AttemptStatus::Answered, None).await;
        let lang = t.language.parse().unwrap_or(Lang::En);
        let engine = self.engine;
        if operator.control().end_reason().is_some() {
            play_notice(engine, &mut elder, lang, true).await;
            elder.control().hang_up();
            let why = "operator left before the elder answered";
            self.set_attempt(AttemptStatus::Ended, Some(EndReason::OperatorHungUp))
                .await;
            self.finish(CallEnd::Completed(CallOutcome::HungUp)).await;
            close_unbridged(engine, self.talk_id, self.state, EndedBy::Operator, why).await;
            return;
        }
        if let Err(e) = talks::connected(&engine.pool, self.talk_id, Utc::now()).await {
            tracing::warn!(error = %e, "cannot mark the call back as answered");
        }
        let _ = self.state.send(TalkState::Answered {
            talk_id: self.talk_id,
        });
        play_notice(engine, &mut elder, lang, false).await;
        let (call_id, talk_id, state) = (self.call_id, self.talk_id, self.state);
        let by = converse(
            engine,
            call_id,
            talk_id,
            elder,
            operator,
            state,
            &mut self.lost,
        )
        .await;
        self.set_attempt(AttemptStatus::Ended, Some(EndReason::after_operator(by)))
            .await;
        if !*self.lost.borrow() {
            self.finish(CallEnd::Completed(CallOutcome::Ok)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_recorder_writes_both_sides_side_by_side_and_pads_the_shorter() {
        let dir = std::env::temp_dir().join(format!("voicecare-rec-{}", std::process::id()));
        let path = dir.join("day").join("talk-1-2.wav");
        let r = Recorder::start(path.clone());
        // The elder sends three frames, the operator two (a lost packet).
        for i in 0..3i16 {
            r.tap
                .send((Direction::AToB, vec![100 + i; 320]))
                .await
                .unwrap();
            if i < 2 {
                r.tap
                    .send((Direction::BToA, vec![-200 - i; 320]))
                    .await
                    .unwrap();
            }
        }
        let (written, ms) = r.finish().await.expect("a recording");
        assert_eq!(written, path);
        assert_eq!(ms, 60);
        let mut wav = hound::WavReader::open(&path).unwrap();
        assert_eq!(wav.spec().channels, 2);
        let s: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s.len(), 2 * 3 * 320);
        assert_eq!((s[0], s[1]), (100, -200));
        assert_eq!((s[2 * 320], s[2 * 320 + 1]), (101, -201));
        // The operator's missing frame is silence at the end.
        assert_eq!((s[2 * 640], s[2 * 640 + 1]), (102, 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
