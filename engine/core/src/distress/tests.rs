use super::*;

fn level(text: &str) -> Level {
    Classifier::shared().assess(&Utterance::new(text)).level
}

fn assess(text: &str) -> Assessment {
    Classifier::shared().assess(&Utterance::new(text))
}

#[test]
fn embedded_lexicons_parse() {
    let c = Classifier::new();
    assert!(c.is_ok(), "{}", c.unwrap_err());
}

#[test]
fn malformed_lexicon_names_file_and_line() {
    let bad =
        "# ok\nnegate: no\nemergency fall x \"label\": fell\nurgent nonsense y \"label\": fell\n";
    let err = Classifier::from_sources(&[("bad.rules", Lang::En, bad)]).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("bad.rules", 4));
    assert!(err.to_string().contains("nonsense"), "{err}");
    for (src, line) in [
        ("urgent fall y: fell\n", 1),
        ("\n\nurgent fall y \"l\": fell ..\n", 3),
        ("urgent fall y \"l\" [loud]: fell\n", 1),
        ("ok fall y \"l\": fell\n", 1),
        ("sounds: cast chest\n", 1),
        ("urgent fall y \"l\": maybe? fell\n", 1),
        ("urgent fall y \"l\": fell\nurgent fall y \"l\": fall\n", 2),
    ] {
        let err = Classifier::from_sources(&[("x.rules", Lang::En, src)]).unwrap_err();
        assert_eq!(err.line, line, "{src:?}: {err}");
    }
}

#[test]
fn levels_in_both_languages() {
    assert_eq!(level("I've fallen and I can't get up"), Level::Emergency);
    assert_eq!(level("my chest hurts"), Level::Emergency);
    assert_eq!(level("I've had diarrhoea for three days"), Level::Urgent);
    assert_eq!(level("I didn't sleep well"), Level::Watch);
    assert_eq!(level("lovely day, the garden looks nice"), Level::Ok);
    assert_eq!(level("我摔倒了起不来"), Level::Emergency);
    assert_eq!(level("拉肚子好几天了"), Level::Urgent);
    assert_eq!(level("晚上睡不着"), Level::Watch);
    assert_eq!(level("挺好的，谢谢"), Level::Ok);
}

#[test]
fn negation_and_its_scope() {
    assert_eq!(level("I didn't fall"), Level::Ok);
    assert_eq!(level("no chest pain today"), Level::Ok);
    assert_eq!(level("没有摔倒"), Level::Ok);
    assert_eq!(level("一点也不疼"), Level::Ok);
    assert_eq!(level("我没有不舒服"), Level::Ok);
    // The negation ends at "but": the chest pain is real.
    assert_eq!(level("I didn't fall but my chest hurts"), Level::Emergency);
    // A negation inside another phrase does not reach past it.
    assert_eq!(level("睡不着头晕"), Level::Urgent);
}

#[test]
fn time_moves_the_level() {
    assert_eq!(level("I fell last month but I'm fine now"), Level::Watch);
    assert_eq!(level("I fell this morning and my hip hurts"), Level::Urgent);
    assert_eq!(
        level("I've been on the floor since last night"),
        Level::Emergency
    );
    assert_eq!(level("去年摔过一次，早就好了"), Level::Watch);
}

#[test]
fn who_it_happened_to() {
    assert_eq!(level("my husband collapsed"), Level::Emergency);
    assert_eq!(level("a man in the film had a heart attack"), Level::Ok);
    assert_eq!(level("老伴晕倒了"), Level::Emergency);
}

#[test]
fn idioms_and_lexical_traps() {
    for t in [
        "I'm dying to see my grandson",
        "笑死我了",
        "I polished the chest of drawers",
        "the gas bill came",
        "my blood test came back normal",
    ] {
        assert!(level(t) <= Level::Watch, "{t}: {:?}", assess(t));
    }
}

#[test]
fn misheard_mandarin_still_flags_by_sound() {
    let a = assess("就命");
    assert_eq!(a.level, Level::Emergency);
    assert!(a.reasons[0].phonetic && a.needs_confirmation, "{a:?}");
    assert!(
        a.reasons[0].summary.contains("救命"),
        "{}",
        a.reasons[0].summary
    );
    assert_eq!(level("我摔了起步来"), Level::Emergency);
    assert_eq!(level("传布上次"), Level::Emergency);
    // The exact phrase is not phonetic and needs no confirmation.
    let a = assess("救命");
    assert!(!a.reasons[0].phonetic && !a.needs_confirmation);
    // An exact finding at the top level settles it, whatever sound-alikes
    // of the same level sit beside it.
    let a = assess("救命啊,我摔倒了,起步来了。");
    assert_eq!(a.level, Level::Emergency);
    assert!(a.reasons.iter().any(|r| r.phonetic), "{a:?}");
    assert!(!a.needs_confirmation, "{a:?}");
    // A sound-alike above an exact lower finding still asks.
    let a = assess("我摔倒了,起步来了。");
    assert_eq!(a.level, Level::Emergency);
    assert!(a.needs_confirmation, "{a:?}");
}

#[test]
fn misheard_english_still_flags_by_sound() {
    let a = assess("my cast hurts");
    assert_eq!(a.level, Level::Emergency);
    assert!(a.needs_confirmation);
    assert!(a.score < assess("my chest hurts").score);
    // "I feel down" makes sense as heard: noted, and the call should ask.
    let a = assess("I feel down");
    assert_eq!(a.level, Level::Watch);
    assert!(a.needs_confirmation, "{a:?}");
    // A lone sound-alike with nothing around it is not a finding.
    assert_eq!(level("I feel fine"), Level::Ok);
}

#[test]
fn several_statements_keep_every_reason() {
    let t = "I can't sleep, I'm dizzy, and I fell and can't get up";
    let a = assess(t);
    assert_eq!(a.level, Level::Emergency);
    assert!(a.categories.starts_with(&[Category::Fall]));
    for c in [Category::Sleep, Category::Dizziness] {
        assert!(a.categories.contains(&c), "{c}: {a:?}");
    }
    for r in &a.reasons {
        assert_eq!(&t[r.span.clone()], r.evidence);
    }
}

#[test]
fn traditional_characters_and_fillers() {
    let t = "嗯我喘不上氣啊";
    let a = assess(t);
    assert_eq!(a.level, Level::Emergency);
    assert_eq!(a.reasons[0].evidence, "喘不上氣");
    assert_eq!(&t[a.reasons[0].span.clone()], "喘不上氣");
}

#[test]
fn low_asr_confidence_asks_for_confirmation() {
    let c = Classifier::shared();
    let sure = c.assess(&Utterance::new("I can't breathe").asr_confidence(0.9));
    let unsure = c.assess(&Utterance::new("I can't breathe").asr_confidence(0.2));
    assert_eq!(unsure.level, Level::Emergency);
    assert!(unsure.needs_confirmation && !sure.needs_confirmation);
    assert!(unsure.score < sure.score);
}

#[test]
fn english_hint_skips_mandarin_rules() {
    let c = Classifier::shared();
    assert_eq!(
        c.assess(&Utterance::new("救命").lang(Lang::En)).level,
        Level::Ok
    );
    assert_eq!(
        c.assess(&Utterance::new("救命").lang(Lang::Zh)).level,
        Level::Emergency
    );
}

#[test]
fn serialises_to_the_cli_contract() {
    let v = serde_json_like(&assess("help me"));
    for key in [
        "\"level\":\"emergency\"",
        "\"categories\":[\"help_request\"]",
        "\"evidence\":\"help me\"",
        "\"rule\":\"en.help_request.cry_for_help\"",
    ] {
        assert!(v.contains(key), "{key} not in {v}");
    }
}

/// serde_json is only a dev-dependency of this crate; keep the helper local.
fn serde_json_like(a: &Assessment) -> String {
    serde_json::to_string(a).unwrap()
}

#[test]
fn baseline_ignores_context() {
    let c = Classifier::shared();
    assert_eq!(c.keyword_baseline("I didn't fall", None), Level::Emergency);
    assert_eq!(c.keyword_baseline("lovely day", None), Level::Ok);
}

#[test]
fn call_signals() {
    let quiet = assess("fine");
    let a = assess_call(
        std::slice::from_ref(&quiet),
        &CallSignals {
            help_key_pressed: true,
            ..Default::default()
        },
    );
    assert_eq!(a.level, Level::Emergency);
    assert_eq!(a.categories, [Category::HelpKey]);
    let a = assess_call(
        &[],
        &CallSignals {
            no_answer_after_ladder: true,
            answered_silent: false,
            ..Default::default()
        },
    );
    assert_eq!(a.level, Level::Urgent);
    let a = assess_call(
        &[],
        &CallSignals {
            answered_silent: true,
            not_understood_count: 2,
            ..Default::default()
        },
    );
    assert_eq!((a.level, a.reasons.len()), (Level::Watch, 2));
    let a = assess_call(
        &[],
        &CallSignals {
            not_understood_count: 3,
            ..Default::default()
        },
    );
    assert_eq!(a.level, Level::Urgent);
    let dizzy = assess("I feel dizzy");
    let a = assess_call(
        &[dizzy, quiet],
        &CallSignals {
            dropped_after_distress: true,
            ..Default::default()
        },
    );
    assert_eq!(a.level, Level::Emergency);
    assert!(a.categories.contains(&Category::Dizziness));
    assert_eq!(assess_call(&[], &CallSignals::default()).level, Level::Ok);
}

#[test]
fn trend_raises_repeated_watch_and_falls_in_a_week() {
    const DAY: i64 = 86_400;
    let now = 100 * DAY;
    let sleep = assess("I couldn't sleep again");
    assert_eq!(sleep.level, Level::Watch);
    let past = |days: i64, a: &Assessment| PastCall {
        at_unix: now - days * DAY,
        assessment: a.clone(),
    };
    let fine = assess("all good");
    // Three calls in a row.
    let t = apply_trend(&sleep, now, &[past(1, &sleep), past(2, &sleep)]);
    assert_eq!(t.level, Level::Urgent);
    assert!(t.categories.contains(&Category::Trend));
    // Broken streak: no raise.
    assert_eq!(
        apply_trend(
            &sleep,
            now,
            &[past(1, &sleep), past(2, &fine), past(3, &sleep)]
        )
        .level,
        Level::Watch
    );
    // Only one earlier call: no raise.
    assert_eq!(
        apply_trend(&sleep, now, &[past(1, &sleep)]).level,
        Level::Watch
    );
    // Falls: twice in a week raises an old, recovered fall; twice a month apart does not.
    let old_fall = assess("I had a fall last year but I'm fine now");
    assert_eq!(old_fall.level, Level::Watch);
    assert_eq!(
        apply_trend(&old_fall, now, &[past(5, &old_fall)]).level,
        Level::Urgent
    );
    assert_eq!(
        apply_trend(&old_fall, now, &[past(30, &old_fall)]).level,
        Level::Watch
    );
    // Calls from the future are ignored.
    assert_eq!(
        apply_trend(&old_fall, now, &[past(-1, &old_fall)]).level,
        Level::Watch
    );
}

#[test]
fn pattern_syntax_prefix_optional_alternatives_and_gaps() {
    let src = "urgent pain p \"pain\": hurt* | my left/right? arm aches | knee .. swollen\n";
    let c = Classifier::from_sources(&[("t.rules", Lang::En, src)]).unwrap();
    let lv = |t: &str| c.assess(&Utterance::new(t)).level;
    assert_eq!(lv("it's hurting"), Level::Urgent);
    assert_eq!(lv("my right arm aches"), Level::Urgent);
    assert_eq!(lv("my left arm aches"), Level::Urgent);
    assert_eq!(lv("my arm aches"), Level::Urgent);
    assert_eq!(lv("my knee is very badly swollen"), Level::Urgent);
    // A gap is at most four words and never crosses punctuation.
    assert_eq!(lv("my knee is not at all very badly swollen"), Level::Ok);
    assert_eq!(lv("my knee. swollen"), Level::Ok);
    assert_eq!(lv("left arm aches"), Level::Ok);
}

#[test]
fn any_text_gives_spans_on_char_boundaries() {
    // Mixed scripts, punctuation, fillers, repeats and traditional characters,
    // generated deterministically: evidence must always be the text at its span.
    let pieces = [
        "我", "摔", "倒", "了", "起", "不", "来", "救", "命", "氣", "喘", "，", " ", "help", "me",
        "can't", "I", "fell", "um", "’s", "!", "嗯", "😀", "é", "-", "..", "胸口", "疼", "no",
        "没有",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..400 {
        let mut t = String::new();
        for _ in 0..(seed % 12) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let a = assess(&t);
        for r in &a.reasons {
            assert_eq!(t.get(r.span.clone()), Some(r.evidence.as_str()), "{t:?}");
        }
        assert!((0.0..=1.0).contains(&a.score));
    }
}

#[test]
fn keyword_baseline_is_worse_where_context_matters() {
    let c = Classifier::shared();
    for t in [
        "I didn't fall",
        "no fire here, all fine",
        "a man in the film had a heart attack",
        "没有摔倒",
    ] {
        assert_eq!(c.keyword_baseline(t, None), Level::Emergency, "{t}");
        assert!(level(t) <= Level::Watch, "{t}");
    }
    // And blind to mishearing.
    assert_eq!(c.keyword_baseline("就命", None), Level::Ok);
}

fn unfinished(text: &str, lang: Lang) -> Assessment {
    Classifier::shared().assess_unfinished(&Utterance::new(text).lang(lang))
}

#[test]
fn an_unfinished_reply_counts_a_finding_only_once_words_follow_it() {
    // The words after a finding decide it: cut off right after it, nothing yet.
    for (text, lang) in [
        ("I fell", Lang::En),
        ("I fell asleep", Lang::En),
        ("I fell asleep in my chair after lunch", Lang::En),
        ("My chest", Lang::En),
        ("I'm okay. But I fell", Lang::En),
        ("I'm okay. But I fell yesterday and my hip", Lang::En),
        ("我摔倒", Lang::Zh),
        ("I fell last year and", Lang::En),
        ("Help me", Lang::En),
        ("我还好。就是昨天摔倒了，腿疼", Lang::Zh),
    ] {
        let a = unfinished(text, lang);
        assert!(a.level < Level::Emergency, "{text}: {a:?}");
    }
    // Followed by more words, a clear emergency counts before the end.
    for (text, lang) in [
        ("Help me please, I fell down and", Lang::En),
        ("My chest hurts and I can't", Lang::En),
        ("救命啊，我摔倒了", Lang::Zh),
        ("胸口疼得厉害，喘", Lang::Zh),
        ("胸口疼得厉害", Lang::Zh),
    ] {
        let a = unfinished(text, lang);
        assert_eq!(a.level, Level::Emergency, "{text}: {a:?}");
        assert!(!a.needs_confirmation, "{text}: {a:?}");
    }
    // Never more than the finished reading of the same words.
    for text in [
        "I fell down yesterday but I'm fine now",
        "I'm fine, thank you",
    ] {
        assert!(
            unfinished(text, Lang::En).level <= assess(text).level,
            "{text}"
        );
    }
}

#[test]
fn near_homophones_of_alarm_phrases_flag_for_confirmation_with_phrase_and_distance() {
    for (heard, phrase, level) in [
        ("胸口湯的厉害", "胸口疼", Level::Emergency),
        ("传布上次", "喘不上气", Level::Emergency),
        ("陶云腿噴汤", "头晕", Level::Urgent),
        ("我赞不起来了", "站不起来", Level::Emergency),
        ("拉兔子好几天了", "拉肚子", Level::Urgent),
    ] {
        let a = assess(heard);
        assert_eq!(a.level, level, "{heard}: {a:?}");
        assert!(a.needs_confirmation, "{heard}: {a:?}");
        let r = &a.reasons[0];
        assert!(r.phonetic, "{heard}: {r:?}");
        assert_eq!(r.sounds_like.as_deref(), Some(phrase), "{heard}: {r:?}");
        let d = r.distance.expect("a Mandarin sound match has a distance");
        assert!(d > 0.0 && d <= 0.6, "{heard}: {d}");
        assert_eq!(&heard[r.span.clone()], r.evidence);
        assert!(r.summary.contains("distance"), "{}", r.summary);
    }
    // An exact phrase carries neither.
    let r = &assess("喘不上气").reasons[0];
    assert_eq!((r.sounds_like.as_ref(), r.distance), (None, None));
}

#[test]
fn common_fine_replies_sound_like_no_alarm_phrase() {
    for t in [
        "我很好",
        "吃饭了",
        "睡得不错",
        "挺好的谢谢",
        "今天天气真好",
        "刚吃完午饭",
        "孙子来看我了",
        "早上去公园走了走",
        "晚上睡得挺香",
        "今天包了饺子",
        "我在听收音机",
        "我吃了一个苹果，挺甜的",
        "心疼我孙子天天加班到半夜",
        "你到底是谁呀，哈哈，开玩笑的",
        "我起来了，正在刷牙",
        "老头子出去遛弯了",
        "准备睡午觉了",
        "我在炒菜",
        "周末一家人吃火锅",
        "我每天都锻炼",
    ] {
        let a = assess(t);
        assert!(
            a.reasons.iter().all(|r| !r.phonetic),
            "{t} sounds like an alarm: {a:?}"
        );
        assert_eq!(a.level, Level::Ok, "{t}: {a:?}");
    }
}

#[test]
fn context_applies_to_sound_matches_and_is_heard_by_sound_only_for_them() {
    // Exact context on a misheard alarm.
    assert_eq!(level("我没有胸狗疼"), Level::Ok);
    assert_eq!(level("电视里有人传布上次"), Level::Ok);
    let a = assess("去年胸狗疼过，早就好了");
    assert_eq!(a.level, Level::Watch, "{a:?}");
    assert!(a.needs_confirmation);
    // Misheard context (林局 for 邻居) on a misheard alarm: someone else's.
    let a = assess("林局家老太太昏到了");
    assert_eq!(a.level, Level::Watch, "{a:?}");
    assert!(a.needs_confirmation);
    // ... but never on a clean one: 一千 is not 以前 here.
    assert_eq!(level("有人骗我转账一千块"), Level::Urgent);
}

#[test]
fn long_lie_presyncope_passed_symptoms_and_someone_elses_trouble() {
    for t in [
        "I slipped getting out of the bath and lay there until the morning",
        "I'm so dizzy I can't stand and my heart is racing",
        "昨晚在厕所摔倒了，在地板上躺了好几个小时",
        "头晕得厉害，站都站不住，心怦怦乱跳",
    ] {
        assert_eq!(level(t), Level::Emergency, "{t}: {:?}", assess(t));
    }
    // Without the long lie or the palpitations, as before.
    assert_eq!(
        level("I tripped on the rug this morning but got straight back up"),
        Level::Urgent
    );
    assert_eq!(level("这两天老是头晕"), Level::Urgent);
    // Not when the long lie is negated.
    assert_eq!(level("摔了一跤，没有躺一夜，马上起来了"), Level::Urgent);
    // Passed: at most watch.
    assert_eq!(
        level("I had some chest tightness on the stairs yesterday but it's gone now"),
        Level::Watch
    );
    assert_eq!(level("上午胸口闷了一阵，现在已经好了"), Level::Watch);
    // Someone else's, from an elder who is fine; without "I'm fine" it is noted.
    assert_eq!(
        level("my neighbour had a stroke on Sunday, but I'm fine myself"),
        Level::Ok
    );
    assert_eq!(level("隔壁老李昨天中风住院了，我还好"), Level::Ok);
    assert_eq!(
        level("my neighbour had a fall and I'm worried"),
        Level::Watch
    );
    // Compound words.
    for t in [
        "周末坐火车去看女儿",
        "楼下新开了一家驴肉火烧",
        "we had a fire drill today",
    ] {
        assert_eq!(level(t), Level::Ok, "{t}: {:?}", assess(t));
    }
}

#[test]
fn debug_output_leaves_the_elders_words_out() {
    let words = "I fell down and cannot get up";
    let u = Utterance::new(words).lang(Lang::En);
    let a = Classifier::shared().assess(&u);
    assert_eq!(a.level, Level::Emergency, "{a:?}");
    let shown = format!("{u:?} {a:?}");
    for word in ["fell", "cannot", "get up"] {
        assert!(!shown.contains(word), "{shown}");
    }
    assert!(
        shown.contains("text_chars: 29") && shown.contains("rule:"),
        "{shown}"
    );
}
