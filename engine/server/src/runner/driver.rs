//! Drives one answered call: feeds its [`Session`] what the line, the ears
//! and the timer report, and performs what the session asks, in order.
//!
//! Nothing here decides what the call does: every decision (what to say,
//! when to listen, whether to escalate, how the call ended) comes back from
//! the session. The driver owns the I/O: the leg, prompt audio, the
//! speech-recognition pool (through [`Hearing`]), the store (through
//! [`record`]) and operators joining a held call.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use voicecare_media::tone::{ToneConfig, ToneDetector, ToneEvent};
use voicecare_telephony::audio::SAMPLE_RATE;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use voicecare_core::Lang;
use voicecare_core::flow::{Flow, Millis, Play, PromptId};
use voicecare_core::session::escalation::PARTIAL_RULE;
use voicecare_core::session::{Direction, EndReason, Input, Output, Session, SessionEnd, Setup};
use voicecare_store::talks::{self, EndedBy};
use voicecare_telephony::leg::{CallLeg, LegControl, LegEvent};

use super::engine::Engine;
use super::hearing::{Hearing, HearingConfig, TurnStart};
use super::hold::{HoldGuard, JoinRequest, TalkState};
use super::line::LineSlot;
use super::{live, record};

/// One turn: the elder stopped speaking, then the engine answered.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Turn {
    /// Silence the endpointer waited for before deciding the turn was over.
    pub endpoint_ms: u64,
    /// From the endpointer's decision to the first audio of the next prompt.
    pub respond_ms: u64,
}

/// What a call is, for its session.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub call_id: i64,
    pub attempt_id: Option<i64>,
    pub direction: Direction,
    pub flow: Arc<Flow>,
    pub lang: Lang,
    pub inputs: std::collections::BTreeMap<String, String>,
    /// Screen the answer (person, machine or carrier recording) before the
    /// flow speaks: calls to telephone numbers.
    pub screen: bool,
}

/// How a driven call ended.
#[derive(Debug, Clone)]
pub struct Driven {
    pub end: SessionEnd,
    /// Turn latencies measured on this call.
    pub turns: Vec<Turn>,
}

/// An operator whose join was accepted: bridged once the session hands over.
struct Joined {
    talk_id: i64,
    operator: CallLeg,
    state: watch::Sender<TalkState>,
}

struct Driver<'a> {
    engine: &'a Arc<Engine>,
    call_id: i64,
    attempt_id: Option<i64>,
    session: Session,
    hearing: Hearing,
    ctl: LegControl,
    t0: Instant,
    timer: Option<tokio::time::Instant>,
    /// Playback id on the leg → the session's prompt.
    plays: HashMap<u64, PromptId>,
    pending: VecDeque<Input>,
    /// The end of the last reply heard, until the next prompt starts.
    awaiting_reply: Option<TurnStart>,
    turns: Vec<Turn>,
    hold: Option<(HoldGuard, mpsc::Receiver<JoinRequest>)>,
    held: bool,
    joined: Option<Joined>,
    end: Option<SessionEnd>,
    /// Beeps while the answer is screened.
    tone: Option<ToneDetector>,
}

/// Run an answered leg until its session ends (and, if an operator joined
/// a held call, until their conversation ends).
pub async fn run(
    engine: &Arc<Engine>,
    spec: CallSpec,
    mut leg: CallLeg,
    line: LineSlot,
    mut lost: watch::Receiver<bool>,
) -> Driven {
    if let Ok(mut l) = line.lock() {
        *l = Some(leg.control());
    }
    let connected = leg.wait_connected(Duration::from_secs(10)).await.is_ok();
    let mut d = Driver::new(engine, &spec, leg.control()).await;
    d.feed(if connected {
        Input::Answered
    } else {
        Input::MediaFailed
    })
    .await;
    while d.end.is_none() {
        if let Some(input) = d.next_input(&mut leg, &mut lost).await {
            d.feed(input).await;
        }
    }
    d.wrap_up(leg, &mut lost).await
}

impl<'a> Driver<'a> {
    async fn new(engine: &'a Arc<Engine>, spec: &CallSpec, ctl: LegControl) -> Driver<'a> {
        let session = Session::new(Setup {
            flow: spec.flow.clone(),
            lang: spec.lang,
            inputs: spec.inputs.clone(),
            direction: spec.direction,
            last_seq: last_seq(engine, spec).await,
            screen: spec.screen,
        });
        let recordings = engine.cfg.keep_recordings.then(|| {
            let day = Utc::now().format("%Y-%m-%d").to_string();
            engine.cfg.data_dir.join("recordings").join(day)
        });
        let hearing = Hearing::new(
            engine.asr.clone(),
            HearingConfig {
                lang: session.lang(),
                call_id: spec.call_id,
                early_asr_ms: engine.cfg.early_asr_ms,
                partial_asr_ms: engine.cfg.partial_asr_ms,
                recordings,
            },
        );
        Driver {
            engine,
            call_id: spec.call_id,
            attempt_id: spec.attempt_id,
            session,
            hearing,
            ctl,
            t0: Instant::now(),
            timer: None,
            plays: HashMap::new(),
            pending: VecDeque::new(),
            tone: spec
                .screen
                .then(|| ToneDetector::new(ToneConfig::for_rate(SAMPLE_RATE))),
            awaiting_reply: None,
            turns: Vec::new(),
            hold: None,
            held: false,
            joined: None,
            end: None,
        }
    }

    fn now(&self) -> Millis {
        Millis(self.t0.elapsed().as_millis() as u64)
    }

    /// Feed an event and everything its outputs lead to.
    async fn feed(&mut self, input: Input) {
        self.pending.push_back(input);
        while let Some(input) = self.pending.pop_front() {
            let outputs = self.session.handle(self.now(), input);
            for output in outputs {
                self.perform(output).await;
            }
        }
    }

    async fn perform(&mut self, output: Output) {
        match output {
            Output::Play(p) => self.play(p).await,
            Output::StopPlayback => self.ctl.stop_playback(),
            Output::Listen { end_silence_ms } => self.hearing.listen(end_silence_ms),
            Output::Record {
                max_ms,
                end_silence_ms,
            } => self.hearing.record(max_ms, end_silence_ms),
            Output::StopListening => self.hearing.stop(),
            Output::FinishRecording { seq } => {
                let reference = self.hearing.finish_recording(seq).await;
                self.pending.push_back(Input::RecordingSaved { reference });
            }
            Output::SaveRecording { seq } => {
                let reference = self.hearing.save_recording(seq).await;
                self.pending.push_back(Input::RecordingSaved { reference });
            }
            Output::Transcribe { seq } => self.hearing.transcribe(seq).await,
            Output::SetTimer { at } => {
                let at = self.t0 + Duration::from_millis(at.0);
                self.timer = Some(tokio::time::Instant::from_std(at));
            }
            Output::StoreUtterance(u) => {
                if self.end.is_none() {
                    self.awaiting_reply = self.hearing.turn_start(u.seq);
                }
                record::utterance(self.engine, self.call_id, self.attempt_id, &u).await;
            }
            Output::Escalate(e) => {
                if e.reasons.last().is_some_and(|r| r.rule() == PARTIAL_RULE) {
                    metrics::counter!("voicecare_asr_partial_total", "outcome" => "queued")
                        .increment(1);
                }
                record::escalate(self.engine, self.call_id, &e).await;
            }
            Output::Hold => self.hold(),
            Output::BridgeToOperator => {
                tracing::info!("operator joined; the flow hands the call over")
            }
            Output::HangUp => self.ctl.hang_up(),
            Output::Finished(end) => self.end = Some(end),
        }
    }

    /// Render and queue a prompt; a prompt that cannot be rendered is skipped.
    async fn play(&mut self, p: Play) {
        let prompts = self.engine.prompts.clone();
        let id = p.id;
        let pcm = tokio::task::spawn_blocking(move || {
            prompts.pcm(&p.text, p.audio.as_deref(), p.lang, p.rate)
        })
        .await;
        let pcm = match pcm {
            Ok(Ok(pcm)) => pcm,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "prompt audio unavailable; skipping the prompt");
                return self.pending.push_back(Input::PromptFinished(id));
            }
            Err(e) => {
                tracing::error!(error = %e, "prompt rendering failed");
                return self.pending.push_back(Input::PromptFinished(id));
            }
        };
        let playback = self.ctl.play(pcm);
        self.plays.insert(playback.id, id);
        if let Some(turn) = self.awaiting_reply.take() {
            // End of speech to the first audio of the answer: the
            // endpointer's silence, then reading, judging and the prompt.
            let respond_ms = turn.at.elapsed().as_millis() as u64;
            tracing::info!(endpoint_ms = turn.endpoint_ms, respond_ms, "turn");
            metrics::histogram!("voicecare_turn_respond_seconds")
                .record(respond_ms as f64 / 1000.0);
            self.turns.push(Turn {
                endpoint_ms: turn.endpoint_ms,
                respond_ms,
            });
        }
    }

    fn hold(&mut self) {
        self.held = true;
        if self.hold.is_none() {
            let (tx, rx) = mpsc::channel(1);
            self.hold = Some((self.engine.holds.hold(self.call_id, tx), rx));
            tracing::info!("holding the elder for an operator");
        }
    }

    /// Wait for the next thing that happens on the call.
    async fn next_input(
        &mut self,
        leg: &mut CallLeg,
        lost: &mut watch::Receiver<bool>,
    ) -> Option<Input> {
        let timer = self.timer;
        let sleep = async move {
            match timer {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let joins = async {
            match self.hold.as_mut() {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = leg.next_event() => self.line_event(ev),
            input = self.hearing.next() => Some(input),
            _ = sleep => {
                self.timer = None;
                Some(Input::Timer)
            }
            Some(req) = joins => self.join(req).await,
            _ = lost.changed() => Some(Input::LeaseLost),
        }
    }

    /// A steady tone starting in this frame, while the answer is screened.
    fn beep(&mut self, frame: &[i16]) -> Option<Input> {
        if !self.session.is_screening() {
            return None;
        }
        let detector = self.tone.as_mut()?;
        let pcm: Vec<f32> = frame.iter().map(|&s| f32::from(s) / 32768.0).collect();
        let at = self.t0.elapsed().as_millis() as u64;
        match detector.push(&pcm, at) {
            Some(ToneEvent::Started(t)) => Some(Input::Tone { hz: t.hz }),
            _ => None,
        }
    }

    fn line_event(&mut self, ev: Option<LegEvent>) -> Option<Input> {
        match ev {
            None | Some(LegEvent::Ended(_)) => {
                // Words cut off by the hang-up are still read, before it.
                if let Some(cut_off) = self.hearing.flush() {
                    self.pending.push_back(cut_off);
                }
                Some(Input::HungUp)
            }
            Some(LegEvent::Audio(frame)) => {
                let tone = self.beep(&frame);
                let early = self.session.wants_early_readings();
                let heard = self.hearing.push(&frame, early);
                match (heard, tone) {
                    (Some(h), Some(t)) => {
                        self.pending.push_back(t);
                        Some(h)
                    }
                    (h, t) => h.or(t),
                }
            }
            Some(LegEvent::Digit(d)) => Some(Input::Digit(d)),
            Some(LegEvent::PlaybackFinished { id, .. }) => {
                self.plays.remove(&id).map(Input::PromptFinished)
            }
            Some(LegEvent::Connected) => None,
        }
    }

    /// An operator asks to take over the held call. The claim is checked
    /// (and the talk recorded) before the session lets go of the elder: a
    /// refused join leaves them holding.
    async fn join(&mut self, req: JoinRequest) -> Option<Input> {
        let JoinRequest {
            escalation_id,
            scope,
            operator,
            state,
            accepted,
        } = req;
        if operator.control().end_reason().is_some() {
            return None; // the operator left while connecting
        }
        let pool = &self.engine.pool;
        let node = &self.engine.cfg.node_id;
        let talk_id =
            match talks::start_join(pool, &scope, escalation_id, self.call_id, node, Utc::now())
                .await
            {
                Ok(talk_id) => talk_id,
                Err(e) => {
                    let _ = accepted.send(Err(e));
                    return None;
                }
            };
        if accepted.send(Ok(talk_id)).is_err() {
            // The operator gave up while we checked.
            operator.control().hang_up();
            let why = "operator left before the bridge";
            live::close_unbridged(self.engine, talk_id, &state, EndedBy::Operator, why).await;
            return None;
        }
        self.hold = None;
        self.joined = Some(Joined {
            talk_id,
            operator,
            state,
        });
        Some(Input::OperatorJoined)
    }

    /// After the session: the operator's conversation (or their release),
    /// the elder off the line, words still being read.
    async fn wrap_up(mut self, leg: CallLeg, lost: &mut watch::Receiver<bool>) -> Driven {
        let mut end = self.end.take().expect("the session ended");
        self.hold = None;
        if let Some(j) = self.joined.take() {
            if end.bridged {
                let by = live::converse(
                    self.engine,
                    self.call_id,
                    j.talk_id,
                    leg,
                    j.operator,
                    &j.state,
                    lost,
                )
                .await;
                end.reason = EndReason::after_operator(by);
                if *lost.borrow() {
                    end.lost = true;
                    end.reason = EndReason::LeaseLost;
                }
            } else {
                let why = if end.lost {
                    "the call's lease was lost"
                } else {
                    "the flow did not hand the call over"
                };
                j.operator.control().hang_up();
                live::close_unbridged(self.engine, j.talk_id, &j.state, EndedBy::Engine, why).await;
            }
        }
        self.ctl.hang_up();
        if self.held && !end.lost {
            self.elder_left().await;
        }
        if !end.lost {
            self.late_readings().await;
        }
        Driven {
            end,
            turns: self.turns,
        }
    }

    /// Consoles stop offering "join" and offer "call back" instead.
    async fn elder_left(&self) {
        for wait in [100u64, 500, 2000] {
            match talks::elder_left(&self.engine.pool, self.call_id, Utc::now()).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mark the elder as off the line yet; retrying");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    /// Words still being read when the call ended go to the session, which
    /// stores them and, if they are worrying, escalates: the last thing an
    /// elder says matters most.
    async fn late_readings(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.session.readings_pending() > 0 {
            let Ok(input) = tokio::time::timeout_at(deadline, self.hearing.next()).await else {
                tracing::warn!(
                    "words of the call were still being read after a minute; giving up on them"
                );
                return;
            };
            let outputs = self.session.handle(self.now(), input);
            for output in outputs {
                self.perform(output).await;
            }
        }
    }
}

/// One numbering per call, across its attempts: a retry after a dropped
/// attempt must not reuse the first attempt's keys or recording names.
async fn last_seq(engine: &Engine, spec: &CallSpec) -> i32 {
    match voicecare_store::calls::last_utterance_seq(&engine.pool, spec.call_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the call's utterance count; numbering after this attempt's id");
            // Distinct per attempt even without the database.
            spec.attempt_id.map_or(0, |a| ((a % 1000) as i32) * 1000)
        }
    }
}
