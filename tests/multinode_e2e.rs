//! Three engine nodes (`voicecare serve` processes) against one PostgreSQL,
//! calling a small cohort of simulated elders over real WebRTC with the real
//! whisper model: the work spreads over the nodes, no elder is rung twice at
//! once, and a node killed with SIGKILL in the middle loses nothing: the
//! escalations it raised are in the queue, and its calls end `interrupted`
//! and are placed again by the survivors.
//!
//! Each elder's device keeps a connection to every node (as a phone behind a
//! load balancer would reconnect), so whichever node claims the call can
//! ring it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use voicecare_store::cohort::{self, SimElder};
use voicecare_store::testing::TestDb;
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{SimPhone, SimScript};

use support::{community, fixture_wav, repo};

struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn start(db: &TestDb, data_dir: &Path, node: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(&db.url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(repo().join("ivr-flows"))
            .args(["--node-id", node, "--dialer-tick-ms", "200"])
            .args(["--asr-workers", "1", "--max-calls-per-node", "2"])
            .args(["--call-lease-secs", "3", "--ladder-minute-ms", "2000"])
            .args(["--ring-secs", "8", "--no-recordings"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start voicecare serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("voicecare listening on http://") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("voicecare serve did not start listening");
        Node { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no graceful shutdown
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `query` (one row, one column, no parameters) until it returns a row.
async fn wait_for(pool: &PgPool, what: &str, secs: u64, query: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_string()))
            .fetch_optional(pool)
            .await
            .unwrap();
        if let Some(v) = r {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_cohort_and_a_killed_node_loses_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = std::env::temp_dir().join(format!("voicecare-multinode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let unit = community(&pool).await;

    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node::start(&db, &tmp.join(n), n))
        .collect();

    // Six elders in an emergency (held on the line, then hanging up), three fine.
    let emergency = fixture_wav(&tmp, "espeak/en_emergency_1.flac");
    let fine = fixture_wav(&tmp, "espeak/en_ok_1.flac");
    let wait = "[[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 2500\ntimeout_ms = 30000\n";
    let mut ids = Vec::new();
    let mut phones = Vec::new();
    for i in 0..9 {
        let device = format!("multi-{i}");
        let token = format!("token-{device}");
        let hash = voicecare_server::runner::gateway::token_hash(&token);
        let elder = SimElder {
            full_name: "Mary Test",
            device_id: &device,
            language: "en",
            time_zone: "Asia/Shanghai",
            community_id: unit,
        };
        ids.push(
            cohort::enrol(&pool, &elder, &hash, Utc::now())
                .await
                .unwrap(),
        );
        let clip = if i < 6 { &emergency } else { &fine };
        let script = format!(
            "answer_after_ms = 300\nmax_call_ms = 40000\n{wait}[[step]]\ndo = \"say\"\nwav = \"{}\"\n{wait}",
            clip.display()
        );
        for node in &nodes {
            let mut cfg = ClientConfig::new(
                format!("ws://{}/v1/devices/ws", node.addr),
                &device,
                DeviceToken::new(&token),
            );
            cfg.leg = LegConfig::loopback();
            let mut phone = SimPhone::connect(cfg, SimScript::parse(&script, &tmp).unwrap())
                .await
                .expect("sim phone registers");
            phones.push(tokio::spawn(async move {
                // Ring after ring until the node it is connected to goes away.
                while phone.run_call().await.is_ok() {}
            }));
        }
    }
    for id in &ids {
        cohort::open_window(&pool, *id, "Asia/Shanghai", 2, 2, 1, Utc::now())
            .await
            .unwrap();
    }

    // Whichever node first raises an escalation on a call it is still
    // holding is killed (which node gets which elder is a race).
    let held = wait_for(
        &pool,
        "a node to flag a call it holds",
        300,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
          WHERE c.status = 'in_progress' AND c.node_id IS NOT NULL LIMIT 1",
    )
    .await;
    let victim: String = sqlx::query_scalar("SELECT node_id FROM calls WHERE id = $1")
        .bind(held)
        .fetch_one(&pool)
        .await
        .unwrap();
    let killed_at = Utc::now();
    let index = ["node-a", "node-b", "node-c"]
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_else(|| panic!("call {held} is held by unknown node {victim:?}"));
    nodes[index].kill();
    let in_flight: Vec<i64> = sqlx::query_scalar(
        "SELECT c.id FROM calls c WHERE c.status = 'in_progress' AND c.node_id = $1",
    )
    .bind(&victim)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(in_flight.contains(&held), "{in_flight:?}");

    // Every check-in of the cohort finishes on the survivors.
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        let p = cohort::progress(&pool, &ids).await.unwrap();
        if p.done == ids.len() as i64 && p.live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cohort did not finish: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The killed node's calls were interrupted and placed again by a survivor.
    for call in &in_flight {
        let status: String = sqlx::query_scalar("SELECT status FROM calls WHERE id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, "interrupted", "call {call}");
        let (replacement_status, node): (String, Option<String>) = sqlx::query_as(
            "SELECT r.status, (SELECT a.details->>'node_id' FROM audit_events a
                                WHERE a.action = 'call.claim' AND a.entity = 'call' AND a.entity_id = r.id
                                ORDER BY a.id DESC LIMIT 1)
               FROM calls r WHERE r.replaces = $1",
        )
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            ["completed", "unreachable"].contains(&replacement_status.as_str()),
            "replacement of {call}: {replacement_status}"
        );
        assert_ne!(
            node.as_deref(),
            Some(victim.as_str()),
            "a dead node placed a call"
        );
    }
    // Its flag is still in the queue, raised before it died.
    let (status, created): (String, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT status, created_at FROM escalations WHERE call_id = $1")
            .bind(held)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "open");
    assert!(created < killed_at);

    let r = cohort::results(&pool, &ids).await.unwrap();
    assert_eq!(r.double_calls, 0, "an elder was rung twice at once");
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            r.calls_by_node.get(node).copied().unwrap_or(0) >= 1,
            "{node} placed no call: {:?}",
            r.calls_by_node
        );
    }
    // Every emergency reached the queue.
    for id in &ids[..6] {
        assert_eq!(
            r.highest.get(id).map(String::as_str),
            Some("emergency"),
            "{:?}",
            r.highest
        );
    }
    for p in phones {
        p.abort();
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&tmp);
}
