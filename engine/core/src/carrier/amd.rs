//! Answering-machine detection: a person or a machine picked up?
//!
//! [`Amd`] is a state machine fed, from the moment of the answer, the times
//! speech started and stopped (the endpointer), beeps (the tone detector in
//! `voicecare_media::tone`) and transcripts when they come; it returns a
//! [`Verdict`] as soon as it is sure, and at the latest after
//! [`AmdConfig::max_analysis_ms`].
//!
//! What it looks at, in the order it trusts it:
//! 1. **A beep**: one steady tone of at least 150 ms (the detector's
//!    minimum) is a machine about to record. Tones within
//!    [`AmdConfig::progress_tone_tolerance_hz`] of 450 Hz are not counted:
//!    that is the Chinese network's ringback, busy and call-waiting tone.
//! 2. **Machine words** in a transcript: 请在嘀声后留言, 不方便接听, "leave a
//!    message", "after the tone", "not available", ... ([`machine_words`]).
//! 3. **The greeting's shape**: a person says a short 喂？/"hello" and waits
//!    for the caller; a machine talks on. Speech adding up to
//!    [`AmdConfig::long_greeting_ms`] is a machine; speech of at most
//!    [`AmdConfig::short_greeting_ms`] followed by
//!    [`AmdConfig::after_greeting_silence_ms`] of silence is a person.
//!
//! Everything else is [`Decision::Uncertain`], which the caller treats as a
//! person: the flow's first question settles it. That is deliberate. Taking
//! an elder for a machine hangs up on them; taking a machine for a person
//! costs one unanswered question. So the thresholds lean towards the person:
//! - `short_greeting_ms` 2000: 喂？, "hello?", 你好哪位 and "hello, who is
//!   this?" take 0.3–1.5 s; a name added ("喂，我是老王") stays under 2 s.
//! - `after_greeting_silence_ms` 1000: a person who said 喂 waits well over a
//!   second for the caller; a machine's pause between greeting and beep, or
//!   between its sentences, is shorter (Asterisk's AMD uses 800 ms; we wait a
//!   little longer so that a beep 0.6–0.9 s after the greeting still wins).
//! - `long_greeting_ms` 3500: machine greetings run 3–10 s. Asterisk's AMD
//!   takes anything over 1.5 s for a machine, which misjudges elders who
//!   answer with a sentence (喂，你好，我是张阿姨，你是哪位啊？ is about 3 s);
//!   between 2 and 3.5 s of speech followed by silence the answer is
//!   `Uncertain`.
//! - `initial_silence_ms` 4000: nobody spoke. Some people wait for the
//!   caller; some machines record straight away. `Uncertain`.
//! - `max_analysis_ms` 8000: still talking or undecided: `Uncertain`.
//!
//! Pure: no clock and no I/O; the caller passes the call's time in ms.

use super::phrase::{Heard, Phrase};
use crate::Lang;
use std::sync::LazyLock;

/// Thresholds, in ms from the answer; see the module documentation for why.
#[derive(Debug, Clone, PartialEq)]
pub struct AmdConfig {
    pub short_greeting_ms: u64,
    pub after_greeting_silence_ms: u64,
    pub long_greeting_ms: u64,
    pub initial_silence_ms: u64,
    pub max_analysis_ms: u64,
    /// The network's own call-progress tone, never a machine's beep.
    pub progress_tone_hz: f32,
    pub progress_tone_tolerance_hz: f32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            short_greeting_ms: 2000,
            after_greeting_silence_ms: 1000,
            long_greeting_ms: 3500,
            initial_silence_ms: 4000,
            max_analysis_ms: 8000,
            progress_tone_hz: 450.0,
            progress_tone_tolerance_hz: 25.0,
        }
    }
}

/// What the call's hearing noticed. Times are on the same clock as `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AmdEvent<'a> {
    /// Speech began (the endpointer's `SpeechStarted`, or speech resuming
    /// after a pause it reported).
    SpeechStarted { at_ms: u64 },
    /// Speech stopped at `at_ms` (the last speech frame; the endpointer's
    /// `Paused` or `UtteranceEnded`, minus its tail).
    SpeechEnded { at_ms: u64 },
    /// A steady tone of at least 150 ms (`voicecare_media::ToneEvent::Started`).
    Tone { at_ms: u64, hz: f32 },
    /// A transcript of what was said since the answer (any part of it).
    Words(&'a str),
    /// Time passed; nothing else happened.
    Tick,
}

/// Person, machine, or not sure (treated as a person by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Person,
    Machine,
    Uncertain,
}

/// Why the decision was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// A beep at this frequency.
    Beep { hz: f32 },
    /// A phrase of [`machine_words`]: the table's words, not the transcript's.
    MachineWords { phrase: &'static str },
    /// This much speech, still going or not: a machine's greeting.
    LongGreeting { speech_ms: u64 },
    /// This much speech, then a wait: a person.
    ShortGreeting { speech_ms: u64 },
    /// More than a hello, less than a machine, then a wait.
    MediumGreeting { speech_ms: u64 },
    /// Nobody spoke.
    Silence,
    /// Time was up.
    TimeUp { speech_ms: u64 },
}

/// The answer, and when (ms after the answer) it was reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    pub cause: Cause,
    pub after_ms: u64,
}

impl Verdict {
    /// Whether the call should go on as with a person (Person or Uncertain).
    pub fn proceed_as_person(&self) -> bool {
        self.decision != Decision::Machine
    }
}

/// The detector for one call; see the module documentation.
#[derive(Debug, Clone)]
pub struct Amd {
    cfg: AmdConfig,
    answered_ms: u64,
    speaking_since: Option<u64>,
    spoke: bool,
    speech_ms: u64,
    last_end_ms: Option<u64>,
    verdict: Option<Verdict>,
}

impl Amd {
    /// A detector for a call answered at `answered_ms`.
    pub fn new(cfg: AmdConfig, answered_ms: u64) -> Self {
        Self {
            cfg,
            answered_ms,
            speaking_since: None,
            spoke: false,
            speech_ms: 0,
            last_end_ms: None,
            verdict: None,
        }
    }

    pub fn config(&self) -> &AmdConfig {
        &self.cfg
    }

    /// The verdict, once reached.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Speech heard since the answer, up to `now_ms`.
    pub fn speech_ms(&self, now_ms: u64) -> u64 {
        self.speech_ms + self.speaking_since.map_or(0, |s| now_ms.saturating_sub(s))
    }

    /// Feed an event at `now_ms`. Returns the verdict the first time one is
    /// reached, `None` before and after (see [`Amd::verdict`]).
    pub fn handle(&mut self, now_ms: u64, event: AmdEvent<'_>) -> Option<Verdict> {
        if self.verdict.is_some() {
            return None;
        }
        let cause = self.observe(now_ms, event).or_else(|| self.timing(now_ms));
        let (decision, cause) = cause?;
        let v = Verdict {
            decision,
            cause,
            after_ms: now_ms.saturating_sub(self.answered_ms),
        };
        self.verdict = Some(v);
        Some(v)
    }

    fn observe(&mut self, now_ms: u64, event: AmdEvent<'_>) -> Option<(Decision, Cause)> {
        match event {
            AmdEvent::SpeechStarted { at_ms } => {
                if self.speaking_since.is_none() {
                    self.speaking_since = Some(at_ms.min(now_ms));
                    self.spoke = true;
                }
                None
            }
            AmdEvent::SpeechEnded { at_ms } => {
                if let Some(s) = self.speaking_since.take() {
                    let end = at_ms.max(s).min(now_ms);
                    self.speech_ms += end - s;
                    self.last_end_ms = Some(end);
                }
                None
            }
            AmdEvent::Tone { hz, .. } => {
                let progress =
                    (hz - self.cfg.progress_tone_hz).abs() <= self.cfg.progress_tone_tolerance_hz;
                (!progress).then_some((Decision::Machine, Cause::Beep { hz }))
            }
            AmdEvent::Words(text) => machine_words(text)
                .map(|phrase| (Decision::Machine, Cause::MachineWords { phrase })),
            AmdEvent::Tick => None,
        }
    }

    fn timing(&self, now_ms: u64) -> Option<(Decision, Cause)> {
        let c = &self.cfg;
        let speech_ms = self.speech_ms(now_ms);
        let since_answer = now_ms.saturating_sub(self.answered_ms);
        if speech_ms >= c.long_greeting_ms {
            return Some((Decision::Machine, Cause::LongGreeting { speech_ms }));
        }
        if self.speaking_since.is_none()
            && let Some(end) = self.last_end_ms
            && now_ms.saturating_sub(end) >= c.after_greeting_silence_ms
        {
            return Some(if speech_ms <= c.short_greeting_ms {
                (Decision::Person, Cause::ShortGreeting { speech_ms })
            } else {
                (Decision::Uncertain, Cause::MediumGreeting { speech_ms })
            });
        }
        if !self.spoke && since_answer >= c.initial_silence_ms {
            return Some((Decision::Uncertain, Cause::Silence));
        }
        if since_answer >= c.max_analysis_ms {
            return Some((Decision::Uncertain, Cause::TimeUp { speech_ms }));
        }
        None
    }
}

/// What answering machines say and people answering a call do not.
const MACHINE_WORDS: &[(&str, Lang)] = &[
    ("请留言", Lang::Zh),
    ("留言", Lang::Zh),
    ("嘀声后", Lang::Zh),
    ("提示音后", Lang::Zh),
    ("不方便接听", Lang::Zh),
    ("无法接听", Lang::Zh),
    ("不能接听", Lang::Zh),
    ("语音信箱", Lang::Zh),
    ("留下您的", Lang::Zh),
    ("leave a/your message/name", Lang::En),
    ("after the tone/beep", Lang::En),
    ("at the tone/beep", Lang::En),
    ("not available", Lang::En),
    ("cant/cannot come to the phone", Lang::En),
    ("cant/cannot take your call", Lang::En),
    ("unable to take your call", Lang::En),
    ("voicemail", Lang::En),
    ("voice mail", Lang::En),
    ("you have reached", Lang::En),
    ("youve reached", Lang::En),
    ("record your message", Lang::En),
    ("missed your call", Lang::En),
];

static MACHINE: LazyLock<Vec<Phrase>> = LazyLock::new(|| {
    MACHINE_WORDS
        .iter()
        .map(|&(t, l)| Phrase::new(t, l))
        .collect()
});

/// The first machine phrase heard in `transcript` (by sound in Mandarin).
pub fn machine_words(transcript: &str) -> Option<&'static str> {
    let heard = Heard::new(transcript);
    MACHINE
        .iter()
        .find(|p| heard.find(p).is_some())
        .map(|p| p.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd() -> Amd {
        Amd::new(AmdConfig::default(), 10_000)
    }

    /// Feed (time after answer, event) pairs with 20 ms ticks between them
    /// and return the verdict.
    fn run(events: &[(u64, AmdEvent<'_>)], until: u64) -> Verdict {
        let mut a = amd();
        let mut i = 0;
        let mut t = 0;
        while t <= until {
            while i < events.len() && events[i].0 <= t {
                let ev = match events[i].1 {
                    AmdEvent::SpeechStarted { at_ms } => AmdEvent::SpeechStarted {
                        at_ms: at_ms + 10_000,
                    },
                    AmdEvent::SpeechEnded { at_ms } => AmdEvent::SpeechEnded {
                        at_ms: at_ms + 10_000,
                    },
                    e => e,
                };
                if let Some(v) = a.handle(10_000 + t, ev) {
                    return v;
                }
                i += 1;
            }
            if let Some(v) = a.handle(10_000 + t, AmdEvent::Tick) {
                return v;
            }
            t += 20;
        }
        panic!("no verdict by {until} ms");
    }

    #[test]
    fn a_short_hello_then_waiting_is_a_person() {
        let v = run(
            &[
                (300, AmdEvent::SpeechStarted { at_ms: 300 }),
                (1100, AmdEvent::SpeechEnded { at_ms: 800 }),
            ],
            6000,
        );
        assert_eq!(v.decision, Decision::Person);
        assert_eq!(v.cause, Cause::ShortGreeting { speech_ms: 500 });
        assert_eq!(v.after_ms, 1800);
        assert!(v.proceed_as_person());
    }

    #[test]
    fn hello_twice_with_a_short_gap_is_still_a_person() {
        let v = run(
            &[
                (300, AmdEvent::SpeechStarted { at_ms: 300 }),
                (1000, AmdEvent::SpeechEnded { at_ms: 700 }),
                (1500, AmdEvent::SpeechStarted { at_ms: 1500 }),
                (2200, AmdEvent::SpeechEnded { at_ms: 1900 }),
            ],
            6000,
        );
        assert_eq!(v.decision, Decision::Person);
        assert_eq!(v.after_ms, 2900);
    }

    #[test]
    fn a_long_greeting_is_a_machine_while_it_is_still_talking() {
        let v = run(&[(500, AmdEvent::SpeechStarted { at_ms: 500 })], 9000);
        assert_eq!(v.decision, Decision::Machine);
        assert_eq!(v.cause, Cause::LongGreeting { speech_ms: 3500 });
        assert_eq!(v.after_ms, 4000);
    }

    #[test]
    fn a_beep_is_a_machine_but_the_networks_450_hz_tone_is_not() {
        let v = run(
            &[
                (
                    200,
                    AmdEvent::Tone {
                        at_ms: 50,
                        hz: 450.0,
                    },
                ),
                (500, AmdEvent::SpeechStarted { at_ms: 500 }),
                (1800, AmdEvent::SpeechEnded { at_ms: 1700 }),
                (
                    2200,
                    AmdEvent::Tone {
                        at_ms: 2050,
                        hz: 1000.0,
                    },
                ),
            ],
            6000,
        );
        assert_eq!(v.decision, Decision::Machine);
        assert_eq!(v.cause, Cause::Beep { hz: 1000.0 });
        assert_eq!(v.after_ms, 2200);
    }

    #[test]
    fn machine_words_decide_before_the_greeting_ends() {
        let v = run(
            &[
                (400, AmdEvent::SpeechStarted { at_ms: 400 }),
                (2000, AmdEvent::Words("您好，我现在不方便接听")),
            ],
            6000,
        );
        assert_eq!(v.decision, Decision::Machine);
        assert_eq!(
            v.cause,
            Cause::MachineWords {
                phrase: "不方便接听"
            }
        );
        let v = run(
            &[
                (400, AmdEvent::SpeechStarted { at_ms: 400 }),
                (2000, AmdEvent::Words("Hi, you've reached Mary")),
            ],
            6000,
        );
        assert_eq!(
            v.cause,
            Cause::MachineWords {
                phrase: "youve reached"
            }
        );
    }

    #[test]
    fn a_sentence_then_waiting_is_uncertain_and_silence_is_uncertain() {
        let v = run(
            &[
                (300, AmdEvent::SpeechStarted { at_ms: 300 }),
                (3300, AmdEvent::SpeechEnded { at_ms: 3000 }),
            ],
            8000,
        );
        assert_eq!(v.decision, Decision::Uncertain);
        assert_eq!(v.cause, Cause::MediumGreeting { speech_ms: 2700 });
        assert!(v.proceed_as_person());
        let v = run(&[], 8000);
        assert_eq!((v.decision, v.cause), (Decision::Uncertain, Cause::Silence));
        assert_eq!(v.after_ms, 4000);
    }

    #[test]
    fn the_verdict_is_given_once() {
        let mut a = amd();
        assert!(
            a.handle(
                10_100,
                AmdEvent::Tone {
                    at_ms: 10_000,
                    hz: 1000.0
                }
            )
            .is_some()
        );
        assert!(a.handle(10_200, AmdEvent::Tick).is_none());
        assert_eq!(a.verdict().unwrap().decision, Decision::Machine);
    }

    #[test]
    fn people_answering_do_not_say_machine_words() {
        for t in [
            "喂？",
            "喂，你好，哪位？",
            "你好，我是老王",
            "Hello?",
            "Yes, hello, who is this?",
            "Hi, this is Mary.",
            "喂，你好，我是张阿姨，你是哪位啊？",
        ] {
            assert_eq!(machine_words(t), None, "{t}");
        }
        for t in [
            "请在嘀声后留言",
            "您好，我现在不方便接听电话",
            "Please leave a message after the tone.",
            "I'm not available right now",
            "We can't come to the phone right now",
        ] {
            assert!(machine_words(t).is_some(), "{t}");
        }
    }
}
