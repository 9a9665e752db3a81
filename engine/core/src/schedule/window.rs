//! When an elder's daily check-in is due.
//!
//! A schedule is a local-time window on some days of the week, in the elder's
//! IANA time zone. Windows are enumerated by local date, so a DST change can
//! shift a window but never remove it or run it twice:
//! * a local time that does not exist (spring forward) moves forward by the
//!   length of the gap (02:30 becomes 03:30 in New York);
//! * a local time that exists twice (fall back) takes the first one;
//! * a window that would shrink to nothing keeps its nominal length.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// An elder's check-in schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Days on which the window opens (`"mon"`, `"tue"`, ...).
    pub days: Vec<Weekday>,
    /// Local time the window opens (`"09:30"` or `"09:30:00"`).
    #[serde(with = "hhmm")]
    pub window_start: NaiveTime,
    /// Local time the window closes; at or before `window_start` means the
    /// window runs past midnight into the next day.
    #[serde(with = "hhmm")]
    pub window_end: NaiveTime,
    /// No calls are placed for windows opening on these local dates.
    #[serde(default)]
    pub paused: Vec<Pause>,
}

/// A period without calls (in hospital, away with family), in local dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub from: NaiveDate,
    /// Last paused date, inclusive; `None` until someone resumes the calls.
    #[serde(default)]
    pub until: Option<NaiveDate>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Pause {
    pub fn covers(&self, date: NaiveDate) -> bool {
        date >= self.from && self.until.is_none_or(|u| date <= u)
    }
}

/// One opening of the window, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// The local date the window opens on.
    pub date: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Occurrence {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        t >= self.start && t < self.end
    }
}

/// How far ahead [`Schedule::next_due`] looks before deciding there is no next call.
const HORIZON_DAYS: i64 = 400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no days of the week: the elder would never be called")]
    NoDays,
    #[error("pause {index} ends ({until}) before it starts ({from})")]
    PauseBackwards {
        index: usize,
        from: NaiveDate,
        until: NaiveDate,
    },
}

impl Schedule {
    /// Rejects schedules that are almost certainly data-entry mistakes.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.days.is_empty() {
            return Err(ScheduleError::NoDays);
        }
        for (index, p) in self.paused.iter().enumerate() {
            if let Some(until) = p.until
                && until < p.from
            {
                return Err(ScheduleError::PauseBackwards {
                    index,
                    from: p.from,
                    until,
                });
            }
        }
        Ok(())
    }

    /// The window opening on local `date`, whether or not that day is scheduled or paused.
    pub fn window_on(&self, tz: Tz, date: NaiveDate) -> Occurrence {
        let start_local = date.and_time(self.window_start);
        let end_date = if self.window_end <= self.window_start {
            date.succ_opt().unwrap_or(date)
        } else {
            date
        };
        let end_local = end_date.and_time(self.window_end);
        let nominal = end_local - start_local;
        let start = localise(tz, start_local);
        let mut end = localise(tz, end_local);
        if end <= start {
            end = start
                .checked_add_signed(nominal.max(Duration::minutes(1)))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
        }
        Occurrence { date, start, end }
    }

    /// The window opening on `date` if calls are scheduled that day.
    pub fn occurrence(&self, tz: Tz, date: NaiveDate) -> Option<Occurrence> {
        if !self.days.contains(&date.weekday()) || self.paused.iter().any(|p| p.covers(date)) {
            return None;
        }
        Some(self.window_on(tz, date))
    }

    /// When the next check-in call should start: `now` if a window is open
    /// and has not been attempted yet, else the start of the next window.
    /// `attempts` are the start times of calls already placed; any attempt
    /// inside a window means that window is taken (its retries belong to the
    /// no-answer ladder). `None` when nothing is scheduled within ~13 months.
    pub fn next_due(
        &self,
        tz: Tz,
        attempts: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let today = now.with_timezone(&tz).date_naive();
        // Yesterday's window may still be open if it crosses midnight.
        let mut date = today.pred_opt()?;
        for _ in 0..HORIZON_DAYS {
            if let Some(occ) = self.occurrence(tz, date)
                && occ.end > now
                && !attempts.iter().any(|a| occ.contains(*a))
            {
                return Some(occ.start.max(now));
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// Local wall time to UTC with the DST rules above.
pub fn localise(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: read the wall time with the offset in force before
            // the gap, which lands as far past the gap's end as it was into it.
            for hours in 1..=48 {
                let Some(earlier) = local.checked_sub_signed(Duration::hours(hours)) else {
                    break;
                };
                if let Some(before) = tz.from_local_datetime(&earlier).earliest() {
                    let offset = Duration::seconds(i64::from(
                        chrono::Offset::fix(before.offset()).local_minus_utc(),
                    ));
                    if let Some(t) = local.checked_sub_signed(offset) {
                        return Utc.from_utc_datetime(&t);
                    }
                }
            }
            // No zone has a two-day gap; fall back to reading it as UTC.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// `NaiveTime` as `"HH:MM"` (seconds optional on input).
mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(&s, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(&s, "%H:%M:%S"))
            .map_err(|_| {
                serde::de::Error::custom(format!("time {s:?} must be HH:MM, e.g. \"09:30\""))
            })
    }
}
