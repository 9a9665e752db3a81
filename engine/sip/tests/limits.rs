//! A trunk's call rate and channel count, as the trunk itself sees them:
//! SIPp plays the trunk on loopback, takes many calls side by side, and its
//! message log (`-trace_msg`) is the record the assertions read. Nothing
//! the gateway says about itself is trusted here. One test at a time, like
//! `trunk.rs`: each SIPp run is its own process with its own ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use voicecare_core::session::SetupFailure;
use voicecare_sip::{SipGateway, Trunk};
use voicecare_telephony::{EndReason, LegConfig, LegEvent};

static SERIAL: Mutex<()> = Mutex::const_new(());

#[path = "../../../tests/support/ports.rs"]
mod ports;

#[path = "peer/sipp.rs"]
mod sipp;
use sipp::{PEER_TIMEOUT, Ports, Sipp};

impl Sipp {
    /// SIPp playing the trunk for `calls` calls, side by side as they come.
    async fn start(scenario: &str, calls: usize) -> Self {
        let ports = Ports {
            signalling: (40_000, 43_000),
            media: (43_000, 45_000),
        };
        Sipp::spawn(scenario, ports, &["-m", &calls.to_string()]).await
    }

    /// What SIPp logged, message by message.
    fn trace(&self) -> Vec<Logged> {
        parse_trace(&self.messages())
    }
}

/// One message in SIPp's message log.
#[derive(Debug)]
struct Logged {
    /// Seconds, on SIPp's clock, when SIPp received or sent it.
    at: f64,
    received: bool,
    /// The request or status line.
    first_line: String,
    call_id: String,
}

impl Logged {
    fn is_request(&self, method: &str) -> bool {
        self.first_line.starts_with(&format!("{method} "))
    }
}

/// SIPp's `-trace_msg` log: each message follows a line of dashes and a
/// local timestamp (`2026-01-31 23:59:59.123456`), then `UDP message
/// received [n] bytes :` or `UDP message sent (n bytes):`.
fn parse_trace(log: &str) -> Vec<Logged> {
    const RULE: &str = "----------------------------------------------- ";
    let mut out = Vec::new();
    for entry in log.split(RULE).skip(1) {
        let mut lines = entry.lines();
        let stamp = lines.next().unwrap_or_default().trim();
        let direction = lines.next().unwrap_or_default();
        let mut rest = lines.skip_while(|l| l.trim().is_empty());
        let first_line = rest.next().unwrap_or_default().trim().to_string();
        let call_id = rest
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                (name.eq_ignore_ascii_case("Call-ID") || name == "i").then(|| value.trim())
            })
            .unwrap_or_default()
            .to_string();
        out.push(Logged {
            at: seconds(stamp).unwrap_or_else(|| panic!("a SIPp timestamp: {stamp:?}")),
            received: direction.contains("received"),
            first_line,
            call_id,
        });
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` as seconds since 1970 (the zone does not
/// matter: only differences are used).
fn seconds(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.split_once([' ', '\t'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

/// When each call's first `method` request came, by Call-ID, as SIPp
/// received (`received`) or sent it. Retransmissions keep the first time.
fn first_requests(trace: &[Logged], method: &str, received: bool) -> BTreeMap<String, f64> {
    let mut at = BTreeMap::new();
    for m in trace
        .iter()
        .filter(|m| m.received == received && m.is_request(method))
    {
        at.entry(m.call_id.clone()).or_insert(m.at);
    }
    at
}

async fn gateway(sipp: &Sipp, adjust: impl FnOnce(&mut Trunk)) -> Arc<SipGateway> {
    let mut trunk = Trunk::new("sipp", "127.0.0.1", sipp.addr.port());
    trunk.bind = "127.0.0.1:0".parse().unwrap();
    trunk.from_number = "+8610000000".into();
    trunk.rtp_ports = 45_000..=46_999;
    adjust(&mut trunk);
    Arc::new(
        SipGateway::start(trunk, LegConfig::loopback())
            .await
            .unwrap(),
    )
}

#[test]
fn sipp_timestamps_are_read_across_midnight() {
    let a = seconds("2026-12-31 23:59:59.750000").unwrap();
    let b = seconds("2027-01-01 00:00:00.250000").unwrap();
    assert!((b - a - 0.5).abs() < 1e-6, "{}", b - a);
    assert_eq!(seconds("1970-01-01 00:00:01.5"), Some(1.5));
    assert_eq!(seconds("garbage"), None);
}

/// Eight calls asked for at once through a trunk sold at 2 calls per
/// second reach it no faster than that, and none is dropped.
#[tokio::test]
async fn the_trunk_never_sees_more_invites_in_a_second_than_its_call_rate() {
    const CPS: usize = 2;
    const CALLS: usize = 8;
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-busy-at-once.xml", CALLS).await;
    let gw = gateway(&sipp, |t| t.calls_per_second = CPS as f64).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                tokio::time::timeout(PEER_TIMEOUT, gw.call("13800138000"))
                    .await
                    .expect("the call resolves")
            })
        })
        .collect();
    for call in calls {
        let failure = call.await.unwrap().expect_err("the trunk is busy");
        assert_eq!(failure.setup_failure(), SetupFailure::Busy, "{failure:?}");
    }
    assert_eq!(sipp.finish().await, 0, "sipp got every call's ACK");

    let invites = first_requests(&sipp.trace(), "INVITE", true);
    assert_eq!(
        invites.len(),
        CALLS,
        "every call reached the trunk: {invites:?}"
    );
    let mut times: Vec<f64> = invites.into_values().collect();
    times.sort_by(f64::total_cmp);
    // A 1 s window holds more than CPS INVITEs exactly when some INVITE
    // and the CPS-th after it are less than 1 s apart.
    for (i, pair) in times.windows(CPS + 1).enumerate() {
        let span = pair[CPS] - pair[0];
        assert!(
            span >= 1.0,
            "INVITEs {i}..={} reached the trunk within {span:.3} s: {times:?}",
            i + CPS
        );
    }
}

/// Five calls asked for at once through a trunk with two channels: the
/// trunk never carries more than two, the others are refused before they
/// reach it (`NoChannel`, which the ladder retries; here the test retries
/// at once) and every call is carried in the end.
#[tokio::test]
async fn the_trunk_never_carries_more_calls_at_once_than_its_channels() {
    const CHANNELS: usize = 2;
    const CALLS: usize = 5;
    let _serial = SERIAL.lock().await;
    let mut sipp = Sipp::start("uas-answer-hold-bye.xml", CALLS).await;
    let gw = gateway(&sipp, |t| t.max_channels = CHANNELS).await;
    // Every call is placed at once; those beyond the channels wait for one
    // (queued, not refused) and go out as the trunk's BYEs free them.
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut leg = tokio::time::timeout(PEER_TIMEOUT, gw.call("13800138000"))
                    .await
                    .expect("the call resolves")
                    .unwrap_or_else(|e| panic!("a call over the channels was not queued: {e:?}"));
                tokio::time::timeout(PEER_TIMEOUT, async {
                    while let Some(ev) = leg.next_event().await {
                        if let LegEvent::Ended(r) = ev {
                            return Some(r);
                        }
                    }
                    None
                })
                .await
                .expect("the trunk hangs up")
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Some(EndReason::RemoteHangup));
    }
    assert_eq!(sipp.finish().await, 0, "every call ran to its BYE's 200");

    let trace = sipp.trace();
    let invites = first_requests(&trace, "INVITE", true);
    let byes = first_requests(&trace, "BYE", false);
    assert_eq!(
        invites.len(),
        CALLS,
        "every call reached the trunk: {invites:?}"
    );
    assert_eq!(
        invites.keys().collect::<Vec<_>>(),
        byes.keys().collect::<Vec<_>>(),
        "the trunk hung up every call it took"
    );
    // A call is up at the trunk from its INVITE to its BYE. At equal times
    // the BYE counts first: a channel is freed by the BYE that ends its call.
    let mut events: Vec<(f64, i32)> = invites
        .values()
        .map(|&t| (t, 1))
        .chain(byes.values().map(|&t| (t, -1)))
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut up, mut most) = (0, 0);
    for (_, step) in &events {
        up += step;
        most = most.max(up);
    }
    assert_eq!(
        most, CHANNELS as i32,
        "calls up at once at the trunk: {events:?}"
    );
}
