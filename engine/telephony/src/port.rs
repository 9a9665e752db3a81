//! The transport port: how any transport plugs a call into the engine.
//!
//! The engine talks to every call through a [`CallLeg`]: 20 ms frames of
//! 16 kHz PCM and keypad digits in, prompt and live audio out, an `Ended`
//! event when the call is over. Everything behind that handle that does not
//! depend on the transport is shared: the 20 ms pacer (prompt queue, live
//! audio, RFC 4733 keypad events, RTP sequence numbers and timestamps), the
//! codecs, and the receive path (decoding, keypad events, frame delivery).
//!
//! A transport supplies only what is its own: an [`RtpSink`] that puts RTP
//! packets on its wire, one or more [`RtpSource`]s of received packets, and
//! the call's signalling, through the [`TransportHandle`]: when media is up,
//! when the far end hung up, and (watching [`TransportHandle::ended`]) when
//! the engine hung up and the far end must be told. WebRTC (`leg.rs`) is
//! one such transport; a SIP trunk is another.

use std::sync::Arc;

use rtc::rtp;
use tokio::sync::mpsc;

use crate::codec::Codec;
use crate::leg::{CallLeg, EndReason, LegConfig, LegEvent, Shared};

/// Where a leg's outgoing RTP goes.
#[async_trait::async_trait]
pub trait RtpSink: Send + Sync + 'static {
    async fn send(&self, packet: rtp::Packet) -> Result<(), String>;
}

/// Received RTP of one stream.
#[async_trait::async_trait]
pub trait RtpSource: Send + 'static {
    /// The next packet; `None` once the stream is closed.
    async fn recv(&mut self) -> Option<rtp::Packet>;
}

/// What the two ends agreed on for the audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    pub codec: Codec,
    /// Payload type of the audio codec.
    pub audio_pt: u8,
    /// Payload type and clock of telephone-event (RFC 4733), if agreed.
    pub dtmf: Option<(u8, u32)>,
}

/// The transport's side of a leg: tell the leg what signalling learned.
#[derive(Clone)]
pub struct TransportHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: mpsc::Sender<LegEvent>,
    pub(crate) config: LegConfig,
    pub(crate) media: Media,
}

impl TransportHandle {
    /// Media flows both ways: the leg starts sending and reports `Connected`.
    pub async fn connected(&self) {
        if !self.shared.connected.send_replace(true) {
            let _ = self.events.send(LegEvent::Connected).await;
        }
    }

    /// The call is over for this reason (the first reason given wins).
    pub fn end(&self, reason: EndReason) {
        self.shared.end(reason);
    }

    /// Resolves when the leg ends, however it ends; a transport watches it
    /// to tell the far end when the engine hangs up.
    pub async fn ended(&self) -> EndReason {
        self.shared.ended().await
    }

    /// A keypad digit the transport's signalling carried (SIP INFO), as
    /// if it had come in the media as an RFC 4733 event.
    pub async fn digit(&self, digit: char) {
        let _ = self.events.send(LegEvent::Digit(digit)).await;
    }

    pub fn is_ended(&self) -> bool {
        self.shared.end.borrow().is_some()
    }

    /// Decode a stream of received packets into the leg's events until it
    /// closes or the leg ends.
    pub fn receive(&self, source: impl RtpSource) {
        let task = tokio::spawn(crate::leg::receive(
            source,
            self.media,
            self.events.clone(),
            self.shared.stats.clone(),
            self.config.record_timing,
        ));
        self.shared
            .receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

/// A leg on any RTP transport: the engine's [`CallLeg`] and the transport's
/// [`TransportHandle`]. Sending starts once the transport reports
/// [`TransportHandle::connected`]; a leg not connected within
/// `config.connect_timeout` ends as failed.
pub fn rtp_leg(
    media: Media,
    sink: Arc<dyn RtpSink>,
    config: &LegConfig,
) -> (CallLeg, TransportHandle) {
    crate::leg::start_rtp(media, sink, crate::leg::random_u32(), config, None)
}
