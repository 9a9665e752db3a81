//! Several trunks, each a real SIPp on loopback: a trunk that fails a call
//! with 503 hands it to the next one, an elder's busy line is not rung
//! again through another trunk, and a trunk that stops answering OPTIONS
//! pings is marked down and passed over. One test at a time, like
//! `trunk.rs`: each SIPp run is its own process with its own ports.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;
use voicecare_core::session::SetupFailure;
use voicecare_sip::{CallFailure, HealthPolicy, SipGateway, Trunk, TrunkGroup};
use voicecare_telephony::{CallLeg, EndReason, LegConfig, LegEvent};

static SERIAL: Mutex<()> = Mutex::const_new(());

#[path = "../../../tests/support/ports.rs"]
mod ports;

#[path = "peer/sipp.rs"]
mod sipp;
use sipp::{PEER_TIMEOUT, Ports, Sipp, scenarios};

impl Sipp {
    /// SIPp playing one trunk. `extra` e.g. `["-m", "1"]` for one call,
    /// `["-aa"]` to answer pings.
    async fn start(scenario: &str, extra: &[&str]) -> Self {
        let ports = Ports {
            signalling: (51_000, 53_000),
            media: (53_000, 54_000),
        };
        Sipp::spawn(scenario, ports, extra).await
    }

    /// INVITEs this trunk received.
    fn invites(&self) -> usize {
        self.messages().matches("INVITE sip:").count()
    }
}

async fn gateway(name: &str, sipp: &Sipp) -> SipGateway {
    let mut trunk = Trunk::new(name, "127.0.0.1", sipp.addr.port());
    trunk.bind = "127.0.0.1:0".parse().unwrap();
    trunk.from_number = "+8610000000".into();
    trunk.rtp_ports = 54_000..=55_999;
    SipGateway::start(trunk, LegConfig::loopback())
        .await
        .unwrap()
}

/// A group of trunks `a` (preferred) and `b`.
async fn group(a: &Sipp, b: &Sipp, policy: HealthPolicy) -> TrunkGroup {
    let gateways = vec![gateway("a", a).await, gateway("b", b).await];
    TrunkGroup::new(gateways, policy).unwrap()
}

fn no_pings() -> HealthPolicy {
    HealthPolicy {
        ping_interval: None,
        ..HealthPolicy::default()
    }
}

async fn call(group: &TrunkGroup, number: &str) -> Result<CallLeg, CallFailure> {
    tokio::time::timeout(PEER_TIMEOUT, group.call(number))
        .await
        .expect("the call resolves")
}

async fn hang_up(mut leg: CallLeg) {
    leg.control().hang_up();
    let ended = async {
        while let Some(ev) = leg.next_event().await {
            if let LegEvent::Ended(r) = ev {
                return Some(r);
            }
        }
        None
    };
    let reason = tokio::time::timeout(PEER_TIMEOUT, ended).await.unwrap();
    assert_eq!(reason, Some(EndReason::LocalHangup));
}

/// Wait until the group's view of its trunks satisfies `done`.
async fn until(
    group: &TrunkGroup,
    what: &str,
    done: impl Fn(&[voicecare_sip::TrunkStatus]) -> bool,
) {
    let mut status = group.status();
    let waiting = async {
        loop {
            if done(&status.borrow_and_update()) {
                return;
            }
            status.changed().await.unwrap();
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .is_err()
    {
        panic!("{what}: {:?}", group.trunks());
    }
}

#[tokio::test]
async fn a_trunk_that_answers_503_hands_the_call_to_the_next_one() {
    let _serial = SERIAL.lock().await;
    let mut a = Sipp::start("uas-reject-503.xml", &["-m", "1"]).await;
    let mut b = Sipp::start("uas-answer-stay.xml", &["-m", "1"]).await;
    let g = group(&a, &b, no_pings()).await;
    let leg = call(&g, "13800138000").await.expect("answered through b");
    assert_eq!(a.finish().await, 0, "a refused with 503 and got its ACK");
    hang_up(leg).await;
    assert_eq!(b.finish().await, 0, "b answered and got our BYE");
    assert_eq!((a.invites(), b.invites()), (1, 1));
    let trunks = g.trunks();
    assert_eq!(trunks[0].name, "a");
    assert!(!trunks[0].up, "a failed a call: {trunks:?}");
    assert!(
        trunks[0].reason.as_deref().unwrap_or("").contains("503"),
        "{trunks:?}"
    );
    assert_eq!(trunks[0].failovers, 1);
    assert!(trunks[1].up);
    assert_eq!(trunks[1].failovers, 0);
}

#[tokio::test]
async fn when_every_trunk_fails_the_call_is_a_trunk_failure() {
    let _serial = SERIAL.lock().await;
    let mut a = Sipp::start("uas-reject-503.xml", &["-m", "1"]).await;
    let mut b = Sipp::start("uas-reject-503.xml", &["-m", "1"]).await;
    let g = group(&a, &b, no_pings()).await;
    let failure = call(&g, "13800138000").await.expect_err("both refuse");
    assert_eq!(failure.status_code(), Some(503));
    assert_eq!(failure.setup_failure(), SetupFailure::TrunkFailure);
    assert_eq!((a.finish().await, b.finish().await), (0, 0));
    let trunks = g.trunks();
    assert!(trunks.iter().all(|t| !t.up), "{trunks:?}");
    // Only the move from a to b is a failover: b had nothing after it.
    assert_eq!((trunks[0].failovers, trunks[1].failovers), (1, 0));
}

#[tokio::test]
async fn a_busy_line_is_not_rung_again_through_another_trunk() {
    let _serial = SERIAL.lock().await;
    let mut a = Sipp::start("uas-reject-486.xml", &["-m", "1"]).await;
    let b = Sipp::start("uas-answer.xml", &["-m", "1"]).await;
    let g = group(&a, &b, no_pings()).await;
    let failure = call(&g, "13800138000").await.expect_err("busy");
    assert_eq!(failure.setup_failure(), SetupFailure::Busy);
    assert_eq!(a.finish().await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.invites(), 0, "{}", b.messages());
    let trunks = g.trunks();
    assert!(trunks.iter().all(|t| t.up), "{trunks:?}");
    assert_eq!(trunks[0].failovers, 0);
}

#[tokio::test]
async fn a_trunk_that_stops_answering_options_is_marked_down_and_passed_over() {
    let _serial = SERIAL.lock().await;
    // a never answers a ping; b answers pings (-aa) and the call.
    let a = Sipp::start("uas-options-ignore.xml", &[]).await;
    let b = Sipp::start("uas-answer-stay.xml", &["-aa"]).await;
    let policy = HealthPolicy {
        ping_interval: Some(Duration::from_millis(300)),
        ping_timeout: Duration::from_millis(300),
        down_after: 2,
        ..HealthPolicy::default()
    };
    let g = group(&a, &b, policy).await;
    until(&g, "a goes down", |t| !t[0].up).await;
    let trunks = g.trunks();
    assert!(
        trunks[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("OPTIONS pings failed: no answer"),
        "{trunks:?}"
    );
    assert!(trunks[1].up, "b answers its pings: {trunks:?}");
    let leg = call(&g, "13800138000").await.expect("answered through b");
    hang_up(leg).await;
    assert_eq!(a.invites(), 0, "a was passed over:\n{}", a.messages());
    assert_eq!(b.invites(), 1);
    assert!(
        a.messages().contains("OPTIONS sip:127.0.0.1:"),
        "{}",
        a.messages()
    );
    assert_eq!(
        g.trunks()[0].failovers,
        0,
        "nothing failed over: a was skipped"
    );
}

#[tokio::test]
async fn a_trunk_that_answers_pings_again_comes_back_up() {
    let _serial = SERIAL.lock().await;
    let silent = Sipp::start("uas-options-ignore.xml", &[]).await;
    let b = Sipp::start("uas-options-ok.xml", &[]).await;
    let policy = HealthPolicy {
        ping_interval: Some(Duration::from_millis(300)),
        ping_timeout: Duration::from_millis(300),
        down_after: 2,
        ..HealthPolicy::default()
    };
    let port = silent.addr.port();
    let g = group(&silent, &b, policy).await;
    until(&g, "a goes down", |t| !t[0].up && t[1].up).await;
    // The trunk recovers: a peer answering pings takes its address.
    drop(silent);
    let mut answering = None;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        answering = Some(
            Command::new("sipp")
                .current_dir(scenarios())
                .args(["-sf", "uas-options-ok.xml", "-i", "127.0.0.1"])
                .args(["-p", &port.to_string(), "-nostdin", "-timeout", "50s"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start sipp"),
        );
        break;
    }
    assert!(answering.is_some(), "the trunk's port was not freed");
    until(&g, "a comes back up", |t| t[0].up).await;
    assert_eq!(g.trunks()[0].reason, None);
}

#[tokio::test]
async fn calls_into_the_service_from_every_trunk_arrive_in_one_queue() {
    let _serial = SERIAL.lock().await;
    let start = |name: &str, port: u16| {
        let mut trunk = Trunk::new(name, "127.0.0.1", port);
        trunk.bind = "127.0.0.1:0".parse().unwrap();
        trunk.rtp_ports = 54_000..=55_999;
        SipGateway::start(trunk, LegConfig::loopback())
    };
    // Nothing is called out: the trunks' own ports do not matter here.
    let gateways = vec![start("a", 9).await.unwrap(), start("b", 9).await.unwrap()];
    let g = TrunkGroup::new(gateways, no_pings()).unwrap();
    let mut incoming = g.take_incoming().expect("the queue");
    assert!(g.take_incoming().is_none(), "taken once");
    let second = g.gateways().nth(1).unwrap().local_addr().to_string();
    // SIPp as the second trunk delivering a call from an elder.
    let caller = Sipp::start(
        "uac-dial-in.xml",
        &[
            "-key",
            "caller",
            "+8613912345678",
            "-s",
            "95000",
            "-key",
            "offer",
            "8 0 101",
            "-m",
            "1",
            &second,
        ],
    )
    .await;
    let call = tokio::time::timeout(PEER_TIMEOUT, incoming.recv())
        .await
        .expect("a call arrives")
        .expect("the queue is open");
    assert_eq!(call.caller(), "+8613912345678");
    assert_eq!(call.called(), "95000");
    call.reject(486, "busy here");
    drop(caller);
}
