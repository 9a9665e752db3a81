//! One whisper.cpp decoder, tuned for short telephone replies.
//!
//! whisper.cpp pads every input to 30 s, so by default a one-word "yes" costs
//! as much as a long sentence. [`DecodeOptions::reduced_audio_ctx`] sizes the
//! encoder's audio context to the utterance instead (3–5× faster on base).
//! Decoding is greedy, without temperature fallback (which multiplies the
//! time on unintelligible audio), and the language is given by the caller
//! from the elder's record whenever it is known.
//!
//! Flash attention is an option ([`LoadOptions`]): the encoder then never
//! holds the full attention matrix (about 100 MB less per worker), but with
//! whisper.cpp 1.8 it decodes about twice as slowly on these CPUs, so the
//! call engine loads without it and favours turn latency.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Instant;

use whisper_rs::{
    FullParams, GGMLLogLevel, SamplingStrategy, WhisperContext, WhisperContextParameters,
    WhisperState,
};

use crate::SpeechError;
use crate::gate::{self, GateConfig, GateReason};
use crate::text;
use voicecare_media::vad::{self, EndpointConfig};

/// Sample rate whisper expects.
pub const SAMPLE_RATE: u32 = 16_000;

/// Languages of the elders we call (one type across the engine).
pub use voicecare_core::Lang;

/// Mandarin prompt: makes whisper write Simplified rather than Traditional characters.
pub const ZH_PROMPT: &str = "以下是普通话的句子。";
/// Mandarin prompt carrying the alarm words, to bias decoding towards them.
pub const ZH_KEYWORD_PROMPT: &str = "以下是普通话的句子。摔倒，救命，胸口疼，喘不上气，头晕。";
/// English prompt carrying the alarm words.
pub const EN_KEYWORD_PROMPT: &str = "Help, I fell, my chest hurts, I can't breathe, I'm dizzy.";

/// Which initial prompt to give whisper when the request carries none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// No prompt at all.
    None,
    /// The Simplified-characters prompt for Mandarin; nothing for English.
    Plain,
    /// The plain prompt plus the alarm words, in both languages.
    Keywords,
}

impl PromptMode {
    pub fn prompt(self, lang: Option<Lang>) -> Option<&'static str> {
        match (self, lang) {
            (PromptMode::None, _) => None,
            (PromptMode::Plain, Some(Lang::Zh)) => Some(ZH_PROMPT),
            (PromptMode::Plain, _) => None,
            (PromptMode::Keywords, Some(Lang::Zh)) => Some(ZH_KEYWORD_PROMPT),
            (PromptMode::Keywords, Some(Lang::En)) => Some(EN_KEYWORD_PROMPT),
            (PromptMode::Keywords, None) => None,
        }
    }
}

/// How to decode. [`DecodeOptions::default`] is what the call engine uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// whisper.cpp threads for this decode (one per worker is the default).
    pub threads: usize,
    /// Size the audio context to the utterance instead of 30 s.
    pub reduced_audio_ctx: bool,
    /// What to do when a decode with the reduced context loops.
    pub loop_retry: LoopRetry,
    /// Beam width; `None` is greedy decoding.
    pub beam_size: Option<usize>,
    /// Retry at higher temperatures when the decode looks bad (openai-whisper's default).
    pub temperature_fallback: bool,
    pub prompt_mode: PromptMode,
    pub gates: GateConfig,
    /// Voice activity detection used to skip whisper on audio with no speech.
    pub vad: EndpointConfig,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            reduced_audio_ctx: true,
            loop_retry: LoopRetry::Temperature,
            beam_size: None,
            temperature_fallback: false,
            prompt_mode: PromptMode::Plain,
            gates: GateConfig::default(),
            vad: EndpointConfig {
                min_speech_ms: 120,
                ..EndpointConfig::for_rate(SAMPLE_RATE)
            },
        }
    }
}

/// The second decode when the first, with a reduced audio context, loops
/// (repeats itself). The retry's context sets the worst-case working memory
/// of a decoder, which is what sizes a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopRetry {
    /// Whisper's full 30 s context: its native setting, and its full memory.
    FullContext,
    /// Twice the reduced context (capped at 30 s).
    WiderContext,
    /// The same context, sampling at temperature 0.4 (openai-whisper's
    /// remedy for repetition): no more memory than the first decode.
    Temperature,
}

/// What was heard. `text` is health data: never log it; `Debug` shows its
/// length only.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct Transcript {
    /// The transcript; empty when nothing was said or a gate discarded the output.
    pub text: String,
    /// The language decoded (given by the caller, or detected).
    pub lang: Option<Lang>,
    /// Mean log-probability of the text tokens (0 is certain; below -0.7 is doubtful).
    pub avg_logprob: f32,
    /// Exp of `avg_logprob`: a 0–1 confidence figure.
    pub confidence: f32,
    /// The decoder's probability that the audio holds no speech.
    pub no_speech_prob: f32,
    pub compression_ratio: f32,
    /// Audio duration (s).
    pub audio_s: f64,
    /// Time spent in whisper (s).
    pub decode_s: f64,
    /// Time spent waiting for a free worker (s); 0 outside the pool.
    pub queue_wait_s: f64,
    /// Heard with low confidence: confirm before acting on it.
    pub low_confidence: bool,
    /// Why the text was discarded, if it was.
    pub gated: Option<&'static str>,
    /// Speech found by voice activity detection (ms).
    pub speech_ms: u32,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("text", &voicecare_core::redact::redacted_words(&self.text))
            .field("lang", &self.lang)
            .field("avg_logprob", &self.avg_logprob)
            .field("confidence", &self.confidence)
            .field("no_speech_prob", &self.no_speech_prob)
            .field("compression_ratio", &self.compression_ratio)
            .field("audio_s", &self.audio_s)
            .field("decode_s", &self.decode_s)
            .field("queue_wait_s", &self.queue_wait_s)
            .field("low_confidence", &self.low_confidence)
            .field("gated", &self.gated)
            .field("speech_ms", &self.speech_ms)
            .finish()
    }
}

impl Transcript {
    fn empty(audio_s: f64, lang: Option<Lang>, reason: GateReason) -> Self {
        Transcript {
            text: String::new(),
            lang,
            avg_logprob: 0.0,
            confidence: 0.0,
            no_speech_prob: 1.0,
            compression_ratio: 0.0,
            audio_s,
            decode_s: 0.0,
            queue_wait_s: 0.0,
            low_confidence: false,
            gated: Some(reason.as_str()),
            speech_ms: 0,
        }
    }
}

static LOG_HOOK: Once = Once::new();

thread_local! {
    /// The cancel flag of the decode running on this thread, for [`whisper_log`].
    static DECODING: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// whisper.cpp's log into `tracing`. A decode stopped on purpose
/// ([`Recognizer::set_cancel`]) makes whisper.cpp report a failure to encode
/// or decode; that is logged at debug, since nothing went wrong.
unsafe extern "C" fn whisper_log(
    level: whisper_rs::whisper_rs_sys::ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: whisper.cpp passes a NUL-terminated string valid for the call.
    let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let msg = msg.trim();
    if msg.is_empty() {
        return;
    }
    let cancelled = || {
        DECODING
            .try_with(|d| {
                d.borrow()
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed))
            })
            .unwrap_or(false)
    };
    match GGMLLogLevel::from(level) {
        GGMLLogLevel::Error if cancelled() => {
            tracing::debug!(target: "whisper", "{msg} (the decode was cancelled)")
        }
        GGMLLogLevel::Error => tracing::error!(target: "whisper", "{msg}"),
        GGMLLogLevel::Warn | GGMLLogLevel::Unknown(_) => tracing::warn!(target: "whisper", "{msg}"),
        GGMLLogLevel::Info => tracing::info!(target: "whisper", "{msg}"),
        GGMLLogLevel::Debug => tracing::debug!(target: "whisper", "{msg}"),
        GGMLLogLevel::None | GGMLLogLevel::Cont => tracing::trace!(target: "whisper", "{msg}"),
    }
}

/// How to load a model. [`LoadOptions::default`] is what the call engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Flash attention. The encoder's attention matrix at the full context is
    /// 72 MB on base (1500² scores × 8 heads, f32); flash attention never holds
    /// it. Audio contexts then come in multiples of 256 (see [`audio_ctx_for`]).
    pub flash_attn: bool,
}

impl Default for LoadOptions {
    /// Without flash attention: measured 2.1-2.4× faster per utterance here,
    /// at 282 MB instead of 185 MB peak per worker (docs/speech.md).
    fn default() -> Self {
        Self { flash_attn: false }
    }
}

/// A loaded whisper model, shared by any number of [`Recognizer`]s.
#[derive(Clone)]
pub struct Model {
    ctx: Arc<WhisperContext>,
    path: PathBuf,
    multilingual: bool,
    flash_attn: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("multilingual", &self.multilingual)
            .field("flash_attn", &self.flash_attn)
            .finish()
    }
}

impl Model {
    /// Load a ggml model file with [`LoadOptions::default`].
    pub fn load(path: &Path) -> Result<Self, SpeechError> {
        Self::load_with(path, LoadOptions::default())
    }

    /// Load a ggml model file.
    pub fn load_with(path: &Path, opts: LoadOptions) -> Result<Self, SpeechError> {
        // Send whisper.cpp's own logging to `tracing` instead of stderr.
        LOG_HOOK.call_once(|| {
            // ggml's log through whisper-rs; whisper.cpp's own through ours.
            whisper_rs::install_logging_hooks();
            // SAFETY: `whisper_log` is a plain function valid for the whole program.
            unsafe {
                whisper_rs::whisper_rs_sys::whisper_log_set(Some(whisper_log), std::ptr::null_mut())
            };
        });
        let meta = std::fs::metadata(path).map_err(|e| SpeechError::io(path, e))?;
        if meta.len() < 1024 {
            return Err(SpeechError::BadModelFile {
                path: path.to_path_buf(),
                what: "too small to be a model".into(),
            });
        }
        let mut params = WhisperContextParameters::default();
        params.flash_attn(opts.flash_attn);
        let ctx = WhisperContext::new_with_params(path, params).map_err(|e| SpeechError::Load {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        let multilingual = ctx.is_multilingual();
        Ok(Self {
            ctx: Arc::new(ctx),
            path: path.to_path_buf(),
            multilingual,
            flash_attn: opts.flash_attn,
        })
    }

    /// Load an installed model by name (`base`, `tiny.en`) from the model cache.
    pub fn load_named(name: &str) -> Result<Self, SpeechError> {
        Self::load(&crate::models::find_model(name)?)
    }

    /// [`Model::load_named`] with explicit options.
    pub fn load_named_with(name: &str, opts: LoadOptions) -> Result<Self, SpeechError> {
        Self::load_with(&crate::models::find_model(name)?, opts)
    }

    pub fn flash_attn(&self) -> bool {
        self.flash_attn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// A decoder with its own working memory.
    pub fn recognizer(&self) -> Result<Recognizer, SpeechError> {
        let state = self
            .ctx
            .create_state()
            .map_err(|e| SpeechError::Whisper(e.to_string()))?;
        Ok(Recognizer {
            model: self.clone(),
            state,
            cancel: None,
        })
    }
}

/// A decoder: a model plus the working memory of one decode at a time.
pub struct Recognizer {
    model: Model,
    state: WhisperState,
    /// Set by another thread to stop the decode in progress.
    cancel: Option<Arc<AtomicBool>>,
}

/// whisper.cpp's abort callback: `data` points at the [`AtomicBool`] of
/// [`Recognizer::set_cancel`], kept alive by the recognizer for the whole decode.
unsafe extern "C" fn abort_when_set(data: *mut c_void) -> bool {
    // SAFETY: `run_whisper` passes a pointer into an `Arc<AtomicBool>` it
    // holds until `full` returns; an atomic may be read from any thread.
    unsafe { (*(data as *const AtomicBool)).load(Ordering::Relaxed) }
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("model", &self.model)
            .finish()
    }
}

/// Audio context (in 20 ms encoder frames) that covers `samples` plus a margin.
///
/// Without flash attention: rounded up to a multiple of 64, capped at whisper's
/// 1500. With flash attention, whisper.cpp 1.8 pads the encoder's keys and
/// values, and the decoder's cross-attention cache, to a multiple of 256 and
/// attends to the padding unmasked — zeros, or leftovers of an earlier decode
/// with another context (ggml-org/whisper.cpp#3941) — which garbles the text.
/// So the context is then a whole multiple of 256, leaving no padding, capped
/// at [`max_audio_ctx`].
pub fn audio_ctx_for(samples: usize, flash_attn: bool) -> i32 {
    let frames = samples as f64 / SAMPLE_RATE as f64 * 50.0 + 64.0;
    let step = if flash_attn { 256.0 } else { 64.0 };
    ((frames / step).ceil() as i32 * step as i32).min(max_audio_ctx(flash_attn))
}

/// The largest audio context used: whisper's 1500 frames (30 s), or 1280
/// (25.6 s, the largest multiple of 256 within it) with flash attention.
pub fn max_audio_ctx(flash_attn: bool) -> i32 {
    if flash_attn { 1280 } else { 1500 }
}

/// Longest utterance [`Recognizer::transcribe_recording`] decodes in one piece:
/// it fits the largest context with its margin.
const RECORDING_MAX_UTTERANCE_MS: u32 = 24_000;

impl Recognizer {
    /// A flag that, once set (from any thread), stops the decode in progress
    /// and makes it return [`SpeechError::Cancelled`]. `None` clears it.
    pub fn set_cancel(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.cancel = flag;
    }

    /// One whisper.cpp run: (text, sum of token log-probs, token count, no-speech probability).
    fn run_whisper(
        &mut self,
        input: &[f32],
        lang: Option<Lang>,
        prompt: Option<&str>,
        opts: &DecodeOptions,
        audio_ctx: i32,
        temperature: f32,
    ) -> Result<(String, f32, usize, f32), SpeechError> {
        // About 12 tokens per second of audio is more than anyone speaks.
        let max_tokens = (input.len() as f64 / SAMPLE_RATE as f64 * 12.0) as i32 + 16;
        let strategy = match opts.beam_size {
            Some(b) if b > 1 => SamplingStrategy::BeamSearch {
                beam_size: b as i32,
                patience: -1.0,
            },
            _ => SamplingStrategy::Greedy { best_of: 1 },
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(opts.threads.max(1) as i32);
        params.set_translate(false);
        params.set_no_context(true);
        params.set_single_segment(true);
        // Timestamp tokens let the decoder close the segment; without them short
        // clips with a reduced audio context tend to loop.
        params.set_no_timestamps(false);
        params.set_max_tokens(max_tokens);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_temperature(temperature);
        params.set_temperature_inc(if opts.temperature_fallback { 0.2 } else { 0.0 });
        params.set_language(Some(lang.map(Lang::code).unwrap_or("auto")));
        if lang.is_none() {
            params.set_detect_language(false);
        }
        params.set_audio_ctx(audio_ctx);
        if let Some(p) = prompt {
            params.set_initial_prompt(p);
        }
        // Held until `full` returns, so the callback's pointer stays valid.
        let cancel = self.cancel.clone();
        if let Some(flag) = &cancel {
            if flag.load(Ordering::Relaxed) {
                return Err(SpeechError::Cancelled);
            }
            // SAFETY: the pointer is to the AtomicBool inside `cancel`, which
            // outlives the decode; `abort_when_set` only reads it.
            unsafe {
                params.set_abort_callback(Some(abort_when_set));
                params.set_abort_callback_user_data(Arc::as_ptr(flag) as *mut c_void);
            }
        }

        DECODING.with(|d| *d.borrow_mut() = cancel.clone());
        let run = self.state.full(params, input);
        DECODING.with(|d| *d.borrow_mut() = None);
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(SpeechError::Cancelled);
        }
        run.map_err(|e| SpeechError::Whisper(e.to_string()))?;

        let eot = self.model.ctx.token_eot();
        let mut raw = String::new();
        let mut logprob_sum = 0.0f32;
        let mut n_tokens = 0usize;
        let mut no_speech_prob = 0.0f32;
        for (i, seg) in self.state.as_iter().enumerate() {
            if i == 0 {
                no_speech_prob = seg.no_speech_probability();
            }
            raw.push_str(
                &seg.to_str_lossy()
                    .map_err(|e| SpeechError::Whisper(e.to_string()))?,
            );
            for t in 0..seg.n_tokens() {
                if let Some(tok) = seg.get_token(t) {
                    let data = tok.token_data();
                    if data.id < eot {
                        logprob_sum += data.plog;
                        n_tokens += 1;
                    }
                }
            }
        }
        Ok((raw, logprob_sum, n_tokens, no_speech_prob))
    }

    /// Transcribe mono 16 kHz audio. `lang: None` detects the language (English
    /// for English-only models); `prompt: None` uses `opts.prompt_mode`.
    pub fn transcribe(
        &mut self,
        samples_16k: &[f32],
        lang: Option<Lang>,
        prompt: Option<&str>,
        opts: &DecodeOptions,
    ) -> Result<Transcript, SpeechError> {
        let audio_s = samples_16k.len() as f64 / SAMPLE_RATE as f64;
        let lang = if self.model.multilingual {
            lang
        } else {
            Some(Lang::En)
        };
        let speech_ms = vad::speech_ms(samples_16k, &opts.vad);
        if speech_ms == 0 {
            return Ok(Transcript::empty(
                audio_s,
                lang,
                GateReason::NoSpeechDetected,
            ));
        }
        let prompt = prompt.or(opts.prompt_mode.prompt(lang));

        // whisper.cpp wants at least one second; pad short replies with silence.
        let min_len = SAMPLE_RATE as usize + SAMPLE_RATE as usize / 4;
        let padded: Vec<f32>;
        let input: &[f32] = if samples_16k.len() < min_len {
            padded = samples_16k
                .iter()
                .copied()
                .chain(std::iter::repeat(0.0))
                .take(min_len)
                .collect();
            &padded
        } else {
            samples_16k
        };

        let started = Instant::now();
        let flash = self.model.flash_attn;
        let full_ctx = max_audio_ctx(flash);
        let ctx = if opts.reduced_audio_ctx {
            audio_ctx_for(input.len(), flash)
        } else {
            full_ctx
        };
        let (mut raw, mut logprob_sum, mut n_tokens, mut no_speech_prob) =
            self.run_whisper(input, lang, prompt, opts, ctx, 0.0)?;
        if opts.reduced_audio_ctx
            && (text::compression_ratio(raw.trim()) > opts.gates.max_compression_ratio
                || text::is_looping(&raw))
        {
            let (ctx, temperature) = match opts.loop_retry {
                LoopRetry::FullContext => (full_ctx, 0.0),
                LoopRetry::WiderContext => ((ctx * 2).min(full_ctx), 0.0),
                LoopRetry::Temperature => (ctx, 0.4),
            };
            (raw, logprob_sum, n_tokens, no_speech_prob) =
                self.run_whisper(input, lang, prompt, opts, ctx, temperature)?;
        }
        let decode_s = started.elapsed().as_secs_f64();
        let avg_logprob = if n_tokens == 0 {
            0.0
        } else {
            logprob_sum / n_tokens as f32
        };
        let detected = match lang {
            Some(l) => Some(l),
            None => whisper_rs::get_lang_str(self.state.full_lang_id_from_state())
                .and_then(Lang::from_code),
        };
        let mut text = raw.trim().to_string();
        if detected == Some(Lang::Zh) {
            text = text::to_simplified(&text);
        }
        let compression_ratio = text::compression_ratio(&text);
        let evidence = gate::Evidence {
            text: &text,
            lang: detected,
            avg_logprob,
            no_speech_prob,
            compression_ratio,
            speech_ms,
            prompt,
        };
        let gated = gate::check(&evidence, &opts.gates);
        tracing::debug!(
            audio_s,
            decode_s,
            avg_logprob,
            no_speech_prob,
            compression_ratio,
            gated = gated.map(GateReason::as_str),
            "decoded utterance"
        );
        let low_confidence = gated.is_none()
            && !text.is_empty()
            && gate::is_low_confidence(avg_logprob, no_speech_prob, &opts.gates);
        Ok(Transcript {
            text: if gated.is_some() { String::new() } else { text },
            lang: detected,
            avg_logprob,
            confidence: avg_logprob.exp(),
            no_speech_prob,
            compression_ratio,
            audio_s,
            decode_s,
            queue_wait_s: 0.0,
            low_confidence,
            gated: gated.map(GateReason::as_str),
            speech_ms,
        })
    }
}

impl Recognizer {
    /// Transcribe a recording that may hold several utterances (a file, a
    /// voicemail): the endpointer cuts it where the speaker paused for longer
    /// than `opts.vad.end_silence_ms`, each utterance is decoded as the call
    /// engine would, and the texts are joined. whisper tends to stop at a long
    /// pause and drop what follows, so this is also more complete.
    pub fn transcribe_recording(
        &mut self,
        samples_16k: &[f32],
        lang: Option<Lang>,
        prompt: Option<&str>,
        opts: &DecodeOptions,
    ) -> Result<Transcript, SpeechError> {
        let audio_s = samples_16k.len() as f64 / SAMPLE_RATE as f64;
        let cfg = EndpointConfig {
            max_utterance_ms: RECORDING_MAX_UTTERANCE_MS,
            ..opts.vad.clone()
        };
        let utterances = vad::utterances(samples_16k, &cfg);
        if utterances.len() <= 1 {
            // One utterance (or none): decode the whole recording as it is.
            return self.transcribe(samples_16k, lang, prompt, opts);
        }
        let mut parts: Vec<Transcript> = Vec::new();
        for u in &utterances {
            parts.push(self.transcribe(&u.samples, lang, prompt, opts)?);
        }
        let kept: Vec<&Transcript> = parts.iter().filter(|t| !t.text.is_empty()).collect();
        let lang = parts.iter().find_map(|t| t.lang);
        let sep = if lang == Some(Lang::Zh) { "" } else { " " };
        let text = kept
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(sep);
        let weight: f64 = kept.iter().map(|t| t.audio_s).sum::<f64>().max(1e-9);
        let avg_logprob = if kept.is_empty() {
            0.0
        } else {
            (kept
                .iter()
                .map(|t| t.avg_logprob as f64 * t.audio_s)
                .sum::<f64>()
                / weight) as f32
        };
        Ok(Transcript {
            text,
            lang,
            avg_logprob,
            confidence: avg_logprob.exp(),
            no_speech_prob: parts.iter().map(|t| t.no_speech_prob).fold(1.0, f32::min),
            compression_ratio: parts
                .iter()
                .map(|t| t.compression_ratio)
                .fold(0.0, f32::max),
            audio_s,
            decode_s: parts.iter().map(|t| t.decode_s).sum(),
            queue_wait_s: 0.0,
            low_confidence: kept.iter().any(|t| t.low_confidence),
            gated: if kept.is_empty() {
                parts.iter().find_map(|t| t.gated)
            } else {
                None
            },
            speech_ms: parts.iter().map(|t| t.speech_ms).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_context_covers_the_utterance() {
        assert_eq!(audio_ctx_for(16000 * 7 + 1600, false), 448);
        assert_eq!(audio_ctx_for(16000, false), 128);
        assert_eq!(audio_ctx_for(16000 * 40, false), 1500);
        // With flash attention: whole multiples of 256, at most 1280.
        assert_eq!(audio_ctx_for(16000, true), 256);
        assert_eq!(audio_ctx_for(16000 * 5, true), 512);
        assert_eq!(audio_ctx_for(16000 * 7 + 1600, true), 512);
        assert_eq!(audio_ctx_for(16000 * 40, true), 1280);
        for ms in (0..40_000).step_by(250) {
            let ctx = audio_ctx_for(ms * 16, true);
            assert_eq!(ctx % 256, 0, "{ms} ms");
            assert!(ctx <= max_audio_ctx(true));
        }
    }

    #[test]
    fn the_longest_recording_piece_fits_the_largest_context() {
        let samples = RECORDING_MAX_UTTERANCE_MS as usize * 16;
        let frames = samples as f64 / SAMPLE_RATE as f64 * 50.0 + 64.0;
        assert!(frames <= max_audio_ctx(true) as f64);
    }

    #[test]
    fn prompts_by_language() {
        assert_eq!(PromptMode::Plain.prompt(Some(Lang::Zh)), Some(ZH_PROMPT));
        assert_eq!(PromptMode::Plain.prompt(Some(Lang::En)), None);
        assert!(
            PromptMode::Keywords
                .prompt(Some(Lang::En))
                .unwrap()
                .contains("fell")
        );
        assert_eq!("ZH".parse::<Lang>(), Ok(Lang::Zh));
    }
}
