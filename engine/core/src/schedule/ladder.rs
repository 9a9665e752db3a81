//! The no-answer ladder: what to do when the elder does not pick up.
//!
//! The policy is data (per programme or per elder). The default follows
//! common telephone-reassurance practice: three calls ten minutes apart, then
//! the emergency contacts in order until one confirms with a key press that
//! they will check on the elder, then an `urgent` "elder unreachable" item in
//! the operator queue.
//!
//! [`Ladder`] is a small state machine: start it, place the call it asks for,
//! report the outcome with the current time, and do what it says next. It is
//! serde-serialisable so a runner can keep it in the database between calls.

use crate::Level;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LadderPolicy {
    /// Calls to the elder in total, the first included.
    pub attempts: u32,
    /// Wait before calling again after no answer or a failed call.
    pub retry_after_minutes: u32,
    /// Wait after a busy line (they are on the phone, so probably well).
    pub busy_retry_after_minutes: u32,
    /// Whether an answered-but-silent call counts as reaching the elder.
    pub answered_silent: SilentPolicy,
    /// Wait between one emergency contact and the next.
    pub contact_gap_minutes: u32,
    /// Level of the operator-queue item when nobody could be reached.
    pub escalate_level: Level,
}

impl Default for LadderPolicy {
    fn default() -> Self {
        LadderPolicy {
            attempts: 3,
            retry_after_minutes: 10,
            busy_retry_after_minutes: 5,
            answered_silent: SilentPolicy::Retry,
            contact_gap_minutes: 0,
            escalate_level: Level::Urgent,
        }
    }
}

/// The keys of [`LadderPolicy`], each optional, for layering one policy on another.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOverrides {
    attempts: Option<u32>,
    retry_after_minutes: Option<u32>,
    busy_retry_after_minutes: Option<u32>,
    answered_silent: Option<SilentPolicy>,
    contact_gap_minutes: Option<u32>,
    escalate_level: Option<Level>,
}

/// What an answered call in which the elder said nothing means for the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SilentPolicy {
    /// Keep climbing the ladder: someone who picks up and cannot speak may
    /// be the one who most needs a visit.
    Retry,
    /// Treat it as reached (for elders known to answer and say little).
    Reached,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("ladder policy: {0}")]
    Policy(String),
    #[error("outcome {outcome} does not fit the ladder while {stage}")]
    Unexpected {
        outcome: AttemptOutcome,
        stage: String,
    },
    #[error("the ladder has already finished")]
    Finished,
}

impl LadderPolicy {
    /// Reads a policy from TOML; missing keys take the defaults.
    pub fn from_toml(source: &str) -> Result<LadderPolicy, LadderError> {
        LadderPolicy::default().with_overrides(source)
    }

    /// This policy (a programme's) with some keys replaced by `source` (one
    /// elder's overrides, e.g. `attempts = 5`), validated.
    pub fn with_overrides(&self, source: &str) -> Result<LadderPolicy, LadderError> {
        let o: PolicyOverrides = toml::from_str(source).map_err(|e| toml_error(source, &e))?;
        let p = LadderPolicy {
            attempts: o.attempts.unwrap_or(self.attempts),
            retry_after_minutes: o.retry_after_minutes.unwrap_or(self.retry_after_minutes),
            busy_retry_after_minutes: o
                .busy_retry_after_minutes
                .unwrap_or(self.busy_retry_after_minutes),
            answered_silent: o.answered_silent.unwrap_or(self.answered_silent),
            contact_gap_minutes: o.contact_gap_minutes.unwrap_or(self.contact_gap_minutes),
            escalate_level: o.escalate_level.unwrap_or(self.escalate_level),
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), LadderError> {
        if self.attempts == 0 || self.attempts > 10 {
            return Err(LadderError::Policy(format!(
                "attempts = {} must be 1..=10",
                self.attempts
            )));
        }
        if self.retry_after_minutes == 0 || self.busy_retry_after_minutes == 0 {
            return Err(LadderError::Policy(
                "retry waits must be at least one minute".into(),
            ));
        }
        if self.escalate_level < Level::Urgent {
            return Err(LadderError::Policy(format!(
                "escalate_level = {} must be urgent or emergency: nobody reached the elder",
                self.escalate_level
            )));
        }
        Ok(())
    }
}

/// How one call placed by the ladder ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The elder answered and took part.
    Answered,
    /// The elder picked up but said nothing.
    AnsweredSilent,
    NoAnswer,
    Busy,
    /// The call could not be placed (network, number).
    Failed,
    /// The contact pressed the key confirming they will check on the elder.
    ContactConfirmed,
    /// The contact did not answer, or answered without confirming.
    ContactNoAnswer,
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttemptOutcome::Answered => "answered",
            AttemptOutcome::AnsweredSilent => "answered_silent",
            AttemptOutcome::NoAnswer => "no_answer",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::ContactConfirmed => "contact_confirmed",
            AttemptOutcome::ContactNoAnswer => "contact_no_answer",
        })
    }
}

/// What the runner should do next.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LadderAction {
    /// Call the elder at this time (now for the first call).
    CallElder { at: DateTime<Utc> },
    /// Call emergency contact `index` (0-based, in the elder's order) at this time.
    CallContact { index: usize, at: DateTime<Utc> },
    /// Queue this for an operator; the ladder is finished.
    Escalate { level: Level, reason: String },
    /// Nothing more to do.
    Done(LadderResult),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LadderResult {
    ReachedElder,
    ContactConfirmed { index: usize },
    Escalated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
enum Stage {
    CallingElder,
    CallingContact { index: usize },
    Finished { result: LadderResult },
}

/// The ladder for one due check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder {
    policy: LadderPolicy,
    contacts: usize,
    stage: Stage,
    started: DateTime<Utc>,
    elder_calls: u32,
    no_answer: u32,
    busy: u32,
    failed: u32,
    silent: u32,
}

impl Ladder {
    /// Starts the ladder for a check-in due `now`, for an elder with
    /// `contacts` emergency contacts. The first action is always to call the elder now.
    pub fn start(
        policy: LadderPolicy,
        contacts: usize,
        now: DateTime<Utc>,
    ) -> Result<(Ladder, LadderAction), LadderError> {
        policy.validate()?;
        let ladder = Ladder {
            policy,
            contacts,
            stage: Stage::CallingElder,
            started: now,
            elder_calls: 1,
            no_answer: 0,
            busy: 0,
            failed: 0,
            silent: 0,
        };
        Ok((ladder, LadderAction::CallElder { at: now }))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Finished { .. })
    }

    pub fn result(&self) -> Option<LadderResult> {
        match self.stage {
            Stage::Finished { result } => Some(result),
            _ => None,
        }
    }

    /// Calls placed to the elder so far.
    pub fn elder_calls(&self) -> u32 {
        self.elder_calls
    }

    /// Reports how the call the ladder last asked for ended.
    pub fn record(
        &mut self,
        outcome: AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Result<LadderAction, LadderError> {
        use AttemptOutcome as O;
        match self.stage {
            Stage::Finished { .. } => Err(LadderError::Finished),
            Stage::CallingElder => match outcome {
                O::Answered => Ok(self.finish(LadderResult::ReachedElder)),
                O::AnsweredSilent if self.policy.answered_silent == SilentPolicy::Reached => {
                    Ok(self.finish(LadderResult::ReachedElder))
                }
                O::AnsweredSilent | O::NoAnswer | O::Busy | O::Failed => {
                    let wait = match outcome {
                        O::AnsweredSilent => {
                            self.silent += 1;
                            self.policy.retry_after_minutes
                        }
                        O::Busy => {
                            self.busy += 1;
                            self.policy.busy_retry_after_minutes
                        }
                        O::Failed => {
                            self.failed += 1;
                            self.policy.retry_after_minutes
                        }
                        _ => {
                            self.no_answer += 1;
                            self.policy.retry_after_minutes
                        }
                    };
                    if self.elder_calls < self.policy.attempts {
                        self.elder_calls += 1;
                        Ok(LadderAction::CallElder {
                            at: later(now, wait),
                        })
                    } else {
                        Ok(self.next_contact_at(0, now))
                    }
                }
                O::ContactConfirmed | O::ContactNoAnswer => Err(self.unexpected(outcome)),
            },
            Stage::CallingContact { index } => match outcome {
                O::ContactConfirmed => Ok(self.finish(LadderResult::ContactConfirmed { index })),
                // Anything short of the confirming key press means this
                // contact has not taken it on.
                O::ContactNoAnswer
                | O::NoAnswer
                | O::Busy
                | O::Failed
                | O::Answered
                | O::AnsweredSilent => {
                    let at = later(now, self.policy.contact_gap_minutes);
                    Ok(self.next_contact_at(index + 1, at))
                }
            },
        }
    }

    fn next_contact_at(&mut self, index: usize, at: DateTime<Utc>) -> LadderAction {
        if index < self.contacts {
            self.stage = Stage::CallingContact { index };
            return LadderAction::CallContact { index, at };
        }
        self.stage = Stage::Finished {
            result: LadderResult::Escalated,
        };
        LadderAction::Escalate {
            level: self.policy.escalate_level,
            reason: self.unreachable_reason(),
        }
    }

    fn unreachable_reason(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.no_answer, "not answered"),
            (self.silent, "answered but silent"),
            (self.busy, "busy"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let contacts = match self.contacts {
            0 => "no emergency contacts on file".to_string(),
            n => format!("none of {n} emergency contacts confirmed"),
        };
        format!(
            "elder unreachable: {} calls since {} ({}); {contacts}",
            self.elder_calls,
            self.started.format("%Y-%m-%d %H:%M UTC"),
            parts.join(", ")
        )
    }

    fn finish(&mut self, result: LadderResult) -> LadderAction {
        self.stage = Stage::Finished { result };
        LadderAction::Done(result)
    }

    fn unexpected(&self, outcome: AttemptOutcome) -> LadderError {
        let stage = match self.stage {
            Stage::CallingElder => "calling the elder".to_string(),
            Stage::CallingContact { index } => format!("calling contact {index}"),
            Stage::Finished { .. } => "finished".to_string(),
        };
        LadderError::Unexpected { outcome, stage }
    }
}

/// `now` plus some minutes, saturating instead of panicking at the end of time.
fn later(now: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
    now.checked_add_signed(Duration::minutes(i64::from(minutes)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn toml_error(source: &str, e: &toml::de::Error) -> LadderError {
    let at = e
        .span()
        .map(|s| crate::flow::position(source, s.start))
        .map(|p| format!("{}:{}: ", p.line, p.col))
        .unwrap_or_default();
    LadderError::Policy(format!("{at}{}", e.message()))
}
