//! The person's phone loop over an in-memory sound device, through real
//! signalling and WebRTC.

mod common;

use std::time::Duration;

use common::{Server, T};
use tokio::sync::mpsc;
use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::device::{AudioDevice, AudioStreams, Speaker, run_phone_with};
use voicecare_telephony::{LegEvent, TelephonyError};

/// A "microphone" that plays a tone at real time and a speaker we can read.
struct FakeDevice {
    speaker: Speaker,
}

impl AudioDevice for FakeDevice {
    fn open(&self) -> Result<AudioStreams, TelephonyError> {
        let (tx, rx) = mpsc::channel(50);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let tone = sine(700.0, 6000, SAMPLE_RATE as usize * 10);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for chunk in tone.chunks(320) {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop_rx => return,
                }
                if tx.send(chunk.to_vec()).await.is_err() {
                    return;
                }
            }
        });
        Ok(AudioStreams::new(
            rx,
            self.speaker.clone(),
            Box::new(stop_tx),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_phone_carries_mic_and_speaker_audio() {
    let server = Server::loopback().await;
    let speaker = Speaker::default();
    let device = FakeDevice {
        speaker: speaker.clone(),
    };
    let client = server.client("elder-9");
    let phone = tokio::spawn(async move { run_phone_with(&device, client, false, Some(1)).await });
    server.wait_registered("elder-9").await;
    let mut leg = server.hub.call_device("elder-9").await.unwrap();
    leg.wait_connected(T).await.unwrap();
    leg.control().play(sine(1200.0, 8000, SAMPLE_RATE as usize));

    let mut mic = Vec::new();
    tokio::time::timeout(T, async {
        while mic.len() < 320 * 25 {
            match leg.next_event().await {
                Some(LegEvent::Audio(f)) if rms(&f) > 500.0 => mic.extend(f),
                Some(LegEvent::Ended(r)) => panic!("ended {r:?}"),
                None => panic!("closed"),
                _ => {}
            }
        }
    })
    .await
    .expect("microphone audio reaches the engine");
    assert!(tone_power_ratio(&mic[1600..], SAMPLE_RATE, 700.0) > 0.8);

    // The speaker has been fed the engine's prompt.
    let heard = speaker.pull(SAMPLE_RATE as usize / 2);
    let loud: Vec<i16> = heard
        .chunks(320)
        .filter(|f| rms(f) > 500.0)
        .flatten()
        .copied()
        .collect();
    assert!(loud.len() > 320 * 5, "speaker got audio: {}", loud.len());
    assert!(tone_power_ratio(&loud, SAMPLE_RATE, 1200.0) > 0.8);

    leg.control().hang_up();
    tokio::time::timeout(T, phone)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
