//! The `voicecare` binary's library half: CLI commands and the glue loops.
//!
//! Business rules live in `voicecare-core`; SQL lives in `voicecare-store`.
//! This crate wires them to the outside world (CLI, HTTP, audio devices).

pub mod api;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cmd;
pub mod config;
pub mod config_file;
pub mod console;
pub mod db;
pub mod demo;
pub mod event_stream;
pub mod runner;
pub mod telemetry;
pub mod tls;
