//! Device signalling over WebSocket: JSON messages that set up, ring and end
//! calls. The protocol is specified in docs/signalling.md.

pub mod client;
pub mod outbox;
pub mod protocol;
pub mod server;

pub use client::{ClientConfig, DeviceClient, RingingCall};
pub use outbox::Outbox;
pub use protocol::{ClientMessage, DeviceToken, ErrorCode, HangupReason, ServerMessage};
pub use server::{
    AuthError, ClientAddr, DeviceGateway, DeviceKind, DeviceProfile, HubConfig, IncomingCall,
    SignallingHub,
};
