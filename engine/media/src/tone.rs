//! Pure-tone detection: the beep an answering machine plays before it records.
//!
//! A beep is one steady sinusoid (commonly 400–2000 Hz) lasting 150 ms or
//! more. Speech is never that: its pitch moves, its energy pulses with every
//! glottal period and it carries many harmonics at once. Each frame is tested
//! on its own, with no spectrum:
//! - **one sinusoid**: a pure tone obeys `x[n-1] + x[n+1] = 2·cos(ω)·x[n]`
//!   exactly, so a second-order predictor fitted to the frame leaves almost
//!   nothing ([`ToneConfig::max_residual`]) and gives the frequency;
//! - **a flat envelope**: the energy of 2.5 ms blocks may vary only a little
//!   ([`ToneConfig::max_envelope_ratio`]), which rejects two close tones
//!   beating (dial and busy tones) and voiced speech pulsing at its pitch;
//! - **loud enough** ([`ToneConfig::min_level_dbfs`]).
//!
//! [`ToneDetector`] then asks for consecutive tone frames at the same
//! frequency (within [`ToneConfig::max_drift_hz`]) for
//! [`ToneConfig::min_ms`]. Like the endpointer it is a pure state machine fed
//! frames and their times; it reads no clock.

/// Tuning of the tone detector.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneConfig {
    /// Sample rate of the frames pushed in.
    pub sample_rate: u32,
    /// Lowest and highest frequency reported.
    pub min_hz: f32,
    pub max_hz: f32,
    /// A tone is reported once it has lasted this long.
    pub min_ms: u32,
    /// Quieter frames are not tones.
    pub min_level_dbfs: f32,
    /// Energy the second-order predictor leaves, relative to the frame's.
    pub max_residual: f32,
    /// Loudest over quietest 2.5 ms block energy within a frame.
    pub max_envelope_ratio: f32,
    /// How far the frequency may wander from the tone's first frame.
    pub max_drift_hz: f32,
}

impl Default for ToneConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            min_hz: 300.0,
            max_hz: 2_100.0,
            min_ms: 150,
            min_level_dbfs: -45.0,
            max_residual: 0.02,
            max_envelope_ratio: 2.0,
            max_drift_hz: 25.0,
        }
    }
}

impl ToneConfig {
    /// The default tuning for frames at `sample_rate`.
    pub fn for_rate(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            ..Self::default()
        }
    }
}

/// What one frame is, if it is a single steady tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTone {
    pub hz: f32,
    /// Predictor residual relative to the frame's energy (0 for a pure tone).
    pub residual: f32,
    pub level_dbfs: f32,
}

/// Whether `frame` is one steady sinusoid within the configured band and
/// level, and at what frequency. Pure: the same frame gives the same answer.
pub fn frame_tone(frame: &[f32], cfg: &ToneConfig) -> Option<FrameTone> {
    let n = frame.len();
    let block = (cfg.sample_rate as usize / 400).max(2); // 2.5 ms
    if n < 2 * block || n < 8 {
        return None;
    }
    let energy: f64 = frame.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let level_dbfs = (10.0 * (energy / n as f64 + 1e-12).log10()) as f32;
    if level_dbfs < cfg.min_level_dbfs {
        return None;
    }
    // Second-order predictor: y[n] = x[n-1] + x[n+1] ≈ c·x[n], c = 2·cos ω.
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for i in 1..n - 1 {
        let (x, y) = (frame[i] as f64, frame[i - 1] as f64 + frame[i + 1] as f64);
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx <= 0.0 || yy <= 0.0 {
        return None;
    }
    let c = xy / xx;
    let residual = ((yy - c * xy) / yy).max(0.0) as f32;
    if residual > cfg.max_residual || !(-2.0..=2.0).contains(&c) {
        return None;
    }
    let hz = ((c / 2.0).acos() * cfg.sample_rate as f64 / std::f64::consts::TAU) as f32;
    if hz < cfg.min_hz || hz > cfg.max_hz {
        return None;
    }
    let blocks: Vec<f32> = frame
        .chunks_exact(block)
        .map(|b| b.iter().map(|x| x * x).sum::<f32>())
        .collect();
    let max = blocks.iter().copied().fold(0.0f32, f32::max);
    let min = blocks.iter().copied().fold(f32::MAX, f32::min);
    if min <= 0.0 || max / min > cfg.max_envelope_ratio {
        return None;
    }
    Some(FrameTone {
        hz,
        residual,
        level_dbfs,
    })
}

/// A tone heard: when it began, its mean frequency, and how long it has
/// lasted (so far, for [`ToneEvent::Started`]; in all, for [`ToneEvent::Ended`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    pub start_ms: u64,
    pub hz: f32,
    pub ms: u32,
}

/// What the detector noticed in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToneEvent {
    /// A tone has lasted [`ToneConfig::min_ms`]: reported once, as early as possible.
    Started(Tone),
    /// A reported tone stopped (or the frequency moved away).
    Ended(Tone),
}

/// Streaming tone detector; see the module documentation.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    cfg: ToneConfig,
    run: Option<Run>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start_ms: u64,
    first_hz: f32,
    hz_sum: f32,
    frames: u32,
    ms: u32,
    reported: bool,
}

impl Run {
    fn tone(&self) -> Tone {
        Tone {
            start_ms: self.start_ms,
            hz: self.hz_sum / self.frames.max(1) as f32,
            ms: self.ms,
        }
    }
}

impl ToneDetector {
    pub fn new(cfg: ToneConfig) -> Self {
        Self { cfg, run: None }
    }

    pub fn config(&self) -> &ToneConfig {
        &self.cfg
    }

    /// Feed one frame that starts at `now_ms`. Returns at most one event.
    pub fn push(&mut self, frame: &[f32], now_ms: u64) -> Option<ToneEvent> {
        let ms = (frame.len() as u64 * 1000 / self.cfg.sample_rate.max(1) as u64) as u32;
        let tone = frame_tone(frame, &self.cfg);
        let same = match (&self.run, tone) {
            (Some(r), Some(t)) => (t.hz - r.first_hz).abs() <= self.cfg.max_drift_hz,
            _ => false,
        };
        if same {
            let r = self.run.as_mut()?;
            r.hz_sum += tone.map(|t| t.hz).unwrap_or_default();
            r.frames += 1;
            r.ms += ms;
            if !r.reported && r.ms >= self.cfg.min_ms {
                r.reported = true;
                return Some(ToneEvent::Started(r.tone()));
            }
            return None;
        }
        let ended = self.run.take().filter(|r| r.reported).map(|r| r.tone());
        self.run = tone.map(|t| Run {
            start_ms: now_ms,
            first_hz: t.hz,
            hz_sum: t.hz,
            frames: 1,
            ms,
            reported: false,
        });
        if let Some(t) = ended {
            return Some(ToneEvent::Ended(t));
        }
        // A single frame already long enough (large frames).
        let r = self.run.as_mut()?;
        if r.ms >= self.cfg.min_ms {
            r.reported = true;
            return Some(ToneEvent::Started(r.tone()));
        }
        None
    }

    /// End of stream: the tone in progress, if one was reported.
    pub fn finish(&mut self) -> Option<Tone> {
        self.run.take().filter(|r| r.reported).map(|r| r.tone())
    }
}

/// Every tone of at least `min_ms` in a recording, with its full length, in
/// 20 ms frames.
pub fn tones(samples: &[f32], cfg: &ToneConfig) -> Vec<Tone> {
    let mut d = ToneDetector::new(cfg.clone());
    let frame = (cfg.sample_rate / 50).max(1) as usize;
    let mut out = Vec::new();
    let mut now = 0u64;
    for f in samples.chunks(frame) {
        if let Some(ToneEvent::Ended(t)) = d.push(f, now) {
            out.push(t);
        }
        now += f.len() as u64 * 1000 / cfg.sample_rate.max(1) as u64;
    }
    out.extend(d.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: &[f32], rate: u32, ms: u32, amp: f32) -> Vec<f32> {
        let n = (rate as u64 * ms as u64 / 1000) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                amp * hz
                    .iter()
                    .map(|f| (std::f32::consts::TAU * f * t).sin())
                    .sum::<f32>()
                    / hz.len() as f32
            })
            .collect()
    }

    fn silence(rate: u32, ms: u32) -> Vec<f32> {
        vec![0.0; (rate as u64 * ms as u64 / 1000) as usize]
    }

    #[test]
    fn a_beep_is_found_with_its_frequency_and_length() {
        for rate in [8000, 16000] {
            for hz in [400.0, 1000.0, 1400.0, 1900.0] {
                let cfg = ToneConfig::for_rate(rate);
                let mut s = silence(rate, 500);
                s.extend(sine(&[hz], rate, 400, 0.3));
                s.extend(silence(rate, 500));
                let found = tones(&s, &cfg);
                assert_eq!(found.len(), 1, "{hz} Hz at {rate}: {found:?}");
                let t = found[0];
                assert!((t.hz - hz).abs() < 5.0, "{t:?}");
                assert!((480..=520).contains(&t.start_ms), "{t:?}");
                assert!((360..=420).contains(&t.ms), "{t:?}");
            }
        }
    }

    #[test]
    fn the_start_is_reported_once_the_tone_has_lasted_150_ms() {
        let cfg = ToneConfig::default();
        let mut d = ToneDetector::new(cfg.clone());
        let mut s = silence(16000, 200);
        s.extend(sine(&[1000.0], 16000, 600, 0.2));
        let mut started = Vec::new();
        for (i, f) in s.chunks(320).enumerate() {
            if let Some(ToneEvent::Started(t)) = d.push(f, i as u64 * 20) {
                started.push((i as u64 * 20 + 20, t));
            }
        }
        assert_eq!(started.len(), 1);
        let (at, t) = started[0];
        assert_eq!(t.start_ms, 200);
        assert_eq!(at, 200 + 160);
    }

    #[test]
    fn short_blips_dual_tones_noise_and_quiet_tones_are_not_beeps() {
        let cfg = ToneConfig::default();
        // 100 ms: a click of a tone, not a beep.
        assert!(tones(&sine(&[1000.0], 16000, 100, 0.3), &cfg).is_empty());
        // Dial tone (350+440) and busy tone (480+620): two tones beating.
        assert!(tones(&sine(&[350.0, 440.0], 16000, 2000, 0.3), &cfg).is_empty());
        assert!(tones(&sine(&[480.0, 620.0], 16000, 2000, 0.3), &cfg).is_empty());
        // Far below the line's level.
        assert!(tones(&sine(&[1000.0], 16000, 500, 0.001), &cfg).is_empty());
        // Out of band.
        assert!(tones(&sine(&[3000.0], 16000, 500, 0.3), &cfg).is_empty());
        // Noise.
        let mut x = 1u32;
        let noise: Vec<f32> = (0..16000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as f32 / 32768.0 - 1.0
            })
            .collect();
        assert!(tones(&noise, &cfg).is_empty());
    }

    #[test]
    fn a_pulsed_voice_like_sound_is_not_a_tone() {
        // Harmonics of 150 Hz under a formant: a crude vowel.
        let rate = 16000;
        let s: Vec<f32> = (0..rate)
            .map(|i| {
                let t = i as f32 / rate as f32;
                (2..=8)
                    .map(|k| {
                        let f = 150.0 * k as f32;
                        let gain = 1.0 / (1.0 + ((f - 600.0) / 200.0).powi(2));
                        0.1 * gain * (std::f32::consts::TAU * f * t).sin()
                    })
                    .sum::<f32>()
            })
            .collect();
        assert!(tones(&s, &ToneConfig::default()).is_empty());
    }
}
