//! Odd input never panics: damaged flow files, and calls fed arbitrary event
//! sequences in any order.

// Reading the shipped flow files is this test's job; the library never does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use voicecare_core::Level;
use voicecare_core::flow::{Action, Call, Event, Heard, Lang, Millis, PromptId, parse_flow};

fn shipped() -> Vec<(String, String)> {
    let dir = format!("{}/../../ivr-flows", env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("ivr-flows/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("readable"),
            )
        })
        .collect();
    v.sort();
    v
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn truncated_and_damaged_flows_are_rejected_with_positions_inside_the_file() {
    for (name, src) in shipped() {
        let lines = src.lines().count();
        let mut cuts = 0;
        for (i, _) in src.char_indices().step_by(13) {
            let cut = &src[..i];
            if let Err(e) = parse_flow(&name, cut) {
                for d in &e.0 {
                    assert!(d.pos.line >= 1 && d.pos.line <= lines + 1, "{d}");
                    assert!(d.pos.col >= 1, "{d}");
                }
                cuts += 1;
            }
        }
        assert!(cuts > 10, "{name}: truncations should mostly fail");
        // Dropping any single line never panics (and is usually caught).
        let all: Vec<&str> = src.lines().collect();
        let mut caught = 0;
        for skip in 0..all.len() {
            let damaged: String = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            if parse_flow(&name, &damaged).is_err() {
                caught += 1;
            }
        }
        assert!(caught > 0, "{name}");
    }
}

fn random_event(rng: &mut Rng, last_prompt: u32) -> Event {
    match rng.below(11) {
        0 => Event::Answered,
        1 | 2 => Event::PromptFinished {
            id: PromptId(last_prompt.saturating_sub(rng.below(2) as u32)),
        },
        3 | 4 => {
            let texts = [
                "",
                "yes",
                "no",
                "help",
                "repeat",
                "I don't understand",
                "我摔倒了",
                "嗯",
                "fine",
            ];
            let level = Level::ALL[rng.below(4) as usize];
            Event::Heard(Heard {
                transcript: texts[rng.below(texts.len() as u64) as usize].to_string(),
                lang: Some(Lang::En),
                asr_confidence: (rng.below(100) as f32) / 100.0,
                level,
                categories: vec![],
                needs_confirmation: rng.below(3) == 0,
            })
        }
        5 => Event::Digit(['1', '2', '*', '#', '9'][rng.below(5) as usize]),
        6 => Event::SpeechStarted,
        7 => Event::NoInput,
        8 => Event::Tick,
        9 => Event::RecordingFinished { reference: None },
        _ => {
            if rng.below(20) == 0 {
                Event::HungUp
            } else {
                Event::OperatorJoined
            }
        }
    }
}

#[test]
fn random_event_storms_never_panic_and_finish_exactly_once() {
    let flows: Vec<_> = shipped()
        .into_iter()
        .map(|(n, s)| Arc::new(parse_flow(&n, &s).unwrap_or_else(|e| panic!("{e}"))))
        .collect();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut finished_calls = 0;
    for round in 0..300 {
        let flow = Arc::clone(&flows[round % flows.len()]);
        let lang = if round % 2 == 0 { Lang::En } else { Lang::Zh };
        let mut call = Call::new(flow, lang, BTreeMap::new());
        let mut now = Millis(0);
        let mut finished = 0;
        let mut last_prompt = 0;
        let mut ev = Event::Answered;
        for _ in 0..400 {
            now = now.plus(rng.below(20_000));
            for a in call.handle(now, ev) {
                match a {
                    Action::Finished(_) => finished += 1,
                    Action::Play(p) => {
                        assert_eq!(p.lang, lang);
                        assert!(p.rate >= 0.5 && p.rate <= 1.5);
                        last_prompt = p.id.0;
                    }
                    _ => {}
                }
            }
            ev = random_event(&mut rng, last_prompt);
        }
        let _ = call.handle(now, Event::HungUp);
        assert!(call.is_finished());
        assert!(finished <= 1, "finished {finished} times");
        assert!(call.report().is_some());
        finished_calls += finished;
    }
    // The storms do reach the end of many calls on their own.
    assert!(finished_calls > 50, "{finished_calls}");
}
