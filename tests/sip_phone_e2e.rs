//! `voicecare phone` over SIP against real peers on loopback: SIPp placing
//! a call the phone answers, SIPp answering a call the phone places, two
//! phones talking to each other, and the phone dialling the real
//! `voicecare serve` as an elder's landline would (a real PostgreSQL and the
//! real whisper model). The phone's microphone is a WAV file and what it
//! hears is recorded to another; the tests read the recordings.
//!
//! Every peer runs under a timeout, so a stuck one fails the test rather
//! than hanging it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voicecare_store::testing::TestDb;
use voicecare_telephony::audio::tone_power_ratio;

use support::sip::{NUMBER, enrol_phone_only, free_ports, sipp_binary, tempdir};
use support::{community, repo, wait_for};

/// One call at a time: the timing of 20 ms packets on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scenarios() -> PathBuf {
    repo().join("engine/sip/tests/scenarios")
}

/// Wait until something listens on UDP `port` of loopback.
fn wait_bound(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WAV file of `secs` of a tone at `freq` (16 kHz mono, -12 dBFS).
fn tone_wav(path: &Path, freq: f32, secs: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(16_000.0 * secs) as usize {
        let t = i as f32 / 16_000.0;
        w.write_sample((8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// A recording: its samples (16 kHz mono, as the phone writes them).
fn read_recording(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("the phone wrote no recording at {}: {e}", path.display()));
    assert_eq!(r.spec().sample_rate, 16_000);
    assert_eq!(r.spec().channels, 1);
    r.samples::<i16>().map(Result::unwrap).collect()
}

/// Seconds of 20 ms frames louder than -40 dBFS.
fn loud_seconds(pcm: &[i16]) -> f64 {
    let loud = pcm
        .chunks(320)
        .filter(|f| {
            let e = f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64;
            e.sqrt() > 328.0
        })
        .count();
    loud as f64 * 0.02
}

/// `voicecare phone` with the given flags.
struct Phone {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Phone {
    fn start(args: &[&str]) -> Phone {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("phone")
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start voicecare phone");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
                stderr.clone(),
            ),
            (Box::new(child.stdout.take().unwrap()), stdout.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("phone: {line}");
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let stdin = child.stdin.take();
        Phone {
            child,
            stdin,
            stderr,
            stdout,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Wait until the phone's log has a line containing `what`.
    fn wait_log(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.log().contains(what) {
            assert!(
                Instant::now() < deadline,
                "the phone never said {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type a line, as a person would at the phone's prompt.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The exit code and the call's JSON report, once the phone is done.
    fn finish(&mut self, secs: u64) -> (i32, serde_json::Value) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the phone is still running:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader threads drain the pipes after the exit.
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        let report = out
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null);
        (status.code().unwrap_or(-1), report)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIPp running one scenario from `engine/sip/tests/scenarios`.
struct Sipp {
    child: Child,
    logs: PathBuf,
}

impl Sipp {
    fn start(scenario: &str, port: u16, media: u16, extra: &[&str]) -> Sipp {
        let logs = tempdir("sipp");
        let child = Command::new(sipp_binary())
            .current_dir(scenarios())
            .args(["-sf", scenario, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &media.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(logs.join("messages.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp");
        Sipp { child, logs }
    }

    fn messages(&self) -> String {
        std::fs::read_to_string(self.logs.join("messages.log")).unwrap_or_default()
    }

    fn finish(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "sipp still running:\n{}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn num_of(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_default()
}

#[test]
fn the_phone_answers_a_call_from_sipp_and_records_the_greeting() {
    let _one = SERIAL.blocking_lock();
    let dir = tempdir("answer");
    let (sip, rtp) = (free_ports(40_000, 42_000, 1), free_ports(42_000, 44_000, 2));
    let heard = dir.join("heard.wav");
    let mic = dir.join("mic.wav");
    tone_wav(&mic, 440.0, 3.0);
    let bind = format!("127.0.0.1:{sip}");
    let ports = format!("{rtp}-{}", rtp + 1);
    let mut phone = Phone::start(&[
        "--sip-answer",
        "--sip-bind",
        &bind,
        "--sip-rtp-ports",
        &ports,
        "--play",
        mic.to_str().unwrap(),
        "--record",
        heard.to_str().unwrap(),
    ]);
    wait_bound(sip, "the phone");
    let (sipp_port, sipp_media) = (free_ports(44_000, 45_000, 1), free_ports(45_000, 46_000, 4));
    let mut sipp = Sipp::start(
        "uac-greeting.xml",
        sipp_port,
        sipp_media,
        &[
            "-key",
            "caller",
            "95000",
            "-key",
            "offer",
            "8 0 101",
            "-s",
            "8613912345678",
            &bind,
        ],
    );

    let (code, report) = phone.finish(60);
    assert_eq!(code, 0, "the phone failed:\n{}", phone.log());
    assert_eq!(sipp.finish(), 0, "sipp:\n{}", sipp.messages());
    let msgs = sipp.messages();
    assert!(
        msgs.contains("SIP/2.0 200 OK") && msgs.contains("PCMA/8000"),
        "answered with PCMA:\n{msgs}"
    );
    assert_eq!(str_of(&report, "ended"), "remote_hangup", "{report}");
    assert_eq!(str_of(&report, "digits_heard"), "1", "{report}");
    // The greeting is about 11 s of speech with pauses.
    assert!(num_of(&report, "loud_seconds") >= 6.0, "{report}");
    // The phone kept sending media the whole call.
    assert!(num_of(&report, "packets_sent") >= 400.0, "{report}");
    let pcm = read_recording(&heard);
    assert!(pcm.len() >= 16_000 * 9, "{} samples recorded", pcm.len());
    assert!(loud_seconds(&pcm) >= 6.0, "the recording is nearly silent");
}

#[test]
fn the_phone_dials_a_sipp_callee_and_hears_it() {
    let _one = SERIAL.blocking_lock();
    let dir = tempdir("dial");
    let heard = dir.join("heard.wav");
    let (sipp_port, sipp_media) = (free_ports(44_000, 45_000, 1), free_ports(45_000, 46_000, 4));
    let mut sipp = Sipp::start("uas-answer.xml", sipp_port, sipp_media, &[]);
    wait_bound(sipp_port, "sipp");
    let rtp = free_ports(42_000, 44_000, 2);
    let uri = format!("sip:+8613800138000@127.0.0.1:{sipp_port}");
    let ports = format!("{rtp}-{}", rtp + 1);
    let mut phone = Phone::start(&[
        "--sip-call",
        &uri,
        "--sip-from",
        "+8610000000",
        "--sip-rtp-ports",
        &ports,
        "--record",
        heard.to_str().unwrap(),
    ]);

    let (code, report) = phone.finish(60);
    assert_eq!(code, 0, "the phone failed:\n{}", phone.log());
    assert_eq!(sipp.finish(), 0, "sipp:\n{}", sipp.messages());
    let msgs = sipp.messages();
    assert!(
        msgs.contains("INVITE sip:+8613800138000@127.0.0.1"),
        "the number dialled:\n{msgs}"
    );
    assert!(msgs.contains("sip:+8610000000@"), "our number:\n{msgs}");
    assert_eq!(str_of(&report, "ended"), "remote_hangup", "{report}");
    assert_eq!(str_of(&report, "digits_heard"), "1", "{report}");
    assert!(num_of(&report, "loud_seconds") >= 6.0, "{report}");
    assert!(loud_seconds(&read_recording(&heard)) >= 6.0);
}

#[test]
fn a_call_the_callee_refuses_fails_with_its_status() {
    let _one = SERIAL.blocking_lock();
    let (sipp_port, sipp_media) = (free_ports(44_000, 45_000, 1), free_ports(45_000, 46_000, 4));
    let mut sipp = Sipp::start("uas-reject-486.xml", sipp_port, sipp_media, &[]);
    wait_bound(sipp_port, "sipp");
    let uri = format!("sip:8613800138000@127.0.0.1:{sipp_port}");
    let dir = tempdir("busy");
    let mut phone = Phone::start(&[
        "--sip-call",
        &uri,
        "--record",
        dir.join("heard.wav").to_str().unwrap(),
    ]);
    let (code, report) = phone.finish(30);
    assert_ne!(code, 0, "a refused call is a failure");
    assert_eq!(report["answered"], false, "{report}");
    assert_eq!(report["status"], 486, "{report}");
    assert_eq!(sipp.finish(), 0, "sipp:\n{}", sipp.messages());
}

#[test]
fn two_phones_talk_over_sip_and_a_tone_gets_through() {
    let _one = SERIAL.blocking_lock();
    let dir = tempdir("pair");
    let heard = dir.join("heard.wav");
    let tone = dir.join("tone.wav");
    tone_wav(&tone, 440.0, 3.0);
    let (sip, rtp) = (free_ports(40_000, 42_000, 1), free_ports(42_000, 44_000, 6));
    let bind = format!("127.0.0.1:{sip}");
    let mut callee = Phone::start(&[
        "--sip-answer",
        "--sip-bind",
        &bind,
        "--sip-rtp-ports",
        &format!("{rtp}-{}", rtp + 1),
        "--record",
        heard.to_str().unwrap(),
    ]);
    wait_bound(sip, "the answering phone");
    let mut caller = Phone::start(&[
        "--sip-call",
        &format!("sip:95000@{bind}"),
        "--sip-rtp-ports",
        &format!("{}-{}", rtp + 2, rtp + 3),
        "--play",
        tone.to_str().unwrap(),
        "--hang-up-after",
        "5",
    ]);

    // A second caller meanwhile finds the line busy.
    caller.wait_log("answered", 20);
    let mut third = Phone::start(&[
        "--sip-call",
        &format!("sip:95000@{bind}"),
        "--sip-rtp-ports",
        &format!("{}-{}", rtp + 4, rtp + 5),
        "--record",
        dir.join("third.wav").to_str().unwrap(),
    ]);
    let (code, busy) = third.finish(20);
    assert_ne!(code, 0, "the second call was not refused");
    assert_eq!(busy["status"], 486, "{busy}");

    let (code, said) = caller.finish(30);
    assert_eq!(code, 0, "the calling phone failed:\n{}", caller.log());
    let (code, got) = callee.finish(30);
    assert_eq!(code, 0, "the answering phone failed:\n{}", callee.log());
    assert_eq!(str_of(&said, "ended"), "local_hangup", "{said}");
    assert_eq!(str_of(&got, "ended"), "remote_hangup", "{got}");
    let pcm = read_recording(&heard);
    let loud = loud_seconds(&pcm);
    assert!(
        (2.5..=3.5).contains(&loud),
        "{loud} s of the 3 s tone heard"
    );
    // What was loud is the tone we played, through A-law and back.
    let start = pcm.iter().position(|s| s.unsigned_abs() > 2000).unwrap();
    let tone_part = &pcm[start..start + 16_000 * 2];
    let ratio = tone_power_ratio(tone_part, 16_000, 440.0);
    assert!(ratio > 0.8, "440 Hz is {ratio:.2} of what was heard");
}

/// `voicecare serve` with its SIP on `sip` and its trunk at `trunk`, both
/// on loopback.
struct Engine {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The operator API and device signalling (HOST:PORT).
    http: String,
}

impl Engine {
    fn start(db: &TestDb, data_dir: &Path, sip: u16, trunk: u16) -> Engine {
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(&db.url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(repo().join("ivr-flows"))
            .args(["--node-id", "node-sip-phone", "--dialer-tick-ms", "200"])
            .args(["--asr-workers", "1", "--service-name", "Riverside Care"])
            .args(["--sip-trunk", &format!("127.0.0.1:{trunk}")])
            .args(["--sip-bind", &format!("127.0.0.1:{sip}")])
            .args(["--sip-rtp-ports", "47000-48999"])
            .args(["--sip-country-code", "86", "--sip-from", "95000"])
            // SIPp running one call takes an OPTIONS ping for that call.
            .args(["--sip-options-interval", "0"])
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
                eprintln!("serve: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("voicecare listening on http://") {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or(addr).to_string());
                }
            }
        });
        let http = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("voicecare serve did not start listening");
        Engine { child, log, http }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elder_dials_the_service_from_the_phone_and_key_1_escalates() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let elder = enrol_phone_only(&pool).await;
    let dir = tempdir("service");
    let sip = free_ports(40_000, 42_000, 1);
    // Nothing answers at the trunk: the engine places no calls here.
    let trunk = free_ports(46_000, 47_000, 1);
    let engine = Engine::start(&db, &dir.join("data"), sip, trunk);
    let heard = dir.join("heard.wav");
    let rtp = free_ports(42_000, 44_000, 2);
    // The elder's landline, calling in national form as a PBX would send it.
    let phone = tokio::task::spawn_blocking({
        let heard = heard.clone();
        move || {
            Phone::start(&[
                "--sip-call",
                &format!("sip:95000@127.0.0.1:{sip}"),
                "--sip-from",
                "013912345678",
                "--sip-rtp-ports",
                &format!("{rtp}-{}", rtp + 1),
                "--record",
                heard.to_str().unwrap(),
                "--hang-up-after",
                "20",
            ])
        }
    })
    .await
    .unwrap();
    let mut phone = tokio::task::spawn_blocking(move || press_1_once_connected(phone))
        .await
        .unwrap();

    let call: i64 = wait_for(
        &pool,
        "an escalation of the elder's call",
        90,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
         WHERE c.elder_id = $1 AND c.direction = 'inbound' ORDER BY c.id LIMIT 1",
        elder,
    )
    .await;
    let level: String = sqlx::query_scalar("SELECT level FROM escalations WHERE call_id = $1")
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, "emergency", "key 1 on the help line");
    let (code, report, log) = tokio::task::spawn_blocking(move || {
        let (code, report) = phone.finish(60);
        (code, report, phone.log())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the phone failed:\n{log}");
    // The service spoke to the elder: its prompts are in the recording.
    assert!(num_of(&report, "loud_seconds") >= 2.0, "{report}");
    assert!(loud_seconds(&read_recording(&heard)) >= 2.0);
    let log = engine.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("3912345678"),
        "the caller's number reached the log"
    );
}

/// Let the service's greeting start, then press 1 for help, as the elder.
fn press_1_once_connected(mut phone: Phone) -> Phone {
    phone.wait_log("connected", 90);
    std::thread::sleep(Duration::from_secs(3));
    phone.type_line("1");
    phone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rings_the_phone_for_a_checkin_and_key_1_escalates() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let elder = enrol_phone_only(&pool).await;
    let dir = tempdir("checkin");
    // The phone stands where the trunk would: the engine rings it directly.
    let (phone_sip, rtp) = (free_ports(46_000, 47_000, 1), free_ports(42_000, 44_000, 2));
    let heard = dir.join("heard.wav");
    let phone = Phone::start(&[
        "--sip-answer",
        "--sip-bind",
        &format!("127.0.0.1:{phone_sip}"),
        "--sip-rtp-ports",
        &format!("{rtp}-{}", rtp + 1),
        "--record",
        heard.to_str().unwrap(),
        "--hang-up-after",
        "20",
    ]);
    wait_bound(phone_sip, "the phone");
    let engine = Engine::start(
        &db,
        &dir.join("data"),
        free_ports(40_000, 42_000, 1),
        phone_sip,
    );
    sqlx::query(
        "INSERT INTO checkin_schedules (elder_id, window_start, window_end, max_attempts, retry_minutes)
         VALUES ($1, (now() AT TIME ZONE 'Asia/Shanghai' - interval '1 hour')::time,
                     (now() AT TIME ZONE 'Asia/Shanghai' + interval '2 hours')::time, 1, 10)",
    )
    .bind(elder)
    .execute(&pool)
    .await
    .unwrap();
    let mut phone = tokio::task::spawn_blocking(move || press_1_once_connected(phone))
        .await
        .unwrap();

    let call: i64 = wait_for(
        &pool,
        "an escalation of the check-in",
        90,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
         WHERE c.elder_id = $1 AND c.direction = 'outbound' ORDER BY c.id LIMIT 1",
        elder,
    )
    .await;
    let level: String = sqlx::query_scalar("SELECT level FROM escalations WHERE call_id = $1")
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, "emergency", "key 1 asks for help");
    let answered: bool = sqlx::query_scalar(
        "SELECT bool_or(answered_at IS NOT NULL) FROM call_attempts WHERE call_id = $1",
    )
    .bind(call)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(answered, "the phone answered the attempt");
    let (code, report, log) = tokio::task::spawn_blocking(move || {
        let (code, report) = phone.finish(60);
        (code, report, phone.log())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the phone failed:\n{log}");
    assert_eq!(str_of(&report, "transport"), "sip", "{report}");
    assert!(num_of(&report, "loud_seconds") >= 2.0, "{report}");
    assert!(loud_seconds(&read_recording(&heard)) >= 2.0);
    let log = engine.log.lock().unwrap().join("\n");
    assert!(
        !log.contains(&NUMBER[1..]),
        "the elder's number reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_phone_answers_a_checkin_over_webrtc_with_wav_files() {
    let _one = SERIAL.lock().await;
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let c = community(&pool).await;
    let device = "tablet-webrtc-phone";
    let elder: i64 = sqlx::query_scalar(
        "INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
         VALUES ('Mary Test', $1, 'zh', 'Asia/Shanghai', $2) RETURNING id",
    )
    .bind(device)
    .bind(c)
    .fetch_one(&pool)
    .await
    .unwrap();
    let token = "secret-token-for-the-webrtc-phone";
    voicecare_store::dialer::set_device_token(
        &pool,
        device,
        &voicecare_server::runner::gateway::token_hash(token),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let dir = tempdir("webrtc");
    let trunk = free_ports(46_000, 47_000, 1);
    let engine = Engine::start(&db, &dir.join("data"), free_ports(40_000, 42_000, 1), trunk);
    let heard = dir.join("heard.wav");
    let server = format!("ws://{}/v1/devices/ws", engine.http);
    let phone = Phone::start(&[
        "--server",
        &server,
        "--device",
        device,
        "--token",
        token,
        "--bind",
        "127.0.0.1:0",
        "--record",
        heard.to_str().unwrap(),
        "--hang-up-after",
        "20",
    ]);
    phone.wait_log("registered as", 30);
    sqlx::query(
        "INSERT INTO checkin_schedules (elder_id, window_start, window_end, max_attempts, retry_minutes)
         VALUES ($1, (now() AT TIME ZONE 'Asia/Shanghai' - interval '1 hour')::time,
                     (now() AT TIME ZONE 'Asia/Shanghai' + interval '2 hours')::time, 1, 10)",
    )
    .bind(elder)
    .execute(&pool)
    .await
    .unwrap();
    let mut phone = tokio::task::spawn_blocking(move || press_1_once_connected(phone))
        .await
        .unwrap();

    let call: i64 = wait_for(
        &pool,
        "an escalation of the check-in",
        90,
        "SELECT c.id FROM calls c JOIN escalations e ON e.call_id = c.id
         WHERE c.elder_id = $1 ORDER BY c.id LIMIT 1",
        elder,
    )
    .await;
    let level: String = sqlx::query_scalar("SELECT level FROM escalations WHERE call_id = $1")
        .bind(call)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, "emergency", "key 1 asks for help");
    let (code, report, log) = tokio::task::spawn_blocking(move || {
        let (code, report) = phone.finish(60);
        (code, report, phone.log())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the phone failed:\n{log}");
    assert_eq!(str_of(&report, "transport"), "webrtc", "{report}");
    assert!(num_of(&report, "loud_seconds") >= 2.0, "{report}");
    assert!(loud_seconds(&read_recording(&heard)) >= 2.0);
}
