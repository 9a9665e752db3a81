//! IVR flows: the TOML file format, its checker, and the call interpreter.
//!
//! * [`parse_flow`] turns a flow file into a checked [`Flow`] or a list of
//!   [`Diagnostic`]s (file:line:col: message).
//! * [`FlowSet`] keeps the last good version of each flow when a new one is broken.
//! * [`Call`] runs one call through a flow: [`Event`]s in, [`Action`]s out.
//!
//! The format is described in `docs/flows.md`.

mod check;
mod interp;
mod model;
mod parse;
mod registry;
pub mod synthetic;

pub use interp::{Action, Call, CallReport, Event, Heard, Millis, Outcome, Play, PromptId};
pub use model::*;
pub(crate) use parse::position;
pub use parse::{BUILTIN_VARS, Diagnostic, FlowErrors, parse_flow, parse_template};
pub use registry::{FlowSet, Update};
