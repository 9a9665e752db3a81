//! Runtime configuration: command-line flags with environment overrides,
//! parsed once into a validated struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use voicecare_store::DbSource;
use voicecare_store::queue::SlaPolicy;

/// Where voicecare keeps its state and which database it uses.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Data directory: the embedded PostgreSQL cluster, recordings, caches.
    #[arg(
        long,
        env = "VOICECARE_DATA_DIR",
        default_value = ".voicecare",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL server instead of the embedded one.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DbArgs {
    pub fn source(&self) -> DbSource {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => DbSource::Url(url.clone()),
            _ => DbSource::Embedded(self.data_dir.join("postgres")),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for the HTTP API, console and device signalling.
    #[arg(long, env = "VOICECARE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seconds an operator's claim lasts without renewal.
    #[arg(long, env = "VOICECARE_LEASE_SECS", default_value_t = 120, value_parser = clap::value_parser!(i64).range(10..=3600))]
    pub lease_secs: i64,
    /// Hours an operator session lasts.
    #[arg(long, env = "VOICECARE_SESSION_HOURS", default_value_t = 12, value_parser = clap::value_parser!(i64).range(1..=168))]
    pub session_hours: i64,
    /// Seconds within which an emergency must be picked up.
    #[arg(long, env = "VOICECARE_SLA_EMERGENCY_SECS", default_value_t = 60)]
    pub sla_emergency_secs: i64,
    /// Seconds within which an urgent item must be picked up.
    #[arg(long, env = "VOICECARE_SLA_URGENT_SECS", default_value_t = 4 * 3600)]
    pub sla_urgent_secs: i64,
    /// Seconds within which a watch item must be picked up.
    #[arg(long, env = "VOICECARE_SLA_WATCH_SECS", default_value_t = 24 * 3600)]
    pub sla_watch_secs: i64,
    /// Database connections this node may hold.
    #[arg(long, env = "VOICECARE_DB_CONNECTIONS", default_value_t = 20)]
    pub db_connections: u32,
}

impl ServeArgs {
    pub fn sla(&self) -> SlaPolicy {
        SlaPolicy {
            emergency_secs: self.sla_emergency_secs,
            urgent_secs: self.sla_urgent_secs,
            watch_secs: self.sla_watch_secs,
        }
    }
}
