//! Every flow shipped in `ivr-flows/` parses, passes the checker, and can be
//! walked to a hang-up in each of its languages.

// Reading the shipped files is this test's job; the library itself never does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use voicecare_core::Level;
use voicecare_core::flow::{Action, Call, Event, Flow, Heard, Lang, Millis, Outcome, parse_flow};

fn flows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-flows")
}

fn shipped() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(flows_dir())
        .expect("ivr-flows/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = format!(
                "ivr-flows/{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            (name, std::fs::read_to_string(&p).expect("readable"))
        })
        .collect();
    v.sort();
    v
}

fn inputs() -> BTreeMap<String, String> {
    [
        ("elder_name", "Mrs Chen"),
        ("service_name", "Sunrise Care"),
        ("callback_when", "this afternoon"),
        ("contact_name", "David"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn heard(text: &str, lang: Lang) -> Event {
    Event::Heard(Heard {
        transcript: text.to_string(),
        lang: Some(lang),
        asr_confidence: 0.9,
        level: Level::Ok,
        categories: vec![],
        needs_confirmation: false,
    })
}

/// Answers every question with "no" (the shortest way out of each flow),
/// finishes every prompt, and returns the report.
fn walk_saying_no(flow: Arc<Flow>, lang: Lang) -> (voicecare_core::flow::CallReport, Vec<Action>) {
    let no = if lang == Lang::Zh {
        "不用了，没有"
    } else {
        "no"
    };
    let mut call = Call::new(flow, lang, inputs());
    let mut now = Millis(0);
    let mut all = Vec::new();
    let mut pending = vec![Event::Answered];
    let mut listening = false;
    for _ in 0..500 {
        let Some(ev) = pending.pop() else { break };
        now = now.plus(500);
        let actions = call.handle(now, ev);
        let mut listening_after_prompt = false;
        for a in &actions {
            match a {
                Action::StartListening { .. } => {
                    assert!(!listening, "StartListening twice without StopListening");
                    listening = true;
                }
                Action::StopListening => listening = false,
                Action::Play(p) => {
                    assert!(
                        !p.text.is_empty() || p.audio.is_some(),
                        "empty prompt in {lang}"
                    );
                    assert!(!p.text.contains('{'), "unfilled variable in {:?}", p.text);
                    pending.insert(0, Event::PromptFinished { id: p.id });
                }
                Action::SetTimer { .. } => listening_after_prompt = true,
                Action::Hold => pending.insert(0, Event::OperatorJoined),
                _ => {}
            }
        }
        if listening_after_prompt && pending.is_empty() {
            pending.push(heard(no, lang));
        }
        all.extend(actions);
        if call.is_finished() {
            break;
        }
    }
    let report = call
        .report()
        .cloned()
        .expect("the walk reaches the end of the call");
    (report, all)
}

#[test]
fn the_product_flows_are_shipped() {
    let names: Vec<String> = shipped().into_iter().map(|(n, _)| n).collect();
    for want in [
        "daily_checkin",
        "help_line",
        "operator_callback",
        "contact_confirm",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} missing from {names:?}"
        );
    }
}

#[test]
fn every_shipped_flow_checks_and_walks_to_a_hangup() {
    let files = shipped();
    assert!(!files.is_empty());
    for (name, source) in files {
        let flow = match parse_flow(&name, &source) {
            Ok(f) => Arc::new(f),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            flow.languages,
            vec![Lang::Zh, Lang::En],
            "{name} speaks both"
        );
        for lang in Lang::ALL {
            let (report, actions) = walk_saying_no(Arc::clone(&flow), lang);
            assert_eq!(
                actions.iter().filter(|a| **a == Action::Hangup).count(),
                1,
                "{name} ({lang}) hangs up once: {:?}",
                report.path
            );
            assert_eq!(
                report.outcome,
                Outcome::CompletedOk,
                "{name} ({lang}): {report:?}"
            );
            assert!(report.escalated.is_none());
            let plays = actions
                .iter()
                .filter_map(|a| match a {
                    Action::Play(p) => Some(p),
                    _ => None,
                })
                .collect::<Vec<_>>();
            assert!(plays.iter().all(|p| p.lang == lang));
            let named = flow.inputs.iter().any(|i| i == "elder_name");
            assert!(
                !named || plays.iter().any(|p| p.text.contains("Mrs Chen")),
                "{name} greets or thanks the elder by name"
            );
            // The recording notice is given on every shipped flow.
            let notice = if lang == Lang::En {
                "recorded"
            } else {
                "录音"
            };
            assert!(
                plays.iter().any(|p| p.text.contains(notice)),
                "{name} ({lang}) recording notice"
            );
        }
    }
}
