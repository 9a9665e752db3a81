//! `voicecare phone`: be an elder's phone. With `--sim SCRIPT` a scripted
//! simulated elder (tests, demos, load); without it, a person on the
//! microphone and speaker, or WAV files standing in for them (`--play`,
//! `--record`).
//!
//! The phone speaks WebRTC to the engine's device signalling, or SIP
//! (`--sip-call`, `--sip-answer`; `phone_sip.rs`): it then dials a SIP
//! address as an elder's landline would, or answers calls as the elder's
//! phone that the service rings through its trunk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::io::AsyncBufReadExt;
use voicecare_telephony::audio::SAMPLE_RATE;
use voicecare_telephony::device::{AudioDevice, AudioStreams};
use voicecare_telephony::signalling::{ClientConfig, DeviceClient, DeviceToken};
use voicecare_telephony::{CallLeg, EndReason, LegConfig, LegEvent, SimPhone, SimScript};

use super::phone_sip::PhoneSipArgs;

#[derive(Args)]
pub struct PhoneArgs {
    /// The engine's device signalling endpoint.
    #[arg(
        long,
        env = "VOICECARE_SERVER",
        default_value = "ws://127.0.0.1:8080/v1/devices/ws"
    )]
    pub server: String,
    /// Device id to register as (not with `--sip-call` or `--sip-answer`).
    #[arg(long, env = "VOICECARE_DEVICE_ID", required_unless_present_any = ["sip_call", "sip_answer"])]
    pub device: Option<String>,
    /// Device token; prefer the environment variable to keep it out of shell history.
    #[arg(long, env = "VOICECARE_DEVICE_TOKEN", hide_env_values = true, required_unless_present_any = ["sip_call", "sip_answer"])]
    pub token: Option<String>,
    /// Run a scripted simulated elder (TOML script, see the telephony crate's `sim` module).
    #[arg(long, value_name = "SCRIPT")]
    pub sim: Option<PathBuf>,
    /// Calls to handle before exiting; 0 keeps going.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// Local UDP address(es) for WebRTC media. 0.0.0.0 skips loopback:
    /// name 127.0.0.1:0 when the engine runs on the same host.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: Vec<SocketAddr>,
    /// Call the engine (like pressing the help button) instead of waiting to be rung.
    #[arg(long)]
    pub call: bool,
    /// Speak this WAV file into the call (any rate, mixed to mono), then
    /// silence, instead of using the microphone.
    #[arg(long, value_name = "WAV", conflicts_with = "sim")]
    pub play: Option<PathBuf>,
    /// Write what the call brings to this WAV file (16 kHz mono) instead of
    /// playing it on the speaker. The second call goes to FILE-2.wav, and so on.
    #[arg(long, value_name = "WAV", conflicts_with = "sim")]
    pub record: Option<PathBuf>,
    /// Hang up this many seconds after the call connects; 0 waits for the
    /// other side to hang up.
    #[arg(long, value_name = "SECS", default_value_t = 0, conflicts_with = "sim")]
    pub hang_up_after: u64,
    #[command(flatten)]
    pub sip: PhoneSipArgs,
}

impl std::fmt::Debug for PhoneArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneArgs")
            .field("server", &self.server)
            .field("device", &self.device)
            .field("token", &"<redacted>")
            .field("sim", &self.sim)
            .field("calls", &self.calls)
            .field("bind", &self.bind)
            .field("call", &self.call)
            .field("play", &self.play)
            .field("record", &self.record)
            .field("hang_up_after", &self.hang_up_after)
            .field("sip", &self.sip)
            .finish()
    }
}

pub fn run(args: PhoneArgs) -> anyhow::Result<()> {
    // The SIP stack logs whole messages, numbers included, at info.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn,rsipstack=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async move {
        if args.sip.active() {
            return super::phone_sip::run(&args).await;
        }
        match &args.sim {
            Some(path) => run_sim(&args, path).await,
            None => run_person(&args).await,
        }
    });
    // A read of the keyboard may still be blocked on stdin: do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

fn client_config(args: &PhoneArgs) -> anyhow::Result<ClientConfig> {
    let (Some(device), Some(token)) = (&args.device, &args.token) else {
        anyhow::bail!("--device and --token are needed to register with the engine");
    };
    let mut c = ClientConfig::new(&args.server, device, DeviceToken::new(token.clone()));
    c.leg = LegConfig {
        bind: args.bind.clone(),
        ..LegConfig::default()
    };
    Ok(c)
}

async fn run_sim(args: &PhoneArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let mut script = SimScript::load(path)?;
    if args.call {
        script.call_in = true;
    }
    let mut phone = SimPhone::connect(client_config(args)?, script)
        .await
        .context("registering with the engine")?;
    eprintln!("registered as {}; waiting for calls", phone.device_id());
    let mut handled = 0u32;
    while args.calls == 0 || handled < args.calls {
        let report = phone.run_call().await?;
        handled += 1;
        // One JSON line per call, for scripts and demos.
        let line = serde_json::json!({
            "call": handled,
            "answered": report.answered,
            "ended": report.ended,
            "ring_ended": report.ring_ended,
            "prompts_heard": report.prompts_heard,
            "digits_heard": report.digits_heard,
            "heard_seconds": report.heard.len() as f64 / 16_000.0,
        });
        println!("{line}");
    }
    Ok(())
}

/// A person's phone over WebRTC: registered with the engine, rung by it or
/// calling it.
async fn run_person(args: &PhoneArgs) -> anyhow::Result<()> {
    let ends = Ends::from_args(args)?;
    let (client, mut rings) = DeviceClient::connect(client_config(args)?)
        .await
        .context("registering with the engine")?;
    eprintln!("registered as {}", client.device_id());
    let mut handled = 0u32;
    while args.calls == 0 || handled < args.calls {
        let leg = if args.call {
            eprintln!("calling…");
            client.call(None).await?
        } else {
            eprintln!("waiting for a call…");
            let ring = rings.recv().await.context("signalling connection lost")?;
            ring.ringing();
            eprintln!("incoming call: answering");
            ring.answer().await?
        };
        handled += 1;
        let report = talk(leg, &ends, handled).await?;
        println!("{}", report.json(handled, "webrtc"));
    }
    Ok(())
}

/// Where a call's audio comes from and goes to.
pub(crate) struct Ends {
    /// The WAV file to speak, at 16 kHz; `None` with the sound card.
    play: Option<Vec<i16>>,
    record: Option<PathBuf>,
    /// No files named: the microphone and speaker.
    card: bool,
    hang_up_after: Option<Duration>,
}

impl Ends {
    pub(crate) fn from_args(args: &PhoneArgs) -> anyhow::Result<Ends> {
        let play = match &args.play {
            Some(path) => Some(read_pcm16k(path)?),
            None => None,
        };
        let card = args.play.is_none() && args.record.is_none();
        if card {
            check_sound_card()?;
        }
        Ok(Ends {
            play,
            record: args.record.clone(),
            card,
            hang_up_after: (args.hang_up_after > 0)
                .then(|| Duration::from_secs(args.hang_up_after)),
        })
    }

    fn open_card(&self) -> anyhow::Result<Option<AudioStreams>> {
        if !self.card {
            return Ok(None);
        }
        Ok(Some(voicecare_telephony::device::CpalDevice.open()?))
    }
}

/// Open the sound card once before any call, so its error comes first.
fn check_sound_card() -> anyhow::Result<()> {
    drop(
        voicecare_telephony::device::CpalDevice
            .open()
            .context("opening the sound card (or use --play and --record)")?,
    );
    Ok(())
}

/// A WAV file as 16 kHz mono samples.
fn read_pcm16k(path: &Path) -> anyhow::Result<Vec<i16>> {
    let audio = voicecare_media::audio::read_wav(path)
        .and_then(|a| a.to_rate(SAMPLE_RATE))
        .with_context(|| format!("--play {}", path.display()))?;
    Ok(audio
        .samples
        .iter()
        .map(|s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// What one call carried, printed as a JSON line when it ends.
#[derive(Debug, Default)]
pub(crate) struct CallReport {
    pub ended: Option<EndReason>,
    /// 20 ms frames received.
    pub frames: u64,
    /// Of those, frames louder than -40 dBFS: speech or tone, not silence.
    pub loud_frames: u64,
    pub digits: String,
    pub packets_received: u64,
    pub packets_sent: u64,
}

/// A frame is "loud" above this RMS (-40 dBFS).
const LOUD_RMS: f64 = 328.0;

impl CallReport {
    pub(crate) fn json(&self, call: u32, transport: &str) -> serde_json::Value {
        serde_json::json!({
            "call": call,
            "transport": transport,
            "answered": true,
            "ended": self.ended,
            "heard_seconds": self.frames as f64 * 0.02,
            "loud_seconds": self.loud_frames as f64 * 0.02,
            "digits_heard": self.digits,
            "packets_received": self.packets_received,
            "packets_sent": self.packets_sent,
        })
    }
}

/// The file the `n`th call is recorded to: FILE, then FILE-2, FILE-3, …
fn record_path(base: &Path, n: u32) -> PathBuf {
    if n <= 1 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let ext = base.extension().map(|e| e.to_string_lossy().into_owned());
    let name = match ext {
        Some(ext) => format!("{stem}-{n}.{ext}"),
        None => format!("{stem}-{n}"),
    };
    base.with_file_name(name)
}

/// Connect a call to the microphone and speaker (or the WAV files) until it
/// ends. Typing keys and Enter sends DTMF; `h` and Enter hangs up.
pub(crate) async fn talk(mut leg: CallLeg, ends: &Ends, n: u32) -> anyhow::Result<CallReport> {
    leg.wait_connected(Duration::from_secs(10)).await?;
    let mut card = ends.open_card()?;
    let control = leg.control();
    if let Some(pcm) = &ends.play {
        let _ = control.play(pcm.clone());
        eprintln!("connected: playing the file (keys + Enter send DTMF, h + Enter hangs up)");
    } else {
        eprintln!("connected: speak now (keys + Enter send DTMF, h + Enter hangs up)");
    }
    let mut heard: Vec<i16> = Vec::new();
    let mut report = CallReport::default();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let hang_up_at = ends.hang_up_after.map(|d| tokio::time::Instant::now() + d);
    loop {
        let mic = async {
            match card.as_mut() {
                Some(c) => c.mic.recv().await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match hang_up_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = leg.next_event() => match ev {
                Some(LegEvent::Audio(frame)) => {
                    report.frames += 1;
                    if rms(&frame) > LOUD_RMS {
                        report.loud_frames += 1;
                    }
                    if let Some(c) = &card {
                        c.speaker.push(&frame);
                    }
                    if ends.record.is_some() {
                        heard.extend_from_slice(&frame);
                    }
                }
                Some(LegEvent::Digit(d)) => {
                    eprintln!("the other side pressed {d}");
                    report.digits.push(d);
                }
                Some(LegEvent::Ended(reason)) => {
                    eprintln!("call ended ({reason:?})");
                    report.ended = Some(reason);
                    break;
                }
                Some(_) => {}
                None => break,
            },
            Some(frame) = mic => control.feed(frame),
            () = timer => control.hang_up(),
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
    let stats = control.stats();
    report.packets_received = stats
        .packets_received
        .load(std::sync::atomic::Ordering::Relaxed);
    report.packets_sent = stats
        .packets_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    if let Some(base) = &ends.record {
        let path = record_path(base, n);
        write_wav(&path, &heard).with_context(|| format!("--record {}", path.display()))?;
        eprintln!(
            "recorded {:.1} s to {}",
            heard.len() as f64 / 16_000.0,
            path.display()
        );
    }
    Ok(report)
}

fn rms(frame: &[i16]) -> f64 {
    let n = frame.len().max(1) as f64;
    (frame.iter().map(|&s| (s as f64) * (s as f64)).sum::<f64>() / n).sqrt()
}

fn write_wav(path: &Path, pcm: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in pcm {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_calls_are_recorded_beside_the_first() {
        let base = Path::new("/tmp/heard.wav");
        assert_eq!(record_path(base, 1), base);
        assert_eq!(record_path(base, 2), Path::new("/tmp/heard-2.wav"));
        assert_eq!(record_path(Path::new("out"), 3), Path::new("out-3"));
    }

    #[test]
    fn silence_is_quiet_and_a_tone_is_loud() {
        assert!(rms(&[0; 320]) < LOUD_RMS);
        let tone: Vec<i16> = (0..320)
            .map(|i| (3000.0 * (i as f64 * 0.17).sin()) as i16)
            .collect();
        assert!(rms(&tone) > LOUD_RMS);
    }
}
