//! One module per subcommand of the `voicecare` binary.

pub mod admin;
pub mod asr_bench;
pub mod calls_bench;
pub mod capacity_bench;
pub mod demo;
pub mod distress;
pub mod flow;
pub mod model;
pub mod phone;
pub mod queue_bench;
pub mod serve;
pub mod transcribe;
