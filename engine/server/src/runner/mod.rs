//! The call runner: drives calls, decides nothing.
//!
//! What a call does is decided in `voicecare-core`: the call session
//! ([`voicecare_core::session`]) runs the flow, judges what the elder said
//! and decides whether, when and how to escalate; the ladder
//! ([`voicecare_core::schedule`]) decides whom to ring next. This module
//! performs their decisions against the line, speech recognition and the
//! store, and reports back what happened.
//!
//! * [`engine`]: what every call on this node shares.
//! * [`dialer`]: every node schedules check-ins, claims due calls under the
//!   caps, renews leases and rescues calls of dead nodes.
//! * [`call`]: one claimed or incoming call under its supervisor and lease.
//! * [`ladder`]: the attempts of a claimed call: ring, run the session,
//!   record the outcome, ask the ladder what next.
//! * [`driver`]: one answered call: feeds the session events from the
//!   line, the ears and the timer, performs its outputs.
//! * [`hearing`]: the ears of a call: the endpointer, readings of the
//!   elder's words by the speech-recognition pool, utterance audio on disk.
//! * [`record`]: what the driver writes (utterances, escalations), retried
//!   while the database is away.
//! * [`hold`] and [`live`]: elders held for operators, operators joining
//!   and calling back, the bridge and its recording.
//! * [`gateway`]: device authentication and calls devices place (dial-in).
//! * [`tts`]: prompt audio (recordings, or espeak-ng cached as WAV).
//!
//! The line is a [`voicecare_telephony::CallLeg`]: whatever transport
//! carries the call (WebRTC to devices, a SIP trunk to phone numbers) hands the runner the same leg of 16 kHz
//! frames, keypad digits and hang-up, so nothing here knows the transport.

pub mod call;
pub mod devices;
pub mod dialer;
pub mod driver;
pub mod engine;
pub mod gateway;
pub mod hearing;
pub mod hold;
pub mod ladder;
pub mod lease;
pub mod line;
pub mod live;
pub mod memory;
pub mod phone_in;
pub mod record;
pub mod spool;
pub mod tts;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use voicecare_core::schedule::LadderPolicy;
use voicecare_speech::AsrPool;
use voicecare_store::dialer::Caps;
use voicecare_telephony::signalling::SignallingHub;

pub use engine::{Engine, RunnerConfig, RunnerError};
pub use gateway::Gateway;

/// The signalling hub as the server runs it.
pub type Hub = SignallingHub<Gateway>;

/// What `voicecare serve` runs for calls: the signalling routes to merge
/// into the HTTP app, and the dialer loop.
pub struct Started {
    pub routes: axum::Router,
    pub engine: Option<Arc<Engine>>,
    /// Writes the database could not take yet (see [`spool`]).
    pub spool: Arc<spool::Spool>,
    dialer: Option<tokio::task::JoinHandle<()>>,
    reload: Option<tokio::task::JoinHandle<()>>,
    drainer: Option<tokio::task::JoinHandle<()>>,
}

impl Started {
    pub fn stop(self) {
        for task in [self.dialer, self.reload, self.drainer]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// SIGHUP reloads the flows directory. A broken file is refused with its
/// errors (file:line:col) in the log, and calls go on with the last good
/// version of that flow.
fn spawn_flow_reload(engine: Arc<Engine>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; flows load at start only");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match engine.load_flows() {
                    Ok(n) => tracing::info!(flows = n, "flows reloaded (SIGHUP)"),
                    Err(e) => {
                        tracing::error!(error = %e, "flows not reloaded; the loaded ones stay in use")
                    }
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = engine;
        None
    }
}

/// Build the signalling hub and, unless calls are off or speech recognition
/// cannot start, the engine and its dialer loop. A node that cannot hear
/// does not claim calls (other nodes take them) but still serves signalling,
/// so devices stay registered.
pub async fn start(
    pool: PgPool,
    db_args: &crate::config::DbArgs,
    args: &crate::config::ServeArgs,
) -> anyhow::Result<Started> {
    use voicecare_telephony::leg::LegConfig;
    use voicecare_telephony::signalling::HubConfig;
    let gateway = Gateway::new(pool.clone());
    let hub = SignallingHub::new(
        gateway.clone(),
        HubConfig {
            leg: LegConfig {
                bind: args.media_bind.clone(),
                ..LegConfig::default()
            },
            ring_timeout: Duration::from_secs(args.ring_secs),
            max_pending_per_ip: args.max_pending_device_sockets as usize,
            ..HubConfig::default()
        },
    );
    let routes = axum::Router::new().nest("/v1/devices", hub.router());
    // Every node drains the spool of its data directory, calls or not.
    let spool = spool::Spool::open(&db_args.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the spool under {}: {e}",
            db_args.data_dir.display()
        )
    })?;
    let drainer = spool::spawn_drainer(spool.clone(), pool.clone(), args.sla());
    let signalling_only = |routes, drainer| Started {
        routes,
        engine: None,
        dialer: Some(dialer::spawn_rescuer(
            pool.clone(),
            Duration::from_millis(args.dialer_tick_ms),
        )),
        reload: None,
        spool: spool.clone(),
        drainer: Some(drainer),
    };
    if args.no_calls {
        tracing::info!("calls are off on this node");
        return Ok(signalling_only(routes, drainer));
    }
    let model = match voicecare_speech::Model::load_named(&args.asr_model) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "speech recognition unavailable (install it with scripts/install-model.sh); this node will not run calls");
            return Ok(signalling_only(routes, drainer));
        }
    };
    let asr = AsrPool::new(&model, args.asr_workers as usize, 1)?;
    let cfg = runner_config(db_args, args);
    let sip = sip_gateway(&args.sip, Duration::from_secs(args.ring_secs)).await?;
    let engine = Engine::new(pool, cfg, Arc::new(asr), spool.clone(), sip)?;
    engine.set_hub(hub.clone());
    gateway.attach(&engine);
    tracing::info!(node_id = %engine.cfg.node_id, flows = engine.flows.lock().map(|f| f.len()).unwrap_or(0), "call runner started");
    let dialer = dialer::spawn(engine.clone());
    if let Some(calls) = engine.sip.as_ref().and_then(|s| s.take_incoming()) {
        phone_in::spawn(engine.clone(), calls);
    }
    let reload = spawn_flow_reload(engine.clone());
    Ok(Started {
        routes,
        engine: Some(engine),
        spool,
        dialer: Some(dialer),
        reload,
        drainer: Some(drainer),
    })
}

/// The SIP trunks, when `--sip-trunk` is set: one gateway per trunk, in
/// order of preference, each on its own SIP port (`--sip-bind`'s port plus
/// the trunk's index; port 0 stays 0). A trunk that is configured but
/// cannot start stops the node: calls to phone numbers would otherwise
/// fail one by one, unnoticed.
async fn sip_gateway(
    args: &crate::config::SipArgs,
    ring_timeout: Duration,
) -> anyhow::Result<Option<Arc<voicecare_sip::TrunkGroup>>> {
    use voicecare_sip::{Credentials, HealthPolicy, Secret, SipGateway, Trunk, TrunkGroup};
    if args.sip_trunk.is_empty() {
        return Ok(None);
    }
    if args.sip_register_expires > 0 && args.sip_username.is_none() {
        anyhow::bail!(
            "--sip-register-expires needs the trunk's credentials (--sip-username and --sip-password-file)"
        );
    }
    let credentials = match (&args.sip_username, &args.sip_password_file) {
        (Some(username), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("--sip-password-file {}: {e}", file.display()))?;
            Some(Credentials {
                username: username.clone(),
                password: Secret::new(password.trim()),
            })
        }
        (None, None) => None,
        _ => anyhow::bail!("--sip-username and --sip-password-file go together"),
    };
    let leg = voicecare_telephony::leg::LegConfig::default();
    let mut gateways = Vec::with_capacity(args.sip_trunk.len());
    for (index, addr) in args.sip_trunk.iter().enumerate() {
        let name = format!("{}:{}", addr.host, addr.port);
        let mut trunk = Trunk::new(name.clone(), addr.host.clone(), addr.port);
        trunk.bind = trunk_bind(args.sip_bind, index)?;
        trunk.rtp_ports = args.sip_rtp_ports.0.clone();
        trunk.from_number = args.sip_from.clone();
        trunk.ring_timeout = ring_timeout;
        trunk.accept_from = args.sip_accept_from.clone();
        trunk.max_channels = args.sip_max_channels;
        trunk.calls_per_second = args.sip_cps;
        trunk.register_expires =
            (args.sip_register_expires > 0).then_some(args.sip_register_expires);
        trunk.public_ip = args.sip_public_ip;
        trunk.outbound_proxy = args
            .sip_outbound_proxy
            .as_ref()
            .map(|p| (p.host.clone(), p.port));
        trunk.transport = match args.sip_transport.as_str() {
            "tcp" => voicecare_sip::Transport::Tcp,
            _ => voicecare_sip::Transport::Udp,
        };
        trunk.credentials = credentials.clone();
        let gateway = SipGateway::start(trunk, leg.clone())
            .await
            .map_err(|e| anyhow::anyhow!("SIP trunk {name}: {e}"))?;
        watch_registration(name, gateway.registration());
        gateways.push(gateway);
    }
    let policy = HealthPolicy {
        ping_interval: (args.sip_options_interval > 0)
            .then(|| Duration::from_secs(args.sip_options_interval.into())),
        ..HealthPolicy::default()
    };
    let group = TrunkGroup::new(gateways, policy)?;
    watch_trunks(group.status());
    Ok(Some(Arc::new(group)))
}

/// The SIP address of the trunk at `index`: `--sip-bind` with its port
/// moved up by the index (port 0, any free port, for every trunk).
fn trunk_bind(bind: std::net::SocketAddr, index: usize) -> anyhow::Result<std::net::SocketAddr> {
    if bind.port() == 0 {
        return Ok(bind);
    }
    let port = u16::try_from(usize::from(bind.port()) + index).map_err(|_| {
        anyhow::anyhow!(
            "--sip-bind: no port {} + {index} for the trunk",
            bind.port()
        )
    })?;
    Ok(std::net::SocketAddr::new(bind.ip(), port))
}

/// `voicecare_sip_registered{trunk}` is 1 while the trunk holds our
/// registration (or none is used) and 0 while it does not, for an alert.
fn watch_registration(
    trunk: String,
    mut state: tokio::sync::watch::Receiver<voicecare_sip::RegistrationState>,
) {
    use voicecare_sip::RegistrationState::{Failed, NotUsed, Pending, Registered};
    tokio::spawn(async move {
        loop {
            let up = match &*state.borrow_and_update() {
                NotUsed | Registered { .. } => 1.0,
                Pending | Failed { .. } => 0.0,
            };
            metrics::gauge!("voicecare_sip_registered", "trunk" => trunk.clone()).set(up);
            if state.changed().await.is_err() {
                return;
            }
        }
    });
}

/// `voicecare_sip_trunk_up{trunk}` (1 up, 0 down) and
/// `voicecare_sip_trunk_failovers_total{trunk}` (calls a trunk failed that
/// went on to the next one), from the trunk group's status.
fn watch_trunks(mut status: tokio::sync::watch::Receiver<Vec<voicecare_sip::TrunkStatus>>) {
    tokio::spawn(async move {
        let mut counted: std::collections::HashMap<String, u64> = Default::default();
        loop {
            let trunks = status.borrow_and_update().clone();
            for t in trunks {
                let up = if t.up { 1.0 } else { 0.0 };
                metrics::gauge!("voicecare_sip_trunk_up", "trunk" => t.name.clone()).set(up);
                let seen = counted.entry(t.name.clone()).or_insert(0);
                let failovers =
                    metrics::counter!("voicecare_sip_trunk_failovers_total", "trunk" => t.name);
                // Present from the start, at 0, so an alert's rate works.
                failovers.increment(t.failovers.saturating_sub(*seen));
                *seen = t.failovers;
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });
}

fn runner_config(db_args: &crate::config::DbArgs, args: &crate::config::ServeArgs) -> RunnerConfig {
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        format!("{host}-{}", std::process::id())
    });
    RunnerConfig {
        node_id,
        caps: Caps {
            global: args.max_calls,
            per_node: args.max_calls_per_node,
        },
        lease: Duration::from_secs(args.call_lease_secs),
        tick: Duration::from_millis(args.dialer_tick_ms),
        ladder_minute: Duration::from_millis(args.ladder_minute_ms),
        ladder: LadderPolicy::default(),
        ring_timeout: Duration::from_secs(args.ring_secs),
        media_bind: args.media_bind.clone(),
        flows_dir: args.flows_dir.clone(),
        data_dir: db_args.data_dir.clone(),
        service_name: args.service_name.clone(),
        sla: args.sla(),
        keep_recordings: !args.no_recordings,
        early_asr_ms: args.early_asr_ms,
        partial_asr_ms: args.partial_asr_ms,
        country_code: args.sip.sip_country_code.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::trunk_bind;

    #[test]
    fn each_trunk_binds_the_next_sip_port_and_port_0_stays_0() {
        use std::net::SocketAddr;
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let bind = addr("10.0.0.5:5060");
        assert_eq!(trunk_bind(bind, 0).unwrap(), bind);
        assert_eq!(trunk_bind(bind, 2).unwrap(), addr("10.0.0.5:5062"));
        let any = addr("127.0.0.1:0");
        assert_eq!(trunk_bind(any, 3).unwrap(), any);
        assert!(trunk_bind(addr("0.0.0.0:65535"), 1).is_err());
    }
}
