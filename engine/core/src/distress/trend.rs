//! Per-elder trend: the same complaint call after call raises the level.
//!
//! Pure: the caller loads the elder's recent calls and passes them in.

use super::{Assessment, Category, Reason};
use crate::Level;
use serde::{Deserialize, Serialize};

/// One earlier call of the same elder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastCall {
    /// When the call was assessed, seconds since the Unix epoch.
    pub at_unix: i64,
    pub assessment: Assessment,
}

/// How many consecutive calls (this one included) with the same complaint raise it.
pub const REPEAT_CALLS: usize = 3;
/// A fall mentioned again within this window raises the level.
pub const FALL_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// Raises `current` (the assessment of the call at `now_unix`) when history shows a trend:
///
/// - the same category reported in this call and each of the previous
///   [`REPEAT_CALLS`]` - 1` calls → at least `urgent`;
/// - a fall in this call and another within [`FALL_WINDOW_SECS`] → at least `urgent`.
///
/// Calls in `history` at or after `now_unix` are ignored; order does not matter.
pub fn apply_trend(current: &Assessment, now_unix: i64, history: &[PastCall]) -> Assessment {
    let mut past: Vec<&PastCall> = history.iter().filter(|p| p.at_unix < now_unix).collect();
    past.sort_by_key(|p| std::cmp::Reverse(p.at_unix));
    let mut extra = Vec::new();
    let raise = |r: &Reason, rule: &str, summary: String| Reason {
        category: Category::Trend,
        level: Level::Urgent,
        evidence: r.evidence.clone(),
        rule: format!("trend.{rule}"),
        span: r.span.clone(),
        phonetic: false,
        sounds_like: None,
        distance: None,
        summary,
    };
    let mut seen = Vec::new();
    for r in &current.reasons {
        if r.level == Level::Ok || r.category == Category::Trend || seen.contains(&r.category) {
            continue;
        }
        seen.push(r.category);
        let n = REPEAT_CALLS - 1;
        if past.len() >= n
            && past[..n]
                .iter()
                .all(|p| p.assessment.categories.contains(&r.category))
        {
            extra.push(raise(
                r,
                "repeated",
                format!(
                    "{} in {REPEAT_CALLS} calls in a row: \u{201c}{}\u{201d}",
                    r.category, r.evidence
                ),
            ));
        }
        if r.category == Category::Fall
            && let Some(p) = past.iter().find(|p| {
                now_unix - p.at_unix <= FALL_WINDOW_SECS
                    && p.assessment.categories.contains(&Category::Fall)
            })
        {
            let days = (now_unix - p.at_unix) / 86_400;
            extra.push(raise(
                r,
                "falls_in_a_week",
                format!(
                    "second fall mentioned in {} days: \u{201c}{}\u{201d}",
                    days.max(1),
                    r.evidence
                ),
            ));
        }
    }
    if extra.is_empty() {
        return current.clone();
    }
    let mut reasons = current.reasons.clone();
    reasons.extend(extra);
    let mut a = Assessment::from_reasons(reasons, None);
    a.needs_confirmation = current.needs_confirmation && a.level == current.level;
    a
}
