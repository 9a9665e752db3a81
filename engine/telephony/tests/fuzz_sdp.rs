//! Fuzz target: SDP from devices and consoles, as the WebRTC stack parses it
//! and as the leg reads its codecs (`sdp::negotiate`), then a whole answer
//! to a mutated offer. See docs/fuzzing.md.
//!
//! Asserts: no panic; a description is accepted or refused with an error;
//! what negotiation picks is offered on the description's audio line;
//! parsing and negotiating hold at most `BYTES_PER_INPUT_BYTE` × the
//! description's length + `SLACK` at once; an answer to any offer is an
//! answer or an error, within `ANSWER_TIMEOUT`.

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use voicecare_telephony::sdp::{audio_rtpmaps, negotiate};
use voicecare_telephony::{CallLeg, LegConfig};
use webrtc::peer_connection::RTCSessionDescription;

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

const SLACK: usize = 256 << 10;
const BYTES_PER_INPUT_BYTE: usize = 64;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"v=0\r\n",
    b"m=audio ",
    b"m=video ",
    b"m=application ",
    b" UDP/TLS/RTP/SAVPF ",
    b" RTP/AVP ",
    b"c=IN IP4 ",
    b"c=IN IP6 ",
    b"a=rtpmap:",
    b"a=fmtp:",
    b"a=candidate:",
    b"a=fingerprint:sha-256 ",
    b"a=ice-ufrag:",
    b"a=ice-pwd:",
    b"a=mid:",
    b"a=group:BUNDLE ",
    b"a=setup:actpass",
    b"a=sendrecv",
    b"a=inactive",
    b"a=ssrc:",
    b"telephone-event/8000",
    b"opus/48000/2",
    b"PCMU/8000",
    b"PCMA/8000",
    b" 65535 ",
    b" 4294967296 ",
    b"/",
    b":",
    b" ",
];

fn check(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let sdp = String::from_utf8_lossy(input).into_owned();
    let (negotiated, peak) = fuzz::measure(|| {
        let _ = RTCSessionDescription::offer(sdp.clone());
        let _ = RTCSessionDescription::answer(sdp.clone());
        let _ = audio_rtpmaps(&sdp);
        negotiate(&sdp)
    });
    if peak > BYTES_PER_INPUT_BYTE * sdp.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to read {} bytes of SDP",
            sdp.len()
        )));
    }
    if let Some(n) = negotiated {
        let offered = audio_rtpmaps(&sdp);
        if !offered.iter().any(|m| m.payload_type == n.audio_pt) {
            return Err(fuzz::fail(format!(
                "negotiated payload type {} is not on the audio line",
                n.audio_pt
            )));
        }
    }
    Ok(())
}

#[test]
fn sdp_text_never_panics_nor_allocates_past_its_size() {
    fuzz::run("sdp", TOKENS, check);
}

/// The path an offer from a device takes: parsed, negotiated, applied to a
/// peer connection and answered, or refused.
#[test]
fn any_offer_is_answered_or_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = LegConfig::loopback();
    let budget = fuzz::Budget { secs: 2, cases: 16 };
    let answered_count = AtomicUsize::new(0);
    fuzz::run_for("sdp", TOKENS, budget, |input| {
        let sdp = String::from_utf8_lossy(input).into_owned();
        let answered = rt.block_on(async {
            tokio::time::timeout(ANSWER_TIMEOUT, CallLeg::answer(&config, &sdp)).await
        });
        match answered {
            Err(_) => Err(fuzz::fail("no answer nor error in time")),
            Ok(Ok((leg, answer))) => {
                answered_count.fetch_add(1, Ordering::Relaxed);
                leg.control().hang_up();
                if negotiate(&answer).is_none() {
                    return Err(fuzz::fail(format!("an answer without a codec:\n{answer}")));
                }
                Ok(())
            }
            Ok(Err(_)) => Ok(()),
        }
    });
    eprintln!(
        "sdp: {} offers answered",
        answered_count.load(Ordering::Relaxed)
    );
}
