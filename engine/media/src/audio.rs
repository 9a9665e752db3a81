//! Reading and writing audio files: WAV (4–192 kHz, mono or multi-channel,
//! 8/16/24/32-bit integer or 32-bit float), FLAC, and headerless G.711 μ-law,
//! A-law or 16-bit PCM.
//!
//! Everything is returned as mono `f32` in [-1, 1] at the file's own rate; use
//! [`crate::resample`] (or [`Audio::to_rate`]) to get 16 kHz for recognition.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
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

/// Lowest sample rate accepted from a file: below it there is no speech to
/// hear, and a tiny rate would make resampling to 16 kHz expand a small file
/// into billions of samples.
pub const MIN_RATE: u32 = 4_000;
/// Highest sample rate accepted from a file.
pub const MAX_RATE: u32 = 192_000;
/// Most channels a file may have; more is not a recording of a voice.
pub const MAX_CHANNELS: u32 = 32;
/// Longest audio a file may hold. Headers are untrusted: this bounds what a
/// small file may expand to in memory (a prompt, a recording to transcribe).
pub const MAX_SECONDS: u64 = 3600;

fn check_rate(path: &Path, source: &str, rate: u32) -> Result<(), MediaError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        return Ok(());
    }
    Err(bad(
        path,
        format!("{source} sample rate {rate} Hz; only {MIN_RATE}–{MAX_RATE} Hz is read"),
    ))
}

fn check_channels(path: &Path, source: &str, channels: u32) -> Result<(), MediaError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        return Ok(());
    }
    Err(bad(
        path,
        format!("{source} declares {channels} channels (1 to {MAX_CHANNELS} are read)"),
    ))
}

fn check_duration(path: &Path, source: &str, frames: u64, rate: u32) -> Result<(), MediaError> {
    if frames <= MAX_SECONDS * rate as u64 {
        return Ok(());
    }
    Err(bad(
        path,
        format!(
            "{source} {frames} samples at {rate} Hz ({} s); a file may hold at most one hour ({MAX_SECONDS} s)",
            frames.div_ceil(rate as u64)
        ),
    ))
}

/// Load an audio file. WAV and FLAC are recognised by their headers; anything
/// else needs `raw = Some((format, rate))` and is read as headerless samples.
/// Multi-channel audio is mixed down to mono.
///
/// Every size a header declares is checked against the file before anything
/// is allocated for it; rates outside [`MIN_RATE`]–[`MAX_RATE`], more than
/// [`MAX_CHANNELS`] channels and more than [`MAX_SECONDS`] of audio are errors.
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
    check_rate(path, "headerless audio at", rate)?;
    let len = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    let width = match format {
        RawFormat::Mulaw | RawFormat::Alaw => 1,
        RawFormat::S16le => 2,
    };
    check_duration(path, "the file holds", len / width, rate)?;
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let samples = match format {
        RawFormat::Mulaw => g711::decode_ulaw(&bytes)
            .iter()
            .map(|&s| s as f32 / 32768.0)
            .collect(),
        RawFormat::Alaw => g711::decode_alaw(&bytes)
            .iter()
            .map(|&s| s as f32 / 32768.0)
            .collect(),
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
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                .collect()
        }
    };
    Ok(Audio { samples, rate })
}

/// Read a WAV file (PCM integer or IEEE float), mixing channels to mono.
pub fn read_wav(path: &Path) -> Result<Audio, MediaError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut input = BufReader::new(file);
    // Parse the header once to learn where the samples start, check what it
    // declares against the file, then parse it again to read the samples.
    let spec = hound::WavReader::new(&mut input)
        .map_err(|e| wav_err(path, e))?
        .spec();
    let data_start = input.stream_position().map_err(|e| io_err(path, e))?;
    // hound leaves the reader on the first sample, right after the data
    // chunk's 4-byte size field.
    input
        .seek(SeekFrom::Start(data_start - 4))
        .map_err(|e| io_err(path, e))?;
    let mut size = [0u8; 4];
    input.read_exact(&mut size).map_err(|e| io_err(path, e))?;
    let declared = u32::from_le_bytes(size) as u64;
    let available = file_len.saturating_sub(data_start);
    if declared > available {
        return Err(bad(
            path,
            format!(
                "WAV header declares {declared} bytes of samples but the file has {available} (truncated or corrupt)"
            ),
        ));
    }
    check_channels(path, "WAV header", spec.channels as u32)?;
    check_rate(path, "WAV header declares", spec.sample_rate)?;
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_err(path, e))?;
    let reader = hound::WavReader::new(input).map_err(|e| wav_err(path, e))?;
    let channels = spec.channels as usize;
    let frames = reader.len() as usize / channels;
    check_duration(path, "WAV header declares", frames as u64, spec.sample_rate)?;
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => mix(path, frames, channels, reader.into_samples::<f32>())?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            mix(
                path,
                frames,
                channels,
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale)),
            )?
        }
    };
    Ok(Audio {
        samples,
        rate: spec.sample_rate,
    })
}

/// Mix interleaved samples to mono as they are read, so a multi-channel file
/// never holds more than its mono length in memory. `frames` has been checked
/// against the file's length.
fn mix(
    path: &Path,
    frames: usize,
    channels: usize,
    it: impl Iterator<Item = hound::Result<f32>>,
) -> Result<Vec<f32>, MediaError> {
    let mut out = Vec::with_capacity(frames);
    let (mut sum, mut k) = (0.0f32, 0);
    for s in it {
        match s {
            Ok(v) => {
                sum += v;
                k += 1;
                if k == channels {
                    out.push(sum / channels as f32);
                    (sum, k) = (0.0, 0);
                }
            }
            Err(e) if is_eof(&e) => break,
            Err(e) => return Err(wav_err(path, e)),
        }
    }
    if out.len() < frames {
        return Err(bad(
            path,
            format!(
                "truncated: the header declares {frames} samples but the data ends after {}",
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
    check_channels(path, "FLAC stream info", info.channels)?;
    check_rate(path, "FLAC stream info declares", info.sample_rate)?;
    if let Some(total) = info.samples {
        check_duration(path, "FLAC stream info declares", total, info.sample_rate)?;
    }
    // FLAC compresses, so the declared length cannot be checked against the
    // file's; the output only grows as frames decode, up to the hour.
    let limit = (MAX_SECONDS * info.sample_rate as u64) as usize;
    let scale = 1.0 / (1u64 << (info.bits_per_sample.clamp(1, 32) - 1)) as f32;
    let mut samples = Vec::new();
    let mut blocks = reader.blocks();
    let mut buffer = Vec::new();
    while let Some(block) = blocks
        .read_next_or_eof(buffer)
        .map_err(|e| flac_err(path, e))?
    {
        if block.channels() != info.channels {
            return Err(bad(
                path,
                format!(
                    "a FLAC frame has {} channels but the stream info declares {}",
                    block.channels(),
                    info.channels
                ),
            ));
        }
        if samples.len() + block.duration() as usize > limit {
            return Err(bad(
                path,
                format!("FLAC data runs past one hour ({MAX_SECONDS} s), the limit for a file"),
            ));
        }
        for i in 0..block.duration() {
            let sum: f32 = (0..info.channels)
                .map(|ch| block.sample(ch, i) as f32 * scale)
                .sum();
            samples.push(sum / info.channels as f32);
        }
        buffer = block.into_buffer();
    }
    if let Some(total) = info.samples {
        let got = samples.len() as u64;
        if got < total {
            return Err(bad(
                path,
                format!("truncated: FLAC declares {total} samples but the data ends after {got}"),
            ));
        }
    }
    Ok(Audio {
        samples,
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
