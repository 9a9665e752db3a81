//! `voicecare flow check FILES`: validate IVR flow files before they are deployed.
//! `voicecare flow walk FILE --reply ...`: play a call through a flow on a
//! simulated clock and print what the elder would hear.

use anyhow::Context;
use clap::Subcommand;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use voicecare_core::Level;
use voicecare_core::flow::{Action, Call, Event, Heard, Lang, Millis, parse_flow};

#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Parse and check flow files (or every `*.toml` in the given folders).
    /// Errors are printed as `file:line:col: message`; exits non-zero on any error.
    Check {
        /// Flow files or folders of flow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Walk a call through one flow with scripted replies and print it.
    ///
    /// Replies are used in order whenever the call waits for the elder:
    /// plain text is speech; `key:1` presses a key; `silence` lets the
    /// question time out; `hangup` hangs up; `operator` has an operator join.
    /// Prefix speech with the classifier's verdict as `[urgent]`, or
    /// `[urgent?]` when it is unsure, e.g. `--reply "[emergency] I fell"`.
    Walk {
        file: PathBuf,
        /// Language of the call.
        #[arg(long, default_value = "en")]
        lang: String,
        /// A flow input as `name=value` (repeatable).
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A reply, in order (repeatable).
        #[arg(long = "reply", value_name = "REPLY")]
        replies: Vec<String>,
    },
}

pub fn run(cmd: FlowCmd) -> anyhow::Result<()> {
    match cmd {
        FlowCmd::Check { files } => check(&files),
        FlowCmd::Walk {
            file,
            lang,
            inputs,
            replies,
        } => walk(&file, &lang, &inputs, &replies),
    }
}

fn check(inputs: &[PathBuf]) -> anyhow::Result<()> {
    let files = expand(inputs)?;
    let mut broken = 0usize;
    for path in &files {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                broken += 1;
                continue;
            }
        };
        match parse_flow(&shown, &source) {
            Ok(flow) => println!("ok {shown}: flow {:?}, {} steps", flow.id, flow.steps.len()),
            Err(errors) => {
                broken += 1;
                for d in &errors.0 {
                    eprintln!("{d}");
                }
            }
        }
    }
    if broken > 0 {
        // The diagnostics above are the report; exit without an error chain.
        eprintln!("{broken} of {} flow files have errors", files.len());
        std::process::exit(1);
    }
    Ok(())
}

/// Files as given; folders contribute their `*.toml` files in name order.
fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            out.extend(toml_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn toml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

fn walk(file: &Path, lang: &str, inputs: &[String], replies: &[String]) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    let flow = parse_flow(&shown, &source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lang = match lang {
        "en" => Lang::En,
        "zh" => Lang::Zh,
        other => anyhow::bail!("unknown language {other:?}: expected en or zh"),
    };
    let mut vars = BTreeMap::new();
    for i in inputs {
        let (k, v) = i
            .split_once('=')
            .with_context(|| format!("input {i:?} must be NAME=VALUE"))?;
        vars.insert(k.to_string(), v.to_string());
    }
    let mut call = Call::new(Arc::new(flow), lang, vars);
    let mut replies: VecDeque<&str> = replies.iter().map(String::as_str).collect();
    let mut now = Millis(0);
    let mut timer: Option<Millis> = None;
    let mut playing: Option<voicecare_core::flow::PromptId> = None;
    let mut holding = false;
    let mut recording = false;
    let mut next = Some(Event::Answered);
    // Bounded so a flow that never ends cannot hang the command.
    for _ in 0..10_000 {
        let Some(event) = next.take() else { break };
        for action in call.handle(now, event) {
            match &action {
                Action::Play(p) => {
                    let what = p
                        .audio
                        .as_deref()
                        .map_or(String::new(), |a| format!(" <{a}>"));
                    println!("  [{} x{:.2}]{what} {}", p.lang, p.rate, p.text);
                    playing = Some(p.id);
                }
                Action::StopPlayback => playing = None,
                Action::SetTimer { at } => timer = Some(*at),
                Action::Escalate {
                    level,
                    reasons,
                    keep_on_line,
                } => {
                    let line = if *keep_on_line {
                        "kept on the line"
                    } else {
                        "released"
                    };
                    println!("  ! escalate {level} ({line}): {}", reasons.join("; "));
                }
                Action::Hold => holding = true,
                Action::TransferToOperator => println!("  ! operator connected"),
                Action::RecordVariable { name, value } if !name.starts_with("last_") => {
                    println!("  = {name} = {value:?}");
                }
                Action::StartRecording { max_ms, .. } => {
                    println!("  ● recording (up to {} s)", max_ms / 1000);
                    recording = true;
                }
                Action::Hangup => println!("  ~ hang up"),
                Action::Finished(report) => {
                    println!("outcome: {}", serde_json::to_string(&report.outcome)?);
                    println!("path: {}", report.path.join(" -> "));
                    return Ok(());
                }
                _ => {}
            }
        }
        now = now.plus(2000);
        // Prompts finish first; then the call waits for the elder or a timer.
        if let Some(id) = playing.take() {
            next = Some(Event::PromptFinished { id });
            continue;
        }
        if std::mem::take(&mut recording) {
            println!("> (leaves a message)");
            next = Some(Event::RecordingFinished {
                reference: Some("recording.wav".into()),
            });
            continue;
        }
        let reply = replies.pop_front();
        next = Some(match reply {
            None if holding => Event::OperatorJoined,
            None | Some("hangup") => {
                println!("> (hangs up)");
                Event::HungUp
            }
            Some("operator") => Event::OperatorJoined,
            Some("silence") => {
                println!("> (silence)");
                now = timer.take().map_or(now, |at| now.max(at));
                Event::Tick
            }
            Some(r) => match r.strip_prefix("key:") {
                Some(k) => {
                    println!("> key {k}");
                    Event::Digit(k.chars().next().unwrap_or('#'))
                }
                None => {
                    let heard = heard(r, lang)?;
                    println!("> {:?} ({})", heard.transcript, heard.level);
                    Event::Heard(heard)
                }
            },
        });
    }
    anyhow::bail!("the call did not finish; does the flow wait for something the walk cannot give?")
}

/// `[urgent?] words` -> an utterance with the classifier's verdict.
fn heard(reply: &str, lang: Lang) -> anyhow::Result<Heard> {
    let (level, unsure, text) = match reply.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((verdict, text)) => {
            let unsure = verdict.ends_with('?');
            let level: Level = verdict
                .trim_end_matches('?')
                .parse()
                .map_err(|e| anyhow::anyhow!("reply {reply:?}: {e}"))?;
            (level, unsure, text.trim())
        }
        None => (Level::Ok, false, reply),
    };
    Ok(Heard {
        transcript: text.to_string(),
        lang: Some(lang),
        asr_confidence: 0.9,
        level,
        categories: Vec::new(),
        needs_confirmation: unsure,
    })
}
