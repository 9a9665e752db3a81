//! Keypad tones heard in the audio itself (in-band DTMF), for far ends that
//! agreed no RFC 4733 telephone-event: old PBXs, analogue gateways, some
//! carriers. The eight DTMF frequencies are measured in every 20 ms frame
//! (Goertzel); a key is one row and one column tone together carrying most
//! of the frame's energy, held for two frames (40 ms, the ITU-T Q.24
//! minimum), and it is reported once, when it starts.

use crate::audio::{rms, tone_power_ratio};

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Quieter frames are not keys (about -45 dBFS).
const MIN_RMS: f32 = 180.0;
/// The row and column tone together: at least this share of the energy.
const MIN_PAIR_SHARE: f32 = 0.75;
/// Each of the two tones: at least this share (twist of about 8 dB).
const MIN_TONE_SHARE: f32 = 0.12;
/// The second-strongest row (or column) must be this much weaker.
const MAX_RIVAL_RATIO: f32 = 0.25;
/// Frames a key must last before it counts.
const HOLD_FRAMES: u8 = 2;

#[derive(Debug, Default)]
pub struct InbandDtmf {
    /// The key heard in the last frame, and for how many frames in a row.
    current: Option<(char, u8)>,
    /// The key already reported, until a frame without it.
    reported: Option<char>,
}

impl InbandDtmf {
    /// Feed one frame; returns a key when one has just been pressed.
    pub fn push(&mut self, frame: &[i16], sample_rate: u32) -> Option<char> {
        let key = key_in(frame, sample_rate);
        self.current = match (key, self.current) {
            (Some(k), Some((c, n))) if k == c => Some((k, n.saturating_add(1))),
            (Some(k), _) => Some((k, 1)),
            (None, _) => None,
        };
        match self.current {
            Some((k, n)) if n >= HOLD_FRAMES && self.reported != Some(k) => {
                self.reported = Some(k);
                Some(k)
            }
            Some(_) => None,
            None => {
                self.reported = None;
                None
            }
        }
    }
}

/// The key a single frame holds, if it is a clean pair of DTMF tones.
fn key_in(frame: &[i16], sample_rate: u32) -> Option<char> {
    if rms(frame) < MIN_RMS {
        return None;
    }
    let strongest = |freqs: &[f32; 4]| {
        let mut p: Vec<(usize, f32)> = freqs
            .iter()
            .map(|&f| tone_power_ratio(frame, sample_rate, f))
            .enumerate()
            .collect();
        p.sort_by(|a, b| b.1.total_cmp(&a.1));
        (p[0], p[1].1)
    };
    let ((row, r), row_rival) = strongest(&ROWS);
    let ((col, c), col_rival) = strongest(&COLS);
    let clean = r >= MIN_TONE_SHARE
        && c >= MIN_TONE_SHARE
        && r + c >= MIN_PAIR_SHARE
        && row_rival <= r * MAX_RIVAL_RATIO
        && col_rival <= c * MAX_RIVAL_RATIO;
    clean.then(|| KEYS[row][col])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{FRAME_SAMPLES, SAMPLE_RATE, Upsampler2x};

    /// A key pressed for `ms` then `gap` ms of quiet, at 16 kHz.
    fn press(key: char, ms: usize, gap: usize, level: f32) -> Vec<i16> {
        let (r, c) = (0..16)
            .map(|i| (i / 4, i % 4))
            .find(|&(r, c)| KEYS[r][c] == key)
            .unwrap();
        let n = SAMPLE_RATE as usize * ms / 1000;
        let mut out: Vec<i16> = (0..n)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                let w = |f: f32| (2.0 * std::f32::consts::PI * f * t).sin();
                (level * (w(ROWS[r]) + 0.8 * w(COLS[c]))) as i16
            })
            .collect();
        out.extend(std::iter::repeat_n(0, SAMPLE_RATE as usize * gap / 1000));
        out
    }

    fn keys_in(pcm: &[i16]) -> String {
        let mut d = InbandDtmf::default();
        pcm.chunks_exact(FRAME_SAMPLES)
            .filter_map(|f| d.push(f, SAMPLE_RATE))
            .collect()
    }

    #[test]
    fn every_key_is_heard_once_per_press() {
        let keys = "0123456789*#ABCD";
        let pcm: Vec<i16> = keys
            .chars()
            .flat_map(|k| press(k, 100, 60, 6000.0))
            .collect();
        assert_eq!(keys_in(&pcm), keys);
        // The same key twice, with a gap, is two presses.
        let twice: Vec<i16> = [press('5', 80, 60, 6000.0), press('5', 80, 60, 6000.0)].concat();
        assert_eq!(keys_in(&twice), "55");
    }

    #[test]
    fn quiet_and_short_tones_are_not_keys() {
        assert_eq!(keys_in(&press('1', 100, 0, 100.0)), "", "too quiet");
        assert_eq!(
            keys_in(&press('1', 20, 60, 6000.0)),
            "",
            "one frame is a click"
        );
    }

    /// No key in speech, music, noise or call-progress tones, as heard over
    /// an 8 kHz μ-law line.
    #[test]
    fn nothing_but_keys_is_a_key() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../audio-fixtures");
        let mut checked = 0;
        for sub in ["nonspeech", "espeak"] {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if !path.to_string_lossy().ends_with("_8k.ul") {
                    continue;
                }
                let narrow = voicecare_media::g711::decode_ulaw(&std::fs::read(&path).unwrap());
                let wide = Upsampler2x::default().process(&narrow);
                assert_eq!(keys_in(&wide), "", "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} fixtures");
    }
}
