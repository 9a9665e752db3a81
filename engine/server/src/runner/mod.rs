//! The call runner: the glue that makes calls happen.
//!
//! * [`gateway`]: device authentication against `elders.device_id` /
//!   `device_token_hash`, and calls devices place (dial-in).
//! * [`dialer`]: every node schedules check-ins, claims due calls under the
//!   caps, renews leases and rescues calls of dead nodes.
//! * [`call`]: one claimed call: the no-answer ladder around ringing the
//!   elder's device, and [`session`] once someone answers.
//! * [`session`]: one answered call: leg events, the endpointer and the ASR
//!   pool feed the flow interpreter; its actions play prompts, flag
//!   escalations and hang up.
//! * [`live`]: operators joining held calls (and calling back) from the
//!   browser: the registry of held calls, the bridge and its recording.
//! * [`tts`]: prompt audio (recordings, or espeak-ng cached as WAV).
//!
//! Every decision is made in `voicecare-core`; this module only moves events
//! and actions between the core, the phone line and the database.

pub mod call;
pub mod devices;
pub mod dialer;
pub mod gateway;
pub mod live;
pub mod session;
pub mod tts;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use voicecare_core::flow::{Flow, FlowSet, Update};
use voicecare_core::schedule::LadderPolicy;
use voicecare_speech::AsrPool;
use voicecare_store::dialer::Caps;
use voicecare_store::queue::SlaPolicy;
use voicecare_telephony::signalling::SignallingHub;

pub use gateway::Gateway;

/// The signalling hub as the server runs it.
pub type Hub = SignallingHub<Gateway>;

/// How this node runs calls.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub node_id: String,
    pub caps: Caps,
    /// A call's lease; renewed every third of it while the call runs.
    pub lease: Duration,
    /// How often the scheduler, claimer and rescuer run.
    pub tick: Duration,
    /// Length of one "minute" of the no-answer ladder (60 s in production;
    /// shorter for drills and tests).
    pub ladder_minute: Duration,
    /// Programme ladder policy; `checkin_schedules` overrides attempts and retry.
    pub ladder: LadderPolicy,
    pub ring_timeout: Duration,
    pub media_bind: Vec<SocketAddr>,
    pub flows_dir: PathBuf,
    pub data_dir: PathBuf,
    pub service_name: String,
    pub sla: SlaPolicy,
    /// Keep utterance audio (WAV under `<data-dir>/recordings/`).
    pub keep_recordings: bool,
    /// Pause after which an utterance is transcribed speculatively (0: never).
    pub early_asr_ms: u32,
    /// New speech between readings of a reply still being spoken (0: never).
    pub partial_asr_ms: u32,
}

/// Shared by every call on this node.
pub struct Engine {
    pub pool: PgPool,
    pub cfg: RunnerConfig,
    pub asr: Arc<AsrPool>,
    pub prompts: Arc<tts::Prompts>,
    flows: Mutex<FlowSet>,
    hub: OnceLock<Arc<Hub>>,
    /// Calls running on this node: id → the task's abort handle.
    running: Mutex<HashMap<i64, tokio::task::AbortHandle>>,
    /// Calls holding an elder for an operator to join.
    pub live: Arc<live::Registry>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node_id", &self.cfg.node_id)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("flow {0:?} is not loaded")]
    NoFlow(String),
    #[error("cannot read flows from {}: {source}", dir.display())]
    FlowsDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Engine {
    pub fn new(
        pool: PgPool,
        cfg: RunnerConfig,
        asr: Arc<AsrPool>,
    ) -> Result<Arc<Self>, RunnerError> {
        let prompts = tts::Prompts::new(
            Box::new(tts::Espeak::default()),
            cfg.data_dir.join("tts-cache"),
            cfg.flows_dir.clone(),
        );
        let engine = Arc::new(Self {
            pool,
            asr,
            prompts: Arc::new(prompts),
            flows: Mutex::new(FlowSet::new()),
            hub: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
            live: Arc::new(live::Registry::default()),
            cfg,
        });
        engine.load_flows()?;
        Ok(engine)
    }

    /// (Re)load every `*.toml` in the flows directory; a broken file keeps
    /// the last good version of its flow.
    pub fn load_flows(&self) -> Result<usize, RunnerError> {
        let dir = &self.cfg.flows_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| RunnerError::FlowsDir {
            dir: dir.clone(),
            source,
        })?;
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let Ok(source) = std::fs::read_to_string(&path) else {
                tracing::warn!(path = %path.display(), "cannot read flow file");
                continue;
            };
            if let Update::Rejected { errors, .. } =
                flows.update(&path.display().to_string(), &source)
            {
                tracing::error!(path = %path.display(), errors = %errors, "flow file rejected; keeping the last good version");
            }
        }
        Ok(flows.len())
    }

    /// A flow by id; `daily-checkin` and `daily_checkin` name the same flow.
    pub fn flow(&self, id: &str) -> Result<Arc<Flow>, RunnerError> {
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        flows
            .get(id)
            .or_else(|| flows.get(&id.replace('-', "_")))
            .ok_or_else(|| RunnerError::NoFlow(id.to_string()))
    }

    pub fn set_hub(&self, hub: Arc<Hub>) {
        let _ = self.hub.set(hub);
    }

    pub fn hub(&self) -> Option<&Arc<Hub>> {
        self.hub.get()
    }

    pub fn running_calls(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    fn track(&self, call_id: i64, handle: tokio::task::AbortHandle) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(call_id, handle);
        }
    }

    fn untrack(&self, call_id: i64) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&call_id);
        }
    }

    /// A ladder "minute" as a chrono duration.
    pub fn ladder_minutes(&self, minutes: i64) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.ladder_minute * minutes.max(0) as u32)
            .unwrap_or(chrono::Duration::minutes(minutes))
    }

    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cfg.lease).unwrap_or(chrono::Duration::seconds(30))
    }
}

/// What `voicecare serve` runs for calls: the signalling routes to merge
/// into the HTTP app, and the dialer loop.
pub struct Started {
    pub routes: axum::Router,
    pub engine: Option<Arc<Engine>>,
    dialer: Option<tokio::task::JoinHandle<()>>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

impl Started {
    pub fn stop(self) {
        for task in [self.dialer, self.reload].into_iter().flatten() {
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
pub fn start(
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
            ..HubConfig::default()
        },
    );
    let routes = axum::Router::new().nest("/v1/devices", hub.router());
    if args.no_calls {
        tracing::info!("calls are off on this node");
        return Ok(Started {
            routes,
            engine: None,
            dialer: None,
            reload: None,
        });
    }
    let model = match voicecare_speech::Model::load_named(&args.asr_model) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "speech recognition unavailable (install it with scripts/install-model.sh); this node will not run calls");
            return Ok(Started {
                routes,
                engine: None,
                dialer: None,
                reload: None,
            });
        }
    };
    let asr = AsrPool::new(&model, args.asr_workers as usize, 1)?;
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        format!("{host}-{}", std::process::id())
    });
    let cfg = RunnerConfig {
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
    };
    let engine = Engine::new(pool, cfg, Arc::new(asr))?;
    engine.set_hub(hub.clone());
    gateway.attach(&engine);
    tracing::info!(node_id = %engine.cfg.node_id, flows = engine.flows.lock().map(|f| f.len()).unwrap_or(0), "call runner started");
    let dialer = dialer::spawn(engine.clone());
    let reload = spawn_flow_reload(engine.clone());
    Ok(Started {
        routes,
        engine: Some(engine),
        dialer: Some(dialer),
        reload,
    })
}
