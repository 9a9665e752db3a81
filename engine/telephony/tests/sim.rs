//! Simulated elders against a real signalling server and real WebRTC legs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, T};
use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::signalling::{HangupReason, HubConfig};
use voicecare_telephony::sim::write_wav;
use voicecare_telephony::{EndReason, LegConfig, LegEvent, SimPhone, SimScript, TelephonyError};

fn script(dir: &Path, text: &str) -> SimScript {
    SimScript::parse(text, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_phone_answers_waits_for_the_prompt_and_replies_with_a_wav() {
    let dir = tempfile::tempdir().unwrap();
    write_wav(
        &dir.path().join("reply.wav"),
        &sine(1000.0, 8000, SAMPLE_RATE as usize),
    )
    .unwrap();
    let server = Server::loopback().await;
    let s = script(
        dir.path(),
        r#"
answer_after_ms = 100
record = "heard.wav"
[[step]]
do = "wait_for_prompt"
quiet_ms = 400
[[step]]
do = "say"
wav = "reply.wav"
[[step]]
do = "digits"
keys = "42"
"#,
    );
    let mut phone = SimPhone::connect(server.client("elder-1"), s)
        .await
        .unwrap();
    server.wait_registered("elder-1").await;
    let sim = tokio::spawn(async move { phone.run_call().await });

    let mut leg = server.hub.call_device("elder-1").await.unwrap();
    leg.wait_connected(T).await.unwrap();
    let prompt = leg.control().play(sine(440.0, 8000, SAMPLE_RATE as usize));
    // Whatever the phone says before the prompt has ended does not count.
    prompt.finished().await;
    let mut reply = Vec::new();
    let mut digits = String::new();
    tokio::time::timeout(T, async {
        while digits.len() < 2 {
            match leg.next_event().await {
                Some(LegEvent::Audio(f)) if rms(&f) > 500.0 => reply.extend(f),
                Some(LegEvent::Digit(d)) => digits.push(d),
                Some(LegEvent::Ended(r)) => panic!("ended: {r:?}"),
                None => panic!("closed"),
                _ => {}
            }
        }
    })
    .await
    .expect("reply and digits in time");
    assert!(
        reply.len() >= 16_000 * 9 / 10,
        "most of the 1 s reply: {}",
        reply.len()
    );
    assert!(tone_power_ratio(&reply[1600..], SAMPLE_RATE, 1000.0) > 0.8);
    assert_eq!(digits, "42");
    leg.control().hang_up();

    let report = sim.await.unwrap().unwrap();
    assert!(report.answered);
    assert_eq!(report.prompts_heard, 1);
    assert_eq!(report.ended, Some(EndReason::RemoteHangup));
    let loud: Vec<i16> = report
        .heard
        .chunks(320)
        .filter(|f| rms(f) > 500.0)
        .flatten()
        .copied()
        .collect();
    assert!(tone_power_ratio(&loud[1600..], SAMPLE_RATE, 440.0) > 0.8);
    let recorded = voicecare_telephony::sim::read_wav_16k(&dir.path().join("heard.wav")).unwrap();
    assert_eq!(recorded.len(), report.heard.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_phone_can_ignore_decline_or_hang_up_mid_call() {
    let server = Server::start(HubConfig {
        leg: LegConfig::loopback(),
        ring_timeout: Duration::from_millis(400),
        ..HubConfig::default()
    })
    .await;
    let dir = Path::new(".");
    let mut ignoring = SimPhone::connect(
        server.client("elder-2"),
        script(dir, "on_ring = \"ignore\"\n"),
    )
    .await
    .unwrap();
    let mut declining = SimPhone::connect(
        server.client("elder-3"),
        script(dir, "on_ring = \"decline\"\n"),
    )
    .await
    .unwrap();
    let hanging = script(
        dir,
        "[[step]]\ndo = \"silence\"\nms = 300\n[[step]]\ndo = \"hang_up\"\n",
    );
    let mut hanging = SimPhone::connect(server.client("elder-4"), hanging)
        .await
        .unwrap();
    for id in ["elder-2", "elder-3", "elder-4"] {
        server.wait_registered(id).await;
    }
    let a = tokio::spawn(async move { ignoring.run_call().await });
    let b = tokio::spawn(async move { declining.run_call().await });
    let c = tokio::spawn(async move { hanging.run_call().await });

    let err = server.hub.call_device("elder-2").await.unwrap_err();
    assert!(matches!(err, TelephonyError::NoAnswer), "{err}");
    let err = server.hub.call_device("elder-3").await.unwrap_err();
    assert!(
        matches!(err, TelephonyError::Declined(HangupReason::Declined)),
        "{err}"
    );
    let mut leg = server.hub.call_device("elder-4").await.unwrap();
    let t0 = std::time::Instant::now();
    let (_, _, reason) = common::drain_until_end(&mut leg).await;
    assert_eq!(reason, EndReason::RemoteHangup);
    assert!(t0.elapsed() < Duration::from_secs(2));

    let ra = a.await.unwrap().unwrap();
    assert!(!ra.answered);
    assert_eq!(ra.ring_ended, Some(HangupReason::NoAnswer));
    assert!(!b.await.unwrap().unwrap().answered);
    let rc = c.await.unwrap().unwrap();
    assert_eq!(rc.ended, Some(EndReason::LocalHangup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sim_elders_call_in_from_one_process() {
    let server = Server::loopback().await;
    let n = 6;
    let mut phones = Vec::new();
    for i in 0..n {
        let s = script(
            Path::new("."),
            "call_in = true\n[[step]]\ndo = \"tone\"\nhz = 1000\nms = 600\n",
        );
        phones.push(
            SimPhone::connect(server.client(&format!("elder-{i}")), s)
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = phones
        .into_iter()
        .map(|mut p| tokio::spawn(async move { p.run_call().await }))
        .collect();
    let mut legs = Vec::new();
    for _ in 0..n {
        legs.push(server.next_incoming().await);
    }
    let mut checks = Vec::new();
    for call in legs {
        checks.push(tokio::spawn(async move {
            let mut leg = call.leg;
            let mut loud = Vec::new();
            tokio::time::timeout(T, async {
                while loud.len() < 320 * 20 {
                    match leg.next_event().await {
                        Some(LegEvent::Audio(f)) if rms(&f) > 500.0 => loud.extend(f),
                        Some(LegEvent::Ended(r)) => panic!("ended {r:?}"),
                        None => panic!("closed"),
                        _ => {}
                    }
                }
            })
            .await
            .expect("tone from every elder");
            assert!(tone_power_ratio(&loud[1600..], SAMPLE_RATE, 1000.0) > 0.8);
            leg.control().hang_up();
        }));
    }
    for c in checks {
        c.await.unwrap();
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.ended, Some(EndReason::RemoteHangup));
    }
}
