//! Audio files whose headers lie: each must come back as a clean error naming
//! the file and the field, without allocating what the header claims.
//!
//! The allocator below refuses any single allocation over 256 MB, so a reader
//! that trusts a header aborts this test binary instead of passing by luck on a
//! machine with enough memory to overcommit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use voicecare_media::{Audio, MediaError, RawFormat, load, resample};

struct Capped;

const MAX_ALLOCATION: usize = 256 << 20;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// A PCM WAV file: a 16-byte fmt chunk, then a data chunk whose size field is
/// `declared` whatever `data` really holds.
fn wav(channels: u16, rate: u32, bits: u16, declared: u32, data: &[u8]) -> Vec<u8> {
    let block_align = channels as u32 * bits as u32 / 8;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * block_align).to_le_bytes());
    b.extend_from_slice(&(block_align as u16).to_le_bytes());
    b.extend_from_slice(&bits.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&declared.to_le_bytes());
    b.extend_from_slice(data);
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Load `path`, expecting an error that comes back quickly.
fn refused(path: &Path, raw: Option<(RawFormat, u32)>) -> String {
    let t = Instant::now();
    let r = load(path, raw);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{} took {:?}",
        path.display(),
        t.elapsed()
    );
    match r {
        Ok(a) => panic!(
            "{} loaded: {} samples at {} Hz",
            path.display(),
            a.samples.len(),
            a.rate
        ),
        Err(e) => e.to_string(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../audio-fixtures")
        .join(name)
}

#[test]
fn a_wav_declaring_4_gb_of_samples_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [8u16, 16, 32] {
        let p = write(
            dir.path(),
            "prompt.wav",
            &wav(1, 8000, bits, 0xFFFF_FF00, &[0u8; 2048]),
        );
        let e = refused(&p, None);
        assert!(
            e.contains("prompt.wav")
                && e.contains("declares 4294967040 bytes of samples")
                && e.contains("2048"),
            "{e}"
        );
    }
    // The same lie in a stereo file.
    let p = write(
        dir.path(),
        "stereo.wav",
        &wav(2, 16000, 16, 0xFFFF_FFF0, &[0u8; 4000]),
    );
    let e = refused(&p, None);
    assert!(e.contains("stereo.wav") && e.contains("4294967280"), "{e}");
}

#[test]
fn sample_rates_outside_4_to_192_khz_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Two million 8-bit samples at 1 Hz: 2 MB on disk, 32 billion samples at 16 kHz.
    let data = vec![128u8; 2_000_000];
    let p = write(
        dir.path(),
        "slow.wav",
        &wav(1, 1, 8, data.len() as u32, &data),
    );
    let e = refused(&p, None);
    assert!(
        e.contains("slow.wav") && e.contains("sample rate 1 Hz"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "fast.wav",
        &wav(1, 1_000_000, 16, 2048, &[0u8; 2048]),
    );
    let e = refused(&p, None);
    assert!(
        e.contains("fast.wav") && e.contains("sample rate 1000000 Hz"),
        "{e}"
    );
    // Headerless audio with a rate given on the command line gets the same check.
    let p = write(dir.path(), "slow.ul", &data);
    let e = refused(&p, Some((RawFormat::Mulaw, 1)));
    assert!(
        e.contains("slow.ul") && e.contains("sample rate 1 Hz"),
        "{e}"
    );
    // The edges of the range are accepted.
    for rate in [4000, 192_000] {
        let p = write(
            dir.path(),
            "edge.wav",
            &wav(1, rate, 16, 2000, &[0u8; 2000]),
        );
        let a = load(&p, None).unwrap();
        assert_eq!((a.rate, a.samples.len()), (rate, 1000));
    }
}

#[test]
fn resampling_a_tiny_rate_is_an_error_not_an_explosion() {
    let audio = Audio {
        samples: vec![0.0; 2_000_000],
        rate: 1,
    };
    let t = Instant::now();
    let e = audio.to_rate(16000).unwrap_err();
    assert!(
        matches!(
            e,
            MediaError::BadRate {
                from_hz: 1,
                to_hz: 16000
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("4000"), "{e}");
    assert!(resample(&[0.0; 100], 16000, 3).is_err());
    assert!(voicecare_media::Resampler::new(1, 16000, 160).is_err());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn senseless_channel_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "many.wav",
        &wav(1000, 8000, 16, 4000, &[0u8; 4000]),
    );
    let e = refused(&p, None);
    assert!(e.contains("many.wav") && e.contains("1000 channels"), "{e}");
    let mut zero = wav(1, 8000, 16, 16, &[0u8; 16]);
    zero[22] = 0;
    let p = write(dir.path(), "none.wav", &zero);
    let e = refused(&p, None);
    assert!(e.contains("none.wav") && e.contains("channels"), "{e}");
}

#[test]
fn more_than_an_hour_of_audio_is_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    // An hour and a second of 8-bit audio at 4 kHz: every byte is really there.
    let data = vec![128u8; 4000 * 3601];
    let p = write(
        dir.path(),
        "long.wav",
        &wav(1, 4000, 8, data.len() as u32, &data),
    );
    let e = refused(&p, None);
    assert!(
        e.contains("long.wav") && e.contains("3601 s") && e.contains("one hour"),
        "{e}"
    );
    let p = write(dir.path(), "long.al", &data);
    let e = refused(&p, Some((RawFormat::Alaw, 4000)));
    assert!(e.contains("long.al") && e.contains("one hour"), "{e}");
    // Exactly an hour is fine.
    let p = write(dir.path(), "hour.ul", &data[..4000 * 3600]);
    let a = load(&p, Some((RawFormat::Mulaw, 4000))).unwrap();
    assert_eq!(a.duration_s(), 3600.0);
}

#[test]
fn a_truncated_wav_is_an_error_naming_the_size_field() {
    let dir = tempfile::tempdir().unwrap();
    let whole = wav(1, 8000, 16, 16000, &[0u8; 16000]);
    let p = write(dir.path(), "cut.wav", &whole[..8044]);
    let e = refused(&p, None);
    assert!(
        e.contains("cut.wav")
            && e.contains("truncated")
            && e.contains("16000 bytes of samples")
            && e.contains("8000"),
        "{e}"
    );
    // Cut inside the header.
    let p = write(dir.path(), "head.wav", &whole[..30]);
    let e = refused(&p, None);
    assert!(e.contains("head.wav") && e.contains("header"), "{e}");
}

/// Patch a FLAC file's STREAMINFO block (the first metadata block, right after
/// the 4-byte signature and a 4-byte block header).
fn patched_flac(f: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture("real/librivox_0880.flac")).unwrap();
    assert_eq!(&bytes[..4], b"fLaC");
    assert_eq!(bytes[4] & 0x7f, 0, "STREAMINFO comes first");
    f(&mut bytes[8..8 + 34]);
    bytes
}

#[test]
fn flac_stream_info_is_checked_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // Sample rate: the 20 bits starting at byte 10 of STREAMINFO.
    let p = write(
        dir.path(),
        "slow.flac",
        &patched_flac(|si| {
            si[10] = 0;
            si[11] = 0;
            si[12] = (si[12] & 0x0f) | 0x10;
        }),
    );
    let e = refused(&p, None);
    assert!(
        e.contains("slow.flac") && e.contains("sample rate 1 Hz"),
        "{e}"
    );
    // Total samples: the low 36 bits of bytes 13..18, here all ones (19 days at 16 kHz).
    let p = write(
        dir.path(),
        "endless.flac",
        &patched_flac(|si| {
            si[13] |= 0x0f;
            si[14..18].fill(0xff);
        }),
    );
    let e = refused(&p, None);
    assert!(
        e.contains("endless.flac") && e.contains("68719476735 samples") && e.contains("one hour"),
        "{e}"
    );
}

#[test]
fn a_truncated_flac_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("real/librivox_0880.flac")).unwrap();
    for cut in [10, 42, 100, bytes.len() / 3, bytes.len() - 1] {
        let p = write(dir.path(), "cut.flac", &bytes[..cut]);
        let e = refused(&p, None);
        assert!(e.contains("cut.flac"), "cut at {cut}: {e}");
    }
    let whole = write(dir.path(), "whole.flac", &bytes);
    assert!(load(&whole, None).unwrap().duration_s() > 1.0);
}
