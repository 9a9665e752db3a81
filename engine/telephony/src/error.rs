use thiserror::Error;

/// Everything that can go wrong in telephony, phrased for the peer or the operator.
#[derive(Debug, Error)]
pub enum TelephonyError {
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("no common audio codec: the offer must include PCMU or Opus")]
    NoCommonCodec,
    #[error("WebRTC: {0}")]
    Webrtc(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("the call has ended")]
    CallEnded,
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("the device is not registered")]
    NotRegistered,
    #[error("no answer")]
    NoAnswer,
    #[error("the call was refused: {0:?}")]
    Declined(crate::signalling::HangupReason),
    #[error("signalling: {0}")]
    Signalling(String),
    #[error("no sound card found")]
    NoSoundCard,
    #[error("sound card: {0}")]
    Audio(String),
    #[error("phone script: {0}")]
    Script(String),
    #[error("audio file: {0}")]
    Wav(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<webrtc::error::Error> for TelephonyError {
    fn from(e: webrtc::error::Error) -> Self {
        TelephonyError::Webrtc(e.to_string())
    }
}
