//! Parsing of the lexicon files in `engine/core/data/distress/`.
//!
//! The files are embedded at build time and parsed when a [`Classifier`] is
//! built; every error names the file and line so a bad edit fails the unit
//! tests, never a call.
//!
//! [`Classifier`]: super::Classifier

use super::phonetic::Syl;
use super::text::{self, Script};
use super::{Category, Lang};
use crate::Level;
use std::collections::HashMap;

/// A lexicon file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LexiconError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// What a matched pattern means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A finding: index into `Lexicon::rules`.
    Alarm(usize),
    /// Words that hide findings inside them ("chest of drawers", "笑死").
    Mask,
    /// Negation cue ("didn't", "没有").
    Negate,
    /// Looks like a negation cue but is not one ("不小心", "not sure").
    NotNegation,
    /// Ends the reach of a negation cue.
    ScopeBreak,
    /// Ends the clause that time and subject markers apply to.
    ClauseBreak,
    /// The finding is in the distant past ("last year", "去年").
    Distant,
    /// Marks the past as still going on ("since last month", "一直").
    Ongoing,
    /// Said after a finding: it is over ("fine now", "好了").
    Resolved,
    /// A story, not the elder ("in the film", "电视剧里").
    Fiction,
    /// Someone outside the household ("my friend", "邻居").
    Other,
    /// Someone the elder lives with ("my husband", "老伴"): counts as the elder.
    Household,
    /// The elder says they themselves are fine ("I'm fine myself", "我还好"):
    /// what happened to someone else, or on television, is no concern of theirs.
    Fine,
    /// Makes a finding of a category worse: index into `Lexicon::raises`.
    Raise(usize),
}

/// A `raise` line: what turns a finding of `category` into `level` ("a fall"
/// and "lay there all night" is a long lie).
#[derive(Debug, Clone)]
pub(crate) struct Raise {
    pub category: Category,
    pub level: Level,
    pub note: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub lang: Lang,
    pub level: Level,
    pub category: Category,
    pub label: String,
    pub phonetic: bool,
    pub negatable: bool,
    /// Applies whoever it happens to (fire, intruder, scam): no "someone else" cap.
    pub anyone: bool,
    /// Plain literal alternatives, for the keyword baseline.
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Alt {
    pub text: String,
    pub prefix: bool,
    /// Folded toneless pinyin of a single Chinese character.
    pub sound: Option<u32>,
    /// Its toneless syllable, for the weighted distance.
    pub syl: Option<Syl>,
}

#[derive(Debug, Clone)]
pub(crate) enum Elem {
    Unit { alts: Vec<Alt>, optional: bool },
    Gap(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub kind: Kind,
    pub lang: Lang,
    pub elems: Vec<Elem>,
    /// Number of `Elem::Unit`s.
    pub units: usize,
    /// May match by sound (pinyin or a listed sound-alike).
    pub phonetic: bool,
    /// Has no `..`: only such patterns may have a wholly misheard syllable.
    pub gapless: bool,
    /// The pattern as written, for "sounds like ..." in reasons.
    pub display: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Lexicon {
    pub rules: Vec<Rule>,
    pub patterns: Vec<Pattern>,
    /// English: heard word -> words it may stand for.
    pub sounds: HashMap<String, Vec<String>>,
    pub fillers: Vec<String>,
    pub raises: Vec<Raise>,
}

/// Gap allowed by `..`, in units: words for English, characters for Mandarin.
fn gap_len(lang: Lang) -> usize {
    match lang {
        Lang::En => 4,
        Lang::Zh => 4,
    }
}

impl Lexicon {
    /// Parses one lexicon file into `self`. `file` names it in errors.
    pub fn add_file(&mut self, file: &str, lang: Lang, src: &str) -> Result<(), LexiconError> {
        // Fillers first: patterns are normalised the same way as speech.
        for (n, raw) in src.lines().enumerate() {
            if let Some(rest) = raw.trim().strip_prefix("filler:") {
                self.fillers
                    .extend(split_alts(rest).map(|s| text::fold_word(s, lang)));
                let _ = n;
            }
        }
        for (n, raw) in src.lines().enumerate() {
            let line = n + 1;
            let err = |message: String| LexiconError {
                file: file.to_string(),
                line,
                message,
            };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (head, body) = l.split_once(':').ok_or_else(|| {
                err(
                    "expected `<directive>: ...` or `<level> <category> <id> \"label\": ...`"
                        .into(),
                )
            })?;
            let head = head.trim();
            if body.trim().is_empty() {
                return Err(err("no patterns after ':'".into()));
            }
            let kind = match head {
                "filler" => continue,
                "sounds" => {
                    self.add_sounds(body, lang).map_err(err)?;
                    continue;
                }
                "negate" => Some(Kind::Negate),
                "not-negation" => Some(Kind::NotNegation),
                "scope-break" => Some(Kind::ScopeBreak),
                "clause-break" => Some(Kind::ClauseBreak),
                "distant" => Some(Kind::Distant),
                "ongoing" => Some(Kind::Ongoing),
                "resolved" => Some(Kind::Resolved),
                "fiction" => Some(Kind::Fiction),
                "other" => Some(Kind::Other),
                "household" => Some(Kind::Household),
                "mask" => Some(Kind::Mask),
                "fine" => Some(Kind::Fine),
                h if h.starts_with("raise ") => {
                    let raise = parse_raise(h).map_err(err)?;
                    self.raises.push(raise);
                    Some(Kind::Raise(self.raises.len() - 1))
                }
                _ => None,
            };
            let (kind, phonetic) = match kind {
                Some(k) => (k, false),
                None => {
                    let rule = self.parse_rule_head(head, lang).map_err(err)?;
                    let phonetic = rule.phonetic;
                    self.rules.push(rule);
                    (Kind::Alarm(self.rules.len() - 1), phonetic)
                }
            };
            for alt in split_alts(body) {
                let pat = self
                    .parse_pattern(alt, lang, kind, phonetic)
                    .map_err(|m| err(format!("pattern {alt:?}: {m}")))?;
                if let Kind::Alarm(r) = kind
                    && !alt.contains("..")
                    && !alt.contains(['*', '?', '/'])
                {
                    self.rules[r]
                        .keywords
                        .push(alt.to_lowercase().replace(['\'', '’'], ""));
                }
                self.patterns.push(pat);
            }
        }
        Ok(())
    }

    fn add_sounds(&mut self, body: &str, lang: Lang) -> Result<(), String> {
        for pair in body.split('|') {
            let (heard, meant) = pair
                .split_once('~')
                .ok_or_else(|| format!("sound-alike {:?} needs `heard ~ meant`", pair.trim()))?;
            let (heard, meant) = (
                text::fold_word(heard.trim(), lang),
                text::fold_word(meant.trim(), lang),
            );
            if heard.is_empty() || meant.is_empty() || heard.contains(' ') || meant.contains(' ') {
                return Err(format!(
                    "sound-alike {:?} must be one word each side",
                    pair.trim()
                ));
            }
            self.sounds.entry(heard).or_default().push(meant);
        }
        Ok(())
    }

    fn parse_rule_head(&self, head: &str, lang: Lang) -> Result<Rule, String> {
        let (before, label_and_flags) = head
            .split_once('"')
            .ok_or("rule needs a quoted label: <level> <category> <id> \"label\"")?;
        let (label, flags) = label_and_flags
            .split_once('"')
            .ok_or("unterminated label quote")?;
        let mut words = before.split_whitespace();
        let (Some(level), Some(category), Some(id), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!(
                "expected `<level> <category> <id> \"label\"`, got {head:?}"
            ));
        };
        let level: Level = level.parse().map_err(|e| format!("{e}"))?;
        if level == Level::Ok {
            return Err("a rule at level ok would never be reported".into());
        }
        let category: Category = category.parse()?;
        let id = format!("{}.{}.{}", lang.as_str(), category.as_str(), id);
        if self.rules.iter().any(|r| r.id == id) {
            return Err(format!("duplicate rule id {id}"));
        }
        let mut rule = Rule {
            id,
            lang,
            level,
            category,
            label: label.trim().to_string(),
            phonetic: level >= Level::Urgent,
            negatable: true,
            anyone: false,
            keywords: Vec::new(),
        };
        for flag in flags.split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace()) {
            match flag {
                "" => {}
                "nophonetic" => rule.phonetic = false,
                "nonegate" => rule.negatable = false,
                "anyone" => rule.anyone = true,
                other => {
                    return Err(format!(
                        "unknown flag {other:?} (known: nophonetic, nonegate, anyone)"
                    ));
                }
            }
        }
        Ok(rule)
    }

    fn parse_pattern(
        &self,
        src: &str,
        lang: Lang,
        kind: Kind,
        phonetic: bool,
    ) -> Result<Pattern, String> {
        let mut elems = Vec::new();
        let spaced = src.replace("..", " .. ");
        for tok in spaced.split_whitespace() {
            if tok == ".." {
                if matches!(elems.last(), None | Some(Elem::Gap(_))) {
                    return Err("`..` must sit between words".into());
                }
                elems.push(Elem::Gap(gap_len(lang)));
                continue;
            }
            if tok.chars().any(|c| text::script_of(c) == Script::Han) {
                if tok.contains(['*', '?', '/']) {
                    return Err("`*`, `?` and `/` apply to English words only".into());
                }
                for u in text::units(tok, &self.fillers) {
                    if u.brk {
                        return Err("punctuation inside a pattern".into());
                    }
                    elems.push(Elem::Unit {
                        alts: vec![Alt {
                            text: u.key,
                            prefix: false,
                            sound: u.sound,
                            syl: u.syl,
                        }],
                        optional: false,
                    });
                }
                continue;
            }
            let (tok, optional) = match tok.strip_suffix('?') {
                Some(t) => (t, true),
                None => (tok, false),
            };
            let mut alts = Vec::new();
            for a in tok.split('/') {
                let (a, prefix) = match a.strip_suffix('*') {
                    Some(a) => (a, true),
                    None => (a, false),
                };
                let folded = text::fold_word(a, lang);
                if folded.is_empty() || !folded.chars().all(|c| c.is_alphanumeric() || c == '-') {
                    return Err(format!("bad word {a:?}"));
                }
                if self.fillers.contains(&folded) {
                    continue;
                }
                alts.push(Alt {
                    text: folded,
                    prefix,
                    sound: None,
                    syl: None,
                });
            }
            if !alts.is_empty() {
                elems.push(Elem::Unit { alts, optional });
            }
        }
        if matches!(elems.last(), Some(Elem::Gap(_))) {
            return Err("`..` must sit between words".into());
        }
        // Collapse repeated units the way speech is collapsed ("谢谢" -> "谢").
        let mut dedup: Vec<Elem> = Vec::with_capacity(elems.len());
        for e in elems {
            if let (
                Some(Elem::Unit {
                    alts: prev,
                    optional: false,
                }),
                Elem::Unit {
                    alts,
                    optional: false,
                },
            ) = (dedup.last(), &e)
                && prev.len() == 1
                && alts.len() == 1
                && prev[0].text == alts[0].text
                && !prev[0].prefix
            {
                continue;
            }
            dedup.push(e);
        }
        let units = dedup
            .iter()
            .filter(|e| matches!(e, Elem::Unit { .. }))
            .count();
        if units == 0 {
            return Err("empty pattern".into());
        }
        if let Some(Elem::Unit { optional: true, .. }) = dedup.first() {
            return Err("a pattern cannot start with an optional word".into());
        }
        // A sound-alike of "了" or "的" proves nothing: two content syllables at least.
        let content = dedup
            .iter()
            .filter(|e| matches!(e, Elem::Unit { alts, .. } if !alts.iter().all(|a| FUNCTION_CHARS.contains(&a.text.as_str()))))
            .count();
        let gapless = !dedup.iter().any(|e| matches!(e, Elem::Gap(_)));
        Ok(Pattern {
            kind,
            lang,
            elems: dedup,
            units,
            phonetic: phonetic && units >= 2 && (lang == Lang::En || content >= 2),
            gapless,
            display: display(src),
        })
    }
}

/// `raise <category> <level> "<note>"`.
fn parse_raise(head: &str) -> Result<Raise, String> {
    let usage = "expected `raise <category> <level> \"note\"`";
    let (before, rest) = head.split_once('"').ok_or(usage)?;
    let (note, after) = rest.split_once('"').ok_or("unterminated note quote")?;
    let mut words = before.split_whitespace().skip(1);
    let (Some(category), Some(level), None) = (words.next(), words.next(), words.next()) else {
        return Err(usage.into());
    };
    if !after.trim().is_empty() || note.trim().is_empty() {
        return Err(usage.into());
    }
    let level: Level = level.parse().map_err(|e| format!("{e}"))?;
    if level == Level::Ok {
        return Err("a raise to ok would lower, not raise".into());
    }
    Ok(Raise {
        category: category.parse()?,
        level,
        note: note.trim().to_string(),
    })
}

/// A pattern as an operator should read it: first alternative, no syntax.
fn display(src: &str) -> String {
    src.replace("..", " … ")
        .split_whitespace()
        .map(|t| {
            t.split('/')
                .next()
                .unwrap_or(t)
                .trim_end_matches(['*', '?'])
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" … ", "…")
}

/// Mandarin particles and pronouns: too common to anchor a sound-alike match.
pub(crate) const FUNCTION_CHARS: &[&str] = &[
    "了", "的", "得", "地", "吗", "吧", "呢", "着", "过", "是", "在", "我", "你", "他", "她", "它",
    "一", "不", "没", "有", "也", "都", "就", "很", "啊",
];

fn split_alts(body: &str) -> impl Iterator<Item = &str> {
    body.split('|').map(str::trim).filter(|s| !s.is_empty())
}
