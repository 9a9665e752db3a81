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
        default_value = DEFAULT_DATA_DIR,
        global = true
    )]
    pub data_dir: PathBuf,
    /// Use this PostgreSQL server instead of the embedded one.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
}

/// The data directory when none is given: relative to where voicecare runs.
pub const DEFAULT_DATA_DIR: &str = ".voicecare";

impl DbArgs {
    /// Make the data directory absolute, once, as the configuration is read:
    /// every later user (the embedded cluster, recordings, child processes)
    /// then sees the same path whatever its own working directory.
    pub fn resolve(mut self) -> anyhow::Result<Self> {
        self.data_dir = std::path::absolute(&self.data_dir)
            .map_err(|e| anyhow::anyhow!("--data-dir {}: {e}", self.data_dir.display()))?;
        Ok(self)
    }

    fn uses_embedded(&self) -> bool {
        self.database_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
    }

    /// On the default data directory with the embedded database, a command
    /// that needs a fresh database of its own (the demo, a benchmark) gets
    /// `<data-dir>/<name>`, cleared first with its cluster, so that `serve`'s
    /// data is never touched. Elsewhere the given directory is used as it is.
    pub fn use_fresh_subdir(&mut self, name: &str) -> anyhow::Result<()> {
        let default = std::path::absolute(DEFAULT_DATA_DIR)?;
        if self.uses_embedded()
            && (self.data_dir == default || self.data_dir.as_os_str() == DEFAULT_DATA_DIR)
        {
            let dir = self.data_dir.join(name);
            voicecare_store::embedded::remove_cluster(&dir.join("postgres"))
                .map_err(|e| anyhow::anyhow!("cannot clear {}: {e}", dir.display()))?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("cannot clear {}: {e}", dir.display()))?;
            }
            self.data_dir = dir;
        }
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                self.data_dir.display()
            )
        })?;
        Ok(())
    }

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
    /// Reverse proxies in front of this node (addresses or CIDR networks):
    /// the client address is then read from their `X-Forwarded-For`.
    #[arg(long, env = "VOICECARE_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<crate::api::IpNet>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. The session cookie is then marked Secure.
    #[arg(long, env = "VOICECARE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "VOICECARE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Device signalling sockets not yet registered, per client address.
    #[arg(long, env = "VOICECARE_MAX_PENDING_DEVICE_SOCKETS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_pending_device_sockets: u32,
    /// Database connections this node may hold.
    #[arg(long, env = "VOICECARE_DB_CONNECTIONS", default_value_t = 20)]
    pub db_connections: u32,
    /// Do not place or take calls on this node (operator API only).
    #[arg(long, env = "VOICECARE_NO_CALLS")]
    pub no_calls: bool,
    /// This node's name in `calls.node_id` (default: host name and process id).
    #[arg(long, env = "VOICECARE_NODE_ID")]
    pub node_id: Option<String>,
    /// Calls in progress across all nodes at most.
    #[arg(long, env = "VOICECARE_MAX_CALLS", default_value_t = 200, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_calls: i64,
    /// Calls in progress on this node at most.
    #[arg(long, env = "VOICECARE_MAX_CALLS_PER_NODE", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_calls_per_node: i64,
    /// Seconds a node's hold on a call lasts without renewal (renewed every third).
    #[arg(long, env = "VOICECARE_CALL_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=600))]
    pub call_lease_secs: u64,
    /// Milliseconds between dialer passes (schedule, rescue, claim).
    #[arg(long, env = "VOICECARE_DIALER_TICK_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub dialer_tick_ms: u64,
    /// Length of one minute of the no-answer ladder, in milliseconds (60000;
    /// shorter for drills and tests).
    #[arg(long, env = "VOICECARE_LADDER_MINUTE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub ladder_minute_ms: u64,
    /// Seconds a device rings before the attempt counts as not answered.
    #[arg(long, env = "VOICECARE_RING_SECS", default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub ring_secs: u64,
    /// Local UDP addresses for call media (one per interface; `127.0.0.1:0` for loopback).
    #[arg(
        long,
        env = "VOICECARE_MEDIA_BIND",
        default_value = "0.0.0.0:0",
        value_delimiter = ','
    )]
    pub media_bind: Vec<SocketAddr>,
    /// Directory of IVR flow files.
    #[arg(long, env = "VOICECARE_FLOWS_DIR", default_value = "ivr-flows")]
    pub flows_dir: PathBuf,
    /// The service's name as prompts say it.
    #[arg(
        long,
        env = "VOICECARE_SERVICE_NAME",
        default_value = "your care service"
    )]
    pub service_name: String,
    /// Whisper model for the calls (installed with scripts/install-model.sh).
    #[arg(long, env = "VOICECARE_ASR_MODEL", default_value = "base")]
    pub asr_model: String,
    /// Speech-recognition worker threads.
    #[arg(long, env = "VOICECARE_ASR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub asr_workers: u32,
    /// Do not keep utterance audio under `<data-dir>/recordings/`.
    #[arg(long, env = "VOICECARE_NO_RECORDINGS")]
    pub no_recordings: bool,
    /// Start transcribing after this much of a pause, before the utterance is
    /// known to be over (on an idle worker only); 0 turns it off.
    #[arg(long, env = "VOICECARE_EARLY_ASR_MS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=5000))]
    pub early_asr_ms: u32,
    /// While the elder speaks, read the words so far after every this much
    /// new speech (on an idle worker only, giving way to other work), so a
    /// clear emergency is queued before the reply ends; 0 turns it off.
    #[arg(long, env = "VOICECARE_PARTIAL_ASR_MS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(0..=10000))]
    pub partial_asr_ms: u32,
    /// Calls to phone numbers (`--sip-*`); boxed: most nodes leave them unset.
    #[command(flatten)]
    pub sip: Box<SipArgs>,
}

/// The SIP trunk that rings elders who have a phone number and no device.
#[derive(Debug, Clone, Args)]
pub struct SipArgs {
    /// SIP trunk (HOST:PORT) that rings elders who have a phone number and
    /// no device; several, comma-separated, in order of preference: a call a
    /// trunk fails (5xx, 403, no response) goes out through the next one.
    #[arg(long, env = "VOICECARE_SIP_TRUNK", value_delimiter = ',')]
    pub sip_trunk: Vec<HostPort>,
    /// Local SIP address; its IP is also the one RTP uses (port 0: any free
    /// port). The second trunk binds the next port, the third the one after.
    #[arg(long, env = "VOICECARE_SIP_BIND", default_value = "0.0.0.0:5060")]
    pub sip_bind: SocketAddr,
    /// Ping every trunk with SIP OPTIONS this often, in seconds; a trunk that
    /// misses three pings in a row is down and tried last; 0: no pings.
    #[arg(long, env = "VOICECARE_SIP_OPTIONS_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub sip_options_interval: u32,
    /// Local UDP ports for SIP call media (FIRST-LAST).
    #[arg(long, env = "VOICECARE_SIP_RTP_PORTS", default_value = "20000-29999")]
    pub sip_rtp_ports: PortRange,
    /// Our caller number on the trunk (the From user).
    #[arg(long, env = "VOICECARE_SIP_FROM", default_value = "voicecare")]
    pub sip_from: String,
    /// User name for the trunk's digest authentication.
    #[arg(long, env = "VOICECARE_SIP_USERNAME")]
    pub sip_username: Option<String>,
    /// File holding the trunk's digest password.
    #[arg(long, env = "VOICECARE_SIP_PASSWORD_FILE")]
    pub sip_password_file: Option<PathBuf>,
    /// Country calling code for callers' numbers the trunk signals in
    /// national form (e.g. 86: 013800138000 is +8613800138000).
    #[arg(long, env = "VOICECARE_SIP_COUNTRY_CODE", value_parser = country_code)]
    pub sip_country_code: Option<String>,
    /// Signalling transport to the trunk: udp or tcp.
    #[arg(long, env = "VOICECARE_SIP_TRANSPORT", default_value = "udp", value_parser = ["udp", "tcp"])]
    pub sip_transport: String,
    /// Calls (out and in) the trunk carries at once; 0: no limit.
    #[arg(long, env = "VOICECARE_SIP_MAX_CHANNELS", default_value_t = 0)]
    pub sip_max_channels: usize,
    /// New outbound calls per second the trunk accepts; 0: no limit.
    #[arg(long, env = "VOICECARE_SIP_CPS", default_value_t = 0.0, value_parser = cps)]
    pub sip_cps: f64,
    /// Addresses calls into the service may come from, comma-separated
    /// (default: the trunk host's addresses).
    #[arg(long, env = "VOICECARE_SIP_ACCEPT_FROM", value_delimiter = ',')]
    pub sip_accept_from: Vec<std::net::IpAddr>,
    /// Register with the trunk for this many seconds, refreshed at half
    /// time (trunks that know us by a registered contact); 0: do not
    /// register (the trunk authenticates our IP address).
    #[arg(long, env = "VOICECARE_SIP_REGISTER_EXPIRES", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=86400))]
    pub sip_register_expires: u32,
    /// Our public IP when this host is behind a one-to-one NAT: the SDP and
    /// the SIP Contact name it, while sockets stay bound to --sip-bind.
    #[arg(long, env = "VOICECARE_SIP_PUBLIC_IP")]
    pub sip_public_ip: Option<std::net::IpAddr>,
    /// Send every SIP request to this proxy (HOST:PORT); the trunk stays the
    /// destination named in the request.
    #[arg(long, env = "VOICECARE_SIP_OUTBOUND_PROXY")]
    pub sip_outbound_proxy: Option<HostPort>,
}

fn cps(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a call rate (0 to 1000 calls per second)"
        )),
    }
}

fn country_code(s: &str) -> Result<String, String> {
    let s = s.trim().trim_start_matches('+');
    if (1..=3).contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit()) && !s.starts_with('0') {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a country calling code (1 to 3 digits, e.g. 86)"
        ))
    }
}

/// `HOST:PORT`; the host is a name or an address (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
        let port: u16 = port.parse().map_err(|_| "the port is not a number")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err("expected HOST:PORT".into());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

/// An inclusive range of ports, `FIRST-LAST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub std::ops::RangeInclusive<u16>);

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || "expected FIRST-LAST, two ports with FIRST <= LAST".to_string();
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok(PortRange(a..=b))
    }
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
