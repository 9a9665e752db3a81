//! One module per subcommand of the `voicecare` binary.

pub mod admin;
pub mod carrier;
pub mod demo;
pub mod distress;
pub mod flow;
pub mod model;
pub mod phone;
pub mod phone_sip;
pub mod serve;
pub mod transcribe;
