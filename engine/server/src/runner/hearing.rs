//! The ears of one call: the endpointer over the line's audio, readings of
//! the elder's words on the speech-recognition pool, utterance audio on disk.
//!
//! What a reading means is the session's business; this module decides only
//! how to spend recognition time. An utterance is read when the session asks
//! ([`Hearing::transcribe`]). Ahead of that, words up to a pause are read
//! like any utterance (usually the pause is the end of the reply, and the
//! final reading then reuses them), and while the elder speaks, the reply so
//! far is read on an idle worker only, giving way to other work. Media is
//! never blocked: whisper runs on the pool's threads and results come back
//! as futures and over a channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use voicecare_core::Lang;
use voicecare_core::session::{AudioInfo, Input, Reading, Words};
use voicecare_media::vad::{EndpointConfig, Endpointer, Utterance, VadEvent};
use voicecare_speech::{AsrPool, Speculation, SpeechError, TranscribeRequest, Transcript};

/// Where a reply's turn started, for turn latency: when the endpointer
/// decided it was over, and the silence it waited for.
#[derive(Debug, Clone, Copy)]
pub struct TurnStart {
    pub at: Instant,
    pub endpoint_ms: u64,
}

/// How this call's ears are set.
#[derive(Debug, Clone)]
pub struct HearingConfig {
    pub lang: Lang,
    pub call_id: i64,
    /// Pause after which an utterance is read speculatively (0: never).
    pub early_asr_ms: u32,
    /// New speech between readings of a reply still being spoken (0: never).
    pub partial_asr_ms: u32,
    /// Keep utterance audio as WAV here (`None`: keep nothing).
    pub recordings: Option<PathBuf>,
}

/// Words up to a pause, read while the elder may still go on. Used as the
/// final reading only if the utterance ends with exactly these samples.
struct Early {
    start_ms: u64,
    len: usize,
    state: EarlyState,
}

enum EarlyState {
    Running(Speculation),
    Done(Result<Transcript, SpeechError>),
}

struct Finished {
    seq: i32,
    audio: AudioInfo,
    result: Result<Transcript, SpeechError>,
}

const RATE: u32 = 16_000;

/// CPU time every call's endpointer has taken in this process (VAD and
/// endpointing of each frame), nanoseconds, timed on the thread that ran it.
static ENDPOINTING_NS: AtomicU64 = AtomicU64::new(0);

/// CPU seconds the endpointers of every call have taken so far, for
/// `voicecare bench capacity`.
pub fn endpointing_cpu_s() -> f64 {
    ENDPOINTING_NS.load(Ordering::Relaxed) as f64 / 1e9
}
/// Speech an utterance cut off by a hang-up needs before it is read.
const CUT_OFF_MIN_SPEECH_MS: u32 = 500;

pub struct Hearing {
    asr: Arc<AsrPool>,
    cfg: HearingConfig,
    endpointer: Option<Endpointer>,
    /// Recording a message: no readings, the utterance is kept as audio.
    recording: bool,
    media_ms: u64,
    early: Option<Early>,
    partial: Option<Speculation>,
    /// Samples the reply must reach before it is read again while spoken.
    partial_next: usize,
    /// The utterance that just ended, until the session says what it is.
    ended: Option<(Utterance, TurnStart)>,
    turn_starts: HashMap<i32, TurnStart>,
    finals_tx: mpsc::Sender<Finished>,
    finals: mpsc::Receiver<Finished>,
}

impl Hearing {
    pub fn new(asr: Arc<AsrPool>, cfg: HearingConfig) -> Self {
        let (finals_tx, finals) = mpsc::channel(16);
        Self {
            asr,
            cfg,
            endpointer: None,
            recording: false,
            media_ms: 0,
            early: None,
            partial: None,
            partial_next: 0,
            ended: None,
            turn_starts: HashMap::new(),
            finals_tx,
            finals,
        }
    }

    /// Listen for replies (keeps listening if already).
    pub fn listen(&mut self, end_silence_ms: u32) {
        if self.endpointer.is_some() && !self.recording {
            return;
        }
        self.recording = false;
        // Reading at a pause only pays before the end of the utterance.
        let early_ms = if self.cfg.early_asr_ms < end_silence_ms {
            self.cfg.early_asr_ms
        } else {
            0
        };
        self.endpointer = Some(Endpointer::new(EndpointConfig {
            end_silence_ms,
            early_ms,
            // The session keeps the no-input timer.
            no_input_ms: u32::MAX,
            ..EndpointConfig::for_rate(RATE)
        }));
    }

    /// Record one message.
    pub fn record(&mut self, max_ms: u32, end_silence_ms: u32) {
        self.stop();
        self.recording = true;
        self.endpointer = Some(Endpointer::new(EndpointConfig {
            end_silence_ms,
            max_utterance_ms: max_ms,
            no_input_ms: u32::MAX,
            ..EndpointConfig::for_rate(RATE)
        }));
    }

    /// Stop listening; readings before the end of a reply are dropped (and
    /// their decodes cancelled).
    pub fn stop(&mut self) {
        self.endpointer = None;
        self.recording = false;
        self.early = None;
        self.partial = None;
    }

    /// One 20 ms frame from the line. `early_wanted`: whether the session
    /// can still use a reading of the reply before it ends.
    pub fn push(&mut self, frame: &[i16], early_wanted: bool) -> Option<Input> {
        let at = self.media_ms;
        self.media_ms += 20;
        let ep = self.endpointer.as_mut()?;
        let cpu0 = voicecare_speech::thread_cpu_ns();
        let f: Vec<f32> = frame.iter().map(|&s| s as f32 / 32768.0).collect();
        let event = ep.push(&f, at);
        ENDPOINTING_NS.fetch_add(
            voicecare_speech::thread_cpu_ns().saturating_sub(cpu0),
            Ordering::Relaxed,
        );
        match event {
            Some(VadEvent::SpeechStarted { .. }) => {
                self.partial_next = self.partial_step();
                Some(Input::SpeechStarted)
            }
            Some(VadEvent::Paused(u)) if !self.recording => {
                self.read_at_pause(u);
                None
            }
            Some(VadEvent::UtteranceEnded(u)) => {
                self.partial = None;
                let turn = TurnStart {
                    at: Instant::now(),
                    endpoint_ms: ep.config().end_silence_ms as u64,
                };
                self.ended = Some((u, turn));
                Some(Input::UtteranceEnded)
            }
            None => {
                self.speaking(early_wanted);
                None
            }
            Some(VadEvent::Paused(_) | VadEvent::NoInput { .. }) => None,
        }
    }

    fn partial_step(&self) -> usize {
        self.cfg.partial_asr_ms as usize * (RATE as usize / 1000)
    }

    /// The words up to a pause supersede a reading of fewer, and replace
    /// (so cancel) an earlier pause's. Queued like any utterance: usually
    /// the pause is the end of the reply.
    fn read_at_pause(&mut self, u: Utterance) {
        self.partial = None;
        self.early = None;
        let (start_ms, len) = (u.start_ms, u.samples.len());
        self.early = self
            .asr
            .speculate(self.request(u.samples))
            .ok()
            .map(|spec| Early {
                start_ms,
                len,
                state: EarlyState::Running(spec),
            });
        let outcome = if self.early.is_some() {
            "started"
        } else {
            "pool_closed"
        };
        metrics::counter!("voicecare_asr_early_total", "outcome" => outcome).increment(1);
    }

    /// The elder is speaking (or went on after a pause).
    fn speaking(&mut self, early_wanted: bool) {
        let Some(ep) = self.endpointer.as_ref() else {
            return;
        };
        // Gone on after the pause: that reading cannot serve the turn, but
        // still being decoded, it is a reading of the reply so far.
        if self
            .early
            .as_ref()
            .is_some_and(|e| ep.in_progress() != Some((e.start_ms, e.len)))
            && let Some(Early {
                state: EarlyState::Running(spec),
                ..
            }) = self.early.take()
            && self.partial.is_none()
        {
            self.partial = Some(spec);
        }
        // Spare capacity only, checked first so a busy pool costs no copy
        // of the audio per frame.
        let step = self.partial_step();
        if !early_wanted || step == 0 || self.partial.is_some() || self.asr.idle() == 0 {
            return;
        }
        let Some(so_far) = ep.speech_so_far() else {
            return;
        };
        if so_far.len() < self.partial_next {
            return;
        }
        self.partial_next = so_far.len() + step;
        let req = self.request(so_far.to_vec());
        self.partial = self.asr.speculate_if_idle(req);
        let outcome = if self.partial.is_some() {
            "started"
        } else {
            "no_idle_worker"
        };
        metrics::counter!("voicecare_asr_partial_total", "outcome" => outcome).increment(1);
    }

    fn request(&self, samples: Vec<f32>) -> TranscribeRequest {
        TranscribeRequest {
            samples_16k: samples,
            lang: Some(self.cfg.lang),
            prompt: None,
        }
    }

    /// Read the utterance that just ended as utterance `seq`; its final
    /// reading comes from [`Hearing::next`]. The reading at its last pause is
    /// used when it covered exactly these samples.
    pub async fn transcribe(&mut self, seq: i32) {
        let Some((u, turn)) = self.ended.take() else {
            return;
        };
        self.turn_starts.insert(seq, turn);
        let path = self.save(seq, &u.samples).await;
        let audio = AudioInfo {
            path,
            audio_ms: (u.samples.len() / 16) as i32,
            ..AudioInfo::default()
        };
        let early = self
            .early
            .take()
            .filter(|e| e.start_ms == u.start_ms && e.len == u.samples.len());
        let (asr, tx, req) = (
            self.asr.clone(),
            self.finals_tx.clone(),
            self.request(u.samples),
        );
        tokio::spawn(async move {
            let early = match early.map(|e| e.state) {
                Some(EarlyState::Done(r)) => Some(r),
                Some(EarlyState::Running(spec)) => Some(spec.await),
                None => None,
            };
            let result = match early {
                Some(Ok(t)) => {
                    metrics::counter!("voicecare_asr_early_total", "outcome" => "used")
                        .increment(1);
                    Ok(t)
                }
                _ => asr.transcribe(req).await,
            };
            let _ = tx.send(Finished { seq, audio, result }).await;
        });
    }

    /// The line ended: words the elder was still saying end their utterance
    /// now, so they are read and kept (the last thing said matters most).
    pub fn flush(&mut self) -> Option<Input> {
        let ep = self.endpointer.as_mut()?;
        let Some(VadEvent::UtteranceEnded(u)) = ep.finish(self.media_ms) else {
            return None;
        };
        // A click or a breath as the line drops is not worth a reading that
        // other calls' replies would wait behind.
        if u.speech_ms < CUT_OFF_MIN_SPEECH_MS {
            return None;
        }
        self.partial = None;
        let turn = TurnStart {
            at: Instant::now(),
            endpoint_ms: 0,
        };
        self.ended = Some((u, turn));
        Some(Input::UtteranceEnded)
    }

    /// When the turn of utterance `seq` started, once.
    pub fn turn_start(&mut self, seq: i32) -> Option<TurnStart> {
        self.turn_starts.remove(&seq)
    }

    /// The recorded message just ended: keep it as utterance `seq`.
    pub async fn save_recording(&mut self, seq: i32) -> Option<String> {
        self.endpointer = None;
        self.recording = false;
        let (u, _) = self.ended.take()?;
        self.save(seq, &u.samples).await
    }

    /// Stop recording now and keep what was said as utterance `seq`.
    pub async fn finish_recording(&mut self, seq: i32) -> Option<String> {
        self.recording = false;
        let mut ep = self.endpointer.take()?;
        match ep.finish(self.media_ms) {
            Some(VadEvent::UtteranceEnded(u)) => self.save(seq, &u.samples).await,
            _ => None,
        }
    }

    /// The next reading: a pause's words, the reply so far, or an
    /// utterance's final reading. Pending forever when none is on its way.
    pub async fn next(&mut self) -> Input {
        loop {
            tokio::select! {
                r = async {
                    match self.early.as_mut().map(|e| &mut e.state) {
                        Some(EarlyState::Running(spec)) => spec.await,
                        _ => std::future::pending().await,
                    }
                } => {
                    if let Some(input) = self.pause_read(r) {
                        return input;
                    }
                }
                r = async {
                    match self.partial.as_mut() {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.partial = None;
                    if let Some(input) = partial_read(r) {
                        return input;
                    }
                }
                Some(f) = self.finals.recv() => return final_read(f),
            }
        }
    }

    /// A reading at a pause is kept for the final reading; it is reported
    /// with whether the elder is still in that same pause.
    fn pause_read(&mut self, r: Result<Transcript, SpeechError>) -> Option<Input> {
        let still = self.endpointer.as_ref().and_then(Endpointer::in_progress);
        let e = self.early.as_mut()?;
        let words = r.as_ref().ok().and_then(words);
        let still_paused = still == Some((e.start_ms, e.len));
        e.state = EarlyState::Done(r);
        Some(Input::Reading(Reading::AtPause {
            words: words?,
            still_paused,
        }))
    }

    async fn save(&self, seq: i32, samples: &[f32]) -> Option<String> {
        let dir = self.cfg.recordings.clone()?;
        save_wav(dir, self.cfg.call_id, seq, samples.to_vec()).await
    }
}

fn words(t: &Transcript) -> Option<Words> {
    let text = t.text.trim();
    (!text.is_empty()).then(|| Words {
        text: text.to_string(),
        confidence: t.confidence,
        low_confidence: t.low_confidence,
    })
}

fn partial_read(r: Result<Transcript, SpeechError>) -> Option<Input> {
    let outcome = match &r {
        Ok(_) => "heard",
        Err(SpeechError::Cancelled) => "gave_way",
        Err(_) => "failed",
    };
    metrics::counter!("voicecare_asr_partial_total", "outcome" => outcome).increment(1);
    let words = words(r.as_ref().ok()?)?;
    Some(Input::Reading(Reading::SoFar { words }))
}

fn final_read(f: Finished) -> Input {
    let Finished {
        seq,
        mut audio,
        result,
    } = f;
    let words = match &result {
        Ok(t) => {
            audio.asr_queue_ms = (t.queue_wait_s * 1000.0) as i32;
            audio.asr_decode_ms = (t.decode_s * 1000.0) as i32;
            if t.text.trim().is_empty() {
                tracing::debug!(gated = ?t.gated, "utterance without words");
            }
            words(t)
        }
        Err(e) => {
            tracing::warn!(error = %e, "speech recognition failed for an utterance");
            None
        }
    };
    Input::Reading(Reading::Final { seq, words, audio })
}

/// Save an utterance as 16 kHz mono WAV, off the async threads.
async fn save_wav(dir: PathBuf, call_id: i64, seq: i32, samples: Vec<f32>) -> Option<String> {
    let path = dir.join(format!("call-{call_id}-{seq:03}.wav"));
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || write(&dir, &p, samples)).await;
    match r {
        Ok(Ok(())) => Some(path.display().to_string()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot save utterance audio");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot save utterance audio");
            None
        }
    }
}

fn write(dir: &Path, path: &Path, samples: Vec<f32>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let audio = voicecare_media::Audio {
        samples,
        rate: RATE,
    };
    voicecare_media::write_wav(path, &audio).map_err(|e| e.to_string())
}
