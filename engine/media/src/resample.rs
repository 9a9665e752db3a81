//! Sample-rate conversion with a band-limited (FFT) resampler.
//!
//! Telephone audio arrives at 8 kHz, files at anything; whisper wants 16 kHz.
//! Both the one-shot [`resample`] and the streaming [`Resampler`] use rubato's
//! synchronous FFT resampler, which anti-aliases properly (unlike linear
//! interpolation, which folds everything above the new Nyquist back into the band).

use rubato::{FftFixedInOut, Resampler as _};

use crate::MediaError;
use crate::audio::{MAX_RATE, MIN_RATE};

/// Both rates must be real audio rates: resampling from 1 Hz to 16 kHz would
/// multiply the length by 16,000.
fn check_rates(from_hz: u32, to_hz: u32) -> Result<(), MediaError> {
    let ok = |r: u32| (MIN_RATE..=MAX_RATE).contains(&r);
    if ok(from_hz) && ok(to_hz) {
        Ok(())
    } else {
        Err(MediaError::BadRate { from_hz, to_hz })
    }
}

/// Resample a whole mono signal from `from_hz` to `to_hz`.
///
/// The output has `round(len * to_hz / from_hz)` samples and is time-aligned with
/// the input (the filter delay is removed). Equal rates return a copy. Rates
/// outside 4–192 kHz are an error.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, MediaError> {
    check_rates(from_hz, to_hz)?;
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let expected =
        ((samples.len() as u64 * to_hz as u64 + from_hz as u64 / 2) / from_hz as u64) as usize;
    let mut stream = Resampler::new(from_hz, to_hz, 1024)?;
    let delay = stream.delay();
    let mut out = Vec::with_capacity(expected + delay + 2048);
    stream.push(samples, &mut out);
    // Flush: feed silence until the delayed tail has come out.
    let zeros = vec![0.0f32; stream.chunk_in];
    while out.len() < expected + delay {
        stream.push(&zeros, &mut out);
    }
    out.drain(..delay);
    out.truncate(expected);
    Ok(out)
}

/// A streaming mono resampler for fixed-rate audio arriving in small frames
/// (e.g. 20 ms RTP packets). Output lags input by [`Resampler::delay`] samples.
pub struct Resampler {
    inner: FftFixedInOut<f32>,
    chunk_in: usize,
    pending: Vec<f32>,
    out_buf: Vec<Vec<f32>>,
    from_hz: u32,
    to_hz: u32,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("chunk_in", &self.chunk_in)
            .finish()
    }
}

impl Resampler {
    /// `chunk_hint` is the preferred number of input samples per internal block;
    /// use the frame size (160 for 20 ms at 8 kHz) for the lowest latency.
    pub fn new(from_hz: u32, to_hz: u32, chunk_hint: usize) -> Result<Self, MediaError> {
        check_rates(from_hz, to_hz)?;
        let inner =
            FftFixedInOut::<f32>::new(from_hz as usize, to_hz as usize, chunk_hint.max(1), 1)
                .map_err(|_| MediaError::BadRate { from_hz, to_hz })?;
        let chunk_in = inner.input_frames_next();
        let out_buf = inner.output_buffer_allocate(true);
        Ok(Self {
            inner,
            chunk_in,
            pending: Vec::new(),
            out_buf,
            from_hz,
            to_hz,
        })
    }

    /// Output samples by which the stream lags its input.
    pub fn delay(&self) -> usize {
        self.inner.output_delay()
    }

    /// Feed input samples; append every output sample that is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.pending.extend_from_slice(input);
        let mut start = 0;
        while self.pending.len() - start >= self.chunk_in {
            let block = [&self.pending[start..start + self.chunk_in]];
            // Buffers are sized by the resampler itself, so this cannot fail.
            if let Ok((_, n)) = self
                .inner
                .process_into_buffer(&block, &mut self.out_buf, None)
            {
                out.extend_from_slice(&self.out_buf[0][..n]);
            }
            start += self.chunk_in;
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn upsampling_keeps_length_phase_and_level() {
        let x = sine(440.0, 8000, 1.0);
        let y = resample(&x, 8000, 16000).unwrap();
        assert_eq!(y.len(), 16000);
        let reference = sine(440.0, 16000, 1.0);
        // Away from the edges the output matches an ideal 16 kHz sine closely.
        let err: f32 = y[2000..14000]
            .iter()
            .zip(&reference[2000..14000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.02, "max error {err}");
    }

    #[test]
    fn downsampling_removes_content_above_new_nyquist() {
        // 7 kHz is above the 4 kHz Nyquist of 8 kHz audio: it must vanish, not alias to 1 kHz.
        let x = sine(7000.0, 44100, 0.5);
        let y = resample(&x, 44100, 8000).unwrap();
        assert_eq!(y.len(), 4000);
        assert!(
            rms(&y[500..3500]) < 0.01,
            "aliasing: rms {}",
            rms(&y[500..3500])
        );
        let pass = resample(&sine(1000.0, 44100, 0.5), 44100, 8000).unwrap();
        assert!((rms(&pass[500..3500]) - 0.3535).abs() < 0.02);
    }

    #[test]
    fn streaming_matches_one_shot_after_delay() {
        let x = sine(300.0, 8000, 0.5);
        let mut r = Resampler::new(8000, 16000, 160).unwrap();
        let mut out = Vec::new();
        for frame in x.chunks(160) {
            r.push(frame, &mut out);
        }
        let d = r.delay();
        let whole = resample(&x, 8000, 16000).unwrap();
        let n = out.len() - d;
        assert!(n > 7000);
        for i in 100..n - 100 {
            assert!((out[i + d] - whole[i]).abs() < 1e-3, "sample {i}");
        }
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(matches!(
            resample(&[0.0], 0, 16000),
            Err(MediaError::BadRate { .. })
        ));
    }
}
