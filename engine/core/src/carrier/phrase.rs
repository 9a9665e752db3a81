//! Finding fixed phrases in a transcript as the recogniser heard them.
//!
//! Mandarin phrases are compared syllable by syllable on toneless pinyin with
//! the distress classifier's weighted distance (`distress::phonetic`), so a
//! near-homophone (关机 heard as 观机, 空号 as 控号) still counts; punctuation
//! and Latin letters between the characters are skipped. English phrases are
//! word sequences over a folded transcript (lower case, apostrophes dropped),
//! where a word may list spellings (`dialed/dialled`) or be optional (`?have`).

use crate::Lang;
use crate::distress::phonetic::{self, Syl};
use std::ops::Range;

/// Mandarin syllables the phrase may not lose: negations.
const KEPT: &[char] = &['不', '没', '别', '未', '无'];

/// One phrase, ready to be looked for.
#[derive(Debug, Clone)]
pub(crate) struct Phrase {
    /// As written in the table; names the phrase in evidence.
    pub text: &'static str,
    pub lang: Lang,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    Zh {
        syls: Vec<Syl>,
        kept: Vec<bool>,
    },
    /// Words; each a list of spellings, and whether it may be left out.
    En(Vec<(Vec<&'static str>, bool)>),
}

impl Phrase {
    /// A Mandarin phrase (Chinese characters) or an English pattern.
    ///
    /// # Panics
    /// On a Mandarin phrase with a character that has no reading, or one
    /// longer than the phonetic matcher compares: the tables are constants.
    pub fn new(text: &'static str, lang: Lang) -> Self {
        let form = match lang {
            Lang::Zh => {
                let syls: Vec<Syl> = text
                    .chars()
                    .map(|c| phonetic::syllable(c).unwrap_or_else(|| panic!("{text}: {c}")))
                    .collect();
                assert!(
                    (1..=phonetic::MAX_SYLLABLES).contains(&syls.len()),
                    "{text}"
                );
                let kept = text.chars().map(|c| KEPT.contains(&c)).collect();
                Form::Zh { syls, kept }
            }
            Lang::En => Form::En(
                text.split_whitespace()
                    .map(|w| {
                        let (w, optional) = match w.strip_prefix('?') {
                            Some(w) => (w, true),
                            None => (w, false),
                        };
                        (w.split('/').collect(), optional)
                    })
                    .collect(),
            ),
        };
        Self { text, lang, form }
    }
}

/// Where a phrase was found: byte offsets into the transcript, and how far
/// the sound was from the phrase (hundredths of a wholly wrong syllable; 0
/// for an exact match, always 0 in English).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub span: Range<usize>,
    pub distance: u16,
}

/// A transcript split for matching.
#[derive(Debug, Clone)]
pub(crate) struct Heard {
    /// Syllables of the Chinese characters, with their byte spans.
    syls: Vec<(Syl, Range<usize>)>,
    /// Folded English words, with their byte spans.
    words: Vec<(String, Range<usize>)>,
}

impl Heard {
    pub fn new(text: &str) -> Self {
        let mut syls = Vec::new();
        let mut words: Vec<(String, Range<usize>)> = Vec::new();
        let mut word: Option<(String, usize)> = None;
        for (i, c) in text.char_indices() {
            let end = i + c.len_utf8();
            if c.is_ascii_alphanumeric() || (c == '\'' || c == '’') && word.is_some() {
                let w = word.get_or_insert_with(|| (String::new(), i));
                if c.is_ascii_alphanumeric() {
                    w.0.push(c.to_ascii_lowercase());
                }
                continue;
            }
            if let Some((w, start)) = word.take() {
                words.push((w, start..i));
            }
            if let Some(s) = phonetic::syllable(c) {
                syls.push((s, i..end));
            }
        }
        if let Some((w, start)) = word.take() {
            words.push((w, start..text.len()));
        }
        Self { syls, words }
    }

    /// The closest place the phrase was heard, if near enough.
    pub fn find(&self, p: &Phrase) -> Option<Found> {
        match &p.form {
            Form::Zh { syls, kept } => self.find_zh(syls, kept),
            Form::En(words) => self.find_en(words),
        }
    }

    fn find_zh(&self, meant: &[Syl], kept: &[bool]) -> Option<Found> {
        let m = meant.len();
        let limit = phonetic::threshold(m);
        let lens: &[usize] = if phonetic::allows_gaps(m) {
            &[m, m - 1, m + 1]
        } else {
            &[m]
        };
        let heard: Vec<Syl> = self.syls.iter().map(|(s, _)| *s).collect();
        let mut best: Option<Found> = None;
        for &len in lens {
            if len == 0 || len > heard.len() {
                continue;
            }
            for i in 0..=heard.len() - len {
                let d = phonetic::distance_within(&heard[i..i + len], meant, kept, limit);
                let bound = best
                    .as_ref()
                    .map_or(limit, |b| b.distance.saturating_sub(1));
                if d <= bound && (m > 1 || d == 0) {
                    best = Some(Found {
                        span: self.syls[i].1.start..self.syls[i + len - 1].1.end,
                        distance: d,
                    });
                    if d == 0 {
                        return best;
                    }
                }
            }
        }
        best
    }

    fn find_en(&self, pattern: &[(Vec<&'static str>, bool)]) -> Option<Found> {
        (0..self.words.len()).find_map(|i| {
            let end = self.match_from(pattern, i)?;
            (end > i).then(|| Found {
                span: self.words[i].1.start..self.words[end - 1].1.end,
                distance: 0,
            })
        })
    }

    /// Index just past the words matched from `i`, if the pattern matches there.
    fn match_from(&self, pattern: &[(Vec<&'static str>, bool)], i: usize) -> Option<usize> {
        let Some(((spellings, optional), rest)) = pattern.split_first() else {
            return Some(i);
        };
        if let Some((w, _)) = self.words.get(i)
            && spellings.contains(&w.as_str())
            && let Some(end) = self.match_from(rest, i + 1)
        {
            return Some(end);
        }
        if *optional {
            return self.match_from(rest, i);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str, phrase: &'static str, lang: Lang) -> Option<Found> {
        Heard::new(text).find(&Phrase::new(phrase, lang))
    }

    #[test]
    fn mandarin_is_found_exactly_across_punctuation_and_by_sound() {
        let f = find("对不起，您拨打的电话已关机。", "已关机", Lang::Zh).unwrap();
        assert_eq!(f.distance, 0);
        assert_eq!(&"对不起，您拨打的电话已关机。"[f.span], "已关机");
        assert!(find("您拨打的电话，暂时无法接通", "电话暂时", Lang::Zh).is_some());
        // Near-homophones the recogniser writes.
        assert_eq!(
            find("您拨打的电话以关机", "已关机", Lang::Zh)
                .unwrap()
                .distance,
            0
        );
        assert!(find("您拨打的号码是控号", "空号", Lang::Zh).is_some());
        assert!(find("请稍后在拨", "请稍后再拨", Lang::Zh).is_some());
        // Not a phrase the elder said.
        assert!(find("我很好", "空号", Lang::Zh).is_none());
        assert!(find("起来了", "不要挂机", Lang::Zh).is_none());
        // A negation is never dropped.
        assert!(find("请要挂机", "请不要挂机", Lang::Zh).is_none());
    }

    #[test]
    fn english_patterns_take_spellings_and_optional_words() {
        let p = "the number you ?have dialed/dialled/called";
        for t in [
            "The number you have dialled is not in service.",
            "Sorry, the number you dialed is busy",
            "the number you called",
        ] {
            assert!(find(t, p, Lang::En).is_some(), "{t}");
        }
        assert!(find("the number you gave me", p, Lang::En).is_none());
        let t = "We can't come to the phone";
        let f = find(t, "cant come to the phone", Lang::En).unwrap();
        assert_eq!(&t[f.span], "can't come to the phone");
    }
}
