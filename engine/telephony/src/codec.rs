//! Voice codecs a leg can negotiate, with their RTP parameters, and the
//! per-leg encoder/decoder state converting to and from 16 kHz PCM frames.

use crate::audio::{Downsampler2x, FRAME_SAMPLES, Upsampler2x};
use crate::error::TelephonyError;
use voicecare_media::g711;

/// An audio codec a leg can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 μ-law, 8 kHz: universal, and what a phone gateway will speak.
    Pcmu,
    /// Opus, wideband: better speech recognition, about a fifth of the bandwidth.
    #[cfg(feature = "opus")]
    Opus,
}

/// Payload types we offer. PCMU is static (0); the rest follow common browser choices.
pub const PT_PCMU: u8 = 0;
pub const PT_OPUS: u8 = 111;
/// telephone-event is offered at 8 kHz only, with either codec: the media
/// engine matches telephone-event by name, so a second clock rate cannot be
/// registered beside it. Receivers use the event timestamp only to tell key
/// presses apart, so the clock mismatch with Opus is harmless.
pub const PT_TELEPHONE_EVENT: u8 = 101;
pub const DTMF_CLOCK_RATE: u32 = 8000;

impl Codec {
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Pcmu => "audio/PCMU",
            #[cfg(feature = "opus")]
            Codec::Opus => "audio/opus",
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu => 8000,
            #[cfg(feature = "opus")]
            Codec::Opus => 48000,
        }
    }

    pub(crate) fn channels(self) -> u16 {
        match self {
            Codec::Pcmu => 0,
            #[cfg(feature = "opus")]
            Codec::Opus => 2,
        }
    }

    pub(crate) fn fmtp(self) -> &'static str {
        match self {
            Codec::Pcmu => "",
            #[cfg(feature = "opus")]
            Codec::Opus => "minptime=10;useinbandfec=1",
        }
    }

    pub(crate) fn default_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => PT_PCMU,
            #[cfg(feature = "opus")]
            Codec::Opus => PT_OPUS,
        }
    }

    /// RTP timestamp advance per 20 ms packet.
    pub(crate) fn samples_per_packet(self) -> u32 {
        self.clock_rate() / 50
    }

    pub(crate) fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("audio/PCMU") {
            return Some(Codec::Pcmu);
        }
        #[cfg(feature = "opus")]
        if mime.eq_ignore_ascii_case("audio/opus") {
            return Some(Codec::Opus);
        }
        None
    }

    /// Every codec compiled in, in our order of preference when answering.
    pub fn all() -> Vec<Codec> {
        vec![
            #[cfg(feature = "opus")]
            Codec::Opus,
            Codec::Pcmu,
        ]
    }
}

/// Encodes 20 ms frames of 16 kHz PCM into RTP payloads.
pub(crate) enum Encoder {
    Pcmu(Downsampler2x),
    #[cfg(feature = "opus")]
    Opus(Box<opus::Encoder>),
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Self, TelephonyError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu(Downsampler2x::default()),
            #[cfg(feature = "opus")]
            Codec::Opus => Encoder::Opus(Box::new(
                opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?,
            )),
        })
    }

    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, TelephonyError> {
        debug_assert_eq!(frame.len(), FRAME_SAMPLES);
        match self {
            Encoder::Pcmu(down) => Ok(g711::encode_ulaw(&down.process(frame))),
            #[cfg(feature = "opus")]
            Encoder::Opus(enc) => {
                let mut out = vec![0u8; 400];
                let n = enc
                    .encode(frame, &mut out)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?;
                out.truncate(n);
                Ok(out)
            }
        }
    }
}

/// Decodes RTP payloads into 16 kHz PCM.
pub(crate) enum Decoder {
    Pcmu(Upsampler2x),
    #[cfg(feature = "opus")]
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Self, TelephonyError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu(Upsampler2x::default()),
            #[cfg(feature = "opus")]
            Codec::Opus => Decoder::Opus(Box::new(
                opus::Decoder::new(16_000, opus::Channels::Mono)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?,
            )),
        })
    }

    /// Decode one payload. A corrupt payload is an error for this packet only.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, TelephonyError> {
        match self {
            Decoder::Pcmu(up) => Ok(up.process(&g711::decode_ulaw(payload))),
            #[cfg(feature = "opus")]
            Decoder::Opus(dec) => {
                // Up to 120 ms per packet at 16 kHz.
                let mut out = vec![0i16; 1920];
                let n = dec
                    .decode(payload, &mut out, false)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?;
                out.truncate(n);
                Ok(out)
            }
        }
    }
}
