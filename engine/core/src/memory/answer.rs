//! The answer to a follow-up question: better, the same, worse, or unclear.
//! Keypad first (1 better, 2 the same, 3 worse), then words, in a fixed
//! order so that a negation is read before the word it negates ("没好" is
//! not "好", "not better" is not "better").

use serde::{Deserialize, Serialize};

use crate::lang::Lang;

/// A concern's change as of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Raised on this call.
    New,
    Better,
    Same,
    Worse,
    /// Asked, and the answer said none of these: the concern stays open.
    Unclear,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Better => "better",
            Change::Same => "same",
            Change::Worse => "worse",
            Change::Unclear => "unclear",
        }
    }
}

/// What the elder gave in answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    Digit(char),
    Words(&'a str),
    Nothing,
}

// Mandarin, in the order they are tried.
const ZH_WORSE: &[&str] = &[
    "更疼",
    "更痛",
    "更厉害",
    "更严重",
    "更难受",
    "更差",
    "更不好",
    "更晕",
    "加重",
    "严重了",
    "厉害了",
    "重了",
];
/// Better, though the words hold a negation.
const ZH_BETTER_NEGATED: &[&str] = &[
    "没事了",
    "不疼了",
    "不痛了",
    "不晕了",
    "不难受了",
    "没那么疼",
    "没那么痛",
    "不怎么疼了",
];
const ZH_NOT_BETTER: &[&str] = &[
    "没好",
    "不见好",
    "不太好",
    "不怎么好",
    "不好",
    "没变",
    "没什么变化",
];
const ZH_SAME: &[&str] = &["还是", "一样", "差不多", "老样子", "还疼", "还痛", "还那样"];
const ZH_BETTER: &[&str] = &[
    "好多了",
    "好点了",
    "好些了",
    "好一点",
    "好一些",
    "好了",
    "舒服多了",
    "舒服了",
    "吃得下",
    "睡得好",
    "睡着了",
    "暖和",
];
const ZH_YES: &[&str] = &["是", "对", "嗯", "有", "行"];
const ZH_NO: &[&str] = &["没有", "不是", "没", "不"];

// English, as whole words or phrases.
const EN_WORSE: &[&str] = &[
    "worse",
    "more pain",
    "hurts more",
    "even more",
    "getting bad",
];
const EN_BETTER_NEGATED: &[&str] = &[
    "doesn't hurt",
    "does not hurt",
    "no pain",
    "not hurting",
    "not so bad",
    "not as bad",
    "gone",
];
const EN_NOT_BETTER: &[&str] = &[
    "not better",
    "no better",
    "not any better",
    "not really",
    "hasn't improved",
    "has not improved",
    "not improved",
    "still",
];
const EN_SAME: &[&str] = &["same", "no change", "as before", "unchanged"];
const EN_BETTER: &[&str] = &[
    "better",
    "fine",
    "good",
    "improved",
    "okay",
    "ok",
    "all right",
    "alright",
    "warmer",
];
const EN_YES: &[&str] = &["yes", "yeah", "yep", "a bit", "a little"];
const EN_NO: &[&str] = &["no", "nope"];

/// Read a reply to a follow-up question.
pub fn classify(reply: Reply<'_>, lang: Lang) -> Change {
    match reply {
        Reply::Digit('1') => Change::Better,
        Reply::Digit('2') => Change::Same,
        Reply::Digit('3') => Change::Worse,
        Reply::Digit(_) | Reply::Nothing => Change::Unclear,
        Reply::Words(text) => match lang {
            Lang::Zh => words_zh(text),
            Lang::En => words_en(text),
        },
    }
}

fn words_zh(text: &str) -> Change {
    let has = |list: &[&str]| list.iter().any(|w| text.contains(w));
    if has(ZH_WORSE) {
        Change::Worse
    } else if has(ZH_BETTER_NEGATED) {
        Change::Better
    } else if has(ZH_NOT_BETTER) || has(ZH_SAME) {
        Change::Same
    } else if has(ZH_BETTER) {
        Change::Better
    } else if has(ZH_NO) {
        Change::Same
    } else if has(ZH_YES) {
        Change::Better
    } else {
        Change::Unclear
    }
}

fn words_en(text: &str) -> Change {
    // Words separated by single spaces, padded, so phrases match whole words.
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().replace('\u{2019}', "'"))
        .collect();
    let norm = format!(" {} ", words.join(" "));
    let has = |list: &[&str]| list.iter().any(|p| norm.contains(&format!(" {p} ")));
    if has(EN_WORSE) {
        Change::Worse
    } else if has(EN_BETTER_NEGATED) {
        Change::Better
    } else if has(EN_NOT_BETTER) || has(EN_SAME) {
        Change::Same
    } else if has(EN_BETTER) {
        Change::Better
    } else if has(EN_NO) {
        Change::Same
    } else if has(EN_YES) {
        Change::Better
    } else {
        Change::Unclear
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zh(t: &str) -> Change {
        classify(Reply::Words(t), Lang::Zh)
    }
    fn en(t: &str) -> Change {
        classify(Reply::Words(t), Lang::En)
    }

    #[test]
    fn the_keypad_answers_directly() {
        assert_eq!(classify(Reply::Digit('1'), Lang::Zh), Change::Better);
        assert_eq!(classify(Reply::Digit('2'), Lang::En), Change::Same);
        assert_eq!(classify(Reply::Digit('3'), Lang::Zh), Change::Worse);
        assert_eq!(classify(Reply::Digit('9'), Lang::Zh), Change::Unclear);
        assert_eq!(classify(Reply::Nothing, Lang::En), Change::Unclear);
    }

    #[test]
    fn mandarin_answers() {
        assert_eq!(zh("好多了，谢谢"), Change::Better);
        assert_eq!(zh("今天不疼了"), Change::Better);
        assert_eq!(zh("没事了"), Change::Better);
        assert_eq!(zh("嗯，好点了"), Change::Better);
        assert_eq!(zh("还是老样子"), Change::Same);
        assert_eq!(zh("还没好"), Change::Same);
        assert_eq!(zh("差不多吧"), Change::Same);
        assert_eq!(zh("不太好"), Change::Same);
        assert_eq!(zh("没有"), Change::Same);
        assert_eq!(zh("比昨天更疼了"), Change::Worse);
        assert_eq!(zh("更严重了，走不了路"), Change::Worse);
        assert_eq!(zh("是的"), Change::Better);
        assert_eq!(zh("今天天气怎么样"), Change::Unclear);
    }

    #[test]
    fn english_answers() {
        assert_eq!(en("Yes, much better thanks"), Change::Better);
        assert_eq!(en("It doesn't hurt any more"), Change::Better);
        assert_eq!(en("The pain's gone"), Change::Better);
        assert_eq!(en("No better, I'm afraid"), Change::Same);
        assert_eq!(en("It's still sore"), Change::Same);
        assert_eq!(en("about the same"), Change::Same);
        assert_eq!(en("Not really"), Change::Same);
        assert_eq!(en("No."), Change::Same);
        assert_eq!(en("It's worse today"), Change::Worse);
        assert_eq!(en("yeah a bit"), Change::Better);
        // Words inside other words do not count: "know" is not "no",
        // "goodness" is not "good".
        assert_eq!(en("I don't know, goodness me"), Change::Unclear);
    }
}
