//! One answered call: events from the leg, the endpointer and the ASR pool go
//! into the flow interpreter; its actions go out to the leg and the database.
//!
//! The media path is never blocked: the leg buffers inbound frames on its own
//! task, the endpointer is a cheap state machine, whisper runs on the pool's
//! threads and its results come back over a channel.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use voicecare_core::Level;
use voicecare_core::distress::{self, Classifier};
use voicecare_core::flow::{Action, Call, CallReport, Event, Flow, Heard, Lang, Millis, PromptId};
use voicecare_media::vad::{EndpointConfig, Endpointer, Utterance, VadEvent};
use voicecare_speech::{Speculation, TranscribeRequest, Transcript};
use voicecare_store::calls::{AssessmentRecord, NewUtterance};
use voicecare_store::queue::Flag;
use voicecare_store::talks::{self, EndedBy};
use voicecare_telephony::leg::{CallLeg, LegEvent};

use super::Engine;
use super::call::{LineSlot, flag_until_stored};
use super::live::{self, JoinRequest, TalkState};

/// How a session ended.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The flow's report, when the flow ran to its end.
    pub report: Option<CallReport>,
    /// The call's lease was lost: another node owns it now.
    pub lost: bool,
    /// No flow could be run.
    pub no_flow: bool,
    /// For `call_attempts.end_reason`.
    pub reason: &'static str,
    /// Turn latencies measured on this call.
    pub turns: Vec<Turn>,
}

impl SessionEnd {
    pub fn no_flow() -> Self {
        Self {
            report: None,
            lost: false,
            no_flow: true,
            reason: "no flow",
            turns: Vec::new(),
        }
    }
}

/// One turn: the elder stopped speaking, then the engine answered.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Turn {
    /// Silence the endpointer waited for before deciding the turn was over.
    pub endpoint_ms: u64,
    /// From the endpointer's decision to the first audio of the next prompt.
    pub respond_ms: u64,
}

struct Transcribed {
    seq: i32,
    step: Option<String>,
    audio_path: Option<String>,
    audio_ms: i32,
    ended_at: Instant,
    endpoint_ms: u64,
    result: Result<Transcript, voicecare_speech::SpeechError>,
}

/// An utterance transcribed early, while the elder's pause might still be
/// mid-sentence. Used only if the utterance ends with exactly these samples.
struct Early {
    start_ms: u64,
    len: usize,
    state: EarlyState,
}

enum EarlyState {
    Running(Speculation),
    Done(Result<Transcript, voicecare_speech::SpeechError>),
}

/// Rule ids added to an early flag's reasons: where it came from.
const EARLY_FLAG_RULE: &str = "runner.early_transcript";
const PARTIAL_FLAG_RULE: &str = "runner.partial_transcript";

/// A reading of the reply so far, taken while the elder is still speaking.
type Partial = Speculation;

impl Early {
    fn is_for(&self, u: &Utterance) -> bool {
        self.start_ms == u.start_ms && self.len == u.samples.len()
    }

    fn running(&mut self) -> Option<&mut Speculation> {
        match &mut self.state {
            EarlyState::Running(spec) => Some(spec),
            EarlyState::Done(_) => None,
        }
    }
}

/// The distress classifier's reading of a transcript, with its categories
/// and reasons in the form the store takes.
struct Judged {
    assessment: distress::Assessment,
    categories: Vec<String>,
    reasons: serde_json::Value,
}

fn classifier_input(text: &str, lang: Lang, asr_confidence: f32) -> distress::Utterance<'_> {
    distress::Utterance::new(text)
        .lang(distress_lang(lang))
        .asr_confidence(asr_confidence)
}

fn judge(text: &str, lang: Lang, asr_confidence: f32) -> Judged {
    judged(Classifier::shared().assess(&classifier_input(text, lang, asr_confidence)))
}

fn judged(assessment: distress::Assessment) -> Judged {
    let categories = assessment
        .categories
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    let reasons =
        serde_json::to_value(&assessment.reasons).unwrap_or_else(|_| serde_json::json!([]));
    Judged {
        assessment,
        categories,
        reasons,
    }
}

/// Words heard early that cannot wait for the elder to finish: a clear,
/// confidently heard emergency. Anything less waits for the end of the turn.
/// `unfinished`: the elder is still speaking, so a finding needs words after
/// it ([`Classifier::assess_unfinished`]).
fn early_emergency(t: &Transcript, lang: Lang, unfinished: bool) -> Option<Judged> {
    let text = t.text.trim();
    if text.is_empty() || t.low_confidence {
        return None;
    }
    let j = if unfinished {
        judged(Classifier::shared().assess_unfinished(&classifier_input(text, lang, t.confidence)))
    } else {
        judge(text, lang, t.confidence)
    };
    (j.assessment.level == Level::Emergency && !j.assessment.needs_confirmation).then_some(j)
}

/// Queue an emergency heard before the end of the turn, with where it came
/// from among its reasons. The turn itself still waits for the end of the
/// reply, so no one is cut off; the flow's own escalation then raises the
/// same item.
async fn queue_early(engine: &Engine, call_id: i64, j: Judged, rule: &str, evidence: &str) {
    let Judged {
        categories,
        mut reasons,
        ..
    } = j;
    if let Some(list) = reasons.as_array_mut() {
        list.push(serde_json::json!({"category": "early", "evidence": evidence, "rule": rule}));
    }
    let flag = Flag {
        call_id,
        level: Level::Emergency,
        categories,
        reasons,
        elder_on_line: false,
    };
    flag_until_stored(engine, &flag, Utc::now()).await;
    tracing::info!(rule, "emergency heard before the end of the reply; queued");
}

fn speech_lang(l: Lang) -> voicecare_speech::Lang {
    match l {
        Lang::Zh => voicecare_speech::Lang::Zh,
        Lang::En => voicecare_speech::Lang::En,
    }
}

fn distress_lang(l: Lang) -> distress::Lang {
    match l {
        Lang::Zh => distress::Lang::Zh,
        Lang::En => distress::Lang::En,
    }
}

fn lang_code(l: Lang) -> &'static str {
    match l {
        Lang::Zh => "zh",
        Lang::En => "en",
    }
}

/// An operator whose join the session accepted: bridged once the flow hands over.
struct Joined {
    talk_id: i64,
    operator: CallLeg,
    state: watch::Sender<TalkState>,
}

/// Run the flow on an answered leg until it finishes (and, if an operator
/// joins a held call, until their conversation ends).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Arc<Engine>,
    call_id: i64,
    attempt_id: Option<i64>,
    flow: Arc<Flow>,
    lang: Lang,
    inputs: BTreeMap<String, String>,
    mut leg: CallLeg,
    line: LineSlot,
    mut lost: watch::Receiver<bool>,
) -> SessionEnd {
    let mut end = SessionEnd {
        report: None,
        lost: false,
        no_flow: false,
        reason: "normal",
        turns: Vec::new(),
    };
    if let Ok(mut l) = line.lock() {
        *l = Some(leg.control());
    }
    if leg.wait_connected(Duration::from_secs(10)).await.is_err() {
        leg.control().hang_up();
        end.reason = "media never connected";
    }
    let ctl = leg.control();
    let mut call = Call::new(flow, lang, inputs);
    let lang = call.lang();
    let t0 = Instant::now();
    let since = |t: Instant| Millis(t.duration_since(t0).as_millis() as u64);
    let mut pending: Vec<Event> = vec![if end.reason == "normal" {
        Event::Answered
    } else {
        Event::HungUp
    }];
    let (asr_tx, mut asr_rx) = mpsc::channel::<Transcribed>(16);
    let mut in_flight = 0usize;
    // A timer fired while an utterance was in the ASR pool.
    let mut tick_held = false;
    let mut endpointer: Option<Endpointer> = None;
    let mut early: Option<Early> = None;
    let mut partial: Option<Partial> = None;
    // Samples the reply must reach before it is read again while spoken.
    let partial_step = engine.cfg.partial_asr_ms as usize * 16;
    let mut partial_next = partial_step;
    // An emergency of this reply was already queued before its end.
    let mut queued_early = false;
    let mut recording = false;
    let mut media_ms: u64 = 0;
    let mut timer: Option<tokio::time::Instant> = None;
    let mut plays: HashMap<u64, PromptId> = HashMap::new();
    // One numbering per call, across its attempts: a retry after a dropped
    // attempt must not reuse the first attempt's keys or recording names.
    let mut seq: i32 = match voicecare_store::calls::last_utterance_seq(&engine.pool, call_id).await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the call's utterance count; numbering after this attempt's id");
            // Distinct per attempt even without the database.
            attempt_id.map_or(0, |a| ((a % 1000) as i32) * 1000)
        }
    };
    let mut last_categories: Vec<String> = Vec::new();
    // The end of the last utterance, until the next prompt starts playing.
    let mut awaiting_reply: Option<(Instant, u64)> = None;
    let recordings = engine
        .cfg
        .data_dir
        .join("recordings")
        .join(Utc::now().format("%Y-%m-%d").to_string());
    // While the flow holds the elder for an operator: registered for joins.
    let mut hold: Option<(live::HoldGuard, mpsc::Receiver<JoinRequest>)> = None;
    let mut held = false;
    let mut joined: Option<Joined> = None;
    let mut transferred = false;

    'call: loop {
        // Feed events to the flow and perform its actions, in order.
        let mut i = 0;
        while i < pending.len() {
            let ev = pending[i].clone();
            i += 1;
            let actions = call.handle(since(Instant::now()), ev);
            for action in actions {
                match action {
                    Action::Play(p) => {
                        let prompts = engine.prompts.clone();
                        let (text, audio, rate) = (p.text.clone(), p.audio.clone(), p.rate);
                        let pcm = tokio::task::spawn_blocking(move || {
                            prompts.pcm(&text, audio.as_deref(), p.lang, rate)
                        })
                        .await;
                        match pcm {
                            Ok(Ok(pcm)) => {
                                let pb = ctl.play(pcm);
                                plays.insert(pb.id, p.id);
                                if let Some((at, endpoint_ms)) = awaiting_reply.take() {
                                    let respond_ms = at.elapsed().as_millis() as u64;
                                    // End of speech to the first audio of the reply:
                                    // the endpointer's silence, then ASR, judging and the prompt.
                                    tracing::info!(endpoint_ms, respond_ms, "turn");
                                    metrics::histogram!("voicecare_turn_respond_seconds")
                                        .record(respond_ms as f64 / 1000.0);
                                    end.turns.push(Turn {
                                        endpoint_ms,
                                        respond_ms,
                                    });
                                }
                            }
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "prompt audio unavailable; skipping the prompt");
                                pending.push(Event::PromptFinished { id: p.id });
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "prompt rendering failed");
                                pending.push(Event::PromptFinished { id: p.id });
                            }
                        }
                    }
                    Action::StopPlayback => ctl.stop_playback(),
                    Action::StartListening {
                        end_of_utterance_ms,
                        ..
                    } => {
                        recording = false;
                        if endpointer.is_none() {
                            let end_silence_ms = end_of_utterance_ms.min(10_000) as u32;
                            endpointer = Some(Endpointer::new(EndpointConfig {
                                end_silence_ms,
                                // Early transcription only pays before the end.
                                early_ms: if engine.cfg.early_asr_ms < end_silence_ms {
                                    engine.cfg.early_asr_ms
                                } else {
                                    0
                                },
                                // The interpreter keeps the no-input timer.
                                no_input_ms: u32::MAX,
                                ..EndpointConfig::for_rate(16_000)
                            }));
                        }
                    }
                    Action::StopListening => {
                        endpointer = None;
                        early = None;
                        partial = None;
                    }
                    Action::StartRecording {
                        max_ms,
                        end_of_utterance_ms,
                    } => {
                        recording = true;
                        early = None;
                        partial = None;
                        endpointer = Some(Endpointer::new(EndpointConfig {
                            end_silence_ms: end_of_utterance_ms.min(10_000) as u32,
                            max_utterance_ms: max_ms.min(600_000) as u32,
                            no_input_ms: u32::MAX,
                            ..EndpointConfig::for_rate(16_000)
                        }));
                    }
                    Action::StopRecording => {
                        let mut reference = None;
                        if let Some(mut ep) = endpointer.take()
                            && let Some(VadEvent::UtteranceEnded(u)) = ep.finish(media_ms)
                        {
                            seq += 1;
                            reference =
                                save_wav(engine, &recordings, call_id, seq, &u.samples).await;
                        }
                        if recording {
                            recording = false;
                            pending.push(Event::RecordingFinished { reference });
                        }
                    }
                    Action::SetTimer { at } => {
                        let at = t0 + Duration::from_millis(at.0);
                        timer = Some(tokio::time::Instant::from_std(at));
                    }
                    Action::Escalate {
                        level,
                        reasons,
                        keep_on_line,
                    } => {
                        let step = call.current_step().unwrap_or("-").to_string();
                        let reasons: Vec<serde_json::Value> = reasons
                            .iter()
                            .map(|r| serde_json::json!({"category": "flow", "evidence": r, "rule": format!("flow.{step}")}))
                            .collect();
                        let mut categories = last_categories.clone();
                        if categories.is_empty() {
                            categories.push("flow".into());
                        }
                        let flag = Flag {
                            call_id,
                            level,
                            categories,
                            reasons: serde_json::Value::Array(reasons),
                            elder_on_line: keep_on_line,
                        };
                        // Committed before the call goes on.
                        flag_until_stored(engine, &flag, Utc::now()).await;
                    }
                    Action::Hold => {
                        held = true;
                        if hold.is_none() {
                            let (tx, rx) = mpsc::channel(1);
                            hold = Some((engine.live.hold(call_id, tx), rx));
                            tracing::info!("holding the elder for an operator");
                        }
                    }
                    Action::TransferToOperator => {
                        transferred = joined.is_some();
                        tracing::info!("operator joined; the flow hands the call over");
                    }
                    Action::RecordVariable { name, .. } => {
                        tracing::debug!(%name, "flow variable recorded");
                    }
                    Action::Hangup => ctl.hang_up(),
                    Action::Finished(report) => {
                        end.report = Some(report);
                        break 'call;
                    }
                }
            }
        }
        pending.clear();

        let sleep = async {
            match timer {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = leg.next_event() => match ev {
                None | Some(LegEvent::Ended(_)) => pending.push(Event::HungUp),
                Some(LegEvent::Audio(frame)) => {
                    let at = media_ms;
                    media_ms += 20;
                    let Some(ep) = endpointer.as_mut() else { continue };
                    let f: Vec<f32> = frame.iter().map(|&s| s as f32 / 32768.0).collect();
                    match ep.push(&f, at) {
                        Some(VadEvent::SpeechStarted { .. }) => {
                            partial_next = partial_step;
                            pending.push(Event::SpeechStarted);
                        }
                        Some(VadEvent::Paused(u)) if !recording => {
                            // The words up to the pause supersede a reading
                            // of fewer, and replace (so cancel) an earlier pause's.
                            partial = None;
                            drop(early.take());
                            let (start_ms, len) = (u.start_ms, u.samples.len());
                            // Queued like any utterance: usually it is the whole reply.
                            early = engine.asr.speculate(TranscribeRequest {
                                samples_16k: u.samples,
                                lang: Some(speech_lang(lang)),
                                prompt: None,
                            }).ok().map(|spec| Early { start_ms, len, state: EarlyState::Running(spec) });
                            metrics::counter!("voicecare_asr_early_total", "outcome" => if early.is_some() { "started" } else { "pool_closed" }).increment(1);
                        }
                        Some(VadEvent::UtteranceEnded(u)) => {
                            seq += 1;
                            partial = None;
                            queued_early = false;
                            let endpoint_ms = ep.config().end_silence_ms as u64;
                            let path = save_wav(engine, &recordings, call_id, seq, &u.samples).await;
                            if recording {
                                recording = false;
                                endpointer = None;
                                pending.push(Event::RecordingFinished { reference: path });
                                continue;
                            }
                            let ready = early.take().filter(|e| e.is_for(&u));
                            in_flight += 1;
                            let job = Transcribed {
                                seq,
                                step: call.current_step().map(str::to_string),
                                audio_path: path,
                                audio_ms: (u.samples.len() / 16) as i32,
                                ended_at: Instant::now(),
                                endpoint_ms,
                                result: Ok(empty_transcript()),
                            };
                            spawn_asr(engine, job, u.samples, lang, ready, asr_tx.clone());
                        }
                        None => {
                            // The elder went on after the pause: its early
                            // transcript cannot serve the turn. Still being
                            // decoded, it is a reading of the reply so far.
                            if early.as_ref().is_some_and(|e| ep.in_progress() != Some((e.start_ms, e.len)))
                                && let Some(Early { state: EarlyState::Running(spec), .. }) = early.take()
                                && partial.is_none()
                            {
                                partial = Some(spec);
                            }
                            // Read the reply so far while it is still spoken,
                            // on spare capacity only (checked first, so a busy
                            // pool costs no copy of the audio per frame).
                            if !recording
                                && partial_step > 0
                                && partial.is_none()
                                && !queued_early
                                && engine.asr.idle() > 0
                                && let Some(so_far) = ep.speech_so_far()
                                && so_far.len() >= partial_next
                            {
                                partial_next = so_far.len() + partial_step;
                                partial = engine.asr.speculate_if_idle(TranscribeRequest {
                                    samples_16k: so_far.to_vec(),
                                    lang: Some(speech_lang(lang)),
                                    prompt: None,
                                });
                                metrics::counter!("voicecare_asr_partial_total", "outcome" => if partial.is_some() { "started" } else { "no_idle_worker" }).increment(1);
                            }
                        }
                        Some(VadEvent::Paused(_) | VadEvent::NoInput { .. }) => {}
                    }
                }
                Some(LegEvent::Digit(d)) => pending.push(Event::Digit(d)),
                Some(LegEvent::PlaybackFinished { id, .. }) => {
                    if let Some(p) = plays.remove(&id) {
                        pending.push(Event::PromptFinished { id: p });
                    }
                }
                Some(LegEvent::Connected) => {}
            },
            r = async {
                match early.as_mut().and_then(Early::running) {
                    Some(spec) => spec.await,
                    None => std::future::pending().await,
                }
            }, if early.as_mut().and_then(Early::running).is_some() => {
                if let Some(e) = early.as_mut() {
                    let alarm = r.as_ref().ok().and_then(|t| early_emergency(t, lang, false));
                    e.state = EarlyState::Done(r);
                    // Still the same pause, and a clear emergency: queue it
                    // now, while the elder may yet go on.
                    if let Some(j) = alarm
                        && !queued_early
                        && endpointer.as_ref().and_then(Endpointer::in_progress) == Some((e.start_ms, e.len))
                    {
                        queued_early = true;
                        queue_early(engine, call_id, j, EARLY_FLAG_RULE, "heard during the elder's pause, before the end of the turn").await;
                    }
                }
            }
            r = async {
                match partial.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            }, if partial.is_some() => {
                partial = None;
                let outcome = match r {
                    Ok(t) => match early_emergency(&t, lang, true) {
                        Some(j) if !queued_early => {
                            queued_early = true;
                            queue_early(engine, call_id, j, PARTIAL_FLAG_RULE, "heard while the elder was still speaking").await;
                            "queued"
                        }
                        _ => "heard",
                    },
                    Err(voicecare_speech::SpeechError::Cancelled) => "gave_way",
                    Err(_) => "failed",
                };
                metrics::counter!("voicecare_asr_partial_total", "outcome" => outcome).increment(1);
            }
            Some(t) = asr_rx.recv() => {
                in_flight -= 1;
                if let Some(heard) = hear(engine, call_id, attempt_id, lang, &t).await {
                    last_categories = heard.categories.clone();
                    awaiting_reply = Some((t.ended_at, t.endpoint_ms));
                    pending.push(Event::Heard(heard));
                }
                if tick_held && in_flight == 0 {
                    tick_held = false;
                    pending.push(Event::Tick);
                }
            }
            _ = sleep => {
                timer = None;
                // Words still being transcribed are an answer on its way: the
                // flow's timer (the no-input re-prompt) waits for them.
                if in_flight > 0 {
                    tick_held = true;
                } else {
                    pending.push(Event::Tick);
                }
            }
            Some(req) = async {
                match hold.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                // The claim is checked (and the talk recorded) before the
                // flow lets go of the elder: a refused join leaves them holding.
                let JoinRequest { escalation_id, scope, operator, state, accepted } = req;
                if operator.control().end_reason().is_some() {
                    // The operator left while connecting: the elder keeps holding.
                    continue;
                }
                match talks::start_join(&engine.pool, &scope, escalation_id, call_id, &engine.cfg.node_id, Utc::now()).await {
                    Ok(talk_id) => {
                        if accepted.send(Ok(talk_id)).is_ok() {
                            hold = None;
                            joined = Some(Joined { talk_id, operator, state });
                            pending.push(Event::OperatorJoined);
                        } else {
                            // The operator gave up while we checked.
                            operator.control().hang_up();
                            live::close_unbridged(engine, talk_id, &state, EndedBy::Operator, "operator left before the bridge").await;
                        }
                    }
                    Err(e) => {
                        let _ = accepted.send(Err(e));
                    }
                }
            }
            _ = lost.changed() => {
                ctl.hang_up();
                if let Some(j) = joined.take() {
                    j.operator.control().hang_up();
                    live::close_unbridged(engine, j.talk_id, &j.state, EndedBy::Engine, "the call's lease was lost").await;
                }
                end.lost = true;
                end.reason = "lease lost";
                return end;
            }
        }
    }
    drop(hold);
    match joined {
        Some(j) if transferred => {
            let by = live::converse(
                engine, call_id, j.talk_id, leg, j.operator, &j.state, &mut lost,
            )
            .await;
            end.reason = match by {
                EndedBy::Elder => "elder hung up on the operator",
                EndedBy::Operator => "operator hung up",
                EndedBy::Engine => "operator conversation ended by the engine",
            };
            if *lost.borrow() {
                end.lost = true;
                end.reason = "lease lost";
            }
        }
        Some(j) => {
            // Guard against a flow that did not hand over: the operator is told.
            j.operator.control().hang_up();
            live::close_unbridged(
                engine,
                j.talk_id,
                &j.state,
                EndedBy::Engine,
                "the flow did not hand the call over",
            )
            .await;
        }
        None => {}
    }
    ctl.hang_up();
    if held && !end.lost {
        // Consoles stop offering "join" and offer "call back" instead.
        for wait in [100u64, 500, 2000] {
            match talks::elder_left(&engine.pool, call_id, Utc::now()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mark the elder as off the line yet; retrying");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }
    // Words still being transcribed when the call ended are stored and, if
    // they are worrying, queued: the last thing an elder says matters most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while in_flight > 0 {
        let Ok(Some(t)) = tokio::time::timeout_at(deadline, asr_rx.recv()).await else {
            break;
        };
        in_flight -= 1;
        if let Some(heard) = hear(engine, call_id, attempt_id, lang, &t).await
            && heard.level.escalates()
        {
            let flag = Flag {
                call_id,
                level: heard.level,
                categories: heard.categories.clone(),
                reasons: serde_json::json!([{"category": "late_utterance", "evidence": "heard after the call ended", "rule": "runner.late_utterance"}]),
                elder_on_line: false,
            };
            flag_until_stored(engine, &flag, Utc::now()).await;
        }
    }
    if let Some(r) = &end.report
        && !transferred
    {
        end.reason = match r.outcome {
            voicecare_core::flow::Outcome::ElderHungUp { .. } => "elder hung up",
            _ => "normal",
        };
    }
    end
}

fn empty_transcript() -> Transcript {
    Transcript {
        text: String::new(),
        lang: None,
        avg_logprob: 0.0,
        confidence: 0.0,
        no_speech_prob: 1.0,
        compression_ratio: 0.0,
        audio_s: 0.0,
        decode_s: 0.0,
        queue_wait_s: 0.0,
        low_confidence: false,
        gated: None,
        speech_ms: 0,
    }
}

/// Transcribe an utterance in the pool, or take the early transcript of the
/// same samples when there is one (waiting for it if it is still running).
fn spawn_asr(
    engine: &Arc<Engine>,
    mut job: Transcribed,
    samples: Vec<f32>,
    lang: Lang,
    early: Option<Early>,
    tx: mpsc::Sender<Transcribed>,
) {
    let asr = engine.asr.clone();
    tokio::spawn(async move {
        let early = match early.map(|e| e.state) {
            Some(EarlyState::Done(r)) => Some(r),
            Some(EarlyState::Running(spec)) => Some(spec.await),
            None => None,
        };
        job.result = match early {
            Some(Ok(t)) => {
                metrics::counter!("voicecare_asr_early_total", "outcome" => "used").increment(1);
                Ok(t)
            }
            // No early transcript, or it failed: the normal way.
            _ => {
                asr.transcribe(TranscribeRequest {
                    samples_16k: samples,
                    lang: Some(speech_lang(lang)),
                    prompt: None,
                })
                .await
            }
        };
        let _ = tx.send(job).await;
    });
}

/// Classify a transcript, store it with its assessment, and make the flow's event.
async fn hear(
    engine: &Engine,
    call_id: i64,
    attempt_id: Option<i64>,
    lang: Lang,
    t: &Transcribed,
) -> Option<Heard> {
    let tr = match &t.result {
        Ok(tr) => tr,
        Err(e) => {
            tracing::warn!(error = %e, "speech recognition failed for an utterance");
            return None;
        }
    };
    let text = tr.text.trim();
    if text.is_empty() {
        tracing::debug!(gated = ?tr.gated, "utterance without words");
        return None;
    }
    let Judged {
        assessment: a,
        categories,
        reasons,
    } = judge(text, lang, tr.confidence);
    let record = AssessmentRecord {
        level: a.level,
        categories: categories.clone(),
        reasons,
        score: a.score,
    };
    let u = NewUtterance {
        call_id,
        attempt_id,
        seq: t.seq,
        flow_step: t.step.as_deref(),
        transcript: text,
        language: Some(lang_code(lang)),
        confidence: Some(tr.confidence.clamp(0.0, 1.0)),
        audio_path: t.audio_path.as_deref(),
        audio_ms: Some(t.audio_ms),
        asr_queue_ms: Some((tr.queue_wait_s * 1000.0) as i32),
        asr_decode_ms: Some((tr.decode_s * 1000.0) as i32),
    };
    let mut stored = false;
    for wait in [100u64, 400, 1000, 2000] {
        match voicecare_store::calls::record_utterance(&engine.pool, &u, &record, Utc::now()).await
        {
            Ok(_) => {
                stored = true;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the utterance yet; retrying");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
    if !stored {
        tracing::error!("utterance could not be stored");
    }
    tracing::info!(seq = t.seq, level = %a.level, asr_decode_ms = (tr.decode_s * 1000.0) as u64, "utterance heard");
    tracing::debug!(transcript = %text, "utterance transcript");
    Some(Heard {
        transcript: text.to_string(),
        lang: Some(lang),
        asr_confidence: tr.confidence,
        level: a.level,
        categories,
        needs_confirmation: a.needs_confirmation || tr.low_confidence,
    })
}

/// Save an utterance as 16 kHz mono WAV under the recordings directory.
async fn save_wav(
    engine: &Engine,
    dir: &std::path::Path,
    call_id: i64,
    seq: i32,
    samples: &[f32],
) -> Option<String> {
    if !engine.cfg.keep_recordings {
        return None;
    }
    let path: PathBuf = dir.join(format!("call-{call_id}-{seq:03}.wav"));
    let audio = voicecare_media::Audio {
        samples: samples.to_vec(),
        rate: 16_000,
    };
    let dir = dir.to_path_buf();
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        voicecare_media::write_wav(&p, &audio).map_err(|e| e.to_string())
    })
    .await;
    match r {
        Ok(Ok(())) => Some(path.display().to_string()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot save utterance audio");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot save utterance audio");
            None
        }
    }
}
