//! Fuzz target: flow files, through the parser and checker as `voicecare flow
//! check`, engine start and hot reload run them, then a call through every
//! flow that passes. See docs/fuzzing.md.
//!
//! Asserts: no panic; a rejected file gets at least one diagnostic, each at
//! a line and column inside the file; an accepted file runs a call that ends
//! once and reports; parsing and checking hold at most `BYTES_PER_INPUT_BYTE` ×
//! the file's length + `SLACK` at once (every step, prompt and diagnostic
//! comes from a stretch of the file).

// Reading the corpus is this test's job; the library never reads files.
#![allow(clippy::disallowed_methods)]

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use voicecare_core::Level;
use voicecare_core::flow::{
    Action, Call, Event, FlowSet, Heard, Millis, PromptId, parse_flow, parse_template,
};

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

const SLACK: usize = 256 << 10;
const BYTES_PER_INPUT_BYTE: usize = 64;

const TOKENS: &[&[u8]] = &[
    b"[flow]\n",
    b"[[step]]\n",
    b"id = ",
    b"type = ",
    b"\"say\"",
    b"\"ask\"",
    b"\"menu\"",
    b"\"set\"",
    b"\"record\"",
    b"\"hangup\"",
    b"\"transfer\"",
    b"\"escalate\"",
    b"next = ",
    b"start = ",
    b"prompt.en = ",
    b"prompt.zh = ",
    b"languages = [\"zh\", \"en\"]\n",
    b"on = [{ key = \"1\", next = \"a\" }]\n",
    b"{elder_name}",
    b"{",
    b"}",
    b"\"\"\"",
    b"'''",
    b"[",
    b"]",
    b" = ",
    b"\n",
    b"#",
    b"\\u0000",
    b"1e999",
    b"inf",
    b"-0",
];

fn event(byte: u8, last_prompt: u32) -> Event {
    match byte % 10 {
        0 => Event::Answered,
        1 | 2 => Event::PromptFinished {
            id: PromptId(last_prompt),
        },
        3 | 4 => Event::Heard(Heard {
            transcript: ["yes", "no", "help", "我摔倒了", ""][byte as usize % 5].to_string(),
            lang: None,
            asr_confidence: 0.9,
            level: Level::ALL[byte as usize % Level::ALL.len()],
            categories: vec![],
            needs_confirmation: byte.is_multiple_of(7),
        }),
        5 => Event::Digit(['1', '2', '*', '#'][byte as usize % 4]),
        6 => Event::NoInput,
        7 => Event::Tick,
        8 => Event::RecordingFinished { reference: None },
        _ => Event::SpeechStarted,
    }
}

fn check(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let text = String::from_utf8_lossy(input);
    let (parsed, peak) = fuzz::measure(|| parse_flow("fuzz.toml", &text));
    if peak > BYTES_PER_INPUT_BYTE * text.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to parse {} bytes",
            text.len()
        )));
    }
    let lines = text.lines().count().max(1);
    match parsed {
        Err(errors) => {
            if errors.0.is_empty() {
                return Err(fuzz::fail("rejected without a diagnostic"));
            }
            for d in &errors.0 {
                if d.pos.line < 1 || d.pos.line > lines + 1 || d.pos.col < 1 {
                    return Err(fuzz::fail(format!(
                        "diagnostic outside the file ({lines} lines): {d}"
                    )));
                }
                if d.message.trim().is_empty() {
                    return Err(fuzz::fail(format!("empty diagnostic at {d}")));
                }
            }
        }
        Ok(flow) => {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            let flow = Arc::new(flow);
            let lang = flow.languages[0];
            let inputs: BTreeMap<String, String> = flow
                .inputs
                .iter()
                .map(|i| (i.clone(), "x".to_string()))
                .collect();
            let mut call = Call::new(Arc::clone(&flow), lang, inputs);
            let (mut now, mut finished, mut last_prompt) = (Millis(0), 0, 0);
            let mut ev = Event::Answered;
            for &b in input.iter().cycle().take(200) {
                now = now.plus(1 + b as u64 * 97);
                for a in call.handle(now, ev) {
                    match a {
                        Action::Finished(_) => finished += 1,
                        Action::Play(p) => last_prompt = p.id.0,
                        _ => {}
                    }
                }
                ev = event(b, last_prompt);
            }
            for a in call.handle(now, Event::HungUp) {
                if let Action::Finished(_) = a {
                    finished += 1;
                }
            }
            if finished > 1 || !call.is_finished() || call.report().is_none() {
                return Err(fuzz::fail(format!("the call finished {finished} times")));
            }
        }
    }
    // Hot reload keeps the flows it has when a file turns bad.
    let mut set = FlowSet::new();
    let _ = set.update("fuzz.toml", &text);
    // Prompt templates on their own.
    for line in text.lines().take(50) {
        let _ = parse_template(line);
    }
    Ok(())
}

/// Inputs that passed the checker and ran a call.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn flow_files_never_panic_and_every_error_points_into_the_file() {
    fuzz::run("flow", TOKENS, check);
    eprintln!(
        "flow: {} inputs ran a call",
        ACCEPTED.load(Ordering::Relaxed)
    );
}
