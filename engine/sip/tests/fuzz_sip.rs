//! Fuzz target: SIP messages from a trunk, as the stack parses a datagram
//! (`SipMessage::try_from`) and reads the headers a transaction and a
//! dialog need, then their SDP body as the gateway reads it
//! (`sdp::parse_answer`). See docs/fuzzing.md.
//!
//! Asserts: no panic; a datagram is a message or an error; a message that
//! parses prints back to one that parses again; an SDP body gives an answer
//! whose payload types it offered, or an error; parsing holds at most
//! `BYTES_PER_INPUT_BYTE` × the datagram's length + `SLACK` at once.

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, SipMessage};
use voicecare_sip::sdp::parse_answer;

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

const SLACK: usize = 256 << 10;
const BYTES_PER_INPUT_BYTE: usize = 64;

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"SIP/2.0 ",
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"sip:",
    b"sips:",
    b"tel:",
    b"Via: SIP/2.0/UDP ",
    b";branch=z9hG4bK",
    b";rport",
    b";received=",
    b";tag=",
    b"From: ",
    b"To: ",
    b"Call-ID: ",
    b"CSeq: ",
    b"Contact: ",
    b"Content-Length: ",
    b"Content-Type: application/sdp\r\n",
    b"WWW-Authenticate: Digest ",
    b"realm=\"",
    b"nonce=\"",
    b"qop=\"auth\"",
    b"<",
    b">",
    b"@",
    b":",
    b";",
    b"[::1]",
    b"4294967296",
    b"m=audio ",
    b"c=IN IP4 ",
    b"a=rtpmap:",
];

/// What the transaction and dialog layers read of a message.
fn read_headers(msg: &SipMessage) {
    let _ = msg.via_header().map(|h| h.typed());
    let _ = msg.from_header().map(|h| h.typed());
    let _ = msg.to_header().map(|h| h.typed());
    let _ = msg.cseq_header().map(|h| h.typed());
    let _ = msg.contact_header().map(|h| h.typed());
    let _ = msg.call_id_header();
    for h in msg.headers().iter() {
        if let Header::WwwAuthenticate(w) = h {
            let _ = w.typed();
        }
    }
    if let SipMessage::Response(r) = msg {
        let _ = r.status_code().code();
        let _ = r.reason_phrase();
    }
}

fn check(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let (parsed, peak) = fuzz::measure(|| {
        let parsed = SipMessage::try_from(input);
        if let Ok(msg) = &parsed {
            read_headers(msg);
        }
        parsed
    });
    if peak > BYTES_PER_INPUT_BYTE * input.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to parse {} bytes",
            input.len()
        )));
    }
    if let Ok(msg) = parsed {
        let printed = msg.to_string();
        if let Err(e) = SipMessage::try_from(printed.as_str()) {
            return Err(fuzz::fail(format!(
                "printed back unparseable ({e}):\n{printed}"
            )));
        }
        let body = match &msg {
            SipMessage::Request(r) => r.body(),
            SipMessage::Response(r) => r.body(),
        };
        check_sdp(&String::from_utf8_lossy(body))?;
    }
    // The body on its own, as the gateway reads an answer's.
    check_sdp(&String::from_utf8_lossy(input))
}

fn check_sdp(sdp: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    let (answer, peak) = fuzz::measure(|| parse_answer(sdp));
    if peak > BYTES_PER_INPUT_BYTE * sdp.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to read {} bytes of SDP",
            sdp.len()
        )));
    }
    if let Ok(a) = answer {
        let line = sdp
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("m=audio "))
            .unwrap_or_default();
        let offered = |pt: u8| {
            line.split_whitespace()
                .skip(3)
                .any(|p| p.parse::<u8>() == Ok(pt))
        };
        if !offered(a.media.audio_pt) {
            return Err(fuzz::fail(format!(
                "{a:?} is not on the audio line {line:?}"
            )));
        }
    }
    Ok(())
}

#[test]
fn sip_datagrams_never_panic_nor_allocate_past_their_size() {
    fuzz::run("sip", TOKENS, check);
}

#[test]
fn sdp_answers_never_panic() {
    fuzz::run("sdp", TOKENS, |input| {
        check_sdp(&String::from_utf8_lossy(input))
    });
}
