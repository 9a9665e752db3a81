//! Connecting: an existing server from `DATABASE_URL`, or the embedded cluster.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::error::Result;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Where the database comes from.
#[derive(Debug, Clone)]
pub enum DbSource {
    /// An existing server (the `DATABASE_URL`).
    Url(String),
    /// A private cluster under this directory, started and stopped by us.
    Embedded(PathBuf),
}

impl DbSource {
    /// `DATABASE_URL` when set and non-empty, else the embedded cluster under `data_dir/postgres`.
    pub fn from_env(data_dir: &std::path::Path) -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => DbSource::Url(url),
            _ => DbSource::Embedded(data_dir.join("postgres")),
        }
    }
}

/// A connected, migrated database, plus the embedded server if we own one.
pub struct Database {
    pub pool: PgPool,
    pub url: String,
    /// The task keeping the embedded server up, and the word to stop it.
    embedded: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Database {
    pub async fn open(source: &DbSource, max_connections: u32) -> Result<Self> {
        let (opts, url, embedded) = match source {
            DbSource::Url(url) => {
                let opts = PgConnectOptions::from_str(url)?;
                (opts, url.clone(), None)
            }
            DbSource::Embedded(dir) => {
                let pg = EmbeddedPostgres::start(EmbeddedOptions::durable(dir)).await?;
                ensure_database(&pg, "voicecare").await?;
                (
                    pg.connect_options("voicecare"),
                    pg.url("voicecare"),
                    Some(pg),
                )
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let embedded = embedded.map(|pg| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            (stop, tokio::spawn(keep_up(pg, stopped)))
        });
        Ok(Self {
            pool,
            url,
            embedded,
        })
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Close the pool and, if we own the server, shut it down cleanly.
    pub async fn close(mut self) -> Result<()> {
        self.pool.close().await;
        if let Some((stop, task)) = self.embedded.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        Ok(())
    }
}

/// Keep an embedded server this process started up: if it dies (crashed,
/// killed by the OOM killer or by hand), start it again on the same files;
/// the pool reconnects by itself. Stops the server when told, or when the
/// `Database` is dropped.
async fn keep_up(mut pg: EmbeddedPostgres, mut stop: tokio::sync::oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            status = pg.exited() => {
                tracing::error!(%status, log = %pg.log_path().display(), "the embedded PostgreSQL stopped unexpectedly; starting it again");
                let mut wait = std::time::Duration::from_millis(500);
                while let Err(e) = pg.restart().await {
                    tracing::error!(error = %e, "the embedded PostgreSQL did not start again; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
                tracing::info!("the embedded PostgreSQL is running again");
            }
            _ = &mut stop => {
                let _ = pg.stop().await;
                return;
            }
        }
    }
}

/// A round trip to the server, for health checks.
pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// How many migrations have been applied successfully.
pub async fn migrations_applied(pool: &PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?,
    )
}

pub(crate) async fn ensure_database(pg: &EmbeddedPostgres, name: &str) -> Result<()> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = pg.connect_options("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}
