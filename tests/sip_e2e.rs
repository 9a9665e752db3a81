//! Check-ins to phone numbers end to end: the real `voicecare` binary with
//! `--sip-trunk` pointing at SIPp, which plays the trunk and the elder's
//! phone on loopback; a real PostgreSQL and the real whisper model.
//!
//! Every wait polls the database against a deadline; SIPp runs under its own
//! timeout, so a stuck peer fails the test rather than hanging it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use voicecare_store::testing::TestDb;

use support::sip::{NUMBER, Sipp, enrol_phone_only, free_ports, tempdir};
use support::{repo, wait_for};

/// One call at a time: each test runs a whole engine with whisper.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `voicecare serve` with calls to phone numbers going to `trunk_port`.
struct Engine {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The HTTP address, `127.0.0.1:<port>`.
    http: String,
}

impl Engine {
    fn start(db: &TestDb, data_dir: &Path, trunk_port: u16) -> Engine {
        Engine::start_with(db, data_dir, trunk_port, 0, &[])
    }

    /// With our SIP on `sip_port` (0: any) and more `serve` flags.
    fn start_with(
        db: &TestDb,
        data_dir: &Path,
        trunk_port: u16,
        sip_port: u16,
        extra: &[&str],
    ) -> Engine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(&db.url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(repo().join("ivr-flows"))
            .args(["--node-id", "node-sip", "--dialer-tick-ms", "200"])
            .args(["--asr-workers", "1", "--service-name", "Riverside Care"])
            .args(["--sip-trunk", &format!("127.0.0.1:{trunk_port}")])
            .args(["--sip-bind", &format!("127.0.0.1:{sip_port}")])
            .args(["--sip-rtp-ports", "47000-48999"])
            .args(["--sip-from", "+8610000000", "--ring-secs", "20"])
            // SIPp running one call takes an OPTIONS ping for that call.
            .args(["--sip-options-interval", "0"])
            .args(extra)
            // VC_TEST_LOG=debug,… raises the engine's log level when a test needs looking into.
            .env(
                "RUST_LOG",
                std::env::var("VC_TEST_LOG").unwrap_or("info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start voicecare serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
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
                if let Some(url) = line.strip_prefix("voicecare listening on http://") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let http = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("voicecare serve did not start listening");
        Engine { child, log, http }
    }

    /// The body of an unauthenticated `GET path` (`/metrics`, `/healthz`).
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http).unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A check-in window open right now; `attempts` tries at most.
async fn schedule_now(pool: &PgPool, elder: i64, attempts: i16) {
    sqlx::query(
        "INSERT INTO checkin_schedules (elder_id, window_start, window_end, max_attempts, retry_minutes)
         VALUES ($1, (now() AT TIME ZONE 'Asia/Shanghai' - interval '1 hour')::time,
                     (now() AT TIME ZONE 'Asia/Shanghai' + interval '2 hours')::time, $2, 10)",
    )
    .bind(elder)
    .bind(attempts)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkin_to_a_phone_number_runs_over_the_trunk_and_key_1_escalates() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("answer");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let engine = Engine::start(&db, &tmp.join("data"), ports.0);
    // Answers after 2 s of ringing, says "喂？" and waits as a person does,
    // presses 1 (RFC 4733) about 11 s after the answer, then hangs up.
    let mut sipp = Sipp::run("uas-answer-hello.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let call: i64 = wait_for(
        &pool,
        "the call to end",
        120,
        "SELECT id FROM calls WHERE elder_id = $1 AND status IN ('completed', 'unreachable') ORDER BY id LIMIT 1",
        elder,
    )
    .await;
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    assert!(
        sipp.messages()
            .contains(&format!("INVITE sip:{NUMBER}@127.0.0.1:{}", sipp.port)),
        "the trunk was asked for the elder's number"
    );

    let (status, outcome, path): (String, Option<String>, Vec<String>) =
        sqlx::query_as("SELECT status, outcome, flow_path FROM calls WHERE id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(outcome.as_deref(), Some("escalated"));
    assert!(path.iter().any(|s| s == "help_requested"), "{path:?}");

    let attempts: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT callee, status, answered_at IS NOT NULL FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, vec![("elder".into(), "ended".into(), true)]);

    let esc: Vec<(String, bool)> =
        sqlx::query_as("SELECT level, elder_on_line FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        esc,
        vec![("emergency".to_string(), true)],
        "key 1 asks for help"
    );

    let log = engine.log();
    assert!(!log.contains(NUMBER), "the phone number reached the log");
    assert!(
        !log.contains(&NUMBER[1..]),
        "the phone number reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_phone_is_recorded_as_busy() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("busy");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let _engine = Engine::start(&db, &tmp.join("data"), ports.0);
    let mut sipp = Sipp::run("uas-reject-486.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let status: String = wait_for(
        &pool,
        "the attempt to end",
        60,
        "SELECT a.status FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 AND a.ended_at IS NOT NULL ORDER BY a.id LIMIT 1",
        elder,
    )
    .await;
    assert_eq!(status, "busy");
    let outcome: Option<String> = sqlx::query_scalar(
        "SELECT a.outcome FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 ORDER BY a.id LIMIT 1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outcome.as_deref(), Some("busy"));
    let sip_status: Option<i16> = sqlx::query_scalar(
        "SELECT a.sip_status FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 ORDER BY a.id LIMIT 1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sip_status, Some(486), "what the network said is kept");
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
}

/// The 8 kHz μ-law fixture `clip` as a 16-bit WAV a phone can speak.
fn telephone_wav(dir: &Path, clip: &str) -> PathBuf {
    telephone_wav_then_quiet(dir, clip, 0)
}

/// [`telephone_wav`], then `quiet_secs` of silence: baresip hangs up when
/// its WAV ends, and a machine goes on recording after its beep.
fn telephone_wav_then_quiet(dir: &Path, clip: &str, quiet_secs: usize) -> PathBuf {
    let ulaw = std::fs::read(repo().join("audio-fixtures").join(clip)).unwrap();
    let pcm = voicecare_media::g711::decode_ulaw(&ulaw);
    let out = dir.join("mic.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&out, spec).unwrap();
    // A second of quiet before the elder speaks, as on picking up.
    let quiet = std::iter::repeat_n(0, 8000 * quiet_secs);
    for s in std::iter::repeat_n(0, 8000).chain(pcm).chain(quiet) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    out
}

/// baresip, a real phone independent of ours, answers the check-in and its
/// elder cries for help at once: the emergency is in the queue with the
/// elder's words, and the call ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_phone_answers_with_a_spoken_emergency_and_it_is_queued_with_the_words() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("baresip");
    let elder = enrol_phone_only(&pool).await;
    // 救命啊，我摔倒了，起不来了。 in a recorded human voice, telephone band.
    let mic = telephone_wav(&tmp, "gcin/gcin_emergency_1_8k.ul");
    let phone = support::baresip::Baresip::start(&mic, NUMBER).await;
    let engine = Engine::start(&db, &tmp.join("data"), phone.addr.port());
    schedule_now(&pool, elder, 3).await;

    let call: i64 = wait_for(
        &pool,
        "an escalation of the check-in",
        120,
        "SELECT call_id FROM escalations WHERE elder_id = $1 ORDER BY id LIMIT 1",
        elder,
    )
    .await;
    let (level, reasons): (String, serde_json::Value) =
        sqlx::query_as("SELECT level, reasons FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(level, "emergency", "{reasons}\n{}", engine.log());
    let words: Vec<String> = sqlx::query_scalar(
        "SELECT transcript FROM utterances WHERE call_id = $1 AND speaker = 'elder' ORDER BY seq",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        words.iter().any(|w| !w.trim().is_empty()),
        "the elder's words are kept for the operator: {words:?}"
    );
    // The check-in goes on to its end (nobody answers its questions) and
    // hangs up the real phone cleanly.
    let status: String = wait_for(
        &pool,
        "the call to end",
        180,
        "SELECT status FROM calls WHERE id = $1 AND status IN ('completed', 'unreachable')",
        call,
    )
    .await;
    assert_eq!(status, "completed");
    let log = engine.log();
    assert!(!log.contains(&NUMBER[1..]), "the number reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_answering_503_hands_the_check_in_to_the_next_trunk() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("failover");
    let elder = enrol_phone_only(&pool).await;
    let (first, second) = (Sipp::ports(), Sipp::ports());
    // A second --sip-trunk adds a trunk after the first, as a comma does.
    let backup = format!("127.0.0.1:{}", second.0);
    let engine = Engine::start_with(
        &db,
        &tmp.join("data"),
        first.0,
        0,
        &["--sip-trunk", &backup],
    );
    let mut failing = Sipp::run("uas-reject-503.xml", first).await;
    let mut answering = Sipp::run("uas-answer-hello.xml", second).await;
    schedule_now(&pool, elder, 3).await;

    let call: i64 = wait_for(
        &pool,
        "the call to end",
        120,
        "SELECT id FROM calls WHERE elder_id = $1 AND status IN ('completed', 'unreachable') ORDER BY id LIMIT 1",
        elder,
    )
    .await;
    assert_eq!(failing.finish().await, 0, "sipp:\n{}", failing.messages());
    assert_eq!(
        answering.finish().await,
        0,
        "sipp:\n{}",
        answering.messages()
    );
    // One attempt, answered: the trunk's 503 was not the elder's.
    let attempts: Vec<(String, bool)> = sqlx::query_as(
        "SELECT status, answered_at IS NOT NULL FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, vec![("ended".to_string(), true)]);
    let log = engine.log();
    assert!(
        log.contains("the trunk failed the call: trying the next trunk"),
        "{log}"
    );
    assert!(log.contains(&format!("next={backup}")), "{log}");
    let metrics = engine.get("/metrics");
    let primary = format!("127.0.0.1:{}", first.0);
    for line in [
        format!("voicecare_sip_trunk_failovers_total{{trunk=\"{primary}\"}} 1"),
        format!("voicecare_sip_trunk_failovers_total{{trunk=\"{backup}\"}} 0"),
        format!("voicecare_sip_trunk_up{{trunk=\"{backup}\"}} 1"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains(&format!("voicecare_sip_trunk_up{{trunk=\"{primary}\"}}")),
        "{metrics}"
    );
    let health = engine.get("/healthz");
    assert!(health.contains("\"total\":2"), "{health}");
    assert!(
        !log.contains(&NUMBER[1..]),
        "the phone number reached the log"
    );
}

/// The first attempt to ring the elder: (status, outcome).
async fn first_attempt(pool: &PgPool, elder: i64, what: &str) -> (String, Option<String>) {
    let _: i64 = wait_for(
        pool,
        what,
        120,
        "SELECT a.id FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 AND a.outcome IS NOT NULL AND a.outcome <> 'answered'
         ORDER BY a.id LIMIT 1",
        elder,
    )
    .await;
    sqlx::query_as(
        "SELECT a.status, a.outcome FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 ORDER BY a.id LIMIT 1",
    )
    .bind(elder)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_machine_is_not_the_elder_and_hears_no_check_in() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("machine");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let engine = Engine::start(&db, &tmp.join("data"), ports.0);
    // Answers with an 11 s recorded greeting ending in a beep, as a machine.
    let mut sipp = Sipp::run("uas-answer.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let (status, outcome) = first_attempt(&pool, elder, "the machine to be recognised").await;
    assert_eq!(
        (status.as_str(), outcome.as_deref()),
        ("ended", Some("voicemail")),
        "answered, but not by the elder: {}",
        engine.log()
    );
    assert_eq!(
        sipp.finish().await,
        0,
        "we hung up on the machine:\n{}",
        sipp.messages()
    );
    let messages = sipp.messages();
    assert!(messages.contains("BYE sip:"), "{messages}");
    let escalations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM escalations WHERE elder_id = $1")
            .bind(elder)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(escalations, 0, "a machine's greeting is nobody's distress");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM utterances u JOIN calls c ON c.id = u.call_id WHERE c.elder_id = $1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored, 0,
        "the machine's words are not stored as the elder's"
    );
    assert!(!engine.log().contains(&NUMBER[1..]));
}

/// baresip, a real phone, answers as a voicemail box: a recorded Mandarin
/// greeting ("您好，我现在不方便接听电话，请在嘀声后留言，我会尽快给您回电。")
/// ending in a 1 kHz beep of 400 ms (the fixture's own, see the carrier
/// manifest), then silence while it records. The attempt is `voicemail`,
/// not a reached elder; no check-in is run at the machine and none of its
/// words is stored as the elder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_phone_answering_with_a_voicemail_greeting_and_beep_is_voicemail() {
    /// Silence after the greeting: the phone hangs up when it ends, so an
    /// engine that did not recognise the machine would be hung up on.
    const RECORDING_SECS: usize = 30;
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("voicemail");
    let elder = enrol_phone_only(&pool).await;
    let greeting = "carrier/machine_busy_zh_gcin_8k.ul";
    let mic = telephone_wav_then_quiet(&tmp, greeting, RECORDING_SECS);
    let mut phone = support::baresip::Baresip::start(&mic, NUMBER).await;
    let engine = Engine::start(&db, &tmp.join("data"), phone.addr.port());
    schedule_now(&pool, elder, 3).await;

    let attempt: i64 = wait_for(
        &pool,
        "the attempt to end",
        120,
        "SELECT a.id FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 AND a.ended_at IS NOT NULL ORDER BY a.id LIMIT 1",
        elder,
    )
    .await;
    let (call, status, outcome, answered, lasted): (i64, String, Option<String>, bool, f64) =
        sqlx::query_as(
            "SELECT call_id, status, outcome, answered_at IS NOT NULL,
                    extract(epoch FROM ended_at - answered_at)::float8
             FROM call_attempts WHERE id = $1",
        )
        .bind(attempt)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), outcome.as_deref(), answered),
        ("ended", Some("voicemail"), true),
        "answered, by a machine: {}",
        engine.log()
    );
    // The greeting and beep take about 14 s; the phone would hang up
    // after 30 s more of recording.
    assert!(
        lasted < 25.0,
        "we hung up on the machine, after {lasted:.1} s"
    );

    // Not reached, as the supervisors' report counts it.
    let unit = support::community(&pool).await;
    let scope = voicecare_store::operators::Scope {
        operator_id: 0,
        unit_id: unit,
        role: voicecare_store::operators::Role::Admin,
    };
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let report = voicecare_store::reports::attempts_total(&pool, &scope, since)
        .await
        .unwrap();
    assert_eq!((report.reached, report.voicemail), (0, 1), "{report:?}");
    let (call_status, call_outcome): (String, Option<String>) =
        sqlx::query_as("SELECT status, outcome FROM calls WHERE id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(call_status, "completed", "the check-in was not done");
    assert_eq!(call_outcome, None);

    // Nothing the machine said is the elder's, and no check-in ran: no
    // reply to a question, nothing said by the engine at all.
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT speaker, transcript FROM utterances WHERE call_id = $1 ORDER BY seq",
    )
    .bind(call)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored, vec![], "the machine's words are not the elder's");
    let escalations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM escalations WHERE elder_id = $1")
            .bind(elder)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(escalations, 0, "a machine's greeting is nobody's distress");
    let heard = phone.loudest_second_heard().await;
    assert!(
        heard < 300.0,
        "the machine recorded no check-in prompt (loudest second RMS {heard})"
    );
    assert!(!engine.log().contains(&NUMBER[1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carriers_announcement_before_a_480_is_read_as_switched_off() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("announce");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let engine = Engine::start(&db, &tmp.join("data"), ports.0);
    // 183 with "您拨打的电话已关机" in a recorded voice, then 480.
    let mut sipp = Sipp::run("uas-early-media-off-480.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let (status, outcome) = first_attempt(&pool, elder, "the announcement to be read").await;
    assert_eq!(
        (status.as_str(), outcome.as_deref()),
        ("no_answer", Some("switched_off")),
        "a plain 480 alone would be no_answer: {}",
        engine.log()
    );
    // The outcome is what was heard; the status is what the network said.
    let sip_status: Option<i16> = sqlx::query_scalar(
        "SELECT a.sip_status FROM call_attempts a JOIN calls c ON c.id = a.call_id
         WHERE c.elder_id = $1 ORDER BY a.id LIMIT 1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sip_status, Some(480));
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_answers_and_plays_its_announcement_is_not_the_elder() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("announce-200");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let engine = Engine::start(&db, &tmp.join("data"), ports.0);
    // 200 OK, then "您拨打的电话已关机" in a recorded voice on the call.
    let mut sipp = Sipp::run("uas-answer-announce.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let (status, outcome) = first_attempt(&pool, elder, "the announcement to be read").await;
    assert_eq!(
        (status.as_str(), outcome.as_deref()),
        ("ended", Some("switched_off")),
        "answered by the carrier's recording, not the elder: {}",
        engine.log()
    );
    assert_eq!(
        sipp.finish().await,
        0,
        "we hung up on the recording:\n{}",
        sipp.messages()
    );
    let escalations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM escalations WHERE elder_id = $1")
            .bind(elder)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(escalations, 0, "a recording is nobody's distress");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM utterances u JOIN calls c ON c.id = u.call_id WHERE c.elder_id = $1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        stored, 0,
        "the carrier's words are not stored as the elder's"
    );
}

/// Attempts of one call: (status, outcome), in order.
async fn attempt_outcomes(pool: &PgPool, call: i64) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT status, outcome FROM call_attempts WHERE call_id = $1 ORDER BY attempt_no",
    )
    .bind(call)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacant_number_is_not_rung_again_and_an_admin_is_asked_to_fix_it() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("vacant");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    // A ladder minute of 200 ms: a retry, were there one, would come within seconds.
    let engine = Engine::start_with(
        &db,
        &tmp.join("data"),
        ports.0,
        0,
        &["--ladder-minute-ms", "200"],
    );
    // Rings for a second, then 404 Not Found.
    let mut sipp = Sipp::run("uas-reject-404.xml", ports).await;
    schedule_now(&pool, elder, 3).await;

    let call: i64 = wait_for(
        &pool,
        "the call to end",
        60,
        "SELECT id FROM calls WHERE elder_id = $1 AND status IN ('completed', 'unreachable') ORDER BY id LIMIT 1",
        elder,
    )
    .await;
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    // Three calls were allowed and a retry would be due in 2 s: wait past it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        attempt_outcomes(&pool, call).await,
        vec![("failed".to_string(), Some("invalid_number".to_string()))],
        "one attempt, not retried"
    );
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM calls WHERE elder_id = $1 AND id <> $2 AND due_at < now() + interval '1 hour'",
    )
    .bind(elder)
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(scheduled, 0, "no other call to the number today");

    // No contacts on file: the item says why the elder was not rung again.
    let reason: String =
        sqlx::query_scalar("SELECT reasons::text FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(reason.contains("number does not exist"), "{reason}");

    // The administrator's task, with its audit trail.
    let (kind, occurrences, open): (String, i32, bool) = sqlx::query_as(
        "SELECT kind, occurrences, resolved_at IS NULL FROM enrolment_tasks WHERE elder_id = $1",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), occurrences, open), ("fix_phone", 1, true));
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE elder_id = $1 ORDER BY id")
            .bind(elder)
            .fetch_all(&pool)
            .await
            .unwrap();
    for want in ["call.attempt_outcome", "enrolment_task.open"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }

    // `voicecare elders numbers-to-fix` lists the elder.
    let out = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .arg("--data-dir")
        .arg(tmp.join("cli"))
        .args([
            "--database-url",
            &db.url,
            "elders",
            "numbers-to-fix",
            "--json",
        ])
        .output()
        .expect("run voicecare elders numbers-to-fix");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["elder_id"], elder);
    assert_eq!(rows[0]["outcome"], "invalid_number");
    assert!(!listed.contains(&NUMBER[1..]), "the list shows no number");

    // Correcting the number closes the task.
    let out = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .arg("--data-dir")
        .arg(tmp.join("cli"))
        .args(["--database-url", &db.url, "elders", "set-phone"])
        .args([&elder.to_string(), "+8613912345679"])
        .output()
        .expect("run voicecare elders set-phone");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM enrolment_tasks WHERE elder_id = $1 AND resolved_at IS NULL",
    )
    .bind(elder)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0, "the task closed with the new number");

    let log = engine.log();
    assert!(
        !log.contains(&NUMBER[1..]),
        "the phone number reached the log"
    );
}

/// The engine's SIP port for calls into the service.
fn sip_port() -> u16 {
    free_ports(45_000, 46_900, 1)
}

/// SIPp as the trunk delivering a call from `caller` to the engine.
async fn dial_in(scenario: &str, ports: (u16, u16), caller: &str, offer: &str, sip: u16) -> Sipp {
    let target = format!("127.0.0.1:{sip}");
    let keys = ["-key", "caller", caller, "-s", "95000"];
    let args: Vec<&str> = keys
        .iter()
        .copied()
        .chain(["-key", "offer", offer, &target])
        .collect();
    Sipp::run_with(scenario, ports, &args).await
}

/// The inbound call of `elder` once it has an escalation: (call id, level).
async fn inbound_escalation(pool: &PgPool, elder: i64) -> (i64, String) {
    let call: i64 = wait_for(
        pool,
        "an escalation of the elder's call",
        90,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
         WHERE c.elder_id = $1 AND c.direction = 'inbound' ORDER BY c.id LIMIT 1",
        elder,
    )
    .await;
    let level: String = sqlx::query_scalar("SELECT level FROM escalations WHERE call_id = $1")
        .bind(call)
        .fetch_one(pool)
        .await
        .unwrap();
    (call, level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_elder_dialling_in_is_known_by_number_and_key_1_escalates() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("dial-in");
    let elder = enrol_phone_only(&pool).await;
    let ports = Sipp::ports();
    let sip = sip_port();
    // National form with the trunk prefix, as Chinese carriers send it.
    let engine = Engine::start_with(
        &db,
        &tmp.join("data"),
        ports.0,
        sip,
        &["--sip-country-code", "86"],
    );
    let mut sipp = dial_in("uac-dial-in.xml", ports, "013912345678", "8 0 101", sip).await;

    let (call, level) = inbound_escalation(&pool, elder).await;
    assert_eq!(
        level, "emergency",
        "key 1 on the help line is a cry for help"
    );
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    let msgs = sipp.messages();
    assert!(msgs.contains("SIP/2.0 200 OK"), "answered:\n{msgs}");
    assert!(
        msgs.contains("m=audio") && msgs.contains("PCMA/8000"),
        "PCMA answered:\n{msgs}"
    );
    let purpose: String = sqlx::query_scalar("SELECT purpose FROM calls WHERE id = $1")
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(purpose, "help");
    let log = engine.log();
    assert!(
        !log.contains("3912345678"),
        "the caller's number reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_caller_keys_the_care_number_and_reaches_the_help_line() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("keyed");
    let elder = enrol_phone_only(&pool).await;
    sqlx::query("UPDATE elders SET external_ref = '5' WHERE id = $1")
        .bind(elder)
        .execute(&pool)
        .await
        .unwrap();
    let ports = Sipp::ports();
    let sip = sip_port();
    let _engine = Engine::start_with(&db, &tmp.join("data"), ports.0, sip, &[]);
    // A neighbour's phone: not enrolled. PCMU only.
    let mut sipp = dial_in(
        "uac-dial-in-keyed.xml",
        ports,
        "+8613700000000",
        "0 101",
        sip,
    )
    .await;

    let (_, level) = inbound_escalation(&pool, elder).await;
    assert_eq!(level, "emergency");
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    assert!(sipp.messages().contains("PCMU/8000"), "PCMU answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_not_from_the_trunk_or_without_a_common_codec_are_refused() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let tmp = tempdir("refused");
    let ports = Sipp::ports();
    let sip = sip_port();
    let _engine = Engine::start_with(&db, &tmp.join("data"), ports.0, sip, &[]);

    // G.729 only: nothing we speak.
    let mut sipp = dial_in("uac-dial-in.xml", ports, "+8613700000000", "18", sip).await;
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    assert!(
        sipp.messages().contains("SIP/2.0 488"),
        "{}",
        sipp.messages()
    );
    drop(sipp);

    // Only the PBX at 192.0.2.10 may deliver calls.
    let tmp2 = tempdir("refused-ip");
    let ports = Sipp::ports();
    let sip = sip_port();
    let _engine2 = Engine::start_with(
        &db,
        &tmp2.join("data"),
        ports.0,
        sip,
        &["--sip-accept-from", "192.0.2.10"],
    );
    let mut sipp = dial_in("uac-dial-in.xml", ports, "+8613912345678", "8 0 101", sip).await;
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    assert!(
        sipp.messages().contains("SIP/2.0 403"),
        "{}",
        sipp.messages()
    );
}
