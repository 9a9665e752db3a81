//! Recognising the few short replies a flow branches on — yes, no, help,
//! "say that again" and "I don't understand" — in Mandarin and English.
//!
//! Elders pad replies with fillers (嗯, 啊, um, uh) and often answer in
//! either language whatever the call's language is, so both phrase lists are
//! always tried. Everything else (how they feel, what they ate) is left to the
//! distress classifier and to the variables the flow saves.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Yes,
    No,
    Help,
    Repeat,
    /// "I don't understand": repeated slowly, and counted for the call outcome.
    DontUnderstand,
}

impl Intent {
    pub const ALL: [Intent; 5] = [
        Intent::Yes,
        Intent::No,
        Intent::Help,
        Intent::Repeat,
        Intent::DontUnderstand,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Yes => "yes",
            Intent::No => "no",
            Intent::Help => "help",
            Intent::Repeat => "repeat",
            Intent::DontUnderstand => "dont_understand",
        }
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown intent {0:?}: expected one of yes, no, help, repeat, dont_understand")]
pub struct UnknownIntent(pub String);

impl FromStr for Intent {
    type Err = UnknownIntent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Intent::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| UnknownIntent(s.to_string()))
    }
}

const EN_FILLERS: &[&str] = &[
    "um", "umm", "uh", "uhh", "er", "erm", "hmm", "mm", "ah", "oh", "well", "like", "so",
];
const ZH_FILLERS: &[&str] = &[
    "嗯嗯", "那个", "就是", "嗯", "啊", "呃", "哦", "噢", "唉", "哎", "呀", "吧", "呢", "嘛", "啦",
];

// Checked first: these contain words ("help", "说") that would otherwise
// match a shorter intent.
const EN_DONT_UNDERSTAND: &[&str] = &[
    "i don't understand",
    "i dont understand",
    "i do not understand",
    "don't understand",
    "dont understand",
    "what do you mean",
    "i'm confused",
    "im confused",
];
const ZH_DONT_UNDERSTAND: &[&str] = &["听不懂", "不明白", "不懂", "不知道你说什么", "什么意思"];

const EN_REPEAT: &[&str] = &[
    "repeat",
    "say that again",
    "say it again",
    "again please",
    "come again",
    "pardon",
    "didn't hear",
    "didnt hear",
    "didn't catch",
    "didnt catch",
    "what did you say",
    "one more time",
    "slower",
    "slowly",
    "speak up",
    "louder",
];
// Agreement noises that would otherwise lose to "huh?" (repeat) once fillers go.
const EN_YES_SOUNDS: &[&str] = &["uh huh", "mm hmm", "mhm", "mmhmm", "mhmm", "mm hm"];
const EN_NO_SOUNDS: &[&str] = &["uh uh", "nuh uh"];
const ZH_REPEAT_WHOLE: &[&str] = &["什么", "啥", "说啥", "你说啥", "你说什么"];
const ZH_REPEAT: &[&str] = &[
    "听不清",
    "没听见",
    "听不见",
    "慢一点",
    "慢点说",
    "说慢点",
    "大声点",
    "大声一点",
    "再说一遍",
    "再说一次",
    "重复一遍",
    "重复",
    "没听清",
    "你说什么",
    "再讲一遍",
    "再来一遍",
    "说什么",
];
const EN_REPEAT_WHOLE: &[&str] = &["what", "sorry", "eh", "huh", "again"];

const EN_HELP: &[&str] = &[
    "help",
    "need someone",
    "need somebody",
    "get someone",
    "call someone",
    "ambulance",
    "emergency",
    "operator",
];
const ZH_HELP: &[&str] = &[
    "救命",
    "帮帮我",
    "帮我",
    "帮助",
    "需要人",
    "叫人",
    "找人",
    "来人",
    "急救",
    "救护车",
    "接线员",
    "人工",
];
const EN_NOT_HELP: &[&str] = &[
    "don't need",
    "dont need",
    "do not need",
    "no need",
    "not need",
];
const ZH_NOT_HELP: &[&str] = &["不需要", "不用", "没事", "不要"];

const EN_NO: &[&str] = &[
    "no",
    "nope",
    "nah",
    "not",
    "never",
    "no i",
    "i didn't",
    "i didnt",
    "i haven't",
    "i havent",
    "wrong",
];
const EN_YES: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "sure",
    "ok",
    "okay",
    "right",
    "correct",
    "i did",
    "i have",
    "of course",
    "that's right",
    "thats right",
    "yes please",
];
const ZH_NO: &[&str] = &["不是", "不对", "没有", "没", "不", "还没", "错"];
const ZH_YES: &[&str] = &[
    "是的",
    "是啊",
    "是",
    "对的",
    "对",
    "好的",
    "好",
    "有",
    "吃了",
    "吃过了",
    "吃药了",
    "吃过药",
    "已经",
    "可以",
    "当然",
    "行",
];
// Starts with a "yes" word but is not a yes.
const ZH_NOT_YES: &[&str] = &[
    "对不起",
    "好像",
    "有点",
    "有些",
    "是不是",
    "有没有",
    "好不好",
    "可以吗",
];

/// Recognises a short reply. `None` when the utterance is none of the intents
/// (a longer answer, a complaint, a question).
pub fn recognise(transcript: &str) -> Option<Intent> {
    let sounds = transcript
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if EN_YES_SOUNDS.contains(&sounds.as_str()) {
        return Some(Intent::Yes);
    }
    if EN_NO_SOUNDS.contains(&sounds.as_str()) {
        return Some(Intent::No);
    }
    let norm = normalise(transcript);
    if norm.is_empty() {
        return None;
    }
    let words: Vec<&str> = norm.split(' ').collect();
    let joined = norm.replace(' ', "");
    let contains_en = |list: &[&str]| list.iter().any(|p| contains_words(&norm, p));
    let contains_zh = |list: &[&str]| list.iter().any(|p| joined.contains(p));

    if contains_en(EN_DONT_UNDERSTAND) || contains_zh(ZH_DONT_UNDERSTAND) {
        return Some(Intent::DontUnderstand);
    }
    if contains_en(EN_REPEAT)
        || contains_zh(ZH_REPEAT)
        || (words.len() == 1 && EN_REPEAT_WHOLE.contains(&words[0]))
        || ZH_REPEAT_WHOLE.contains(&joined.as_str())
    {
        return Some(Intent::Repeat);
    }
    let en_help = contains_en(EN_HELP);
    let zh_help = contains_zh(ZH_HELP);
    if (en_help && contains_en(EN_NOT_HELP)) || (zh_help && contains_zh(ZH_NOT_HELP)) {
        // "I don't need help" answers the help question with a no.
        return Some(Intent::No);
    }
    if en_help || zh_help {
        return Some(Intent::Help);
    }
    // Yes/no only from how the reply begins: "yes I had rice" is a yes,
    // "I had rice, not noodles" is not a no.
    let starts_en = |list: &[&str]| list.iter().any(|p| starts_with_words(&norm, p));
    if starts_en(EN_NO) {
        return Some(Intent::No);
    }
    if starts_en(EN_YES) {
        return Some(Intent::Yes);
    }
    if ZH_NO.iter().any(|p| joined.starts_with(p)) {
        return Some(Intent::No);
    }
    if ZH_YES.iter().any(|p| joined.starts_with(p))
        && !ZH_NOT_YES.iter().any(|p| joined.starts_with(p))
    {
        return Some(Intent::Yes);
    }
    None
}

/// Lower-cases, turns punctuation into spaces, drops fillers, collapses spaces.
fn normalise(s: &str) -> String {
    let mut spaced = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_alphanumeric() || c == '\'' || c == '’' {
            for l in c.to_lowercase() {
                spaced.push(if l == '’' { '\'' } else { l });
            }
        } else {
            spaced.push(' ');
        }
    }
    let mut words = Vec::new();
    for w in spaced.split_whitespace() {
        if EN_FILLERS.contains(&w) {
            continue;
        }
        let mut w = w.to_string();
        // Chinese fillers sit inside words (there are no spaces): strip them
        // from the front and back, where they occur.
        loop {
            let before = w.len();
            for f in ZH_FILLERS {
                if let Some(rest) = w.strip_prefix(f) {
                    w = rest.to_string();
                }
                if let Some(rest) = w.strip_suffix(f) {
                    w = rest.to_string();
                }
            }
            if w.len() == before {
                break;
            }
        }
        if !w.is_empty() {
            words.push(w);
        }
    }
    words.join(" ")
}

fn contains_words(hay: &str, phrase: &str) -> bool {
    let padded = format!(" {hay} ");
    padded.contains(&format!(" {phrase} "))
}

fn starts_with_words(hay: &str, phrase: &str) -> bool {
    hay == phrase || hay.starts_with(&format!("{phrase} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_short_replies() {
        assert_eq!(recognise("Yes."), Some(Intent::Yes));
        assert_eq!(recognise("um, yeah I did"), Some(Intent::Yes));
        assert_eq!(recognise("No, not yet"), Some(Intent::No));
        assert_eq!(recognise("uh... sorry?"), Some(Intent::Repeat));
        assert_eq!(recognise("Could you say that again"), Some(Intent::Repeat));
        assert_eq!(recognise("I need help"), Some(Intent::Help));
        assert_eq!(
            recognise("I don't understand"),
            Some(Intent::DontUnderstand)
        );
        assert_eq!(recognise("I had rice and fish"), None);
        assert_eq!(recognise("   "), None);
    }

    #[test]
    fn declined_help_is_not_help() {
        assert_eq!(recognise("no, I don't need help"), Some(Intent::No));
        assert_eq!(recognise("不用，不需要帮助"), Some(Intent::No));
    }

    #[test]
    fn mandarin_short_replies_with_fillers() {
        assert_eq!(recognise("嗯，是的"), Some(Intent::Yes));
        assert_eq!(recognise("啊对对对"), Some(Intent::Yes));
        assert_eq!(recognise("吃了吃了"), Some(Intent::Yes));
        assert_eq!(recognise("没有。"), Some(Intent::No));
        assert_eq!(recognise("不是"), Some(Intent::No));
        assert_eq!(recognise("你再说一遍"), Some(Intent::Repeat));
        assert_eq!(recognise("救命啊"), Some(Intent::Help));
        assert_eq!(recognise("我听不懂"), Some(Intent::DontUnderstand));
        assert_eq!(recognise("对不起"), None);
        assert_eq!(recognise("有点头晕"), None);
    }

    #[test]
    fn table_of_everyday_replies() {
        use Intent::*;
        let table: &[(&str, Option<Intent>)] = &[
            ("uh huh", Some(Yes)),
            ("Mm-hmm.", Some(Yes)),
            ("uh-uh", Some(No)),
            ("huh?", Some(Repeat)),
            ("sure did", Some(Yes)),
            ("not yet", Some(No)),
            ("I'm fine", None),
            ("I need an ambulance", Some(Help)),
            ("I don't need any help", Some(No)),
            ("pardon?", Some(Repeat)),
            ("please speak slower", Some(Repeat)),
            ("I don't know", None),
            ("what do you mean?", Some(DontUnderstand)),
            ("什么？", Some(Repeat)),
            ("啊？你说啥", Some(Repeat)),
            ("听不清", Some(Repeat)),
            ("说慢一点", Some(Repeat)),
            ("听不明白", Some(DontUnderstand)),
            ("快来人啊", Some(Help)),
            ("我不需要帮助", Some(No)),
            ("已经吃了", Some(Yes)),
            ("吃药了", Some(Yes)),
            ("还没有", Some(No)),
            ("不用了", Some(No)),
            ("有点不舒服", None),
            ("嗯", None),
        ];
        for (text, want) in table {
            assert_eq!(recognise(text), *want, "{text:?}");
        }
    }

    #[test]
    fn parses_names() {
        for i in Intent::ALL {
            assert_eq!(i.as_str().parse::<Intent>().unwrap(), i);
        }
        assert!("maybe".parse::<Intent>().is_err());
    }
}
