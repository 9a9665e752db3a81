//! Operators and phone elders end to end: the real `voicecare serve` with
//! `--sip-trunk` pointing at SIPp, which plays the trunk and the elder's
//! phone on loopback, and the test as the operator's browser: it logs in,
//! claims the escalation and opens the live-talk socket with the project's
//! own WebRTC leg (Opus), exactly as the console does.
//!
//! SIPp runs with `-rtp_echo`: the phone sends back every RTP packet it
//! receives. A 1 kHz tone the operator speaks therefore comes back to the
//! operator only if it crossed the bridge to the phone (Opus → G.711), left
//! the engine as RTP, reached the phone, was sent by the phone and crossed
//! the bridge back (G.711 → Opus). The conversation's recording tells the
//! two directions apart: its elder channel holds what arrived from the
//! phone, its operator channel what the operator sent.
//!
//! Every wait has a deadline; SIPp runs under its own timeout.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use voicecare_core::Level;
use voicecare_store::operators::{self, NewOperator, Password, Role};
use voicecare_store::queue::{self, Flag, SlaPolicy};
use voicecare_store::testing::TestDb;
use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::{CallLeg, LegConfig, LegEvent};

use support::sip::{NUMBER, Sipp, enrol_phone_only, free_ports, tempdir};
use support::{community, repo, wait_for};

/// One call at a time: each test runs a whole engine with whisper.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The elder's number; it must never show in the engine's log.
const PW: &str = "correct horse battery";
/// What the operator says: a tone no prompt or line noise contains.
const OPERATOR_HZ: f32 = 1000.0;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `voicecare serve`; with `trunk`, calls to phone numbers go to its first
/// port and calls into the service are taken on its second.
struct Engine {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// `http://127.0.0.1:<port>`
    base: String,
}

impl Engine {
    fn start(db: &TestDb, data_dir: &Path, trunk: Option<(u16, u16)>) -> Engine {
        let sip: Vec<String> = match trunk {
            Some((trunk_port, sip_port)) => vec![
                "--sip-trunk".into(),
                format!("127.0.0.1:{trunk_port}"),
                "--sip-bind".into(),
                format!("127.0.0.1:{sip_port}"),
                "--sip-rtp-ports".into(),
                "47000-48999".into(),
                "--sip-from".into(),
                "+8610000000".into(),
                "--sip-country-code".into(),
                "86".into(),
                // SIPp running one call takes an OPTIONS ping for that call.
                "--sip-options-interval".into(),
                "0".into(),
            ],
            None => Vec::new(),
        };
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
            .args(["--ring-secs", "20"])
            .args(&sip)
            .env("RUST_LOG", "info")
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
                if let Some(addr) = line.strip_prefix("voicecare listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("voicecare serve did not start listening");
        Engine { child, log, base }
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

/// An elder with a phone number and no device, speaking Mandarin, and an
/// operator (`ann`) of the elder's community. Returns the elder's id.
async fn enrol_with_operator(pool: &PgPool) -> i64 {
    let elder = enrol_phone_only(pool).await;
    operators::add(
        pool,
        NewOperator {
            username: "ann",
            display_name: "Ann Lee",
            password: &Password::new(PW).unwrap(),
            role: Role::Operator,
            unit_id: community(pool).await,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    elder
}

/// The operator's side: a logged-in session of `ann`.
struct Operator {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Operator {
    async fn login(base: &str) -> Operator {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"username": "ann", "password": PW}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = r["token"].as_str().expect("logged in").to_string();
        Operator {
            http,
            base: base.to_string(),
            token,
        }
    }

    async fn claim(&self, esc: i64) {
        let r = self
            .http
            .post(format!("{}/api/v1/escalations/{esc}/claim", self.base))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "claim: {}", r.status());
    }

    /// Open the talk socket in `mode` with a fresh WebRTC leg, and follow
    /// the states until `until` (or an error, which is returned).
    async fn talk(&self, esc: i64, mode: &str, until: &str) -> Result<Talk, Value> {
        let url = format!(
            "{}/api/v1/escalations/{esc}/talk",
            self.base.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let offer = CallLeg::offer(&LegConfig::loopback()).await.unwrap();
        let m = json!({"type": "offer", "sdp": offer.sdp(), "mode": mode});
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
        let mut offer = Some(offer);
        let mut leg = None;
        let mut states = Vec::new();
        loop {
            let m = next(&mut ws, Duration::from_secs(60)).await;
            match m["type"].as_str() {
                Some("answer") => {
                    let sdp = m["sdp"].as_str().unwrap();
                    let outgoing = offer.take().expect("one answer");
                    let mut l = outgoing.accept_answer(sdp).await.unwrap();
                    l.wait_connected(Duration::from_secs(10)).await.unwrap();
                    leg = Some(l);
                }
                Some("state") => {
                    let s = m["state"].as_str().unwrap().to_string();
                    states.push(s.clone());
                    if s == until {
                        let talk_id = m["talk_id"].as_i64();
                        let leg = leg.expect("the operator's leg is connected");
                        return Ok(Talk {
                            ws,
                            leg,
                            states,
                            talk_id,
                        });
                    }
                }
                Some("error") => return Err(m),
                _ => {}
            }
        }
    }
}

/// Next JSON message from the server within `wait`.
async fn next(ws: &mut Ws, wait: Duration) -> Value {
    loop {
        let m = tokio::time::timeout(wait, ws.next())
            .await
            .expect("a message from the talk socket in time")
            .expect("the talk socket is open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// A live conversation, seen from the operator's browser.
struct Talk {
    ws: Ws,
    leg: CallLeg,
    states: Vec<String>,
    talk_id: Option<i64>,
}

impl Talk {
    /// Frames the operator hears in `span`: (frames holding the
    /// operator's tone, frames with any sound, all frames).
    async fn listen(&mut self, span: Duration) -> (usize, usize, usize) {
        let (mut tone, mut loud, mut all) = (0, 0, 0);
        let end = tokio::time::Instant::now() + span;
        while let Ok(ev) = tokio::time::timeout_at(end, self.leg.next_event()).await {
            match ev {
                Some(LegEvent::Audio(f)) => {
                    all += 1;
                    if rms(&f) > 300.0 {
                        loud += 1;
                        if tone_power_ratio(&f, SAMPLE_RATE, OPERATOR_HZ) > 0.5 {
                            tone += 1;
                        }
                    }
                }
                Some(LegEvent::Ended(r)) => panic!("the operator's leg ended: {r:?}"),
                Some(_) => {}
                None => panic!("the operator's leg closed"),
            }
        }
        (tone, loud, all)
    }

    /// The operator speaks (a 1 kHz tone for `secs`) and listens meanwhile:
    /// how many frames of the tone came back from the phone.
    async fn speak_and_hear_the_echo(&mut self, secs: f32) -> usize {
        // Silence first: nothing of the tone can come back before it is sent.
        let (before, _, all) = self.listen(Duration::from_millis(1500)).await;
        assert!(all >= 50, "the operator hears the line: {all} frames");
        assert_eq!(before, 0, "the tone was heard before the operator spoke");
        let n = (SAMPLE_RATE as f32 * secs) as usize;
        let _ = self.leg.control().play(sine(OPERATOR_HZ, 8000, n));
        let (tone, loud, all) = self.listen(Duration::from_secs_f32(secs + 2.0)).await;
        eprintln!("the operator heard the tone back in {tone} of {all} frames ({loud} with sound)");
        tone
    }

    /// The operator hangs up; returns the final state message.
    async fn hang_up(mut self) -> Value {
        let m = json!({"type": "hangup"});
        self.ws
            .send(Message::Text(m.to_string().into()))
            .await
            .unwrap();
        loop {
            let m = next(&mut self.ws, Duration::from_secs(30)).await;
            if m["type"] == "state" && m["state"] == "ended" {
                return m;
            }
            assert_ne!(m["type"], "error", "{m}");
        }
    }
}

/// Frames of `hz` in each channel of a conversation's stereo recording
/// (left: the elder's line, right: the operator).
fn recorded_tone_frames(path: &str, hz: f32) -> (usize, usize) {
    let mut wav = hound::WavReader::open(path).unwrap();
    assert_eq!(wav.spec().channels, 2);
    let all: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = all.iter().step_by(2).copied().collect();
    let right: Vec<i16> = all.iter().skip(1).step_by(2).copied().collect();
    let count = |s: &[i16]| {
        s.chunks_exact(320)
            .filter(|f| rms(f) > 300.0 && tone_power_ratio(f, SAMPLE_RATE, hz) > 0.5)
            .count()
    };
    (count(&left), count(&right))
}

/// The talk's end and recording, once closed.
async fn talk_row(pool: &PgPool, esc: i64) -> (String, String, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT kind, status, ended_by, recording_path FROM operator_talks WHERE escalation_id = $1",
    )
    .bind(esc)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn assert_number_not_logged(engine: &Engine) {
    let log = engine.log();
    assert!(
        !log.contains(&NUMBER[1..]),
        "the phone number reached the log"
    );
    assert!(
        !log.contains("3912345678"),
        "the phone number reached the log"
    );
}

/// The elder dials in from their phone and keys 1: an emergency, the elder
/// held on the line. The operator joins from the browser and is bridged to
/// the phone call; what the operator says reaches the phone and what the
/// phone sends reaches the operator. The operator hangs up: the phone gets
/// a BYE, the conversation is recorded with both directions in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_joins_an_elder_on_the_phone_and_both_hear_each_other() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("join");
    let elder = enrol_with_operator(&pool).await;
    let ports = Sipp::ports();
    let sip = free_ports(45_000, 46_900, 1);
    let engine = Engine::start(&db, &tmp.join("data"), Some((ports.0, sip)));
    // The elder's phone, through the trunk: national form with the trunk
    // prefix, PCMA first, key 1 after 3 s, then on the line until our BYE.
    let target = format!("127.0.0.1:{sip}");
    let args = [
        "-rtp_echo",
        "-key",
        "caller",
        "013912345678",
        "-key",
        "offer",
        "8 0 101",
        "-s",
        "95000",
        &target,
    ];
    let mut sipp = Sipp::run_with("uac-dial-in-hold.xml", ports, &args).await;

    let esc: i64 = wait_for(
        &pool,
        "the help request to be queued with the elder on the line",
        90,
        "SELECT e.id FROM escalations e JOIN calls c ON c.id = e.call_id
         WHERE e.elder_id = $1 AND e.elder_on_line AND c.status = 'in_progress'",
        elder,
    )
    .await;
    let level: String = sqlx::query_scalar("SELECT level FROM escalations WHERE id = $1")
        .bind(esc)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, Level::Emergency.as_str());

    let op = Operator::login(&engine.base).await;
    op.claim(esc).await;
    // The session holds the elder once its prompt is under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut talk = loop {
        match op.talk(esc, "join", "live").await {
            Ok(t) => break t,
            Err(e) if e["code"] == "not_waiting" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("joining the call was refused: {e}"),
        }
    };
    assert_eq!(talk.states, ["connecting", "live"]);
    assert!(talk.talk_id.is_some());

    let heard = talk.speak_and_hear_the_echo(4.0).await;
    assert!(
        heard >= 50,
        "the operator's voice did not come back from the phone: {heard} frames of the tone"
    );

    let end = talk.hang_up().await;
    assert_eq!(end["ended_by"], "operator", "{end}");
    // The engine hangs up the phone: SIPp sees our BYE and ends cleanly.
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());
    assert!(
        sipp.messages().contains("BYE sip:"),
        "the phone was hung up:\n{}",
        sipp.messages()
    );

    let (kind, status, ended_by, path) = talk_row(&pool, esc).await;
    assert_eq!(
        (kind.as_str(), status.as_str(), ended_by.as_deref()),
        ("join", "ended", Some("operator"))
    );
    let path = path.expect("the conversation is recorded");
    let (elder_side, operator_side) = recorded_tone_frames(&path, OPERATOR_HZ);
    assert!(
        operator_side >= 100,
        "the operator's channel holds the tone in {operator_side} frames"
    );
    // What came in over the phone line: the phone had the operator's voice.
    assert!(
        elder_side >= 50,
        "the phone line sent back the tone in only {elder_side} frames"
    );
    wait_for::<i64>(
        &pool,
        "the held call to be closed",
        30,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
         WHERE e.id = $1 AND c.status = 'completed'",
        esc,
    )
    .await;
    assert_number_not_logged(&engine);
}

/// An ended call of the elder with an emergency on it, nobody on the line.
async fn flag_ended_call(pool: &PgPool, elder: i64) -> i64 {
    let call: i64 = sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, status, outcome, flow, due_at, started_at, ended_at)
         VALUES ($1, 'inbound', 'help', 'completed', 'hung_up', 'help_line', now(), now(), now()) RETURNING id",
    )
    .bind(elder)
    .fetch_one(pool)
    .await
    .unwrap();
    queue::flag(
        pool,
        &Flag {
            call_id: call,
            level: Level::Emergency,
            categories: vec!["help_request".into()],
            reasons: json!([{"category": "help_request", "evidence": "help", "rule": "test"}]),
            elder_on_line: false,
        },
        &SlaPolicy::default(),
        Utc::now(),
    )
    .await
    .unwrap()
    .id
}

/// The elder with only a phone number hung up before anyone could talk to
/// them. The operator calls back from the browser: the phone rings through
/// the trunk, answers, hears the recording notice, and the operator and
/// the phone hear each other until the operator hangs up. The call back is
/// a call of its own, recorded and audited like one to a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_calls_an_elder_back_on_the_phone_through_the_trunk() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("callback");
    let elder = enrol_with_operator(&pool).await;
    let esc = flag_ended_call(&pool, elder).await;
    let ports = Sipp::ports();
    let sip = free_ports(45_000, 46_900, 1);
    let engine = Engine::start(&db, &tmp.join("data"), Some((ports.0, sip)));
    let mut sipp = Sipp::run_with("uas-answer-echo.xml", ports, &["-rtp_echo"]).await;

    let op = Operator::login(&engine.base).await;
    op.claim(esc).await;
    let mut talk = op
        .talk(esc, "call_back", "live")
        .await
        .unwrap_or_else(|e| panic!("the call back was refused: {e}"));
    assert_eq!(talk.states, ["connecting", "ringing", "answered", "live"]);
    assert!(
        sipp.messages()
            .contains(&format!("INVITE sip:{NUMBER}@127.0.0.1:{}", sipp.port)),
        "the trunk was asked for the elder's number:\n{}",
        sipp.messages()
    );

    let heard = talk.speak_and_hear_the_echo(4.0).await;
    assert!(
        heard >= 50,
        "the operator's voice did not come back from the phone: {heard} frames of the tone"
    );
    let end = talk.hang_up().await;
    assert_eq!(end["ended_by"], "operator", "{end}");
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());

    let (kind, status, ended_by, path) = talk_row(&pool, esc).await;
    assert_eq!(
        (kind.as_str(), status.as_str(), ended_by.as_deref()),
        ("callback", "ended", Some("operator"))
    );
    let (elder_side, operator_side) =
        recorded_tone_frames(&path.expect("the conversation is recorded"), OPERATOR_HZ);
    assert!(operator_side >= 100, "{operator_side}");
    assert!(elder_side >= 50, "{elder_side}");

    // The call back: its own call, answered over the phone, closed.
    let (purpose, call_status, outcome): (String, String, Option<String>) = sqlx::query_as(
        "SELECT c.purpose, c.status, c.outcome FROM calls c JOIN operator_talks t ON t.call_id = c.id
         WHERE t.escalation_id = $1",
    )
    .bind(esc)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (purpose.as_str(), call_status.as_str(), outcome.as_deref()),
        ("callback", "completed", Some("ok"))
    );
    let attempts: Vec<(String, bool)> = sqlx::query_as(
        "SELECT a.status, a.answered_at IS NOT NULL FROM call_attempts a
         JOIN operator_talks t ON t.call_id = a.call_id WHERE t.escalation_id = $1",
    )
    .bind(esc)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, vec![("ended".to_string(), true)]);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE entity = 'escalation' AND entity_id = $1 AND action LIKE 'talk.%' ORDER BY id",
    )
    .bind(esc)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(actions, ["talk.call_back", "talk.connected", "talk.end"]);
    assert_number_not_logged(&engine);
}

/// A call back to a busy phone: the operator is told in words, the talk
/// fails, and the call back ends unreachable with a `busy` attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_back_to_a_busy_phone_is_told_to_the_operator() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("busy");
    let elder = enrol_with_operator(&pool).await;
    let esc = flag_ended_call(&pool, elder).await;
    let ports = Sipp::ports();
    let sip = free_ports(45_000, 46_900, 1);
    let engine = Engine::start(&db, &tmp.join("data"), Some((ports.0, sip)));
    let mut sipp = Sipp::run_with("uas-reject-486.xml", ports, &["-rtp_echo"]).await;

    let op = Operator::login(&engine.base).await;
    op.claim(esc).await;
    let Err(e) = op.talk(esc, "call_back", "live").await else {
        panic!("a call back to a busy phone went live");
    };
    assert_eq!(e["code"], "busy", "{e}");
    assert!(e["message"].as_str().unwrap().contains("busy"), "{e}");
    assert_eq!(sipp.finish().await, 0, "sipp:\n{}", sipp.messages());

    let (kind, status, _, _) = talk_row(&pool, esc).await;
    assert_eq!((kind.as_str(), status.as_str()), ("callback", "failed"));
    let (call_status, attempt): (String, String) = sqlx::query_as(
        "SELECT c.status, a.status FROM calls c JOIN call_attempts a ON a.call_id = c.id
         JOIN operator_talks t ON t.call_id = c.id WHERE t.escalation_id = $1",
    )
    .bind(esc)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (call_status.as_str(), attempt.as_str()),
        ("unreachable", "busy")
    );
    assert_number_not_logged(&engine);
}

/// Without a trunk, a call back to an elder who has only a phone number is
/// refused before anything rings, in words that say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trunk_a_call_back_to_a_phone_is_refused_in_words() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let tmp = tempdir("no-trunk");
    let elder = enrol_with_operator(&pool).await;
    let esc = flag_ended_call(&pool, elder).await;
    let engine = Engine::start(&db, &tmp.join("data"), None);
    let op = Operator::login(&engine.base).await;
    op.claim(esc).await;
    let refused = op.talk(esc, "call_back", "live").await;
    let Err(e) = refused else {
        panic!("a call back without a trunk went live");
    };
    assert_eq!(e["code"], "no_device", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("no telephone trunk"),
        "{e}"
    );
    let talks: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_talks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(talks, 0, "nothing was started");
}
