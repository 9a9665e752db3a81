use chrono::NaiveDate;

use super::*;
use crate::distress::{Classifier, Utterance};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
}

/// The concerns the real classifier's findings on `text` raise.
fn said(text: &str, lang: Lang, on: u32) -> Vec<Concern> {
    let a = Classifier::shared().assess(&Utterance::new(text));
    concerns_from(&a.reasons, text, lang, day(on))
}

fn with(c: &Concern, change: Change, on: u32) -> Concern {
    let mut c = c.clone();
    c.history.push(Mention {
        date: day(on),
        change,
    });
    c
}

#[test]
fn a_watch_finding_becomes_a_concern_in_the_elders_words() {
    let zh = said("我膝盖疼，走路不太方便", Lang::Zh, 12);
    let knee = zh
        .iter()
        .find(|c| c.category == Category::Pain)
        .expect("a pain concern");
    assert_eq!(knee.slot.as_deref(), Some("膝盖"));
    assert_eq!(
        knee.history,
        vec![Mention {
            date: day(12),
            change: Change::New
        }]
    );
    assert_eq!(
        question(knee, Lang::Zh, day(13)),
        "昨天您说膝盖疼，今天好点了吗？好点了请按1，差不多请按2，更差了请按3。"
    );

    let en = said("my knee has been hurting", Lang::En, 12);
    let knee = en.iter().find(|c| c.category == Category::Pain).unwrap();
    assert_eq!(
        question(knee, Lang::En, day(13)),
        "Yesterday you mentioned your knee was hurting. Is it any better today? \
         Press 1 if it is better, 2 if it is the same, 3 if it is worse."
    );
    // Two days on, it is "last time", not "yesterday".
    assert!(question(knee, Lang::En, day(15)).starts_with("Last time you mentioned"));
}

#[test]
fn what_hurts_is_looked_for_in_the_findings_clause_only() {
    let c = &said(
        "I slept well, and the weather is lovely. My knee hurts",
        Lang::En,
        12,
    );
    let pain = c.iter().find(|c| c.category == Category::Pain).unwrap();
    assert_eq!(pain.slot.as_deref(), Some("knee"));
    assert_eq!(clause("我腰挺好，膝盖疼", &(15..18)), "膝盖疼");
    assert_eq!(clause("abc", &(1..9)), "abc", "a span outside the text");
}

#[test]
fn fine_replies_and_emergencies_raise_no_concern() {
    assert!(said("我挺好的，今天吃了饺子", Lang::Zh, 12).is_empty());
    assert!(said("I'm fine thanks, had a nice walk", Lang::En, 12).is_empty());
    // An emergency goes to an operator at once, not to tomorrow's call.
    assert!(said("救命啊，我摔倒了，起不来了", Lang::Zh, 12).is_empty());
}

#[test]
fn words_that_fit_no_template_get_the_categorys_general_question() {
    let c = Concern {
        category: Category::Pain,
        slot: None,
        level: Level::Watch,
        history: vec![Mention {
            date: day(12),
            change: Change::New,
        }],
    };
    assert_eq!(
        question(&c, Lang::Zh, day(13)),
        "昨天您说身上疼，今天好点了吗？好点了请按1，差不多请按2，更差了请按3。"
    );
    let unwell = Concern {
        category: Category::Health,
        ..c
    };
    assert!(question(&unwell, Lang::Zh, day(13)).starts_with("昨天您说身体不舒服"));
}

#[test]
fn the_same_complaint_again_is_the_open_concern_not_a_second_one() {
    let open = said("我膝盖疼", Lang::Zh, 12);
    let again = &said("膝盖还是疼", Lang::Zh, 13)[0];
    assert!(matches!(
        merge(&open, again),
        Merge::Again {
            index: 0,
            change: Change::Same
        }
    ));
    let other = &said("我腰疼", Lang::Zh, 13)[0];
    assert_eq!(merge(&open, other), Merge::Open, "a back is not a knee");
    let sleep = &said("昨晚没睡好", Lang::Zh, 13)[0];
    assert_eq!(merge(&open, sleep), Merge::Open);
}

#[test]
fn at_most_two_are_asked_most_severe_then_oldest_and_none_raised_today() {
    let c = |category, level, since: u32| Concern {
        category,
        slot: None,
        level,
        history: vec![Mention {
            date: day(since),
            change: Change::New,
        }],
    };
    let open = vec![
        c(Category::Sleep, Level::Watch, 10),
        c(Category::Pain, Level::Urgent, 12),
        c(Category::Mood, Level::Watch, 8),
        c(Category::Dizziness, Level::Urgent, 14),
    ];
    // Dizziness was raised today: not asked about again.
    assert_eq!(follow_ups(&open, day(14)), vec![1, 2]);
    assert_eq!(follow_ups(&open, day(15)), vec![1, 3]);
    assert!(follow_ups(&open, day(8)).is_empty());
}

#[test]
fn better_closes_worse_raises_and_three_calls_the_same_raise() {
    let knee = said("我膝盖疼", Lang::Zh, 12).remove(0);
    assert_eq!(
        after_answer(&knee, Change::Better, day(13), Lang::Zh),
        Decision::Close
    );
    assert_eq!(
        after_answer(&knee, Change::Unclear, day(13), Lang::Zh),
        Decision::Keep
    );
    // Raised on the 12th, the same on the 13th: two calls, kept.
    assert_eq!(
        after_answer(&knee, Change::Same, day(13), Lang::Zh),
        Decision::Keep
    );
    // The same again on the 14th: three calls running.
    let knee13 = with(&knee, Change::Same, 13);
    assert_eq!(
        after_answer(&knee13, Change::Same, day(14), Lang::Zh),
        Decision::Raise {
            level: Level::Urgent,
            reason: "膝盖疼连续3次通话提到：12月12日、12月13日、12月14日".into()
        }
    );
    let en = said("my knee hurts", Lang::En, 12).remove(0);
    let en13 = with(&en, Change::Same, 13);
    assert_eq!(
        after_answer(&en13, Change::Same, day(14), Lang::En),
        Decision::Raise {
            level: Level::Urgent,
            reason: "knee pain reported on 3 calls running: 12 Dec, 13 Dec, 14 Dec".into()
        }
    );
    assert_eq!(
        after_answer(&en, Change::Worse, day(13), Lang::En),
        Decision::Raise {
            level: Level::Urgent,
            reason: "knee pain worse today (13 Dec); first reported 12 Dec".into()
        }
    );
    // A call on which it was unclear breaks the run.
    let broken = with(&with(&en, Change::Same, 13), Change::Unclear, 14);
    assert_eq!(
        after_answer(&broken, Change::Same, day(15), Lang::En),
        Decision::Keep
    );
}

#[test]
fn debug_leaves_the_elders_words_out() {
    let knee = said("我膝盖疼", Lang::Zh, 12).remove(0);
    let shown = format!("{knee:?}");
    assert!(!shown.contains("膝盖"), "{shown}");
    assert!(shown.contains("Pain"), "{shown}");
}
