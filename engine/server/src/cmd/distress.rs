//! `voicecare distress`: run the distress classifier over JSON lines, or
//! evaluate it on a labelled set against the plain keyword baseline.

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use voicecare_core::Level;
use voicecare_core::distress::eval::{Confusion, EvalCase};
use voicecare_core::distress::{Assessment, Classifier, Lang, Utterance};

#[derive(Debug, Args)]
pub struct DistressArgs {
    /// Read `{"id","lang","text"}` JSON lines on stdin, write one assessment per line.
    #[arg(long)]
    pub jsonl: bool,
    /// Evaluate on a labelled JSON-lines file (`{"id","lang","text","level"}`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub eval: Vec<PathBuf>,
    /// `en` or `zh`. With --jsonl or TEXT: the language of lines without one.
    /// With --eval: evaluate only the cases in this language.
    #[arg(long, value_parser = parse_lang)]
    pub lang: Option<Lang>,
    /// With --eval: list every case the classifier got wrong.
    #[arg(long)]
    pub show_errors: bool,
    /// With --eval: exit non-zero when a release target is missed.
    #[arg(long)]
    pub check: bool,
    /// Classify this text and print the reasons (for trying out lexicon edits).
    pub text: Option<String>,
}

fn parse_lang(s: &str) -> Result<Lang, String> {
    s.parse()
}

pub fn run(args: DistressArgs) -> anyhow::Result<()> {
    let classifier = Classifier::new().context("loading the distress lexicon")?;
    if !args.eval.is_empty() {
        return run_eval(&classifier, &args);
    }
    if args.jsonl {
        let stdin = std::io::stdin().lock();
        let stdout = std::io::stdout().lock();
        let bad = run_jsonl(&classifier, args.lang, stdin, stdout)?;
        if bad > 0 {
            bail!("{bad} input line(s) could not be read; see the error objects in the output");
        }
        return Ok(());
    }
    if let Some(text) = &args.text {
        let a = classifier.assess(&Utterance {
            text,
            lang: args.lang,
            asr_confidence: None,
        });
        println!(
            "{}{}",
            a.level,
            if a.needs_confirmation {
                " (confirm with the elder)"
            } else {
                ""
            }
        );
        for r in &a.reasons {
            println!(
                "  {:<9} {:<14} {}  [{}]",
                r.level, r.category, r.summary, r.rule
            );
        }
        return Ok(());
    }
    bail!("nothing to do: pass --jsonl, --eval FILE or a TEXT to classify")
}

#[derive(Debug, Deserialize)]
struct InLine {
    id: serde_json::Value,
    #[serde(default)]
    lang: Option<Lang>,
    text: String,
    #[serde(default)]
    asr_confidence: Option<f32>,
}

#[derive(Serialize)]
struct OutLine<'a> {
    id: &'a serde_json::Value,
    #[serde(flatten)]
    assessment: &'a Assessment,
}

#[derive(Serialize)]
struct ErrLine<'a> {
    id: Option<&'a serde_json::Value>,
    line: usize,
    error: String,
}

/// Classifies every line; a bad line gets an error object and processing goes on.
/// Returns how many lines were bad.
pub fn run_jsonl(
    c: &Classifier,
    default_lang: Option<Lang>,
    input: impl BufRead,
    mut out: impl Write,
) -> anyhow::Result<usize> {
    let mut bad = 0;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = line.with_context(|| format!("reading input line {line_no}"))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<InLine>(&line) {
            Ok(l) => {
                let a = c.assess(&Utterance {
                    text: &l.text,
                    lang: l.lang.or(default_lang),
                    asr_confidence: l.asr_confidence,
                });
                serde_json::to_writer(
                    &mut out,
                    &OutLine {
                        id: &l.id,
                        assessment: &a,
                    },
                )?;
            }
            Err(e) => {
                bad += 1;
                // Keep the id when the line is JSON but a field is wrong, so the caller can match it up.
                let value: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                let id = value.as_ref().and_then(|v| v.get("id"));
                let error = format!("line {line_no}: {e}");
                eprintln!("distress: {error}");
                serde_json::to_writer(
                    &mut out,
                    &ErrLine {
                        id,
                        line: line_no,
                        error,
                    },
                )?;
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(bad)
}

/// Reads a labelled set; bad lines are reported on stderr and skipped.
fn read_cases(path: &PathBuf, lang: Option<Lang>) -> anyhow::Result<(Vec<EvalCase>, usize)> {
    let src =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cases = Vec::new();
    let mut bad = 0;
    for (n, line) in src.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EvalCase>(line) {
            Ok(c) if lang.is_none() || c.lang == lang => cases.push(c),
            Ok(_) => {}
            Err(e) => {
                bad += 1;
                eprintln!("{}:{}: {e}", path.display(), n + 1);
            }
        }
    }
    Ok((cases, bad))
}

fn run_eval(c: &Classifier, args: &DistressArgs) -> anyhow::Result<()> {
    let mut any_bad = 0;
    let mut missed_any = false;
    for path in &args.eval {
        let (cases, bad) = read_cases(path, args.lang)?;
        any_bad += bad;
        let mut ours = Confusion::default();
        let mut base = Confusion::default();
        let mut errors = Vec::new();
        for case in &cases {
            let a = c.assess(&Utterance {
                text: &case.text,
                lang: case.lang,
                asr_confidence: None,
            });
            ours.add(case.level, a.level);
            base.add(case.level, c.keyword_baseline(&case.text, case.lang));
            if a.level != case.level {
                errors.push((case, a));
            }
        }
        println!("== {} ({} cases)", path.display(), cases.len());
        println!("-- classifier");
        print!("{}", ours.render());
        println!("-- keyword baseline (any alarm keyword anywhere -> emergency)");
        print!("{}", base.render());
        let (ours_rate, base_rate) = throughput(c, &cases);
        println!(
            "-- speed, one core, same run: classifier {:.0} utterances/s, baseline {:.0} utterances/s; the classifier takes {:.2}x the baseline's time",
            ours_rate,
            base_rate,
            base_rate / ours_rate
        );
        let missed = ours.missed_targets();
        if missed.is_empty() {
            println!("-- targets met");
        } else {
            missed_any = true;
            println!("-- targets MISSED: {}", missed.join("; "));
        }
        if args.show_errors {
            errors.sort_by_key(|(case, _)| std::cmp::Reverse(case.level));
            for (case, a) in &errors {
                let why: Vec<&str> = a.reasons.iter().map(|r| r.summary.as_str()).collect();
                println!(
                    "  {} expected {} got {}: {}  [{}]",
                    case.id,
                    case.level,
                    a.level,
                    case.text,
                    why.join("; ")
                );
            }
        }
        println!();
    }
    if any_bad > 0 {
        bail!("{any_bad} line(s) of the evaluation files could not be read");
    }
    if args.check && missed_any {
        bail!("release targets missed");
    }
    Ok(())
}

/// Utterances per second of the classifier and of the baseline, interleaved in
/// rounds so a noisy shared machine slows both alike; only the ratio is stable.
fn throughput(c: &Classifier, cases: &[EvalCase]) -> (f64, f64) {
    if cases.is_empty() {
        return (0.0, 0.0);
    }
    let (mut t_ours, mut t_base) = (Duration::ZERO, Duration::ZERO);
    let mut n = 0u64;
    let mut sink = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        for case in cases {
            let a = c.assess(&Utterance {
                text: &case.text,
                lang: case.lang,
                asr_confidence: None,
            });
            sink += a.reasons.len();
        }
        t_ours += t.elapsed();
        let t = Instant::now();
        for case in cases {
            sink += usize::from(c.keyword_baseline(&case.text, case.lang) == Level::Emergency);
        }
        t_base += t.elapsed();
        n += cases.len() as u64;
    }
    std::hint::black_box(sink);
    (
        n as f64 / t_ours.as_secs_f64(),
        n as f64 / t_base.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_get_an_error_object_and_the_rest_go_on() {
        let input = concat!(
            "{\"id\":\"a\",\"lang\":\"en\",\"text\":\"I can't breathe\"}\n",
            "{\"id\":\"b\",\"lang\":\"en\"}\n",
            "not json\n",
            "{\"id\":3,\"lang\":null,\"text\":\"没有摔倒\"}\n",
        );
        let mut out = Vec::new();
        let bad = run_jsonl(Classifier::shared(), None, input.as_bytes(), &mut out).unwrap();
        assert_eq!(bad, 2);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["level"], "emergency");
        assert_eq!(lines[0]["reasons"][0]["evidence"], "can't breathe");
        assert_eq!(lines[0]["reasons"][0]["category"], "breathing");
        assert!(lines[0]["reasons"][0]["rule"].is_string());
        assert!(lines[0]["score"].as_f64().unwrap() > 0.0);
        assert_eq!(lines[1]["id"], "b");
        let e = lines[1]["error"].as_str().unwrap();
        assert!(e.contains("line 2") && e.contains("text"), "{e}");
        assert!(lines[2]["error"].as_str().unwrap().contains("line 3"));
        assert_eq!(lines[3]["id"], 3);
        assert_eq!(lines[3]["level"], "ok");
    }
}
