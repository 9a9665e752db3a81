//! Reading and writing audio files: WAV (any rate, mono or multi-channel,
//! 8/16/24/32-bit integer or 32-bit float), FLAC, and headerless G.711 μ-law,
//! A-law or 16-bit PCM.
//!
//! Everything is returned as mono `f32` in [-1, 1] at the file's own rate; use
//! [`crate::resample`] (or [`Audio::to_rate`]) to get 16 kHz for recognition.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::{MediaError, g711, resample};

/// Mono audio at a known sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub rate: u32,
}

impl Audio {
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.rate as f64
    }

    /// This audio resampled to `rate` Hz.
    pub fn to_rate(&self, rate: u32) -> Result<Audio, MediaError> {
        Ok(Audio {
            samples: resample(&self.samples, self.rate, rate)?,
            rate,
        })
    }
}

/// Encodings of headerless audio files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// G.711 μ-law, one byte per sample (PCMU).
    Mulaw,
    /// G.711 A-law, one byte per sample (PCMA).
    Alaw,
    /// Signed 16-bit little-endian PCM.
    S16le,
}

impl std::str::FromStr for RawFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mulaw" | "ulaw" | "pcmu" => Ok(RawFormat::Mulaw),
            "alaw" | "pcma" => Ok(RawFormat::Alaw),
            "s16le" | "pcm16" => Ok(RawFormat::S16le),
            other => Err(format!(
                "unknown raw format {other:?} (expected mulaw, alaw or s16le)"
            )),
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> MediaError {
    MediaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, what: impl Into<String>) -> MediaError {
    MediaError::BadFile {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Load an audio file. WAV and FLAC are recognised by their headers; anything
/// else needs `raw = Some((format, rate))` and is read as headerless samples.
/// Multi-channel audio is mixed down to mono.
pub fn load(path: &Path, raw: Option<(RawFormat, u32)>) -> Result<Audio, MediaError> {
    let mut head = [0u8; 4];
    let n = {
        let mut f = File::open(path).map_err(|e| io_err(path, e))?;
        read_up_to(&mut f, &mut head).map_err(|e| io_err(path, e))?
    };
    if let Some((format, rate)) = raw {
        return load_raw(path, format, rate);
    }
    match &head[..n] {
        b"RIFF" | b"RIFX" | b"RF64" => read_wav(path),
        b"fLaC" => read_flac(path),
        _ if n == 0 => Err(bad(path, "the file is empty")),
        _ => Err(bad(
            path,
            "not a WAV or FLAC file (for headerless telephone audio give its format and rate, e.g. --format mulaw --rate 8000)",
        )),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Read a headerless file of G.711 or 16-bit PCM samples.
pub fn load_raw(path: &Path, format: RawFormat, rate: u32) -> Result<Audio, MediaError> {
    if rate == 0 {
        return Err(bad(path, "sample rate 0"));
    }
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let pcm: Vec<i16> = match format {
        RawFormat::Mulaw => g711::decode_ulaw(&bytes),
        RawFormat::Alaw => g711::decode_alaw(&bytes),
        RawFormat::S16le => {
            if bytes.len() % 2 != 0 {
                return Err(bad(
                    path,
                    format!(
                        "{} bytes is not a whole number of 16-bit samples",
                        bytes.len()
                    ),
                ));
            }
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        }
    };
    Ok(Audio {
        samples: pcm.iter().map(|&s| s as f32 / 32768.0).collect(),
        rate,
    })
}

/// Read a WAV file (PCM integer or IEEE float), mixing channels to mono.
pub fn read_wav(path: &Path) -> Result<Audio, MediaError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let reader = hound::WavReader::new(BufReader::new(file)).map_err(|e| wav_err(path, e))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad(
            path,
            "WAV header declares zero channels or a zero sample rate",
        ));
    }
    let declared = reader.len() as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => collect(path, declared, reader.into_samples::<f32>())?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            collect(
                path,
                declared,
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale)),
            )?
        }
    };
    Ok(Audio {
        samples: downmix(&interleaved, spec.channels as usize),
        rate: spec.sample_rate,
    })
}

fn collect(
    path: &Path,
    declared: usize,
    it: impl Iterator<Item = hound::Result<f32>>,
) -> Result<Vec<f32>, MediaError> {
    let mut out = Vec::with_capacity(declared);
    for s in it {
        match s {
            Ok(v) => out.push(v),
            Err(e) if is_eof(&e) => {
                return Err(bad(
                    path,
                    format!(
                        "truncated: the header declares {declared} samples but the data ends after {}",
                        out.len()
                    ),
                ));
            }
            Err(e) => return Err(wav_err(path, e)),
        }
    }
    if out.len() < declared {
        return Err(bad(
            path,
            format!(
                "truncated: the header declares {declared} samples but the data ends after {}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn is_eof(e: &hound::Error) -> bool {
    match e {
        hound::Error::IoError(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
                || io.to_string().contains("enough bytes")
        }
        hound::Error::FormatError(msg) => msg.contains("enough bytes"),
        _ => false,
    }
}

fn wav_err(path: &Path, e: hound::Error) -> MediaError {
    match e {
        e if is_eof(&e) => bad(path, "truncated WAV: the file ends inside its header"),
        hound::Error::IoError(io) => io_err(path, io),
        hound::Error::Unsupported => bad(
            path,
            "unsupported WAV encoding (only integer PCM and 32-bit float are read)",
        ),
        other => bad(path, format!("not a valid WAV file: {other}")),
    }
}

/// Read a FLAC file, mixing channels to mono.
pub fn read_flac(path: &Path) -> Result<Audio, MediaError> {
    let mut reader = claxon::FlacReader::open(path).map_err(|e| flac_err(path, e))?;
    let info = reader.streaminfo();
    if info.channels == 0 || info.sample_rate == 0 {
        return Err(bad(
            path,
            "FLAC stream info declares zero channels or a zero sample rate",
        ));
    }
    let scale = 1.0 / (1u64 << (info.bits_per_sample.clamp(1, 32) - 1)) as f32;
    let mut interleaved = Vec::new();
    for s in reader.samples() {
        interleaved.push(s.map_err(|e| flac_err(path, e))? as f32 * scale);
    }
    if let Some(total) = info.samples {
        let got = interleaved.len() as u64 / info.channels as u64;
        if got < total {
            return Err(bad(
                path,
                format!("truncated: FLAC declares {total} samples but the data ends after {got}"),
            ));
        }
    }
    Ok(Audio {
        samples: downmix(&interleaved, info.channels as usize),
        rate: info.sample_rate,
    })
}

fn flac_err(path: &Path, e: claxon::Error) -> MediaError {
    match e {
        claxon::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            bad(path, "truncated FLAC: the data ends early")
        }
        claxon::Error::IoError(io) => io_err(path, io),
        other => bad(path, format!("not a valid FLAC file: {other}")),
    }
}

fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels == 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Write mono audio as a 16-bit PCM WAV file.
pub fn write_wav(path: &Path, audio: &Audio) -> Result<(), MediaError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: audio.rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| wav_err(path, e))?;
    for &s in &audio.samples {
        w.write_sample(f32_to_i16(s))
            .map_err(|e| wav_err(path, e))?;
    }
    w.finalize().map_err(|e| wav_err(path, e))
}

/// Convert a float sample to 16-bit PCM with clipping.
pub fn f32_to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_spec(path: &Path, spec: hound::WavSpec, frames: &[Vec<f32>]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for frame in frames {
            for &s in frame {
                match spec.sample_format {
                    hound::SampleFormat::Float => w.write_sample(s).unwrap(),
                    hound::SampleFormat::Int => w.write_sample(f32_to_i16(s)).unwrap(),
                }
            }
        }
        w.finalize().unwrap();
    }

    #[test]
    fn stereo_float_wav_is_mixed_to_mono() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        write_spec(&p, spec, &[vec![0.5, 0.1], vec![-0.2, -0.4]]);
        let a = load(&p, None).unwrap();
        assert_eq!(a.rate, 44100);
        assert_eq!(a.samples.len(), 2);
        assert!((a.samples[0] - 0.3).abs() < 1e-6 && (a.samples[1] + 0.3).abs() < 1e-6);
    }

    #[test]
    fn wav_round_trips_16_bit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.wav");
        let audio = Audio {
            samples: vec![0.0, 0.25, -0.5, 0.999],
            rate: 8000,
        };
        write_wav(&p, &audio).unwrap();
        let back = load(&p, None).unwrap();
        assert_eq!(back.rate, 8000);
        for (a, b) in audio.samples.iter().zip(&back.samples) {
            assert!((a - b).abs() < 1.0 / 16000.0);
        }
    }

    #[test]
    fn truncated_wav_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.wav");
        write_wav(
            &p,
            &Audio {
                samples: vec![0.1; 8000],
                rate: 8000,
            },
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = load(&p, None).unwrap_err().to_string();
        assert!(
            err.contains("cut.wav") && err.contains("truncated"),
            "{err}"
        );
        std::fs::write(&p, &bytes[..20]).unwrap();
        let err = load(&p, None).unwrap_err().to_string();
        assert!(err.contains("cut.wav"), "{err}");
    }

    #[test]
    fn unknown_bytes_are_rejected_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"hello world").unwrap();
        let err = load(&p, None).unwrap_err().to_string();
        assert!(
            err.contains("x.bin") && err.contains("--format mulaw"),
            "{err}"
        );
        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            load(&empty, None)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn raw_mulaw_and_alaw_decode() {
        let dir = tempfile::tempdir().unwrap();
        let pcm: Vec<i16> = (0..800)
            .map(|i| ((i as f32 * 0.3).sin() * 12000.0) as i16)
            .collect();
        let u = dir.path().join("a.ul");
        std::fs::write(&u, g711::encode_ulaw(&pcm)).unwrap();
        let a = load(&u, Some((RawFormat::Mulaw, 8000))).unwrap();
        assert_eq!((a.rate, a.samples.len()), (8000, 800));
        let al = dir.path().join("a.al");
        std::fs::write(&al, g711::encode_alaw(&pcm)).unwrap();
        let b = load(&al, Some((RawFormat::Alaw, 8000))).unwrap();
        for ((x, y), p) in a.samples.iter().zip(&b.samples).zip(&pcm) {
            let p = *p as f32 / 32768.0;
            assert!((x - p).abs() < 0.02 && (y - p).abs() < 0.02);
        }
        let odd = dir.path().join("odd.raw");
        std::fs::write(&odd, [1u8, 2, 3]).unwrap();
        assert!(
            load(&odd, Some((RawFormat::S16le, 16000)))
                .unwrap_err()
                .to_string()
                .contains("odd.raw")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/nothing.wav"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/nothing.wav"), "{err}");
    }
}
