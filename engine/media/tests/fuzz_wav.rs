//! Fuzz target: audio files (WAV, FLAC, headerless G.711 and PCM), as
//! `voicecare transcribe` and a flow's recorded prompts load them, then
//! resampled to 16 kHz as recognition does. See docs/fuzzing.md.
//!
//! Asserts: no panic; a bad file is an error naming the file; what a header
//! declares never makes the reader allocate more than the file justifies:
//! - WAV: at most one decoded sample per byte of the file, and at most
//!   `WAV_BYTES_PER_INPUT_BYTE` × the file's length + `SLACK` held at once;
//! - headerless: one sample per byte (G.711) or per two bytes (16-bit), at
//!   most `RAW_BYTES_PER_INPUT_BYTE` × the length + `SLACK` held;
//! - FLAC (compressed, so its length bounds nothing): at most one hour at the
//!   declared rate, and never more held than 8 bytes per sample returned
//!   plus `SLACK`, or, for a file refused part-way,
//!   `FLAC_BYTES_PER_INPUT_BYTE` × its length plus `SLACK`;
//! - resampling to 16 kHz: at most 4 output samples per input sample (rates
//!   start at 4 kHz) plus one block, and `RESAMPLE_BYTES_PER_SAMPLE` × the
//!   input samples plus `SLACK` held.

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use std::path::Path;

use voicecare_media::{MAX_SECONDS, MediaError, RawFormat, load};

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

/// Fixed costs whatever the input: read buffers, the resampler's filters.
const SLACK: usize = 2 << 20;
const WAV_BYTES_PER_INPUT_BYTE: usize = 6;
const RAW_BYTES_PER_INPUT_BYTE: usize = 8;
/// A FLAC frame of a handful of bytes may code 65,535 samples of a constant.
const FLAC_BYTES_PER_INPUT_BYTE: usize = 8 * 65_536;
const RESAMPLE_BYTES_PER_SAMPLE: usize = 48;

const TOKENS: &[&[u8]] = &[
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"WAVE",
    b"fmt ",
    b"data",
    b"fact",
    b"LIST",
    b"fLaC",
    b"\x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0",
    b"\x28\0\0\0\xfe\xff",
    b"\x03\0",
    b"\xff\xf8",
];

fn check_load(path: &Path, input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let flac = input.starts_with(b"fLaC");
    let (loaded, peak) = fuzz::measure(|| load(path, None));
    match loaded {
        Ok(audio) => {
            let n = audio.samples.len();
            if flac {
                if n as u64 > MAX_SECONDS * audio.rate as u64 {
                    return Err(fuzz::fail(format!("{n} samples at {} Hz", audio.rate)));
                }
                if peak > 8 * n + SLACK {
                    return Err(fuzz::fail(format!(
                        "FLAC: {peak} bytes held for {n} samples"
                    )));
                }
            } else {
                if n > input.len() {
                    return Err(fuzz::fail(format!(
                        "WAV: {n} samples from {} bytes",
                        input.len()
                    )));
                }
                if peak > WAV_BYTES_PER_INPUT_BYTE * input.len() + SLACK {
                    return Err(fuzz::fail(format!(
                        "WAV: {peak} bytes held for a {}-byte file",
                        input.len()
                    )));
                }
            }
            check_resample(&audio.samples, audio.rate)?;
        }
        Err(e) => {
            check_error(&e, path)?;
            let per_byte = if flac {
                FLAC_BYTES_PER_INPUT_BYTE
            } else {
                WAV_BYTES_PER_INPUT_BYTE
            };
            if peak > per_byte * input.len() + SLACK {
                return Err(fuzz::fail(format!(
                    "refusing a {}-byte file held {peak} bytes: {e}",
                    input.len()
                )));
            }
        }
    }
    Ok(())
}

fn check_raw(path: &Path, input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    // The rate a user may type, edge values included.
    let rate = match input.first().copied().unwrap_or(0) % 4 {
        0 => 8000,
        1 => 1,
        2 => 192_000,
        _ => u32::MAX,
    };
    for format in [RawFormat::Mulaw, RawFormat::Alaw, RawFormat::S16le] {
        let (loaded, peak) = fuzz::measure(|| voicecare_media::load(path, Some((format, rate))));
        match loaded {
            Ok(audio) => {
                let most = match format {
                    RawFormat::S16le => input.len() / 2,
                    _ => input.len(),
                };
                if audio.samples.len() > most {
                    return Err(fuzz::fail(format!(
                        "{format:?}: {} samples from {} bytes",
                        audio.samples.len(),
                        input.len()
                    )));
                }
            }
            Err(e) => check_error(&e, path)?,
        }
        if peak > RAW_BYTES_PER_INPUT_BYTE * input.len() + SLACK {
            return Err(fuzz::fail(format!(
                "{format:?}: {peak} bytes held for a {}-byte file",
                input.len()
            )));
        }
    }
    Ok(())
}

fn check_resample(samples: &[f32], rate: u32) -> Result<(), proptest::test_runner::TestCaseError> {
    let (out, peak) = fuzz::measure(|| voicecare_media::resample(samples, rate, 16_000));
    let out = out.map_err(|e| fuzz::fail(format!("resampling {rate} Hz: {e}")))?;
    let most = samples.len() * 4 + 1024;
    if out.len() > most {
        return Err(fuzz::fail(format!(
            "{} samples at {rate} Hz became {}",
            samples.len(),
            out.len()
        )));
    }
    if peak > RESAMPLE_BYTES_PER_SAMPLE * samples.len() + SLACK {
        return Err(fuzz::fail(format!(
            "resampling {} samples at {rate} Hz held {peak} bytes",
            samples.len()
        )));
    }
    Ok(())
}

fn check_error(e: &MediaError, path: &Path) -> Result<(), proptest::test_runner::TestCaseError> {
    let shown = e.to_string();
    if !shown.contains(&path.display().to_string()) {
        return Err(fuzz::fail(format!(
            "the error does not name the file: {shown}"
        )));
    }
    Ok(())
}

#[test]
fn audio_files_never_panic_nor_allocate_what_their_headers_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.audio");
    fuzz::run("wav", TOKENS, |input| {
        std::fs::write(&path, input).unwrap();
        check_load(&path, input)?;
        check_raw(&path, input)
    });
}
