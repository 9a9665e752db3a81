//! The I/O-free core of voicecare.
//!
//! Nothing in this crate reads a clock, sleeps, spawns a task or touches a
//! socket or file: time and events come in as arguments, decisions go out as
//! return values. That is what lets a whole call, a day of scheduling or ten
//! thousand utterances be tested in microseconds.

pub mod carrier;
pub mod distress;
pub mod flow;
pub mod intent;
pub mod lang;
pub mod level;
pub mod memory;
pub mod phone;
pub mod redact;
pub mod schedule;
pub mod session;

pub use lang::Lang;
pub use level::Level;
