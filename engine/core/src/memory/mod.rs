//! What a check-in remembers of an elder: open concerns, followed up on the
//! next calls until they are better.
//!
//! A watch- or urgent-level finding of a call becomes a concern of the
//! elder (its category, the elder's own words naming what is wrong, the
//! date). The next check-ins ask about the most important open concerns
//! ([`follow_ups`], [`question`]), read the answer as better, the same,
//! worse or unclear ([`answer::classify`]), and decide ([`after_answer`]):
//! better closes the concern, worse or the same on three calls running
//! raises the level with the history as the reason, anything else keeps it
//! open. Nothing is dropped silently, and nothing is ever spoken from memory
//! that the elder did not say: a concern whose words fit no template is
//! asked about in its category's general words.
//!
//! Plain functions over values: the store keeps concerns, the session asks.

pub mod answer;
mod slot;
mod template;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::distress::{Category, Reason};
use crate::lang::Lang;
use crate::level::Level;

pub use answer::Change;
pub use template::question;

/// At most this many concerns are asked about in one call.
pub const MAX_FOLLOW_UPS: usize = 2;
/// The same answer on this many calls running raises the level.
pub const SAME_CALLS_TO_RAISE: usize = 3;

/// One thing an elder said was wrong, and what became of it call by call.
/// Its `Debug` leaves the elder's words (the slot) out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concern {
    pub category: Category,
    /// The elder's own words naming what is wrong ("膝盖", "knee"), when they
    /// fit the category's template; taken from the finding's evidence only.
    pub slot: Option<String>,
    pub level: Level,
    /// Oldest first: when it was raised, and every answer since.
    pub history: Vec<Mention>,
}

/// One call's word on a concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    pub date: NaiveDate,
    pub change: Change,
}

impl std::fmt::Debug for Concern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Concern")
            .field("category", &self.category)
            .field("has_slot", &self.slot.is_some())
            .field("level", &self.level)
            .field("history", &self.history)
            .finish()
    }
}

impl Concern {
    /// When the concern was first raised.
    pub fn since(&self) -> NaiveDate {
        self.history.first().map_or(NaiveDate::MIN, |m| m.date)
    }

    /// When it was last spoken of.
    pub fn last(&self) -> NaiveDate {
        self.history.last().map_or(NaiveDate::MIN, |m| m.date)
    }
}

/// Categories worth asking about the next day: how the elder is, not what
/// happened to the call (no answer, silence, a dropped line) and not the
/// emergencies, which an operator handles at once.
pub fn remembered(category: Category) -> bool {
    use Category::*;
    matches!(
        category,
        Pain | Illness
            | Sleep
            | Appetite
            | NotEating
            | Mood
            | Grief
            | Dizziness
            | Mobility
            | Medication
            | Cold
            | Health
            | Memory
            | Household
            | Carer
            | Hopelessness
    )
}

/// The concerns a reply's findings raise: one per category, watch or urgent
/// level, with the elder's words for the template when they fit. `text` is
/// the reply the findings' spans point into: what hurts is looked for in the
/// clause around the finding ("my knee hurts" finds "hurts", the clause
/// names the knee).
pub fn concerns_from(reasons: &[Reason], text: &str, lang: Lang, date: NaiveDate) -> Vec<Concern> {
    let mut out: Vec<Concern> = Vec::new();
    for r in reasons {
        if !(r.level == Level::Watch || r.level == Level::Urgent) || !remembered(r.category) {
            continue;
        }
        let slot = slot::of(r.category, clause(text, &r.span), lang);
        match out.iter_mut().find(|c| c.category == r.category) {
            Some(c) => {
                c.level = c.level.max(r.level);
                if c.slot.is_none() {
                    c.slot = slot;
                }
            }
            None => out.push(Concern {
                category: r.category,
                slot,
                level: r.level,
                history: vec![Mention {
                    date,
                    change: Change::New,
                }],
            }),
        }
    }
    out
}

/// The clause of `text` holding `span`: up to the punctuation either side.
/// The whole text when the span does not fall inside it.
fn clause<'a>(text: &'a str, span: &std::ops::Range<usize>) -> &'a str {
    if span.end > text.len()
        || !text.is_char_boundary(span.start)
        || !text.is_char_boundary(span.end)
    {
        return text;
    }
    let stop = |c: char| "，。！？；,.!?;\n".contains(c);
    let start = text[..span.start].rfind(stop).map_or(0, |i| {
        i + text[i..].chars().next().map_or(1, char::len_utf8)
    });
    let end = text[span.end..]
        .find(stop)
        .map_or(text.len(), |i| span.end + i);
    &text[start..end]
}

/// How a new finding meets the elder's open concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Nothing like it is open: a new concern.
    Open,
    /// The open concern at this index is mentioned again, at this level.
    Again { index: usize, change: Change },
}

/// A finding of the same category (and the same words, when both have
/// them) is the open concern said again, worse if its level is higher,
/// never a second concern beside it.
pub fn merge(open: &[Concern], found: &Concern) -> Merge {
    let same = |c: &Concern| {
        c.category == found.category
            && match (&c.slot, &found.slot) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    };
    match open.iter().position(same) {
        Some(index) => Merge::Again {
            index,
            change: if found.level > open[index].level {
                Change::Worse
            } else {
                Change::Same
            },
        },
        None => Merge::Open,
    }
}

/// The open concerns to ask about today, by index: at most
/// [`MAX_FOLLOW_UPS`], the most severe first and, among equals, the oldest;
/// none raised today (the elder has just said it).
pub fn follow_ups(open: &[Concern], today: NaiveDate) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..open.len())
        .filter(|&i| open[i].since() < today && open[i].last() < today)
        .collect();
    idx.sort_by(|&a, &b| {
        open[b]
            .level
            .cmp(&open[a].level)
            .then(open[a].since().cmp(&open[b].since()))
    });
    idx.truncate(MAX_FOLLOW_UPS);
    idx
}

/// What to do with a concern after today's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Better: the concern is closed.
    Close,
    /// Still open, nothing more to do today.
    Keep,
    /// Worse, or the same on [`SAME_CALLS_TO_RAISE`] calls running: raise
    /// the call to this level, with the history as the reason.
    Raise { level: Level, reason: String },
}

/// Decide on a concern given today's answer. `c` is the concern before the
/// answer is added to its history.
pub fn after_answer(c: &Concern, change: Change, today: NaiveDate, lang: Lang) -> Decision {
    match change {
        Change::Better => Decision::Close,
        Change::Unclear | Change::New => Decision::Keep,
        Change::Worse => Decision::Raise {
            level: Level::Urgent.max(c.level),
            reason: template::history_reason(c, today, lang, true),
        },
        Change::Same => {
            // Calls running on which it was raised or said to be the same.
            let running = c
                .history
                .iter()
                .rev()
                .take_while(|m| matches!(m.change, Change::New | Change::Same))
                .count()
                + 1;
            if running >= SAME_CALLS_TO_RAISE {
                Decision::Raise {
                    level: Level::Urgent.max(c.level),
                    reason: template::history_reason(c, today, lang, false),
                }
            } else {
                Decision::Keep
            }
        }
    }
}

#[cfg(test)]
mod tests;
