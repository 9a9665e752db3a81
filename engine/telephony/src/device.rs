//! A phone for a person: microphone and speaker behind [`AudioDevice`], with
//! a cpal implementation, wired to a registered device's calls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::audio::FRAME_SAMPLES;
use crate::error::TelephonyError;
use crate::leg::{CallLeg, LegEvent};
use crate::signalling::{ClientConfig, DeviceClient};

/// Speaker audio buffered at most this long (16 kHz samples); beyond it the
/// oldest is dropped so playback never lags the call by more.
const SPEAKER_MAX: usize = 16_000 / 2;

/// Where the person's voice goes out and the call's audio comes in.
#[derive(Clone, Default)]
pub struct Speaker(Arc<Mutex<VecDeque<i16>>>);

impl Speaker {
    /// Queue 16 kHz mono samples for playback.
    pub fn push(&self, pcm: &[i16]) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(pcm);
        if q.len() > SPEAKER_MAX {
            let excess = q.len() - SPEAKER_MAX;
            q.drain(..excess);
        }
    }

    /// Take up to `n` samples, padding with silence.
    pub fn pull(&self, n: usize) -> Vec<i16> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let take = q.len().min(n);
        let mut out: Vec<i16> = q.drain(..take).collect();
        out.resize(n, 0);
        out
    }
}

/// Open audio streams; dropping this closes them.
pub struct AudioStreams {
    /// Microphone: 16 kHz mono frames of [`FRAME_SAMPLES`].
    pub mic: mpsc::Receiver<Vec<i16>>,
    pub speaker: Speaker,
    _guard: Box<dyn Send>,
}

/// A microphone and speaker pair. Implemented by [`CpalDevice`]; tests and
/// headless hosts can supply their own.
pub trait AudioDevice: Send + Sync {
    fn open(&self) -> Result<AudioStreams, TelephonyError>;
}

impl AudioStreams {
    /// Build from parts, for [`AudioDevice`] implementations outside this crate.
    pub fn new(mic: mpsc::Receiver<Vec<i16>>, speaker: Speaker, guard: Box<dyn Send>) -> Self {
        Self {
            mic,
            speaker,
            _guard: guard,
        }
    }
}

/// Chops captured audio of any rate and channel count into 16 kHz mono frames.
#[cfg_attr(not(feature = "cpal"), allow(dead_code))]
struct MicFramer {
    rate: u32,
    channels: usize,
    /// Position in input samples of the next output sample (fractional).
    pos: f64,
    prev: f32,
    frame: Vec<i16>,
    tx: mpsc::Sender<Vec<i16>>,
}

#[cfg_attr(not(feature = "cpal"), allow(dead_code))]
impl MicFramer {
    fn push(&mut self, interleaved: impl Iterator<Item = f32>) {
        let step = self.rate as f64 / 16_000.0;
        let mut acc = 0.0f32;
        let mut k = 0usize;
        let mut idx = 0f64;
        for s in interleaved {
            acc += s;
            k += 1;
            if k < self.channels {
                continue;
            }
            let mono = acc / self.channels as f32;
            acc = 0.0;
            k = 0;
            // Linear interpolation between the previous and this input sample.
            while self.pos <= idx {
                let t = (self.pos - (idx - 1.0)) as f32;
                let v = self.prev + (mono - self.prev) * t.clamp(0.0, 1.0);
                self.frame
                    .push((v * 32768.0).clamp(-32768.0, 32767.0) as i16);
                if self.frame.len() == FRAME_SAMPLES {
                    let f = std::mem::replace(&mut self.frame, Vec::with_capacity(FRAME_SAMPLES));
                    // A full channel means the call side is behind: drop, never block audio.
                    let _ = self.tx.try_send(f);
                }
                self.pos += step;
            }
            self.prev = mono;
            idx += 1.0;
        }
        self.pos -= idx;
    }
}

/// The default sound card through cpal.
#[cfg(feature = "cpal")]
#[derive(Debug, Default, Clone, Copy)]
pub struct CpalDevice;

#[cfg(feature = "cpal")]
mod cpal_impl {
    use super::*;
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

    fn no_card() -> TelephonyError {
        TelephonyError::NoSoundCard
    }

    fn map_err(e: cpal::Error) -> TelephonyError {
        if e.kind() == cpal::ErrorKind::DeviceNotAvailable {
            no_card()
        } else {
            TelephonyError::Audio(e.to_string())
        }
    }

    /// Ask for what we want (16 kHz mono); ALSA's `plug` layer usually
    /// converts. Otherwise use the device's default and convert ourselves.
    fn pick_config(
        device: &cpal::Device,
        input: bool,
    ) -> Result<(StreamConfig, SampleFormat), TelephonyError> {
        let default = if input {
            device.default_input_config()
        } else {
            device.default_output_config()
        };
        let wanted = StreamConfig {
            channels: 1,
            sample_rate: 16_000,
            buffer_size: cpal::BufferSize::Default,
        };
        let supported = if input {
            device
                .supported_input_configs()
                .map(|c| c.collect::<Vec<_>>())
        } else {
            device
                .supported_output_configs()
                .map(|c| c.collect::<Vec<_>>())
        };
        if let Ok(list) = supported
            && let Some(c) = list.iter().find(|c| {
                c.channels() == 1
                    && c.sample_format() == SampleFormat::I16
                    && c.min_sample_rate() <= 16_000
                    && c.max_sample_rate() >= 16_000
            })
        {
            return Ok((wanted, c.sample_format()));
        }
        let d = default.map_err(map_err)?;
        Ok((d.config(), d.sample_format()))
    }

    fn build_input<T>(
        device: &cpal::Device,
        config: &StreamConfig,
        tx: mpsc::Sender<Vec<i16>>,
    ) -> Result<cpal::Stream, TelephonyError>
    where
        T: SizedSample,
        f32: FromSample<T>,
    {
        let mut framer = MicFramer {
            rate: config.sample_rate,
            channels: config.channels.max(1) as usize,
            pos: 0.0,
            prev: 0.0,
            frame: Vec::with_capacity(FRAME_SAMPLES),
            tx,
        };
        device
            .build_input_stream::<T, _, _>(
                *config,
                move |data: &[T], _| framer.push(data.iter().map(|&s| f32::from_sample(s))),
                |e| tracing::warn!(error = %e, "microphone stream error"),
                None,
            )
            .map_err(map_err)
    }

    fn build_output<T>(
        device: &cpal::Device,
        config: &StreamConfig,
        speaker: Speaker,
    ) -> Result<cpal::Stream, TelephonyError>
    where
        T: SizedSample + FromSample<f32>,
    {
        let channels = config.channels.max(1) as usize;
        let step = 16_000.0 / config.sample_rate as f64;
        let mut pos = 0.0f64;
        let mut cur: VecDeque<i16> = VecDeque::new();
        device
            .build_output_stream::<T, _, _>(
                *config,
                move |out: &mut [T], _| {
                    for frame in out.chunks_mut(channels) {
                        // Nearest-sample rate conversion: this is a monitor, not a recorder.
                        while pos >= 1.0 || cur.is_empty() {
                            if cur.is_empty() {
                                cur.extend(speaker.pull(FRAME_SAMPLES));
                            }
                            if pos >= 1.0 {
                                cur.pop_front();
                                pos -= 1.0;
                            } else {
                                break;
                            }
                        }
                        let v = cur.front().copied().unwrap_or(0) as f32 / 32768.0;
                        for s in frame.iter_mut() {
                            *s = T::from_sample(v);
                        }
                        pos += step;
                    }
                },
                |e| tracing::warn!(error = %e, "speaker stream error"),
                None,
            )
            .map_err(map_err)
    }

    fn open_streams(
        mic_tx: mpsc::Sender<Vec<i16>>,
        speaker: Speaker,
    ) -> Result<(cpal::Stream, cpal::Stream), TelephonyError> {
        let host = cpal::default_host();
        let input = host.default_input_device().ok_or_else(no_card)?;
        let output = host.default_output_device().ok_or_else(no_card)?;
        let (in_cfg, in_fmt) = pick_config(&input, true)?;
        let (out_cfg, out_fmt) = pick_config(&output, false)?;
        let mic = match in_fmt {
            SampleFormat::I16 => build_input::<i16>(&input, &in_cfg, mic_tx)?,
            SampleFormat::F32 => build_input::<f32>(&input, &in_cfg, mic_tx)?,
            SampleFormat::I32 => build_input::<i32>(&input, &in_cfg, mic_tx)?,
            other => {
                return Err(TelephonyError::Audio(format!(
                    "unsupported microphone sample format {other}"
                )));
            }
        };
        let spk = match out_fmt {
            SampleFormat::I16 => build_output::<i16>(&output, &out_cfg, speaker)?,
            SampleFormat::F32 => build_output::<f32>(&output, &out_cfg, speaker)?,
            SampleFormat::I32 => build_output::<i32>(&output, &out_cfg, speaker)?,
            other => {
                return Err(TelephonyError::Audio(format!(
                    "unsupported speaker sample format {other}"
                )));
            }
        };
        mic.play().map_err(map_err)?;
        spk.play().map_err(map_err)?;
        Ok((mic, spk))
    }

    impl AudioDevice for CpalDevice {
        fn open(&self) -> Result<AudioStreams, TelephonyError> {
            let (mic_tx, mic) = mpsc::channel(50);
            let speaker = Speaker::default();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let spk = speaker.clone();
            // cpal streams are not Send on every platform: own them on one thread.
            std::thread::Builder::new()
                .name("voicecare-audio".into())
                .spawn(move || match open_streams(mic_tx, spk) {
                    Ok(streams) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = stop_rx.recv();
                        drop(streams);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(TelephonyError::Io)?;
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| TelephonyError::Audio("the sound card did not open".into()))??;
            Ok(AudioStreams {
                mic,
                speaker,
                _guard: Box::new(stop_tx),
            })
        }
    }
}

/// Run a person's phone: register, answer incoming calls (or place one with
/// `call_in`), and connect the call to the microphone and speaker until it
/// ends. Typing keys and Enter sends DTMF; `h` and Enter hangs up.
pub async fn run_person_phone(config: ClientConfig, call_in: bool) -> Result<(), TelephonyError> {
    #[cfg(feature = "cpal")]
    {
        // Check the sound card before registering, so the error comes first.
        drop(CpalDevice.open()?);
        run_phone_with(&CpalDevice, config, call_in, Some(1)).await
    }
    #[cfg(not(feature = "cpal"))]
    {
        let _ = (config, call_in);
        Err(TelephonyError::Audio(
            "this build has no sound-card support".into(),
        ))
    }
}

/// The phone loop over any [`AudioDevice`]; `calls` limits how many calls
/// are handled (None: forever).
pub async fn run_phone_with(
    device: &dyn AudioDevice,
    config: ClientConfig,
    call_in: bool,
    calls: Option<u32>,
) -> Result<(), TelephonyError> {
    let (client, mut rings) = DeviceClient::connect(config).await?;
    eprintln!("registered as {}", client.device_id());
    let mut handled = 0;
    while calls.is_none_or(|n| handled < n) {
        let leg = if call_in {
            eprintln!("calling…");
            client.call(None).await?
        } else {
            eprintln!("waiting for a call…");
            let ring = rings
                .recv()
                .await
                .ok_or_else(|| TelephonyError::Signalling("signalling connection lost".into()))?;
            ring.ringing();
            eprintln!("incoming call: answering");
            ring.answer().await?
        };
        handled += 1;
        let streams = device.open()?;
        talk(leg, streams).await?;
    }
    Ok(())
}

async fn talk(mut leg: CallLeg, mut streams: AudioStreams) -> Result<(), TelephonyError> {
    leg.wait_connected(Duration::from_secs(10)).await?;
    eprintln!("connected: speak now (keys + Enter send DTMF, h + Enter hangs up)");
    let control = leg.control();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            ev = leg.next_event() => match ev {
                Some(LegEvent::Audio(frame)) => streams.speaker.push(&frame),
                Some(LegEvent::Digit(d)) => eprintln!("engine sent key {d}"),
                Some(LegEvent::Ended(reason)) => {
                    eprintln!("call ended ({reason:?})");
                    return Ok(());
                }
                Some(_) => {}
                None => return Ok(()),
            },
            Some(frame) = streams.mic.recv() => control.feed(frame),
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(l)) if l.trim() == "h" => control.hang_up(),
                Ok(Some(l)) if !l.trim().is_empty() => {
                    if let Err(e) = control.send_digits(l.trim()) {
                        eprintln!("{e}");
                    }
                }
                Ok(Some(_)) => {}
                _ => stdin_open = false,
            },
            _ = tokio::signal::ctrl_c() => control.hang_up(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{SAMPLE_RATE, tone_power_ratio};

    #[test]
    fn framer_converts_48k_stereo_to_16k_mono_frames() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut f = MicFramer {
            rate: 48_000,
            channels: 2,
            pos: 0.0,
            prev: 0.0,
            frame: Vec::new(),
            tx,
        };
        let tone: Vec<f32> = (0..48_000)
            .flat_map(|i| {
                let v = 0.25 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin();
                [v, v]
            })
            .collect();
        for chunk in tone.chunks(1000) {
            f.push(chunk.iter().copied());
        }
        let mut got = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            assert_eq!(frame.len(), FRAME_SAMPLES);
            got.extend(frame);
        }
        assert!((15_600..=16_000).contains(&got.len()), "{}", got.len());
        assert!(tone_power_ratio(&got, SAMPLE_RATE, 440.0) > 0.9);
    }

    #[test]
    fn speaker_buffer_is_bounded() {
        let s = Speaker::default();
        s.push(&vec![1; SPEAKER_MAX + 100]);
        assert_eq!(
            s.pull(SPEAKER_MAX + 100)
                .iter()
                .filter(|&&x| x == 1)
                .count(),
            SPEAKER_MAX
        );
        assert_eq!(s.pull(3), vec![0, 0, 0]);
    }
}
