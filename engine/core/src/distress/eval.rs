//! Evaluation on labelled sets: confusion matrix, per-level recall and
//! precision, and the release targets.

use super::{Assessment, Lang};
use crate::Level;
use serde::Deserialize;
use std::fmt::Write as _;

/// A release target: of the cases labelled `level`, the share found at that
/// level or above must be at least `min`; for `ok`, the share left at ok or
/// watch (not flagged for a human).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub level: Level,
    pub name: &'static str,
    pub min: f64,
}

/// The release targets, per language: no emergency missed, urgent and watch
/// found, fine replies not flagged.
pub const TARGETS: [Target; 4] = [
    Target {
        level: Level::Emergency,
        name: "emergency recall",
        min: 1.0,
    },
    Target {
        level: Level::Urgent,
        name: "urgent recall",
        min: 0.9,
    },
    Target {
        level: Level::Watch,
        name: "watch recall",
        min: 0.7,
    },
    Target {
        level: Level::Ok,
        name: "fine replies kept",
        min: 0.95,
    },
];

/// One labelled line of `tests/distress/*.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalCase {
    pub id: String,
    pub lang: Option<Lang>,
    pub text: String,
    /// The level a careful human gives this utterance.
    pub level: Level,
    #[serde(default)]
    pub note: String,
}

impl EvalCase {
    /// The text is written as the recogniser misheard it: the note starts
    /// with "asr:" or "误听".
    pub fn misheard(&self) -> bool {
        self.note.starts_with("asr") || self.note.starts_with("误听")
    }
}

/// How matching by sound does on a labelled set: what it finds among the
/// misheard alarms, and what it raises among the fine replies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoundStats {
    /// Cases labelled `ok`.
    pub fine: u32,
    /// Fine replies with a sound-alike among their reasons, at any level.
    pub fine_sound_reason: u32,
    /// Fine replies given a level above ok that rests on sound-alikes alone
    /// (the call would ask the confirming question).
    pub fine_flagged_by_sound: u32,
    /// Misheard cases labelled urgent or emergency.
    pub misheard: u32,
    /// Of those, found at their level or above.
    pub misheard_found: u32,
}

impl SoundStats {
    pub fn add(&mut self, case: &EvalCase, a: &Assessment) {
        if case.level == Level::Ok {
            self.fine += 1;
            self.fine_sound_reason += u32::from(a.reasons.iter().any(|r| r.phonetic));
            let on_sound = a.level > Level::Ok
                && a.reasons
                    .iter()
                    .filter(|r| r.level == a.level)
                    .all(|r| r.phonetic);
            self.fine_flagged_by_sound += u32::from(on_sound);
        }
        if case.misheard() && case.level >= Level::Urgent {
            self.misheard += 1;
            self.misheard_found += u32::from(a.level >= case.level);
        }
    }

    /// Share of fine replies flagged on a sound-alike alone.
    pub fn false_alarm_rate(&self) -> Option<f64> {
        (self.fine > 0).then(|| f64::from(self.fine_flagged_by_sound) / f64::from(self.fine))
    }

    /// Share of misheard urgent and emergency replies found at their level.
    pub fn misheard_recall(&self) -> Option<f64> {
        (self.misheard > 0).then(|| f64::from(self.misheard_found) / f64::from(self.misheard))
    }

    pub fn render(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        format!(
            "sound matching: misheard urgent/emergency found {}/{} ({}); fine replies flagged on a sound-alike alone {}/{} ({}), with any sound-alike reason {}/{}",
            self.misheard_found,
            self.misheard,
            pct(self.misheard_recall()),
            self.fine_flagged_by_sound,
            self.fine,
            pct(self.false_alarm_rate()),
            self.fine_sound_reason,
            self.fine
        )
    }
}

/// Counts of (expected, predicted) levels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    /// `counts[expected][predicted]`, indexed in `Level::ALL` order.
    pub counts: [[u32; 4]; 4],
}

fn idx(l: Level) -> usize {
    Level::ALL.iter().position(|x| *x == l).unwrap_or(0)
}

impl Confusion {
    pub fn add(&mut self, expected: Level, predicted: Level) {
        self.counts[idx(expected)][idx(predicted)] += 1;
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    /// Of the cases labelled `l`, the share predicted `l`. `None` with no such cases.
    pub fn recall(&self, l: Level) -> Option<f64> {
        let row = self.counts[idx(l)];
        let n: u32 = row.iter().sum();
        (n > 0).then(|| f64::from(row[idx(l)]) / f64::from(n))
    }

    /// Of the cases predicted `l`, the share labelled `l`. `None` when nothing was predicted `l`.
    pub fn precision(&self, l: Level) -> Option<f64> {
        let n: u32 = self.counts.iter().map(|r| r[idx(l)]).sum();
        (n > 0).then(|| f64::from(self.counts[idx(l)][idx(l)]) / f64::from(n))
    }

    /// Of the cases labelled at least `min`, the share predicted at least `min`.
    pub fn recall_at_least(&self, min: Level) -> Option<f64> {
        let (mut n, mut hit) = (0, 0);
        for e in Level::ALL.into_iter().filter(|l| *l >= min) {
            for p in Level::ALL {
                let c = self.counts[idx(e)][idx(p)];
                n += c;
                if p >= min {
                    hit += c;
                }
            }
        }
        (n > 0).then(|| f64::from(hit) / f64::from(n))
    }

    /// Of the cases labelled `ok`, the share left at `ok` or `watch` (not escalated to a human today).
    pub fn ok_left_low(&self) -> Option<f64> {
        let row = self.counts[idx(Level::Ok)];
        let n: u32 = row.iter().sum();
        (n > 0).then(|| f64::from(row[0] + row[1]) / f64::from(n))
    }

    /// Of the cases labelled `l`, the share given `l` or more: found at their
    /// level, whether or not a higher one was given.
    pub fn found(&self, l: Level) -> Option<f64> {
        let row = self.counts[idx(l)];
        let n: u32 = row.iter().sum();
        let hit: u32 = row[idx(l)..].iter().sum();
        (n > 0).then(|| f64::from(hit) / f64::from(n))
    }

    /// Each release target with the measured share, in [`TARGETS`] order.
    pub fn against_targets(&self) -> Vec<(Target, Option<f64>)> {
        TARGETS
            .iter()
            .map(|t| {
                let v = match t.level {
                    Level::Ok => self.ok_left_low(),
                    l => self.found(l),
                };
                (*t, v)
            })
            .collect()
    }

    /// The release targets missed, each saying by how much; empty when all
    /// are met. A level with no cases is not a miss.
    pub fn missed_targets(&self) -> Vec<String> {
        self.against_targets()
            .into_iter()
            .filter_map(|(t, v)| {
                let v = v?;
                (v < t.min).then(|| {
                    format!(
                        "{} {:.1}% < {:.0}% (short by {:.1} points)",
                        t.name,
                        v * 100.0,
                        t.min * 100.0,
                        (t.min - v) * 100.0
                    )
                })
            })
            .collect()
    }

    /// A plain-text confusion matrix with recall and precision per level.
    pub fn render(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("    -".to_string(), |v| format!("{:5.1}", v * 100.0));
        let mut s = String::new();
        let _ = writeln!(
            s,
            "expected \\ got   ok watch urgent emergency | recall precision"
        );
        for e in Level::ALL {
            let row = self.counts[idx(e)];
            let _ = writeln!(
                s,
                "{:<15} {:>4} {:>5} {:>6} {:>9} | {:>6} {:>9}",
                e.as_str(),
                row[0],
                row[1],
                row[2],
                row[3],
                pct(self.recall(e)),
                pct(self.precision(e))
            );
        }
        let share = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let _ = writeln!(
            s,
            "found at their level or above: emergency {}  urgent {}  watch {}  fine replies kept (ok/watch) {}  urgent-or-above recall {}  (n={})",
            share(self.found(Level::Emergency)),
            share(self.found(Level::Urgent)),
            share(self.found(Level::Watch)),
            share(self.ok_left_low()),
            share(self.recall_at_least(Level::Urgent)),
            self.total()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_precision_and_targets() {
        let mut c = Confusion::default();
        c.add(Level::Emergency, Level::Emergency);
        c.add(Level::Emergency, Level::Urgent);
        c.add(Level::Ok, Level::Emergency);
        c.add(Level::Ok, Level::Ok);
        assert_eq!(c.recall(Level::Emergency), Some(0.5));
        assert_eq!(c.precision(Level::Emergency), Some(0.5));
        assert_eq!(c.recall_at_least(Level::Urgent), Some(1.0));
        assert_eq!(c.ok_left_low(), Some(0.5));
        assert_eq!(c.recall(Level::Watch), None);
        let missed = c.missed_targets();
        assert_eq!(missed.len(), 2, "{missed:?}");
        assert!(
            missed[0].starts_with("emergency recall 50.0% < 100% (short by 50.0 points)"),
            "{missed:?}"
        );
        assert!(
            missed[1].starts_with("fine replies kept 50.0%"),
            "{missed:?}"
        );
        assert!(c.render().contains("emergency"));
    }

    #[test]
    fn each_level_is_found_at_its_level_or_above() {
        let mut c = Confusion::default();
        // Urgent: 9 of 10 found (one over-escalated still counts), one missed.
        for _ in 0..8 {
            c.add(Level::Urgent, Level::Urgent);
        }
        c.add(Level::Urgent, Level::Emergency);
        c.add(Level::Urgent, Level::Watch);
        // Watch: 2 of 3 found, below the 70% target.
        c.add(Level::Watch, Level::Watch);
        c.add(Level::Watch, Level::Urgent);
        c.add(Level::Watch, Level::Ok);
        assert_eq!(c.found(Level::Urgent), Some(0.9));
        let missed = c.missed_targets();
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(
            missed[0].starts_with("watch recall 66.7% < 70%"),
            "{missed:?}"
        );
    }
}
