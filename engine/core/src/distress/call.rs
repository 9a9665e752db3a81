//! Call-level signals that are not words: how the call went.

use super::{Assessment, Category, Reason};
use crate::Level;
use serde::{Deserialize, Serialize};

/// What the call engine observed about a call, besides the words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallSignals {
    /// Every attempt of the retry ladder went unanswered.
    pub no_answer_after_ladder: bool,
    /// Picked up but said nothing the recogniser could use.
    pub answered_silent: bool,
    /// The elder pressed the "I need help" key.
    pub help_key_pressed: bool,
    /// The line dropped mid-sentence right after a distress phrase.
    pub dropped_after_distress: bool,
    /// How many times the elder said they did not understand.
    pub not_understood_count: u32,
    /// The elder did not know who was calling or why.
    pub confused_about_caller: bool,
}

/// Not understanding twice is worth noting; three times in one call is confusion.
const NOT_UNDERSTOOD_WATCH: u32 = 2;
const NOT_UNDERSTOOD_URGENT: u32 = 3;

/// Combines the assessments of a call's utterances with its call-level signals.
/// The most severe finding wins and every reason is kept.
pub fn assess_call(utterances: &[Assessment], signals: &CallSignals) -> Assessment {
    let mut reasons: Vec<Reason> = utterances
        .iter()
        .flat_map(|a| a.reasons.iter().cloned())
        .collect();
    let mut signal = |on: bool, level: Level, category: Category, rule: &str, summary: &str| {
        if on {
            reasons.push(Reason {
                category,
                level,
                evidence: String::new(),
                rule: format!("call.{rule}"),
                span: 0..0,
                phonetic: false,
                sounds_like: None,
                distance: None,
                summary: summary.to_string(),
            });
        }
    };
    signal(
        signals.help_key_pressed,
        Level::Emergency,
        Category::HelpKey,
        "help_key",
        "pressed the help key",
    );
    signal(
        signals.dropped_after_distress,
        Level::Emergency,
        Category::Dropped,
        "dropped_after_distress",
        "call dropped right after a distress phrase",
    );
    signal(
        signals.no_answer_after_ladder,
        Level::Urgent,
        Category::NoAnswer,
        "no_answer",
        "no answer after every retry",
    );
    signal(
        signals.confused_about_caller,
        Level::Urgent,
        Category::Confusion,
        "confused_about_caller",
        "did not know who was calling",
    );
    let nu = signals.not_understood_count;
    signal(
        nu >= NOT_UNDERSTOOD_URGENT,
        Level::Urgent,
        Category::NotUnderstood,
        "not_understood",
        &format!("said \u{201c}I don't understand\u{201d} {nu} times"),
    );
    signal(
        (NOT_UNDERSTOOD_WATCH..NOT_UNDERSTOOD_URGENT).contains(&nu),
        Level::Watch,
        Category::NotUnderstood,
        "not_understood",
        &format!("said \u{201c}I don't understand\u{201d} {nu} times"),
    );
    signal(
        signals.answered_silent,
        Level::Watch,
        Category::Silent,
        "answered_silent",
        "answered but stayed silent",
    );
    let mut a = Assessment::from_reasons(reasons, None);
    a.needs_confirmation |= utterances
        .iter()
        .any(|u| u.needs_confirmation && u.level == a.level);
    a.score = a
        .score
        .max(utterances.iter().map(|u| u.score).fold(0.0, f32::max));
    a
}
