//! Voice codecs a leg can negotiate, with their RTP parameters, and the
//! per-leg encoder/decoder state converting to and from 16 kHz PCM frames.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::audio::{Downsampler2x, FRAME_SAMPLES, Upsampler2x};
use crate::error::TelephonyError;
use voicecare_media::g711;

/// An audio codec a leg can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 μ-law, 8 kHz: universal, and what a phone gateway will speak.
    Pcmu,
    /// G.711 A-law, 8 kHz: the norm on Chinese and European phone networks.
    /// Carried by RTP transports (SIP); WebRTC legs do not offer it yet.
    Pcma,
    /// Opus, wideband: better speech recognition, about a fifth of the bandwidth.
    #[cfg(feature = "opus")]
    Opus,
}

/// Payload types we offer. PCMU (0) and PCMA (8) are static (RFC 3551); the
/// rest follow common browser choices.
pub const PT_PCMU: u8 = 0;
pub const PT_PCMA: u8 = 8;
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
            Codec::Pcma => "audio/PCMA",
            #[cfg(feature = "opus")]
            Codec::Opus => "audio/opus",
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            #[cfg(feature = "opus")]
            Codec::Opus => 48000,
        }
    }

    pub(crate) fn channels(self) -> u16 {
        match self {
            Codec::Pcmu | Codec::Pcma => 0,
            #[cfg(feature = "opus")]
            Codec::Opus => 2,
        }
    }

    pub(crate) fn fmtp(self) -> &'static str {
        match self {
            Codec::Pcmu | Codec::Pcma => "",
            #[cfg(feature = "opus")]
            Codec::Opus => "minptime=10;useinbandfec=1",
        }
    }

    pub fn default_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => PT_PCMU,
            Codec::Pcma => PT_PCMA,
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
        if mime.eq_ignore_ascii_case("audio/PCMA") {
            return Some(Codec::Pcma);
        }
        #[cfg(feature = "opus")]
        if mime.eq_ignore_ascii_case("audio/opus") {
            return Some(Codec::Opus);
        }
        None
    }

    /// Every codec a WebRTC leg negotiates, in our order of preference when
    /// answering. PCMA is left out so browser negotiation stays as it was.
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
    Pcma(Downsampler2x),
    #[cfg(feature = "opus")]
    Opus(Box<opus::Encoder>),
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Self, TelephonyError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu(Downsampler2x::default()),
            Codec::Pcma => Encoder::Pcma(Downsampler2x::default()),
            #[cfg(feature = "opus")]
            Codec::Opus => Encoder::Opus(Box::new(
                opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?,
            )),
        })
    }

    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, TelephonyError> {
        debug_assert_eq!(frame.len(), FRAME_SAMPLES);
        timed(|| self.encode_untimed(frame))
    }

    fn encode_untimed(&mut self, frame: &[i16]) -> Result<Vec<u8>, TelephonyError> {
        match self {
            Encoder::Pcmu(down) => Ok(g711::encode_ulaw(&down.process(frame))),
            Encoder::Pcma(down) => Ok(g711::encode_alaw(&down.process(frame))),
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

/// CPU time spent encoding and decoding in this process, nanoseconds, on
/// the threads that count (see [`leave_codec_cpu_uncounted`]).
static CODEC_NS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Leave the calling thread's encoding and decoding out of
/// [`codec_cpu_s`]: for the threads of simulated phones in the same process
/// as the engine they call.
pub fn leave_codec_cpu_uncounted() {
    UNCOUNTED.with(|u| u.set(true));
}

/// CPU seconds this process has spent encoding and decoding frames (G.711
/// with its resampling, Opus), timed on the thread that did it.
pub fn codec_cpu_s() -> f64 {
    CODEC_NS.load(Ordering::Relaxed) as f64 / 1e9
}

fn timed<T>(f: impl FnOnce() -> T) -> T {
    if UNCOUNTED.with(Cell::get) {
        return f();
    }
    let t0 = thread_cpu_ns();
    let r = f();
    CODEC_NS.fetch_add(thread_cpu_ns().saturating_sub(t0), Ordering::Relaxed);
    r
}

/// CPU time of the calling thread, nanoseconds; 0 where unknown.
fn thread_cpu_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec we own; no other memory is touched.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    0
}

/// Decodes RTP payloads into 16 kHz PCM.
pub enum Decoder {
    Pcmu(Upsampler2x),
    Pcma(Upsampler2x),
    #[cfg(feature = "opus")]
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Self, TelephonyError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu(Upsampler2x::default()),
            Codec::Pcma => Decoder::Pcma(Upsampler2x::default()),
            #[cfg(feature = "opus")]
            Codec::Opus => Decoder::Opus(Box::new(
                opus::Decoder::new(16_000, opus::Channels::Mono)
                    .map_err(|e| TelephonyError::Codec(e.to_string()))?,
            )),
        })
    }

    /// Decode one payload. A corrupt payload is an error for this packet only.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, TelephonyError> {
        timed(|| self.decode_untimed(payload))
    }

    fn decode_untimed(&mut self, payload: &[u8]) -> Result<Vec<i16>, TelephonyError> {
        match self {
            Decoder::Pcmu(up) => Ok(up.process(&g711::decode_ulaw(payload))),
            Decoder::Pcma(up) => Ok(up.process(&g711::decode_alaw(payload))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    #[test]
    fn pcma_carries_a_tone_as_a_law() {
        assert_eq!(Codec::Pcma.default_payload_type(), 8);
        assert_eq!(Codec::from_mime("audio/pcma"), Some(Codec::Pcma));
        let mut enc = Encoder::new(Codec::Pcma).unwrap();
        let mut dec = Decoder::new(Codec::Pcma).unwrap();
        // Silence is A-law 0xD5 (μ-law would be 0xFF).
        let silent = enc.encode(&[0; FRAME_SAMPLES]).unwrap();
        assert_eq!(silent.len(), 160, "20 ms at 8 kHz");
        assert!(silent.iter().all(|&b| b == 0xD5));
        let mut heard = Vec::new();
        for n in 0..10 {
            let frame: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (n * FRAME_SAMPLES + i) as f32 / 16_000.0;
                    ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let payload = enc.encode(&frame).unwrap();
            heard = dec.decode(&payload).unwrap();
        }
        assert_eq!(heard.len(), FRAME_SAMPLES);
        let level = rms(&heard);
        assert!((5000.0..6500.0).contains(&level), "tone level {level}");
    }
}
