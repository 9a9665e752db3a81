//! One module per subcommand of the `voicecare` binary.

pub mod distress;
pub mod flow;
pub mod model;
pub mod phone;
pub mod transcribe;
