//! Outbound calls through the gateway to a real SIP peer: SIPp plays the
//! trunk and the phone behind it, on loopback, one scenario per outcome.
//! The tests run one at a time: each SIPp run is a separate process with
//! its own ports, and two cores are better spent on one call at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use voicecare_core::session::SetupFailure;
use voicecare_sip::{CallFailure, Credentials, Secret, SipGateway, Transport, Trunk};
use voicecare_telephony::{CallLeg, Codec, EndReason, LegConfig, LegEvent};

static SERIAL: Mutex<()> = Mutex::const_new(());

#[path = "../../../tests/support/baresip.rs"]
mod baresip;
use baresip::Baresip;

/// The number baresip answers as.
const PHONE: &str = "13800138000";

#[path = "../../../tests/support/ports.rs"]
mod ports;
use ports::free_ports;

#[path = "peer/sipp.rs"]
mod sipp;
use sipp::{PEER_TIMEOUT, Ports, Sipp, scenarios};

/// This file's share of ports for SIPp.
const PORTS: Ports = Ports {
    signalling: (40_000, 43_000),
    media: (43_000, 45_000),
};

impl Sipp {
    /// SIPp serving one call of a scenario.
    async fn start(scenario: &str) -> Self {
        Self::start_with(scenario, &[]).await
    }

    async fn start_with(scenario: &str, extra: &[&str]) -> Self {
        Sipp::spawn(scenario, PORTS, &[&["-m", "1"], extra].concat()).await
    }
}

async fn gateway(sipp: &Sipp, adjust: impl FnOnce(&mut Trunk)) -> SipGateway {
    let mut trunk = Trunk::new("sipp", "127.0.0.1", sipp.addr.port());
    trunk.bind = "127.0.0.1:0".parse().unwrap();
    trunk.from_number = "+8610000000".into();
    trunk.rtp_ports = 45_000..=46_999;
    adjust(&mut trunk);
    SipGateway::start(trunk, LegConfig::loopback())
        .await
        .unwrap()
}

async fn call(gw: &SipGateway, number: &str) -> Result<CallLeg, CallFailure> {
    tokio::time::timeout(PEER_TIMEOUT, gw.call(number))
        .await
        .expect("the call resolves")
}

/// What a leg heard until `stop` said enough, or it ended.
#[derive(Debug, Default)]
struct Heard {
    /// 20 ms frames at speech level.
    loud_frames: usize,
    digits: String,
    ended: Option<EndReason>,
}

const SPEECH_RMS: f64 = 300.0;

async fn listen(leg: &mut CallLeg, mut stop: impl FnMut(&Heard) -> bool) -> Heard {
    let mut heard = Heard::default();
    let listening = async {
        while let Some(ev) = leg.next_event().await {
            match ev {
                LegEvent::Audio(f) => {
                    let rms = (f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64)
                        .sqrt();
                    if rms > SPEECH_RMS {
                        heard.loud_frames += 1;
                    }
                }
                LegEvent::Digit(d) => heard.digits.push(d),
                LegEvent::Ended(r) => {
                    heard.ended = Some(r);
                    return;
                }
                _ => {}
            }
            if stop(&heard) {
                return;
            }
        }
    };
    tokio::time::timeout(PEER_TIMEOUT, listening)
        .await
        .expect("the call went on too long");
    heard
}

async fn ended(leg: &mut CallLeg) -> EndReason {
    listen(leg, |_| false).await.ended.expect("an Ended event")
}

#[tokio::test]
async fn answered_call_hears_the_greeting_and_the_digit_then_the_far_end_hangs_up() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let t0 = Instant::now();
    let mut leg = call(&gw, "+86 138 0013 8000").await.expect("answered");
    assert!(t0.elapsed() >= Duration::from_secs(2), "it rang first");
    assert_eq!(leg.codec(), Codec::Pcma);
    let heard = listen(&mut leg, |_| false).await;
    // The greeting is about 11 s, half of it speech.
    assert!(heard.loud_frames >= 250, "{heard:?}");
    assert_eq!(heard.digits, "1");
    assert_eq!(heard.ended, Some(EndReason::RemoteHangup));
    assert_eq!(sipp.finish().await, 0);
}

#[tokio::test]
async fn hanging_up_the_leg_sends_bye() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-stay.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let heard = listen(&mut leg, |h| h.digits == "1").await;
    assert_eq!(heard.ended, None, "{heard:?}");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0, "sipp saw our BYE");
    let messages = sipp.messages();
    assert!(messages.contains("BYE sip:"), "{messages}");
}

#[tokio::test]
async fn a_call_whose_media_stops_is_ended_with_bye() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-silent.xml").await;
    let gw = gateway(&sipp, |t| t.rtp_timeout = Duration::from_secs(2)).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let t0 = Instant::now();
    assert_eq!(ended(&mut leg).await, EndReason::ConnectionFailed);
    let silent = t0.elapsed();
    assert!(
        silent >= Duration::from_millis(1900) && silent < Duration::from_secs(5),
        "{silent:?}"
    );
    assert_eq!(sipp.finish().await, 0, "sipp got our BYE");
}

#[tokio::test]
async fn refusals_map_to_their_outcomes() {
    let _serial = SERIAL.lock().await;
    for (scenario, code, outcome) in [
        ("uas-reject-486.xml", 486, SetupFailure::Busy),
        ("uas-reject-603.xml", 603, SetupFailure::Declined),
        ("uas-reject-480.xml", 480, SetupFailure::NoAnswer),
        ("uas-reject-404.xml", 404, SetupFailure::InvalidNumber),
        ("uas-reject-503.xml", 503, SetupFailure::TrunkFailure),
    ] {
        let mut sipp = Sipp::start(scenario).await;
        let gw = gateway(&sipp, |_| {}).await;
        let failure = call(&gw, "13800138000").await.expect_err(scenario);
        assert_eq!(failure.status_code(), Some(code), "{failure:?}");
        assert_eq!(failure.setup_failure(), outcome, "{failure:?}");
        assert_eq!(sipp.finish().await, 0, "{scenario}: sipp got its ACK");
    }
}

#[tokio::test]
async fn a_phone_ringing_too_long_is_cancelled_as_no_answer() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-ring-noanswer.xml").await;
    let gw = gateway(&sipp, |t| t.ring_timeout = Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let failure = call(&gw, "13800138000").await.expect_err("not answered");
    let rang = t0.elapsed();
    assert_eq!(failure, CallFailure::RingTimeout);
    assert_eq!(failure.setup_failure(), SetupFailure::NoAnswer);
    assert!(
        rang >= Duration::from_secs(2) && rang < Duration::from_secs(6),
        "{rang:?}"
    );
    assert_eq!(
        sipp.finish().await,
        0,
        "sipp got CANCEL and the ACK of its 487"
    );
    let messages = sipp.messages();
    assert!(messages.contains("CANCEL sip:"), "{messages}");
}

#[tokio::test]
async fn an_answer_with_unusable_sdp_is_hung_up() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-bad-sdp.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let failure = call(&gw, "13800138000").await.expect_err("no usable media");
    assert!(matches!(failure, CallFailure::BadAnswer(_)), "{failure:?}");
    assert_eq!(failure.setup_failure(), SetupFailure::CodecMismatch);
    assert_eq!(sipp.finish().await, 0, "sipp got ACK and BYE");
}

#[tokio::test]
async fn garbage_on_the_media_port_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-stay.xml").await;
    // One even port, so the test knows where our RTP is.
    let rtp_port = free_ports(47_000, 48_000, 2);
    let gw = gateway(&sipp, |t| t.rtp_ports = rtp_port..=rtp_port + 1).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let first = listen(&mut leg, |h| h.loud_frames > 0).await;
    assert_eq!(first.ended, None);

    // Junk, truncated headers, and well-formed RTP of our codec with a loud
    // payload, from a stranger: none of it may reach the call.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], rtp_port));
    let blast = tokio::spawn(async move {
        for i in 0..400u32 {
            let len = (i as usize * 37) % 300;
            let junk: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            let _ = stranger.send_to(&junk, target).await;
            let _ = stranger.send_to(&[0x80, 0x08, 0x00], target).await;
            let mut rtp = vec![0x80, 0x08, 0, i as u8, 0, 0, 0, 0, 1, 2, 3, 4];
            rtp.extend([0xAA; 160]);
            let _ = stranger.send_to(&rtp, target).await;
            let mut dtmf = vec![0x80, 101, 0, i as u8, 0, 0, 0, 0, 1, 2, 3, 4];
            dtmf.extend([9, 0x8a, 0, 160]);
            let _ = stranger.send_to(&dtmf, target).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let heard = listen(&mut leg, |h| h.digits.contains('1')).await;
    blast.await.unwrap();
    assert_eq!(heard.digits, "1", "only the callee's digit: {heard:?}");
    assert!(heard.loud_frames >= 200, "{heard:?}");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0);
}

#[tokio::test]
async fn a_challenged_invite_is_answered_with_digest_credentials() {
    let _serial = SERIAL.lock().await;
    let credentials = |password: &str| Credentials {
        username: "care".into(),
        password: Secret::new(password),
    };

    let mut sipp = Sipp::start("uas-auth-answer.xml").await;
    let gw = gateway(&sipp, |t| t.credentials = Some(credentials("secret"))).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered after auth");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0);
    let messages = sipp.messages();
    assert!(messages.contains("Authorization: Digest"), "{messages}");

    let mut sipp = Sipp::start("uas-auth-answer.xml").await;
    let gw = gateway(&sipp, |t| t.credentials = Some(credentials("wrong"))).await;
    let failure = call(&gw, "13800138000").await.expect_err("refused");
    assert_eq!(failure.status_code(), Some(403), "{failure:?}");
    assert_eq!(sipp.finish().await, 0);
}

/// The value of `name` in a digest header line.
fn param<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} in {line}"));
    let v = &line[at + name.len() + 1..];
    match v.strip_prefix('"') {
        Some(q) => &q[..q.find('"').unwrap()],
        None => v.split([',', ' ', '\r']).next().unwrap(),
    }
}

#[tokio::test]
async fn a_proxy_offering_sha256_and_md5_gets_a_correct_sha256_digest() {
    use sha2::{Digest, Sha256};
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-auth-sha256.xml").await;
    let gw = gateway(&sipp, |t| {
        t.credentials = Some(Credentials {
            username: "care".into(),
            password: Secret::new("secret"),
        })
    })
    .await;
    let mut leg = call(&gw, "13800138000").await.expect("answered after auth");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0, "SIPp saw algorithm=SHA-256");
    let messages = sipp.messages();
    let line = messages
        .lines()
        .find(|l| l.starts_with("Proxy-Authorization:"))
        .unwrap_or_else(|| panic!("no Proxy-Authorization:\n{messages}"));
    // RFC 7616 §3.4.1, computed here independently of the gateway.
    let h = |s: String| format!("{:x}", Sha256::digest(s.as_bytes()));
    let ha1 = h(format!("care:{}:secret", param(line, "realm")));
    let ha2 = h(format!("INVITE:{}", param(line, "uri")));
    let want = h(format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        param(line, "nonce"),
        param(line, "nc"),
        param(line, "cnonce")
    ));
    assert_eq!(param(line, "algorithm"), "SHA-256");
    assert_eq!(param(line, "response"), want, "{line}");
}

#[tokio::test]
async fn signalling_over_tcp() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start_with("uas-reject-486.xml", &["-t", "t1"]).await;
    let gw = gateway(&sipp, |t| t.transport = Transport::Tcp).await;
    let failure = call(&gw, "13800138000").await.expect_err("busy");
    assert_eq!(failure.setup_failure(), SetupFailure::Busy, "{failure:?}");
    assert_eq!(sipp.finish().await, 0);
}

#[tokio::test]
async fn a_real_phone_answers_hears_us_and_is_heard() {
    let _serial = SERIAL.lock().await;
    let mut phone = Baresip::start(&scenarios().join("greeting.wav"), PHONE).await;
    let mut trunk = Trunk::new("baresip", "127.0.0.1", phone.addr.port());
    trunk.bind = "127.0.0.1:0".parse().unwrap();
    trunk.rtp_ports = 45_000..=46_999;
    let gw = SipGateway::start(trunk, LegConfig::loopback())
        .await
        .unwrap();
    let mut leg = call(&gw, PHONE).await.expect("answered");
    assert_eq!(leg.codec(), Codec::Pcma);

    // A second of 440 Hz at a speaking level, while we listen to its greeting.
    let tone: Vec<i16> = (0..16_000)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 8000.0) as i16)
        .collect();
    let played = leg.control().play(tone);
    let heard = listen(&mut leg, |h| h.loud_frames >= 100).await;
    assert_eq!(heard.ended, None, "{heard:?}");
    let _ = tokio::time::timeout(Duration::from_secs(5), played.finished()).await;
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let level = phone.loudest_second_heard().await;
    // 8000 peak is about 5700 RMS; G.711 and resampling keep most of it.
    assert!(level > 3000.0, "the phone heard our tone at RMS {level}");
}

#[tokio::test]
async fn info_digits_count_and_a_held_call_survives_its_silence() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-info-hold.xml").await;
    // Held for about 6 s without RTP: twice this timeout.
    let gw = gateway(&sipp, |t| t.rtp_timeout = Duration::from_secs(3)).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let heard = listen(&mut leg, |_| false).await;
    assert_eq!(
        heard.digits, "75",
        "INFO's 7, then RFC 4733's 5 after the hold: {heard:?}"
    );
    assert_eq!(heard.ended, Some(EndReason::RemoteHangup), "{heard:?}");
    assert_eq!(
        sipp.finish().await,
        0,
        "sipp saw recvonly to its hold and sendrecv to its resume:\n{}",
        sipp.messages()
    );
}

#[tokio::test]
async fn a_codec_change_we_cannot_follow_is_refused_and_the_call_goes_on() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-reinvite-codec.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let heard = listen(&mut leg, |_| false).await;
    // The digit sent after the refused re-INVITE arrived, and the call
    // ended with the far end's BYE, not before.
    assert_eq!(heard.digits, "4", "{heard:?}");
    assert_eq!(heard.ended, Some(EndReason::RemoteHangup), "{heard:?}");
    assert_eq!(
        sipp.finish().await,
        0,
        "sipp got 488 to its PCMU-only re-INVITE:\n{}",
        sipp.messages()
    );
}

#[tokio::test]
async fn we_refresh_the_session_when_the_far_end_makes_us_the_refresher() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-session-refresh.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    assert_eq!(ended(&mut leg).await, EndReason::RemoteHangup);
    let messages = sipp.messages();
    assert_eq!(
        sipp.finish().await,
        0,
        "three UPDATEs came within 4 s each:\n{messages}"
    );
    let invite = messages.split("UPDATE sip:").next().unwrap();
    assert!(invite.contains("Supported: timer"), "{invite}");
}

#[tokio::test]
async fn a_session_the_far_end_stops_refreshing_is_ended_before_it_expires() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-session-expire.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let t0 = Instant::now();
    assert_eq!(ended(&mut leg).await, EndReason::ConnectionFailed);
    // 6 s interval, refreshed by them: we give up a third early, at 4 s.
    let lasted = t0.elapsed();
    assert!(
        lasted >= Duration::from_millis(3500) && lasted < Duration::from_secs(6),
        "{lasted:?}"
    );
    assert_eq!(
        sipp.finish().await,
        0,
        "sipp got our BYE:\n{}",
        sipp.messages()
    );
}

/// Wait until the gateway's registration satisfies `done`.
async fn registration_until(
    gw: &SipGateway,
    done: impl Fn(&voicecare_sip::RegistrationState) -> bool,
) -> voicecare_sip::RegistrationState {
    let mut rx = gw.registration();
    let settled = tokio::time::timeout(PEER_TIMEOUT, rx.wait_for(|s| done(s)))
        .await
        .expect("registration settles")
        .expect("the gateway is running");
    settled.clone()
}

#[tokio::test]
async fn registers_with_digest_and_refreshes_at_half_the_granted_time() {
    use voicecare_sip::RegistrationState::Registered;
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-registrar.xml").await;
    let gw = gateway(&sipp, |t| {
        t.register_expires = Some(600);
        t.credentials = Some(Credentials {
            username: "care".into(),
            password: Secret::new("secret"),
        });
    })
    .await;
    let first = registration_until(&gw, |s| matches!(s, Registered { .. })).await;
    assert_eq!(
        first,
        Registered {
            expires: Duration::from_secs(2)
        }
    );
    let t0 = Instant::now();
    let refreshed = registration_until(&gw, |s| {
        *s == Registered {
            expires: Duration::from_secs(600),
        }
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "{refreshed:?} after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        sipp.finish().await,
        0,
        "both digests verified:\n{}",
        sipp.messages()
    );
    let messages = sipp.messages();
    let register = format!("REGISTER sip:127.0.0.1:{} SIP/2.0", sipp.addr.port());
    assert!(messages.contains(&register), "{messages}");
    assert!(messages.contains("Expires: 600"), "{messages}");
    assert!(messages.contains("<sip:care@127.0.0.1:"), "{messages}");
}

#[tokio::test]
async fn a_wrong_registration_password_is_reported_and_not_hidden() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-registrar.xml").await;
    let gw = gateway(&sipp, |t| {
        t.register_expires = Some(600);
        t.credentials = Some(Credentials {
            username: "care".into(),
            password: Secret::new("wrong"),
        });
    })
    .await;
    let state = registration_until(&gw, |s| {
        matches!(s, voicecare_sip::RegistrationState::Failed { .. })
    })
    .await;
    assert!(format!("{state:?}").contains("403"), "{state:?}");
    assert!(!format!("{state:?}").contains("wrong"), "{state:?}");
    assert_eq!(sipp.finish().await, 0);
}

#[tokio::test]
async fn an_outbound_proxy_gets_the_call_for_the_trunk() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer.xml").await;
    let gw = gateway(&sipp, |t| {
        // The trunk's own name need not resolve here: only the proxy is reached.
        t.host = "trunk.invalid".into();
        t.port = 5060;
        t.accept_from = vec!["127.0.0.1".parse().unwrap()];
        t.outbound_proxy = Some(("127.0.0.1".into(), sipp.addr.port()));
    })
    .await;
    let mut leg = call(&gw, "13800138000")
        .await
        .expect("answered through the proxy");
    let heard = listen(&mut leg, |_| false).await;
    assert_eq!(heard.digits, "1");
    assert_eq!(sipp.finish().await, 0);
    let messages = sipp.messages();
    assert!(
        messages.contains("INVITE sip:13800138000@trunk.invalid:5060 SIP/2.0"),
        "{messages}"
    );
    let route = format!("Route: <sip:127.0.0.1:{};lr>", sipp.addr.port());
    assert!(messages.contains(&route), "{messages}");
}

#[tokio::test]
async fn behind_a_one_to_one_nat_the_public_address_is_advertised() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-stay.xml").await;
    let gw = gateway(&sipp, |t| t.public_ip = Some("192.0.2.1".parse().unwrap())).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0, "sipp saw our BYE");
    let messages = sipp.messages();
    let invite = messages.split("SIP/2.0 100").next().unwrap();
    assert!(invite.contains("c=IN IP4 192.0.2.1"), "{invite}");
    let contact = format!("@192.0.2.1:{}", gw.local_addr().port());
    assert!(invite.contains(&contact), "{invite}");
}

#[tokio::test]
async fn a_carriers_announcement_in_early_media_is_kept_with_the_failure() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-early-media-480.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let attempt = tokio::time::timeout(PEER_TIMEOUT, gw.call_with_early_media("13800138000"))
        .await
        .expect("the call resolves");
    match &attempt.result {
        Err(f @ CallFailure::Refused { code: 480, .. }) => {
            assert_eq!(f.setup_failure(), SetupFailure::NoAnswer, "{f:?}")
        }
        other => panic!("expected 480, got {:?}", other.as_ref().map(|_| "a leg")),
    }
    // About 9 s of announcement, mostly speech, as 16 kHz PCM.
    let pcm = &attempt.early_media;
    let secs = pcm.len() as f64 / 16_000.0;
    assert!((7.0..=12.0).contains(&secs), "{secs} s of early media");
    let loud = pcm
        .chunks(320)
        .filter(|f| {
            (f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64).sqrt()
                > SPEECH_RMS
        })
        .count();
    assert!(loud >= 150, "{loud} loud frames");
    assert_eq!(sipp.finish().await, 0);
}

#[tokio::test]
async fn bound_to_every_interface_the_sdp_names_the_one_that_reaches_the_trunk() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-stay.xml").await;
    let gw = gateway(&sipp, |t| t.bind = "0.0.0.0:0".parse().unwrap()).await;
    let mut leg = call(&gw, "13800138000").await.expect("answered");
    let heard = listen(&mut leg, |h| h.digits == "1").await;
    assert_eq!(heard.digits, "1", "media flows both ways: {heard:?}");
    leg.control().hang_up();
    assert_eq!(ended(&mut leg).await, EndReason::LocalHangup);
    assert_eq!(sipp.finish().await, 0);
    let messages = sipp.messages();
    let invite = messages.split("SIP/2.0 100").next().unwrap();
    assert!(invite.contains("c=IN IP4 127.0.0.1"), "{invite}");
    assert!(!invite.contains("0.0.0.0"), "{invite}");
}

/// Malformed SIP sent to the gateway's signalling port: truncated messages,
/// garbage, bad headers. Requests that can be answered get a 4xx; nothing
/// stops the gateway, and a call placed afterwards works.
#[tokio::test]
async fn malformed_sip_is_refused_or_dropped_and_calls_carry_on() {
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer.xml").await;
    let gw = gateway(&sipp, |_| {}).await;
    let target = gw.local_addr();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let invite = |extra: &str, body: &str| {
        format!(
            "INVITE sip:service@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
             From: <sip:caller@{me}>;tag=1\r\nTo: <sip:service@{target}>\r\nCall-ID: {}@test\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nMax-Forwards: 70\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            rand::random::<u32>(),
            rand::random::<u32>(),
            body.len()
        )
    };
    let full = invite("Content-Type: application/sdp\r\n", "v=0\r\n");
    let garbage: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\xff\xfe".to_vec(),
        full.as_bytes()[..full.len() / 2].to_vec(),
        b"INVITE\r\n\r\n".to_vec(),
        invite("CSeq: banana\r\n", "").into_bytes(),
        full.replace("Content-Length: 5", "Content-Length: 99999")
            .into_bytes(),
        vec![b'A'; 60_000],
    ];
    for g in &garbage {
        sock.send_to(g, target).await.unwrap();
    }
    // A well-formed INVITE with an unusable body gets a final 4xx.
    sock.send_to(full.as_bytes(), target).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut finals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let code: u16 = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                if code >= 200 {
                    finals.push(code);
                }
            }
            _ if !finals.is_empty() => break,
            _ => {}
        }
    }
    assert!(
        !finals.is_empty() && finals.iter().all(|c| (400..500).contains(c)),
        "a 4xx for the INVITE we can answer, nothing else: {finals:?}"
    );
    // The gateway carries on.
    let mut leg = call(&gw, "13800138000")
        .await
        .expect("answered after the garbage");
    let heard = listen(&mut leg, |_| false).await;
    assert_eq!(heard.digits, "1");
    assert_eq!(sipp.finish().await, 0);
}
