//! Real WebRTC over loopback: two legs in one process.

use std::time::Duration;

use voicecare_telephony::audio::{SAMPLE_RATE, sine, tone_power_ratio};
use voicecare_telephony::{CallLeg, Codec, EndReason, LegConfig, LegEvent, PlayOutcome};

const T: Duration = Duration::from_secs(10);

async fn connect(codecs: Vec<Codec>) -> (CallLeg, CallLeg) {
    let config = LegConfig {
        codecs,
        ..LegConfig::loopback()
    };
    let outgoing = CallLeg::offer(&config).await.expect("offer");
    assert!(outgoing.sdp().contains("telephone-event"), "DTMF offered");
    let (mut device, answer) = CallLeg::answer(&config, outgoing.sdp())
        .await
        .expect("answer");
    let mut engine = outgoing.accept_answer(&answer).await.expect("accept");
    engine.wait_connected(T).await.expect("engine connected");
    device.wait_connected(T).await.expect("device connected");
    (engine, device)
}

/// Collect audio until `n` frames with signal (rms above a floor) are in.
async fn collect_loud(leg: &mut CallLeg, n: usize) -> Vec<i16> {
    let mut out = Vec::new();
    let mut loud = 0;
    tokio::time::timeout(T, async {
        while loud < n {
            match leg.next_event().await {
                Some(LegEvent::Audio(f)) => {
                    assert_eq!(f.len(), 320);
                    if voicecare_telephony::audio::rms(&f) > 500.0 {
                        loud += 1;
                        out.extend(f);
                    }
                }
                Some(LegEvent::Ended(r)) => panic!("ended early: {r:?}"),
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("audio in time");
    out
}

async fn tones_both_ways(codec: Codec) {
    let (mut engine, mut device) = connect(vec![codec]).await;
    assert_eq!(engine.codec(), codec);
    assert_eq!(device.codec(), codec);
    let prompt = engine
        .control()
        .play(sine(440.0, 8000, SAMPLE_RATE as usize));
    let reply = device
        .control()
        .play(sine(1000.0, 8000, SAMPLE_RATE as usize));

    let heard_by_device = collect_loud(&mut device, 25).await;
    let heard_by_engine = collect_loud(&mut engine, 25).await;
    // Skip the first frames: codec and filter start-up.
    let d = &heard_by_device[1600..];
    let e = &heard_by_engine[1600..];
    assert!(
        tone_power_ratio(d, SAMPLE_RATE, 440.0) > 0.8,
        "device hears 440 Hz"
    );
    assert!(tone_power_ratio(d, SAMPLE_RATE, 1000.0) < 0.1);
    assert!(
        tone_power_ratio(e, SAMPLE_RATE, 1000.0) > 0.8,
        "engine hears 1 kHz"
    );
    assert!(tone_power_ratio(e, SAMPLE_RATE, 440.0) < 0.1);
    assert_eq!(prompt.finished().await, PlayOutcome::Completed);
    assert_eq!(reply.finished().await, PlayOutcome::Completed);
    engine.control().hang_up();
    device.control().hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_carries_audio_both_ways() {
    tones_both_ways(Codec::Pcmu).await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_carries_audio_both_ways() {
    tones_both_ways(Codec::Opus).await;
}

async fn digits_arrive_in_order(codec: Codec) {
    let (engine, mut device) = connect(vec![codec]).await;
    engine.control().send_digits("1234567890*#").unwrap();
    assert!(engine.control().send_digits("12x").is_err());
    let mut got = String::new();
    tokio::time::timeout(T, async {
        while got.len() < 12 {
            match device.next_event().await {
                Some(LegEvent::Digit(d)) => got.push(d),
                Some(LegEvent::Ended(r)) => panic!("ended: {r:?}"),
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    })
    .await
    .expect("digits in time");
    assert_eq!(got, "1234567890*#");
    engine.control().hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_digits_arrive_in_order_pcmu() {
    digits_arrive_in_order(Codec::Pcmu).await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_digits_arrive_in_order_opus() {
    digits_arrive_in_order(Codec::Opus).await;
}

async fn wait_end(leg: &mut CallLeg) -> EndReason {
    tokio::time::timeout(T, async {
        loop {
            match leg.next_event().await {
                Some(LegEvent::Ended(r)) => return r,
                Some(_) => {}
                None => panic!("closed without Ended"),
            }
        }
    })
    .await
    .expect("ended in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_playback_interrupts_and_hang_up_ends() {
    let config = LegConfig {
        media_loss_timeout: Duration::from_secs(2),
        codecs: vec![Codec::Pcmu],
        ..LegConfig::loopback()
    };
    let outgoing = CallLeg::offer(&config).await.unwrap();
    let (mut device, answer) = CallLeg::answer(&config, outgoing.sdp()).await.unwrap();
    let mut engine = outgoing.accept_answer(&answer).await.unwrap();
    engine.wait_connected(T).await.unwrap();
    device.wait_connected(T).await.unwrap();
    let long = engine
        .control()
        .play(sine(440.0, 8000, SAMPLE_RATE as usize * 10));
    tokio::time::sleep(Duration::from_millis(100)).await;
    engine.control().stop_playback();
    assert_eq!(long.finished().await, PlayOutcome::Interrupted);

    engine.control().hang_up();
    assert_eq!(wait_end(&mut engine).await, EndReason::LocalHangup);
    assert!(
        engine.next_event().await.is_none(),
        "Ended is the last event"
    );
    // Without signalling, the device learns from the media path going quiet.
    let t0 = std::time::Instant::now();
    assert_eq!(wait_end(&mut device).await, EndReason::ConnectionFailed);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // Playing after the end resolves at once.
    let late = engine.control().play(vec![0; 320]);
    assert_eq!(late.finished().await, PlayOutcome::Interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sdp_is_a_clear_error() {
    let config = LegConfig::loopback();
    let err = CallLeg::answer(&config, "this is not sdp")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SDP"), "{err}");
    let no_codec = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 9\r\na=rtpmap:9 G722/8000\r\n";
    let err = CallLeg::answer(&config, no_codec).await.unwrap_err();
    assert!(err.to_string().contains("codec"), "{err}");
    let outgoing = CallLeg::offer(&config).await.unwrap();
    let err = outgoing.accept_answer("v=0\r\ngarbage").await.unwrap_err();
    assert!(err.to_string().contains("SDP"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_telephone_event_digits_are_refused_not_lost() {
    let config = LegConfig {
        codecs: vec![Codec::Pcmu],
        ..LegConfig::loopback()
    };
    let outgoing = CallLeg::offer(&config).await.unwrap();
    // A peer that offers no telephone-event (a plain SIP-style offer).
    let stripped: String = outgoing
        .sdp()
        .lines()
        .filter(|l| !l.contains("telephone-event") && !l.starts_with("a=fmtp:101"))
        .map(|l| {
            if l.starts_with("m=audio") {
                l.replace(" 101", "")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    let (device, answer) = CallLeg::answer(&config, &stripped).await.unwrap();
    assert!(!answer.contains("telephone-event"));
    let err = device.control().send_digits("1").unwrap_err();
    assert!(err.to_string().contains("DTMF"), "{err}");
    let engine = outgoing.accept_answer(&answer).await.unwrap();
    assert!(engine.control().send_digits("1").is_err());
    engine.control().hang_up();
    device.control().hang_up();
}
