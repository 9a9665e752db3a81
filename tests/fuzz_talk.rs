//! Fuzz target: the messages an operator's console sends on the live-talk
//! WebSocket, as the socket reads them (`api::read_talk_message`). See
//! docs/fuzzing.md.
//!
//! Asserts: no panic; a message is one the socket acts on or an error coded
//! `bad_json` or `bad_message` with a reason; reading holds at most
//! `BYTES_PER_INPUT_BYTE` × the message's length + `SLACK` at once.

mod fuzz;

use voicecare_server::api::read_talk_message;

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

const SLACK: usize = 64 << 10;
const BYTES_PER_INPUT_BYTE: usize = 48;

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"\"type\":",
    b"\"offer\"",
    b"\"candidate\"",
    b"\"hangup\"",
    b"\"ping\"",
    b"\"sdp\":",
    b"\"mode\":",
    b"\"join\"",
    b"\"call_back\"",
    b"\"sdp_mline_index\":",
    b"65536",
    b"-1",
    b"1e400",
    b"null",
];

fn check(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let text = String::from_utf8_lossy(input);
    let (read, peak) = fuzz::measure(|| read_talk_message(&text));
    if peak > BYTES_PER_INPUT_BYTE * text.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to read {} bytes",
            text.len()
        )));
    }
    if let Err((code, why)) = read
        && (!["bad_json", "bad_message"].contains(&code) || why.is_empty())
    {
        return Err(fuzz::fail(format!("{code}: {why:?}")));
    }
    Ok(())
}

#[test]
fn console_talk_messages_never_panic_and_errors_say_why() {
    fuzz::run("talk", TOKENS, check);
}
