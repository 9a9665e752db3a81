//! The cpal path against ALSA's `file` plugin: capture reads a raw file,
//! playback writes one. No sound card needed; not paced in real time, so
//! this checks the plumbing and formats, not timing.

#![cfg(all(feature = "cpal", target_os = "linux"))]

use std::time::Duration;

use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::device::{AudioDevice, CpalDevice};

#[test]
fn cpal_captures_from_and_plays_to_an_alsa_file_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input: Vec<u8> = sine(440.0, 8000, SAMPLE_RATE as usize * 2)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    std::fs::write(d.join("in.raw"), input).unwrap();
    std::fs::write(
        d.join(".asoundrc"),
        format!(
            // Separate files per direction: a file PCM also copies what it captures.
            "pcm.!default {{ type asym; playback.pcm \"spk\"; capture.pcm \"mic\" }}\n\
             pcm.spk {{ type plug; slave.pcm {{ type file; slave.pcm \"null\"; \
             file \"{0}/out.raw\"; format \"raw\" }} }}\n\
             pcm.mic {{ type plug; slave.pcm {{ type file; slave.pcm \"null\"; \
             file \"{0}/mic-copy.raw\"; infile \"{0}/in.raw\"; format \"raw\" }} }}\n",
            d.display()
        ),
    )
    .unwrap();
    // ALSA reads ~/.asoundrc; this test binary has no other tests running.
    unsafe { std::env::set_var("HOME", d) };

    let mut streams = CpalDevice.open().expect("file-backed sound card opens");
    let tone = sine(1000.0, 8000, SAMPLE_RATE as usize / 2);
    streams.speaker.push(&tone);
    let mut heard = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while heard.len() < SAMPLE_RATE as usize / 2 && std::time::Instant::now() < deadline {
        match streams.mic.try_recv() {
            Ok(frame) => {
                assert_eq!(frame.len(), 320);
                heard.extend(frame);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(streams);

    assert!(
        heard.len() >= SAMPLE_RATE as usize / 2,
        "mic frames: {}",
        heard.len()
    );
    assert!(rms(&heard[320..]) > 3000.0, "the file's tone, not silence");
    assert!(tone_power_ratio(&heard[320..], SAMPLE_RATE, 440.0) > 0.9);

    let out = std::fs::read(d.join("out.raw")).unwrap();
    let played: Vec<i16> = out
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let loud: Vec<i16> = played
        .chunks(320)
        .filter(|f| rms(f) > 3000.0)
        .flatten()
        .copied()
        .collect();
    assert!(
        loud.len() >= 4000,
        "speaker wrote the tone: {} loud samples",
        loud.len()
    );
    assert!(tone_power_ratio(&loud, SAMPLE_RATE, 1000.0) > 0.8);
}
