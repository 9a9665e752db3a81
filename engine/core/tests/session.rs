//! A whole call without a network: the session driven by scripted events and
//! a fake clock, on the flows shipped in `ivr-flows/`. Each test is what a
//! driver would see on a real line, in the order it would see it.

// Reading the shipped flow files is this test's job; the library never does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use voicecare_core::flow::{Millis, PromptId, parse_flow};
use voicecare_core::session::escalation::{Escalation, PARTIAL_RULE};
use voicecare_core::session::{
    AudioInfo, CallOutcome, Direction, EndReason, Input, Output, Reading, Session, SessionEnd,
    Setup, Words,
};
use voicecare_core::{Lang, Level};

fn flow(id: &str) -> Arc<voicecare_core::flow::Flow> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../ivr-flows/{id}.toml"));
    let text = std::fs::read_to_string(&path).expect("shipped flow");
    Arc::new(parse_flow(&path.display().to_string(), &text).expect("shipped flows parse"))
}

/// One call as a driver would run it, on a clock the test moves.
struct Line {
    s: Session,
    now: u64,
    playing: Vec<PromptId>,
    timer: Option<Millis>,
    listening: bool,
    asked: Vec<i32>,
    log: Vec<Output>,
}

impl Line {
    fn call(flow_id: &str, lang: Lang, direction: Direction) -> Line {
        Line::call_with(flow_id, lang, direction, &[])
    }

    /// A call whose flow gets more inputs (the follow-ups from memory).
    fn call_with(flow_id: &str, lang: Lang, direction: Direction, more: &[(&str, &str)]) -> Line {
        let mut inputs = BTreeMap::from([
            ("elder_name".to_string(), "Mrs Chen".to_string()),
            ("service_name".to_string(), "Sunrise Care".to_string()),
            ("callback_when".to_string(), "today".to_string()),
        ]);
        inputs.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Line {
            s: Session::new(Setup {
                flow: flow(flow_id),
                lang,
                inputs,
                direction,
                last_seq: 0,
                screen: false,
            }),
            now: 0,
            playing: Vec::new(),
            timer: None,
            listening: false,
            asked: Vec::new(),
            log: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Output> {
        let out = self.s.handle(Millis(self.now), input);
        for o in &out {
            match o {
                Output::Play(p) => self.playing.push(p.id),
                Output::StopPlayback => self.playing.clear(),
                Output::SetTimer { at } => self.timer = Some(*at),
                Output::Listen { .. } => self.listening = true,
                Output::StopListening => self.listening = false,
                Output::Transcribe { seq } => self.asked.push(*seq),
                _ => {}
            }
        }
        self.log.extend(out.clone());
        out
    }

    /// Let every prompt play to its end, a second and a half each.
    fn play_out(&mut self) {
        while !self.playing.is_empty() && !self.s.is_finished() {
            let id = self.playing.remove(0);
            self.now += 1500;
            self.feed(Input::PromptFinished(id));
        }
    }

    /// The elder says `text`: voice, the end of the utterance, its reading.
    fn say(&mut self, text: &str) -> Vec<Output> {
        self.say_heard(text, 0.9, false)
    }

    fn say_heard(&mut self, text: &str, confidence: f32, low: bool) -> Vec<Output> {
        self.now += 300;
        self.feed(Input::SpeechStarted);
        self.now += 2000;
        let ended = self.feed(Input::UtteranceEnded);
        let seq = self
            .asked
            .pop()
            .expect("the session asks for the utterance to be read");
        assert!(ended.contains(&Output::Transcribe { seq }));
        self.now += 400;
        self.feed(Input::Reading(Reading::Final {
            seq,
            words: Some(Words {
                text: text.into(),
                confidence,
                low_confidence: low,
            }),
            audio: AudioInfo::default(),
        }))
    }

    /// Answer every question with the next answer (then "yes") until the call ends.
    fn converse(&mut self, answers: &[&str]) -> SessionEnd {
        let mut answers = answers.iter();
        for _ in 0..30 {
            self.play_out();
            if let Some(end) = self.end() {
                return end;
            }
            let a = answers.next().copied().unwrap_or("yes");
            self.say(a);
        }
        panic!("the call did not end: {:#?}", self.log);
    }

    fn fire_timer(&mut self) -> Vec<Output> {
        let at = self.timer.take().expect("a timer is set");
        self.now = self.now.max(at.0);
        self.feed(Input::Timer)
    }

    fn end(&self) -> Option<SessionEnd> {
        self.log.iter().find_map(|o| match o {
            Output::Finished(e) => Some(e.clone()),
            _ => None,
        })
    }

    fn escalations(&self) -> Vec<Escalation> {
        escalations(&self.log)
    }
}

fn escalations(out: &[Output]) -> Vec<Escalation> {
    out.iter()
        .filter_map(|o| match o {
            Output::Escalate(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn answered(flow_id: &str, lang: Lang) -> Line {
    let mut l = Line::call(flow_id, lang, Direction::Outbound);
    l.feed(Input::Answered);
    l.play_out();
    assert!(l.listening, "the first question listens: {:#?}", l.log);
    l
}

#[test]
fn a_fine_reply_goes_through_the_whole_check_in_without_an_escalation() {
    let mut l = answered("daily_checkin", Lang::En);
    let end = l.converse(&["I'm fine, thank you", "yes", "yes", "I slept well", "no"]);
    assert!(l.escalations().is_empty(), "{:?}", l.escalations());
    assert_eq!(end.outcome(), CallOutcome::Ok);
    assert_eq!(end.reason, EndReason::Normal);
    let stored: Vec<_> = l
        .log
        .iter()
        .filter_map(|o| match o {
            Output::StoreUtterance(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 5, "every reply is stored");
    assert_eq!(stored[0].step.as_deref(), Some("how_are_you"));
    assert!(stored.iter().all(|u| u.assessment.level == Level::Ok));
}

#[test]
fn an_emergency_heard_mid_reply_is_escalated_once_before_the_reply_ends() {
    let mut l = answered("daily_checkin", Lang::En);
    l.feed(Input::SpeechStarted);
    assert!(l.s.wants_early_readings());
    // Not yet: "I fell" may go on "... asleep".
    let early = l.feed(Input::Reading(Reading::SoFar {
        words: Words {
            text: "I fell".into(),
            confidence: 0.9,
            low_confidence: false,
        },
    }));
    assert!(escalations(&early).is_empty());
    let early = l.feed(Input::Reading(Reading::SoFar {
        words: Words {
            text: "Help me please, I fell down and".into(),
            confidence: 0.9,
            low_confidence: false,
        },
    }));
    let e = escalations(&early);
    assert_eq!(e.len(), 1, "{early:?}");
    assert_eq!(e[0].level, Level::Emergency);
    assert_eq!(e[0].reasons.last().unwrap().rule(), PARTIAL_RULE);
    assert!(
        !l.s.wants_early_readings(),
        "no more readings are needed for this reply"
    );

    // The reply ends; its final reading is judged and stored, and the flow
    // keeps the elder on the line: that changes the item, nothing else does.
    l.now += 1500;
    l.feed(Input::UtteranceEnded);
    let seq = l.asked.pop().unwrap();
    let at_end = l.feed(Input::Reading(Reading::Final {
        seq,
        words: Some(Words {
            text: "Help me please, I fell down and I can't get up".into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
    let again = escalations(&at_end);
    assert!(
        again.iter().all(|e| e.elder_on_line),
        "not raised again at the end of the reply, only updated to say the elder holds: {again:?}"
    );
    assert!(
        at_end.iter().any(
            |o| matches!(o, Output::StoreUtterance(u) if u.assessment.level == Level::Emergency)
        )
    );
    assert!(at_end.contains(&Output::Hold), "{at_end:?}");
}

#[test]
fn a_reading_at_a_pause_counts_only_while_the_elder_is_still_paused() {
    let mut l = answered("daily_checkin", Lang::En);
    l.feed(Input::SpeechStarted);
    let words = Words {
        text: "Help, I fell and I can't get up".into(),
        confidence: 0.9,
        low_confidence: false,
    };
    let gone_on = l.feed(Input::Reading(Reading::AtPause {
        words: words.clone(),
        still_paused: false,
    }));
    assert!(escalations(&gone_on).is_empty());
    let paused = l.feed(Input::Reading(Reading::AtPause {
        words,
        still_paused: true,
    }));
    assert_eq!(escalations(&paused).len(), 1);
}

#[test]
fn a_misheard_alarm_is_confirmed_and_a_yes_escalates() {
    let mut l = answered("daily_checkin", Lang::En);
    // The recogniser doubts its reading of an alarming reply.
    let out = l.say_heard("my chest hurts", 0.2, true);
    assert!(
        escalations(&out).is_empty(),
        "not before the elder confirms: {out:?}"
    );
    l.play_out();
    let confirming = l
        .log
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Play(p) => Some(p.text.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        confirming.contains("Do you need help right now"),
        "{confirming}"
    );
    let out = l.say("yes");
    let e = escalations(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    assert!(e[0].level >= Level::Urgent && e[0].elder_on_line);
}

#[test]
fn silence_re_prompts_then_ends_as_answered_silent() {
    let mut l = answered("daily_checkin", Lang::En);
    let mut plays = 0;
    for _ in 0..10 {
        if l.end().is_some() {
            break;
        }
        if l.timer.is_some() && l.playing.is_empty() {
            let out = l.fire_timer();
            plays += out.iter().filter(|o| matches!(o, Output::Play(_))).count();
        }
        l.play_out();
    }
    assert!(plays >= 1, "the elder is asked again: {:#?}", l.log);
    let end = l.end().expect("the call ends");
    assert_eq!(end.outcome(), CallOutcome::AnsweredSilent);
    assert!(l.escalations().is_empty());
}

#[test]
fn the_no_input_timer_waits_for_words_being_read() {
    let mut l = answered("daily_checkin", Lang::En);
    l.feed(Input::SpeechStarted);
    l.feed(Input::UtteranceEnded);
    let seq = l.asked.pop().unwrap();
    // The timer fires while the words are with the recogniser: nothing yet.
    let held = l.fire_timer();
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(l.s.readings_pending(), 1);
    let out = l.feed(Input::Reading(Reading::Final {
        seq,
        words: Some(Words {
            text: "I'm fine".into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
    assert!(out.iter().any(|o| matches!(o, Output::StoreUtterance(_))));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Play(p) if p.text.contains("still here"))),
        "the answer, not the re-prompt: {out:?}"
    );
}

#[test]
fn keypad_instead_of_speech_asks_for_help_and_an_operator_joins() {
    let mut l = answered("daily_checkin", Lang::Zh);
    let out = l.feed(Input::Digit('1'));
    let e = escalations(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    assert_eq!(e[0].level, Level::Emergency);
    assert!(e[0].elder_on_line);
    l.play_out();
    assert!(l.log.contains(&Output::Hold));
    let out = l.feed(Input::OperatorJoined);
    assert!(out.contains(&Output::BridgeToOperator), "{out:?}");
    let end = l.end().expect("the flow hands the call over and ends");
    assert!(end.bridged);
    assert_eq!(end.outcome(), CallOutcome::Escalated);
}

#[test]
fn a_hang_up_mid_prompt_ends_the_call_as_hung_up() {
    let mut l = Line::call("daily_checkin", Lang::En, Direction::Outbound);
    l.feed(Input::Answered);
    assert!(!l.playing.is_empty());
    let out = l.feed(Input::HungUp);
    let end = l.end().unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(end.reason, EndReason::ElderHungUp);
    assert_eq!(end.outcome(), CallOutcome::HungUp);
    assert!(l.escalations().is_empty());
}

#[test]
fn words_read_after_the_hang_up_are_stored_and_escalated() {
    let mut l = answered("daily_checkin", Lang::En);
    l.feed(Input::SpeechStarted);
    l.feed(Input::UtteranceEnded);
    let seq = l.asked.pop().unwrap();
    l.feed(Input::HungUp);
    assert!(l.end().is_some());
    assert_eq!(
        l.s.readings_pending(),
        1,
        "the driver waits for this reading"
    );
    let out = l.feed(Input::Reading(Reading::Final {
        seq,
        words: Some(Words {
            text: "I can't breathe, help".into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
    assert!(out.iter().any(|o| matches!(o, Output::StoreUtterance(_))));
    let e = escalations(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    assert_eq!(e[0].reasons[0].rule(), "runner.late_utterance");
    assert_eq!(l.s.readings_pending(), 0);
}

#[test]
fn a_lost_lease_hangs_up_and_ends_at_once() {
    let mut l = answered("daily_checkin", Lang::En);
    let out = l.feed(Input::LeaseLost);
    assert_eq!(out.first(), Some(&Output::HangUp));
    let end = l.end().unwrap();
    assert!(end.lost);
    assert_eq!(end.reason, EndReason::LeaseLost);
    // Nothing the line says afterwards reaches the flow.
    assert!(l.feed(Input::Digit('1')).is_empty());
}

#[test]
fn a_help_call_whose_media_never_connects_is_escalated() {
    let mut l = Line::call("help_line", Lang::En, Direction::Inbound);
    let out = l.feed(Input::MediaFailed);
    let e = escalations(&out);
    assert_eq!(e.len(), 1, "{out:?}");
    assert!(e[0].level >= Level::Urgent);
    assert_eq!(l.end().unwrap().reason, EndReason::MediaNeverConnected);

    // A check-in that never connected is the ladder's business, not an escalation.
    let mut l = Line::call("daily_checkin", Lang::En, Direction::Outbound);
    let out = l.feed(Input::MediaFailed);
    assert!(escalations(&out).is_empty());
}

#[test]
fn a_recorded_message_is_saved_as_the_next_utterance() {
    // The contact flow or a voicemail step records; here a one-step flow.
    let src = r#"
[flow]
id = "message"
languages = ["en"]
start = "rec"
[[step]]
id = "rec"
type = "record"
prompt.en = "Please leave a message."
max_ms = 30000
save = "message"
next = "bye"
[[step]]
id = "bye"
type = "hangup"
prompt.en = "Thank you."
"#;
    let f = Arc::new(parse_flow("message.toml", src).expect("flow parses"));
    let mut s = Session::new(Setup {
        flow: f,
        lang: Lang::En,
        inputs: BTreeMap::new(),
        direction: Direction::Outbound,
        last_seq: 4,
        screen: false,
    });
    let mut out = s.handle(Millis(0), Input::Answered);
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Play(p) => Some(p.id),
            _ => None,
        })
        .unwrap();
    out = s.handle(Millis(1000), Input::PromptFinished(id));
    assert!(
        out.iter().any(|o| matches!(o, Output::Record { .. })),
        "{out:?}"
    );
    s.handle(Millis(2000), Input::SpeechStarted);
    out = s.handle(Millis(6000), Input::UtteranceEnded);
    assert!(
        out.contains(&Output::SaveRecording { seq: 5 }),
        "numbered after earlier attempts: {out:?}"
    );
    out = s.handle(
        Millis(6100),
        Input::RecordingSaved {
            reference: Some("m.wav".into()),
        },
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Play(p) if p.text == "Thank you.")),
        "{out:?}"
    );
}

/// A call to a telephone number: the answer is screened before the flow speaks.
fn screened_call() -> Line {
    let mut l = Line::call("daily_checkin", Lang::Zh, Direction::Outbound);
    l.s = Session::new(Setup {
        flow: flow("daily_checkin"),
        lang: Lang::Zh,
        inputs: BTreeMap::from([
            ("elder_name".to_string(), "陈阿姨".to_string()),
            ("service_name".to_string(), "阳光关爱".to_string()),
        ]),
        direction: Direction::Outbound,
        last_seq: 0,
        screen: true,
    });
    l.feed(Input::Answered);
    assert!(
        l.listening && l.playing.is_empty(),
        "it listens first: {:#?}",
        l.log
    );
    l
}

/// Speech for `ms`, its end, and (if any) its words.
fn greet(l: &mut Line, ms: u64, words: Option<&str>) {
    l.feed(Input::SpeechStarted);
    l.now += ms + 500;
    l.feed(Input::UtteranceEnded);
    let seq = *l.asked.last().expect("the greeting is read");
    l.now += 300;
    l.feed(Input::Reading(Reading::Final {
        seq,
        words: words.map(|t| Words {
            text: t.into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
}

fn stored(l: &Line) -> usize {
    l.log
        .iter()
        .filter(|o| matches!(o, Output::StoreUtterance(_)))
        .count()
}

#[test]
fn a_person_who_says_hello_and_waits_gets_the_check_in() {
    let mut l = screened_call();
    l.now += 600;
    greet(&mut l, 500, Some("喂？"));
    // A second of quiet after a short hello: a person.
    for _ in 0..8 {
        if !l.playing.is_empty() {
            break;
        }
        l.fire_timer();
    }
    assert!(
        !l.playing.is_empty(),
        "the greeting prompt plays: {:#?}",
        l.log
    );
    assert!(l.end().is_none());
    assert_eq!(stored(&l), 0, "the hello is not stored as an answer");
    l.play_out();
    let end = l.converse(&["我很好", "是", "是", "睡得很好", "没有"]);
    assert_eq!(end.outcome(), CallOutcome::Ok, "{:#?}", l.log);
}

#[test]
fn a_long_greeting_is_an_answering_machine_and_the_call_is_not_reached() {
    let mut l = screened_call();
    l.now += 400;
    // Six seconds of greeting: long enough for a machine by its shape...
    greet(
        &mut l,
        6000,
        Some("您好，这里是王家，现在不方便接听，请留言"),
    );
    // ...and its words are a machine's.
    let end = l.end().expect("decided");
    assert_eq!(
        end.reason,
        EndReason::NotReached(voicecare_core::session::SetupFailure::Voicemail)
    );
    assert!(l.log.contains(&Output::HangUp));
    assert!(l.playing.is_empty(), "no check-in is left on a machine");
    assert!(l.escalations().is_empty());
    assert_eq!(stored(&l), 0);
    // A greeting that never stops is a machine too, once its words are overdue.
    let mut l = screened_call();
    l.now += 400;
    l.feed(Input::SpeechStarted);
    while l.end().is_none() && l.now < 20_000 {
        l.fire_timer();
    }
    assert_eq!(
        l.end().map(|e| e.reason),
        Some(EndReason::NotReached(
            voicecare_core::session::SetupFailure::Voicemail
        ))
    );
}

#[test]
fn an_elder_who_answers_with_a_long_cry_for_help_is_a_person_and_is_heard() {
    let mut l = screened_call();
    l.now += 300;
    greet(&mut l, 5000, Some("我摔倒了，起不来了，快来人救救我"));
    assert!(l.end().is_none(), "not a machine: {:#?}", l.log);
    assert_eq!(
        l.escalations().first().map(|e| e.level),
        Some(Level::Emergency),
        "the emergency is raised at once: {:#?}",
        l.log
    );
    assert_eq!(stored(&l), 1, "and the words are kept");
    assert!(!l.playing.is_empty(), "the call goes on");
}

#[test]
fn machine_words_or_a_beep_decide_at_once() {
    let mut l = screened_call();
    greet(&mut l, 1200, Some("您好，我现在不方便接听，请在嘀声后留言"));
    assert_eq!(
        l.end().map(|e| e.reason),
        Some(EndReason::NotReached(
            voicecare_core::session::SetupFailure::Voicemail
        ))
    );
    let mut l = screened_call();
    l.now += 300;
    l.feed(Input::Tone { hz: 1000.0 });
    assert!(l.end().is_some(), "a beep is a machine");
    // The network's own 450 Hz tone is not.
    let mut l = screened_call();
    l.feed(Input::Tone { hz: 450.0 });
    assert!(l.end().is_none());
}

#[test]
fn a_carriers_recording_after_the_answer_is_not_the_elder_and_not_distress() {
    let mut l = screened_call();
    greet(&mut l, 1500, Some("您拨打的电话已关机，请稍后再拨"));
    let end = l.end().expect("decided");
    assert_eq!(
        end.reason,
        EndReason::NotReached(voicecare_core::session::SetupFailure::SwitchedOff)
    );
    assert!(l.escalations().is_empty());
    assert_eq!(stored(&l), 0);
}

#[test]
fn silence_or_a_key_is_treated_as_a_person() {
    let mut l = screened_call();
    while l.playing.is_empty() && l.now < 10_000 {
        l.fire_timer();
    }
    assert!(
        !l.playing.is_empty(),
        "after 4 s of silence the flow speaks"
    );
    assert!(l.now >= 4000, "{}", l.now);
    let mut l = screened_call();
    l.now += 200;
    l.feed(Input::Digit('1'));
    assert!(!l.playing.is_empty(), "a key is a person");
    l.play_out();
    assert_eq!(
        l.escalations().first().map(|e| e.level),
        Some(Level::Emergency),
        "and the key counts: 1 asks for help: {:#?}",
        l.log
    );
}

#[test]
fn a_cry_for_help_then_a_hang_up_on_answering_is_still_heard() {
    let mut l = screened_call();
    l.now += 300;
    l.feed(Input::SpeechStarted);
    l.now += 4000;
    l.feed(Input::UtteranceEnded);
    let seq = *l.asked.last().expect("read");
    // The phone hangs up before the words are read: the session waits for them.
    l.feed(Input::HungUp);
    assert!(
        l.s.readings_pending() > 0,
        "the driver must wait for the reading"
    );
    l.feed(Input::Reading(Reading::Final {
        seq,
        words: Some(Words {
            text: "救命啊，我摔倒了，起不来了".into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
    assert_eq!(
        l.escalations().first().map(|e| e.level),
        Some(Level::Emergency),
        "{:#?}",
        l.log
    );
    assert_eq!(stored(&l), 1);
}

#[test]
fn an_elder_who_answers_slowly_with_a_whole_sentence_is_not_taken_for_a_machine() {
    let mut l = screened_call();
    l.now += 300;
    greet(&mut l, 5300, Some("喂，你好，我是张阿姨，你是哪位啊？"));
    assert!(l.end().is_none(), "{:#?}", l.log);
    assert!(!l.playing.is_empty(), "the check-in begins");
    // A long greeting followed by a beep is a machine.
    let mut l = screened_call();
    l.now += 300;
    l.feed(Input::SpeechStarted);
    l.now += 4500;
    l.fire_timer();
    l.feed(Input::Tone { hz: 1000.0 });
    assert_eq!(
        l.end().map(|e| e.reason),
        Some(EndReason::NotReached(
            voicecare_core::session::SetupFailure::Voicemail
        ))
    );
}

#[test]
fn a_greeting_still_being_read_when_the_beep_decides_is_not_the_elders() {
    let mut l = screened_call();
    l.now += 300;
    l.feed(Input::SpeechStarted);
    l.now += 2000;
    l.feed(Input::UtteranceEnded);
    let seq = *l.asked.last().expect("read");
    // The beep comes while the greeting's words are still being read.
    l.now += 600;
    l.feed(Input::Tone { hz: 1000.0 });
    let voicemail = EndReason::NotReached(voicecare_core::session::SetupFailure::Voicemail);
    assert_eq!(l.end().map(|e| e.reason), Some(voicemail));
    assert!(l.s.readings_pending() > 0, "the reading is still awaited");
    // Words that would be an elder's fall, were an elder saying them.
    l.feed(Input::Reading(Reading::Final {
        seq,
        words: Some(Words {
            text: "我摔倒了住院了，请在嘀声后留言".into(),
            confidence: 0.9,
            low_confidence: false,
        }),
        audio: AudioInfo::default(),
    }));
    assert_eq!(
        stored(&l),
        0,
        "the machine's words are not stored as the elder's"
    );
    assert!(l.escalations().is_empty(), "{:#?}", l.log);
    assert!(l.playing.is_empty(), "no check-in is left on a machine");
    assert_eq!(l.end().map(|e| e.reason), Some(voicemail));
}

/// What was played, in order.
fn played(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Play(p) => Some(p.text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn yesterdays_complaint_is_asked_about_first_and_its_answers_kept() {
    let knee = "昨天您说膝盖疼，今天好点了吗？好点了请按1，差不多请按2，更差了请按3。";
    let sleep = "昨天您说睡得不好，昨晚睡得好点了吗？好点了请按1，差不多请按2，更差了请按3。";
    let mut l = Line::call_with(
        "daily_checkin",
        Lang::Zh,
        Direction::Outbound,
        &[("follow_up_1", knee), ("follow_up_2", sleep)],
    );
    l.feed(Input::Answered);
    l.play_out();
    let asked = played(&l.log);
    assert_eq!(asked.last().map(String::as_str), Some(knee), "{asked:?}");
    // Key 1 here means "better", not the help key: no escalation.
    let out = l.feed(Input::Digit('1'));
    assert!(escalations(&out).is_empty(), "{out:?}");
    l.play_out();
    assert_eq!(played(&l.log).last().map(String::as_str), Some(sleep));
    l.say("还是睡不好");
    l.play_out();
    assert!(
        played(&l.log).last().unwrap().contains("今天身体怎么样"),
        "then the usual first question"
    );
    let end = l.converse(&["挺好的", "吃了", "吃了", "睡得还行", "没有"]);
    let vars = &end.report.expect("the flow ran to its end").variables;
    assert_eq!(
        vars.get("follow_up_1_answer").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        vars.get("follow_up_2_answer").map(String::as_str),
        Some("还是睡不好")
    );
}

#[test]
fn with_nothing_to_follow_up_the_check_in_starts_as_before() {
    let mut l = Line::call_with(
        "daily_checkin",
        Lang::En,
        Direction::Outbound,
        &[("follow_up_1", ""), ("follow_up_2", "")],
    );
    l.feed(Input::Answered);
    l.play_out();
    let asked = played(&l.log);
    assert!(
        asked.last().unwrap().starts_with("How are you today?"),
        "{asked:?}"
    );
}
