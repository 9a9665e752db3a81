//! What every call on this node shares: the database pool, the runner's
//! configuration, the speech-recognition pool, prompt audio, the loaded
//! flows, the device signalling hub, the SIP trunk gateway, the calls running
//! here and the calls holding an elder for an operator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use voicecare_core::flow::{Flow, FlowSet, Update};
use voicecare_core::schedule::LadderPolicy;
use voicecare_core::session::policy::SlaPolicy;
use voicecare_sip::TrunkGroup;
use voicecare_speech::AsrPool;
use voicecare_store::dialer::Caps;

use super::Hub;
use super::hold;
use super::spool::Spool;
use super::tts;

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
    /// Country calling code for callers' numbers in national form.
    pub country_code: Option<String>,
}

/// Shared by every call on this node.
pub struct Engine {
    pub pool: PgPool,
    pub cfg: RunnerConfig,
    pub asr: Arc<AsrPool>,
    pub prompts: Arc<tts::Prompts>,
    pub(super) flows: Mutex<FlowSet>,
    hub: OnceLock<Arc<Hub>>,
    /// Calls running on this node: id → the task's abort handle.
    running: Mutex<HashMap<i64, tokio::task::AbortHandle>>,
    /// Calls holding an elder for an operator to join.
    pub holds: Arc<hold::Registry>,
    /// Where writes go while the database is away.
    pub spool: Arc<Spool>,
    /// Rings elders who have a phone number and no device (`--sip-trunk`):
    /// one trunk or several in order of preference.
    pub sip: Option<Arc<TrunkGroup>>,
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
        spool: Arc<Spool>,
        sip: Option<Arc<TrunkGroup>>,
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
            holds: Arc::new(hold::Registry::default()),
            spool,
            sip,
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

    pub(super) fn track(&self, call_id: i64, handle: tokio::task::AbortHandle) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(call_id, handle);
        }
    }

    pub(super) fn untrack(&self, call_id: i64) {
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
