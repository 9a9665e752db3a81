//! `voicecare demo`: a simulated cohort of elders called by the real engine.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many simulated elders to enrol.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub elders: u32,
    /// Check-in windows open spread over this many seconds from the start.
    #[arg(long, default_value_t = 90)]
    pub spread_secs: u64,
    /// Operator API address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Concurrent calls on this node (most of a call is the elder listening to
    /// prompts, so two cores keep ten calls' whisper work moving).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_calls: i64,
    /// Whisper workers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub asr_workers: u32,
    #[arg(long, default_value = "ivr-flows")]
    pub flows_dir: PathBuf,
    /// Clips and their manifest (`manifest.json`).
    #[arg(long, default_value = "audio-fixtures")]
    pub fixtures: PathBuf,
    /// Give up waiting for the cohort's calls after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Write report.json and report.html into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep serving the API (and the simulated phones) after the summary.
    #[arg(long)]
    pub keep_running: bool,
    /// How the engine reaches the elders: their devices over WebRTC, or
    /// ordinary phones over a SIP trunk with G.711 (the simulated phones
    /// then stand behind a SIP endpoint playing the carrier).
    #[arg(long, value_enum, default_value_t = Via::Webrtc)]
    pub via: Via,
}

/// The transport of the demo's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Webrtc,
    Sip,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Webrtc => "webrtc",
            Via::Sip => "sip",
        }
    }
}

pub async fn run(db: crate::config::DbArgs, args: DemoArgs) -> anyhow::Result<()> {
    crate::demo::run(db, args).await
}
