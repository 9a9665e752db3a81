//! Test support: every test gets its own freshly migrated database.
//!
//! With `DATABASE_URL` set, databases are cloned on that server (and dropped
//! afterwards); otherwise one throwaway cluster is started per test process
//! and thrown away with it. Databases are cloned from a migrated template, so
//! a test pays ~20–50 ms for a clean schema instead of re-running migrations.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::db::MIGRATOR;
use crate::embedded::{EmbeddedOptions, EmbeddedPostgres};

enum Server {
    External(PgConnectOptions),
    Embedded(EmbeddedPostgres, #[allow(dead_code)] tempdir::Dir),
}

mod tempdir {
    /// A directory removed when the test process ends normally.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

struct Shared {
    server: Server,
    template: String,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Server {
    fn options(&self, db: &str) -> PgConnectOptions {
        match self {
            Server::External(o) => o.clone().database(db),
            Server::Embedded(pg, _) => pg.connect_options(db),
        }
    }
    fn url(&self, db: &str) -> String {
        match self {
            Server::External(_) => {
                let base = std::env::var("DATABASE_URL").unwrap_or_default();
                match url::Url::parse(&base) {
                    Ok(mut u) => {
                        u.set_path(&format!("/{db}"));
                        u.to_string()
                    }
                    Err(_) => base,
                }
            }
            Server::Embedded(pg, _) => pg.url(db),
        }
    }
}

async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(|| async {
            let server = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => Server::External(
                    PgConnectOptions::from_str(&url).expect("DATABASE_URL is not a valid URL"),
                ),
                _ => {
                    let dir = std::env::temp_dir().join(format!(
                        "voicecare-test-pg-{}-{}",
                        std::process::id(),
                        rand::random::<u32>()
                    ));
                    let pg = EmbeddedPostgres::start(EmbeddedOptions::throwaway(&dir))
                        .await
                        .expect("start an ephemeral PostgreSQL cluster for tests");
                    Server::Embedded(pg, tempdir::Dir(dir))
                }
            };
            let template = ensure_template(&server).await;
            Shared { server, template }
        })
        .await
}

/// The template's name carries a hash of the migrations, so concurrent test
/// processes agree on it and a changed migration gets a new template.
async fn ensure_template(server: &Server) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for m in MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&*m.checksum);
    }
    let name = format!("vc_template_{}", &hex::encode(h.finalize())[..12]);
    let mut admin = server
        .options("postgres")
        .connect()
        .await
        .expect("connect to the test server's postgres database");
    // Serialise template creation across test processes sharing one server.
    sqlx::query("SELECT pg_advisory_lock(727274)")
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{building}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{building}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let mut conn = server.options(&building).connect().await.unwrap();
        MIGRATOR
            .run(&mut conn)
            .await
            .expect("migrations apply to an empty database");
        conn.close().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    name
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub url: String,
    external: bool,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool_size(20).await
    }

    pub async fn with_pool_size(max_connections: u32) -> Self {
        let shared = shared().await;
        let name = format!(
            "vc_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u16>()
        );
        let mut admin = shared.server.options("postgres").connect().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{}\" STRATEGY FILE_COPY",
            shared.template
        )))
        .execute(&mut admin)
        .await
        .expect("clone the migrated template database");
        admin.close().await.unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(shared.server.options(&name))
            .await
            .unwrap();
        Self {
            pool,
            url: shared.server.url(&name),
            name,
            external: matches!(shared.server, Server::External(_)),
        }
    }

    /// Connection options for this database (for extra connections, listeners).
    pub async fn options(&self) -> PgConnectOptions {
        shared().await.server.options(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.external {
            return; // the whole throwaway cluster goes away with the process
        }
        let name = self.name.clone();
        let pool = self.pool.clone();
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                pool.close().await;
                let Some(shared) = SHARED.get() else { return };
                if let Ok(mut admin) = shared.server.options("postgres").connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                    let _: Result<(), _> = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A single connection to the test database (e.g. for LISTEN).
pub async fn connect(db: &TestDb) -> PgConnection {
    db.options().await.connect().await.unwrap()
}
