//! A simulated elder: a real WebRTC device that registers over signalling,
//! answers (or not), listens for the end of each prompt, replies with WAV
//! files, tones or DTMF as its script says, and records what it heard.
//!
//! Scripts are TOML:
//!
//! ```toml
//! on_ring = "answer"        # answer | ignore | decline   (default answer)
//! answer_after_ms = 800     # ring this long before picking up
//! record = "heard.wav"      # optional: everything heard, 16 kHz mono
//! max_call_ms = 120000      # hang up if the call runs longer
//!
//! [[step]]
//! do = "wait_for_prompt"    # until the engine speaks, then is quiet for quiet_ms
//! quiet_ms = 700            # optional
//! timeout_ms = 20000        # optional
//!
//! [[step]]
//! do = "say"
//! wav = "fixtures/yes-en.wav"   # relative to the script's directory
//!
//! [[step]]
//! do = "digits"
//! keys = "1#"
//!
//! [[step]]
//! do = "tone"               # a test tone instead of speech
//! hz = 1000
//! ms = 500
//!
//! [[step]]
//! do = "silence"            # say nothing for a while
//! ms = 3000
//!
//! [[step]]
//! do = "wait_for_speech"    # until the engine starts speaking, then after_ms more:
//! after_ms = 800            # the next `say` talks over the prompt (barge-in)
//!
//! [[step]]
//! do = "hang_up"            # hang up mid-call
//! ```
//!
//! `call_in = true` makes the phone place the call itself (an SOS press)
//! instead of waiting to be rung. When the steps run out the phone stays on
//! the line until the engine hangs up (or `max_call_ms`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::info;

use crate::audio::{FRAME_MS, SAMPLE_RATE, rms, sine};
use crate::error::TelephonyError;
use crate::leg::{CallLeg, EndReason, LegEvent};
use crate::signalling::{ClientConfig, DeviceClient, HangupReason};

/// Frames louder than this (RMS, of 32768) count as the engine speaking.
const SPEECH_RMS: f32 = 300.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRing {
    #[default]
    Answer,
    /// Let it ring until the engine gives up.
    Ignore,
    Decline,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    WaitForPrompt {
        #[serde(default = "default_quiet")]
        quiet_ms: u64,
        #[serde(default = "default_prompt_timeout")]
        timeout_ms: u64,
    },
    /// Wait until the engine starts speaking, then `after_ms` more, without
    /// waiting for the prompt to end.
    WaitForSpeech {
        #[serde(default)]
        after_ms: u64,
        #[serde(default = "default_prompt_timeout")]
        timeout_ms: u64,
    },
    Say {
        wav: PathBuf,
    },
    Tone {
        hz: f32,
        ms: u64,
    },
    Digits {
        keys: String,
    },
    Silence {
        ms: u64,
    },
    HangUp,
}

fn default_quiet() -> u64 {
    700
}
fn default_prompt_timeout() -> u64 {
    20_000
}
fn default_max_call() -> u64 {
    120_000
}

/// What a simulated elder does on a call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimScript {
    #[serde(default)]
    pub on_ring: OnRing,
    #[serde(default)]
    pub answer_after_ms: u64,
    #[serde(default)]
    pub call_in: bool,
    /// Passed as `target` when calling in.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub record: Option<PathBuf>,
    #[serde(default = "default_max_call")]
    pub max_call_ms: u64,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

impl SimScript {
    /// Parse a script; relative WAV and record paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, TelephonyError> {
        let mut s: SimScript =
            toml::from_str(text).map_err(|e| TelephonyError::Script(e.to_string()))?;
        for step in &mut s.steps {
            if let Step::Say { wav } = step
                && wav.is_relative()
            {
                *wav = base.join(&*wav);
            }
            if let Step::Digits { keys } = step
                && let Some(bad) = keys
                    .chars()
                    .find(|c| crate::dtmf::digit_to_event(*c).is_none())
            {
                return Err(TelephonyError::Script(format!("not a DTMF key: {bad:?}")));
            }
        }
        if let Some(r) = &mut s.record
            && r.is_relative()
        {
            *r = base.join(&*r);
        }
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, TelephonyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TelephonyError::Script(format!("{}: {e}", path.display())))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
    }
}

/// What happened on one simulated call.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub answered: bool,
    pub ended: Option<EndReason>,
    /// Everything heard, 16 kHz mono.
    pub heard: Vec<i16>,
    /// DTMF keys the engine sent.
    pub digits_heard: String,
    /// Prompts the phone waited for and heard end.
    pub prompts_heard: usize,
    /// How the engine ended ringing, if the phone never answered.
    pub ring_ended: Option<HangupReason>,
    /// From the ring (the engine's offer arriving) to media flowing, less
    /// the script's `answer_after_ms`.
    pub ring_to_media_ms: Option<f64>,
    /// From media flowing to the end of the call.
    pub talk_ms: Option<f64>,
    /// One per `say` step the engine answered with audio.
    pub turns: Vec<SimTurn>,
    /// Wall-clock times at which each `say` step's speech started and ended
    /// (its last loud frame left the phone), answered or not: to line up with
    /// what other processes saw, such as an operator's console.
    pub speeches: Vec<(std::time::SystemTime, std::time::SystemTime)>,
    /// Inter-arrival times of the engine's packets, in microseconds, when the
    /// phone's leg was built with `record_timing`.
    pub inter_arrival_us: Vec<u32>,
}

/// One reply of the phone and the engine's answer to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimTurn {
    /// From the end of the phone's speech (the last loud frame of its clip)
    /// to the first loud frame the engine sent after it. Includes the
    /// engine's end-of-utterance silence.
    pub reply_ms: f64,
}

/// Marks set by the script's `say` steps and filled in by the listener.
#[derive(Debug, Default)]
struct TurnMark {
    /// When the phone's speech ended; the next loud frame answers it.
    speech_end: Option<Instant>,
    answered_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Hearing {
    loud_frames: u64,
    /// Consecutive quiet time since the last loud frame.
    quiet_ms: u64,
    /// Consecutive loud time since the last quiet frame.
    loud_ms: u64,
    ended: Option<EndReason>,
}

/// A simulated phone: one registered device following one script per call.
pub struct SimPhone {
    client: DeviceClient,
    rings: tokio::sync::mpsc::Receiver<crate::signalling::RingingCall>,
    script: SimScript,
}

impl SimPhone {
    /// Connect and register as the device in `config`.
    pub async fn connect(config: ClientConfig, script: SimScript) -> Result<Self, TelephonyError> {
        let (client, rings) = DeviceClient::connect(config).await?;
        Ok(Self {
            client,
            rings,
            script,
        })
    }

    pub fn device_id(&self) -> &str {
        self.client.device_id()
    }

    /// Handle one call per the script: wait to be rung (or call in), then
    /// run the steps. Returns when the call is over.
    pub async fn run_call(&mut self) -> Result<SimReport, TelephonyError> {
        let mut report = SimReport::default();
        let mut rang_at = None;
        let leg = if self.script.call_in {
            self.client.call(self.script.target.clone()).await?
        } else {
            let mut ring =
                self.rings.recv().await.ok_or_else(|| {
                    TelephonyError::Signalling("signalling connection lost".into())
                })?;
            rang_at = Some(Instant::now());
            info!(device = %self.client.device_id(), "sim phone ringing");
            ring.ringing();
            match self.script.on_ring {
                OnRing::Decline => {
                    ring.decline(HangupReason::Declined);
                    return Ok(report);
                }
                OnRing::Ignore => {
                    report.ring_ended = Some(ring.cancelled().await);
                    return Ok(report);
                }
                OnRing::Answer => {}
            }
            if self.script.answer_after_ms > 0 {
                let wait = Duration::from_millis(self.script.answer_after_ms);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = ring.cancelled() => {
                        report.ring_ended = Some(r);
                        return Ok(report);
                    }
                }
            }
            ring.answer().await?
        };
        self.script.talk_on(leg, rang_at, report).await
    }
}

impl SimScript {
    /// Run the steps on an answered leg, whatever its transport (a WebRTC
    /// device's, or a SIP call's): `rang_at` is when the phone started
    /// ringing, for the set-up time.
    pub async fn talk_on(
        &self,
        leg: CallLeg,
        rang_at: Option<Instant>,
        mut report: SimReport,
    ) -> Result<SimReport, TelephonyError> {
        report.answered = true;
        let (heard, digits, ended) = self.talk(leg, rang_at, &mut report).await?;
        report.heard = heard;
        report.digits_heard = digits;
        report.ended = Some(ended);
        if let Some(path) = &self.record {
            write_wav(path, &report.heard)?;
        }
        Ok(report)
    }

    async fn talk(
        &self,
        mut leg: CallLeg,
        rang_at: Option<Instant>,
        report: &mut SimReport,
    ) -> Result<(Vec<i16>, String, EndReason), TelephonyError> {
        leg.wait_connected(Duration::from_secs(10)).await?;
        let connected_at = Instant::now();
        if let Some(r) = rang_at {
            let setup = connected_at.duration_since(r).as_secs_f64() * 1000.0;
            report.ring_to_media_ms = Some((setup - self.answer_after_ms as f64).max(0.0));
        }
        let control = leg.control();
        let mark = Arc::new(Mutex::new(TurnMark::default()));
        let (_, mut events) = leg.split();
        let heard = Arc::new(Mutex::new(Vec::<i16>::new()));
        let digits = Arc::new(Mutex::new(String::new()));
        let (state_tx, mut state) = watch::channel(Hearing::default());
        let listener = {
            let heard = heard.clone();
            let digits = digits.clone();
            let mark = mark.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        LegEvent::Audio(frame) => {
                            let loud = rms(&frame) > SPEECH_RMS;
                            if let Ok(mut h) = heard.lock() {
                                h.extend_from_slice(&frame);
                            }
                            if loud && let Ok(mut m) = mark.lock() {
                                let now = Instant::now();
                                if m.speech_end.is_some_and(|e| now > e) && m.answered_at.is_none()
                                {
                                    m.answered_at = Some(now);
                                }
                            }
                            state_tx.send_modify(|s| {
                                if loud {
                                    s.loud_frames += 1;
                                    s.quiet_ms = 0;
                                    s.loud_ms += FRAME_MS;
                                } else {
                                    s.quiet_ms += FRAME_MS;
                                    s.loud_ms = 0;
                                }
                            });
                        }
                        LegEvent::Digit(d) => {
                            if let Ok(mut g) = digits.lock() {
                                g.push(d);
                            }
                        }
                        LegEvent::Ended(r) => {
                            state_tx.send_modify(|s| s.ended = Some(r));
                        }
                        _ => {}
                    }
                }
            })
        };

        let max_call = tokio::time::sleep(Duration::from_millis(self.max_call_ms));
        tokio::pin!(max_call);
        let take_turn = |report: &mut SimReport, m: &mut TurnMark| {
            if let (Some(end), Some(at)) = (m.speech_end.take(), m.answered_at.take()) {
                report.turns.push(SimTurn {
                    reply_ms: at.duration_since(end).as_secs_f64() * 1000.0,
                });
            }
        };
        let steps = async {
            for step in &self.steps {
                if state.borrow().ended.is_some() {
                    return;
                }
                match step {
                    Step::WaitForPrompt {
                        quiet_ms,
                        timeout_ms,
                    } => {
                        let start = state.borrow().loud_frames;
                        let q = *quiet_ms;
                        let waited = tokio::time::timeout(
                            Duration::from_millis(*timeout_ms),
                            state.wait_for(|s| {
                                s.ended.is_some() || (s.loud_frames > start && s.quiet_ms >= q)
                            }),
                        )
                        .await;
                        if matches!(waited, Ok(Ok(s)) if s.ended.is_none()) {
                            report.prompts_heard += 1;
                        }
                    }
                    Step::WaitForSpeech {
                        after_ms,
                        timeout_ms,
                    } => {
                        // Two loud frames in a row: the engine is speaking.
                        let _ = tokio::time::timeout(
                            Duration::from_millis(*timeout_ms),
                            state.wait_for(|s| s.ended.is_some() || s.loud_ms >= 2 * FRAME_MS),
                        )
                        .await;
                        tokio::time::sleep(Duration::from_millis(*after_ms)).await;
                    }
                    Step::Say { wav } => match read_wav_16k(wav) {
                        Ok(pcm) => {
                            if let Ok(mut m) = mark.lock() {
                                take_turn(report, &mut m);
                                m.answered_at = None;
                            }
                            let tail = trailing_quiet_ms(&pcm);
                            let started = std::time::SystemTime::now();
                            control.play(pcm).finished().await;
                            report.speeches.push((
                                started,
                                std::time::SystemTime::now()
                                    .checked_sub(Duration::from_millis(tail))
                                    .unwrap_or_else(std::time::SystemTime::now),
                            ));
                            if let Ok(mut m) = mark.lock() {
                                let end = Instant::now()
                                    .checked_sub(Duration::from_millis(tail))
                                    .unwrap_or_else(Instant::now);
                                m.speech_end = Some(end);
                                // A loud frame heard while the phone spoke is
                                // the prompt it talked over, not an answer.
                                m.answered_at = None;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot play fixture");
                        }
                    },
                    Step::Tone { hz, ms } => {
                        let n = (SAMPLE_RATE as u64 * ms / 1000) as usize;
                        control.play(sine(*hz, 8000, n)).finished().await;
                    }
                    Step::Digits { keys } => {
                        if control.send_digits(keys).is_ok() {
                            // 100 ms key + 60 ms gap, plus end packets.
                            let ms = keys.chars().count() as u64 * 220;
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                    }
                    Step::Silence { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
                    Step::HangUp => {
                        control.hang_up();
                        return;
                    }
                }
            }
        };
        tokio::select! {
            _ = steps => {}
            _ = &mut max_call => control.hang_up(),
        }
        // Stay on the line until the engine hangs up (or the call limit).
        tokio::select! {
            _ = control.ended() => {}
            _ = &mut max_call => control.hang_up(),
        }
        let reason = control.ended().await;
        let _ = listener.await;
        if let Ok(mut m) = mark.lock() {
            take_turn(report, &mut m);
        }
        report.talk_ms = Some(connected_at.elapsed().as_secs_f64() * 1000.0);
        report.inter_arrival_us = std::mem::take(
            &mut *control
                .stats()
                .inter_arrival_us
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|p| p.into_inner()));
        let digits = std::mem::take(&mut *digits.lock().unwrap_or_else(|p| p.into_inner()));
        Ok((heard, digits, reason))
    }
}

/// Quiet time at the end of a clip: the part after its last loud frame.
fn trailing_quiet_ms(pcm: &[i16]) -> u64 {
    let frames: Vec<&[i16]> = pcm.chunks(crate::audio::FRAME_SAMPLES).collect();
    let quiet = frames
        .iter()
        .rev()
        .take_while(|f| rms(f) <= SPEECH_RMS)
        .count();
    quiet as u64 * FRAME_MS
}

/// Read a WAV file as 16 kHz mono i16.
pub fn read_wav_16k(path: &Path) -> Result<Vec<i16>, TelephonyError> {
    let audio = voicecare_media::audio::read_wav(path)
        .and_then(|a| a.to_rate(SAMPLE_RATE))
        .map_err(|e| TelephonyError::Wav(e.to_string()))?;
    Ok(audio
        .samples
        .iter()
        .map(|&s| voicecare_media::audio::f32_to_i16(s))
        .collect())
}

/// Write 16 kHz mono i16 as a WAV file.
pub fn write_wav(path: &Path, pcm: &[i16]) -> Result<(), TelephonyError> {
    let audio = voicecare_media::audio::Audio {
        samples: pcm.iter().map(|&s| s as f32 / 32768.0).collect(),
        rate: SAMPLE_RATE,
    };
    voicecare_media::audio::write_wav(path, &audio).map_err(|e| TelephonyError::Wav(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_script() {
        let text = r#"
on_ring = "answer"
answer_after_ms = 800
record = "heard.wav"

[[step]]
do = "wait_for_prompt"
quiet_ms = 500

[[step]]
do = "say"
wav = "fixtures/yes.wav"

[[step]]
do = "digits"
keys = "1#"

[[step]]
do = "hang_up"
"#;
        let s = SimScript::parse(text, Path::new("/scripts")).unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(
            s.steps[0],
            Step::WaitForPrompt {
                quiet_ms: 500,
                timeout_ms: 20_000
            }
        );
        assert_eq!(
            s.steps[1],
            Step::Say {
                wav: PathBuf::from("/scripts/fixtures/yes.wav")
            }
        );
        assert_eq!(s.record.as_deref(), Some(Path::new("/scripts/heard.wav")));
    }

    #[test]
    fn a_phone_can_talk_over_a_prompt() {
        let s = SimScript::parse(
            "[[step]]\ndo = \"wait_for_speech\"\nafter_ms = 800\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            s.steps,
            vec![Step::WaitForSpeech {
                after_ms: 800,
                timeout_ms: 20_000
            }]
        );
    }

    #[test]
    fn the_end_of_speech_is_the_last_loud_frame() {
        let mut pcm = sine(440.0, 8000, 16_000);
        pcm.extend(std::iter::repeat_n(0i16, 4_800 + 100));
        // 300 ms of silence plus a partial frame, which counts as a frame.
        assert_eq!(trailing_quiet_ms(&pcm), 320);
        assert_eq!(trailing_quiet_ms(&sine(440.0, 8000, 1_600)), 0);
    }

    #[test]
    fn script_errors_are_clear() {
        let e = SimScript::parse("[[step]]\ndo = \"dance\"\n", Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("dance"), "{e}");
        let e = SimScript::parse("[[step]]\ndo = \"digits\"\nkeys = \"1x\"\n", Path::new("."))
            .unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");
    }
}
