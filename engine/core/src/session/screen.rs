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
use crate::carrier::amd::{Amd, AmdConfig, AmdEvent, Verdict};
use crate::carrier::announcement::{self, AnnouncementKind};
use crate::flow::Millis;

/// How often the detector is given the time while nothing happens.
const TICK_MS: u64 = 250;
/// Silence that ends a piece of the greeting: short, so a "喂？" is read
/// while the person waits.
const END_SILENCE_MS: u32 = 500;

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
    decided: bool,
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
            decided: false,
        }
    }

    pub fn is_deciding(&self) -> bool {
        !self.decided
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

    /// The words of a piece of the greeting.
    pub fn words(&mut self, now: Millis, text: &str) -> Screened {
        if self.decided {
            return Screened::Undecided;
        }
        if let Some(a) = announcement::classify(text)
            && let Some(f) = failure_of(a.kind)
        {
            self.decided = true;
            return Screened::NotReached(f);
        }
        self.amd_event(now, AmdEvent::Words(text))
    }

    /// A steady tone (a machine's beep, or the network's own tones).
    pub fn tone(&mut self, now: Millis, hz: f32) -> Screened {
        self.amd_event(now, AmdEvent::Tone { at_ms: now.0, hz })
    }

    /// The screen's timer fired; it re-arms itself while undecided.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Output>) -> Screened {
        let s = self.amd_event(now, AmdEvent::Tick);
        if s == Screened::Undecided && !self.decided {
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
        if self.decided {
            return Screened::Undecided;
        }
        match self.amd.handle(now.0, event) {
            Some(v) => self.decide(screened(v)),
            None => Screened::Undecided,
        }
    }

    fn decide(&mut self, s: Screened) -> Screened {
        if self.decided {
            return Screened::Undecided;
        }
        self.decided = true;
        s
    }
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
