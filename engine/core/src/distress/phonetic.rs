//! A weighted syllable distance for Mandarin as the recogniser mishears it.
//!
//! Whisper on telephone audio rarely gets a Mandarin alarm phrase wholly
//! wrong; it hears a near-homophone: a back nasal as a front one (疼 teng →
//! 汤 tang), a retroflex as a dental (喘 chuan → 传 / 船), a palatal as its
//! neighbour (气 qi → 次 ci), a syllable swallowed or two run together. So a
//! phrase is compared with what was heard syllable by syllable, on toneless
//! pinyin, and a substitution costs what that confusion costs: cheap for the
//! pairs the recogniser swaps all the time, dear for unrelated sounds.
//!
//! Costs are in hundredths of one wholly wrong syllable. Pure and allocation
//! free; a phrase is only ever compared with windows of about its own length.

use pinyin::ToPinyin;
use std::sync::LazyLock;

/// A toneless syllable split into initial and final (indexes into the tables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Syl {
    ini: u8,
    fin: u8,
}

/// Initials; `y` and `w` are spelled out into their finals ("yun" = "" + "vn").
const INITIALS: [&str; 22] = [
    "", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "zh", "ch", "sh",
    "r", "z", "c", "s",
];

/// Finals, with `v` for ü. Interjections (嗯 n, 呣 m) are finals of their own.
const FINALS: [&str; 41] = [
    "a", "o", "e", "i", "u", "v", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong", "er",
    "ia", "ie", "iao", "iu", "ian", "in", "iang", "ing", "iong", "ua", "uo", "uai", "ui", "uan",
    "un", "uang", "ueng", "ve", "van", "vn", "m", "n", "ng", "ue", "ê",
];

/// A substitution of an unrelated initial or final.
const UNRELATED: u16 = 70;
/// A syllable heard wholly wrong.
pub(crate) const WHOLLY_WRONG: u16 = 100;
/// A syllable of the phrase not heard at all.
const DROP: u16 = 60;
/// An extra syllable heard inside the phrase: dearer than a drop, since the
/// recogniser swallows syllables far more often than it adds them, and an
/// extra measure word turns "吃了一瓶" into "吃了一个苹果".
const EXTRA: u16 = 70;
/// Two syllables run together into one (不上 bu shang → 帮 bang): this plus
/// how far the heard initial is from the first and its final from the second.
const MERGE: u16 = 30;

/// Initials whisper swaps in Mandarin, and what each swap costs.
const INITIAL_CONFUSIONS: &[(&str, &str, u16)] = &[
    // Retroflex and dental, and l/n: merged by many speakers, swapped constantly.
    ("zh", "z", 15),
    ("ch", "c", 15),
    ("sh", "s", 15),
    ("n", "l", 15),
    // Palatals among themselves and against their retroflex / dental neighbours.
    ("j", "q", 30),
    ("j", "x", 30),
    ("q", "x", 30),
    ("ch", "q", 25),
    ("c", "q", 30),
    ("zh", "j", 30),
    ("z", "j", 35),
    ("sh", "x", 30),
    ("s", "x", 35),
    // h/f (southern speakers); aspiration pairs the narrow band blurs, a
    // little dearer so that a two-syllable phrase is not matched on one alone
    // (挺甜 is not 停电).
    ("h", "f", 30),
    ("b", "p", 35),
    ("d", "t", 35),
    ("g", "k", 35),
    ("k", "h", 40),
    ("g", "h", 45),
    ("r", "l", 40),
    ("r", "", 40),
    ("r", "zh", 40),
    ("m", "n", 40),
    ("h", "", 45),
];

/// Finals whisper swaps in Mandarin, and what each swap costs.
const FINAL_CONFUSIONS: &[(&str, &str, u16)] = &[
    // Front and back nasals: the commonest confusion of all.
    ("an", "ang", 15),
    ("en", "eng", 15),
    ("in", "ing", 15),
    ("ian", "iang", 15),
    ("uan", "uang", 15),
    ("un", "ueng", 15),
    // Nasal vowels heard as their neighbours (teng → tang).
    ("eng", "ang", 30),
    ("en", "an", 30),
    ("eng", "an", 40),
    ("en", "ang", 40),
    ("ong", "eng", 30),
    ("ong", "un", 35),
    ("in", "en", 35),
    ("ing", "eng", 35),
    ("ian", "an", 35),
    ("iang", "ang", 35),
    ("uan", "an", 35),
    ("ian", "in", 35),
    ("un", "en", 35),
    ("vn", "iong", 30),
    ("vn", "un", 30),
    // Vowels (tou → tao, duo → do, xue → xie).
    ("ou", "ao", 30),
    ("ou", "u", 35),
    ("iu", "ou", 35),
    ("iao", "ao", 35),
    ("iao", "iu", 35),
    ("ou", "uo", 35),
    ("o", "uo", 15),
    ("e", "o", 25),
    ("e", "uo", 30),
    ("i", "v", 30),
    ("ie", "ve", 30),
    ("ve", "ue", 15),
    ("in", "vn", 30),
    ("ian", "van", 30),
    ("ui", "ei", 25),
    ("uai", "ai", 30),
    ("ai", "ei", 30),
    ("ai", "an", 40),
    ("ei", "en", 40),
    ("a", "ia", 30),
    ("a", "ua", 30),
    ("i", "e", 35),
    ("i", "ie", 35),
    ("u", "o", 35),
    ("u", "v", 30),
    ("er", "e", 35),
    ("n", "en", 30),
    ("ng", "eng", 30),
    ("n", "ng", 15),
];

struct Costs {
    ini: [[u16; INITIALS.len()]; INITIALS.len()],
    fin: [[u16; FINALS.len()]; FINALS.len()],
}

static COSTS: LazyLock<Costs> = LazyLock::new(|| {
    fn table<const N: usize>(names: &[&str; N], pairs: &[(&str, &str, u16)]) -> [[u16; N]; N] {
        let mut t = [[UNRELATED; N]; N];
        for (i, row) in t.iter_mut().enumerate() {
            row[i] = 0;
        }
        let at = |s: &str| {
            names
                .iter()
                .position(|n| *n == s)
                .unwrap_or_else(|| panic!("{s:?} is not in the table"))
        };
        for (a, b, c) in pairs {
            let (a, b) = (at(a), at(b));
            t[a][b] = *c;
            t[b][a] = *c;
        }
        t
    }
    Costs {
        ini: table(&INITIALS, INITIAL_CONFUSIONS),
        fin: table(&FINALS, FINAL_CONFUSIONS),
    }
});

/// The toneless syllable of a Chinese character, in its most common reading.
pub(crate) fn syllable(c: char) -> Option<Syl> {
    parse(c.to_pinyin()?.plain())
}

/// Splits a toneless pinyin syllable ("zhuang", "lü", "yun") into initial and final.
pub(crate) fn parse(py: &str) -> Option<Syl> {
    let py = py.replace('ü', "v");
    // y and w are spelling, not sound: "yun" is ün, "wei" is uei.
    let spelled = match py.as_str() {
        "yi" => "i".to_string(),
        "yu" => "v".to_string(),
        "yue" => "ve".to_string(),
        "yuan" => "van".to_string(),
        "yun" => "vn".to_string(),
        "yin" | "ying" => py[1..].to_string(),
        "you" => "iu".to_string(),
        "wu" => "u".to_string(),
        "wei" => "ui".to_string(),
        "wen" => "un".to_string(),
        s if s.starts_with('y') => format!("i{}", &s[1..]),
        s if s.starts_with('w') => format!("u{}", &s[1..]),
        s => s.to_string(),
    };
    let (ini, rest) = ["zh", "ch", "sh"]
        .iter()
        .find_map(|i| spelled.strip_prefix(i).map(|r| (*i, r)))
        .or_else(|| {
            let first = spelled.get(..1)?;
            INITIALS[1..]
                .contains(&first)
                .then(|| (first, &spelled[1..]))
        })
        .unwrap_or(("", spelled.as_str()));
    // After j, q, x the written u is ü.
    let fin = match (ini, rest.strip_prefix('u')) {
        ("j" | "q" | "x", Some(r)) => format!("v{r}"),
        _ => rest.to_string(),
    };
    let at = |f: &str| FINALS.iter().position(|x| *x == f);
    // Interjections (嗯 n, ng) are all final.
    let (ini, fin) = match at(&fin) {
        Some(f) => (ini, f),
        None => ("", at(&spelled)?),
    };
    Some(Syl {
        ini: INITIALS.iter().position(|i| *i == ini)? as u8,
        fin: fin as u8,
    })
}

impl Syl {
    /// Toneless pinyin, for messages and tests.
    #[cfg(test)]
    pub(crate) fn pinyin(self) -> String {
        format!(
            "{}{}",
            INITIALS[self.ini as usize], FINALS[self.fin as usize]
        )
    }
}

fn ini_cost(a: u8, b: u8) -> u16 {
    COSTS.ini[a as usize][b as usize]
}

fn fin_cost(a: u8, b: u8) -> u16 {
    COSTS.fin[a as usize][b as usize]
}

/// What hearing `heard` for `meant` costs: initial and final confusions added,
/// at most one wholly wrong syllable.
pub(crate) fn substitution(heard: Syl, meant: Syl) -> u16 {
    (ini_cost(heard.ini, meant.ini) + fin_cost(heard.fin, meant.fin)).min(WHOLLY_WRONG)
}

/// Longest phrase compared by sound, in syllables.
pub(crate) const MAX_SYLLABLES: usize = 10;

/// Weighted edit distance between the syllables heard and a phrase's, in
/// hundredths: substitutions as above, a syllable dropped, an extra one, or two
/// run together, inside the phrase; the first and last syllables may only be
/// near misses. `kept[j]` marks phrase syllables that may not be dropped or
/// merged away (不, 没: dropping one turns "cannot get up" into "got up").
#[cfg(test)]
pub(crate) fn distance(heard: &[Syl], meant: &[Syl], kept: &[bool]) -> u16 {
    distance_within(heard, meant, kept, u16::MAX)
}

/// [`distance`], giving up (with a value above `limit`) as soon as every
/// alignment so far costs more than `limit`: most windows tried are far off.
pub(crate) fn distance_within(heard: &[Syl], meant: &[Syl], kept: &[bool], limit: u16) -> u16 {
    const INF: u16 = u16::MAX / 4;
    let (h, m) = (heard.len(), meant.len());
    if h > MAX_SYLLABLES + 1 || m > MAX_SYLLABLES {
        return INF;
    }
    let mut d = [[INF; MAX_SYLLABLES + 1]; MAX_SYLLABLES + 2];
    d[0][0] = 0;
    for i in 0..=h {
        let mut row_min = INF;
        for j in 0..=m {
            if i == 0 && j == 0 {
                continue;
            }
            let mut best = INF;
            if i > 0 && j > 0 {
                let sub = substitution(heard[i - 1], meant[j - 1]);
                // The first and last syllables place the phrase: near misses only.
                if sub < UNRELATED || (j > 1 && j < m) {
                    best = best.min(d[i - 1][j - 1] + sub);
                }
            }
            // Only inside the phrase: losing its first or last syllable, or
            // padding it, would match a part of it ("起来了" is not "烧起来了").
            if i > 0 && j > 0 && j < m {
                best = best.min(d[i - 1][j] + EXTRA);
            }
            if j > 1 && j < m && !kept[j - 1] {
                best = best.min(d[i][j - 1] + DROP);
            }
            if i > 0 && j > 2 && j < m && !kept[j - 1] && !kept[j - 2] {
                // A blend: the first one's initial and the second one's final, near enough.
                let blend = ini_cost(heard[i - 1].ini, meant[j - 2].ini)
                    + fin_cost(heard[i - 1].fin, meant[j - 1].fin);
                if blend <= 40 {
                    best = best.min(d[i - 1][j - 2] + MERGE + blend);
                }
            }
            d[i][j] = best.min(INF);
            row_min = row_min.min(d[i][j]);
        }
        // Every cell of the next row costs at least the cheapest of this one.
        if i > 0 && row_min > limit {
            return INF;
        }
    }
    d[h][m]
}

/// The most a phrase of `n` syllables may be off and still count as heard.
///
/// Two syllables: one near-homophone (头晕 heard as 陶云), never a wholly wrong
/// one. Three: one or two near misses. Four: a near miss or two, or one
/// syllable dropped (喘不上气 heard as 传布上次). Five or more: a fifth of a
/// syllable each, so one may be wholly wrong if the rest is close.
pub(crate) fn threshold(n: usize) -> u16 {
    match n {
        0 | 1 => 0,
        2 => 30,
        3 => 50,
        4 => 60,
        n => 20 * n as u16,
    }
}

/// Whether a phrase of `n` syllables may be matched across a dropped, extra or
/// merged syllable: only long phrases, where the rest carries the meaning
/// ("胸口" is not "胸口疼" with 疼 dropped).
pub(crate) fn allows_gaps(n: usize) -> bool {
    n >= 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syls(s: &str) -> Vec<Syl> {
        s.chars()
            .map(|c| syllable(c).unwrap_or_else(|| panic!("{c}")))
            .collect()
    }

    /// The distance the matcher would give `heard` for `meant`, if within reach.
    fn heard_as(heard: &str, meant: &str) -> Option<u16> {
        let (h, m) = (syls(heard), syls(meant));
        let kept: Vec<bool> = meant.chars().map(|c| matches!(c, '不' | '没')).collect();
        if !allows_gaps(m.len()) && h.len() != m.len() {
            return None;
        }
        let d = distance(&h, &m, &kept);
        (d <= threshold(m.len())).then_some(d)
    }

    #[test]
    fn syllables_split_into_initial_and_final() {
        for (c, py) in [
            ('喘', "chuan"),
            ('晕', "vn"),
            ('云', "vn"),
            ('绿', "lv"),
            ('学', "xve"),
            ('为', "ui"),
            ('要', "iao"),
            ('有', "iu"),
            ('疼', "teng"),
            ('汤', "tang"),
            ('爱', "ai"),
            ('嗯', "n"),
        ] {
            assert_eq!(syllable(c).map(Syl::pinyin).as_deref(), Some(py), "{c}");
        }
    }

    #[test]
    fn confusions_cost_less_than_unrelated_sounds() {
        let s = |a: char, b: char| substitution(syllable(a).unwrap(), syllable(b).unwrap());
        assert_eq!(s('疼', '疼'), 0);
        assert!(s('汤', '疼') <= 30); // teng → tang
        assert!(s('次', '气') <= 30); // qi → ci
        assert!(s('船', '喘') <= 15); // chuan, zh/ch pairs
        assert!(s('陶', '头') <= 30); // tou → tao
        assert!(s('副', '互') <= 30); // h/f
        assert!(s('脑', '老') <= 15); // n/l
        assert!(s('猫', '疼') >= UNRELATED);
        assert_eq!(s('好', '疼'), WHOLLY_WRONG);
    }

    #[test]
    fn near_homophones_of_alarm_phrases_are_within_reach() {
        for (heard, meant) in [
            ("胸口汤", "胸口疼"),
            ("传布上次", "喘不上气"),
            ("陶云", "头晕"),
            ("起步来", "起不来"),
            ("帅到", "摔倒"),
            ("就命", "救命"),
            ("胸闷", "胸闷"),
            ("船不过气", "喘不过气"),
            ("闯不上气", "喘不上气"),
            ("透不过期", "透不过气"),
            ("站不其来", "站不起来"),
            ("心交痛", "心绞痛"),
            ("熊猛", "胸闷"),
            ("中疯", "中风"),
        ] {
            assert!(heard_as(heard, meant).is_some(), "{heard} for {meant}");
        }
    }

    #[test]
    fn unrelated_words_are_not() {
        for (heard, meant) in [
            ("我很好", "胸口疼"),
            ("吃饭了", "起不来"),
            ("睡得不", "睡不着"),
            ("挺好", "头晕"),
            ("起来", "起不来"),
            ("胸口", "胸口疼"),
            ("好的", "倒地"),
            ("谢谢", "救命"),
            ("天气不错", "喘不上气"),
            ("出去走走", "喘不过气"),
        ] {
            assert_eq!(heard_as(heard, meant), None, "{heard} for {meant}");
        }
    }

    #[test]
    fn a_negation_is_never_dropped_or_merged_away() {
        // "起来" (got up) is the opposite of "起不来"; "喘上气" keeps three of four.
        let kept = [false, true, false];
        assert!(distance(&syls("起来"), &syls("起不来"), &kept) > threshold(3));
        let m = syls("站不起来");
        let d = distance(&syls("站起来"), &m, &[false, true, false, false]);
        assert!(d > threshold(4), "{d}");
    }
}
