//! SIP trunk gateway: calls to ordinary phones as [`CallLeg`]s.
//!
//! A [`SipGateway`] owns the SIP endpoint of one [`Trunk`]. [`SipGateway::call`]
//! sends the INVITE, rings with a timeout and, once the phone is answered,
//! returns the same kind of leg every other transport gives the engine: the
//! media runs over plain RTP through the telephony crate's transport port,
//! G.711 A-law or μ-law with RFC 4733 keypad events. A call that is not
//! answered fails with a [`CallFailure`] carrying the SIP status.
//!
//! A [`TrunkGroup`] holds several gateways in priority order: a call a
//! trunk fails (5xx, 403, no response) goes out through the next one, and
//! every trunk is watched with OPTIONS pings (`group.rs`, `health.rs`).
//!
//! The SIP stack (rsipstack) stays behind this crate's own types, so it can
//! be replaced without touching the engine.
//!
//! [`CallLeg`]: voicecare_telephony::CallLeg

mod dialer;
pub mod digest;
mod early;
pub mod failure;
pub mod gateway;
pub mod group;
pub mod health;
pub mod inbound;
pub mod indialog;
pub mod register;
mod rtp;
pub mod sdp;
mod supervise;
pub mod trunk;

pub use dialer::{Attempt, CHANNEL_WAIT};
pub use failure::CallFailure;
pub use gateway::{GatewayError, SipGateway};
pub use group::{TrunkGroup, TrunkStatus};
pub use health::HealthPolicy;
pub use inbound::IncomingCall;
pub use register::RegistrationState;
pub use trunk::{Credentials, Secret, Transport, Trunk};
