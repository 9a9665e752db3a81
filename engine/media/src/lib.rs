//! Audio for voicecare: PCM frames, G.711, resampling, WAV/FLAC/raw input and
//! voice activity detection.
//!
//! This crate knows about samples, not calls: nothing here knows who is speaking
//! or what a database is.

use std::path::PathBuf;

pub mod audio;
pub mod g711;
pub mod resample;
pub mod tone;
pub mod vad;

pub use audio::{Audio, MAX_CHANNELS, MAX_RATE, MAX_SECONDS, MIN_RATE, RawFormat, load, write_wav};
pub use resample::{Resampler, resample};
pub use tone::{Tone, ToneConfig, ToneDetector, ToneEvent};
pub use vad::{EndReason, EndpointConfig, Endpointer, Utterance, VadEvent};

/// Errors from reading, writing or converting audio.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    BadFile { path: PathBuf, what: String },
    #[error(
        "cannot resample from {from_hz} Hz to {to_hz} Hz (rates must be {}–{} Hz)",
        MIN_RATE,
        MAX_RATE
    )]
    BadRate { from_hz: u32, to_hz: u32 },
}
