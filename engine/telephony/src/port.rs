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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PT_PCMA, PT_PCMU};
    use voicecare_media::g711;

    struct Discard;

    #[async_trait::async_trait]
    impl RtpSink for Discard {
        async fn send(&self, _: rtp::Packet) -> Result<(), String> {
            Ok(())
        }
    }

    /// Packets in a fixed arrival order, then the end of the stream.
    struct Arrivals(std::vec::IntoIter<rtp::Packet>);

    #[async_trait::async_trait]
    impl RtpSource for Arrivals {
        async fn recv(&mut self) -> Option<rtp::Packet> {
            self.0.next()
        }
    }

    /// 20 ms of μ-law at a level that names the packet.
    fn packet(seq: u16) -> rtp::Packet {
        let level = 1000 * (i16::try_from(seq).unwrap() + 1);
        rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: PT_PCMU,
                sequence_number: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 7,
                ..Default::default()
            },
            payload: g711::encode_ulaw(&[level; 160]).into(),
        }
    }

    #[tokio::test]
    async fn received_packets_are_put_back_in_order_and_a_lost_one_is_silence() {
        let media = Media {
            codec: Codec::Pcmu,
            audio_pt: PT_PCMU,
            dtmf: None,
        };
        let (mut leg, handle) = rtp_leg(media, Arc::new(Discard), &LegConfig::loopback());
        // 2 and 1 swapped, 4 duplicated, 5 never sent.
        let order = [0, 2, 1, 3, 4, 4, 6, 7, 8, 9];
        handle.receive(Arrivals(order.map(packet).to_vec().into_iter()));
        let mut levels = Vec::new();
        while levels.len() < 10 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), leg.next_event()).await {
                Ok(Some(LegEvent::Audio(f))) => {
                    levels.push((f32::from(f[200]) / 1000.0).round() as i16)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        // Each packet's level in the middle of its frame (μ-law rounds a little).
        assert_eq!(levels, vec![1, 2, 3, 4, 5, 0, 7, 8, 9, 10]);
        let stats = leg.control().stats();
        assert_eq!(
            stats
                .packets_late
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            stats
                .packets_lost
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// A-law packets of 8 kHz audio: the key '5' (770 + 1336 Hz) for 100 ms
    /// between silences, as an analogue phone behind a gateway sends it.
    fn packets() -> Vec<rtp::Packet> {
        let tone = |i: usize| {
            let t = i as f32 / 8000.0;
            let w = |f: f32| (2.0 * std::f32::consts::PI * f * t).sin();
            (5000.0 * (w(770.0) + w(1336.0))) as i16
        };
        let pcm: Vec<i16> = (0..800)
            .map(|_| 0)
            .chain((0..800).map(tone))
            .chain((0..1600).map(|_| 0))
            .collect();
        pcm.chunks(160)
            .enumerate()
            .map(|(i, c)| rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: PT_PCMA,
                    sequence_number: i as u16,
                    timestamp: i as u32 * 160,
                    ssrc: 9,
                    ..Default::default()
                },
                payload: g711::encode_alaw(c).into(),
            })
            .collect()
    }

    async fn digits(media: Media) -> String {
        let (mut leg, handle) = rtp_leg(media, Arc::new(Discard), &LegConfig::loopback());
        handle.receive(Arrivals(packets().into_iter()));
        let mut digits = String::new();
        let mut frames = 0;
        while frames < 20 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), leg.next_event()).await {
                Ok(Some(LegEvent::Audio(_))) => frames += 1,
                Ok(Some(LegEvent::Digit(d))) => digits.push(d),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        digits
    }

    #[tokio::test]
    async fn a_keypad_tone_in_the_audio_is_a_digit_without_telephone_event() {
        let media = Media {
            codec: Codec::Pcma,
            audio_pt: PT_PCMA,
            dtmf: None,
        };
        assert_eq!(digits(media).await, "5");
        // With telephone-event agreed, keys come as events and the tone is
        // not counted a second time.
        let with_events = Media {
            dtmf: Some((101, 8000)),
            ..media
        };
        assert_eq!(digits(with_events).await, "");
    }
}
