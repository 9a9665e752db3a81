//! Several voicecare nodes behind one number: Kamailio, configured with
//! `packaging/kamailio/kamailio.cfg`, takes the carrier's calls on one
//! address and spreads them over two `voicecare serve` nodes sharing one
//! database; SIPp plays the carrier, placing elders' calls into the service
//! and taking the calls the nodes place. Then one node is killed (SIGKILL):
//! Kamailio stops sending it calls, the survivor answers every new call, and
//! the calls that were on the dead node are closed as interrupted and rung
//! back by the survivor.
//!
//! Everything runs on loopback with free ports; every wait has a deadline.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use voicecare_store::testing::TestDb;

use support::repo;
use support::sip::{Sipp, enrol_number, free_ports, tempdir};

/// `voicecare serve` taking calls into the service from its trunk, Kamailio.
struct Node {
    child: Child,
}

impl Node {
    fn start(db: &TestDb, data_dir: &Path, id: &str, sip: u16, rtp: &str, proxy: u16) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(&db.url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(repo().join("ivr-flows"))
            .args(["--node-id", id, "--dialer-tick-ms", "200"])
            .args(["--call-lease-secs", "3", "--no-recordings"])
            .args(["--asr-workers", "1", "--service-name", "Riverside Care"])
            // The node's trunk is the proxy: calls into the service come
            // from it, and the node's own calls go out through it.
            .args(["--sip-trunk", &format!("127.0.0.1:{proxy}")])
            .args(["--sip-bind", &format!("127.0.0.1:{sip}")])
            .args(["--sip-rtp-ports", rtp, "--sip-country-code", "86"])
            .args(["--sip-from", "+8610000000", "--sip-options-interval", "5"])
            .env(
                "RUST_LOG",
                std::env::var("VC_TEST_LOG").unwrap_or("warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start voicecare serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("voicecare listening on http://") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(180))
            .expect("voicecare serve did not start listening");
        Node { child }
    }

    /// SIGKILL: no graceful shutdown, no BYE to anyone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kamailio`, or a failure that says how to install it.
fn kamailio_binary() -> &'static str {
    for bin in ["kamailio", "/usr/sbin/kamailio"] {
        let found = Command::new(bin)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if found {
            return bin;
        }
    }
    panic!("kamailio is not installed: run scripts/prepare.sh (it installs the kamailio package)");
}

/// Kamailio in the foreground with the packaged configuration, its
/// addresses given as defines; its log is kept for the test to read.
struct Kamailio {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Kamailio {
    fn start(dir: &Path, port: u16, nodes: &[u16], carrier: u16) -> Kamailio {
        let list = dir.join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|p| format!("1 sip:127.0.0.1:{p}\n"))
            .collect();
        std::fs::write(&list, lines).unwrap();
        let mut child = Command::new(kamailio_binary())
            .arg("-f")
            .arg(repo().join("packaging/kamailio/kamailio.cfg"))
            // Foreground, log to stderr, small memory.
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .args(["-A", &format!("LISTEN=udp:127.0.0.1:{port}")])
            .args(["-A", &format!("DISPATCHER_LIST=\"{}\"", list.display())])
            .args(["-A", "CARRIER_HOST=\"127.0.0.1\""])
            .args(["-A", &format!("CARRIER_PORT={carrier}")])
            // Ping every second; 3 s without any answer is a dead node.
            .args(["-A", "PING_SECS=1", "-A", "NO_ANSWER_MS=3000"])
            .current_dir(dir)
            // Its own process group, so its children go with it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kamailio");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("WARNING") || line.contains("ERROR") || line.contains(" call ") {
                    eprintln!("kamailio: {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "kamailio exited ({status}):\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            assert!(Instant::now() < deadline, "kamailio did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Kamailio { child, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until a line of the log contains `needle`; its index.
    async fn wait_for_line(&self, needle: &str, secs: u64) -> usize {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(i) = self.log().iter().position(|l| l.contains(needle)) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "kamailio never logged {needle:?}:\n{}",
                self.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM to the group: the main process stops its children.
        let group = format!("-{}", self.child.id());
        let kill = |signal: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        kill("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group.
        kill("-KILL");
        let _ = self.child.wait();
    }
}

/// The carrier placing `calls` calls into the service, through the proxy,
/// from `prefix` followed by 1, 2, ... (one enrolled elder each).
async fn carrier_calls(prefix: &str, calls: u32, proxy: u16) -> Sipp {
    let target = format!("127.0.0.1:{proxy}");
    let args = [
        "-s", "95000", "-key", "caller", prefix, "-key", "offer", "8 0 101", "-r", "10",
    ];
    let args: Vec<&str> = args.into_iter().chain([target.as_str()]).collect();
    Sipp::run_calls("uac-dial-in-proxied.xml", Sipp::ports(), &args, calls).await
}

/// The node that took each elder's call into the service, once all have one.
async fn nodes_taking(pool: &PgPool, elders: &[i64]) -> BTreeMap<i64, (i64, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT elder_id, entity_id, details->>'node_id' FROM audit_events
             WHERE action = 'call.inbound' AND elder_id = ANY($1)",
        )
        .bind(elders)
        .fetch_all(pool)
        .await
        .unwrap();
        if rows.len() >= elders.len() {
            assert_eq!(rows.len(), elders.len(), "one call per caller: {rows:?}");
            return rows.into_iter().map(|(e, c, n)| (e, (c, n))).collect();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {} calls into the service, have {rows:?}",
            elders.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll `query` (bound to `call`) until it returns a row.
async fn wait_row<T>(pool: &PgPool, what: &str, query: &str, call: i64) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Option<T> = sqlx::query_as(sqlx::AssertSqlSafe(query.to_string()))
            .bind(call)
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

async fn enrol_all(pool: &PgPool, prefix: &str, n: u32) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(enrol_number(pool, &format!("{prefix}{i}")).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_number_reach_both_nodes_and_a_dead_nodes_calls_are_taken_over() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp: PathBuf = tempdir("cluster");
    // Four callers before the kill, two once the proxy has marked the dead
    // node inactive, two right after a second kill.
    let first = enrol_all(&pool, "+86139123450", 4).await;
    let marked_down = enrol_all(&pool, "+86139123451", 2).await;
    let killed_again = enrol_all(&pool, "+86139123452", 2).await;

    let proxy = free_ports(30_000, 32_000, 1);
    let (sip_a, sip_b) = (free_ports(32_000, 34_000, 1), free_ports(34_000, 36_000, 1));
    // The carrier's side for the nodes' own calls: busy to every one.
    let carrier = Sipp::run_calls("uas-busy-at-once.xml", Sipp::ports(), &[], 0).await;
    let _a = Node::start(&db, &tmp.join("a"), "node-a", sip_a, "47000-47998", proxy);
    let mut b = Node::start(&db, &tmp.join("b"), "node-b", sip_b, "48000-48998", proxy);
    let kamailio = Kamailio::start(&tmp, proxy, &[sip_a, sip_b], carrier.port);
    let (node_a, node_b) = (
        format!("node sip:127.0.0.1:{sip_a}"),
        format!("node sip:127.0.0.1:{sip_b}"),
    );

    // (a) Four calls to the one address: round-robin puts two on each node.
    let mut before = carrier_calls("+86139123450", 4, proxy).await;
    let taken = nodes_taking(&pool, &first).await;
    let on = |node: &str| -> Vec<i64> {
        taken
            .values()
            .filter(|(_, n)| n == node)
            .map(|(c, _)| *c)
            .collect()
    };
    let (on_a, on_b) = (on("node-a"), on("node-b"));
    assert_eq!(
        (on_a.len(), on_b.len()),
        (2, 2),
        "the proxy spreads calls over both nodes: {taken:?}"
    );
    // Each caller keys 1: an emergency, the elder held on the line.
    for &call in &on_b {
        let level: (String,) = wait_row(
            &pool,
            "the emergency of a call on node-b",
            "SELECT level FROM escalations WHERE call_id = $1",
            call,
        )
        .await;
        assert_eq!(level.0, "emergency");
    }

    // (b) node-b dies with two elders on the line. No call goes to it: the
    // proxy's pings find it dead (no answer for 3 s) and mark it down.
    b.kill();
    let down = kamailio
        .wait_for_line(&format!("{node_b} is down (OPTIONS)"), 30)
        .await;
    // Once marked down, node-b gets no INVITE at all.
    let mut after = carrier_calls("+86139123451", 2, proxy).await;
    let taken = nodes_taking(&pool, &marked_down).await;
    assert!(
        taken.values().all(|(_, n)| n == "node-a"),
        "the survivor takes every call: {taken:?}"
    );
    let log = kamailio.log();
    let relayed: Vec<&String> = log[down..]
        .iter()
        .filter(|l| l.contains(&format!("to {node_b}")))
        .collect();
    assert!(
        relayed.is_empty(),
        "calls were sent to the dead node: {relayed:?}"
    );
    assert!(
        log.iter().any(|l| l.contains(&format!("to {node_a}"))),
        "the proxy logs where calls go"
    );

    // (c) The calls node-b held: the survivor's rescuer closes them as
    // interrupted, the elder is off the line of their emergency (still in
    // the queue), and node-a calls each elder back through the proxy.
    for &call in &on_b {
        let (status, outcome): (String, Option<String>) = wait_row(
            &pool,
            "the dead node's call to be closed",
            "SELECT status, outcome FROM calls WHERE id = $1 AND status <> 'in_progress'",
            call,
        )
        .await;
        assert_eq!(
            (status.as_str(), outcome.as_deref()),
            ("interrupted", Some("interrupted"))
        );
        let (node, replacement): (Option<String>, Option<i64>) = sqlx::query_as(
            "SELECT details->>'node_id', (details->>'replacement')::bigint FROM audit_events
             WHERE action = 'call.interrupted' AND entity_id = $1",
        )
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(node.as_deref(), Some("node-b"));
        let replacement = replacement.expect("a call back replaces the interrupted call");
        let (status, left): (String, bool) = sqlx::query_as(
            "SELECT status, elder_left_at IS NOT NULL FROM escalations WHERE call_id = $1",
        )
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (status.as_str(), left),
            ("open", true),
            "the emergency stays queued"
        );
        // The carrier answers the call back busy: rung, through the proxy.
        let (purpose, claimed_by, attempt): (String, String, String) = wait_row(
            &pool,
            "the call back to be rung",
            "SELECT c.purpose, au.details->>'node_id', a.status FROM calls c
             JOIN call_attempts a ON a.call_id = c.id
             JOIN audit_events au ON au.entity_id = c.id AND au.action = 'call.claim'
             WHERE c.id = $1 AND a.ended_at IS NOT NULL ORDER BY a.id LIMIT 1",
            replacement,
        )
        .await;
        assert_eq!(
            (purpose.as_str(), claimed_by.as_str(), attempt.as_str()),
            ("callback", "node-a", "busy")
        );
    }
    let numbers: Vec<String> = sqlx::query_scalar(
        "SELECT e.phone FROM calls c JOIN elders e ON e.id = c.elder_id WHERE c.id = ANY($1)",
    )
    .bind(&on_b)
    .fetch_all(&pool)
    .await
    .unwrap();
    let rung = carrier.messages();
    for n in &numbers {
        assert!(
            rung.contains(&format!("INVITE sip:{n}@127.0.0.1:{}", carrier.port)),
            "the call back to {n} reached the carrier through the proxy:\n{rung}"
        );
    }

    // node-b comes back: its answer to a ping puts it back in the set.
    let mut b = Node::start(&db, &tmp.join("b"), "node-b", sip_b, "48000-48998", proxy);
    kamailio
        .wait_for_line(&format!("{node_b} is up (OPTIONS)"), 30)
        .await;
    // Killed again, and calls placed at once, before a ping has gone
    // unanswered for 3 s: one of the two is sent to node-b, which does not
    // answer, and the proxy passes it to node-a.
    b.kill();
    let mut last = carrier_calls("+86139123452", 2, proxy).await;
    let taken = nodes_taking(&pool, &killed_again).await;
    assert!(
        taken.values().all(|(_, n)| n == "node-a"),
        "the survivor takes every call: {taken:?}"
    );
    let failed = kamailio
        .wait_for_line(&format!("{node_b} failed (408)"), 30)
        .await;
    let failover = kamailio
        .wait_for_line(&format!("to {node_a} (failover)"), 30)
        .await;
    assert!(failed < failover, "{:#?}", &kamailio.log()[failed..]);

    // The carrier's side: every call was answered; the calls on node-b
    // heard nothing more, and their BYE, sent after 15 s, failed: the proxy
    // answers 408 when nothing answers on node-b's address, and the
    // restarted node-b answers 481, as it knows nothing of the call.
    for sipp in [&mut before, &mut after, &mut last] {
        assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    }
    let msgs = before.messages();
    assert!(
        msgs.matches("SIP/2.0 200 OK").count() >= 4,
        "all four answered:\n{msgs}"
    );
    // The proxy stays on the path: ACK and BYE go through it to the node.
    assert!(
        msgs.contains(&format!("Record-Route: <sip:127.0.0.1:{proxy};lr")),
        "record-routed:\n{msgs}"
    );
    let timed_out = msgs
        .split("----------------------------------------------")
        .filter(|m| {
            (m.contains("SIP/2.0 408") || m.contains("SIP/2.0 481")) && m.contains("CSeq: 2 BYE")
        })
        .count();
    assert_eq!(timed_out, on_b.len(), "BYEs to the dead node:\n{msgs}");
    for sipp in [&after, &last] {
        let msgs = sipp.messages();
        assert!(
            !msgs.contains("SIP/2.0 408") && !msgs.contains("SIP/2.0 481"),
            "{msgs}"
        );
    }
}
