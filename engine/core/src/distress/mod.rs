//! Distress classifier: what an elder said (and how the call went) → a level
//! with reasons an operator can read in two seconds.
//!
//! Pure and I/O-free. The lexicons in `engine/core/data/distress/*.rules` are
//! embedded at build time and parsed once; see `docs/distress.md` for the
//! levels, categories and how to extend them.
//!
//! # Using it
//!
//! ```
//! use voicecare_core::distress::{Classifier, Lang, Utterance};
//! use voicecare_core::Level;
//!
//! let c = Classifier::shared();
//! let a = c.assess(&Utterance::new("I fell this morning and I can't get up").lang(Lang::En));
//! assert_eq!(a.level, Level::Emergency);
//! assert_eq!(a.reasons[0].evidence, "can't get up");
//! // Byte offsets into the original text, for highlighting.
//! assert_eq!(&"I fell this morning and I can't get up"[a.reasons[0].span.clone()], "can't get up");
//! ```
//!
//! - Call engine: [`Classifier::assess`] per recognised utterance, passing the
//!   recogniser's confidence; then [`assess_call`] with the utterances'
//!   assessments and the [`CallSignals`] (no answer, silence, help key, ...).
//! - IVR flows: branch on [`Assessment::level`]; when
//!   [`Assessment::needs_confirmation`] is set (the finding rests on a
//!   sound-alike match or a low-confidence transcript) ask the elder to confirm.
//! - Storage: [`Assessment`] serialises to the JSON the operator console reads
//!   (`level`, `categories`, `reasons[{category, evidence, rule, span, ...}]`).
//! - Trends: [`apply_trend`] raises the level from the elder's recent history,
//!   which the caller loads and passes in.

mod call;
pub mod eval;
mod lexicon;
mod matcher;
pub(crate) mod phonetic;
mod text;
mod trend;

pub use call::{CallSignals, assess_call};
pub use lexicon::LexiconError;
pub use trend::{PastCall, apply_trend};

use crate::Level;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::LazyLock;

/// The embedded lexicons: (file name for errors, language, contents).
pub const LEXICON_FILES: [(&str, Lang, &str); 2] = [
    (
        "engine/core/data/distress/en.rules",
        Lang::En,
        include_str!("../../data/distress/en.rules"),
    ),
    (
        "engine/core/data/distress/zh.rules",
        Lang::Zh,
        include_str!("../../data/distress/zh.rules"),
    ),
];

pub use crate::Lang;

macro_rules! categories {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// What a finding is about. Serialised in snake_case.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Category { $($variant),* }

        impl Category {
            pub const ALL: &[Category] = &[$(Category::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Category::$variant => $name),* }
            }
        }

        impl FromStr for Category {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Category::$variant),)*
                    other => Err(format!("unknown category {other:?}")),
                }
            }
        }
    };
}

categories! {
    Fall => "fall",
    Chest => "chest",
    Breathing => "breathing",
    Stroke => "stroke",
    Bleeding => "bleeding",
    Unresponsive => "unresponsive",
    Overdose => "overdose",
    SelfHarm => "self_harm",
    Fire => "fire",
    Gas => "gas",
    Intruder => "intruder",
    HelpRequest => "help_request",
    Illness => "illness",
    NotEating => "not_eating",
    Medication => "medication",
    Dizziness => "dizziness",
    Confusion => "confusion",
    Cold => "cold",
    Carer => "carer",
    Abuse => "abuse",
    Hopelessness => "hopelessness",
    Household => "household",
    Sleep => "sleep",
    Pain => "pain",
    Appetite => "appetite",
    Mood => "mood",
    Grief => "grief",
    Memory => "memory",
    Health => "health",
    Mobility => "mobility",
    NoAnswer => "no_answer",
    Silent => "silent",
    HelpKey => "help_key",
    Dropped => "dropped",
    NotUnderstood => "not_understood",
    Trend => "trend",
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the elder said, as the recogniser heard it. Its `Debug` leaves
/// the words out: they are health data and must not reach a log.
#[derive(Clone, Copy)]
pub struct Utterance<'a> {
    pub text: &'a str,
    /// A hint. `En` reads English only; `Zh` and `None` read both, because
    /// Mandarin speakers mix in English words ("call 120", "OK").
    pub lang: Option<Lang>,
    /// The recogniser's confidence in 0..=1, if it gives one.
    pub asr_confidence: Option<f32>,
}

impl<'a> Utterance<'a> {
    pub fn new(text: &'a str) -> Self {
        Utterance {
            text,
            lang: None,
            asr_confidence: None,
        }
    }
    pub fn lang(mut self, lang: Lang) -> Self {
        self.lang = Some(lang);
        self
    }
    pub fn asr_confidence(mut self, c: f32) -> Self {
        self.asr_confidence = Some(c);
        self
    }
}

/// Why a level was given: one finding, quoting the words that triggered it.
/// Its `Debug` (and so an [`Assessment`]'s) leaves the elder's words out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub category: Category,
    /// The level this finding alone gives, after negation, time and subject.
    pub level: Level,
    /// The words as the elder said them (a slice of the original text).
    pub evidence: String,
    /// Rule id, `<lang>.<category>.<name>`, as in the lexicon files.
    pub rule: String,
    /// Byte offsets of `evidence` in the original text.
    pub span: Range<usize>,
    /// Matched by sound only (a likely mishearing): confirm with the elder.
    pub phonetic: bool,
    /// With `phonetic`: the lexicon phrase the words sound like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sounds_like: Option<String>,
    /// With a Mandarin sound match: the weighted syllable distance between the
    /// words heard and `sounds_like`, in syllables (0.3 = one near-homophone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    /// One line for the operator: label, quoted evidence, and any qualifier.
    pub summary: String,
}

impl std::fmt::Debug for Utterance<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Utterance")
            .field("text_chars", &self.text.chars().count())
            .field("lang", &self.lang)
            .field("asr_confidence", &self.asr_confidence)
            .finish()
    }
}

impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The rule, the lexicon phrase and the span say what matched
        // without quoting the elder.
        f.debug_struct("Reason")
            .field("category", &self.category)
            .field("level", &self.level)
            .field("rule", &self.rule)
            .field("span", &self.span)
            .field("phonetic", &self.phonetic)
            .field("sounds_like", &self.sounds_like)
            .field("distance", &self.distance)
            .field("evidence_chars", &self.evidence.chars().count())
            .finish()
    }
}

/// The classifier's decision on an utterance or a whole call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub level: Level,
    /// Distinct categories of the reasons, most severe first.
    pub categories: Vec<Category>,
    /// Every finding, most severe first; the level is the most severe one.
    pub reasons: Vec<Reason>,
    /// 0..=1: severity weighted by how sure the match is. For sorting a queue, not for thresholds.
    pub score: f32,
    /// The level rests on a sound-alike match or a doubtful transcript: ask the elder.
    pub needs_confirmation: bool,
}

impl Assessment {
    /// Nothing of concern.
    pub fn ok() -> Self {
        Assessment {
            level: Level::Ok,
            categories: Vec::new(),
            reasons: Vec::new(),
            score: 0.0,
            needs_confirmation: false,
        }
    }

    /// Builds an assessment from reasons: sorts them, derives level, categories and score.
    pub fn from_reasons(mut reasons: Vec<Reason>, asr_confidence: Option<f32>) -> Self {
        reasons.sort_by(|a, b| {
            b.level
                .cmp(&a.level)
                .then(a.phonetic.cmp(&b.phonetic))
                .then(a.span.start.cmp(&b.span.start))
        });
        let level = reasons.first().map_or(Level::Ok, |r| r.level);
        let mut categories = Vec::new();
        for r in &reasons {
            if !categories.contains(&r.category) {
                categories.push(r.category);
            }
        }
        let conf = asr_confidence.map_or(1.0, |c| c.clamp(0.0, 1.0));
        let score = reasons
            .iter()
            .map(|r| severity_weight(r.level) * if r.phonetic { 0.6 } else { 1.0 })
            .fold(0.0f32, f32::max)
            * (0.5 + 0.5 * conf);
        // An exact finding settles the level unless the same words also read
        // as a sound-alike ("I feel down": low mood, or "fell down"?). So
        // "救命啊，我摔倒了，起步来了" is an emergency on 救命 alone, while a level
        // resting only on sound-alikes is confirmed with the elder.
        let settled = reasons.iter().any(|r| {
            r.level == level
                && !r.phonetic
                && !reasons.iter().any(|p| {
                    p.phonetic
                        && p.level == level
                        && p.span.start < r.span.end
                        && r.span.start < p.span.end
                })
        });
        let needs_confirmation =
            level > Level::Ok && (!settled || (conf < 0.5 && level >= Level::Urgent));
        Assessment {
            level,
            categories,
            reasons,
            score: (score * 1000.0).round() / 1000.0,
            needs_confirmation,
        }
    }
}

fn severity_weight(l: Level) -> f32 {
    match l {
        Level::Ok => 0.0,
        Level::Watch => 0.3,
        Level::Urgent => 0.6,
        Level::Emergency => 1.0,
    }
}

/// Words that must follow a finding in an unfinished reply before it counts
/// (see [`Classifier::assess_unfinished`]).
pub const UNFINISHED_WORDS_AFTER: usize = 2;

/// The distress classifier. Cheap to share: build once, call from any thread.
#[derive(Debug, Clone)]
pub struct Classifier {
    matcher: matcher::Matcher,
}

static SHARED: LazyLock<Classifier> = LazyLock::new(|| {
    Classifier::new().expect("embedded distress lexicon is checked by unit tests")
});

impl Default for Classifier {
    fn default() -> Self {
        Classifier::shared().clone()
    }
}

impl Classifier {
    /// Parses the embedded lexicons. Fails only if a lexicon file is malformed,
    /// which the unit tests catch before a build ships.
    pub fn new() -> Result<Self, LexiconError> {
        Self::from_sources(&LEXICON_FILES)
    }

    /// Builds from lexicon texts other than the embedded ones (tests, tools).
    pub fn from_sources(files: &[(&str, Lang, &str)]) -> Result<Self, LexiconError> {
        let mut lex = lexicon::Lexicon::default();
        for (name, lang, src) in files {
            lex.add_file(name, *lang, src)?;
        }
        Ok(Classifier {
            matcher: matcher::Matcher::new(lex),
        })
    }

    /// The process-wide classifier over the embedded lexicons.
    pub fn shared() -> &'static Classifier {
        &SHARED
    }

    /// Assesses one utterance.
    pub fn assess(&self, u: &Utterance<'_>) -> Assessment {
        let reasons = self.matcher.reasons(u.text, u.lang);
        Assessment::from_reasons(reasons, u.asr_confidence)
    }

    /// Assesses words heard while the speaker is still talking (a transcript
    /// of the reply so far). A finding counts only once at least
    /// [`UNFINISHED_WORDS_AFTER`] more words (Chinese: characters) follow it:
    /// the words after a finding can still undo it ("I fell … asleep", "I
    /// fell … last year"), and the last word of audio cut mid-speech is often
    /// misheard. The rest is read as in [`Classifier::assess`].
    pub fn assess_unfinished(&self, u: &Utterance<'_>) -> Assessment {
        let words = self.matcher.word_starts(u.text);
        let reasons = self
            .matcher
            .reasons(u.text, u.lang)
            .into_iter()
            .filter(|r| {
                words.iter().filter(|&&w| w >= r.span.end).count() >= UNFINISHED_WORDS_AFTER
            })
            .collect();
        Assessment::from_reasons(reasons, u.asr_confidence)
    }

    /// The plain keyword baseline the evaluation compares against: any
    /// urgent or emergency keyword anywhere in the text → emergency, else ok.
    /// No negation, time, subject, masks or sound-alikes.
    pub fn keyword_baseline(&self, text: &str, lang: Option<Lang>) -> Level {
        self.matcher.keyword_baseline(text, lang)
    }
}

#[cfg(test)]
mod tests;
