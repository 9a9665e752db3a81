//! Calls end to end: the real `voicecare` binary serving device signalling,
//! scheduling and running calls against a real PostgreSQL; simulated elders
//! (`SimPhone`) over real WebRTC on loopback, speaking the recorded fixtures
//! from `audio-fixtures/`; the real whisper model (install it with
//! `scripts/install-model.sh`).
//!
//! Every wait polls the database (or the process output) against a deadline.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use voicecare_store::testing::TestDb;
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{SimPhone, SimReport, SimScript};

use support::{community, fixture_wav, repo, wait_for};

/// One call test at a time: each runs a whole engine with whisper, and the
/// machine's cores are better spent keeping every call real-time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Engine {
    child: Child,
    addr: String,
    /// The engine's log lines so far (also echoed to this process's stderr).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Engine {
    fn start(db: &TestDb, data_dir: &Path, node: &str, extra: &[&str]) -> Engine {
        Self::start_with_flows(db, data_dir, node, &repo().join("ivr-flows"), extra)
    }

    fn start_with_flows(
        db: &TestDb,
        data_dir: &Path,
        node: &str,
        flows: &Path,
        extra: &[&str],
    ) -> Engine {
        Self::start_on(&db.url, data_dir, node, flows, extra)
    }

    fn start_on(url: &str, data_dir: &Path, node: &str, flows: &Path, extra: &[&str]) -> Engine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(flows)
            .args([
                "--node-id",
                node,
                "--dialer-tick-ms",
                "200",
                "--asr-workers",
                "1",
            ])
            .args(["--service-name", "Riverside Care"])
            .args(extra)
            .env("RUST_LOG", "info,voicecare_server=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start voicecare serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                sink.lock().unwrap().push(line);
            }
        });
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
            .recv_timeout(Duration::from_secs(120))
            .expect("voicecare serve did not start listening");
        Engine { child, addr, log }
    }

    /// Wait for a log line containing every one of `parts`; returns it.
    async fn log_line(&self, parts: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a log line with {parts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    fn ws(&self) -> String {
        format!("ws://{}/v1/devices/ws", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no graceful shutdown
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Elder {
    id: i64,
    device: String,
    token: String,
}

async fn enrol(pool: &PgPool, community: i64, device: &str, lang: &str, contacts: usize) -> Elder {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
         VALUES ('Mary Test', $1, $2, 'Asia/Shanghai', $3) RETURNING id",
    )
    .bind(device)
    .bind(lang)
    .bind(community)
    .fetch_one(pool)
    .await
    .unwrap();
    for i in 0..contacts {
        sqlx::query("INSERT INTO emergency_contacts (elder_id, position, name, phone) VALUES ($1, $2, 'Son', $3)")
            .bind(id)
            .bind((i + 1) as i16)
            .bind(format!("+8613800000{:03}", i))
            .execute(pool)
            .await
            .unwrap();
    }
    let token = format!("secret-token-for-{device}");
    let hash = voicecare_server::runner::gateway::token_hash(&token);
    voicecare_store::dialer::set_device_token(pool, device, &hash, Utc::now())
        .await
        .unwrap();
    Elder {
        id,
        device: device.to_string(),
        token,
    }
}

/// A check-in window open right now in the elder's zone.
async fn schedule_now(pool: &PgPool, elder: i64, attempts: i16, retry_minutes: i16) {
    sqlx::query(
        "INSERT INTO checkin_schedules (elder_id, window_start, window_end, max_attempts, retry_minutes)
         VALUES ($1, (now() AT TIME ZONE 'Asia/Shanghai' - interval '1 hour')::time,
                     (now() AT TIME ZONE 'Asia/Shanghai' + interval '2 hours')::time, $2, $3)",
    )
    .bind(elder)
    .bind(attempts)
    .bind(retry_minutes)
    .execute(pool)
    .await
    .unwrap();
}

/// The elder answers, waits for the question, says `wav`, then (after the
/// engine's reply, if `hear_reply`) hangs up.
fn answer_then_say(wav: &Path, hear_reply: bool) -> String {
    let reply = if hear_reply {
        "[[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 1500\ntimeout_ms = 60000\n"
    } else {
        ""
    };
    format!(
        r#"
answer_after_ms = 300
max_call_ms = 90000
[[step]]
do = "wait_for_prompt"
quiet_ms = 2500
timeout_ms = 60000
[[step]]
do = "say"
wav = "{}"
{reply}[[step]]
do = "hang_up"
"#,
        wav.display()
    )
}

async fn phone(engine: &Engine, elder: &Elder, script: &str, dir: &Path) -> SimPhone {
    let mut cfg = ClientConfig::new(engine.ws(), &elder.device, DeviceToken::new(&elder.token));
    cfg.leg = LegConfig::loopback();
    let script = SimScript::parse(script, dir).unwrap();
    SimPhone::connect(cfg, script)
        .await
        .expect("sim phone registers")
}

async fn finished_call(pool: &PgPool, elder: i64, secs: u64) -> i64 {
    wait_for(
        pool,
        "the call to end",
        secs,
        "SELECT id FROM calls WHERE elder_id = $1 AND status IN ('completed', 'unreachable') ORDER BY id LIMIT 1",
        elder,
    )
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct CallRow {
    status: String,
    outcome: Option<String>,
    direction: String,
    purpose: String,
    flow_path: Vec<String>,
}

async fn call_row(pool: &PgPool, id: i64) -> CallRow {
    sqlx::query_as("SELECT status, outcome, direction, purpose, flow_path FROM calls WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn escalations(pool: &PgPool, call: i64) -> Vec<(String, bool, serde_json::Value)> {
    sqlx::query_as(
        "SELECT level, elder_on_line, reasons FROM escalations WHERE call_id = $1 ORDER BY id",
    )
    .bind(call)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkin_with_distress_stores_transcript_assessment_and_escalates() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("distress");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-distress", "en", 1).await;
    let engine = Engine::start(&db, &tmp.join("data"), "node-a", &[]);
    let wav = fixture_wav(&tmp, "espeak/en_emergency_1.flac");
    let script = answer_then_say(&wav, true);
    let mut sim = phone(&engine, &elder, &script, &tmp).await;
    schedule_now(&pool, elder.id, 3, 10).await;
    let report = tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    assert!(report.prompts_heard >= 1, "the contact heard the notice");

    let call = finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.outcome.as_deref(), Some("escalated"));
    assert_eq!(
        (row.direction.as_str(), row.purpose.as_str()),
        ("outbound", "checkin")
    );
    assert!(
        // With nothing to follow up, the branch goes straight on.
        row.flow_path.starts_with(&[
            "greeting".to_string(),
            "follow_up_1".to_string(),
            "how_are_you".to_string()
        ]),
        "{:?}",
        row.flow_path
    );

    let (transcript, audio_path, level): (String, Option<String>, String) = sqlx::query_as(
        "SELECT u.transcript, u.audio_path, a.level FROM utterances u
         JOIN distress_assessments a ON a.utterance_id = u.id WHERE u.call_id = $1 ORDER BY u.seq LIMIT 1",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(transcript.to_lowercase().contains("fell"), "{transcript}");
    assert_eq!(level, "emergency");
    let audio_path = audio_path.expect("utterance audio kept");
    assert!(audio_path.contains("recordings"), "{audio_path}");
    let wav = voicecare_media::load(Path::new(&audio_path), None).unwrap();
    assert!(
        wav.duration_s() > 1.0,
        "{audio_path}: {} s",
        wav.duration_s()
    );

    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "emergency");
    assert!(esc[0].1, "the elder was kept on the line");

    let attempts: Vec<(String, String)> = sqlx::query_as(
        "SELECT callee, status FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, vec![("elder".to_string(), "ended".to_string())]);
    // The next check-in is scheduled for a later window, not this one again.
    let next: chrono::DateTime<Utc> = wait_for(
        &pool,
        "the next check-in",
        20,
        "SELECT due_at FROM calls WHERE elder_id = $1 AND status = 'scheduled'",
        elder.id,
    )
    .await;
    assert!(next > Utc::now() + chrono::Duration::hours(12), "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkin_with_a_fine_reply_raises_nothing() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("fine");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-fine", "en", 1).await;
    let engine = Engine::start(&db, &tmp.join("data"), "node-a", &[]);
    let wav = fixture_wav(&tmp, "espeak/en_ok_1.flac");
    let script = format!(
        r#"
max_call_ms = 90000
[[step]]
do = "wait_for_prompt"
quiet_ms = 2500
timeout_ms = 60000
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "hang_up"
"#,
        wav.display()
    );
    let mut sim = phone(&engine, &elder, &script, &tmp).await;
    schedule_now(&pool, elder.id, 3, 10).await;
    let report = tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    let call = finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.outcome.as_deref(), Some("hung_up"));
    // The reply was heard and judged fine; the flow went on to the next question.
    assert!(
        row.flow_path.iter().any(|s| s == "ask_meals"),
        "{:?}",
        row.flow_path
    );
    let (transcript, level): (String, String) = sqlx::query_as(
        "SELECT u.transcript, a.level FROM utterances u JOIN distress_assessments a ON a.utterance_id = u.id
         WHERE u.call_id = $1 ORDER BY u.seq LIMIT 1",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(transcript.to_lowercase().contains("fine"), "{transcript}");
    assert_eq!(level, "ok");
    assert!(escalations(&pool, call).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_walks_the_ladder_to_an_urgent_unreachable_escalation() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("ladder");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-ladder", "zh", 1).await;
    // Ring 2 s; one ladder minute lasts 100 ms, so "retry after 10 minutes" is 1 s.
    let engine = Engine::start(
        &db,
        &tmp.join("data"),
        "node-a",
        &["--ring-secs", "2", "--ladder-minute-ms", "100"],
    );
    let mut sim = phone(&engine, &elder, "on_ring = \"ignore\"\n", &tmp).await;
    let rings = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(30), sim.run_call()).await {
            assert!(!r.answered);
            n += 1;
        }
        n
    });
    schedule_now(&pool, elder.id, 3, 10).await;
    let call = finished_call(&pool, elder.id, 90).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.status, "unreachable");
    assert_eq!(row.outcome.as_deref(), Some("unreachable"));
    let attempts: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT callee, status, end_reason FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, &str)> = attempts
        .iter()
        .map(|(c, s, _)| (c.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("elder", "no_answer"),
            ("elder", "no_answer"),
            ("elder", "no_answer"),
            ("contact", "failed")
        ]
    );
    assert!(
        attempts[3].2.as_deref().unwrap_or("").contains("telephone"),
        "{attempts:?}"
    );
    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "urgent");
    assert!(!esc[0].1);
    assert!(esc[0].2.to_string().contains("unreachable"), "{}", esc[0].2);
    drop(engine);
    assert_eq!(rings.await.unwrap(), 3, "the phone rang three times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_help_escalates_with_the_elder_on_the_line() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("dtmf");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-dtmf", "zh", 0).await;
    let engine = Engine::start(&db, &tmp.join("data"), "node-a", &[]);
    let script = r#"
max_call_ms = 90000
[[step]]
do = "wait_for_prompt"
quiet_ms = 2500
timeout_ms = 60000
[[step]]
do = "digits"
keys = "1"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "hang_up"
"#;
    let mut sim = phone(&engine, &elder, script, &tmp).await;
    schedule_now(&pool, elder.id, 3, 10).await;
    tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    let call = finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.outcome.as_deref(), Some("escalated"));
    assert!(
        row.flow_path.iter().any(|s| s == "help_requested"),
        "{:?}",
        row.flow_path
    );
    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "emergency");
    assert!(esc[0].1);
}

/// Day one, as if yesterday: the elder said their knee hurt (stored as a
/// reply and assessed by the real classifier, which opens the concern).
/// Returns yesterday's call.
async fn said_yesterday(pool: &PgPool, elder: i64, text: &str) -> i64 {
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let call: i64 = sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, status, due_at, ended_at)
         VALUES ($1, 'outbound', 'checkin', 'completed', $2, $2) RETURNING id",
    )
    .bind(elder)
    .bind(yesterday)
    .fetch_one(pool)
    .await
    .unwrap();
    let a = voicecare_core::distress::Classifier::shared()
        .assess(&voicecare_core::distress::Utterance::new(text));
    voicecare_store::calls::record_utterance(
        pool,
        &voicecare_store::calls::NewUtterance {
            call_id: call,
            attempt_id: None,
            seq: 1,
            flow_step: Some("how_are_you"),
            transcript: text,
            language: Some(voicecare_core::Lang::Zh),
            confidence: Some(0.9),
            audio_path: None,
            audio_ms: None,
            asr_queue_ms: None,
            asr_decode_ms: None,
        },
        &voicecare_store::calls::AssessmentRecord::from_assessment(&a),
        yesterday,
    )
    .await
    .unwrap();
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yesterdays_knee_pain_is_asked_about_and_worse_raises_it() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("memory");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-memory", "zh", 0).await;
    let day1 = said_yesterday(&pool, elder.id, "我膝盖疼，走路不方便").await;
    let engine = Engine::start(&db, &tmp.join("data"), "node-a", &[]);
    // The greeting runs straight into the follow-up question; the elder
    // presses 3 (worse) when it ends, then hangs up at the next question.
    let script = r#"
max_call_ms = 120000
[[step]]
do = "wait_for_prompt"
quiet_ms = 2500
timeout_ms = 90000
[[step]]
do = "digits"
keys = "3"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "hang_up"
"#;
    let mut sim = phone(&engine, &elder, script, &tmp).await;
    schedule_now(&pool, elder.id, 3, 10).await;
    tokio::time::timeout(Duration::from_secs(180), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    let call: i64 = wait_for(
        &pool,
        "today's call to end",
        60,
        "SELECT id FROM calls WHERE id > $1 AND status = 'completed' ORDER BY id LIMIT 1",
        day1,
    )
    .await;
    let row = call_row(&pool, call).await;
    assert!(
        row.flow_path.iter().any(|s| s == "ask_follow_up_1"),
        "the follow-up was asked: {:?}",
        row.flow_path
    );
    let (change, level): (String, String) = sqlx::query_as(
        "SELECT m.change, k.level FROM concern_mentions m JOIN concerns k ON k.id = m.concern_id
          WHERE m.call_id = $1 AND k.slot = '膝盖'",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((change.as_str(), level.as_str()), ("worse", "urgent"));
    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "urgent");
    let reasons = esc[0].2.to_string();
    assert!(
        reasons.contains("memory.trend") && reasons.contains("膝盖疼今天更重了"),
        "{reasons}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elder_calling_in_for_help_reaches_the_queue_on_the_line() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("dialin");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "sos-dialin", "en", 0).await;
    let engine = Engine::start(&db, &tmp.join("data"), "node-a", &[]);
    let wav = fixture_wav(&tmp, "espeak/en_emergency_1.flac");
    let script = format!(
        r#"
call_in = true
max_call_ms = 90000
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "hang_up"
"#,
        wav.display()
    );
    let mut sim = phone(&engine, &elder, &script, &tmp).await;
    // A wrong token is refused at registration.
    let mut bad = ClientConfig::new(
        engine.ws(),
        "sos-dialin",
        DeviceToken::new("not-the-token-at-all"),
    );
    bad.leg = LegConfig::loopback();
    assert!(
        SimPhone::connect(bad, SimScript::parse("", &tmp).unwrap())
            .await
            .is_err()
    );

    let report = tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    let call = finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(
        (row.direction.as_str(), row.purpose.as_str()),
        ("inbound", "help")
    );
    assert_eq!(row.status, "completed");
    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "emergency");
    assert!(esc[0].1, "kept on the line");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM utterances WHERE call_id = $1")
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n >= 1);
}

/// Dial-in honours the node's cap, and a device places one call at a time;
/// both refusals say why on the device's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_in_is_refused_past_the_node_cap_and_past_one_call_per_device() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("dialin-cap");
    let c = community(&pool).await;
    let first = enrol(&pool, c, "sos-cap-1", "en", 0).await;
    let second = enrol(&pool, c, "sos-cap-2", "en", 0).await;
    let engine = Engine::start(
        &db,
        &tmp.join("data"),
        "node-a",
        &["--max-calls-per-node", "1"],
    );
    let mut cfg = ClientConfig::new(engine.ws(), &first.device, DeviceToken::new(&first.token));
    cfg.leg = LegConfig::loopback();
    let (device, _rings) = voicecare_telephony::signalling::DeviceClient::connect(cfg)
        .await
        .unwrap();
    let mut leg = device.call(None).await.expect("the first call is taken");
    leg.wait_connected(Duration::from_secs(10)).await.unwrap();
    let _call: i64 = wait_for(
        &pool,
        "the first call to be in progress",
        30,
        "SELECT id FROM calls WHERE elder_id = $1 AND status = 'in_progress'",
        first.id,
    )
    .await;

    // The same device again, while its call goes on.
    let Err(err) = device.call(None).await else {
        panic!("a second call from the device was taken");
    };
    assert!(err.to_string().contains("already in a call"), "{err}");

    // Another device: the node runs as many calls as it may.
    let (mut ws, _) = tokio_tungstenite::connect_async(engine.ws()).await.unwrap();
    let send = |v: serde_json::Value| Message::Text(v.to_string().into());
    ws.send(send(
        serde_json::json!({"type": "register", "device_id": second.device, "token": second.token}),
    ))
    .await
    .unwrap();
    let offer = voicecare_telephony::CallLeg::offer(&LegConfig::loopback())
        .await
        .unwrap();
    ws.send(send(
        serde_json::json!({"type": "offer", "call_id": "c2", "sdp": offer.sdp()}),
    ))
    .await
    .unwrap();
    let refusal = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                continue;
            };
            let m: serde_json::Value = serde_json::from_str(&t).unwrap();
            if m["type"] == "error" {
                return m;
            }
        }
    })
    .await
    .expect("the call-in is refused");
    assert_eq!(refusal["code"], "rejected", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1 call"),
        "{refusal}"
    );
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM calls WHERE elder_id = $1")
        .bind(second.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(calls, 0);
    leg.control().hang_up();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_leaves_the_call_interrupted_and_rescheduled() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("crash");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-crash", "en", 0).await;
    let lease = ["--call-lease-secs", "3"];
    let mut engine = Engine::start(&db, &tmp.join("data"), "node-a", &lease);
    let script = r#"
max_call_ms = 60000
[[step]]
do = "silence"
ms = 60000
"#;
    let mut sim = phone(&engine, &elder, script, &tmp).await;
    let ringing = tokio::spawn(async move { sim.run_call().await });
    schedule_now(&pool, elder.id, 3, 10).await;
    let call: i64 = wait_for(
        &pool,
        "the call to be answered",
        60,
        "SELECT c.id FROM calls c JOIN call_attempts a ON a.call_id = c.id
         WHERE c.elder_id = $1 AND c.status = 'in_progress' AND a.status = 'answered'",
        elder.id,
    )
    .await;
    engine.kill();
    let _ = tokio::time::timeout(Duration::from_secs(30), ringing).await;
    // Still in progress: nobody closed it.
    assert_eq!(call_row(&pool, call).await.status, "in_progress");

    let _engine = Engine::start(&db, &tmp.join("data"), "node-b", &lease);
    let status: String = wait_for(
        &pool,
        "the rescuer",
        60,
        "SELECT status FROM calls WHERE id = $1 AND status <> 'in_progress'",
        call,
    )
    .await;
    assert_eq!(status, "interrupted");
    let replacement: i64 = wait_for(
        &pool,
        "a replacement call",
        10,
        "SELECT id FROM calls WHERE replaces = $1",
        call,
    )
    .await;
    let (purpose, elder_id): (String, i64) =
        sqlx::query_as("SELECT purpose, elder_id FROM calls WHERE id = $1")
            .bind(replacement)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((purpose.as_str(), elder_id), ("checkin", elder.id));
    let attempt: String = sqlx::query_scalar(
        "SELECT status FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no LIMIT 1",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempt, "interrupted");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE entity = 'call' AND entity_id = $1 AND action = 'call.interrupted'",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "voicecare-calls-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u32 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_at_once_never_exceed_the_caps() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let c = community(&pool).await;
    let due = Utc::now() - chrono::Duration::seconds(1);
    for i in 0..40 {
        let e = enrol(&pool, c, &format!("cap-{i:02}"), "en", 0).await;
        voicecare_store::dialer::schedule_checkin(&pool, e.id, "daily_checkin", due, Utc::now())
            .await
            .unwrap()
            .expect("scheduled");
        // A second node scheduling the same elder changes nothing.
        assert!(
            voicecare_store::dialer::schedule_checkin(
                &pool,
                e.id,
                "daily_checkin",
                due,
                Utc::now()
            )
            .await
            .unwrap()
            .is_none()
        );
    }
    let caps = voicecare_store::dialer::Caps {
        global: 7,
        per_node: 5,
    };
    let mut tasks = Vec::new();
    for node in ["node-a", "node-b", "node-a", "node-b", "node-a", "node-b"] {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..5 {
                n += voicecare_store::dialer::claim_due(
                    &pool,
                    node,
                    caps,
                    chrono::Duration::seconds(30),
                    3,
                    Utc::now(),
                )
                .await
                .unwrap()
                .len();
            }
            n
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        claimed += t.await.unwrap();
    }
    let (all, a) = voicecare_store::dialer::in_progress(&pool, "node-a")
        .await
        .unwrap();
    let (_, b) = voicecare_store::dialer::in_progress(&pool, "node-b")
        .await
        .unwrap();
    assert_eq!(claimed as i64, all);
    assert_eq!(all, 7, "the global cap is reached and not passed");
    assert!(a <= 5 && b <= 5, "per-node caps: a={a} b={b}");
}

/// A flow whose one question is a long prompt, so it is plain whether the
/// engine cut it short.
const LONG_QUESTION: &str = "Before we start, here is a long message about the week ahead. \
The community centre opens at nine every morning and closes at five in the afternoon. \
On Monday there is a tea party in the garden, on Tuesday a doctor visits the centre, \
on Wednesday the library van comes to the square, on Thursday there is gentle exercise \
in the hall, and on Friday the shop delivers groceries to everyone who ordered them. \
Please remember to drink water during the warm days and to keep your door locked at night. \
Now, tell me, how are you today?";

/// A flow of one spoken question (`ask_step`), then goodbye; `settings` go
/// into its `[flow]` table. It never escalates by itself.
fn question_flow(
    id: &str,
    settings: &str,
    ask_step: &str,
    en: &str,
    zh: &str,
    next: &str,
) -> String {
    format!(
        r#"[flow]
id = "{id}"
name = "Test flow {id}"
languages = ["en", "zh"]
start = "{ask_step}"
inputs = ["elder_name"]
{settings}

[[step]]
id = "{ask_step}"
type = "ask"
input = "speech"
prompt.en = "{en}"
prompt.zh = "{zh}"
next = "{next}"

[[step]]
id = "thanks"
type = "hangup"
prompt.en = "Thank you. Goodbye."
prompt.zh = "谢谢，再见。"
"#
    )
}

fn barge_flow(next: &str) -> String {
    question_flow(
        "barge_test",
        "rate = 1.0",
        "long_question",
        LONG_QUESTION,
        "您好，今天怎么样？",
        next,
    )
}

/// How long the engine's long question lasts when played in full, in ms.
fn long_question_ms(dir: &Path) -> f64 {
    use voicecare_server::runner::tts::{Espeak, Prompts};
    let prompts = Prompts::new(Box::new(Espeak::default()), dir.join("tts"), dir.into());
    let pcm = prompts
        .pcm(LONG_QUESTION, None, voicecare_core::flow::Lang::En, 1.0)
        .unwrap();
    pcm.len() as f64 / 16.0
}

/// A flows directory holding one flow, as `<id>.toml`.
fn flows_dir(tmp: &Path, id: &str, flow: &str) -> PathBuf {
    let dir = tmp.join("flows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.toml")), flow).unwrap();
    dir
}

async fn schedule_flow(pool: &PgPool, elder: i64, flow: &str) -> i64 {
    voicecare_store::dialer::schedule_checkin(pool, elder, flow, Utc::now(), Utc::now())
        .await
        .unwrap()
        .expect("scheduled")
}

async fn utterances(pool: &PgPool, call: i64) -> Vec<(Option<String>, String)> {
    sqlx::query_as("SELECT flow_step, transcript FROM utterances WHERE call_id = $1 ORDER BY seq")
        .bind(call)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The phone talks over the question: the prompt stops and the answer is taken.
async fn barge_in_call(engine: &Engine, pool: &PgPool, elder: &Elder, tmp: &Path) -> i64 {
    let full_ms = long_question_ms(tmp);
    let wav = fixture_wav(tmp, "espeak/en_ok_1.flac");
    let script = format!(
        r#"
max_call_ms = 120000
[[step]]
do = "wait_for_speech"
after_ms = 1500
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 90000
"#,
        wav.display()
    );
    let mut sim = phone(engine, elder, &script, tmp).await;
    let call = schedule_flow(pool, elder.id, "barge_test").await;
    let report = tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    let talk_ms = report.talk_ms.unwrap();
    // Played in full, the question alone outlasts the whole call.
    assert!(
        talk_ms < full_ms,
        "the call lasted {talk_ms:.0} ms; the question alone lasts {full_ms:.0} ms"
    );
    finished_call(pool, elder.id, 60).await;
    let row = call_row(pool, call).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.outcome.as_deref(), Some("ok"));
    assert_eq!(row.flow_path, vec!["long_question", "thanks"]);
    let heard = utterances(pool, call).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0].0.as_deref(), Some("long_question"));
    assert!(heard[0].1.to_lowercase().contains("fine"), "{heard:?}");
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_spoken_over_a_prompt_stop_it_and_are_taken_as_the_answer() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("barge");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-barge", "en", 0).await;
    let flows = flows_dir(&tmp, "barge_test", &barge_flow("thanks"));
    let engine = Engine::start_with_flows(&db, &tmp.join("data"), "node-a", &flows, &[]);
    barge_in_call(&engine, &pool, &elder, &tmp).await;
}

/// One reply on a flow that never escalates and waits 5 s of silence before
/// it takes the turn: a queue item can only come from words read before the
/// end of the turn. Returns the call, its one escalation's rule ids, when it
/// was queued, and the phone's report.
async fn patient_call(
    db: &TestDb,
    tmp: &Path,
    elder: &Elder,
    wav: &Path,
    extra: &[&str],
) -> (i64, Vec<String>, chrono::DateTime<Utc>, SimReport) {
    let pool = db.pool.clone();
    let flow = question_flow(
        "patient_test",
        "end_of_utterance_ms = 5000",
        "how_are_you",
        "How are you today?",
        "您今天好吗？",
        "thanks",
    );
    let flows = flows_dir(tmp, "patient_test", &flow);
    let engine = Engine::start_with_flows(db, &tmp.join("data"), "node-a", &flows, extra);
    let script = format!(
        r#"
max_call_ms = 120000
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 90000
"#,
        wav.display()
    );
    let mut sim = phone(&engine, elder, &script, tmp).await;
    let call = schedule_flow(&pool, elder.id, "patient_test").await;
    let report = tokio::time::timeout(Duration::from_secs(150), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.flow_path, vec!["how_are_you", "thanks"]);
    let esc = escalations(&pool, call).await;
    assert_eq!(esc.len(), 1, "{esc:?}");
    assert_eq!(esc[0].0, "emergency");
    let rules = esc[0]
        .2
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule"].as_str().map(str::to_string))
        .collect();
    let (flagged,): (chrono::DateTime<Utc>,) =
        sqlx::query_as("SELECT created_at FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    drop(engine);
    (call, rules, flagged, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_heard_in_a_pause_is_queued_before_the_turn_ends() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("early");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-early", "en", 0).await;
    let wav = fixture_wav(&tmp, "espeak/en_emergency_1.flac");
    // Only the pause is read early here.
    let (call, rules, flagged, _) =
        patient_call(&db, &tmp, &elder, &wav, &["--partial-asr-ms", "0"]).await;
    assert!(
        rules.iter().any(|r| r == "runner.early_transcript"),
        "{rules:?}"
    );
    // Queued during the elder's pause, seconds before the turn ended and the
    // utterance was stored.
    let (stored,): (chrono::DateTime<Utc>,) =
        sqlx::query_as("SELECT created_at FROM utterances WHERE call_id = $1 ORDER BY seq LIMIT 1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        stored - flagged > chrono::Duration::milliseconds(2000),
        "flagged at {flagged}, the turn's utterance stored at {stored}"
    );
    let heard = utterances(&pool, call).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].1.to_lowercase().contains("fell"), "{heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_is_queued_while_the_elder_is_still_speaking() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("partial");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-partial", "en", 0).await;
    // A cry for help, then several more seconds of talk in the same reply.
    let mut audio = voicecare_media::load(
        &repo().join("audio-fixtures/espeak/en_emergency_1.flac"),
        None,
    )
    .unwrap();
    for more in ["espeak/en_ok_1.flac", "espeak/en_watch_1.flac"] {
        let next = voicecare_media::load(&repo().join("audio-fixtures").join(more), None).unwrap();
        audio.samples.extend_from_slice(&next.samples);
    }
    let wav = tmp.join("long_reply.wav");
    voicecare_media::write_wav(&wav, &audio).unwrap();
    // Pauses are not read early here: only the words so far can queue it.
    let (_, rules, flagged, report) =
        patient_call(&db, &tmp, &elder, &wav, &["--early-asr-ms", "0"]).await;
    assert!(
        rules.iter().any(|r| r == "runner.partial_transcript"),
        "{rules:?}"
    );
    let (_, spoke_until) = report.speeches[0];
    let flagged = std::time::SystemTime::from(flagged);
    let before = spoke_until
        .duration_since(flagged)
        .unwrap_or_else(|e| panic!("queued {:?} after the reply ended", e.duration()));
    assert!(
        before > Duration::from_millis(500),
        "queued only {before:?} before the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noise_burst_over_a_prompt_does_not_stop_it() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("noise");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-noise", "en", 0).await;
    let flows = flows_dir(&tmp, "barge_test", &barge_flow("thanks"));
    let engine = Engine::start_with_flows(&db, &tmp.join("data"), "node-a", &flows, &[]);
    let full_ms = long_question_ms(&tmp);
    let noise = fixture_wav(&tmp, "nonspeech/loud_noise.flac");
    let wav = fixture_wav(&tmp, "espeak/en_ok_1.flac");
    let script = format!(
        r#"
max_call_ms = 150000
[[step]]
do = "wait_for_speech"
after_ms = 1500
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 2500
timeout_ms = 120000
[[step]]
do = "say"
wav = "{}"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1500
timeout_ms = 60000
"#,
        noise.display(),
        wav.display()
    );
    let mut sim = phone(&engine, &elder, &script, &tmp).await;
    let call = schedule_flow(&pool, elder.id, "barge_test").await;
    let report = tokio::time::timeout(Duration::from_secs(200), sim.run_call())
        .await
        .expect("the call ran")
        .unwrap();
    assert!(report.answered);
    let talk_ms = report.talk_ms.unwrap();
    assert!(
        talk_ms > full_ms,
        "the call lasted {talk_ms:.0} ms, shorter than the question ({full_ms:.0} ms): the noise cut it"
    );
    finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.outcome.as_deref(), Some("ok"));
    assert_eq!(row.flow_path, vec!["long_question", "thanks"]);
    // The noise was never taken for words; the answer after the prompt was.
    let heard = utterances(&pool, call).await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].1.to_lowercase().contains("fine"), "{heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_flow_is_refused_on_reload_and_calls_keep_the_last_good_one() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("reload");
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-reload", "en", 0).await;
    let flows = flows_dir(&tmp, "barge_test", &barge_flow("thanks"));
    let engine = Engine::start_with_flows(&db, &tmp.join("data"), "node-a", &flows, &[]);
    // An edit that points the question at a step that does not exist.
    let broken = barge_flow("thank_you");
    let line = broken
        .lines()
        .position(|l| l.starts_with("next = \"thank_you\""))
        .unwrap()
        + 1;
    std::fs::write(flows.join("barge_test.toml"), &broken).unwrap();
    engine.signal("-HUP");
    let at = format!("barge_test.toml:{line}:8");
    let logged = engine.log_line(&[&at, "thank_you"], 30).await;
    assert!(logged.contains("keeping the last good version"), "{logged}");
    engine.log_line(&["flows reloaded"], 30).await;
    // Still running, and the call runs the last good version.
    barge_in_call(&engine, &pool, &elder, &tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_confirming_on_their_app_ends_the_ladder_without_an_escalation() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("contact");
    let c = community(&pool).await;
    // Contact 1 has only a telephone number; contact 2 uses the care app.
    let elder = enrol(&pool, c, "tab-contact", "en", 1).await;
    sqlx::query(
        "INSERT INTO emergency_contacts (elder_id, position, name, phone, device_id)
         VALUES ($1, 2, 'Daughter', '+8613800000999', 'app-daughter')",
    )
    .bind(elder.id)
    .execute(&pool)
    .await
    .unwrap();
    let token = "secret-token-for-app-daughter";
    voicecare_store::dialer::set_device_token(
        &pool,
        "app-daughter",
        &voicecare_server::runner::gateway::token_hash(token),
        Utc::now(),
    )
    .await
    .unwrap();
    // A device id names one device: an elder cannot take the contact's.
    let taken = sqlx::query("UPDATE elders SET device_id = 'app-daughter' WHERE id = $1")
        .bind(elder.id)
        .execute(&pool)
        .await;
    assert!(taken.is_err(), "{taken:?}");

    let engine = Engine::start(
        &db,
        &tmp.join("data"),
        "node-a",
        &["--ring-secs", "2", "--ladder-minute-ms", "100"],
    );
    let mut elder_phone = phone(&engine, &elder, "on_ring = \"ignore\"\n", &tmp).await;
    let rings = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(30), elder_phone.run_call()).await
        {
            assert!(!r.answered);
            n += 1;
        }
        n
    });
    let daughter = Elder {
        id: elder.id,
        device: "app-daughter".into(),
        token: token.into(),
    };
    // Press 1 after each pause: a press during the introduction (which keys
    // do not cut short) is ignored, the next one answers the question.
    let script = r#"
max_call_ms = 90000
[[step]]
do = "wait_for_prompt"
quiet_ms = 1200
timeout_ms = 60000
[[step]]
do = "digits"
keys = "1"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1200
timeout_ms = 60000
[[step]]
do = "digits"
keys = "1"
[[step]]
do = "wait_for_prompt"
quiet_ms = 1200
timeout_ms = 60000
"#;
    let mut app = phone(&engine, &daughter, script, &tmp).await;
    let app_call = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(150), app.run_call()).await
    });
    schedule_now(&pool, elder.id, 2, 10).await;
    let report = app_call
        .await
        .unwrap()
        .expect("the contact was called")
        .unwrap();
    assert!(report.answered);
    assert!(report.prompts_heard >= 1, "the contact heard the notice");

    let call = finished_call(&pool, elder.id, 60).await;
    let row = call_row(&pool, call).await;
    assert_eq!(row.status, "completed");
    assert_eq!(row.outcome.as_deref(), Some("contact_confirmed"));
    let attempts: Vec<(String, Option<i16>, String, Option<String>)> = sqlx::query_as(
        "SELECT callee, contact_position, status, end_reason FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, Option<i16>, &str)> = attempts
        .iter()
        .map(|(c, p, s, _)| (c.as_str(), *p, s.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("elder", None, "no_answer"),
            ("elder", None, "no_answer"),
            ("contact", Some(1), "failed"),
            ("contact", Some(2), "ended"),
        ]
    );
    assert!(
        attempts[2]
            .3
            .as_deref()
            .unwrap_or("")
            .contains("telephone gateway"),
        "{attempts:?}"
    );
    assert_eq!(attempts[3].3.as_deref(), Some("confirmed"));
    assert!(
        escalations(&pool, call).await.is_empty(),
        "no unreachable escalation"
    );
    drop(engine);
    assert_eq!(rings.await.unwrap(), 2, "the elder's phone rang twice");
}

/// PostgreSQL goes away while the elder is on the line, stays away well past
/// the engine's retry window while the elder reports a fall and hangs up, and
/// comes back: the escalation and the words that raised it reach the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_heard_during_a_database_outage_reaches_the_queue_when_it_returns() {
    use voicecare_store::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let _one = SERIAL.lock().await;
    let tmp = tempdir("outage");
    // A server of its own, to stop and start again on the same files.
    let pg_dir = tmp.join("pg");
    let pg = EmbeddedPostgres::start(EmbeddedOptions::throwaway(&pg_dir))
        .await
        .unwrap();
    let url = pg.url("postgres");
    let db = voicecare_store::Database::open(&voicecare_store::DbSource::Url(url.clone()), 4)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let c = community(&pool).await;
    let elder = enrol(&pool, c, "tab-outage", "en", 1).await;
    let engine = Engine::start_on(
        &url,
        &tmp.join("data"),
        "node-a",
        &repo().join("ivr-flows"),
        &[],
    );
    let wav = fixture_wav(&tmp, "espeak/en_emergency_1.flac");
    let script = answer_then_say(&wav, false);
    let mut sim = phone(&engine, &elder, &script, &tmp).await;
    let ran = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(150), sim.run_call()).await
    });
    schedule_now(&pool, elder.id, 3, 10).await;
    let call: i64 = wait_for(
        &pool,
        "the elder to answer",
        60,
        "SELECT a.call_id FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 AND a.status = 'answered'",
        elder.id,
    )
    .await;
    pg.stop().await.unwrap();
    let report = ran.await.unwrap().expect("the call ran").unwrap();
    assert!(report.answered);
    let spooled = engine.log_line(&["kept in the local spool"], 60).await;
    assert!(
        spooled.contains("escalation") || spooled.contains("utterance"),
        "{spooled}"
    );
    engine
        .log_line(&["kept in the local spool", "escalation"], 60)
        .await;
    assert!(
        !engine
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("escalation queued")),
        "nothing claims to be queued while the database is down"
    );
    // Down for longer than any retry of the engine's.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _pg = EmbeddedPostgres::start(EmbeddedOptions::throwaway(&pg_dir))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let esc =
            sqlx::query_as::<_, (String,)>("SELECT level FROM escalations WHERE call_id = $1")
                .bind(call)
                .fetch_all(&pool)
                .await;
        let words =
            sqlx::query_scalar::<_, String>("SELECT transcript FROM utterances WHERE call_id = $1")
                .bind(call)
                .fetch_all(&pool)
                .await;
        if let (Ok(esc), Ok(words)) = (esc, words)
            && esc.iter().any(|(l,)| l == "emergency")
            && words.iter().any(|w| w.to_lowercase().contains("fell"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spooled emergency never reached the queue"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    engine
        .log_line(&["spooled writes stored in the database"], 30)
        .await;
}
