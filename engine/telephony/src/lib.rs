//! Telephony for voicecare: WebRTC call legs with PCMU/Opus audio and RFC 4733
//! DTMF, the device signalling protocol over WebSocket, bridging, and the
//! simulated and sound-card phones.
//!
//! Every leg exchanges 16 kHz mono PCM in 20 ms frames ([`audio::FRAME_SAMPLES`])
//! with the application, whatever codec runs on the wire.

pub mod audio;
pub mod bench;
pub mod bridge;
pub mod codec;
pub mod device;
pub mod dtmf;
pub mod error;
pub mod inband;
pub mod leg;
pub mod port;
pub mod reorder;
pub mod sdp;
pub mod signalling;
pub mod sim;

pub use codec::Codec;
pub use error::TelephonyError;
pub use leg::{
    CallLeg, EndReason, IceServer, LegConfig, LegControl, LegEvent, LegStats, OutgoingLeg,
    PlayOutcome, Playback,
};
pub use sim::{SimPhone, SimReport, SimScript, SimTurn};
