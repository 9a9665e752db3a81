//! The call state machine: events in, actions out.
//!
//! A runner owns one [`Call`] per answered call. It feeds every event with the
//! call's monotonic time ([`Millis`] since the call was placed) and performs
//! the returned actions in order: play or stop prompts, start or stop the
//! recogniser, arm a timer and send [`Event::Tick`] when it fires, put an
//! escalation in the operator queue, hang up. The last action of every call
//! is [`Action::Finished`] with the [`CallReport`].
//!
//! Turn-taking is tuned for elders: long end-of-utterance silence, prompts
//! stopped only by real words or keys (never by raw voice activity), repeat on
//! request at a slower rate, and an "are you still there?" before giving up.

use super::model::*;
use crate::Level;
use crate::intent::{self, Intent};
use crate::redact::{redacted_values, redacted_words};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Milliseconds on the call's monotonic clock, supplied by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// Identifies one `Play` so a late `PromptFinished` for a prompt that was
/// already cut off is not mistaken for the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PromptId(pub u32);

/// A final utterance from the recogniser with the classifier's verdict on it.
/// `Debug` shows the transcript's length, never its words.
#[derive(Clone, PartialEq)]
pub struct Heard {
    pub transcript: String,
    pub lang: Option<Lang>,
    /// 0.0-1.0.
    pub asr_confidence: f32,
    pub level: Level,
    pub categories: Vec<String>,
    /// The classifier is unsure and wants the elder to confirm.
    pub needs_confirmation: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The elder picked up; the flow starts.
    Answered,
    PromptFinished {
        id: PromptId,
    },
    Heard(Heard),
    /// One keypad key.
    Digit(char),
    /// Raw voice activity. Never stops a prompt (coughs and televisions are
    /// not answers); while waiting it only postpones the no-input timeout.
    SpeechStarted,
    /// The recogniser's own no-input timeout, if it has one; the interpreter's
    /// timer gives the same result.
    NoInput,
    /// A timer set with [`Action::SetTimer`] fired (early or repeated ticks are harmless).
    Tick,
    RecordingFinished {
        /// Where the runner stored the audio, if anything was recorded.
        reference: Option<String>,
    },
    /// An operator picked up an escalation that kept the elder on the line.
    OperatorJoined,
    /// The elder hung up (or the line dropped).
    HungUp,
}

/// `Debug` shows the text's length only: prompts name the elder.
#[derive(Clone, PartialEq, Serialize)]
pub struct Play {
    pub id: PromptId,
    pub lang: Lang,
    /// Text to synthesise; also the transcript of `audio` when that is set.
    pub text: String,
    /// A recorded file to play instead of synthesising `text`.
    pub audio: Option<String>,
    pub rate: f32,
    /// Whether recognised words or keys may cut this prompt short.
    pub barge_in: bool,
}

/// `Debug` redacts what may be personal: prompt text, escalation reasons
/// (they quote the reply), recorded variables' values.
#[must_use]
#[derive(Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Play(Play),
    /// Cut the current prompt (barge-in, or an operator joining).
    StopPlayback,
    StartListening {
        mode: InputMode,
        /// Silence that ends an utterance.
        end_of_utterance_ms: u64,
        no_input_timeout_ms: u64,
    },
    StopListening,
    StartRecording {
        max_ms: u64,
        end_of_utterance_ms: u64,
    },
    StopRecording,
    /// Send [`Event::Tick`] at (or after) this time. A new timer replaces the old one.
    SetTimer {
        at: Millis,
    },
    /// Put the call in the operator queue.
    Escalate {
        level: Level,
        reasons: Vec<String>,
        keep_on_line: bool,
    },
    /// Keep the elder on the line for an operator; the interpreter keeps
    /// playing reassurance until [`Event::OperatorJoined`].
    Hold,
    /// Connect the operator who joined; the interpreter is done with the call.
    TransferToOperator,
    /// A value to store with the call record.
    RecordVariable {
        name: String,
        value: String,
    },
    Hangup,
    Finished(CallReport),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    CompletedOk,
    Escalated {
        level: Level,
    },
    /// Picked up but never answered; not the same as "ok".
    AnsweredSilent,
    ElderHungUp {
        /// The last thing heard was a distress phrase (the call was escalated for it).
        after_distress: bool,
    },
    /// The elder kept saying they did not understand.
    NotUnderstood,
    /// The flow could not continue (a guard against a bug, never a normal end).
    Aborted {
        reason: String,
    },
}

/// `Debug` shows the variables' names, not their values.
#[derive(Clone, PartialEq, Serialize)]
pub struct CallReport {
    pub flow_id: String,
    pub outcome: Outcome,
    /// The most severe escalation raised during the call.
    pub escalated: Option<Level>,
    /// Answers (utterances with words, or keys) the elder gave.
    pub answers: u32,
    pub variables: BTreeMap<String, String>,
    /// Step ids in the order they were entered.
    pub path: Vec<String>,
}

impl fmt::Debug for Heard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heard")
            .field("transcript", &redacted_words(&self.transcript))
            .field("lang", &self.lang)
            .field("asr_confidence", &self.asr_confidence)
            .field("level", &self.level)
            .field("categories", &self.categories)
            .field("needs_confirmation", &self.needs_confirmation)
            .finish()
    }
}

impl fmt::Debug for Play {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Play")
            .field("id", &self.id)
            .field("lang", &self.lang)
            .field("text", &redacted_words(&self.text))
            .field("audio", &self.audio)
            .field("rate", &self.rate)
            .field("barge_in", &self.barge_in)
            .finish()
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Play(p) => f.debug_tuple("Play").field(p).finish(),
            Action::StopPlayback => f.write_str("StopPlayback"),
            Action::StartListening {
                mode,
                end_of_utterance_ms,
                no_input_timeout_ms,
            } => f
                .debug_struct("StartListening")
                .field("mode", mode)
                .field("end_of_utterance_ms", end_of_utterance_ms)
                .field("no_input_timeout_ms", no_input_timeout_ms)
                .finish(),
            Action::StopListening => f.write_str("StopListening"),
            Action::StartRecording {
                max_ms,
                end_of_utterance_ms,
            } => f
                .debug_struct("StartRecording")
                .field("max_ms", max_ms)
                .field("end_of_utterance_ms", end_of_utterance_ms)
                .finish(),
            Action::StopRecording => f.write_str("StopRecording"),
            Action::SetTimer { at } => f.debug_struct("SetTimer").field("at", at).finish(),
            Action::Escalate {
                level,
                reasons,
                keep_on_line,
            } => f
                .debug_struct("Escalate")
                .field("level", level)
                .field(
                    "reasons",
                    &reasons
                        .iter()
                        .map(|r| redacted_words(r))
                        .collect::<Vec<_>>(),
                )
                .field("keep_on_line", keep_on_line)
                .finish(),
            Action::Hold => f.write_str("Hold"),
            Action::TransferToOperator => f.write_str("TransferToOperator"),
            Action::RecordVariable { name, value } => f
                .debug_struct("RecordVariable")
                .field("name", name)
                .field("value", &redacted_words(value))
                .finish(),
            Action::Hangup => f.write_str("Hangup"),
            Action::Finished(r) => f.debug_tuple("Finished").field(r).finish(),
        }
    }
}

impl fmt::Debug for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReport")
            .field("flow_id", &self.flow_id)
            .field("outcome", &self.outcome)
            .field("escalated", &self.escalated)
            .field("answers", &self.answers)
            .field("variables", &redacted_values(&self.variables))
            .field("path", &self.path)
            .finish()
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("flow", &self.flow.id)
            .field("lang", &self.lang)
            .field("vars", &redacted_values(&self.vars))
            .field("phase", &self.phase)
            .field("last_heard", &self.last_heard)
            .field("concern", &self.concern)
            .field("escalated", &self.escalated)
            .field("answers", &self.answers)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Below this recogniser confidence a reply is asked again rather than
/// matched to yes/no; distress is still acted on whatever the confidence.
const MIN_ASR_CONFIDENCE: f32 = 0.3;
/// Repeats on request per step before it counts as a no-match.
const MAX_REPEATS: u32 = 5;
/// Guards against a bug running instant steps forever; the checker rejects such loops.
const MAX_INSTANT_STEPS: u32 = 1000;

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    NotAnswered,
    Say {
        step: StepIdx,
        prompt: PromptId,
    },
    Ask(AskPhase),
    /// The prompt of an escalate step that releases the elder.
    Announce {
        prompt: PromptId,
        next: StepIdx,
    },
    Holding {
        prompt: Option<PromptId>,
        next_at: Option<Millis>,
    },
    Record {
        step: StepIdx,
        prompt: Option<PromptId>,
        deadline: Option<Millis>,
    },
    Goodbye {
        prompt: PromptId,
    },
    Done,
}

#[derive(Debug, Clone, PartialEq)]
struct AskPhase {
    step: StepIdx,
    /// The prompt being played, if any.
    prompt: Option<PromptId>,
    listening: bool,
    /// No-input deadline, armed once the prompt has finished.
    deadline: Option<Millis>,
    no_input: u32,
    no_match: u32,
    repeats: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The flow reached its end (or gave up) and hangs up.
    Flow,
    ElderHungUp,
    Operator,
}

/// One call running one flow. `Debug` leaves out the variables' values
/// (the elder's name, answers) and the words heard.
#[derive(Clone)]
pub struct Call {
    flow: Arc<Flow>,
    lang: Lang,
    vars: BTreeMap<String, String>,
    phase: Phase,
    next_prompt: u32,
    /// The last answer, for `assess` steps; cleared by a key answer.
    last_heard: Option<Heard>,
    /// The last answer rated above ok and not yet escalated: what an
    /// `assessed` escalation is about, even after a "yes" to "did you fall?".
    concern: Option<Heard>,
    escalated: Option<Level>,
    answers: u32,
    asked: bool,
    gave_up_silent: bool,
    not_understood: u32,
    ended_not_understood: bool,
    path: Vec<String>,
    report: Option<CallReport>,
}

impl Call {
    /// `lang` is the elder's preferred language (the flow's first language is
    /// used if the flow does not speak it); `inputs` fills the flow's inputs,
    /// such as `elder_name`.
    pub fn new(flow: Arc<Flow>, lang: Lang, inputs: BTreeMap<String, String>) -> Call {
        let lang = if flow.languages.contains(&lang) {
            lang
        } else {
            flow.languages.first().copied().unwrap_or(lang)
        };
        Call {
            flow,
            lang,
            vars: inputs,
            phase: Phase::NotAnswered,
            next_prompt: 0,
            last_heard: None,
            concern: None,
            escalated: None,
            answers: 0,
            asked: false,
            gave_up_silent: false,
            not_understood: 0,
            ended_not_understood: false,
            path: Vec::new(),
            report: None,
        }
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The report, once the call has finished.
    pub fn report(&self) -> Option<&CallReport> {
        self.report.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The id of the step the call is in, if it is in one.
    pub fn current_step(&self) -> Option<&str> {
        let idx = match &self.phase {
            Phase::Say { step, .. } | Phase::Record { step, .. } => *step,
            Phase::Ask(a) => a.step,
            _ => return None,
        };
        self.flow.steps.get(idx).map(|s| s.id.as_str())
    }

    #[must_use]
    pub fn handle(&mut self, now: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Done {
            return out;
        }
        if event == Event::HungUp {
            if matches!(self.phase, Phase::Goodbye { .. }) {
                // Hanging up during the goodbye is a normal end; the line is already gone.
                self.finish(End::Flow, &mut out);
                out.retain(|a| *a != Action::Hangup);
            } else {
                self.finish(End::ElderHungUp, &mut out);
            }
            return out;
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::NotAnswered => {
                if event == Event::Answered {
                    self.enter(self.flow.start, now, &mut out);
                } else {
                    self.phase = Phase::NotAnswered;
                }
            }
            Phase::Say { step, prompt } => {
                self.phase = Phase::Say { step, prompt };
                let next = match self.flow.steps.get(step).map(|s| &s.kind) {
                    Some(StepKind::Say { next, barge_in, .. }) => Some((*next, *barge_in)),
                    _ => None,
                };
                let Some((next, barge_in)) = next else {
                    self.abort("say phase on a non-say step", &mut out);
                    return out;
                };
                match event {
                    Event::PromptFinished { id } if id == prompt => self.enter(next, now, &mut out),
                    // The help key works even during announcements that
                    // cannot be skipped: someone in trouble will not wait.
                    Event::Digit(d)
                        if Some(d) == self.flow.help_key && self.flow.on_help.is_some() =>
                    {
                        out.push(Action::StopPlayback);
                        self.answers += 1;
                        self.set_var("last_digits", d.to_string(), &mut out);
                        if let Some(t) = self.flow.on_help {
                            self.enter(t, now, &mut out);
                        }
                    }
                    // Any other key skips an announcement that allows it.
                    Event::Digit(_) if barge_in => {
                        out.push(Action::StopPlayback);
                        self.enter(next, now, &mut out);
                    }
                    _ => {}
                }
            }
            Phase::Ask(a) => self.on_ask(a, now, event, &mut out),
            Phase::Announce { prompt, next } => {
                if event == (Event::PromptFinished { id: prompt }) {
                    self.enter(next, now, &mut out);
                } else {
                    self.phase = Phase::Announce { prompt, next };
                }
            }
            Phase::Holding { prompt, next_at } => match event {
                Event::OperatorJoined => {
                    if prompt.is_some() {
                        out.push(Action::StopPlayback);
                    }
                    out.push(Action::TransferToOperator);
                    self.finish(End::Operator, &mut out);
                }
                Event::PromptFinished { id } if Some(id) == prompt => {
                    let at = now.plus(self.flow.settings.hold_reassure_every_ms);
                    out.push(Action::SetTimer { at });
                    self.phase = Phase::Holding {
                        prompt: None,
                        next_at: Some(at),
                    };
                }
                Event::Tick if next_at.is_some_and(|t| now >= t) => {
                    let id = self.reassure(&mut out);
                    self.phase = Phase::Holding {
                        prompt: id,
                        next_at: None,
                    };
                }
                _ => self.phase = Phase::Holding { prompt, next_at },
            },
            Phase::Record {
                step,
                prompt,
                deadline,
            } => {
                let Some(StepKind::Record {
                    save, max_ms, next, ..
                }) = self.flow.steps.get(step).map(|s| &s.kind)
                else {
                    self.abort("record phase on a non-record step", &mut out);
                    return out;
                };
                let (save, max_ms, next) = (save.clone(), *max_ms, *next);
                match event {
                    Event::PromptFinished { id } if Some(id) == prompt => {
                        self.start_recording(step, max_ms, now, &mut out);
                    }
                    Event::RecordingFinished { reference } if prompt.is_none() => {
                        if let Some(r) = reference {
                            self.set_var(&save, r, &mut out);
                        }
                        self.enter(next, now, &mut out);
                    }
                    Event::Tick if deadline.is_some_and(|d| now >= d) => {
                        out.push(Action::StopRecording);
                        self.enter(next, now, &mut out);
                    }
                    _ => {
                        self.phase = Phase::Record {
                            step,
                            prompt,
                            deadline,
                        }
                    }
                }
            }
            Phase::Goodbye { prompt } => {
                if event == (Event::PromptFinished { id: prompt }) {
                    self.finish(End::Flow, &mut out);
                } else {
                    self.phase = Phase::Goodbye { prompt };
                }
            }
            Phase::Done => {}
        }
        out
    }

    fn on_ask(&mut self, mut a: AskPhase, now: Millis, event: Event, out: &mut Vec<Action>) {
        let flow = Arc::clone(&self.flow);
        let Some(StepKind::Ask(ask)) = flow.steps.get(a.step).map(|s| &s.kind) else {
            self.abort("ask phase on a non-ask step", out);
            return;
        };
        match event {
            Event::PromptFinished { id } if Some(id) == a.prompt => {
                a.prompt = None;
                if !a.listening {
                    out.push(self.listen(ask));
                    a.listening = true;
                }
                let at = now.plus(ask.timeout_ms);
                a.deadline = Some(at);
                out.push(Action::SetTimer { at });
                self.phase = Phase::Ask(a);
            }
            Event::Heard(h) if !h.transcript.trim().is_empty() && a.listening => {
                if a.prompt.take().is_some() {
                    out.push(Action::StopPlayback);
                }
                self.answered_speech(a, ask, h, now, out);
            }
            Event::Digit(d) if a.listening => {
                if a.prompt.take().is_some() {
                    out.push(Action::StopPlayback);
                }
                self.answered_digit(a, ask, d, now, out);
            }
            Event::SpeechStarted if a.deadline.is_some() => {
                // Slow speakers: give the utterance time to finish before
                // calling it silence.
                let at = now.plus(ask.timeout_ms.max(ask.end_of_utterance_ms * 2));
                a.deadline = Some(at);
                out.push(Action::SetTimer { at });
                self.phase = Phase::Ask(a);
            }
            Event::NoInput if a.prompt.is_none() => self.no_input(a, ask, now, out),
            Event::Tick if a.deadline.is_some_and(|d| now >= d) => self.no_input(a, ask, now, out),
            _ => self.phase = Phase::Ask(a),
        }
    }

    fn answered_speech(
        &mut self,
        a: AskPhase,
        ask: &Ask,
        h: Heard,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        self.answers += 1;
        self.set_var("last_transcript", h.transcript.clone(), out);
        self.set_var("last_level", h.level.as_str().to_string(), out);
        self.set_var("last_categories", h.categories.join(","), out);
        let transcript = h.transcript.clone();
        let level = h.level;
        let confident = h.asr_confidence >= MIN_ASR_CONFIDENCE;
        if h.level > Level::Ok {
            self.concern = Some(h.clone());
        }
        self.last_heard = Some(h);

        if ask.distress_jump
            && level >= self.flow.settings.distress_level
            && let Some(t) = self.flow.on_distress
        {
            self.save(ask, &transcript, out);
            self.leave_ask_to(t, now, out);
            return;
        }
        let intent = if confident {
            intent::recognise(&transcript)
        } else {
            None
        };
        // A clear spoken "no" to an unsure finding ("did you say you fell?")
        // settles it; anything else (silence, a hang-up, an unrelated answer)
        // leaves it standing.
        if intent == Some(Intent::No)
            && level == Level::Ok
            && self.concern.as_ref().is_some_and(|c| c.needs_confirmation)
        {
            self.concern = None;
        }
        if let Some(i) = intent
            && let Some(r) = ask.routes.iter().find(|r| r.on == Match::Intent(i))
        {
            self.save(ask, &transcript, out);
            self.leave_ask_to(r.next, now, out);
            return;
        }
        match intent {
            Some(Intent::Help) if self.flow.on_help.is_some() => {
                self.save(ask, &transcript, out);
                if let Some(t) = self.flow.on_help {
                    self.leave_ask_to(t, now, out);
                }
            }
            Some(Intent::Repeat) => self.repeat(a, ask, now, out),
            Some(Intent::DontUnderstand) => {
                self.not_understood += 1;
                if self.not_understood >= self.flow.settings.not_understood_limit {
                    self.ended_not_understood = true;
                    match self.flow.on_not_understood {
                        Some(t) => self.leave_ask_to(t, now, out),
                        None => self.finish(End::Flow, out),
                    }
                } else {
                    self.repeat(a, ask, now, out);
                }
            }
            _ if !confident => self.no_match(a, ask, now, out),
            _ => match ask.next {
                Some(n) => {
                    self.save(ask, &transcript, out);
                    self.leave_ask_to(n, now, out);
                }
                None => self.no_match(a, ask, now, out),
            },
        }
    }

    fn answered_digit(
        &mut self,
        a: AskPhase,
        ask: &Ask,
        d: char,
        now: Millis,
        out: &mut Vec<Action>,
    ) {
        self.answers += 1;
        // A key carries no words to assess; an earlier answer must not be assessed twice.
        self.last_heard = None;
        self.set_var("last_digits", d.to_string(), out);
        if let Some(r) = ask.routes.iter().find(|r| r.on == Match::Key(d)) {
            self.save(ask, &d.to_string(), out);
            self.leave_ask_to(r.next, now, out);
        } else if Some(d) == self.flow.help_key
            && let Some(t) = self.flow.on_help
        {
            self.save(ask, &d.to_string(), out);
            self.leave_ask_to(t, now, out);
        } else if d == '*' {
            self.repeat(a, ask, now, out);
        } else if let Some(n) = ask.next {
            self.save(ask, &d.to_string(), out);
            self.leave_ask_to(n, now, out);
        } else {
            self.no_match(a, ask, now, out);
        }
    }

    fn save(&mut self, ask: &Ask, value: &str, out: &mut Vec<Action>) {
        if let Some(name) = &ask.save {
            self.set_var(name, value.to_string(), out);
        }
    }

    fn repeat(&mut self, mut a: AskPhase, ask: &Ask, now: Millis, out: &mut Vec<Action>) {
        a.repeats += 1;
        if a.repeats > MAX_REPEATS {
            // Endless "say again" is treated like an answer we cannot use.
            a.repeats = 0;
            self.no_match(a, ask, now, out);
            return;
        }
        let rate = self.rate(&ask.prompt).min(self.flow.settings.repeat_rate);
        self.reprompt(a, ask, &ask.prompt.clone(), Some(rate), out);
    }

    fn no_match(&mut self, mut a: AskPhase, ask: &Ask, now: Millis, out: &mut Vec<Action>) {
        a.no_match += 1;
        if a.no_match <= ask.retries {
            let p = ask.no_match.clone().unwrap_or_else(|| ask.prompt.clone());
            self.reprompt(a, ask, &p, None, out);
        } else if let Some(t) = ask.no_match_next.or(ask.next) {
            self.leave_ask_to(t, now, out);
        } else {
            self.finish(End::Flow, out);
        }
    }

    fn no_input(&mut self, mut a: AskPhase, ask: &Ask, now: Millis, out: &mut Vec<Action>) {
        a.no_input += 1;
        a.deadline = None;
        if a.no_input <= ask.retries {
            let p = ask.no_input.clone().unwrap_or_else(|| ask.prompt.clone());
            self.reprompt(a, ask, &p, None, out);
        } else if a.no_input == ask.retries + 1 {
            let p = self.flow.still_there.clone();
            self.reprompt(a, ask, &p, None, out);
        } else {
            out.push(Action::StopListening);
            match ask.no_input_next {
                Some(t) => self.enter(t, now, out),
                None => {
                    // Say why the line is going quiet rather than just dropping it.
                    self.gave_up_silent = true;
                    let p = self.flow.silent_goodbye.clone();
                    let id = self.play(&p, false, None, out);
                    self.phase = Phase::Goodbye { prompt: id };
                }
            }
        }
    }

    /// Plays `prompt` again within the same ask step and keeps counting.
    fn reprompt(
        &mut self,
        mut a: AskPhase,
        ask: &Ask,
        prompt: &Prompt,
        rate: Option<f32>,
        out: &mut Vec<Action>,
    ) {
        a.deadline = None;
        if a.listening && !ask.barge_in {
            out.push(Action::StopListening);
            a.listening = false;
        }
        let id = self.play(prompt, ask.barge_in, rate, out);
        if !a.listening && ask.barge_in {
            out.push(self.listen(ask));
            a.listening = true;
        }
        a.prompt = Some(id);
        self.phase = Phase::Ask(a);
    }

    fn listen(&self, ask: &Ask) -> Action {
        Action::StartListening {
            mode: ask.input,
            end_of_utterance_ms: ask.end_of_utterance_ms,
            no_input_timeout_ms: ask.timeout_ms,
        }
    }

    /// Leaves the current ask: the recogniser stops before the next step runs.
    fn leave_ask_to(&mut self, idx: StepIdx, now: Millis, out: &mut Vec<Action>) {
        out.push(Action::StopListening);
        self.enter(idx, now, out);
    }

    /// Runs steps from `idx` until one waits for an event.
    fn enter(&mut self, mut idx: StepIdx, now: Millis, out: &mut Vec<Action>) {
        let flow = Arc::clone(&self.flow);
        for _ in 0..MAX_INSTANT_STEPS {
            let Some(step) = flow.steps.get(idx) else {
                self.abort("step index out of range", out);
                return;
            };
            self.path.push(step.id.clone());
            match &step.kind {
                StepKind::Say {
                    prompt, barge_in, ..
                } => {
                    // Keys (always reported by the line) may skip an
                    // announcement; speech is not listened for.
                    let id = self.play(prompt, *barge_in, None, out);
                    self.phase = Phase::Say {
                        step: idx,
                        prompt: id,
                    };
                    return;
                }
                StepKind::Ask(ask) => {
                    self.asked = true;
                    let a = AskPhase {
                        step: idx,
                        prompt: None,
                        listening: false,
                        deadline: None,
                        no_input: 0,
                        no_match: 0,
                        repeats: 0,
                    };
                    self.reprompt(a, ask, &ask.prompt, None, out);
                    return;
                }
                StepKind::Assess {
                    thresholds,
                    unsure,
                    next,
                } => {
                    let (level, unsure_flag) = self
                        .last_heard
                        .as_ref()
                        .map_or((Level::Ok, false), |h| (h.level, h.needs_confirmation));
                    idx = match unsure {
                        Some(u) if unsure_flag && level > Level::Ok => *u,
                        _ => thresholds
                            .iter()
                            .find(|(t, _)| level >= *t)
                            .map_or(*next, |t| t.1),
                    };
                }
                StepKind::Escalate {
                    level,
                    reason,
                    keep_on_line,
                    prompt,
                    next,
                } => {
                    let about = self.concern.take().or_else(|| self.last_heard.clone());
                    let level = match level {
                        EscalateLevel::Fixed(l) => *l,
                        EscalateLevel::Assessed => about
                            .as_ref()
                            .map_or(Level::Watch, |h| h.level.max(Level::Watch)),
                    };
                    let mut reasons = vec![reason.render(|v| self.vars.get(v).cloned())];
                    if let Some(h) = &about {
                        if !h.categories.is_empty() {
                            reasons.push(format!("categories: {}", h.categories.join(", ")));
                        }
                        reasons.push(format!("heard: {:?}", h.transcript));
                    }
                    self.escalated = self.escalated.max(Some(level));
                    out.push(Action::Escalate {
                        level,
                        reasons,
                        keep_on_line: *keep_on_line,
                    });
                    if *keep_on_line {
                        out.push(Action::StopListening);
                        let id = self.reassure(out);
                        out.push(Action::Hold);
                        self.phase = Phase::Holding {
                            prompt: id,
                            next_at: None,
                        };
                        return;
                    }
                    let Some(next) = *next else {
                        self.abort("escalate step without next", out);
                        return;
                    };
                    match prompt {
                        Some(p) => {
                            let id = self.play(p, false, None, out);
                            self.phase = Phase::Announce { prompt: id, next };
                            return;
                        }
                        None => idx = next,
                    }
                }
                StepKind::Set { vars, next } => {
                    for (name, t) in vars {
                        let v = t.render(|v| self.vars.get(v).cloned());
                        self.set_var(name, v, out);
                    }
                    idx = *next;
                }
                StepKind::Branch { when, next } => {
                    idx = when
                        .iter()
                        .find(|w| {
                            let v = self.vars.get(&w.var).filter(|v| !v.is_empty());
                            match &w.cond {
                                Condition::Equals(e) => v.is_some_and(|v| v == e),
                                Condition::IsSet => v.is_some(),
                                Condition::IsUnset => v.is_none(),
                            }
                        })
                        .map_or(*next, |w| w.next);
                }
                StepKind::Record { prompt, max_ms, .. } => {
                    match prompt {
                        Some(p) => {
                            let id = self.play(p, false, None, out);
                            self.phase = Phase::Record {
                                step: idx,
                                prompt: Some(id),
                                deadline: None,
                            };
                        }
                        None => self.start_recording(idx, *max_ms, now, out),
                    }
                    return;
                }
                StepKind::Hangup { prompt } => {
                    match prompt {
                        Some(p) => {
                            out.push(Action::StopListening);
                            let id = self.play(p, false, None, out);
                            self.phase = Phase::Goodbye { prompt: id };
                        }
                        None => self.finish(End::Flow, out),
                    }
                    return;
                }
            }
        }
        self.abort("too many steps without waiting", out);
    }

    fn start_recording(&mut self, step: StepIdx, max_ms: u64, now: Millis, out: &mut Vec<Action>) {
        out.push(Action::StartRecording {
            max_ms,
            end_of_utterance_ms: self.flow.settings.end_of_utterance_ms.max(3000),
        });
        // A little grace after the maximum in case the recorder never reports.
        let at = now.plus(max_ms + 5000);
        out.push(Action::SetTimer { at });
        self.phase = Phase::Record {
            step,
            prompt: None,
            deadline: Some(at),
        };
    }

    fn reassure(&mut self, out: &mut Vec<Action>) -> Option<PromptId> {
        let flow = Arc::clone(&self.flow);
        let prompt = self
            .path
            .iter()
            .rev()
            .find_map(|id| flow.steps.iter().find(|s| &s.id == id))
            .and_then(|s| match &s.kind {
                StepKind::Escalate { prompt, .. } => prompt.as_ref(),
                _ => None,
            })?;
        Some(self.play(prompt, false, None, out))
    }

    fn rate(&self, p: &Prompt) -> f32 {
        p.rate.unwrap_or(self.flow.settings.rate)
    }

    fn play(
        &mut self,
        p: &Prompt,
        barge_in: bool,
        rate: Option<f32>,
        out: &mut Vec<Action>,
    ) -> PromptId {
        let id = PromptId(self.next_prompt);
        self.next_prompt = self.next_prompt.wrapping_add(1);
        let text = p
            .text
            .get(self.lang)
            .map(|t| t.render(|v| self.vars.get(v).cloned()))
            .unwrap_or_default();
        out.push(Action::Play(Play {
            id,
            lang: self.lang,
            text,
            audio: p.audio.get(self.lang).cloned(),
            rate: rate.unwrap_or_else(|| self.rate(p)),
            barge_in,
        }));
        id
    }

    fn set_var(&mut self, name: &str, value: String, out: &mut Vec<Action>) {
        self.vars.insert(name.to_string(), value.clone());
        out.push(Action::RecordVariable {
            name: name.to_string(),
            value,
        });
    }

    fn abort(&mut self, reason: &str, out: &mut Vec<Action>) {
        out.push(Action::Hangup);
        self.done(
            Outcome::Aborted {
                reason: reason.to_string(),
            },
            out,
        );
    }

    fn finish(&mut self, end: End, out: &mut Vec<Action>) {
        // Distress heard earlier in the call that no escalation has covered
        // and the elder has not denied: the answer to a confirming question
        // may be unrelated ("I ate") before the line drops, and the finding
        // must still reach a person.
        let distress = self
            .concern
            .as_ref()
            .filter(|h| h.level >= self.flow.settings.distress_level)
            .map(|h| (h.level, h.transcript.clone()));
        let outcome = match end {
            End::Operator => Outcome::Escalated {
                level: self.escalated.unwrap_or(Level::Urgent),
            },
            End::ElderHungUp => {
                if let Some((level, transcript)) = &distress {
                    // A line that drops right after "I fell" must still reach a person.
                    let level = (*level).max(Level::Urgent);
                    self.escalated = self.escalated.max(Some(level));
                    self.concern = None;
                    out.push(Action::Escalate {
                        level,
                        reasons: vec![
                            "call dropped right after a distress phrase".to_string(),
                            format!("heard: {transcript:?}"),
                        ],
                        keep_on_line: false,
                    });
                    Outcome::ElderHungUp {
                        after_distress: true,
                    }
                } else if let Some(level) = self.escalated {
                    Outcome::Escalated { level }
                } else {
                    Outcome::ElderHungUp {
                        after_distress: false,
                    }
                }
            }
            End::Flow => {
                out.push(Action::Hangup);
                if let Some(level) = self.escalated {
                    Outcome::Escalated { level }
                } else if self.ended_not_understood {
                    Outcome::NotUnderstood
                } else if self.gave_up_silent || (self.asked && self.answers == 0) {
                    Outcome::AnsweredSilent
                } else {
                    Outcome::CompletedOk
                }
            }
        };
        self.done(outcome, out);
    }

    fn done(&mut self, outcome: Outcome, out: &mut Vec<Action>) {
        let report = CallReport {
            flow_id: self.flow.id.clone(),
            outcome,
            escalated: self.escalated,
            answers: self.answers,
            variables: self.vars.clone(),
            path: self.path.clone(),
        };
        self.report = Some(report.clone());
        self.phase = Phase::Done;
        out.push(Action::Finished(report));
    }
}
