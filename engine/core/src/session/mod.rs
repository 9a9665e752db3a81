//! One call, one state machine: everything a call decides, fed events with
//! the time and returning actions, without I/O.
//!
//! A driver (the server's runner) owns one [`Session`] per answered call.
//! It turns what the line, the endpointer and speech recognition report into
//! [`Input`]s, calls [`Session::handle`] with the call's clock, and performs
//! the returned [`Output`]s in order against the line, the recogniser and
//! the store. The session runs the flow interpreter, judges every reading of
//! the elder's words with the distress classifier, and asks
//! [`escalation::decide`] whether and how to escalate; it never learns which
//! transport carries the call.
//!
//! Readings of the elder's words come in three kinds. The final reading of
//! an utterance is the turn's answer: it is stored and given to the flow. A
//! reading taken during a pause, or of the words so far while the elder is
//! still speaking, is never an answer: it can only raise a clear emergency
//! early, once per reply, so an operator sees it before the elder finishes.

pub mod escalation;
pub mod identify;
pub mod outcome;
pub mod policy;
pub mod screen;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::distress::{self, Assessment, Classifier};
use crate::flow::{self, Action, Call, CallReport, Event, Flow, Heard, Millis, Play, PromptId};
use crate::{Lang, Level};
use escalation::{Escalation, Trigger};
pub use outcome::{AttemptStatus, CallOutcome, DialOutcome, EndReason, SetupFailure, TalkEndedBy};

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The service rang the elder (a check-in) or a contact.
    Outbound,
    /// The elder called in: pressed help, dialled the service.
    Inbound,
}

/// What a call starts with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub flow: Arc<Flow>,
    /// The elder's language; the flow's first language if it does not speak it.
    pub lang: Lang,
    pub inputs: BTreeMap<String, String>,
    pub direction: Direction,
    /// The last utterance number already used by this call (earlier attempts).
    pub last_seq: i32,
    /// Listen before speaking, to tell a person from an answering machine
    /// or a carrier's recording ([`screen`]): calls to telephone numbers.
    pub screen: bool,
}

/// Words read from the elder's audio. `Debug` shows their length only: an
/// elder's words are health data.
#[derive(Clone, PartialEq)]
pub struct Words {
    pub text: String,
    /// 0.0–1.0.
    pub confidence: f32,
    /// The recogniser doubts its own reading.
    pub low_confidence: bool,
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Words")
            .field("text", &crate::redact::redacted_words(&self.text))
            .field("confidence", &self.confidence)
            .field("low_confidence", &self.low_confidence)
            .finish()
    }
}

/// Facts about an utterance the store keeps beside its words; the session
/// passes them through untouched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioInfo {
    pub path: Option<String>,
    pub audio_ms: i32,
    pub asr_queue_ms: i32,
    pub asr_decode_ms: i32,
}

/// A reading of the elder's words.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The whole utterance `seq` (see [`Output::Transcribe`]); `words` is
    /// `None` when recognition failed or heard no words.
    Final {
        seq: i32,
        words: Option<Words>,
        audio: AudioInfo,
    },
    /// The utterance up to a pause; `still_paused`: the elder has not gone
    /// on since, so these may be all the words of the reply.
    AtPause { words: Words, still_paused: bool },
    /// The reply so far, read while the elder is still speaking.
    SoFar { words: Words },
}

/// What happened on the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The line is up: the flow starts.
    Answered,
    /// The line was answered but media never connected.
    MediaFailed,
    /// Voice activity began.
    SpeechStarted,
    /// The endpointer decided an utterance is over.
    UtteranceEnded,
    Reading(Reading),
    /// A recording the session asked for is stored (`None`: nothing was said).
    RecordingSaved {
        reference: Option<String>,
    },
    Digit(char),
    PromptFinished(PromptId),
    /// The timer of [`Output::SetTimer`] fired.
    Timer,
    /// An operator's join was accepted: they are connected and waiting.
    OperatorJoined,
    /// The far end hung up or the line dropped.
    HungUp,
    /// Another node owns the call now.
    LeaseLost,
    /// A steady tone of this frequency began (a machine's beep, or the
    /// network's own tones): only heard while the answer is screened.
    Tone {
        hz: f32,
    },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Play(Play),
    StopPlayback,
    /// Listen for replies: end an utterance after this much silence.
    Listen {
        end_silence_ms: u32,
    },
    /// Record a message: one utterance of at most `max_ms`.
    Record {
        max_ms: u32,
        end_silence_ms: u32,
    },
    /// Stop listening (and drop readings in progress).
    StopListening,
    /// Stop recording now; store what was said as utterance `seq` and
    /// answer with [`Input::RecordingSaved`].
    FinishRecording {
        seq: i32,
    },
    /// The recorded message just ended: store it as utterance `seq` and
    /// answer with [`Input::RecordingSaved`].
    SaveRecording {
        seq: i32,
    },
    /// Read the utterance that just ended, as utterance `seq`; answer with
    /// [`Reading::Final`].
    Transcribe {
        seq: i32,
    },
    /// Send [`Input::Timer`] at this time (replacing any earlier timer).
    SetTimer {
        at: Millis,
    },
    /// Store a reply with its words and the classifier's assessment.
    StoreUtterance(UtteranceRecord),
    /// Put the call in the operator queue, or raise its open item.
    Escalate(Escalation),
    /// Keep the elder on the line and accept operators' joins.
    Hold,
    /// Connect the operator who joined to the elder.
    BridgeToOperator,
    HangUp,
    /// The session is over; no output follows except for late readings.
    Finished(SessionEnd),
}

/// A reply as stored. `Debug` leaves the words and the evidence out.
#[derive(Clone, PartialEq)]
pub struct UtteranceRecord {
    pub seq: i32,
    pub step: Option<String>,
    pub transcript: String,
    pub lang: Lang,
    pub confidence: f32,
    pub assessment: Assessment,
    pub audio: AudioInfo,
}

impl std::fmt::Debug for UtteranceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtteranceRecord")
            .field("seq", &self.seq)
            .field("step", &self.step)
            .field(
                "transcript",
                &crate::redact::redacted_words(&self.transcript),
            )
            .field("lang", &self.lang)
            .field("confidence", &self.confidence)
            .field("level", &self.assessment.level)
            .field("audio", &self.audio)
            .finish_non_exhaustive()
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnd {
    /// The flow's report, when the flow ran to its end.
    pub report: Option<CallReport>,
    pub reason: EndReason,
    /// The call's lease was lost: another node owns it now.
    pub lost: bool,
    /// An operator was bridged to the elder; the conversation follows.
    pub bridged: bool,
}

impl SessionEnd {
    /// A session that could not run: there is no flow for the call.
    pub fn no_flow() -> Self {
        SessionEnd {
            report: None,
            reason: EndReason::NoFlow,
            lost: false,
            bridged: false,
        }
    }

    /// The call's stored outcome.
    pub fn outcome(&self) -> CallOutcome {
        CallOutcome::of_answered(self.report.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ear {
    Off,
    Listening,
    Recording,
}

/// One answered call.
#[derive(Debug)]
pub struct Session {
    call: Call,
    lang: Lang,
    direction: Direction,
    ear: Ear,
    seq: i32,
    /// Step each utterance sent for reading was answering.
    reading: HashMap<i32, Option<String>>,
    /// A timer fired while words were being read: the flow waits for them.
    tick_held: bool,
    /// An emergency of the reply being spoken was already raised.
    reply_raised: bool,
    /// What this session put in the queue so far.
    raised: Option<Raised>,
    last_categories: Vec<String>,
    held: bool,
    bridged: bool,
    media_failed: bool,
    end: Option<SessionEnd>,
    screen_on_answer: bool,
    screen: Option<screen::Screen>,
}

#[derive(Debug, Clone)]
struct Raised {
    level: Level,
    on_line: bool,
    categories: Vec<String>,
}

impl Session {
    pub fn new(setup: Setup) -> Self {
        let call = Call::new(setup.flow, setup.lang, setup.inputs);
        Session {
            lang: call.lang(),
            call,
            direction: setup.direction,
            ear: Ear::Off,
            seq: setup.last_seq,
            reading: HashMap::new(),
            tick_held: false,
            reply_raised: false,
            raised: None,
            last_categories: Vec::new(),
            held: false,
            bridged: false,
            media_failed: false,
            end: None,
            screen_on_answer: setup.screen,
            screen: None,
        }
    }

    /// The language the call is held in.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Utterances sent for reading whose final reading has not come back.
    pub fn readings_pending(&self) -> usize {
        self.reading.len()
    }

    /// Whether a reading of the reply so far could still change anything:
    /// listening, and no emergency of this reply raised yet.
    pub fn wants_early_readings(&self) -> bool {
        self.end.is_none() && self.ear == Ear::Listening && !self.reply_raised
    }

    pub fn is_finished(&self) -> bool {
        self.end.is_some()
    }

    /// Feed one event at `now` (the call's clock); perform what comes back.
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.screening(now, &input, &mut out) {
            return out;
        }
        match input {
            Input::Answered if self.screen_on_answer && self.end.is_none() => {
                self.ear = Ear::Listening;
                self.screen = Some(screen::Screen::start(now, &mut out));
            }
            Input::Answered => self.flow(now, Event::Answered, &mut out),
            Input::MediaFailed => {
                self.media_failed = true;
                out.push(Output::HangUp);
                if self.direction == Direction::Inbound {
                    self.raise(Trigger::HelpCallFailed, &mut out);
                }
                self.flow(now, Event::HungUp, &mut out);
            }
            Input::SpeechStarted => self.flow(now, Event::SpeechStarted, &mut out),
            Input::UtteranceEnded => self.utterance_ended(&mut out),
            Input::Reading(r) => self.reading(now, r, &mut out),
            Input::RecordingSaved { reference } => {
                self.flow(now, Event::RecordingFinished { reference }, &mut out)
            }
            Input::Digit(d) => self.flow(now, Event::Digit(d), &mut out),
            Input::PromptFinished(id) => self.flow(now, Event::PromptFinished { id }, &mut out),
            Input::Timer if !self.reading.is_empty() => {
                // Words on their way are an answer: the no-input re-prompt waits.
                self.tick_held = true;
            }
            Input::Timer => self.flow(now, Event::Tick, &mut out),
            Input::OperatorJoined => self.flow(now, Event::OperatorJoined, &mut out),
            Input::HungUp => self.flow(now, Event::HungUp, &mut out),
            Input::LeaseLost => {
                out.push(Output::HangUp);
                if self.end.is_none() {
                    self.finish(None, EndReason::LeaseLost, true, &mut out);
                }
            }
            Input::Tone { .. } => {}
        }
        out
    }

    /// While the answer is screened, what is heard goes to the screen, not
    /// the flow. `true`: the input was the screen's.
    fn screening(&mut self, now: Millis, input: &Input, out: &mut Vec<Output>) -> bool {
        let Some(screen) = self.screen.as_mut() else {
            return false;
        };
        // The screen's readings are never answers, even once it decided.
        if let Input::Reading(Reading::Final { seq, words, audio }) = input
            && screen.owns(*seq)
        {
            self.reading.remove(seq);
            let text = words
                .as_ref()
                .map(|w| w.text.trim())
                .filter(|t| !t.is_empty());
            let s = screen.words(now, text, self.lang);
            // Words that are no machine's or carrier's are the callee's: a
            // cry for help on answering is heard, stored and escalated.
            // Once the screen found a machine or a recording, by these words
            // or before them (a beep while they were still being read), they
            // are nobody's.
            if !screen.found_not_reached()
                && let Some(w) = words
            {
                self.answered_with(*seq, w, audio.clone(), out);
            }
            self.screened(now, s, out);
            if self.reading.is_empty() && self.tick_held {
                self.tick_held = false;
                self.flow(now, Event::Tick, out);
            }
            return true;
        }
        if !screen.is_deciding() || self.end.is_some() {
            return false;
        }
        let s = match input {
            Input::SpeechStarted => screen.speech_started(now),
            Input::UtteranceEnded => {
                self.seq += 1;
                let seq = self.seq;
                // Counted as pending, so a hang-up waits for these words too.
                self.reading.insert(seq, Some("answer".into()));
                out.push(Output::Transcribe { seq });
                match self.screen.as_mut() {
                    Some(screen) => screen.utterance_ended(now, seq),
                    None => return true,
                }
            }
            // Readings of a greeting still going on decide nothing.
            Input::Reading(_) => screen::Screened::Undecided,
            Input::Timer => screen.tick(now, out),
            Input::Digit(d) => {
                // Only a person presses a key, and it means something: the
                // flow starts and takes it (a 1 for help at once).
                let s = screen.digit();
                self.screened(now, s, out);
                self.flow(now, Event::Digit(*d), out);
                return true;
            }
            Input::Tone { hz } => screen.tone(now, *hz),
            Input::HungUp => {
                out.push(Output::StopListening);
                self.finish(None, EndReason::ElderHungUp, false, out);
                return true;
            }
            _ => return false,
        };
        self.screened(now, s, out);
        true
    }

    /// What the callee said on answering, judged: anything of concern is
    /// stored, and urgent or worse raised at once.
    fn answered_with(&mut self, seq: i32, w: &Words, audio: AudioInfo, out: &mut Vec<Output>) {
        let text = w.text.trim();
        if text.is_empty() {
            return;
        }
        let a = Classifier::shared().assess(
            &distress::Utterance::new(text)
                .lang(self.lang)
                .asr_confidence(w.confidence),
        );
        if a.level == Level::Ok {
            return;
        }
        // Urgent or worse goes to the queue at once, confirmed or not: the
        // check-in that follows may never get to ask.
        if a.level >= Level::Urgent {
            self.raise(Trigger::HeardOnAnswer { assessment: &a }, out);
        }
        out.push(Output::StoreUtterance(UtteranceRecord {
            seq,
            step: Some("answer".into()),
            transcript: text.to_string(),
            lang: self.lang,
            confidence: w.confidence.clamp(0.0, 1.0),
            assessment: a,
            audio,
        }));
    }

    fn screened(&mut self, now: Millis, s: screen::Screened, out: &mut Vec<Output>) {
        match s {
            screen::Screened::Undecided => {}
            screen::Screened::Person => {
                self.ear = Ear::Off;
                out.push(Output::StopListening);
                self.flow(now, Event::Answered, out);
            }
            screen::Screened::NotReached(f) => {
                out.push(Output::HangUp);
                self.finish(None, EndReason::NotReached(f), false, out);
            }
        }
    }

    /// Whether the answer is still being screened (the flow has not begun).
    pub fn is_screening(&self) -> bool {
        self.screen.as_ref().is_some_and(|s| s.is_deciding()) && self.end.is_none()
    }

    fn utterance_ended(&mut self, out: &mut Vec<Output>) {
        match self.ear {
            Ear::Listening => {
                self.seq += 1;
                self.reply_raised = false;
                self.reading
                    .insert(self.seq, self.call.current_step().map(str::to_string));
                out.push(Output::Transcribe { seq: self.seq });
            }
            Ear::Recording => {
                self.seq += 1;
                self.ear = Ear::Off;
                out.push(Output::SaveRecording { seq: self.seq });
            }
            Ear::Off => {}
        }
    }

    fn reading(&mut self, now: Millis, r: Reading, out: &mut Vec<Output>) {
        match r {
            Reading::Final { seq, words, audio } => {
                let step = self.reading.remove(&seq).flatten();
                if let Some(w) = words.filter(|w| !w.text.trim().is_empty()) {
                    self.heard(now, seq, step, w, audio, out);
                }
                if self.reading.is_empty() && self.tick_held {
                    self.tick_held = false;
                    self.flow(now, Event::Tick, out);
                }
            }
            Reading::AtPause {
                words,
                still_paused,
            } => {
                if still_paused {
                    self.early(&words, false, out);
                }
            }
            Reading::SoFar { words } => self.early(&words, true, out),
        }
    }

    /// A reading before the end of the reply: a clear, confident emergency
    /// is raised now, once per reply; anything else waits for the turn.
    fn early(&mut self, w: &Words, while_speaking: bool, out: &mut Vec<Output>) {
        if !self.wants_early_readings() || w.low_confidence || w.text.trim().is_empty() {
            return;
        }
        let u = distress::Utterance::new(w.text.trim())
            .lang(self.lang)
            .asr_confidence(w.confidence);
        let a = if while_speaking {
            Classifier::shared().assess_unfinished(&u)
        } else {
            Classifier::shared().assess(&u)
        };
        if escalation::is_clear_emergency(&a) {
            self.reply_raised = true;
            self.raise(
                Trigger::HeardEarly {
                    assessment: &a,
                    while_speaking,
                },
                out,
            );
        }
    }

    fn heard(
        &mut self,
        now: Millis,
        seq: i32,
        step: Option<String>,
        w: Words,
        audio: AudioInfo,
        out: &mut Vec<Output>,
    ) {
        let text = w.text.trim().to_string();
        let a = Classifier::shared().assess(
            &distress::Utterance::new(&text)
                .lang(self.lang)
                .asr_confidence(w.confidence),
        );
        let categories: Vec<String> = a
            .categories
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        let heard = Heard {
            transcript: text.clone(),
            lang: Some(self.lang),
            asr_confidence: w.confidence,
            level: a.level,
            categories: categories.clone(),
            needs_confirmation: a.needs_confirmation || w.low_confidence,
        };
        let late = self.end.is_some();
        if late {
            self.raise(Trigger::HeardAfterEnd { assessment: &a }, out);
        }
        out.push(Output::StoreUtterance(UtteranceRecord {
            seq,
            step,
            transcript: text,
            lang: self.lang,
            confidence: w.confidence.clamp(0.0, 1.0),
            assessment: a,
            audio,
        }));
        if !late {
            self.last_categories = categories;
            self.flow(now, Event::Heard(heard), out);
        }
    }

    /// Feed the flow one event and translate what it does.
    fn flow(&mut self, now: Millis, event: Event, out: &mut Vec<Output>) {
        if self.end.is_some() {
            return;
        }
        for action in self.call.handle(now, event) {
            self.act(action, out);
        }
    }

    fn act(&mut self, action: Action, out: &mut Vec<Output>) {
        match action {
            Action::Play(p) => out.push(Output::Play(p)),
            Action::StopPlayback => out.push(Output::StopPlayback),
            Action::StartListening {
                end_of_utterance_ms,
                ..
            } => {
                if self.ear != Ear::Listening {
                    self.ear = Ear::Listening;
                    out.push(Output::Listen {
                        end_silence_ms: end_of_utterance_ms.min(10_000) as u32,
                    });
                }
            }
            Action::StopListening => {
                self.ear = Ear::Off;
                out.push(Output::StopListening);
            }
            Action::StartRecording {
                max_ms,
                end_of_utterance_ms,
            } => {
                self.ear = Ear::Recording;
                out.push(Output::Record {
                    max_ms: max_ms.min(600_000) as u32,
                    end_silence_ms: end_of_utterance_ms.min(10_000) as u32,
                });
            }
            Action::StopRecording => {
                if self.ear == Ear::Recording {
                    self.seq += 1;
                    out.push(Output::FinishRecording { seq: self.seq });
                } else {
                    out.push(Output::StopListening);
                }
                self.ear = Ear::Off;
            }
            Action::SetTimer { at } => out.push(Output::SetTimer { at }),
            Action::Escalate {
                level,
                reasons,
                keep_on_line,
            } => {
                let step = self.call.current_step().unwrap_or("-").to_string();
                let categories = self.last_categories.clone();
                self.raise(
                    Trigger::Flow {
                        level,
                        reasons: &reasons,
                        step: &step,
                        categories: &categories,
                        keep_on_line,
                    },
                    out,
                );
            }
            Action::Hold => {
                if !self.held {
                    self.held = true;
                    out.push(Output::Hold);
                }
            }
            Action::TransferToOperator => {
                self.bridged = true;
                out.push(Output::BridgeToOperator);
            }
            Action::RecordVariable { .. } => {}
            Action::Hangup => out.push(Output::HangUp),
            Action::Finished(report) => {
                let reason = if self.media_failed {
                    EndReason::MediaNeverConnected
                } else if matches!(report.outcome, flow::Outcome::ElderHungUp { .. }) {
                    EndReason::ElderHungUp
                } else {
                    EndReason::Normal
                };
                if let flow::Outcome::Aborted { reason } = &report.outcome {
                    self.raise(Trigger::FlowAborted { reason }, out);
                }
                self.finish(Some(report), reason, false, out);
            }
        }
    }

    /// Escalate unless it would change nothing in the queue: an item raised
    /// again at no higher level, for no new category, with the elder's line
    /// no different (the flow's escalation after an emergency already
    /// raised mid-reply, say) is not raised twice.
    fn raise(&mut self, trigger: Trigger<'_>, out: &mut Vec<Output>) {
        let Some(e) = escalation::decide(trigger) else {
            return;
        };
        if let Some(r) = &self.raised {
            let news = e.level > r.level
                || (e.elder_on_line && !r.on_line)
                || e.categories
                    .iter()
                    .any(|c| !r.categories.contains(c) && c != "flow");
            if !news {
                return;
            }
        }
        let raised = self.raised.get_or_insert(Raised {
            level: e.level,
            on_line: e.elder_on_line,
            categories: Vec::new(),
        });
        raised.level = raised.level.max(e.level);
        raised.on_line |= e.elder_on_line;
        for c in &e.categories {
            if !raised.categories.contains(c) {
                raised.categories.push(c.clone());
            }
        }
        out.push(Output::Escalate(e));
    }

    fn finish(
        &mut self,
        report: Option<CallReport>,
        reason: EndReason,
        lost: bool,
        out: &mut Vec<Output>,
    ) {
        let end = SessionEnd {
            report,
            reason,
            lost,
            bridged: self.bridged && !lost,
        };
        self.end = Some(end.clone());
        self.ear = Ear::Off;
        out.push(Output::Finished(end));
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_keeps_the_elders_words_out() {
        let words = Words {
            text: "我在厨房摔倒了".into(),
            confidence: 0.8,
            low_confidence: false,
        };
        let reading = Reading::SoFar {
            words: words.clone(),
        };
        let record = UtteranceRecord {
            seq: 3,
            step: Some("how_are_you".into()),
            transcript: words.text.clone(),
            lang: Lang::Zh,
            confidence: 0.8,
            assessment: crate::distress::Classifier::shared()
                .assess(&crate::distress::Utterance::new(&words.text)),
            audio: AudioInfo::default(),
        };
        for shown in [
            format!("{words:?}"),
            format!("{reading:?}"),
            format!("{record:?}"),
        ] {
            assert!(
                !shown.contains("厨房") && !shown.contains("摔倒"),
                "{shown}"
            );
        }
        assert!(format!("{record:?}").contains("seq: 3"));
    }
}
