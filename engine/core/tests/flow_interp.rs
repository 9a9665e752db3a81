//! The call interpreter driven by scripted events on a simulated clock.

// Reading the shipped flow files is this test's job; the library never does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use voicecare_core::Level;
use voicecare_core::flow::{
    Action, Call, Event, Flow, Heard, InputMode, Lang, Millis, Outcome, Play, parse_flow,
};

fn load(name: &str) -> Arc<Flow> {
    let path = format!("{}/../../ivr-flows/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).expect("shipped flow");
    Arc::new(parse_flow(&format!("ivr-flows/{name}.toml"), &src).unwrap_or_else(|e| panic!("{e}")))
}

fn flow(src: &str) -> Arc<Flow> {
    Arc::new(parse_flow("test.toml", src).unwrap_or_else(|e| panic!("{e}")))
}

/// A call plus a simulated clock and everything it has done.
struct Sim {
    call: Call,
    now: Millis,
    log: Vec<Action>,
}

impl Sim {
    fn new(flow: Arc<Flow>, lang: Lang) -> Sim {
        let inputs: BTreeMap<String, String> = [
            ("elder_name", "Mrs Chen"),
            ("service_name", "Sunrise Care"),
            ("callback_when", "this afternoon"),
            ("contact_name", "David"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Sim {
            call: Call::new(flow, lang, inputs),
            now: Millis(0),
            log: Vec::new(),
        }
    }

    fn send(&mut self, ev: Event) -> Vec<Action> {
        let out = self.call.handle(self.now, ev);
        self.log.extend(out.iter().cloned());
        out
    }

    fn wait(&mut self, ms: u64) {
        self.now = self.now.plus(ms);
    }

    /// Waits until the armed timer and delivers the tick.
    fn time_out(&mut self) -> Vec<Action> {
        let at = self
            .log
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::SetTimer { at } => Some(*at),
                _ => None,
            })
            .expect("a timer is armed");
        self.now = self.now.max(at);
        self.send(Event::Tick)
    }

    fn last_play(&self) -> Play {
        self.log
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Play(p) => Some(p.clone()),
                _ => None,
            })
            .expect("something was played")
    }

    /// Finishes the prompt currently playing.
    fn finish_prompt(&mut self) -> Vec<Action> {
        self.wait(3000);
        let id = self.last_play().id;
        self.send(Event::PromptFinished { id })
    }

    fn say(&mut self, text: &str) -> Vec<Action> {
        self.say_with(text, Level::Ok, false)
    }

    fn say_with(&mut self, text: &str, level: Level, unsure: bool) -> Vec<Action> {
        self.wait(1500);
        self.send(Event::Heard(Heard {
            transcript: text.to_string(),
            lang: Some(self.call.lang()),
            asr_confidence: 0.9,
            level,
            categories: if level > Level::Ok {
                vec!["fall".to_string()]
            } else {
                vec![]
            },
            needs_confirmation: unsure,
        }))
    }

    fn step(&self) -> String {
        self.call.current_step().unwrap_or("-").to_string()
    }

    fn outcome(&self) -> Outcome {
        self.call.report().expect("finished").outcome.clone()
    }

    fn escalations(&self) -> Vec<(Level, bool)> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Escalate {
                    level,
                    keep_on_line,
                    ..
                } => Some((*level, *keep_on_line)),
                _ => None,
            })
            .collect()
    }
}

/// Answers the greeting and lets it play out, arriving at "how are you".
fn at_how_are_you(lang: Lang) -> Sim {
    let mut s = Sim::new(load("daily_checkin"), lang);
    let first = s.send(Event::Answered);
    match &first[..] {
        [Action::Play(p)] => {
            assert!(!p.barge_in, "the recording notice cannot be skipped");
            assert!((p.rate - 0.9).abs() < 1e-6);
        }
        other => panic!("expected one greeting, got {other:?}"),
    }
    s.finish_prompt();
    assert_eq!(s.step(), "how_are_you");
    s
}

#[test]
fn daily_checkin_in_english_completes_ok() {
    let mut s = at_how_are_you(Lang::En);
    assert!(s.log.iter().any(|a| matches!(a, Action::Play(p) if p.text.starts_with("Hello Mrs Chen, this is your daily check-in call from Sunrise Care."))));
    let out = s.finish_prompt();
    assert!(matches!(out[..], [Action::SetTimer { .. }]), "{out:?}");
    s.say("I'm fine thank you");
    assert_eq!(s.step(), "ask_meals");
    s.finish_prompt();
    s.say("yes I had noodles");
    assert_eq!(s.step(), "ask_medication");
    s.finish_prompt();
    s.say("yes");
    assert_eq!(s.step(), "ask_sleep");
    s.finish_prompt();
    s.say("quite well");
    assert_eq!(s.step(), "anything_else");
    s.finish_prompt();
    s.say("no, that's all");
    let out = s.finish_prompt();
    assert_eq!(out.first(), Some(&Action::Hangup));
    assert_eq!(s.outcome(), Outcome::CompletedOk);
    let report = s.call.report().expect("finished");
    assert_eq!(
        report.variables.get("meals").map(String::as_str),
        Some("yes I had noodles")
    );
    assert_eq!(
        report.variables.get("sleep").map(String::as_str),
        Some("quite well")
    );
    assert_eq!(report.answers, 5);
    assert!(report.escalated.is_none());
    assert!(s.escalations().is_empty());
    // Nothing after the end.
    assert!(s.send(Event::Tick).is_empty());
}

#[test]
fn daily_checkin_in_mandarin_speaks_mandarin() {
    let mut s = at_how_are_you(Lang::Zh);
    assert!(s.last_play().text.contains("您今天身体怎么样"));
    s.finish_prompt();
    s.say("挺好的");
    s.finish_prompt();
    s.say("嗯，吃了");
    assert_eq!(s.step(), "ask_medication");
    s.finish_prompt();
    s.say("没有");
    assert_eq!(s.step(), "medication_reminder");
    assert!(s.last_play().text.contains("请按照医生的嘱咐吃药"));
    s.finish_prompt();
    assert_eq!(s.step(), "ask_sleep");
    let report_vars = s.log.iter().any(|a| {
        matches!(a, Action::RecordVariable { name, value } if name == "medication_missed" && value == "yes")
    });
    assert!(report_vars);
    assert!(
        s.log
            .iter()
            .all(|a| !matches!(a, Action::Play(p) if p.lang != Lang::Zh))
    );
}

#[test]
fn barge_in_only_on_real_words_or_keys() {
    let mut s = at_how_are_you(Lang::En);
    // Raw voice activity and empty transcripts (a cough) do not stop the prompt.
    assert!(s.send(Event::SpeechStarted).is_empty());
    s.wait(200);
    assert!(s.say("  ").is_empty());
    assert_eq!(s.step(), "how_are_you");
    // Real words do, before anything else happens.
    let out = s.say("I'm alright");
    assert_eq!(out.first(), Some(&Action::StopPlayback));
    assert_eq!(s.step(), "ask_meals");
}

#[test]
fn listening_uses_the_long_endpointing_of_the_flow() {
    let mut s = Sim::new(load("daily_checkin"), Lang::En);
    let _ = s.send(Event::Answered);
    let out = s.finish_prompt();
    let listen = out
        .iter()
        .find_map(|a| match a {
            Action::StartListening {
                mode,
                end_of_utterance_ms,
                ..
            } => Some((*mode, *end_of_utterance_ms)),
            _ => None,
        })
        .expect("starts listening with the question");
    assert_eq!(listen, (InputMode::Both, 1200));
}

#[test]
fn repeat_on_request_replays_slower_without_using_a_retry() {
    let mut s = at_how_are_you(Lang::En);
    let question = s.last_play();
    s.finish_prompt();
    for ask_again in [
        Event::Digit('*'),
        Event::Heard(Heard {
            transcript: "sorry, say that again?".into(),
            lang: Some(Lang::En),
            asr_confidence: 0.8,
            level: Level::Ok,
            categories: vec![],
            needs_confirmation: false,
        }),
    ] {
        s.wait(1000);
        let _ = s.send(ask_again);
        let again = s.last_play();
        assert_ne!(again.id, question.id);
        assert_eq!(again.text, question.text);
        assert!(
            again.rate < question.rate,
            "{} < {}",
            again.rate,
            question.rate
        );
        s.finish_prompt();
    }
    assert_eq!(s.step(), "how_are_you");
    // Retries are untouched: silence still gets the no-input prompt first.
    let _ = s.time_out();
    assert!(s.last_play().text.starts_with("I'm still here."));
}

#[test]
fn mandarin_repeat_request() {
    let mut s = at_how_are_you(Lang::Zh);
    s.finish_prompt();
    let before = s.last_play();
    s.say("啊？你再说一遍");
    assert_eq!(s.last_play().text, before.text);
    assert_ne!(s.last_play().id, before.id);
}

#[test]
fn silence_gets_a_reprompt_then_are_you_still_there_then_answered_silent() {
    let src = r#"
[flow]
id = "t"
languages = ["en"]
start = "q"
no_input_timeout_ms = 5000
retries = 1

[[step]]
id = "q"
type = "ask"
prompt.en = "How are you?"
no_input.en = "Hello? How are you today?"
next = "bye"

[[step]]
id = "bye"
type = "hangup"
prompt.en = "Bye"
"#;
    let mut s = Sim::new(flow(src), Lang::En);
    let _ = s.send(Event::Answered);
    s.finish_prompt();
    // A tick before the deadline does nothing.
    s.wait(1000);
    assert!(s.send(Event::Tick).is_empty());
    let _ = s.time_out();
    assert_eq!(s.last_play().text, "Hello? How are you today?");
    s.finish_prompt();
    let _ = s.time_out();
    assert!(s.last_play().text.starts_with("Are you still there?"));
    s.finish_prompt();
    let _ = s.time_out();
    assert!(s.last_play().text.starts_with("I can't hear you"));
    let out = s.finish_prompt();
    assert!(out.contains(&Action::Hangup), "{out:?}");
    assert_eq!(s.outcome(), Outcome::AnsweredSilent);
}

#[test]
fn voice_activity_postpones_the_no_input_timeout() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.wait(7000);
    let out = s.send(Event::SpeechStarted);
    let Some(Action::SetTimer { at }) = out.first() else {
        panic!("expected a later timer, got {out:?}");
    };
    assert!(at.0 >= s.now.0 + 8000);
    // The old deadline passes without a re-prompt.
    s.wait(1500);
    assert!(s.send(Event::Tick).is_empty());
    s.say("sorry I was thinking, I'm fine");
    assert_eq!(s.step(), "ask_meals");
}

#[test]
fn distress_heard_anywhere_escalates_an_emergency_and_keeps_the_elder_on_the_line() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.say("fine");
    s.finish_prompt();
    // Answering "have you eaten" with a fall: distress wins over "yes".
    let out = s.say_with("yes but I fell and can't get up", Level::Emergency, false);
    let esc = out
        .iter()
        .find_map(|a| match a {
            Action::Escalate {
                level,
                reasons,
                keep_on_line,
            } => Some((*level, reasons.clone(), *keep_on_line)),
            _ => None,
        })
        .expect("escalated");
    assert_eq!(esc.0, Level::Emergency);
    assert!(esc.2);
    assert!(esc.1.iter().any(|r| r.contains("fall")), "{:?}", esc.1);
    assert!(
        esc.1.iter().any(|r| r.contains("can't get up")),
        "{:?}",
        esc.1
    );
    assert!(out.contains(&Action::Hold));
    assert!(
        s.last_play()
            .text
            .contains("An operator is joining you now")
    );
    // Reassurance repeats while waiting.
    let first = s.last_play().id;
    let out = s.finish_prompt();
    assert!(matches!(out[..], [Action::SetTimer { .. }]));
    let _ = s.time_out();
    assert_ne!(s.last_play().id, first);
    assert!(
        s.last_play()
            .text
            .contains("An operator is joining you now")
    );
    // The operator picks up mid-reassurance.
    let out = s.send(Event::OperatorJoined);
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(out[1], Action::TransferToOperator);
    assert!(!out.contains(&Action::Hangup));
    assert_eq!(
        s.outcome(),
        Outcome::Escalated {
            level: Level::Emergency
        }
    );
}

#[test]
fn unsure_distress_is_confirmed_by_key_before_escalating() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("I think I might have fallen", Level::Urgent, true);
    assert_eq!(s.step(), "confirm_distress");
    assert!(
        s.escalations().is_empty(),
        "nothing raised before confirming"
    );
    assert!(s.last_play().text.contains("Press 1 or say yes"));
    s.finish_prompt();
    s.wait(2000);
    let _ = s.send(Event::Digit('1'));
    assert_eq!(s.escalations(), vec![(Level::Urgent, true)]);
    let _ = s.send(Event::HungUp);
    assert_eq!(
        s.outcome(),
        Outcome::Escalated {
            level: Level::Urgent
        }
    );
}

#[test]
fn unsure_distress_denied_carries_on() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("I had a fall last year", Level::Watch, true);
    // Watch is below the flow's distress level: the ask's own path runs,
    // and its assess step asks to confirm.
    assert_eq!(s.step(), "confirm_distress");
    s.finish_prompt();
    s.say("no, I'm fine now");
    assert_eq!(s.step(), "ask_meals");
    assert!(s.escalations().is_empty());
}

#[test]
fn help_key_reaches_an_operator_from_any_question() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.say("fine");
    // Pressed while "have you eaten" is still playing.
    s.wait(500);
    let out = s.send(Event::Digit('1'));
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(s.escalations(), vec![(Level::Emergency, true)]);
}

#[test]
fn elder_hanging_up_right_after_a_distress_phrase_is_flagged_and_escalated() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("my chest hurts", Level::Urgent, true);
    assert_eq!(s.step(), "confirm_distress");
    let out = s.send(Event::HungUp);
    assert!(
        out.iter().any(|a| matches!(a, Action::Escalate { level: Level::Urgent, reasons, keep_on_line: false } if reasons[0].contains("dropped right after a distress phrase"))),
        "{out:?}"
    );
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: true
        }
    );
}

#[test]
fn hanging_up_after_an_unrelated_answer_to_the_confirming_question_still_escalates() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("my chest hurts", Level::Urgent, true);
    assert_eq!(s.step(), "confirm_distress");
    s.finish_prompt();
    // Not a yes, not a no: the question is asked again, then the line drops.
    let _ = s.say("I had my lunch");
    assert!(s.escalations().is_empty());
    let out = s.send(Event::HungUp);
    assert!(
        out.iter().any(|a| matches!(a, Action::Escalate { level: Level::Urgent, reasons, .. } if reasons[1].contains("my chest hurts"))),
        "{out:?}"
    );
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: true
        }
    );
}

#[test]
fn hanging_up_after_denying_an_unsure_finding_is_not_escalated() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("my chest hurts", Level::Urgent, true);
    assert_eq!(s.step(), "confirm_distress");
    s.finish_prompt();
    let _ = s.say("no");
    assert_ne!(s.step(), "confirm_distress");
    let _ = s.send(Event::HungUp);
    assert!(s.escalations().is_empty(), "{:?}", s.escalations());
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: false
        }
    );
}

#[test]
fn ordinary_hang_up_is_its_own_outcome() {
    let mut s = at_how_are_you(Lang::En);
    let out = s.send(Event::HungUp);
    assert!(!out.contains(&Action::Hangup));
    assert!(s.escalations().is_empty());
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: false
        }
    );
}

#[test]
fn hanging_up_during_the_goodbye_is_a_normal_end() {
    let mut s = Sim::new(load("operator_callback"), Lang::En);
    let _ = s.send(Event::Answered);
    assert!(s.last_play().text.contains("call you back this afternoon"));
    s.finish_prompt();
    s.finish_prompt();
    s.say("no thanks");
    assert!(s.last_play().text.starts_with("Thank you, Mrs Chen."));
    let out = s.send(Event::HungUp);
    assert!(!out.contains(&Action::Hangup));
    assert_eq!(s.outcome(), Outcome::CompletedOk);
}

#[test]
fn repeated_i_dont_understand_ends_as_not_understood() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.say("what? I don't understand");
    s.finish_prompt();
    s.say("I don't understand");
    assert_eq!(s.step(), "how_are_you");
    s.finish_prompt();
    s.say("我听不懂");
    assert!(s.last_play().text.contains("hard to follow"));
    s.finish_prompt();
    s.finish_prompt();
    assert_eq!(s.outcome(), Outcome::NotUnderstood);
}

#[test]
fn help_line_request_for_help_is_an_emergency_kept_on_the_line() {
    for (lang, words) in [(Lang::En, "please help me"), (Lang::Zh, "救命啊")] {
        let mut s = Sim::new(load("help_line"), lang);
        let _ = s.send(Event::Answered);
        s.wait(2000);
        // Words during the welcome cut it short.
        let out = s.say(words);
        assert_eq!(out[0], Action::StopPlayback);
        assert_eq!(s.escalations(), vec![(Level::Emergency, true)], "{lang}");
        assert!(out.contains(&Action::Hold));
        let reassurance = s.last_play();
        assert!(!reassurance.barge_in);
        let _ = s.send(Event::OperatorJoined);
        assert_eq!(
            s.outcome(),
            Outcome::Escalated {
                level: Level::Emergency
            }
        );
    }
}

#[test]
fn help_line_silence_is_treated_as_an_emergency() {
    let mut s = Sim::new(load("help_line"), Lang::En);
    let _ = s.send(Event::Answered);
    s.finish_prompt();
    for _ in 0..3 {
        let _ = s.time_out();
        if s.escalations().is_empty() {
            s.finish_prompt();
        }
    }
    assert_eq!(s.escalations(), vec![(Level::Emergency, true)]);
}

#[test]
fn stale_prompt_finished_is_ignored() {
    let mut s = at_how_are_you(Lang::En);
    let old = s.last_play().id;
    s.finish_prompt();
    let _ = s.send(Event::Digit('*'));
    // The first prompt's late completion must not start the no-input timer.
    assert!(s.send(Event::PromptFinished { id: old }).is_empty());
}

#[test]
fn low_confidence_answers_are_asked_again() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.say("fine");
    s.finish_prompt();
    s.wait(1000);
    let _ = s.send(Event::Heard(Heard {
        transcript: "mumble".into(),
        lang: Some(Lang::En),
        asr_confidence: 0.1,
        level: Level::Ok,
        categories: vec![],
        needs_confirmation: false,
    }));
    assert_eq!(s.step(), "ask_meals");
    assert_eq!(s.last_play().text, "Sorry, I didn't catch that.");
}

#[test]
fn variables_branches_and_recording() {
    let src = r#"
[flow]
id = "t"
languages = ["en", "zh"]
start = "mark"
inputs = ["elder_name", "nickname"]

[[step]]
id = "mark"
type = "set"
vars = { greeting = "Hi {elder_name}" }
next = "which"

[[step]]
id = "which"
type = "branch"
when = [
  { var = "nickname", is_set = true, next = "bye" },
  { var = "greeting", equals = "Hi Mrs Chen", next = "leave_message" },
]
next = "bye"

[[step]]
id = "leave_message"
type = "record"
prompt = { en = "{greeting}. Leave a message for your family after the tone.", zh = "{greeting}。请在提示音后给家人留言。" }
save = "message_audio"
max_ms = 30000
next = "bye"

[[step]]
id = "bye"
type = "hangup"
"#;
    let mut s = Sim::new(flow(src), Lang::En);
    let _ = s.send(Event::Answered);
    assert_eq!(
        s.last_play().text,
        "Hi Mrs Chen. Leave a message for your family after the tone."
    );
    let out = s.finish_prompt();
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::StartRecording { max_ms: 30000, .. }))
    );
    s.wait(20_000);
    let out = s.send(Event::RecordingFinished {
        reference: Some("rec/123.wav".into()),
    });
    assert!(out.contains(&Action::Hangup));
    let report = s.call.report().expect("finished");
    assert_eq!(
        report.variables.get("message_audio").map(String::as_str),
        Some("rec/123.wav")
    );
    assert_eq!(report.path, vec!["mark", "which", "leave_message", "bye"]);
    assert_eq!(report.outcome, Outcome::CompletedOk);
}

#[test]
fn a_flow_in_one_language_speaks_it_whatever_the_elder_prefers() {
    let src = r#"
[flow]
id = "t"
languages = ["en"]
start = "bye"

[[step]]
id = "bye"
type = "hangup"
prompt.en = "Goodbye"
"#;
    let mut s = Sim::new(flow(src), Lang::Zh);
    let _ = s.send(Event::Answered);
    assert_eq!(s.last_play().lang, Lang::En);
}

#[test]
fn events_before_answer_are_ignored_and_a_hang_up_ends_it() {
    let mut s = Sim::new(load("daily_checkin"), Lang::En);
    assert!(s.send(Event::Tick).is_empty());
    assert!(s.send(Event::Digit('1')).is_empty());
    let _ = s.send(Event::HungUp);
    assert!(s.call.is_finished());
    assert!(s.escalations().is_empty());
}

#[test]
fn help_key_works_even_during_the_unskippable_greeting() {
    let mut s = Sim::new(load("daily_checkin"), Lang::Zh);
    let _ = s.send(Event::Answered);
    assert!(!s.last_play().barge_in);
    // Another key does not skip the recording notice...
    s.wait(500);
    assert!(s.send(Event::Digit('5')).is_empty());
    // ...but help does.
    let out = s.send(Event::Digit('1'));
    assert_eq!(out[0], Action::StopPlayback);
    assert_eq!(s.escalations(), vec![(Level::Emergency, true)]);
    assert!(s.last_play().text.contains("接线员马上就来"));
}

#[test]
fn emergency_contact_confirms_only_with_a_key() {
    let confirmed = |s: &Sim| {
        s.call
            .report()
            .and_then(|r| r.variables.get("contact_confirmed").cloned())
    };
    // Saying yes is not enough; key 1 is.
    let mut s = Sim::new(load("contact_confirm"), Lang::En);
    let _ = s.send(Event::Answered);
    assert!(s.last_play().text.contains("could not reach Mrs Chen"));
    s.finish_prompt();
    s.finish_prompt();
    s.say("yes sure");
    assert_eq!(s.step(), "can_you_check");
    s.wait(1000);
    let _ = s.send(Event::Digit('1'));
    s.finish_prompt();
    assert_eq!(confirmed(&s).as_deref(), Some("yes"));
    // Silence is not a confirmation.
    let mut s = Sim::new(load("contact_confirm"), Lang::Zh);
    let _ = s.send(Event::Answered);
    s.finish_prompt();
    s.finish_prompt();
    for _ in 0..3 {
        let _ = s.time_out();
        if s.step() == "can_you_check" {
            s.finish_prompt();
        }
    }
    s.finish_prompt();
    assert!(s.call.is_finished());
    assert_eq!(confirmed(&s).as_deref(), Some("no"));
}

#[test]
fn spoken_yes_to_a_confirmation_escalates_what_was_first_heard() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("I think I fell in the bathroom", Level::Urgent, true);
    assert_eq!(s.step(), "confirm_distress");
    s.finish_prompt();
    let out = s.say("yes");
    let (level, reasons) = out
        .iter()
        .find_map(|a| match a {
            Action::Escalate { level, reasons, .. } => Some((*level, reasons.clone())),
            _ => None,
        })
        .expect("escalated");
    // The level and words of the fall, not of the "yes".
    assert_eq!(level, Level::Urgent);
    assert!(
        reasons.iter().any(|r| r.contains("fell in the bathroom")),
        "{reasons:?}"
    );
}

#[test]
fn a_key_answer_is_not_assessed_with_the_words_of_an_earlier_one() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    s.say("fine");
    s.finish_prompt();
    s.say("yes");
    s.finish_prompt();
    // A watch-level "yes" to the medication question goes on to sleep.
    let _ = s.say_with("yes, though my knee aches a bit", Level::Watch, false);
    assert_eq!(s.step(), "ask_sleep");
    s.finish_prompt();
    s.wait(1000);
    // Answering the sleep question with a key: assess_sleep sees nothing to note.
    let _ = s.send(Event::Digit('5'));
    assert_eq!(s.step(), "anything_else");
    let report_path = s.call.report().map(|r| r.path.clone());
    assert!(report_path.is_none(), "still in the call");
    assert!(
        !s.log
            .iter()
            .any(|a| matches!(a, Action::RecordVariable { name, .. } if name == "sleep_note"))
    );
}

#[test]
fn a_drop_after_new_distress_is_escalated_even_after_an_earlier_escalation() {
    let src = r#"
[flow]
id = "t"
languages = ["en"]
start = "q1"

[[step]]
id = "q1"
type = "ask"
prompt.en = "How are you?"
next = "note"

[[step]]
id = "note"
type = "escalate"
level = "watch"
reason = "weekly note"
next = "q2"

[[step]]
id = "q2"
type = "ask"
prompt.en = "Anything else?"
next = "assess"

[[step]]
id = "assess"
type = "assess"
urgent = "help"
unsure = "confirm"
next = "bye"

[[step]]
id = "confirm"
type = "confirm"
prompt.en = "Did you fall? Press 1 for yes, 2 for no."
yes = "help"
no = "bye"

[[step]]
id = "help"
type = "escalate"
level = "assessed"
reason = "fall"
keep_on_line = true
prompt.en = "An operator is joining you now."

[[step]]
id = "bye"
type = "hangup"
"#;
    let mut s = Sim::new(flow(src), Lang::En);
    let _ = s.send(Event::Answered);
    s.finish_prompt();
    s.say("fine");
    assert_eq!(s.escalations(), vec![(Level::Watch, false)]);
    s.finish_prompt();
    let _ = s.say_with("I think I fell", Level::Urgent, true);
    assert_eq!(s.step(), "confirm");
    let _ = s.send(Event::HungUp);
    assert_eq!(
        s.escalations(),
        vec![(Level::Watch, false), (Level::Urgent, false)]
    );
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: true
        }
    );
    assert_eq!(
        s.call.report().and_then(|r| r.escalated),
        Some(Level::Urgent)
    );
}

#[test]
fn a_drop_after_denying_distress_is_an_ordinary_hang_up() {
    let mut s = at_how_are_you(Lang::En);
    s.finish_prompt();
    let _ = s.say_with("I think I fell", Level::Urgent, true);
    s.finish_prompt();
    let _ = s.say("no no");
    assert_eq!(s.step(), "ask_meals");
    let _ = s.send(Event::HungUp);
    assert_eq!(
        s.outcome(),
        Outcome::ElderHungUp {
            after_distress: false
        }
    );
    assert!(s.escalations().is_empty());
}
