//! Scheduling policy: when each elder's check-in is due, and what to do when
//! they do not answer. Pure functions of the schedule, the past attempts and
//! `now`; the runner owns the clock and the database.

mod ladder;
mod window;

pub use ladder::{
    AttemptOutcome, Ladder, LadderAction, LadderError, LadderPolicy, LadderResult, SilentPolicy,
};
pub use window::{Occurrence, Pause, Schedule, ScheduleError, localise};
