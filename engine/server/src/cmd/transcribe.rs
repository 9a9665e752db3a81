//! `voicecare transcribe`: offline transcription of audio files.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use voicecare_media::RawFormat;
use voicecare_speech::recognizer::SAMPLE_RATE;
use voicecare_speech::{DecodeOptions, Lang, Model, PromptMode};

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Installed model to use (`base` or `tiny.en`), or a path to a ggml file.
    #[arg(long, default_value = voicecare_speech::DEFAULT_MODEL)]
    pub model: String,
    /// Language spoken: zh, en, or auto to detect it.
    #[arg(long, default_value = "auto")]
    pub lang: String,
    /// Print one JSON object per file: {"file","text","lang","audio_s","decode_s"}.
    #[arg(long)]
    pub json: bool,
    /// Headerless input: mulaw, alaw or s16le (WAV and FLAC are recognised by their header).
    #[arg(long, requires = "rate")]
    pub format: Option<RawFormat>,
    /// Sample rate of headerless input.
    #[arg(long)]
    pub rate: Option<u32>,
    /// whisper threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Decode with the full 30-second audio context (slower; for comparison).
    #[arg(long)]
    pub full_ctx: bool,
    /// Beam search width (default: greedy).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Initial prompt: none, plain (Simplified-characters prompt for Mandarin) or keywords (alarm words).
    #[arg(long, default_value = "plain", value_parser = parse_prompt_mode)]
    pub prompt: PromptMode,
    /// Audio files: WAV (4–192 kHz, mono or stereo, 16-bit or float), FLAC, or raw G.711 with --format/--rate.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn parse_prompt_mode(s: &str) -> Result<PromptMode, String> {
    match s {
        "none" => Ok(PromptMode::None),
        "plain" => Ok(PromptMode::Plain),
        "keywords" => Ok(PromptMode::Keywords),
        _ => Err(format!("unknown prompt mode {s:?} (none, plain, keywords)")),
    }
}

/// Parse `--lang`: `auto` is `None`.
pub fn parse_lang(s: &str) -> anyhow::Result<Option<Lang>> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    s.parse::<Lang>().map(Some).map_err(anyhow::Error::msg)
}

/// Load a model by name from the cache, or from a path.
pub fn load_model(name_or_path: &str) -> anyhow::Result<Model> {
    let p = std::path::Path::new(name_or_path);
    if p.is_file() {
        return Ok(Model::load(p)?);
    }
    Ok(Model::load_named(name_or_path)?)
}

#[derive(Serialize)]
struct Line<'a> {
    file: String,
    text: &'a str,
    lang: Option<Lang>,
    audio_s: f64,
    decode_s: f64,
}

pub fn run(args: TranscribeArgs) -> anyhow::Result<()> {
    let lang = parse_lang(&args.lang)?;
    let model = load_model(&args.model)?;
    let mut rec = model.recognizer()?;
    let opts = DecodeOptions {
        threads: args.threads,
        reduced_audio_ctx: !args.full_ctx,
        beam_size: args.beam,
        prompt_mode: args.prompt,
        ..DecodeOptions::default()
    };
    let raw = args.format.zip(args.rate);
    let mut failures = 0;
    for file in &args.files {
        let result = voicecare_media::load(file, raw)
            .map_err(anyhow::Error::from)
            .and_then(|a| Ok(a.to_rate(SAMPLE_RATE)?))
            .and_then(|a| Ok(rec.transcribe_recording(&a.samples, lang, None, &opts)?));
        match result {
            Ok(t) => {
                if let Some(reason) = t.gated {
                    eprintln!(
                        "{}: output discarded ({reason}; no_speech_prob {:.2}, avg_logprob {:.2}, compression {:.2})",
                        file.display(),
                        t.no_speech_prob,
                        t.avg_logprob,
                        t.compression_ratio
                    );
                }
                if args.json {
                    let line = Line {
                        file: file.display().to_string(),
                        text: &t.text,
                        lang: t.lang,
                        audio_s: (t.audio_s * 1000.0).round() / 1000.0,
                        decode_s: (t.decode_s * 1000.0).round() / 1000.0,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    println!("{}: {}", file.display(), t.text);
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if failures > 0 {
        anyhow::bail!(
            "{failures} of {} files could not be transcribed",
            args.files.len()
        );
    }
    Ok(())
}
