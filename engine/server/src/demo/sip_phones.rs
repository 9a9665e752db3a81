//! The demo's elders on ordinary phones: one SIP endpoint plays the
//! carrier's trunk and every elder's phone behind it. The engine's trunk
//! points here; each INVITE names the elder's number, and the phone with
//! that number follows its script (answer, let it ring, decline) over G.711,
//! exactly as a device's script runs over WebRTC.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use voicecare_sip::{IncomingCall, SipGateway, Trunk};
use voicecare_telephony::LegConfig;
use voicecare_telephony::sim::{OnRing, SimReport, SimScript};

/// What a phone reports after each call: the elder's id and the call's report.
pub type Reports = tokio::sync::mpsc::UnboundedSender<(i64, SimReport)>;

/// The phones, reachable at [`PhoneBank::addr`].
pub struct PhoneBank {
    gateway: Arc<SipGateway>,
    task: tokio::task::JoinHandle<()>,
}

impl PhoneBank {
    /// Start the phones: `scripts` maps each E.164 number to its elder and
    /// script. Calls may come from loopback only.
    pub async fn start(
        scripts: HashMap<String, (i64, SimScript)>,
        reports: Reports,
    ) -> anyhow::Result<PhoneBank> {
        let scripts = Arc::new(scripts);
        PhoneBank::serve(move |call| {
            let (scripts, reports) = (scripts.clone(), reports.clone());
            async move {
                // The engine dials what is enrolled, E.164 with its `+`.
                match scripts.get(call.called()) {
                    Some((id, script)) => {
                        if let Some(r) = ring(call, script).await {
                            let _ = reports.send((*id, r));
                        }
                    }
                    None => call.reject(404, "no such phone"),
                }
            }
        })
        .await
    }

    /// Start the carrier's endpoint and hand every call it is sent, each on
    /// its own task, to `on_call` (which answers, refuses or lets it ring).
    /// Calls may come from loopback only.
    pub async fn serve<F, Fut>(on_call: F) -> anyhow::Result<PhoneBank>
    where
        F: Fn(IncomingCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // The bank only answers; the trunk host is where it would call out to.
        let mut trunk = Trunk::new("demo-phones", "127.0.0.1", 5060);
        trunk.bind = "127.0.0.1:0".parse()?;
        trunk.rtp_ports = 30_000..=39_999;
        trunk.accept_from = vec!["127.0.0.1".parse()?];
        let gateway = Arc::new(
            SipGateway::start(trunk, LegConfig::loopback())
                .await
                .context("the simulated phones cannot start SIP")?,
        );
        let mut calls = gateway
            .take_incoming()
            .context("the phones' calls are taken once")?;
        let task = tokio::spawn(async move {
            while let Some(call) = calls.recv().await {
                tokio::spawn(on_call(call));
            }
        });
        Ok(PhoneBank { gateway, task })
    }

    /// Where the engine's trunk should point.
    pub fn addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// The `serve` flags that make the engine's trunk this bank, on loopback.
    pub fn engine_args(&self) -> Vec<String> {
        vec![
            "--sip-trunk".to_string(),
            self.addr().to_string(),
            "--sip-bind".into(),
            "127.0.0.1:0".into(),
            "--sip-from".into(),
            "+861012345678".into(),
        ]
    }
}

impl Drop for PhoneBank {
    fn drop(&mut self) {
        self.task.abort();
        self.gateway.shutdown();
    }
}

/// One call to one phone, per its script.
async fn ring(mut call: IncomingCall, script: &SimScript) -> Option<SimReport> {
    let rang_at = Instant::now();
    let mut report = SimReport::default();
    match script.on_ring {
        OnRing::Decline => {
            call.reject(603, "declined");
            return Some(report);
        }
        OnRing::Ignore => {
            call.cancelled().await;
            return Some(report);
        }
        OnRing::Answer => {}
    }
    if script.answer_after_ms > 0 {
        let wait = Duration::from_millis(script.answer_after_ms);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = call.cancelled() => return Some(report),
        }
    }
    let leg = match call.answer().await {
        Ok(leg) => leg,
        Err(e) => {
            tracing::warn!(error = %e, "a simulated phone could not answer");
            return None;
        }
    };
    report = script
        .talk_on(leg, Some(rang_at), report)
        .await
        .map_err(|e| tracing::warn!(error = %e, "a simulated phone's call failed"))
        .ok()?;
    Some(report)
}
