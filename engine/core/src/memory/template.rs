//! The follow-up question for a concern, and the reason given when it
//! raises the level, in the elder's language.

use chrono::{Days, NaiveDate};

use super::{Change, Concern};
use crate::distress::Category;
use crate::lang::Lang;

/// The question asking about `c` today, keypad choices included.
pub fn question(c: &Concern, lang: Lang, today: NaiveDate) -> String {
    let yesterday = today.checked_sub_days(Days::new(1)) == Some(c.last());
    match lang {
        Lang::Zh => {
            let when = if yesterday { "昨天" } else { "上次" };
            let q = match (c.category, &c.slot) {
                (Category::Pain, Some(part)) => format!("{when}您说{part}疼，今天好点了吗？"),
                (Category::Pain, None) => format!("{when}您说身上疼，今天好点了吗？"),
                (Category::Sleep, _) => format!("{when}您说睡得不好，昨晚睡得好点了吗？"),
                (Category::Appetite | Category::NotEating, _) => {
                    format!("{when}您说不太想吃东西，今天吃得下了吗？")
                }
                (Category::Mood | Category::Grief | Category::Hopelessness, _) => {
                    format!("{when}您说心情不太好，今天心情好点了吗？")
                }
                (Category::Dizziness, _) => format!("{when}您说头晕，今天好点了吗？"),
                (Category::Mobility, _) => format!("{when}您说走动不方便，今天好点了吗？"),
                (Category::Cold, _) => format!("{when}您说家里冷，今天暖和点了吗？"),
                _ => format!("{when}您说身体不舒服，今天好点了吗？"),
            };
            format!("{q}好点了请按1，差不多请按2，更差了请按3。")
        }
        Lang::En => {
            let when = if yesterday { "Yesterday" } else { "Last time" };
            let q = match (c.category, &c.slot) {
                (Category::Pain, Some(part)) => {
                    let was = if plural(part) { "were" } else { "was" };
                    format!(
                        "{when} you mentioned your {part} {was} hurting. Is it any better today?"
                    )
                }
                (Category::Pain, None) => {
                    format!("{when} you mentioned you were in pain. Is it any better today?")
                }
                (Category::Sleep, _) => format!(
                    "{when} you said you had not been sleeping well. Did you sleep better last night?"
                ),
                (Category::Appetite | Category::NotEating, _) => format!(
                    "{when} you said you had not been eating much. Have you been able to eat today?"
                ),
                (Category::Mood | Category::Grief | Category::Hopelessness, _) => format!(
                    "{when} you said you were feeling low. Are you feeling any better today?"
                ),
                (Category::Dizziness, _) => {
                    format!("{when} you said you felt dizzy. Is it any better today?")
                }
                (Category::Mobility, _) => {
                    format!("{when} you said it was hard to get about. Is it any better today?")
                }
                (Category::Cold, _) => {
                    format!("{when} you said your home was cold. Is it any warmer today?")
                }
                _ => {
                    format!("{when} you said you were not feeling well. Are you any better today?")
                }
            };
            format!("{q} Press 1 if it is better, 2 if it is the same, 3 if it is worse.")
        }
    }
}

fn plural(part: &str) -> bool {
    part.ends_with('s') || part == "feet" || part == "teeth"
}

/// What the concern is, in a few words.
fn label(c: &Concern, lang: Lang) -> String {
    match lang {
        Lang::Zh => match (c.category, &c.slot) {
            (Category::Pain, Some(part)) => format!("{part}疼"),
            (Category::Pain, None) => "疼痛".into(),
            (Category::Sleep, _) => "睡不好".into(),
            (Category::Appetite | Category::NotEating, _) => "吃不下".into(),
            (Category::Mood | Category::Grief | Category::Hopelessness, _) => "情绪低落".into(),
            (Category::Dizziness, _) => "头晕".into(),
            (Category::Mobility, _) => "行动不便".into(),
            (Category::Cold, _) => "家里冷".into(),
            _ => "身体不适".into(),
        },
        Lang::En => match (c.category, &c.slot) {
            (Category::Pain, Some(part)) => format!("{part} pain"),
            (Category::Pain, None) => "pain".into(),
            (Category::Sleep, _) => "poor sleep".into(),
            (Category::Appetite | Category::NotEating, _) => "not eating".into(),
            (Category::Mood | Category::Grief | Category::Hopelessness, _) => "low mood".into(),
            (Category::Dizziness, _) => "dizziness".into(),
            (Category::Mobility, _) => "difficulty getting about".into(),
            (Category::Cold, _) => "a cold home".into(),
            _ => "feeling unwell".into(),
        },
    }
}

fn day(d: NaiveDate, lang: Lang) -> String {
    match lang {
        Lang::Zh => d.format("%-m月%-d日").to_string(),
        Lang::En => d.format("%-d %b").to_string(),
    }
}

/// Why the level is raised: the concern's history of the calls running up
/// to today ("knee pain reported on 3 calls running: 12 Dec, 13 Dec,
/// 14 Dec"), or today's worsening and when it began.
pub(super) fn history_reason(c: &Concern, today: NaiveDate, lang: Lang, worse: bool) -> String {
    let what = label(c, lang);
    if worse {
        return match lang {
            Lang::Zh => format!(
                "{what}今天更重了（{}），{}起提到",
                day(today, lang),
                day(c.since(), lang)
            ),
            Lang::En => format!(
                "{what} worse today ({}); first reported {}",
                day(today, lang),
                day(c.since(), lang)
            ),
        };
    }
    let mut dates: Vec<NaiveDate> = c
        .history
        .iter()
        .rev()
        .take_while(|m| matches!(m.change, Change::New | Change::Same))
        .map(|m| m.date)
        .collect();
    dates.reverse();
    dates.push(today);
    let n = dates.len();
    match lang {
        Lang::Zh => {
            let list: Vec<String> = dates.iter().map(|d| day(*d, lang)).collect();
            format!("{what}连续{n}次通话提到：{}", list.join("、"))
        }
        Lang::En => {
            let list: Vec<String> = dates.iter().map(|d| day(*d, lang)).collect();
            format!("{what} reported on {n} calls running: {}", list.join(", "))
        }
    }
}
