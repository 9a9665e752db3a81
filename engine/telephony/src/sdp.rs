//! The little SDP reading the leg needs: which payload types the audio
//! section maps to which codecs. Full parsing and validation is the WebRTC
//! stack's job; this only runs on descriptions it has already accepted.
//! Public so that tests/fuzz_sdp.rs can feed it any text.

use crate::codec::Codec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
}

/// Payload types of the first audio section, in the order of its `m=` line.
pub fn audio_rtpmaps(sdp: &str) -> Vec<RtpMap> {
    let mut order: Vec<u8> = Vec::new();
    let mut maps: Vec<RtpMap> = Vec::new();
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            in_audio = m.starts_with("audio ");
            if in_audio {
                seen_audio = true;
                order = m
                    .split_whitespace()
                    .skip(3)
                    .filter_map(|p| p.parse().ok())
                    .collect();
            }
            continue;
        }
        if !in_audio {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let mut parts = rest.splitn(2, ' ');
            let (Some(pt), Some(enc)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(pt) = pt.parse::<u8>() else { continue };
            let mut enc_parts = enc.split('/');
            let name = enc_parts.next().unwrap_or_default().to_string();
            let rate = enc_parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            maps.push(RtpMap {
                payload_type: pt,
                encoding: name,
                clock_rate: rate,
            });
        }
    }
    // Static PCMU may appear on the m= line without an rtpmap.
    if order.contains(&0) && !maps.iter().any(|m| m.payload_type == 0) {
        maps.push(RtpMap {
            payload_type: 0,
            encoding: "PCMU".into(),
            clock_rate: 8000,
        });
    }
    order
        .iter()
        .filter_map(|pt| maps.iter().find(|m| m.payload_type == *pt).cloned())
        .collect()
}

/// What a negotiated description says to send and expect.
/// What the two ends agreed on (the transport port's [`crate::port::Media`]).
pub type Negotiated = crate::port::Media;

/// The first audio codec a WebRTC leg supports in `sdp`'s order, with its
/// DTMF partner.
pub fn negotiate(sdp: &str) -> Option<Negotiated> {
    let maps = audio_rtpmaps(sdp);
    let webrtc = Codec::all();
    let (codec, audio_pt) = maps.iter().find_map(|m| {
        Codec::from_mime(&format!("audio/{}", m.encoding))
            .filter(|c| webrtc.contains(c))
            .map(|c| (c, m.payload_type))
    })?;
    // Prefer events on the audio clock (what browsers pair with Opus), else any.
    let events: Vec<&RtpMap> = maps
        .iter()
        .filter(|m| m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate > 0)
        .collect();
    let dtmf = events
        .iter()
        .find(|m| m.clock_rate == codec.clock_rate())
        .or(events.first())
        .map(|m| (m.payload_type, m.clock_rate));
    Some(Negotiated {
        codec,
        audio_pt,
        dtmf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0 126 13\r\na=rtpmap:126 telephone-event/8000\r\n\
a=rtpmap:13 CN/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn reads_static_pcmu_and_dtmf_pt() {
        let n = negotiate(BROWSER_LIKE).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.audio_pt, 0);
        assert_eq!(n.dtmf, Some((126, 8000)));
    }

    #[test]
    fn webrtc_passes_over_pcma() {
        let sdp = "v=0\r\nm=audio 9 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let n = negotiate(sdp).unwrap();
        assert_eq!((n.codec, n.audio_pt), (Codec::Pcmu, 0));
    }

    #[test]
    fn no_supported_codec_is_none() {
        let sdp = "v=0\r\nm=audio 9 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n";
        assert_eq!(negotiate(sdp), None);
        assert_eq!(negotiate("garbage"), None);
    }
}
