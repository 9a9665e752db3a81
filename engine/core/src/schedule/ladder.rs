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
    /// Wait after the trunk or the carrier failed (not the elder's doing).
    pub trunk_retry_after_minutes: u32,
    /// Trunk failures retried without counting as calls to the elder; past
    /// this many in one check-in they count as failed calls, so a trunk
    /// down all day still ends with someone checking on the elder.
    pub trunk_retries: u32,
    /// Declined calls after which the elder is not rung again this time and
    /// the emergency contacts are tried (0: declines follow the ladder).
    pub declines_before_contacts: u32,
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
            trunk_retry_after_minutes: 2,
            trunk_retries: 6,
            declines_before_contacts: 2,
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
    trunk_retry_after_minutes: Option<u32>,
    trunk_retries: Option<u32>,
    declines_before_contacts: Option<u32>,
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
            trunk_retry_after_minutes: o
                .trunk_retry_after_minutes
                .unwrap_or(self.trunk_retry_after_minutes),
            trunk_retries: o.trunk_retries.unwrap_or(self.trunk_retries),
            declines_before_contacts: o
                .declines_before_contacts
                .unwrap_or(self.declines_before_contacts),
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
        if self.retry_after_minutes == 0
            || self.busy_retry_after_minutes == 0
            || self.trunk_retry_after_minutes == 0
        {
            return Err(LadderError::Policy(
                "retry waits must be at least one minute".into(),
            ));
        }
        if self.trunk_retries > 50 {
            return Err(LadderError::Policy(format!(
                "trunk_retries = {} must be 0..=50",
                self.trunk_retries
            )));
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
    /// A voicemail box or answering machine answered: not reached.
    Voicemail,
    /// The elder rejected the call.
    Declined,
    /// The number does not exist: ringing it again cannot help.
    InvalidNumber,
    /// Our trunk or the carrier failed: not the elder's doing.
    TrunkFailure,
    /// The call could not be placed (anything else).
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
            AttemptOutcome::Voicemail => "voicemail",
            AttemptOutcome::Declined => "declined",
            AttemptOutcome::InvalidNumber => "invalid_number",
            AttemptOutcome::TrunkFailure => "trunk_failure",
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
    // Later additions: a ladder stored before them reads as zero.
    #[serde(default)]
    voicemail: u32,
    #[serde(default)]
    declined: u32,
    #[serde(default)]
    trunk_failures: u32,
    #[serde(default)]
    invalid_number: bool,
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
            voicemail: 0,
            declined: 0,
            trunk_failures: 0,
            invalid_number: false,
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

    /// Calls to the elder that counted against the ladder so far (calls
    /// lost to trunk failures that were retried do not count).
    pub fn elder_calls(&self) -> u32 {
        self.elder_calls
    }

    /// Trunk failures retried without counting against the elder.
    pub fn trunk_failures(&self) -> u32 {
        self.trunk_failures
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
                // Ringing a number that does not exist again cannot help:
                // straight on to the contacts (the enrolment gets fixed apart).
                O::InvalidNumber => {
                    self.invalid_number = true;
                    Ok(self.next_contact_at(0, now))
                }
                // Our trunk's fault: try again soon, without using up a call.
                O::TrunkFailure if self.trunk_failures < self.policy.trunk_retries => {
                    self.trunk_failures += 1;
                    Ok(LadderAction::CallElder {
                        at: later(now, self.policy.trunk_retry_after_minutes),
                    })
                }
                O::AnsweredSilent
                | O::NoAnswer
                | O::Busy
                | O::Voicemail
                | O::Declined
                | O::TrunkFailure
                | O::Failed => {
                    let wait = self.count(outcome);
                    let declined_enough = self.policy.declines_before_contacts > 0
                        && self.declined >= self.policy.declines_before_contacts;
                    if self.elder_calls < self.policy.attempts && !declined_enough {
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
                | O::Voicemail
                | O::Declined
                | O::InvalidNumber
                | O::TrunkFailure
                | O::Failed
                | O::Answered
                | O::AnsweredSilent => {
                    let at = later(now, self.policy.contact_gap_minutes);
                    Ok(self.next_contact_at(index + 1, at))
                }
            },
        }
    }

    /// Tallies an elder's call that counts against the ladder; returns the
    /// wait before the next one.
    fn count(&mut self, outcome: AttemptOutcome) -> u32 {
        use AttemptOutcome as O;
        let p = &self.policy;
        match outcome {
            O::AnsweredSilent => {
                self.silent += 1;
                p.retry_after_minutes
            }
            O::Busy => {
                self.busy += 1;
                p.busy_retry_after_minutes
            }
            O::Voicemail => {
                self.voicemail += 1;
                p.retry_after_minutes
            }
            O::Declined => {
                self.declined += 1;
                p.retry_after_minutes
            }
            O::Failed | O::TrunkFailure => {
                self.failed += 1;
                p.retry_after_minutes
            }
            _ => {
                self.no_answer += 1;
                p.retry_after_minutes
            }
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
            (self.voicemail, "voicemail"),
            (self.declined, "declined"),
            (self.busy, "busy"),
            (self.failed, "failed"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if self.trunk_failures > 0 {
            parts.push(format!(
                "{} trunk failures retried, not counted",
                self.trunk_failures
            ));
        }
        if self.invalid_number {
            parts.push("the number does not exist: the enrolment needs correcting".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome as O;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
    }

    /// A default ladder with `contacts` contacts after its first call.
    fn ladder(contacts: usize) -> Ladder {
        Ladder::start(LadderPolicy::default(), contacts, t0())
            .expect("valid")
            .0
    }

    fn call_elder_in(action: LadderAction) -> i64 {
        match action {
            LadderAction::CallElder { at } => (at - t0()).num_minutes(),
            other => panic!("expected another call to the elder, got {other:?}"),
        }
    }

    #[test]
    fn busy_retries_sooner_than_no_answer() {
        let mut l = ladder(0);
        assert_eq!(call_elder_in(l.record(O::Busy, t0()).unwrap()), 5);
        assert_eq!(call_elder_in(l.record(O::NoAnswer, t0()).unwrap()), 10);
        assert_eq!(l.elder_calls(), 3);
    }

    #[test]
    fn no_answer_follows_the_ladder_to_the_contacts() {
        let mut l = ladder(1);
        assert_eq!(call_elder_in(l.record(O::NoAnswer, t0()).unwrap()), 10);
        assert_eq!(call_elder_in(l.record(O::NoAnswer, t0()).unwrap()), 10);
        assert_eq!(
            l.record(O::NoAnswer, t0()),
            Ok(LadderAction::CallContact { index: 0, at: t0() })
        );
    }

    #[test]
    fn voicemail_counts_as_not_reached() {
        let mut l = ladder(0);
        assert_eq!(call_elder_in(l.record(O::Voicemail, t0()).unwrap()), 10);
        assert_eq!(call_elder_in(l.record(O::Voicemail, t0()).unwrap()), 10);
        match l.record(O::Voicemail, t0()) {
            Ok(LadderAction::Escalate { reason, .. }) => {
                assert!(reason.contains("3 voicemail"), "{reason}")
            }
            other => panic!("expected escalation, got {other:?}"),
        }
    }

    #[test]
    fn a_second_decline_moves_on_to_the_contacts() {
        let mut l = ladder(2);
        assert_eq!(call_elder_in(l.record(O::Declined, t0()).unwrap()), 10);
        assert_eq!(
            l.record(O::Declined, t0()),
            Ok(LadderAction::CallContact { index: 0, at: t0() })
        );
        assert_eq!(l.elder_calls(), 2, "the third call was not placed");

        // With the rule off, declines follow the ladder like no answer.
        let policy = LadderPolicy {
            declines_before_contacts: 0,
            ..LadderPolicy::default()
        };
        let (mut l, _) = Ladder::start(policy, 1, t0()).unwrap();
        call_elder_in(l.record(O::Declined, t0()).unwrap());
        call_elder_in(l.record(O::Declined, t0()).unwrap());
        assert!(matches!(
            l.record(O::Declined, t0()),
            Ok(LadderAction::CallContact { index: 0, .. })
        ));
    }

    #[test]
    fn an_invalid_number_is_not_rung_again() {
        let mut l = ladder(1);
        assert_eq!(
            l.record(O::InvalidNumber, t0()),
            Ok(LadderAction::CallContact { index: 0, at: t0() })
        );
        assert_eq!(l.elder_calls(), 1);
        // No contact confirmed: the item says why the elder was not rung.
        match l.record(O::ContactNoAnswer, t0()) {
            Ok(LadderAction::Escalate { reason, .. }) => {
                assert!(reason.contains("number does not exist"), "{reason}")
            }
            other => panic!("expected escalation, got {other:?}"),
        }
    }

    #[test]
    fn trunk_failures_retry_soon_and_do_not_count_against_the_elder() {
        let mut l = ladder(0);
        for _ in 0..6 {
            assert_eq!(call_elder_in(l.record(O::TrunkFailure, t0()).unwrap()), 2);
        }
        assert_eq!(l.elder_calls(), 1, "no call used up");
        assert_eq!(l.trunk_failures(), 6);
        // Then the elder answers: reached, nothing escalated.
        assert_eq!(
            l.record(O::Answered, t0()),
            Ok(LadderAction::Done(LadderResult::ReachedElder))
        );
    }

    #[test]
    fn a_trunk_down_past_its_retries_counts_as_failed_calls() {
        let policy = LadderPolicy {
            trunk_retries: 1,
            ..LadderPolicy::default()
        };
        let (mut l, _) = Ladder::start(policy, 0, t0()).unwrap();
        assert_eq!(call_elder_in(l.record(O::TrunkFailure, t0()).unwrap()), 2);
        assert_eq!(call_elder_in(l.record(O::TrunkFailure, t0()).unwrap()), 10);
        assert_eq!(l.elder_calls(), 2);
    }

    #[test]
    fn outcomes_ringing_a_contact_move_on_to_the_next() {
        for outcome in [O::Voicemail, O::Declined, O::InvalidNumber, O::TrunkFailure] {
            let mut l = ladder(2);
            assert!(matches!(
                l.record(O::InvalidNumber, t0()),
                Ok(LadderAction::CallContact { index: 0, .. })
            ));
            assert_eq!(
                l.record(outcome, t0()),
                Ok(LadderAction::CallContact { index: 1, at: t0() }),
                "{outcome}"
            );
        }
    }

    #[test]
    fn a_ladder_stored_before_the_outcome_counters_still_reads() {
        let mut json = serde_json::to_value(ladder(0)).unwrap();
        let obj = json.as_object_mut().unwrap();
        for key in ["voicemail", "declined", "trunk_failures", "invalid_number"] {
            obj.remove(key);
        }
        let l: Ladder = serde_json::from_value(json).unwrap();
        assert_eq!(l.trunk_failures(), 0);
    }

    #[test]
    fn new_policy_keys_read_from_toml() {
        let p = LadderPolicy::from_toml(
            "trunk_retry_after_minutes = 1\ntrunk_retries = 3\ndeclines_before_contacts = 1",
        )
        .unwrap();
        assert_eq!(
            (
                p.trunk_retry_after_minutes,
                p.trunk_retries,
                p.declines_before_contacts
            ),
            (1, 3, 1)
        );
        assert!(LadderPolicy::from_toml("trunk_retry_after_minutes = 0").is_err());
        assert!(LadderPolicy::from_toml("trunk_retries = 51").is_err());
    }
}
