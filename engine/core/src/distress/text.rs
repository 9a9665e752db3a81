//! Turning a transcript into units to match: English words, Mandarin characters.
//!
//! Every unit keeps the byte range it came from in the original text, so a
//! reason's evidence span can be highlighted in the operator console even after
//! traditional characters were folded to simplified and fillers were dropped.

use super::Lang;
use super::phonetic::{self, Syl};
use pinyin::ToPinyin;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Han,
    Word,
    Break,
    Other,
}

pub(crate) fn script_of(c: char) -> Script {
    match c {
        '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2FFFF}' => Script::Han,
        ',' | '.' | '!' | '?' | ';' | ':' | '，' | '。' | '！' | '？' | '；' | '：' | '、'
        | '…' | '\n' => Script::Break,
        c if c.is_alphanumeric() => Script::Word,
        _ => Script::Other,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Lower-case word without apostrophes, or one simplified character.
    pub key: String,
    /// Folded toneless pinyin of a Chinese character, packed (see [`pack_sound`]).
    pub sound: Option<u32>,
    /// Toneless syllable of a Chinese character, for the weighted distance.
    pub syl: Option<Syl>,
    pub start: usize,
    pub end: usize,
    /// Punctuation: a clause boundary, never part of a match.
    pub brk: bool,
}

/// Normalises one lexicon word the way [`units`] normalises speech.
pub(crate) fn fold_word(w: &str, _lang: Lang) -> String {
    let s: String = fast2s::convert(w)
        .chars()
        .filter(|c| *c != '\'' && *c != '’')
        .flat_map(char::to_lowercase)
        .collect();
    let s = match w.strip_suffix("'s").or_else(|| w.strip_suffix("’s")) {
        Some(_) => s[..s.len() - 1].to_string(),
        None => s,
    };
    if s == "cannot" { "cant".to_string() } else { s }
}

/// Folded toneless pinyin of a character, packed five bits a letter.
///
/// The folding merges the distinctions southern speakers and the recogniser
/// blur: zh/z, ch/c, sh/s, l/n, and -ng/-n.
pub(crate) fn sound_of(c: char) -> Option<u32> {
    let py = c.to_pinyin()?.plain();
    Some(pack_sound(py))
}

pub(crate) fn pack_sound(py: &str) -> u32 {
    let mut s = py.replace('ü', "u");
    for (from, to) in [("zh", "z"), ("ch", "c"), ("sh", "s")] {
        if let Some(rest) = s.strip_prefix(from) {
            s = format!("{to}{rest}");
        }
    }
    if let Some(rest) = s.strip_prefix('l') {
        s = format!("n{rest}");
    }
    if s.ends_with("ng") {
        s.pop();
    }
    let mut packed = 0u32;
    for b in s.bytes().take(6) {
        packed = (packed << 5) | u32::from(b.wrapping_sub(b'a').wrapping_add(1) & 31);
    }
    packed
}

/// Splits `text` into units: English words, single Chinese characters (folded
/// to simplified), and punctuation breaks. Fillers are dropped and immediate
/// repeats ("我我我", "I I") are collapsed, because recognisers produce both.
pub(crate) fn units(text: &str, fillers: &[String]) -> Vec<Unit> {
    let simplified = fast2s::convert(text);
    let mut out: Vec<Unit> = Vec::new();
    let mut word: Option<(usize, String)> = None;
    let push = |out: &mut Vec<Unit>, u: Unit| {
        if fillers.contains(&u.key) {
            return;
        }
        if let Some(prev) = out.last_mut()
            && !prev.brk
            && !u.brk
            && prev.key == u.key
        {
            prev.end = u.end;
            return;
        }
        out.push(u);
    };
    let flush = |out: &mut Vec<Unit>, word: &mut Option<(usize, String)>, end: usize| {
        if let Some((start, w)) = word.take() {
            // "heating's", "husband's": the clitic goes, as in the lexicon.
            let raw = &text[start..end];
            let w = if (raw.ends_with("'s") || raw.ends_with("’s")) && w.len() > 1 {
                w[..w.len() - 1].to_string()
            } else {
                w
            };
            let key = if w == "cannot" { "cant".to_string() } else { w };
            push(
                out,
                Unit {
                    key,
                    sound: None,
                    syl: None,
                    start,
                    end,
                    brk: false,
                },
            );
        }
    };
    let mut orig = text.char_indices().peekable();
    for simp in simplified.chars() {
        let Some((pos, oc)) = orig.next() else { break };
        let next_pos = orig.peek().map_or(text.len(), |(p, _)| *p);
        match script_of(simp) {
            Script::Word => {
                let w = word.get_or_insert_with(|| (pos, String::new()));
                w.1.extend(simp.to_lowercase());
            }
            Script::Other if (oc == '\'' || oc == '’' || oc == '-') && word.is_some() => {
                // Apostrophes vanish ("can't" = "cant"); hyphens stay inside words.
                if oc == '-'
                    && let Some(w) = word.as_mut()
                {
                    w.1.push('-');
                }
            }
            s => {
                flush(&mut out, &mut word, pos);
                match s {
                    Script::Han => push(
                        &mut out,
                        Unit {
                            key: simp.to_string(),
                            sound: sound_of(simp),
                            syl: phonetic::syllable(simp),
                            start: pos,
                            end: next_pos,
                            brk: false,
                        },
                    ),
                    Script::Break => push(
                        &mut out,
                        Unit {
                            key: String::new(),
                            sound: None,
                            syl: None,
                            start: pos,
                            end: next_pos,
                            brk: true,
                        },
                    ),
                    _ => {}
                }
            }
        }
    }
    flush(&mut out, &mut word, text.len());
    // A trailing hyphen is not part of a word.
    for u in &mut out {
        while u.key.ends_with('-') {
            u.key.pop();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_into_the_original_text() {
        let t = "我喘不上氣, um I can't";
        let us = units(t, &["um".to_string()]);
        let keys: Vec<&str> = us.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["我", "喘", "不", "上", "气", "", "i", "cant"]);
        assert_eq!(&t[us[4].start..us[4].end], "氣");
        assert_eq!(&t[us[7].start..us[7].end], "can't");
    }

    #[test]
    fn repeats_collapse_and_keep_the_whole_span() {
        let t = "我我我摔倒了";
        let us = units(t, &[]);
        assert_eq!(us[0].key, "我");
        assert_eq!(&t[us[0].start..us[0].end], "我我我");
    }

    #[test]
    fn folded_pinyin_merges_retroflex_and_nasal_pairs() {
        assert_eq!(sound_of('喘'), sound_of('传'));
        assert_eq!(sound_of('救'), sound_of('就'));
        assert_eq!(sound_of('上'), sound_of('散'));
        assert_ne!(sound_of('气'), sound_of('次'));
    }
}
