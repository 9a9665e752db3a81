//! Live talk: operators' browser legs bridged with elders' legs.
//!
//! A session whose flow keeps the elder on the line registers the call here
//! while it holds; an operator who holds the escalation's claim sends it a
//! [`JoinRequest`] with their (already connected) leg. The session checks the
//! claim in the database, hands the call over from the flow and runs
//! [`converse`]: the two legs bridged, the conversation recorded, the talk
//! closed in the database with who left first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use voicecare_store::operators::Scope;
use voicecare_store::talks::{self, EndedBy, TalkEnd};
use voicecare_telephony::TelephonyError;
use voicecare_telephony::bridge::{self, BridgeEnd, BridgeOptions, Direction};
use voicecare_telephony::leg::{CallLeg, EndReason};
use voicecare_telephony::signalling::HangupReason;

use super::Engine;

/// What the operator's page is told about its conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TalkState {
    /// Setting up the operator's own media.
    Connecting,
    /// Calling the elder back; their device is ringing.
    Ringing { talk_id: i64 },
    /// The elder answered a call back and hears the recording notice.
    Answered { talk_id: i64 },
    /// Both legs bridged: two-way audio.
    Live { talk_id: i64 },
    Ended {
        talk_id: Option<i64>,
        ended_by: EndedBy,
        reason: String,
    },
    /// Refused or failed before a conversation started.
    Failed { code: &'static str, message: String },
}

/// An operator asking to take over a held call.
pub struct JoinRequest {
    pub escalation_id: i64,
    pub scope: Scope,
    /// The operator's connected leg.
    pub operator: CallLeg,
    pub state: watch::Sender<TalkState>,
    /// `Ok(talk id)` once the flow has handed the call over; `Err` (the
    /// claim was lost meanwhile) leaves the elder holding.
    pub accepted: oneshot::Sender<Result<i64, voicecare_store::StoreError>>,
}

/// Calls on this node that hold an elder for an operator.
#[derive(Default)]
pub struct Registry {
    held: Mutex<HashMap<i64, mpsc::Sender<JoinRequest>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, mpsc::Sender<JoinRequest>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a holding call until the guard is dropped.
    pub fn hold(self: &Arc<Self>, call_id: i64, tx: mpsc::Sender<JoinRequest>) -> HoldGuard {
        self.map().insert(call_id, tx);
        HoldGuard {
            registry: self.clone(),
            call_id,
        }
    }

    /// Where to send a join request, if the call holds on this node.
    pub fn holding(&self, call_id: i64) -> Option<mpsc::Sender<JoinRequest>> {
        self.map()
            .get(&call_id)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }

    pub fn is_holding(&self, call_id: i64) -> bool {
        self.holding(call_id).is_some()
    }
}

/// Removes a call from the registry when the hold ends.
pub struct HoldGuard {
    registry: Arc<Registry>,
    call_id: i64,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.registry.map().remove(&self.call_id);
    }
}

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
    let (ended_by, reason) = match &outcome {
        _ if lease_lost && *lost.borrow() => (EndedBy::Engine, "the call's lease was lost"),
        Ok(o) => match &o.end {
            BridgeEnd::HungUp { side, reason } => match (side, reason) {
                (Direction::AToB, EndReason::RemoteHangup) => (EndedBy::Elder, "elder hung up"),
                (Direction::AToB, EndReason::ConnectionFailed) => {
                    (EndedBy::Elder, "the elder's line dropped")
                }
                (Direction::AToB, EndReason::LocalHangup) => {
                    (EndedBy::Engine, "the engine ended the elder's leg")
                }
                (Direction::BToA, EndReason::ConnectionFailed) => {
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
            elder_ctl.hang_up();
            operator_ctl.hang_up();
            (EndedBy::Engine, "bridge failed")
        }
    };
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

/// What the elder hears on answering a call back, before the operator: who
/// is calling, and that the call is recorded. `missed`: the operator had to
/// leave while it rang, so the elder is told rather than hung up on in silence.
fn callback_notice(
    lang: &str,
    service: &str,
    missed: bool,
) -> (voicecare_core::flow::Lang, String) {
    use voicecare_core::flow::Lang;
    match (lang == "zh", missed) {
        (true, false) => (
            Lang::Zh,
            format!("您好，这里是{service}。护理团队的工作人员给您回电话，通话会被录音。"),
        ),
        (true, true) => (
            Lang::Zh,
            format!(
                "您好，这里是{service}。抱歉，刚才给您打电话的工作人员有事走开了，护理团队会很快再给您打电话。"
            ),
        ),
        (false, false) => (
            Lang::En,
            format!(
                "Hello, this is {service}. Someone from your care team is calling you back. This call is recorded."
            ),
        ),
        (false, true) => (
            Lang::En,
            format!(
                "Hello, this is {service}. Sorry, the person calling you had to step away. Someone from your care team will call you again soon."
            ),
        ),
    }
}

/// Play a call-back notice to the elder once their leg is up.
async fn play_notice(engine: &Engine, elder: &mut CallLeg, lang: &str, missed: bool) {
    if elder
        .wait_connected(std::time::Duration::from_secs(10))
        .await
        .is_err()
    {
        return;
    }
    let (lang, text) = callback_notice(lang, &engine.cfg.service_name, missed);
    let prompts = engine.prompts.clone();
    match tokio::task::spawn_blocking(move || prompts.pcm(&text, None, lang, 0.9)).await {
        Ok(Ok(pcm)) => {
            let _ = elder.control().play(pcm).finished().await;
        }
        _ => tracing::warn!("call-back notice unavailable"),
    }
}

/// Ring the elder's device for an operator whose leg is connected, and
/// bridge the two when the elder answers. The call back is a call of its own
/// (`purpose = 'callback'`) held by this node under a lease like any other.
pub async fn call_back(
    engine: &Arc<Engine>,
    t: &talks::TalkTarget,
    scope: Scope,
    operator: CallLeg,
    state: &watch::Sender<TalkState>,
) {
    use voicecare_store::dialer::{self, CallEnd, Party};
    let fail = |code: &'static str, message: String| {
        let _ = state.send(TalkState::Failed { code, message });
    };
    let op_ctl = operator.control();
    let (Some(hub), Some(device)) = (engine.hub(), t.device_id.as_deref()) else {
        op_ctl.hang_up();
        return fail(
            "no_device",
            "the elder has no device this engine can ring".into(),
        );
    };
    let pool = &engine.pool;
    let (call_id, talk_id) = match talks::start_callback(
        pool,
        &scope,
        t.escalation_id,
        &engine.cfg.node_id,
        engine.lease(),
        Utc::now(),
    )
    .await
    {
        Ok(x) => x,
        Err(voicecare_store::StoreError::Conflict(m)) => {
            op_ctl.hang_up();
            return fail("not_claimed", m);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open the call back");
            op_ctl.hang_up();
            return fail("internal", "internal error; see the server log".into());
        }
    };
    let (keeper, mut lost) = super::call::spawn_lease_keeper(engine.clone(), call_id);
    let _ = state.send(TalkState::Ringing { talk_id });
    tracing::info!(call_id, talk_id, "calling the elder back for an operator");
    let attempt = dialer::start_attempt(pool, call_id, Party::Elder, Utc::now())
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "cannot record the call-back attempt"))
        .ok();
    let set_attempt = |status: &'static str, reason: Option<&'static str>| async move {
        if let Some(a) = attempt
            && let Err(e) = dialer::update_attempt(pool, a, status, reason, Utc::now()).await
        {
            tracing::warn!(error = %e, "cannot update the call-back attempt");
        }
    };
    set_attempt("ringing", None).await;
    // The ring runs to its end even if the operator hangs up meanwhile: an
    // elder who answers then is hung up at once rather than left ringing.
    let ringing = hub.call_device(device).await;
    let finish = |end: CallEnd| async move {
        if let Err(e) =
            dialer::finish(pool, call_id, &engine.cfg.node_id, end, &[], Utc::now()).await
        {
            tracing::warn!(error = %e, "cannot close the call back");
        }
    };
    let elder = match ringing {
        Ok(leg) => leg,
        Err(e) => {
            let (status, code, why) = match &e {
                TelephonyError::NoAnswer => ("no_answer", "no_answer", "the elder did not answer"),
                TelephonyError::Declined(HangupReason::Busy) => {
                    ("busy", "busy", "the elder's device is busy")
                }
                TelephonyError::Declined(_) => {
                    ("no_answer", "declined", "the elder declined the call")
                }
                TelephonyError::NotRegistered => (
                    "failed",
                    "device_offline",
                    "the elder's device disconnected",
                ),
                _ => (
                    "failed",
                    "media_failed",
                    "the call to the elder's device could not be set up",
                ),
            };
            // Everything is recorded before the page is told.
            set_attempt(status, Some(why)).await;
            op_ctl.hang_up();
            let end = TalkEnd {
                ended_by: EndedBy::Engine,
                reason: why,
                recording_path: None,
                recording_ms: None,
            };
            store_end(engine, talk_id, &end).await;
            finish(CallEnd::Unreachable).await;
            keeper.abort();
            let _ = state.send(TalkState::Failed {
                code,
                message: why.to_string(),
            });
            return;
        }
    };
    set_attempt("answered", None).await;
    let elder_ctl = elder.control();
    let mut elder = elder;
    if op_ctl.end_reason().is_some() {
        play_notice(engine, &mut elder, &t.language, true).await;
        elder_ctl.hang_up();
        set_attempt("ended", Some("operator left before the elder answered")).await;
        finish(CallEnd::Completed("hung_up")).await;
        close_unbridged(
            engine,
            talk_id,
            state,
            EndedBy::Operator,
            "operator left before the elder answered",
        )
        .await;
        keeper.abort();
        return;
    }
    if let Err(e) = talks::connected(pool, talk_id, Utc::now()).await {
        tracing::warn!(error = %e, "cannot mark the call back as answered");
    }
    let _ = state.send(TalkState::Answered { talk_id });
    play_notice(engine, &mut elder, &t.language, false).await;
    let by = converse(engine, call_id, talk_id, elder, operator, state, &mut lost).await;
    set_attempt(
        "ended",
        Some(match by {
            EndedBy::Elder => "elder hung up",
            EndedBy::Operator => "operator hung up",
            EndedBy::Engine => "ended by the engine",
        }),
    )
    .await;
    if !*lost.borrow() {
        finish(CallEnd::Completed("ok")).await;
    }
    keeper.abort();
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
