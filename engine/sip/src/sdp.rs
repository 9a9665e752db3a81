//! The SDP of a phone call: one audio stream, G.711 plus RFC 4733 events.
//! Written and read by hand: a trunk's SDP is a dozen lines, and a full
//! parser would accept far more than a call can use.

use std::net::{IpAddr, SocketAddr};

use voicecare_telephony::Codec;
use voicecare_telephony::port::Media;

/// The payload type we offer telephone-event on; the answer may choose another.
pub const PT_TELEPHONE_EVENT: u8 = 101;

/// Our offer: PCMA first (the norm on Chinese networks), then PCMU, then
/// telephone-event for keypad digits.
pub fn offer(ip: IpAddr, port: u16, session: u64) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    format!(
        "v=0\r\n\
         o=voicecare {session} {session} IN {family} {ip}\r\n\
         s=voicecare\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 8 0 {PT_TELEPHONE_EVENT}\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:{PT_TELEPHONE_EVENT} telephone-event/8000\r\n\
         a=fmtp:{PT_TELEPHONE_EVENT} 0-15\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    )
}

/// Our answer to a caller's offer: the one codec [`parse_answer`] chose from
/// it (the caller's first preference we speak), with its payload type, and
/// telephone-event if offered.
pub fn answer(ip: IpAddr, port: u16, session: u64, media: &Media) -> String {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let (pt, name) = (media.audio_pt, codec_name(media.codec));
    let (pts, events) = match media.dtmf {
        Some((d, rate)) => (
            format!("{pt} {d}"),
            format!("a=rtpmap:{d} telephone-event/{rate}\r\na=fmtp:{d} 0-15\r\n"),
        ),
        None => (pt.to_string(), String::new()),
    };
    format!(
        "v=0\r\n\
         o=voicecare {session} {session} IN {family} {ip}\r\n\
         s=voicecare\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP {pts}\r\n\
         a=rtpmap:{pt} {name}/8000\r\n\
         {events}\
         a=ptime:20\r\n\
         a=sendrecv\r\n"
    )
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Pcma => "PCMA",
        _ => "PCMU",
    }
}

/// What the far end's answer agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Where to send RTP (until the far end's own packets say otherwise).
    pub remote: SocketAddr,
    pub media: Media,
}

/// Why an answer cannot carry the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no audio stream")]
    NoAudio,
    #[error("the audio stream was rejected (port 0)")]
    Rejected,
    #[error("no connection address")]
    NoAddress,
    #[error("no codec we offered (PCMA or PCMU)")]
    NoCodec,
    #[error("malformed line: {0:?}")]
    Malformed(String),
}

/// Read the answer to [`offer`].
/// Whether the first audio stream of `sdp` lists payload type `pt`. A
/// description without an audio stream lists nothing.
pub fn offers_payload(sdp: &str, pt: u8) -> bool {
    sdp.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("m=audio "))
        .is_some_and(|m| {
            m.split_whitespace()
                .skip(2)
                .any(|f| f.parse::<u8>() == Ok(pt))
        })
}

pub fn parse_answer(sdp: &str) -> Result<Answer, AnswerError> {
    let mut session_ip: Option<IpAddr> = None;
    let mut audio: Option<AudioSection> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            // Only the first audio stream counts.
            in_audio = audio.is_none() && m.starts_with("audio ");
            seen_media = true;
            if in_audio {
                audio = Some(AudioSection::from_m_line(m)?);
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            if !seen_media {
                session_ip = Some(connection_ip(c)?);
            } else if in_audio && let Some(a) = audio.as_mut() {
                a.ip = Some(connection_ip(c)?);
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && in_audio
            && let Some(a) = audio.as_mut()
            // A mapping we cannot read is one we cannot use either.
            && let Some(map) = rtpmap(map)
        {
            a.rtpmaps.push(map);
        }
    }
    let audio = audio.ok_or(AnswerError::NoAudio)?;
    if audio.port == 0 {
        return Err(AnswerError::Rejected);
    }
    let ip = audio.ip.or(session_ip).ok_or(AnswerError::NoAddress)?;
    let codec_of = |pt: u8| -> Option<Codec> {
        match audio.rtpmaps.iter().find(|(p, _, _)| *p == pt) {
            Some((_, name, 8000)) if name.eq_ignore_ascii_case("PCMA") => Some(Codec::Pcma),
            Some((_, name, 8000)) if name.eq_ignore_ascii_case("PCMU") => Some(Codec::Pcmu),
            Some(_) => None,
            // Static payload types need no rtpmap (RFC 3551).
            None => match pt {
                8 => Some(Codec::Pcma),
                0 => Some(Codec::Pcmu),
                _ => None,
            },
        }
    };
    let (codec, audio_pt) = audio
        .pts
        .iter()
        .find_map(|&pt| codec_of(pt).map(|c| (c, pt)))
        .ok_or(AnswerError::NoCodec)?;
    let dtmf = audio
        .rtpmaps
        .iter()
        .find(|(pt, name, _)| {
            name.eq_ignore_ascii_case("telephone-event") && audio.pts.contains(pt)
        })
        .map(|&(pt, _, rate)| (pt, rate));
    Ok(Answer {
        remote: SocketAddr::new(ip, audio.port),
        media: Media {
            codec,
            audio_pt,
            dtmf,
        },
    })
}

struct AudioSection {
    port: u16,
    pts: Vec<u8>,
    ip: Option<IpAddr>,
    /// (payload type, encoding name, clock rate)
    rtpmaps: Vec<(u8, String, u32)>,
}

impl AudioSection {
    fn from_m_line(m: &str) -> Result<Self, AnswerError> {
        let bad = || AnswerError::Malformed(format!("m={m}"));
        let mut parts = m.split_whitespace().skip(1);
        // "5004" or "5004/2": the port count is of no use to one stream.
        let port = parts
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)?;
        let proto = parts.next().ok_or_else(bad)?;
        if !proto.starts_with("RTP/") {
            return Err(bad());
        }
        let pts = parts
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            port,
            pts,
            ip: None,
            rtpmaps: Vec::new(),
        })
    }
}

fn connection_ip(c: &str) -> Result<IpAddr, AnswerError> {
    let mut parts = c.split_whitespace();
    let (Some("IN"), Some(_), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AnswerError::Malformed(format!("c={c}")));
    };
    // A multicast "/ttl" suffix is not for a phone call, but parse past it.
    addr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| AnswerError::Malformed(format!("c={c}")))
}

fn rtpmap(map: &str) -> Option<(u8, String, u32)> {
    let (pt, enc) = map.split_once(' ')?;
    let mut enc = enc.trim().split('/');
    let name = enc.next()?.to_string();
    Some((pt.parse().ok()?, name, enc.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_lists_its_payload_types_on_the_first_audio_line() {
        let pcma_only = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 8 101\r\n";
        assert!(offers_payload(pcma_only, 8));
        assert!(offers_payload(pcma_only, 101));
        assert!(
            !offers_payload(pcma_only, 0),
            "the port is not a payload type"
        );
        assert!(!offers_payload("v=0\r\nm=video 4000 RTP/AVP 0\r\n", 0));
        assert!(offers_payload(
            "m=audio 4000 RTP/AVP 0 8\r\nm=audio 5000 RTP/AVP 9\r\n",
            0
        ));
        assert!(!offers_payload(
            "m=audio 4000 RTP/AVP 0 8\r\nm=audio 5000 RTP/AVP 9\r\n",
            9
        ));
    }

    const SIPP_PCMA: &str = "v=0\r\no=elder 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn our_offer_lists_pcma_first_and_reads_back() {
        let sdp = offer("192.0.2.7".parse().unwrap(), 20_000, 42);
        assert!(sdp.contains("m=audio 20000 RTP/AVP 8 0 101\r\n"), "{sdp}");
        assert!(sdp.contains("a=fmtp:101 0-15\r\n"));
        assert!(sdp.contains("a=ptime:20\r\n"));
        let a = parse_answer(&sdp).unwrap();
        assert_eq!(a.remote, "192.0.2.7:20000".parse::<SocketAddr>().unwrap());
        assert_eq!(a.media.codec, Codec::Pcma);
        assert_eq!(a.media.dtmf, Some((101, 8000)));
    }

    #[test]
    fn answers_an_offer_with_its_first_codec_we_speak() {
        // baresip's usual offer: Opus first, then PCMU, PCMA, events at 101.
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 96 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
        let o = parse_answer(offer).unwrap();
        assert_eq!((o.media.codec, o.media.audio_pt), (Codec::Pcmu, 0));
        let sdp = answer("127.0.0.1".parse().unwrap(), 30_000, 7, &o.media);
        assert!(sdp.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        // Reading our own answer gives back the same media.
        assert_eq!(parse_answer(&sdp).unwrap().media, o.media);
        let no_events = Media {
            dtmf: None,
            ..o.media
        };
        let sdp = answer("127.0.0.1".parse().unwrap(), 30_000, 7, &no_events);
        assert!(sdp.contains("m=audio 30000 RTP/AVP 0\r\n") && !sdp.contains("telephone-event"));
    }

    #[test]
    fn reads_a_pcma_answer() {
        let a = parse_answer(SIPP_PCMA).unwrap();
        assert_eq!(a.remote, "127.0.0.1:16000".parse::<SocketAddr>().unwrap());
        assert_eq!(
            a.media,
            Media {
                codec: Codec::Pcma,
                audio_pt: 8,
                dtmf: Some((101, 8000))
            }
        );
    }

    #[test]
    fn static_pcmu_without_rtpmap_and_media_level_address() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 96\r\n\
c=IN IP4 10.0.0.2\r\na=rtpmap:96 telephone-event/8000\r\n";
        let a = parse_answer(sdp).unwrap();
        assert_eq!(a.remote, "10.0.0.2:4000".parse::<SocketAddr>().unwrap());
        assert_eq!((a.media.codec, a.media.audio_pt), (Codec::Pcmu, 0));
        assert_eq!(a.media.dtmf, Some((96, 8000)));
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        assert_eq!(parse_answer(""), Err(AnswerError::NoAudio));
        assert_eq!(
            parse_answer("\u{0}\u{ff}garbage\r\n==\r\nm="),
            Err(AnswerError::NoAudio)
        );
        assert_eq!(
            parse_answer("c=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 8\r\n"),
            Err(AnswerError::Rejected)
        );
        assert_eq!(
            parse_answer("m=audio 4000 RTP/AVP 8\r\n"),
            Err(AnswerError::NoAddress)
        );
        assert_eq!(
            parse_answer("c=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n"),
            Err(AnswerError::NoCodec)
        );
        assert!(matches!(
            parse_answer("c=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 8\r\n"),
            Err(AnswerError::Malformed(_))
        ));
        assert!(matches!(
            parse_answer("c=IN IP4 not-an-ip\r\nm=audio 4000 RTP/AVP 8\r\n"),
            Err(AnswerError::Malformed(_))
        ));
        // An unreadable mapping is skipped; static PCMA still works.
        let a = parse_answer("c=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:x\r\n");
        assert_eq!(a.unwrap().media.codec, Codec::Pcma);
    }
}
