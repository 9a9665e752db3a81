//! Setup shared by the end-to-end test binaries (`mod support;` in each).
#![allow(dead_code)] // each test binary uses its own subset

pub mod baresip;
pub mod ports;
pub mod sip;

use std::path::{Path, PathBuf};

use sqlx::PgPool;
use voicecare_store::org;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fixture clip converted to the WAV the simulated phone plays.
pub fn fixture_wav(dir: &Path, clip: &str) -> PathBuf {
    let audio = voicecare_media::load(&repo().join("audio-fixtures").join(clip), None)
        .unwrap_or_else(|e| panic!("fixture {clip}: {e}"));
    let out = dir
        .join(Path::new(clip).file_name().unwrap())
        .with_extension("wav");
    voicecare_media::write_wav(&out, &audio).unwrap();
    out
}

/// The test community (Riverside > North > Elm Street > Elm Court), created
/// on first use.
pub async fn community(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    org::ensure_path(
        &mut conn,
        &["Riverside", "North", "Elm Street", "Elm Court"],
    )
    .await
    .unwrap()
    .id
}

/// Poll until `query` (one row, one column) returns something, or panic.
pub async fn wait_for<T>(pool: &PgPool, what: &str, secs: u64, query: &str, bind: i64) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let r: Option<T> = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
            .bind(bind)
            .fetch_optional(pool)
            .await
            .unwrap();
        if let Some(v) = r {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
