//! The transport port with a transport that is not WebRTC: two legs whose
//! RTP travels as plain UDP datagrams on loopback (what a SIP trunk's media
//! is), with their "signalling" done by the test. Prompt audio, keypad
//! digits and hang-up cross exactly as they do on a WebRTC leg.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;
use voicecare_telephony::port::{Media, RtpSink, RtpSource, TransportHandle, rtp_leg};
use voicecare_telephony::{CallLeg, Codec, EndReason, LegConfig, LegEvent};

struct UdpSink {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
}

#[async_trait::async_trait]
impl RtpSink for UdpSink {
    async fn send(&self, packet: rtp::Packet) -> Result<(), String> {
        let bytes = packet.marshal().map_err(|e| e.to_string())?;
        self.sock
            .send_to(&bytes, self.peer)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

struct UdpSource(Arc<UdpSocket>);

#[async_trait::async_trait]
impl RtpSource for UdpSource {
    async fn recv(&mut self) -> Option<rtp::Packet> {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, _) = self.0.recv_from(&mut buf).await.ok()?;
            // Garbage on the media port is skipped, not fatal.
            if let Ok(p) = rtp::Packet::unmarshal(&mut &buf[..n]) {
                return Some(p);
            }
        }
    }
}

async fn udp_pair() -> ((CallLeg, TransportHandle), (CallLeg, TransportHandle)) {
    let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let media = Media {
        codec: Codec::Pcmu,
        audio_pt: 0,
        dtmf: Some((101, 8000)),
    };
    let cfg = LegConfig::loopback();
    let leg_a = rtp_leg(
        media,
        Arc::new(UdpSink {
            sock: a.clone(),
            peer: b.local_addr().unwrap(),
        }),
        &cfg,
    );
    let leg_b = rtp_leg(
        media,
        Arc::new(UdpSink {
            sock: b.clone(),
            peer: a.local_addr().unwrap(),
        }),
        &cfg,
    );
    leg_a.1.receive(UdpSource(a));
    leg_b.1.receive(UdpSource(b));
    (leg_a, leg_b)
}

/// The next event that is not audio, within a few seconds.
async fn next_non_audio(leg: &mut CallLeg) -> LegEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match leg.next_event().await {
                Some(LegEvent::Audio(_)) | Some(LegEvent::PlaybackFinished { .. }) => continue,
                Some(ev) => return ev,
                None => panic!("the leg closed without an Ended event"),
            }
        }
    })
    .await
    .expect("an event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_digits_and_hang_up_cross_a_plain_rtp_transport() {
    let ((mut a, ta), (mut b, tb)) = udp_pair().await;
    ta.connected().await;
    tb.connected().await;
    assert_eq!(next_non_audio(&mut a).await, LegEvent::Connected);
    assert_eq!(next_non_audio(&mut b).await, LegEvent::Connected);

    // A prompt from A is heard at B as 20 ms frames of 16 kHz audio.
    let tone: Vec<i16> = (0..16_000)
        .map(|i| ((i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 8000.0) as i16)
        .collect();
    let played = a.control().play(tone);
    let mut loud = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while loud < 20 && tokio::time::Instant::now() < deadline {
        if let Ok(Some(LegEvent::Audio(f))) =
            tokio::time::timeout(Duration::from_secs(1), b.next_event()).await
        {
            assert_eq!(f.len(), 320, "20 ms at 16 kHz");
            let rms = (f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
            if rms > 1000.0 {
                loud += 1;
            }
        }
    }
    assert!(loud >= 20, "B heard A's prompt ({loud} loud frames)");
    assert_eq!(
        played.finished().await,
        voicecare_telephony::PlayOutcome::Completed
    );

    // A key pressed at B arrives at A as an RFC 4733 digit.
    b.control().send_digits("5").unwrap();
    assert_eq!(next_non_audio(&mut a).await, LegEvent::Digit('5'));

    // A hangs up; its transport learns it (and would send BYE); B's
    // transport is told the far end left.
    a.control().hang_up();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), ta.ended())
            .await
            .unwrap(),
        EndReason::LocalHangup
    );
    tb.end(EndReason::RemoteHangup);
    assert_eq!(
        next_non_audio(&mut a).await,
        LegEvent::Ended(EndReason::LocalHangup)
    );
    assert_eq!(
        next_non_audio(&mut b).await,
        LegEvent::Ended(EndReason::RemoteHangup)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_never_connects_ends_the_leg_as_failed() {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let peer = sock.local_addr().unwrap();
    let cfg = LegConfig {
        connect_timeout: Duration::from_millis(300),
        ..LegConfig::loopback()
    };
    let media = Media {
        codec: Codec::Pcmu,
        audio_pt: 0,
        dtmf: None,
    };
    let (mut leg, _t) = rtp_leg(media, Arc::new(UdpSink { sock, peer }), &cfg);
    assert_eq!(
        next_non_audio(&mut leg).await,
        LegEvent::Ended(EndReason::ConnectionFailed)
    );
    // Without telephone-event, keys are refused rather than lost.
    assert!(leg.control().send_digits("1").is_err());
}
