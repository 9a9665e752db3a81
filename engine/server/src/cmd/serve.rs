//! `voicecare serve`: the operator API, live events and the maintenance loops.

use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::{DbArgs, ServeArgs};

pub async fn run(db_args: DbArgs, args: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything starts: a bad file is named at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => None,
    };
    let db = crate::db::open(&db_args, args.db_connections).await?;
    let state = AppState::new(
        db.pool.clone(),
        args.lease_secs,
        args.session_hours,
        args.sla(),
        db_args.data_dir.clone(),
    )
    .with_trusted_proxies(api::TrustedProxies::new(args.trusted_proxy.clone()));
    let proxies = state.trusted_proxies.clone();
    let fanout = api::spawn_notify_fanout(db.pool.clone(), &state);
    let rescuer = spawn_lease_rescuer(db.pool.clone());
    let calls = crate::runner::start(db.pool.clone(), &db_args, &args).await?;

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "voicecare is serving the operator API");
    println!("voicecare listening on {scheme}://{addr}");

    let app = api::router(
        state
            .with_engine(calls.engine.clone())
            .with_spool(calls.spool.clone()),
    )
    .merge(calls.routes.clone())
    .layer(axum::middleware::from_fn_with_state(
        proxies,
        api::client_addr::resolve,
    ));
    match tls {
        Some(config) => crate::tls::serve(listener, config, app, shutdown_signal()).await,
        None => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await?
        }
    }
    tracing::info!("shutting down");
    fanout.abort();
    rescuer.abort();
    calls.stop();
    db.close().await?;
    Ok(())
}

/// Every second, put escalations whose claim lease expired back in the queue.
/// Safe to run on every node at once (SKIP LOCKED, idempotent).
fn spawn_lease_rescuer(pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match voicecare_store::queue::rescue_expired(&pool, Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rescued = n, "claims expired; items returned to the queue"),
                Err(e) => tracing::warn!(error = %e, "lease rescue failed; will retry"),
            }
        }
    })
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
