//! The first seconds of an answered telephone call, before the flow says a
//! word: did a person pick up, an answering machine, or is the carrier
//! playing a recording ("您拨打的电话已关机") after connecting the call?
//!
//! Only calls to telephone numbers are screened (a care-app device is the
//! elder's own and answers with the elder). The call listens from the
//! answer; what is said is read but never stored or judged as the elder's
//! words, since it may be a machine's or a carrier's. [`Amd`] decides
//! person or machine from the greeting's shape, a beep and machine words;
//! [`announcement::classify`] recognises a carrier's recording. A person,
//! or no certainty either way, starts the flow, whose first question
//! settles it; a machine or a recording ends the call as not reached.

use std::collections::HashSet;

use super::{Output, SetupFailure};
use crate::Level;
use crate::carrier::amd::{Amd, AmdConfig, AmdEvent, Cause, Decision, Verdict, machine_words};
use crate::carrier::announcement::{self, AnnouncementKind};
use crate::distress::{Classifier, Utterance};
use crate::flow::Millis;

/// How often the detector is given the time while nothing happens.
const TICK_MS: u64 = 250;
/// Silence that ends a piece of the greeting: short, so a "喂？" is read
/// while the person waits.
const END_SILENCE_MS: u32 = 500;
/// A greeting long enough for a machine is held up to this long for its
/// words (or a beep) before the call is taken for a machine: a greeting that
/// never stops is no person waiting for the caller.
const WORDS_WAIT_MS: u64 = 8000;

/// What the screen concluded, if anything yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    Undecided,
    /// A person, or not sure: the flow starts.
    Person,
    /// Not the elder: a machine or the carrier's recording.
    NotReached(SetupFailure),
}

#[derive(Debug)]
pub(crate) struct Screen {
    amd: Amd,
    /// Utterances read for the screen: their words are not the elder's answers.
    seqs: HashSet<i32>,
    /// What the screen concluded, once it has.
    decision: Option<Screened>,
    /// The greeting's shape says machine (a long greeting), but an elder
    /// who answers with a long cry for help sounds the same: the words
    /// decide, and this is when the shape did.
    machine_by_shape: Option<Millis>,
}

impl Screen {
    /// Start listening at the answer.
    pub fn start(now: Millis, out: &mut Vec<Output>) -> Self {
        out.push(Output::Listen {
            end_silence_ms: END_SILENCE_MS,
        });
        out.push(Output::SetTimer {
            at: now.plus(TICK_MS),
        });
        Screen {
            amd: Amd::new(AmdConfig::default(), now.0),
            seqs: HashSet::new(),
            decision: None,
            machine_by_shape: None,
        }
    }

    pub fn is_deciding(&self) -> bool {
        self.decision.is_none()
    }

    /// Whether the screen found a machine or a carrier's recording: then
    /// every piece of the greeting is theirs, even one read after the
    /// decision (a beep decides while earlier words are still being read).
    pub fn found_not_reached(&self) -> bool {
        matches!(self.decision, Some(Screened::NotReached(_)))
    }

    /// Whether utterance `seq` was read for the screen.
    pub fn owns(&self, seq: i32) -> bool {
        self.seqs.contains(&seq)
    }

    pub fn speech_started(&mut self, now: Millis) -> Screened {
        self.amd_event(now, AmdEvent::SpeechStarted { at_ms: now.0 })
    }

    /// A piece of the greeting ended; it is read as utterance `seq`.
    pub fn utterance_ended(&mut self, now: Millis, seq: i32) -> Screened {
        self.seqs.insert(seq);
        let at_ms = now.0.saturating_sub(u64::from(END_SILENCE_MS));
        self.amd_event(now, AmdEvent::SpeechEnded { at_ms })
    }

    /// The words of a piece of the greeting (`None`: it held no words).
    pub fn words(&mut self, now: Millis, text: Option<&str>, lang: crate::Lang) -> Screened {
        if self.decision.is_some() {
            return Screened::Undecided;
        }
        let Some(text) = text else {
            return match self.machine_by_shape {
                Some(_) => self.decide(Screened::NotReached(SetupFailure::Voicemail)),
                None => Screened::Undecided,
            };
        };
        if let Some(a) = announcement::classify(text)
            && let Some(f) = failure_of(a.kind)
        {
            return self.decide(Screened::NotReached(f));
        }
        // Someone in trouble is a person, however they answered.
        if of_concern(text, lang) {
            return self.decide(Screened::Person);
        }
        if self.machine_by_shape.is_some() {
            // A long greeting is a machine only if it says what machines
            // say: an elder answering slowly with a whole sentence ("喂，你好，
            // 我是张阿姨，你是哪位啊？") is a person, and hanging up on them is
            // the worse mistake.
            return self.decide(match machine_words(text) {
                Some(_) => Screened::NotReached(SetupFailure::Voicemail),
                None => Screened::Person,
            });
        }
        self.amd_event(now, AmdEvent::Words(text))
    }

    /// A steady tone (a machine's beep, or the network's own tones).
    pub fn tone(&mut self, now: Millis, hz: f32) -> Screened {
        if self.machine_by_shape.is_some() && self.decision.is_none() {
            let progress = AmdConfig::default();
            return if (hz - progress.progress_tone_hz).abs() <= progress.progress_tone_tolerance_hz
            {
                Screened::Undecided
            } else {
                // A long greeting, then a beep: a machine about to record.
                self.decide(Screened::NotReached(SetupFailure::Voicemail))
            };
        }
        self.amd_event(now, AmdEvent::Tone { at_ms: now.0, hz })
    }

    /// The screen's timer fired; it re-arms itself while undecided.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Output>) -> Screened {
        let s = match self.machine_by_shape {
            // The words never came (a greeting that does not stop).
            Some(at) if now.0 >= at.0 + WORDS_WAIT_MS => {
                self.decide(Screened::NotReached(SetupFailure::Voicemail))
            }
            Some(_) => Screened::Undecided,
            None => self.amd_event(now, AmdEvent::Tick),
        };
        if s == Screened::Undecided && self.decision.is_none() {
            out.push(Output::SetTimer {
                at: now.plus(TICK_MS),
            });
        }
        s
    }

    /// A key was pressed: only a person does that.
    pub fn digit(&mut self) -> Screened {
        self.decide(Screened::Person)
    }

    fn amd_event(&mut self, now: Millis, event: AmdEvent<'_>) -> Screened {
        if self.decision.is_some() {
            return Screened::Undecided;
        }
        match self.amd.handle(now.0, event) {
            // A long greeting is a machine only once its words say nothing
            // of concern (see `words`).
            Some(Verdict {
                decision: Decision::Machine,
                cause: Cause::LongGreeting { .. },
                ..
            }) => {
                self.machine_by_shape = Some(now);
                Screened::Undecided
            }
            Some(v) => self.decide(screened(v)),
            None => Screened::Undecided,
        }
    }

    fn decide(&mut self, s: Screened) -> Screened {
        if self.decision.is_some() {
            return Screened::Undecided;
        }
        self.decision = Some(s);
        s
    }
}

/// Words that would escalate a reply: whoever says them is a person who
/// needs the call.
fn of_concern(text: &str, lang: crate::Lang) -> bool {
    Classifier::shared()
        .assess(&Utterance::new(text).lang(lang))
        .level
        >= Level::Urgent
}

fn screened(v: Verdict) -> Screened {
    if v.proceed_as_person() {
        Screened::Person
    } else {
        Screened::NotReached(SetupFailure::Voicemail)
    }
}

/// What a carrier's recording means for the attempt. "Please hold" is not
/// an outcome: the callee may still answer.
pub fn failure_of(kind: AnnouncementKind) -> Option<SetupFailure> {
    Some(match kind {
        AnnouncementKind::SwitchedOff
        | AnnouncementKind::Unreachable
        | AnnouncementKind::Suspended => SetupFailure::SwitchedOff,
        AnnouncementKind::Busy => SetupFailure::Busy,
        AnnouncementKind::Vacant => SetupFailure::InvalidNumber,
        AnnouncementKind::NoAnswer => SetupFailure::NoAnswer,
        AnnouncementKind::Hold => return None,
    })
}
