//! Evaluation on labelled sets: confusion matrix, per-level recall and
//! precision, and the release targets.

use super::Lang;
use crate::Level;
use serde::Deserialize;
use std::fmt::Write as _;

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

    /// The release targets; returns the ones missed, empty when all are met.
    pub fn missed_targets(&self) -> Vec<String> {
        let mut missed = Vec::new();
        let mut check = |name: &str, v: Option<f64>, target: f64| {
            if let Some(v) = v
                && v < target
            {
                missed.push(format!("{name} {:.1}% < {:.0}%", v * 100.0, target * 100.0));
            }
        };
        check("emergency recall", self.recall(Level::Emergency), 1.0);
        check(
            "urgent-or-above recall",
            self.recall_at_least(Level::Urgent),
            0.9,
        );
        check("ok left at ok/watch", self.ok_left_low(), 0.95);
        missed
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
        let _ = writeln!(
            s,
            "urgent-or-above recall {}%  emergency recall {}%  ok left at ok/watch {}%  (n={})",
            pct(self.recall_at_least(Level::Urgent)).trim(),
            pct(self.recall(Level::Emergency)).trim(),
            pct(self.ok_left_low()).trim(),
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
        assert!(c.render().contains("emergency"));
    }
}
