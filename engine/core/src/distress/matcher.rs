//! Matching a transcript against the lexicon and weighing each finding in its
//! context: negation, time, who it happened to, and masks for idioms.

use super::lexicon::{Elem, FUNCTION_CHARS, Kind, Lexicon, Pattern};
use super::phonetic::{self, Syl};
use super::text::{self, Unit};
use super::{Category, Lang, Reason};
use crate::Level;
use std::collections::HashMap;

/// How far back a negation cue reaches, in units (words or characters).
const NEGATION_REACH: usize = 3;

/// Short English words that do not anchor a sound-alike match on their own.
const STOPWORDS: &[&str] = &[
    "i", "my", "me", "a", "an", "the", "and", "to", "of", "in", "on", "it", "is", "im", "was", "at",
];

/// Mandarin negations: never dropped or merged away in a sound match, since
/// "起来" (got up) is the opposite of "起不来".
const NEGATIONS: &[&str] = &["不", "没", "别", "未", "无"];

/// Contrast words a `..` gap never spans.
const GAP_STOPS: &[&str] = &["but", "though", "although", "however", "但", "可"];

#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    lex: Lexicon,
    first: HashMap<String, Vec<usize>>,
    first_sound: HashMap<u32, Vec<usize>>,
    /// Patterns whose first word is a prefix (`hurt*`): checked everywhere.
    always: Vec<usize>,
    keywords: Vec<(Lang, Vec<String>)>,
    /// Mandarin phrases compared by weighted syllable distance, by pattern id.
    phrases: Vec<Option<Phrase>>,
    /// Folded sound of a content syllable -> (pattern id, its syllable index):
    /// where a phrase may sit around a heard syllable.
    anchors: HashMap<u32, Vec<(usize, usize)>>,
}

/// A gapless Mandarin pattern as syllables.
#[derive(Debug, Clone)]
struct Phrase {
    syls: Vec<Syl>,
    chars: Vec<String>,
    /// Syllables that may not be dropped or merged away: negations.
    kept: Vec<bool>,
}

#[derive(Debug, Clone, Copy)]
struct M {
    pid: usize,
    start: usize,
    end: usize,
    phonetic: bool,
    gap_mask: u64,
    sound_mask: u64,
    /// Weighted syllable distance of a Mandarin sound match, in hundredths.
    dist: Option<u16>,
}

impl M {
    fn overlaps(&self, o: &M) -> bool {
        self.start < o.end && o.start < self.end
    }
    fn contains(&self, o: &M) -> bool {
        self.start <= o.start && o.end <= self.end
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    sounds: u8,
    /// Summed substitution cost of Mandarin syllables matched by sound.
    cost: u16,
    content_exact: u8,
    /// Units (offsets from the match start) consumed by `..` gaps.
    gap_mask: u64,
    /// Units matched by sound or wholly misheard, like `gap_mask`.
    sound_mask: u64,
    start: usize,
}

impl Matcher {
    pub fn new(lex: Lexicon) -> Self {
        let mut first: HashMap<String, Vec<usize>> = HashMap::new();
        let mut first_sound: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut always = Vec::new();
        for (pid, p) in lex.patterns.iter().enumerate() {
            let Some(Elem::Unit { alts, .. }) = p.elems.first() else {
                continue;
            };
            for a in alts {
                if a.prefix {
                    always.push(pid);
                } else {
                    first.entry(a.text.clone()).or_default().push(pid);
                }
                if let (true, Some(s)) = (p.phonetic, a.sound) {
                    first_sound.entry(s).or_default().push(pid);
                }
            }
        }
        always.dedup();
        let mut keywords = Vec::new();
        for r in lex.rules.iter().filter(|r| r.level >= Level::Urgent) {
            for k in &r.keywords {
                let words: Vec<String> = k
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect();
                if !words.is_empty() {
                    keywords.push((r.lang, words));
                }
            }
        }
        let mut phrases = vec![None; lex.patterns.len()];
        let mut anchors: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
        for (pid, p) in lex.patterns.iter().enumerate() {
            if let Some(ph) = Self::phrase(p) {
                for (k, e) in p.elems.iter().enumerate() {
                    if let Elem::Unit { alts, .. } = e
                        && let Some(s) = alts[0].sound
                        && !FUNCTION_CHARS.contains(&alts[0].text.as_str())
                    {
                        anchors.entry(s).or_default().push((pid, k));
                    }
                }
                phrases[pid] = Some(ph);
            }
        }
        Matcher {
            lex,
            first,
            first_sound,
            always,
            keywords,
            phrases,
            anchors,
        }
    }

    /// The syllables of a gapless Mandarin pattern that may be heard by sound:
    /// alarms that allow it, and the context markers that qualify a finding
    /// (negation, story, someone else, the past, recovery, the household), so
    /// a misheard reply is read in the same context as a clean one.
    fn phrase(p: &Pattern) -> Option<Phrase> {
        let by_sound = match p.kind {
            Kind::Alarm(_) => p.phonetic,
            Kind::Negate
            | Kind::Fiction
            | Kind::Other
            | Kind::Household
            | Kind::Distant
            | Kind::Resolved => {
                let content = p
                    .elems
                    .iter()
                    .filter(|e| matches!(e, Elem::Unit { alts, .. } if !FUNCTION_CHARS.contains(&alts[0].text.as_str())))
                    .count();
                content >= 2
            }
            _ => false,
        };
        if !by_sound
            || p.lang != Lang::Zh
            || !p.gapless
            || p.units < 2
            || p.units > phonetic::MAX_SYLLABLES
        {
            return None;
        }
        let mut ph = Phrase {
            syls: Vec::new(),
            chars: Vec::new(),
            kept: Vec::new(),
        };
        for e in &p.elems {
            let Elem::Unit {
                alts,
                optional: false,
            } = e
            else {
                return None;
            };
            let [a] = alts.as_slice() else { return None };
            ph.syls.push(a.syl?);
            ph.kept.push(NEGATIONS.contains(&a.text.as_str()));
            ph.chars.push(a.text.clone());
        }
        Some(ph)
    }

    /// Mandarin phrases heard as near-homophones: every window of about a
    /// phrase's length around a heard syllable that sounds like one of the
    /// phrase's, within the phrase's distance threshold. Windows already
    /// matched exactly (`exact`) are left to that match.
    fn sound_matches(&self, us: &[Unit], hint: Option<Lang>, exact: &[M]) -> Vec<M> {
        if hint == Some(Lang::En) {
            return Vec::new();
        }
        // (pattern, where it would start, which of its syllables): a heard
        // syllable that sounds like one of the phrase's content syllables.
        let mut hits: Vec<(usize, usize, usize)> = Vec::new();
        for (i, u) in us.iter().enumerate() {
            let Some(v) = u.sound.and_then(|s| self.anchors.get(&s)) else {
                continue;
            };
            for &(pid, k) in v {
                if let Some(base) = i.checked_sub(k) {
                    hits.push((pid, base, k));
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        // A phrase of three or more syllables is tried only where two of its
        // syllables were heard alike (a dropped or merged one shifts the
        // start by one): most phrases sharing one common syllable with the
        // reply are never compared at all.
        let mut cands: Vec<(usize, usize, usize)> = Vec::new();
        let mut g = 0;
        while g < hits.len() {
            let pid = hits[g].0;
            let end = hits[g..]
                .iter()
                .position(|h| h.0 != pid)
                .map_or(hits.len(), |e| g + e);
            let group = &hits[g..end];
            g = end;
            let Some(ph) = &self.phrases[pid] else {
                continue;
            };
            let n = ph.syls.len();
            let gaps = phonetic::allows_gaps(n);
            let mut last_base = None;
            for &(_, base, _) in group {
                if last_base == Some(base) {
                    continue;
                }
                last_base = Some(base);
                let near = |b: usize| {
                    if gaps {
                        b.abs_diff(base) <= 1
                    } else {
                        b == base
                    }
                };
                let mut ks = group.iter().filter(|h| near(h.1)).map(|h| h.2);
                let first = ks.next();
                if n >= 3 && !ks.any(|k| Some(k) != first) {
                    continue;
                }
                if gaps {
                    for st in base.saturating_sub(1)..=base + 1 {
                        for len in n - 1..=n + 1 {
                            cands.push((pid, st, len));
                        }
                    }
                } else {
                    cands.push((pid, base, n));
                }
            }
        }
        cands.sort_unstable();
        cands.dedup();
        let mut found: Vec<(usize, u16, usize, usize)> = Vec::new();
        let mut heard = [Syl::default(); phonetic::MAX_SYLLABLES + 1];
        for (pid, st, len) in cands {
            let Some(ph) = &self.phrases[pid] else {
                continue;
            };
            let end = st + len;
            let Some(w) = us.get(st..end) else { continue };
            if len > heard.len() || w.iter().any(|u| u.brk || u.syl.is_none()) {
                continue;
            }
            if len == ph.chars.len() && w.iter().zip(&ph.chars).all(|(u, c)| u.key == *c) {
                continue;
            }
            if exact
                .iter()
                .any(|m| m.pid == pid && m.start < end && st < m.end)
            {
                continue;
            }
            for (h, u) in heard.iter_mut().zip(w) {
                *h = u.syl.unwrap_or_default();
            }
            let limit = phonetic::threshold(ph.syls.len());
            let d = phonetic::distance_within(&heard[..len], &ph.syls, &ph.kept, limit);
            if d <= limit {
                found.push((pid, d, st, end));
            }
        }
        // One reading per phrase and place: the closest, then the phrase's own length.
        found.sort_unstable_by_key(|&(pid, d, st, end)| {
            let n = self.phrases[pid].as_ref().map_or(0, |p| p.syls.len());
            (pid, d, (end - st).abs_diff(n), st)
        });
        let mut out: Vec<M> = Vec::new();
        for (pid, d, start, end) in found {
            if out
                .iter()
                .any(|m| m.pid == pid && m.start < end && start < m.end)
            {
                continue;
            }
            let ph = self.phrases[pid].as_ref();
            let mut sound_mask = 0;
            for (off, u) in us[start..end].iter().enumerate() {
                if !ph.is_some_and(|p| p.chars.contains(&u.key)) {
                    sound_mask |= bit(off);
                }
            }
            out.push(M {
                pid,
                start,
                end,
                phonetic: true,
                gap_mask: 0,
                sound_mask,
                dist: Some(d),
            });
        }
        out
    }

    fn lang_ok(p_lang: Lang, hint: Option<Lang>) -> bool {
        !(hint == Some(Lang::En) && p_lang == Lang::Zh)
    }

    fn all_matches(&self, us: &[Unit], hint: Option<Lang>) -> Vec<M> {
        let mut out = Vec::new();
        let mut cands: Vec<usize> = Vec::new();
        for i in 0..us.len() {
            let u = &us[i];
            if u.brk {
                continue;
            }
            cands.clear();
            if let Some(v) = self.first.get(&u.key) {
                cands.extend_from_slice(v);
            }
            cands.extend_from_slice(&self.always);
            if let Some(s) = u.sound
                && let Some(v) = self.first_sound.get(&s)
            {
                cands.extend_from_slice(v);
            }
            if let Some(meant) = self.lex.sounds.get(&u.key) {
                for m in meant {
                    if let Some(v) = self.first.get(m) {
                        cands.extend(v.iter().filter(|&&pid| self.lex.patterns[pid].phonetic));
                    }
                }
            }
            cands.sort_unstable();
            cands.dedup();
            for &pid in &cands {
                let p = &self.lex.patterns[pid];
                if !Self::lang_ok(p.lang, hint) {
                    continue;
                }
                if let Some((end, t)) = self.go(
                    p,
                    0,
                    us,
                    i,
                    Tally {
                        start: i,
                        ..Tally::default()
                    },
                ) {
                    out.push(M {
                        pid,
                        start: i,
                        end,
                        phonetic: t.sounds > 0,
                        gap_mask: t.gap_mask,
                        sound_mask: t.sound_mask,
                        dist: (t.sounds > 0 && p.lang == Lang::Zh).then_some(t.cost),
                    });
                }
            }
        }
        let by_sound = self.sound_matches(us, hint, &out);
        out.extend(by_sound);
        out
    }

    /// Matches `p.elems[ei..]` at unit `ui`; returns the end unit and the tally.
    fn go(
        &self,
        p: &Pattern,
        ei: usize,
        us: &[Unit],
        ui: usize,
        t: Tally,
    ) -> Option<(usize, Tally)> {
        let Some(e) = p.elems.get(ei) else {
            if t.sounds == 0 {
                return Some((ui, t));
            }
            // A sound-alike match needs real words around the misheard one.
            let ok = match p.lang {
                Lang::En => t.sounds <= 1 && t.content_exact >= 1,
                Lang::Zh => true,
            };
            return ok.then_some((ui, t));
        };
        match e {
            Elem::Gap(n) => {
                let mut t = t;
                for k in 0..=*n {
                    if k > 0 {
                        if us.get(ui + k - 1).is_none_or(|u| u.brk) {
                            break;
                        }
                        let off = ui + k - 1 - t.start;
                        t.gap_mask |= bit(off);
                    }
                    if let Some(r) = self.go(p, ei + 1, us, ui + k, t) {
                        return Some(r);
                    }
                }
                None
            }
            Elem::Unit { alts, optional } => {
                if let Some(u) = us.get(ui).filter(|u| !u.brk) {
                    let exact = alts.iter().any(|a| {
                        if a.prefix {
                            u.key.starts_with(&a.text)
                        } else {
                            u.key == a.text
                        }
                    });
                    if exact {
                        let mut t2 = t;
                        if !STOPWORDS.contains(&u.key.as_str()) {
                            t2.content_exact += 1;
                        }
                        if let Some(r) = self.go(p, ei + 1, us, ui + 1, t2) {
                            return Some(r);
                        }
                    } else if p.phonetic {
                        // Gapless Mandarin phrases go by weighted distance
                        // (`sound_matches`); here only those with `..`.
                        let sounds = match p.lang {
                            Lang::Zh => {
                                !p.gapless
                                    && u.sound.is_some()
                                    && alts.iter().any(|a| a.sound == u.sound)
                            }
                            Lang::En => self.lex.sounds.get(&u.key).is_some_and(|meant| {
                                meant.iter().any(|m| {
                                    alts.iter().any(|a| {
                                        if a.prefix {
                                            m.starts_with(&a.text)
                                        } else {
                                            *m == a.text
                                        }
                                    })
                                })
                            }),
                        };
                        if sounds {
                            let cost = match (u.syl, alts[0].syl) {
                                (Some(h), Some(m)) => phonetic::substitution(h, m),
                                _ => 0,
                            };
                            let t2 = Tally {
                                sounds: t.sounds + 1,
                                cost: t.cost + cost,
                                sound_mask: t.sound_mask | bit(ui - t.start),
                                ..t
                            };
                            if let Some(r) = self.go(p, ei + 1, us, ui + 1, t2) {
                                return Some(r);
                            }
                        }
                    }
                }
                if *optional {
                    self.go(p, ei + 1, us, ui, t)
                } else {
                    None
                }
            }
        }
    }

    /// Byte offsets at which the word units of `text` (not punctuation) start.
    pub fn word_starts(&self, text: &str) -> Vec<usize> {
        text::units(text, &self.lex.fillers)
            .iter()
            .filter(|u| !u.brk)
            .map(|u| u.start)
            .collect()
    }

    pub fn reasons(&self, text: &str, hint: Option<Lang>) -> Vec<Reason> {
        let us = text::units(text, &self.lex.fillers);
        if us.is_empty() {
            return Vec::new();
        }
        let ms = self.all_matches(&us, hint);
        let kind = |m: &M| self.lex.patterns[m.pid].kind;
        let n = us.len();
        let mut masked = vec![false; n];
        let mut not_negation = vec![false; n];
        // Unit i starts a new clause / negation scope.
        let mut clause_start = vec![false; n];
        let mut scope_start = vec![false; n];
        for (i, u) in us.iter().enumerate() {
            if u.brk {
                clause_start[i] = true;
                scope_start[i] = true;
            }
        }
        for m in &ms {
            match kind(m) {
                Kind::Mask => masked[m.start..m.end].iter_mut().for_each(|x| *x = true),
                Kind::NotNegation => not_negation[m.start..m.end]
                    .iter_mut()
                    .for_each(|x| *x = true),
                Kind::ClauseBreak => {
                    clause_start[m.start] = true;
                    scope_start[m.start] = true;
                }
                Kind::ScopeBreak => scope_start[m.start] = true,
                _ => {}
            }
        }
        let ids = |starts: &[bool]| -> Vec<usize> {
            let mut id = 0;
            starts
                .iter()
                .map(|&s| {
                    id += usize::from(s);
                    id
                })
                .collect()
        };
        let clause = ids(&clause_start);
        let scope = ids(&scope_start);

        // A negation cue skipped over by `..` negates the phrase: "胸口不疼" is not "胸口..疼".
        let mut cue = vec![false; n];
        for m in ms.iter().filter(|m| kind(m) == Kind::Negate) {
            if !not_negation[m.start..m.end].iter().any(|&b| b) {
                cue[m.start..m.end].iter_mut().for_each(|x| *x = true);
            }
        }
        // Nor does `..` reach across "but": "fall but my chest hurts" is two statements.
        let gap_blocked = |m: &M| {
            (m.start..m.end).any(|u| {
                (cue[u] || GAP_STOPS.contains(&us[u].key.as_str()))
                    && (m.gap_mask >> (u - m.start).min(63)) & 1 == 1
            })
        };
        // Alarm matches not hidden by a mask; the longest reading wins, so
        // "nearly fell" (watch) hides "fell" and "not eating much" hides "not eating".
        let mut alarms: Vec<M> = ms
            .iter()
            .filter(|m| {
                matches!(kind(m), Kind::Alarm(_))
                    && !masked[m.start..m.end].iter().any(|&x| x)
                    && !gap_blocked(m)
            })
            .copied()
            .collect();
        alarms.sort_by_key(|m| {
            (
                std::cmp::Reverse(m.end - m.start),
                m.phonetic,
                m.dist,
                m.start,
            )
        });
        let rule_of = |m: &M| match kind(m) {
            Kind::Alarm(r) => r,
            _ => unreachable!("filtered to alarms"),
        };
        let mut kept: Vec<M> = Vec::new();
        for m in alarms {
            let shadowed = kept.iter().any(|k| {
                (rule_of(k) == rule_of(&m) && k.overlaps(&m))
                    || (k.contains(&m)
                        && k.end - k.start > m.end - m.start
                        && (m.phonetic || !k.phonetic))
            });
            if !shadowed {
                kept.push(m);
            }
        }
        kept.sort_by_key(|m| (m.start, m.end));

        // A context marker heard only by sound qualifies only a finding heard
        // by sound: a clean "被骗了一千块" is not made distant by a 一千 that
        // sounds like 以前.
        let markers_for = |k: Kind, by_sound: bool| {
            ms.iter()
                .filter(move |m| self.lex.patterns[m.pid].kind == k && (by_sound || !m.phonetic))
        };
        // A cue right before a marker cancels it ("没有躺一夜", "I'm not fine").
        let cue_before = |x: &M| {
            markers_for(Kind::Negate, x.phonetic).any(|n| {
                n.end <= x.start
                    && x.start - n.end <= NEGATION_REACH
                    && scope[n.start] == scope[x.start]
                    && !not_negation[n.start..n.end].iter().any(|&b| b)
            })
        };
        let elder_fine = markers_for(Kind::Fine, false).any(|x| !cue_before(x));
        let mut findings: Vec<(M, Level, Vec<&str>)> = Vec::new();
        for m in &kept {
            let markers = |k: Kind| markers_for(k, m.phonetic);
            let rule = &self.lex.rules[rule_of(m)];
            let c = clause[m.start];
            let same_clause = |x: &&M| clause[x.start] == c && !x.overlaps(m);
            // A cue inside another finding belongs to it ("睡不着头晕"), unless
            // that finding is about the same words ("差点摔了一跤").
            let consumed = |x: &M| kept.iter().any(|k| k.overlaps(x) && !k.overlaps(m));
            let negation = markers(Kind::Negate).find(|x| {
                rule.negatable
                    && x.end <= m.start
                    && m.start - x.end <= NEGATION_REACH
                    && scope[x.start] == scope[m.start]
                    && !not_negation[x.start..x.end].iter().any(|&b| b)
                    && !consumed(x)
            });
            let fiction = markers(Kind::Fiction).find(|x| same_clause(x));
            let mut level = rule.level;
            let mut notes = Vec::new();
            // What makes it worse, anywhere in the reply: "摔了一跤……在地上躺了一夜".
            for x in &ms {
                if let Kind::Raise(i) = kind(x)
                    && let raise = &self.lex.raises[i]
                    && raise.category == rule.category
                    && raise.level > level
                    && (m.phonetic || !x.phonetic)
                    && !x.overlaps(m)
                    && !cue_before(x)
                {
                    level = raise.level;
                    notes.push(raise.note.as_str());
                }
            }
            match (negation, fiction) {
                (Some(x), _) | (None, Some(x)) if !x.phonetic => continue,
                // Heard by sound itself: the finding is kept for the call to confirm.
                (Some(_), _) => {
                    level = level.min(Level::Watch);
                    notes.push("may be negated");
                }
                (None, Some(_)) => {
                    level = level.min(Level::Watch);
                    notes.push("may be a story");
                }
                (None, None) => {}
            }
            // Another finding read literally from the misheard words themselves.
            let literal = |k: &&M| {
                !k.phonetic
                    && rule_of(k) != rule_of(m)
                    && (k.start..k.end).any(|u| {
                        u >= m.start && u < m.end && m.sound_mask >> (u - m.start).min(63) & 1 == 1
                    })
            };
            if m.phonetic && kept.iter().filter(literal).any(|k| k.contains(m)) {
                // The words make sense as heard ("I feel down", "去世"): kept for the
                // call to confirm, but not escalated on a guess.
                level = level.min(Level::Watch);
                notes.push("may mean what was heard");
            } else if m.phonetic && kept.iter().any(|k| literal(&k)) {
                level = lower(level, Level::Watch);
                notes.push("may mean what was heard");
            }
            let other = markers(Kind::Other).find(|x| same_clause(x) && x.end <= m.start);
            if let Some(o) = other
                && !rule.anyone
                && !markers(Kind::Household)
                    .any(|h| same_clause(&h) && h.start >= o.start && h.end <= m.start)
            {
                // Someone else's trouble, from an elder who says they are fine.
                if elder_fine {
                    continue;
                }
                if level > Level::Watch {
                    level = Level::Watch;
                    notes.push("about someone else");
                }
            }
            let ongoing_before =
                |d: &M| markers(Kind::Ongoing).any(|o| o.end == d.start || o.overlaps(d));
            if markers(Kind::Distant).any(|d| same_clause(&d) && !ongoing_before(d))
                && level > Level::Watch
            {
                level = Level::Watch;
                notes.push("in the past");
            }
            findings.push((*m, level, notes));
        }
        // "...but I'm fine now": a finding followed by a recovery, with no new
        // finding after the recovery, has passed: a symptom is at most watch,
        // a fall one level lower (a fall today is still worth a call).
        let starts: Vec<usize> = findings.iter().map(|f| f.0.start).collect();
        for (m, level, notes) in &mut findings {
            let rule = &self.lex.rules[rule_of(m)];
            let recovered = markers_for(Kind::Resolved, m.phonetic).any(|r| {
                r.start >= m.end
                    && !kept.iter().any(|k| k.overlaps(r))
                    && !starts.iter().any(|&s| s >= r.end)
            });
            if recovered {
                *level = if rule.level < Level::Urgent {
                    Level::Ok
                } else if rule.category == Category::Fall {
                    lower(*level, Level::Watch)
                } else {
                    (*level).min(Level::Watch)
                };
                notes.push("now better");
            }
        }

        findings
            .into_iter()
            .filter(|(_, level, _)| *level > Level::Ok)
            .map(|(m, level, notes)| {
                let rule = &self.lex.rules[rule_of(&m)];
                let span = us[m.start].start..us[m.end - 1].end;
                let evidence = text[span.clone()].to_string();
                let mut summary = format!("{}: \u{201c}{}\u{201d}", rule.label, evidence);
                let sounds_like = m.phonetic.then(|| self.lex.patterns[m.pid].display.clone());
                let distance = m.dist.map(|d| f32::from(d) / 100.0);
                if let Some(phrase) = &sounds_like {
                    match distance {
                        Some(d) => summary.push_str(&format!(
                            " (sounds like \u{201c}{phrase}\u{201d}, distance {d:.2}; confirm)"
                        )),
                        None => summary
                            .push_str(&format!(" (sounds like \u{201c}{phrase}\u{201d}; confirm)")),
                    }
                }
                for n in notes {
                    summary.push_str(&format!(" ({n})"));
                }
                Reason {
                    category: rule.category,
                    level,
                    evidence,
                    rule: rule.id.clone(),
                    span,
                    phonetic: m.phonetic,
                    sounds_like,
                    distance,
                    summary,
                }
            })
            .collect()
    }

    /// Plain keywords: English as whole words, Mandarin as substrings; no normalisation.
    pub fn keyword_baseline(&self, text: &str, hint: Option<Lang>) -> Level {
        let lower: String = text
            .chars()
            .filter(|c| *c != '\'' && *c != '’')
            .flat_map(char::to_lowercase)
            .collect();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let hit = self.keywords.iter().any(|(lang, kw)| {
            Self::lang_ok(*lang, hint)
                && match lang {
                    Lang::En => words
                        .windows(kw.len())
                        .any(|w| w.iter().zip(kw).all(|(a, b)| *a == b)),
                    Lang::Zh => kw.iter().all(|k| lower.contains(k.as_str())),
                }
        });
        if hit { Level::Emergency } else { Level::Ok }
    }
}

fn bit(offset: usize) -> u64 {
    1u64.checked_shl(offset as u32).unwrap_or(0)
}

/// One level down, but not below `floor`.
fn lower(l: Level, floor: Level) -> Level {
    let down = match l {
        Level::Emergency => Level::Urgent,
        Level::Urgent => Level::Watch,
        Level::Watch | Level::Ok => Level::Ok,
    };
    down.max(floor).min(l)
}
