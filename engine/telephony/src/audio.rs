//! PCM at the leg boundary: 16 kHz mono i16 in 20 ms frames, whatever the codec.
//!
//! 16 kHz is what speech recognition wants and what Opus handles natively; PCMU
//! (8 kHz) is converted with the half-band filters below.

/// Sample rate of every PCM frame a leg delivers or accepts.
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 320;
/// Packet interval.
pub const FRAME_MS: u64 = 20;

/// Odd-length windowed-sinc low-pass at a quarter of the high rate (4 kHz at
/// 16 kHz): the anti-alias / anti-image filter for 2:1 rate changes.
fn halfband_taps() -> Vec<f32> {
    const N: usize = 31;
    let mid = (N / 2) as f32;
    let mut taps: Vec<f32> = (0..N)
        .map(|i| {
            let x = i as f32 - mid;
            let sinc = if x == 0.0 {
                0.5
            } else {
                (std::f32::consts::PI * 0.5 * x).sin() / (std::f32::consts::PI * x)
            };
            // Blackman window.
            let w = 0.42 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (N - 1) as f32).cos()
                + 0.08 * (4.0 * std::f32::consts::PI * i as f32 / (N - 1) as f32).cos();
            sinc * w
        })
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
}

/// Streaming FIR keeping its history between frames so frame edges are seamless.
#[derive(Debug, Clone)]
struct Fir {
    taps: Vec<f32>,
    hist: Vec<f32>,
}

impl Fir {
    fn new() -> Self {
        let taps = halfband_taps();
        let hist = vec![0.0; taps.len()];
        Self { taps, hist }
    }

    fn push(&mut self, x: f32) -> f32 {
        self.hist.rotate_right(1);
        self.hist[0] = x;
        self.hist.iter().zip(&self.taps).map(|(h, t)| h * t).sum()
    }
}

fn clamp16(x: f32) -> i16 {
    x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// 8 kHz → 16 kHz.
#[derive(Debug, Clone)]
pub struct Upsampler2x(Fir);

impl Default for Upsampler2x {
    fn default() -> Self {
        Self(Fir::new())
    }
}

impl Upsampler2x {
    pub fn process(&mut self, input: &[i16]) -> Vec<i16> {
        let mut out = Vec::with_capacity(input.len() * 2);
        for &s in input {
            // Zero-stuffing halves the level; the factor 2 restores it.
            out.push(clamp16(2.0 * self.0.push(s as f32)));
            out.push(clamp16(2.0 * self.0.push(0.0)));
        }
        out
    }
}

/// 16 kHz → 8 kHz.
#[derive(Debug, Clone)]
pub struct Downsampler2x {
    fir: Fir,
    odd: bool,
}

impl Default for Downsampler2x {
    fn default() -> Self {
        Self {
            fir: Fir::new(),
            odd: false,
        }
    }
}

impl Downsampler2x {
    pub fn process(&mut self, input: &[i16]) -> Vec<i16> {
        let mut out = Vec::with_capacity(input.len() / 2 + 1);
        for &s in input {
            let y = self.fir.push(s as f32);
            if !self.odd {
                out.push(clamp16(y));
            }
            self.odd = !self.odd;
        }
        out
    }
}

/// Relative power of `freq` in `samples` (Goertzel), normalised so a
/// full-band signal made only of that tone gives about 1.0.
pub fn tone_power_ratio(samples: &[i16], sample_rate: u32, freq: f32) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f32::consts::PI * freq / sample_rate as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    let mut energy = 0.0f32;
    for &x in samples {
        let x = x as f32 / 32768.0;
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy <= f32::EPSILON {
        return 0.0;
    }
    // A pure tone of N samples has Goertzel power ≈ (N/2)·energy.
    power / (energy * samples.len() as f32 / 2.0)
}

/// Root-mean-square level of a frame, in sample units.
pub fn rms(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// A sine tone at [`SAMPLE_RATE`], handy for prompts in tests and demos.
pub fn sine(freq: f32, amplitude: i16, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            (amplitude as f32 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_a_tone_and_its_level() {
        let tone = sine(440.0, 8000, 3200);
        let mut down = Downsampler2x::default();
        let mut up = Upsampler2x::default();
        let narrow: Vec<i16> = tone.chunks(320).flat_map(|c| down.process(c)).collect();
        assert_eq!(narrow.len(), 1600);
        let wide: Vec<i16> = narrow.chunks(160).flat_map(|c| up.process(c)).collect();
        assert_eq!(wide.len(), 3200);
        let tail = &wide[640..];
        assert!(tone_power_ratio(tail, SAMPLE_RATE, 440.0) > 0.9);
        let level = rms(tail) / rms(&tone[640..]);
        assert!((0.9..1.1).contains(&level), "level ratio {level}");
    }

    #[test]
    fn downsampling_rejects_what_8khz_cannot_carry() {
        // 6 kHz would alias to 2 kHz without the filter.
        let tone = sine(6000.0, 8000, 3200);
        let narrow = Downsampler2x::default().process(&tone);
        assert!(rms(&narrow[100..]) < 0.05 * rms(&tone));
    }

    #[test]
    fn goertzel_tells_tones_apart() {
        let tone = sine(1000.0, 8000, 1600);
        assert!(tone_power_ratio(&tone, SAMPLE_RATE, 1000.0) > 0.95);
        assert!(tone_power_ratio(&tone, SAMPLE_RATE, 440.0) < 0.05);
        assert_eq!(tone_power_ratio(&[0; 100], SAMPLE_RATE, 1000.0), 0.0);
    }
}
