//! The embedded PostgreSQL as an engine node runs it: a server that dies
//! under the node is started again, and the node's pool carries on.

use std::time::{Duration, Instant};

use voicecare_store::{Database, DbSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_embedded_server_is_started_again() {
    let dir = std::env::temp_dir().join(format!("voicecare-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open(&DbSource::Embedded(dir.join("postgres")), 4)
        .await
        .expect("embedded database");
    let pid_file = dir.join("postgres/pgdata/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    // The server dies as the OOM killer would kill it.
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if voicecare_store::db::ping(&db.pool).await.is_ok() {
            let new = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if !new.starts_with(&format!("{pid}\n")) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the embedded server was not started again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await.unwrap();
    assert!(!pid_file.exists(), "closing the database stops the server");
    let _ = std::fs::remove_dir_all(&dir);
}
