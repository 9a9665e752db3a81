//! An operator joins an elder's call: two real legs bridged, recorded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, T};
use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::bridge::{BridgeEnd, BridgeOptions, Direction, bridge};
use voicecare_telephony::signalling::DeviceClient;
use voicecare_telephony::{EndReason, LegEvent, SimPhone, SimScript};

fn loud(pcm: &[i16]) -> Vec<i16> {
    pcm.chunks(320)
        .filter(|f| rms(f) > 500.0)
        .flatten()
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_and_elder_hear_each_other_through_a_bridge() {
    let server = Server::loopback().await;
    let elder_script = SimScript::parse(
        "[[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 400\n\
         [[step]]\ndo = \"tone\"\nhz = 900\nms = 1000\n",
        Path::new("."),
    )
    .unwrap();
    let mut elder = SimPhone::connect(server.client("elder-1"), elder_script)
        .await
        .unwrap();
    server.wait_registered("elder-1").await;
    let elder_task = tokio::spawn(async move { elder.run_call().await });
    let elder_leg = server.hub.call_device("elder-1").await.unwrap();

    // The operator's browser calls in, asking to join the elder's call.
    let (operator, _) = DeviceClient::connect(server.client("op-1")).await.unwrap();
    let mut op_leg = operator.call(Some("call-of-elder-1".into())).await.unwrap();
    let incoming = server.next_incoming().await;
    assert_eq!(incoming.target.as_deref(), Some("call-of-elder-1"));
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("bridge.wav");
    let (tap_tx, mut tap_rx) = tokio::sync::mpsc::channel(10_000);
    let handle = bridge(
        elder_leg,
        incoming.leg,
        BridgeOptions {
            record: Some(wav.clone()),
            tap: Some(tap_tx),
        },
    );

    op_leg.wait_connected(T).await.unwrap();
    op_leg
        .control()
        .play(sine(500.0, 8000, SAMPLE_RATE as usize));
    let mut from_elder = Vec::new();
    tokio::time::timeout(T, async {
        while from_elder.len() < 320 * 30 {
            match op_leg.next_event().await {
                Some(LegEvent::Audio(f)) if rms(&f) > 500.0 => from_elder.extend(f),
                Some(LegEvent::Ended(r)) => panic!("ended {r:?}"),
                None => panic!("closed"),
                _ => {}
            }
        }
    })
    .await
    .expect("operator hears the elder");
    assert!(tone_power_ratio(&from_elder[1600..], SAMPLE_RATE, 900.0) > 0.8);

    // The operator hangs up; the bridge hangs up the elder.
    op_leg.control().hang_up();
    let outcome = tokio::time::timeout(T, handle.finished())
        .await
        .unwrap()
        .unwrap();
    match outcome.end {
        BridgeEnd::HungUp { side, reason } => {
            assert_eq!(side, Direction::BToA);
            assert_eq!(reason, EndReason::RemoteHangup);
        }
        other => panic!("unexpected {other:?}"),
    }
    let report = tokio::time::timeout(T, elder_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.ended, Some(EndReason::RemoteHangup));
    assert_eq!(report.prompts_heard, 1);
    let heard = loud(&report.heard);
    assert!(tone_power_ratio(&heard[1600..], SAMPLE_RATE, 500.0) > 0.8);

    // The recording has the elder on the left and the operator on the right.
    let mut r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.spec().channels, 2);
    let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    assert!(tone_power_ratio(&loud(&left)[1600..], SAMPLE_RATE, 900.0) > 0.8);
    assert!(tone_power_ratio(&loud(&right)[1600..], SAMPLE_RATE, 500.0) > 0.8);

    let mut tapped = [0usize; 2];
    while let Ok((d, _)) = tap_rx.try_recv() {
        tapped[(d == Direction::BToA) as usize] += 1;
    }
    assert!(tapped[0] > 50 && tapped[1] > 50, "{tapped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbridging_returns_both_legs_still_up() {
    let server = Server::loopback().await;
    let (a_dev, _) = DeviceClient::connect(server.client("elder-2"))
        .await
        .unwrap();
    let (b_dev, _) = DeviceClient::connect(server.client("op-2")).await.unwrap();
    let mut a_far = a_dev.call(None).await.unwrap();
    let a = server.next_incoming().await.leg;
    let _b_far = b_dev.call(None).await.unwrap();
    let b = server.next_incoming().await.leg;
    let handle = bridge(a, b, BridgeOptions::default());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = handle.unbridge().await.unwrap();
    let BridgeEnd::Unbridged { mut a, b: _b } = outcome.end else {
        panic!("expected both legs back");
    };
    a.wait_connected(T).await.unwrap();
    a.control().play(sine(300.0, 8000, SAMPLE_RATE as usize));
    let mut got = Vec::new();
    tokio::time::timeout(T, async {
        while got.len() < 320 * 20 {
            if let Some(LegEvent::Audio(f)) = a_far.next_event().await
                && rms(&f) > 500.0
            {
                got.extend(f);
            }
        }
    })
    .await
    .expect("the returned leg still carries audio");
    assert!(tone_power_ratio(&got[1600..], SAMPLE_RATE, 300.0) > 0.8);
}
