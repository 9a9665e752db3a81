//! Voice activity detection and endpointing as a pure state machine.
//!
//! The call engine feeds the elder's audio in small frames (normally 20 ms)
//! together with the current time; the [`Endpointer`] answers with at most one
//! [`VadEvent`] per frame. It never reads a clock, sleeps or spawns, so a whole
//! conversation can be simulated in microseconds.
//!
//! Decisions are made on frame energy against an adaptive noise floor, with
//! three refinements that matter on telephone lines with elderly callers:
//! - an utterance only *starts* after [`EndpointConfig::min_speech_ms`] of
//!   speech-level frames, so a cough, a click or a breath does not count as
//!   barge-in;
//! - energy that does not move (a dial tone, hum, steady line noise) is
//!   learned as the noise floor instead of being taken for speech: speech is
//!   modulated by syllables, steady signals are not;
//! - an utterance ends only after [`EndpointConfig::end_silence_ms`] of
//!   silence (elders pause mid-sentence; the default is 1.1 s) or when it
//!   reaches [`EndpointConfig::max_utterance_ms`].
//!
//! Waiting out that long silence costs the elder time on every turn, so the
//! endpointer also reports a [`VadEvent::Paused`] early in the silence
//! ([`EndpointConfig::early_ms`]) with the utterance so far. The caller can
//! transcribe it speculatively: if no more speech comes, the final utterance
//! has exactly the same samples and the transcript is ready (or nearly) when
//! the silence ends; [`Endpointer::in_progress`] tells whether speech came
//! since. [`Endpointer::speech_so_far`] gives the audio of a reply still
//! being spoken, for reading it before it ends.

use std::collections::VecDeque;

/// Tuning of the endpointer. [`EndpointConfig::default`] is tuned for elderly
/// callers on the telephone.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Sample rate of the frames pushed in.
    pub sample_rate: u32,
    /// Silence that ends an utterance.
    pub end_silence_ms: u32,
    /// Longest utterance; longer speech is cut and delivered in pieces.
    pub max_utterance_ms: u32,
    /// Silence after which [`VadEvent::Paused`] reports the utterance so far;
    /// 0 turns it off. Must be shorter than `end_silence_ms` to matter.
    pub early_ms: u32,
    /// Speech needed before an utterance counts as started (barge-in on real words only).
    pub min_speech_ms: u32,
    /// After [`Endpointer::arm`], report [`VadEvent::NoInput`] if nobody spoke for this long.
    pub no_input_ms: u32,
    /// Audio kept from before the detected onset, so the first consonant is not clipped.
    pub pre_roll_ms: u32,
    /// Trailing silence kept at the end of an utterance.
    pub tail_ms: u32,
    /// A frame is speech-level if it is this many dB above the noise floor...
    pub threshold_db: f32,
    /// ...and at least this loud (dBFS).
    pub min_level_dbfs: f32,
    /// Speech onsets whose frame energies spread less than this (dB) are steady tones or noise.
    pub min_modulation_db: f32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16000,
            end_silence_ms: 1100,
            max_utterance_ms: 20_000,
            early_ms: 0,
            min_speech_ms: 200,
            no_input_ms: 8000,
            pre_roll_ms: 300,
            tail_ms: 200,
            threshold_db: 9.0,
            min_level_dbfs: -50.0,
            min_modulation_db: 3.0,
        }
    }
}

impl EndpointConfig {
    /// The default tuning for frames at `sample_rate`.
    pub fn for_rate(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            ..Self::default()
        }
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller fell silent for `end_silence_ms`.
    Silence,
    /// The utterance reached `max_utterance_ms`.
    MaxLength,
    /// The stream ended ([`Endpointer::finish`]).
    EndOfStream,
}

/// One utterance, ready for recognition.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// The audio, including pre-roll and a short tail, at the configured rate.
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Time of the first sample in `samples` (same clock as `now_ms`).
    pub start_ms: u64,
    /// Time just after the last sample in `samples`.
    pub end_ms: u64,
    /// Total duration of speech-level frames inside the utterance.
    pub speech_ms: u32,
    pub reason: EndReason,
}

/// What the endpointer noticed in a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum VadEvent {
    /// Real speech began (after `min_speech_ms`): stop the prompt for barge-in.
    SpeechStarted { at_ms: u64 },
    /// The speaker paused for `early_ms`: the utterance so far, which is
    /// exactly what [`VadEvent::UtteranceEnded`] will deliver if no more
    /// speech comes (same `start_ms`, same samples).
    Paused(Utterance),
    /// An utterance is complete.
    UtteranceEnded(Utterance),
    /// Nobody spoke for `no_input_ms` after the endpointer was armed.
    NoInput { waited_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waiting for speech since `armed_ms`.
    Idle,
    /// Speech-level frames seen, not yet `min_speech_ms` of them.
    Onset,
    /// In an utterance.
    Speaking,
}

/// The endpointer. See the module documentation.
#[derive(Debug, Clone)]
pub struct Endpointer {
    cfg: EndpointConfig,
    state: State,
    floor_db: f32,
    armed_ms: Option<u64>,
    /// Recent frames kept for pre-roll while idle: (start time, samples, dB).
    history: VecDeque<(u64, Vec<f32>)>,
    history_ms: u32,
    onset_db: Vec<f32>,
    onset_speech_ms: u32,
    onset_gap_ms: u32,
    buf: Vec<f32>,
    buf_start_ms: u64,
    speech_ms: u32,
    silence_ms: u32,
    /// Length of `buf` at the last speech-level frame.
    last_speech_len: usize,
    /// `Paused` was reported for the current pause.
    paused_sent: bool,
}

fn frame_db(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let mean_sq = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    10.0 * (mean_sq + 1e-12).log10()
}

impl Endpointer {
    pub fn new(cfg: EndpointConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            floor_db: -70.0,
            armed_ms: None,
            history: VecDeque::new(),
            history_ms: 0,
            onset_db: Vec::new(),
            onset_speech_ms: 0,
            onset_gap_ms: 0,
            buf: Vec::new(),
            buf_start_ms: 0,
            speech_ms: 0,
            silence_ms: 0,
            last_speech_len: 0,
            paused_sent: false,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Start the no-input timer (call when a prompt has finished playing).
    pub fn arm(&mut self, now_ms: u64) {
        self.armed_ms = Some(now_ms);
    }

    /// Stop the no-input timer.
    pub fn disarm(&mut self) {
        self.armed_ms = None;
    }

    /// True while an utterance is in progress (after `SpeechStarted`).
    pub fn in_speech(&self) -> bool {
        self.state == State::Speaking
    }

    /// The current noise-floor estimate in dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor_db
    }

    fn frame_ms(&self, frame: &[f32]) -> u32 {
        (frame.len() as u64 * 1000 / self.cfg.sample_rate.max(1) as u64) as u32
    }

    fn is_speech_level(&self, db: f32) -> bool {
        db >= self.floor_db + self.cfg.threshold_db && db >= self.cfg.min_level_dbfs
    }

    fn adapt_floor(&mut self, db: f32) {
        if db < self.floor_db {
            // Follow quiet quickly.
            self.floor_db = 0.7 * self.floor_db + 0.3 * db;
        } else {
            // Follow louder background slowly (about 10 dB per second at 20 ms frames).
            self.floor_db += (db - self.floor_db).min(0.2);
        }
        self.floor_db = self.floor_db.max(-90.0);
    }

    /// Feed one frame that starts at `now_ms`. Returns at most one event.
    pub fn push(&mut self, frame: &[f32], now_ms: u64) -> Option<VadEvent> {
        let ms = self.frame_ms(frame);
        let db = frame_db(frame);
        let speech = self.is_speech_level(db);
        match self.state {
            State::Idle => {
                self.remember(frame, now_ms, ms);
                if speech {
                    self.state = State::Onset;
                    self.onset_db.clear();
                    self.onset_db.push(db);
                    self.onset_speech_ms = ms;
                    self.onset_gap_ms = 0;
                    return None;
                }
                self.adapt_floor(db);
                self.check_no_input(now_ms + ms as u64)
            }
            State::Onset => {
                self.remember(frame, now_ms, ms);
                self.onset_db.push(db);
                if speech {
                    self.onset_speech_ms += ms;
                    self.onset_gap_ms = 0;
                } else {
                    self.onset_gap_ms += ms;
                    if self.onset_gap_ms > 150 {
                        // A click or a cough: back to waiting.
                        self.state = State::Idle;
                        return self.check_no_input(now_ms + ms as u64);
                    }
                }
                if self.onset_speech_ms < self.cfg.min_speech_ms {
                    return None;
                }
                // Enough speech-level audio: is it modulated like speech?
                let tail = &self.onset_db[1.min(self.onset_db.len() - 1)..];
                let max = tail.iter().copied().fold(f32::MIN, f32::max);
                let min = tail.iter().copied().fold(f32::MAX, f32::min);
                if max - min < self.cfg.min_modulation_db {
                    // Steady tone or noise: learn it as background.
                    let mean = tail.iter().sum::<f32>() / tail.len() as f32;
                    self.floor_db = self.floor_db.max(mean - 1.0);
                    self.state = State::Idle;
                    return self.check_no_input(now_ms + ms as u64);
                }
                self.begin_utterance();
                Some(VadEvent::SpeechStarted {
                    at_ms: now_ms + ms as u64 - self.onset_speech_ms as u64,
                })
            }
            State::Speaking => {
                self.buf.extend_from_slice(frame);
                if speech {
                    self.speech_ms += ms;
                    self.silence_ms = 0;
                    self.last_speech_len = self.buf.len();
                    self.paused_sent = false;
                } else {
                    self.silence_ms += ms;
                    self.adapt_floor_in_pause(db);
                }
                let len_ms = self.buf.len() as u64 * 1000 / self.cfg.sample_rate as u64;
                if self.silence_ms >= self.cfg.end_silence_ms {
                    return Some(VadEvent::UtteranceEnded(
                        self.end_utterance(EndReason::Silence, now_ms + ms as u64),
                    ));
                }
                if len_ms >= self.cfg.max_utterance_ms as u64 {
                    return Some(VadEvent::UtteranceEnded(
                        self.end_utterance(EndReason::MaxLength, now_ms + ms as u64),
                    ));
                }
                if self.cfg.early_ms > 0
                    && !self.paused_sent
                    && self.silence_ms >= self.cfg.early_ms
                {
                    self.paused_sent = true;
                    return Some(VadEvent::Paused(self.so_far()));
                }
                None
            }
        }
    }

    /// The utterance an end now would deliver, as (`start_ms`, sample count):
    /// compare with a [`VadEvent::Paused`] to know whether speech came since.
    pub fn in_progress(&self) -> Option<(u64, usize)> {
        (self.state == State::Speaking).then(|| (self.buf_start_ms, self.kept_len()))
    }

    /// Everything heard since the utterance began, up to this frame, while
    /// the speaker is still talking (not in a pause): for reading the words
    /// so far before the reply is over. `None` when not speaking.
    pub fn speech_so_far(&self) -> Option<&[f32]> {
        (self.state == State::Speaking && self.silence_ms == 0).then_some(&self.buf[..])
    }

    /// End of stream: deliver an utterance in progress, if any.
    pub fn finish(&mut self, now_ms: u64) -> Option<VadEvent> {
        match self.state {
            State::Speaking => Some(VadEvent::UtteranceEnded(
                self.end_utterance(EndReason::EndOfStream, now_ms),
            )),
            State::Onset | State::Idle => {
                self.state = State::Idle;
                None
            }
        }
    }

    fn adapt_floor_in_pause(&mut self, db: f32) {
        if db < self.floor_db {
            self.adapt_floor(db);
        }
    }

    fn check_no_input(&mut self, now_ms: u64) -> Option<VadEvent> {
        let armed = self.armed_ms?;
        let waited = now_ms.saturating_sub(armed);
        if waited >= self.cfg.no_input_ms as u64 {
            self.armed_ms = None;
            return Some(VadEvent::NoInput { waited_ms: waited });
        }
        None
    }

    fn remember(&mut self, frame: &[f32], now_ms: u64, ms: u32) {
        self.history.push_back((now_ms, frame.to_vec()));
        self.history_ms += ms;
        let keep = self.cfg.pre_roll_ms + self.cfg.min_speech_ms + 200;
        while self.history_ms > keep {
            let Some((_, old)) = self.history.pop_front() else {
                break;
            };
            self.history_ms -= self.frame_ms(&old);
        }
    }

    fn begin_utterance(&mut self) {
        self.state = State::Speaking;
        self.armed_ms = None;
        // Keep pre-roll before the onset frames.
        let onset_frames = self.onset_db.len();
        let pre_roll_frames = self
            .history
            .iter()
            .rev()
            .skip(onset_frames)
            .scan(0u32, |acc, (_, f)| {
                *acc += (f.len() as u64 * 1000 / self.cfg.sample_rate as u64) as u32;
                Some(*acc)
            })
            .take_while(|&acc| acc <= self.cfg.pre_roll_ms)
            .count();
        let skip = self
            .history
            .len()
            .saturating_sub(onset_frames + pre_roll_frames);
        self.buf.clear();
        self.buf_start_ms = self.history.get(skip).map(|(t, _)| *t).unwrap_or(0);
        for (_, f) in self.history.iter().skip(skip) {
            self.buf.extend_from_slice(f);
        }
        self.history.clear();
        self.history_ms = 0;
        self.speech_ms = self.onset_speech_ms;
        self.silence_ms = self.onset_gap_ms;
        self.last_speech_len = self.buf.len();
    }

    /// Samples of the utterance in progress that an end now would deliver:
    /// up to the last speech-level frame plus the tail.
    fn kept_len(&self) -> usize {
        let tail = (self.cfg.tail_ms as u64 * self.cfg.sample_rate as u64 / 1000) as usize;
        (self.last_speech_len + tail).min(self.buf.len())
    }

    fn utterance_of(&self, samples: Vec<f32>, reason: EndReason, now_ms: u64) -> Utterance {
        let start_ms = self.buf_start_ms;
        let end_ms = start_ms + samples.len() as u64 * 1000 / self.cfg.sample_rate as u64;
        Utterance {
            samples,
            sample_rate: self.cfg.sample_rate,
            start_ms,
            end_ms: end_ms.min(now_ms.max(start_ms)),
            speech_ms: self.speech_ms,
            reason,
        }
    }

    /// A copy of the utterance so far, for [`VadEvent::Paused`]: as it would
    /// end if the silence lasts.
    fn so_far(&self) -> Utterance {
        let samples = self.buf[..self.kept_len()].to_vec();
        let end = self.buf_start_ms + samples.len() as u64 * 1000 / self.cfg.sample_rate as u64;
        self.utterance_of(samples, EndReason::Silence, end)
    }

    fn end_utterance(&mut self, reason: EndReason, now_ms: u64) -> Utterance {
        let keep = self.kept_len();
        let mut samples = std::mem::take(&mut self.buf);
        samples.truncate(keep);
        let utt = self.utterance_of(samples, reason, now_ms);
        self.state = State::Idle;
        self.speech_ms = 0;
        self.silence_ms = 0;
        self.last_speech_len = 0;
        self.paused_sent = false;
        if reason == EndReason::MaxLength {
            // Speech continues: the next piece starts right away.
            self.state = State::Speaking;
            self.buf_start_ms = utt.end_ms;
        }
        utt
    }
}

/// Run the endpointer over a whole recording in 20 ms frames and return the
/// utterances found. Useful to decide whether a file holds any speech at all.
pub fn utterances(samples: &[f32], cfg: &EndpointConfig) -> Vec<Utterance> {
    let mut ep = Endpointer::new(cfg.clone());
    let frame = (cfg.sample_rate / 50).max(1) as usize;
    let mut out = Vec::new();
    let mut now = 0u64;
    for f in samples.chunks(frame) {
        if let Some(VadEvent::UtteranceEnded(u)) = ep.push(f, now) {
            out.push(u);
        }
        now += f.len() as u64 * 1000 / cfg.sample_rate as u64;
    }
    if let Some(VadEvent::UtteranceEnded(u)) = ep.finish(now) {
        out.push(u);
    }
    out
}

/// Total speech (ms) the endpointer finds in a recording.
pub fn speech_ms(samples: &[f32], cfg: &EndpointConfig) -> u32 {
    utterances(samples, cfg).iter().map(|u| u.speech_ms).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16000;

    /// Deterministic pseudo-noise in [-1, 1].
    fn noise(n: usize, seed: &mut u32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (*seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Speech-like: a voiced buzz whose loudness rises and falls four times a second.
    fn syllables(ms: u32, seed: &mut u32) -> Vec<f32> {
        let n = (RATE * ms / 1000) as usize;
        let hiss = noise(n, seed);
        (0..n)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                let env = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).cos();
                let voice = (2.0 * std::f32::consts::PI * 140.0 * t).sin()
                    + 0.5 * (2.0 * std::f32::consts::PI * 280.0 * t).sin();
                0.25 * env * (voice * 0.8 + 0.2 * hiss[i])
            })
            .collect()
    }

    fn quiet(ms: u32, seed: &mut u32) -> Vec<f32> {
        noise((RATE * ms / 1000) as usize, seed)
            .into_iter()
            .map(|s| s * 0.001)
            .collect()
    }

    fn run(ep: &mut Endpointer, audio: &[f32]) -> Vec<(u64, VadEvent)> {
        let mut out = Vec::new();
        let mut now = 0;
        for f in audio.chunks((RATE / 50) as usize) {
            if let Some(e) = ep.push(f, now) {
                out.push((now, e));
            }
            now += 20;
        }
        out
    }

    #[test]
    fn pauses_are_reported_early_and_match_the_final_utterance() {
        let mut s = 11;
        let mut audio = quiet(500, &mut s);
        audio.extend(syllables(1500, &mut s));
        audio.extend(quiet(600, &mut s)); // a pause: reported, then speech resumes
        audio.extend(syllables(1000, &mut s));
        audio.extend(quiet(2000, &mut s));
        let mut ep = Endpointer::new(EndpointConfig {
            early_ms: 400,
            ..EndpointConfig::for_rate(RATE)
        });
        let ev = run(&mut ep, &audio);
        let kinds: Vec<&str> = ev
            .iter()
            .map(|(_, e)| match e {
                VadEvent::SpeechStarted { .. } => "start",
                VadEvent::Paused(_) => "paused",
                VadEvent::UtteranceEnded(_) => "end",
                VadEvent::NoInput { .. } => "no-input",
            })
            .collect();
        assert_eq!(kinds, ["start", "paused", "paused", "end"]);
        let (VadEvent::Paused(first), VadEvent::Paused(second), VadEvent::UtteranceEnded(fin)) =
            (&ev[1].1, &ev[2].1, &ev[3].1)
        else {
            unreachable!()
        };
        // The first pause was followed by more speech: it is not the utterance.
        assert!(first.samples.len() < fin.samples.len());
        // The second was the end: same start, same samples, delivered 700 ms earlier.
        assert_eq!(second.start_ms, fin.start_ms);
        assert_eq!(second.samples, fin.samples);
        assert_eq!(
            ev[3].0 - ev[2].0,
            700,
            "1100 ms end silence minus the 400 ms early report"
        );
    }

    #[test]
    fn in_progress_tells_whether_speech_came_since_a_pause() {
        let mut s = 5;
        let mut ep = Endpointer::new(EndpointConfig {
            early_ms: 300,
            ..EndpointConfig::for_rate(RATE)
        });
        let mut audio = quiet(400, &mut s);
        audio.extend(syllables(1200, &mut s));
        let ev = run(&mut ep, &audio);
        assert!(matches!(
            ev.last(),
            Some((_, VadEvent::SpeechStarted { .. }))
        ));
        let mut now = 1600;
        let mut feed = |ep: &mut Endpointer, audio: Vec<f32>| {
            let mut out = Vec::new();
            for f in audio.chunks((RATE / 50) as usize) {
                out.extend(ep.push(f, now));
                now += 20;
            }
            out
        };
        let ev = feed(&mut ep, quiet(400, &mut s));
        let Some(VadEvent::Paused(paused)) = ev.first() else {
            panic!("a 400 ms pause is reported at 300 ms: {ev:?}")
        };
        assert_eq!(
            ep.in_progress(),
            Some((paused.start_ms, paused.samples.len())),
            "no speech since the pause"
        );
        feed(&mut ep, syllables(600, &mut s));
        let (start, len) = ep.in_progress().expect("still speaking");
        assert_eq!(start, paused.start_ms);
        assert!(len > paused.samples.len(), "speech came since the pause");
    }

    #[test]
    fn speech_so_far_grows_while_speaking_and_is_the_start_of_the_utterance() {
        let mut s = 11;
        let mut ep = Endpointer::new(EndpointConfig::for_rate(RATE));
        assert!(ep.speech_so_far().is_none(), "nothing heard yet");
        let mut now = 0;
        let mut seen: Vec<Vec<f32>> = Vec::new();
        let mut ended = None;
        let mut audio = quiet(400, &mut s);
        audio.extend(syllables(1500, &mut s));
        audio.extend(quiet(1500, &mut s));
        for f in audio.chunks((RATE / 50) as usize) {
            if let Some(VadEvent::UtteranceEnded(u)) = ep.push(f, now) {
                ended = Some(u);
            }
            if let Some(so_far) = ep.speech_so_far() {
                seen.push(so_far.to_vec());
            }
            now += 20;
        }
        let u = ended.expect("the utterance ended");
        assert!(ep.speech_so_far().is_none(), "not speaking after the end");
        assert!(seen.len() > 10, "heard while speaking: {}", seen.len());
        assert!(seen.windows(2).all(|w| w[0].len() < w[1].len()));
        let last = seen.last().unwrap();
        assert!(last.len() <= u.samples.len());
        assert_eq!(
            &u.samples[..last.len()],
            &last[..],
            "a prefix of the utterance"
        );
    }

    #[test]
    fn utterance_with_a_mid_sentence_pause_is_one_utterance() {
        let mut s = 7;
        let mut audio = quiet(500, &mut s);
        audio.extend(syllables(1500, &mut s));
        audio.extend(quiet(800, &mut s)); // pause shorter than 1.1 s
        audio.extend(syllables(1000, &mut s));
        audio.extend(quiet(2000, &mut s));
        let mut ep = Endpointer::new(EndpointConfig::for_rate(RATE));
        let ev = run(&mut ep, &audio);
        assert_eq!(
            ev.len(),
            2,
            "{:?}",
            ev.iter().map(|e| &e.1).collect::<Vec<_>>().len()
        );
        assert!(
            matches!(ev[0].1, VadEvent::SpeechStarted { at_ms } if (480..=800).contains(&at_ms))
        );
        let VadEvent::UtteranceEnded(u) = &ev[1].1 else {
            panic!("expected end, got {:?}", ev[1].1)
        };
        assert_eq!(u.reason, EndReason::Silence);
        // Ends 1.1 s after the speech stopped at 3.8 s.
        assert!((4800..=5100).contains(&ev[1].0), "ended at {}", ev[1].0);
        let dur = u.samples.len() as u32 * 1000 / RATE;
        assert!((3100..=3800).contains(&dur), "duration {dur}");
        assert!(
            u.start_ms <= 500 && u.start_ms >= 100,
            "start {}",
            u.start_ms
        );
    }

    #[test]
    fn a_cough_does_not_barge_in() {
        let mut s = 3;
        let mut audio = quiet(500, &mut s);
        let mut cough = noise((RATE / 10) as usize, &mut s); // 100 ms burst
        cough.iter_mut().for_each(|x| *x *= 0.3);
        audio.extend(cough);
        audio.extend(quiet(1500, &mut s));
        let mut ep = Endpointer::new(EndpointConfig::for_rate(RATE));
        assert!(run(&mut ep, &audio).is_empty());
    }

    #[test]
    fn steady_tone_is_not_speech() {
        let mut s = 1;
        let mut audio = quiet(300, &mut s);
        audio
            .extend((0..RATE * 3).map(|i| {
                0.3 * (2.0 * std::f32::consts::PI * 425.0 * i as f32 / RATE as f32).sin()
            }));
        audio.extend(quiet(300, &mut s));
        assert!(utterances(&audio, &EndpointConfig::for_rate(RATE)).is_empty());
    }

    #[test]
    fn no_input_fires_once_after_arming() {
        let mut s = 9;
        let audio = quiet(10_000, &mut s);
        let mut ep = Endpointer::new(EndpointConfig::for_rate(RATE));
        ep.arm(1000);
        let ev = run(&mut ep, &audio);
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(ev[0].1, VadEvent::NoInput { waited_ms } if waited_ms == 8000),
            "{:?}",
            ev[0]
        );
    }

    #[test]
    fn long_speech_is_cut_at_max_length() {
        let mut s = 5;
        let audio = syllables(5000, &mut s);
        let cfg = EndpointConfig {
            max_utterance_ms: 2000,
            ..EndpointConfig::for_rate(RATE)
        };
        let us = utterances(&audio, &cfg);
        assert!(us.len() >= 2, "{}", us.len());
        assert_eq!(us[0].reason, EndReason::MaxLength);
        assert!(us[0].samples.len() as u32 <= RATE * 2 + RATE / 50);
    }

    #[test]
    fn finish_flushes_speech_in_progress() {
        let mut s = 11;
        let mut audio = quiet(200, &mut s);
        audio.extend(syllables(1000, &mut s));
        let us = utterances(&audio, &EndpointConfig::for_rate(RATE));
        assert_eq!(us.len(), 1);
        assert_eq!(us[0].reason, EndReason::EndOfStream);
        assert!(us[0].speech_ms >= 500);
    }
}
