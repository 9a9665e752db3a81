//! The elder's own words for what hurts, taken from a finding's evidence so
//! that a follow-up question repeats only what was said.

use crate::distress::Category;
use crate::lang::Lang;

/// Body parts a pain can be named by, longest first so that 膝盖 wins over
/// a shorter word inside it.
const ZH_BODY: &[&str] = &[
    "膝盖", "脚踝", "手腕", "肩膀", "脖子", "胳膊", "肚子", "喉咙", "嗓子", "关节", "眼睛", "耳朵",
    "后背", "腰", "腿", "脚", "背", "头", "胃", "手", "牙", "膝",
];
const EN_BODY: &[&str] = &[
    "shoulders",
    "shoulder",
    "stomach",
    "tummy",
    "throat",
    "ankles",
    "ankle",
    "wrists",
    "wrist",
    "joints",
    "knees",
    "knee",
    "teeth",
    "tooth",
    "back",
    "head",
    "hips",
    "hip",
    "legs",
    "leg",
    "feet",
    "foot",
    "neck",
    "hands",
    "hand",
    "arms",
    "arm",
    "eyes",
    "eye",
    "ears",
    "ear",
];

/// The slot for `category` from `evidence`, or `None` when nothing in the
/// words fits the category's template.
pub fn of(category: Category, evidence: &str, lang: Lang) -> Option<String> {
    if category != Category::Pain {
        return None;
    }
    match lang {
        Lang::Zh => ZH_BODY
            .iter()
            .find(|w| evidence.contains(*w))
            .map(|w| w.to_string()),
        Lang::En => {
            let words: Vec<String> = evidence
                .split(|c: char| !c.is_alphabetic())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            EN_BODY
                .iter()
                .find(|b| words.iter().any(|w| w == *b))
                .map(|w| w.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pain_is_named_by_the_body_part_the_elder_said() {
        assert_eq!(
            of(Category::Pain, "膝盖疼得厉害", Lang::Zh).as_deref(),
            Some("膝盖")
        );
        assert_eq!(
            of(Category::Pain, "腿很疼", Lang::Zh).as_deref(),
            Some("腿")
        );
        assert_eq!(
            of(Category::Pain, "My knee hurts", Lang::En).as_deref(),
            Some("knee")
        );
        assert_eq!(
            of(Category::Pain, "my BACK is bad", Lang::En).as_deref(),
            Some("back")
        );
    }

    #[test]
    fn nothing_is_made_up() {
        // No body part in the words, or not a pain: the generic question.
        assert_eq!(of(Category::Pain, "疼得厉害", Lang::Zh), None);
        assert_eq!(of(Category::Pain, "it hurts", Lang::En), None);
        // "backache" is not the word "back"; "headline" is not "head".
        assert_eq!(of(Category::Pain, "a headline backache", Lang::En), None);
        assert_eq!(of(Category::Sleep, "头一晚没睡", Lang::Zh), None);
    }
}
