//! The operator API (axum): queue, escalations, elders, live events, health,
//! metrics and the OpenAPI description. Every handler authorises on the
//! server and passes the caller's scope down to the store, which filters
//! every query by it.

pub mod auth;
pub mod client_addr;
pub mod error;
mod events;
mod handlers;
mod metrics;
pub mod queue_cache;
mod reports;
mod talk;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::sync::broadcast;
use voicecare_store::notify::EscalationEvent;
use voicecare_store::queue::SlaPolicy;

pub use client_addr::{IpNet, TrustedProxies};
pub use events::spawn_notify_fanout;
pub use talk::read_message as read_talk_message;

/// Everything a request handler may touch.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub limiter: Arc<auth::LoginLimiter>,
    /// Password checks in progress, bounded.
    pub password_checks: Arc<auth::PasswordChecks>,
    pub lease: chrono::Duration,
    pub session_hours: i64,
    pub sla: SlaPolicy,
    /// Escalation change notices from LISTEN/NOTIFY, fanned out to live consoles.
    pub events: broadcast::Sender<EscalationEvent>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The data directory: recordings are read from under it.
    pub data_dir: PathBuf,
    /// The call engine of this node, if it runs calls: operators' live talk.
    pub engine: Option<Arc<crate::runner::Engine>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Session tokens logged out on this node, for the streams they hold.
    pub logouts: broadcast::Sender<Arc<str>>,
    /// Writes waiting for the database (its depth is on `/healthz`).
    pub spool: Option<Arc<crate::runner::spool::Spool>>,
    /// Queue lists shared by the consoles of a unit between changes.
    pub queue_cache: Arc<queue_cache::QueueCache>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        lease_secs: i64,
        session_hours: i64,
        sla: SlaPolicy,
        data_dir: PathBuf,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            queue_cache: Arc::default(),
            pool,
            limiter: Arc::new(auth::LoginLimiter::new(auth::LoginPolicy::default())),
            password_checks: Arc::new(auth::PasswordChecks::per_core()),
            lease: chrono::Duration::seconds(lease_secs),
            session_hours,
            sla,
            events,
            metrics: metrics::handle(),
            data_dir,
            engine: None,
            trusted_proxies: Arc::new(TrustedProxies::default()),
            logouts: broadcast::channel(64).0,
            spool: None,
        }
    }

    /// Take client addresses from these proxies' `X-Forwarded-For`.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// Let operators talk to elders on calls this node runs.
    pub fn with_engine(mut self, engine: Option<Arc<crate::runner::Engine>>) -> Self {
        self.engine = engine;
        self
    }

    pub fn with_spool(mut self, spool: Arc<crate::runner::spool::Spool>) -> Self {
        self.spool = Some(spool);
        self
    }
}

/// The OpenAPI description served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(metrics::render))
        .route("/api/openapi.json", get(handlers::openapi))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/me", get(auth::me))
        .route("/api/v1/queue", get(handlers::queue_list))
        .route("/api/v1/queue/counts", get(handlers::queue_counts))
        .route("/api/v1/queue/rollup", get(handlers::queue_rollup))
        .route("/api/v1/queue/claim-next", post(handlers::claim_next))
        .route("/api/v1/escalations/{id}", get(handlers::escalation_detail))
        .route("/api/v1/escalations/{id}/claim", post(handlers::claim))
        .route("/api/v1/escalations/{id}/renew", post(handlers::renew))
        .route("/api/v1/escalations/{id}/release", post(handlers::release))
        .route("/api/v1/escalations/{id}/resolve", post(handlers::resolve))
        .route("/api/v1/escalations/{id}/notes", post(handlers::add_note))
        .route("/api/v1/escalations/{id}/reopen", post(handlers::reopen))
        .route("/api/v1/escalations/{id}/talk", get(talk::talk))
        .route("/api/v1/talks/{id}/audio", get(talk::talk_audio))
        .route("/api/v1/elders", get(handlers::elder_search))
        .route("/api/v1/elders/{id}", get(handlers::elder_view))
        .route("/api/v1/events", get(events::stream))
        .route(
            "/api/v1/utterances/{id}/audio",
            get(handlers::utterance_audio),
        )
        .route("/api/v1/reports/overview", get(reports::overview))
        .route("/api/v1/reports/audit-sample", get(reports::audit_sample))
        .route(
            "/api/v1/reports/numbers-to-fix",
            get(reports::numbers_to_fix),
        )
        .merge(crate::console::router())
        .fallback(handlers::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
