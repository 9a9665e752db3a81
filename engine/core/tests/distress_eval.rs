//! Runs the labelled evaluation sets and holds the classifier to its release
//! targets, per language (one main set per language): every emergency found,
//! ≥ 90% of urgent and ≥ 70% of watch replies found at their level or above,
//! ≥ 95% of fine replies left at ok/watch — the same targets as
//! `voicecare distress --eval … --check`. A lexicon edit that regresses fails
//! the build.
//!
//! On the held-out sets only the recall targets are gated (see below).
//!
//! The keyword baseline is checked to be worse, so the comparison in
//! docs/distress.md keeps meaning something.

use voicecare_core::distress::eval::{Confusion, EvalCase, SoundStats};
use voicecare_core::distress::{Classifier, Utterance};

const SETS: [(&str, &str); 4] = [
    (
        "tests/distress/eval-en.jsonl",
        include_str!("../../../tests/distress/eval-en.jsonl"),
    ),
    (
        "tests/distress/eval-zh.jsonl",
        include_str!("../../../tests/distress/eval-zh.jsonl"),
    ),
    (
        "tests/distress/heldout-en.jsonl",
        include_str!("../../../tests/distress/heldout-en.jsonl"),
    ),
    (
        "tests/distress/heldout-zh.jsonl",
        include_str!("../../../tests/distress/heldout-zh.jsonl"),
    ),
];

fn run(name: &str, src: &str) -> (Confusion, Confusion, Vec<String>) {
    let (ours, base, wrong, _) = run_with_sound(name, src);
    (ours, base, wrong)
}

fn run_with_sound(name: &str, src: &str) -> (Confusion, Confusion, Vec<String>, SoundStats) {
    let c = Classifier::shared();
    let (mut ours, mut base, mut wrong) = (Confusion::default(), Confusion::default(), Vec::new());
    let mut sound = SoundStats::default();
    for (n, line) in src
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: EvalCase =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", n + 1));
        let a = c.assess(&Utterance {
            text: &case.text,
            lang: case.lang,
            asr_confidence: None,
        });
        ours.add(case.level, a.level);
        sound.add(&case, &a);
        base.add(case.level, c.keyword_baseline(&case.text, case.lang));
        if a.level != case.level {
            let why: Vec<&str> = a.reasons.iter().map(|r| r.summary.as_str()).collect();
            wrong.push(format!(
                "{} expected {} got {}: {} [{}]",
                case.id,
                case.level,
                a.level,
                case.text,
                why.join("; ")
            ));
        }
    }
    (ours, base, wrong, sound)
}

#[test]
fn sets_are_large_enough_and_cover_every_level() {
    for (name, src) in SETS {
        let (ours, _, _) = run(name, src);
        let min = if name.contains("heldout") { 40 } else { 150 };
        assert!(ours.total() >= min, "{name}: {} cases", ours.total());
        for row in ours.counts {
            assert!(
                row.iter().sum::<u32>() >= 5,
                "{name}: a level has fewer than 5 cases"
            );
        }
    }
}

#[test]
fn targets_hold_on_every_set() {
    let mut failures = Vec::new();
    for (name, src) in SETS {
        let (ours, base, wrong) = run(name, src);
        println!(
            "== {name}\n{}-- keyword baseline\n{}",
            ours.render(),
            base.render()
        );
        for w in &wrong {
            println!("  {w}");
        }
        // The held-out sets are never tuned against, so a false alarm there is
        // reported (docs/distress.md), not gated; the safety targets are gated everywhere.
        let held_out = name.contains("heldout");
        for m in ours.missed_targets() {
            if !(held_out && m.starts_with("fine replies kept")) {
                failures.push(format!("{name}: {m}"));
            }
        }
        // The context rules must pay for themselves against plain keywords.
        if base.ok_left_low() >= ours.ok_left_low() {
            failures.push(format!(
                "{name}: keyword baseline keeps as many fine replies low as the classifier"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Matching by sound finds the misheard Mandarin alarms of the main set and
/// flags no more than one fine reply in twenty on a sound-alike alone.
#[test]
fn sound_matching_finds_misheard_alarms_without_flagging_fine_replies() {
    let mut failures = Vec::new();
    for (name, src) in SETS {
        let (_, _, _, sound) = run_with_sound(name, src);
        println!("== {name}: {}", sound.render());
        if name.contains("heldout") {
            continue;
        }
        // English sound-alikes are a short reviewed list with a known miss
        // ("failed … hurt", docs/distress.md); Mandarin goes by the weighted
        // syllable distance, which must find every misheard alarm of its set.
        if name.contains("-zh") && sound.misheard_recall().is_some_and(|r| r < 1.0) {
            failures.push(format!("{name}: {}", sound.render()));
        }
        if sound.false_alarm_rate().is_some_and(|r| r > 0.05) {
            failures.push(format!("{name}: {}", sound.render()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
