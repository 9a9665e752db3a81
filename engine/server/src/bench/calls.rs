//! `voicecare bench calls`: the engine's check-in calls as elders hear them.
//!
//! `voicecare serve` runs as a child process on a throwaway database (so its
//! CPU time is its own); N simulated phones in this process answer real
//! WebRTC calls over loopback and reply to every question with a fixture
//! clip, call after call, for `--seconds`. Reported:
//!
//! * turn latency: end of the phone's speech → first audio of the next
//!   prompt at the phone, less the flow's end-of-utterance silence (which is
//!   reported on its own), beside the engine's own view of the same turns
//!   (its `turn` log lines) and the whisper queue/decode times stored with
//!   each utterance;
//! * call setup: ring → media flowing, at the phone;
//! * packet timing of the engine's 20 ms frames as the phones receive them
//!   while whisper transcribes, against bare leg-to-leg calls with no engine
//!   measured in the same run (`voicecare_telephony::bench::bare_calls`);
//! * CPU per call: the engine process's CPU time over the calls' seconds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use serde::Serialize;
use voicecare_store::org::{self, UnitLevel};
use voicecare_store::testing::TestDb;
use voicecare_telephony::bench::{bare_calls, cpu_seconds, percentile, timing_errors_ms};
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{Codec, SimPhone, SimReport, SimScript};

use crate::demo::cohort::{self, Behaviour, Member};

#[derive(Debug, Args)]
pub struct CallsBenchArgs {
    /// Concurrent calls (simulated phones).
    #[arg(long, default_value_t = 4)]
    pub calls: usize,
    /// How long the phones keep taking calls; the bare-call peer runs as long.
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Whisper model for the engine (default: `voicecare serve`'s).
    #[arg(long)]
    pub asr_model: Option<String>,
    /// Speech-recognition workers in the engine.
    #[arg(long, default_value_t = 2)]
    pub asr_workers: u32,
    #[arg(long, default_value = "ivr-flows")]
    pub flows_dir: PathBuf,
    #[arg(long, default_value = "audio-fixtures")]
    pub fixtures: PathBuf,
    /// The reply every phone gives to every question (relative to --fixtures).
    #[arg(long, default_value = "espeak/en_ok_1.flac")]
    pub clip: String,
}

/// Summary of a sorted sample.
#[derive(Debug, Serialize)]
struct Dist {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self {
            n: v.len(),
            p50: percentile(&v, 0.5),
            p95: percentile(&v, 0.95),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    calls: usize,
    seconds: f64,
    calls_completed: usize,
    turns: usize,
    /// End of speech → first prompt audio at the phone, endpointing silence excluded.
    turn_latency_ms: Dist,
    /// The end-of-utterance silence the engine waited for (excluded above).
    endpoint_silence_ms: Dist,
    /// End of speech → first prompt audio at the phone, as heard.
    turn_heard_ms: Dist,
    /// The engine's view: its endpointer's decision → its first prompt audio.
    engine_respond_ms: Dist,
    asr_queue_ms: Dist,
    asr_decode_ms: Dist,
    setup_ms: Dist,
    /// |inter-arrival − 20 ms| of the engine's packets at the phones.
    jitter_ms: Dist,
    /// The same for bare leg-to-leg calls (no engine), same count, same run.
    peer_jitter_ms: Dist,
    jitter_p99_ratio: f64,
    peer_setup_ms: Dist,
    /// Engine process CPU seconds per call-second, in % of one core.
    cpu_per_call_pct: f64,
    /// The bare calls' process CPU per call (both ends), in % of one core.
    peer_cpu_per_call_pct: f64,
    engine_cpu_s: f64,
    call_seconds: f64,
    codec: String,
}

pub async fn run(args: CallsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.calls >= 1, "--calls must be at least 1");
    let clip_path = args.fixtures.join(&args.clip);
    let tmp = std::env::temp_dir().join(format!(
        "voicecare-bench-calls-{}-{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&tmp)?;
    let clip = voicecare_media::load(&clip_path, None)
        .map_err(|e| anyhow::anyhow!("fixture {}: {e}", clip_path.display()))?;
    let wav = tmp.join("reply.wav");
    voicecare_media::write_wav(&wav, &clip).map_err(|e| anyhow::anyhow!("{e}"))?;

    let db = TestDb::with_pool_size(4).await;
    let pool = db.pool.clone();
    let community = community(&pool).await?;
    let mut elders = Vec::new();
    for i in 0..args.calls {
        let device = format!("bench-{i:03}");
        let m = Member {
            name: format!("Bench Elder {}", i + 1),
            particulars: None,
            token: format!("token-{device}-{}", rand::random::<u64>()),
            device,
            lang: "en".into(),
            time_zone: "UTC".into(),
            behaviour: Behaviour::Silent,
        };
        let id = cohort::enrol(&pool, community, &m).await?;
        elders.push((id, m));
    }

    let mut engine = Engine::start(&db.url, &tmp, &args)?;
    let ws = format!("ws://{}/v1/devices/ws", engine.addr);
    // Answer at once, reply to every question, hang up only if the engine does not.
    let mut script = String::from("max_call_ms = 180000\n");
    for _ in 0..8 {
        script.push_str(&format!(
            "[[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 2500\ntimeout_ms = 30000\n\
             [[step]]\ndo = \"say\"\nwav = \"{}\"\n",
            wav.display()
        ));
    }
    let script = SimScript::parse(&script, &tmp)?;
    let reports = Arc::new(Mutex::new(Vec::<SimReport>::new()));
    let cpu0 = cpu_seconds(Some(engine.pid())).context("engine CPU time")?;
    let started = Instant::now();
    let window = Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for (id, m) in &elders {
        let mut cfg = ClientConfig::new(ws.clone(), &m.device, DeviceToken::new(&m.token));
        cfg.leg = LegConfig {
            record_timing: true,
            ..LegConfig::loopback()
        };
        let mut phone = SimPhone::connect(cfg, script.clone())
            .await
            .with_context(|| format!("simulated phone {} did not register", m.device))?;
        let (id, pool, reports) = (*id, pool.clone(), reports.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                // The last call is still being closed by the engine: retry.
                let mut scheduled = false;
                for _ in 0..100 {
                    let now = Utc::now();
                    if voicecare_store::dialer::schedule_checkin(
                        &pool,
                        id,
                        "daily_checkin",
                        now,
                        now,
                    )
                    .await?
                    .is_some()
                    {
                        scheduled = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                anyhow::ensure!(scheduled, "elder {id}: the previous call never closed");
                let r = tokio::time::timeout(Duration::from_secs(240), phone.run_call())
                    .await
                    .context("a call did not end within 240 s")??;
                anyhow::ensure!(r.answered, "elder {id}: the engine's call was not answered");
                reports.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let engine_cpu = cpu_seconds(Some(engine.pid())).context("engine CPU time")? - cpu0;
    let wall = started.elapsed().as_secs_f64();
    // Let the engine's last log lines arrive, then stop it before the peer runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let engine_turns = engine.turns();
    engine.stop();
    let reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));

    let (asr_queue, asr_decode): (Vec<f64>, Vec<f64>) = voicecare_store::calls::asr_times(&pool)
        .await?
        .into_iter()
        .map(|(q, d)| (q as f64, d as f64))
        .unzip();
    drop(pool);

    let codec = Codec::all()[0];
    let peer = bare_calls(args.calls, args.seconds.min(30.0), codec).await;

    let endpoint: Vec<f64> = engine_turns.iter().map(|t| t.0).collect();
    anyhow::ensure!(
        !endpoint.is_empty(),
        "the engine reported no turns; is the whisper model installed (scripts/install-model.sh)?"
    );
    let endpoint_ms = Dist::of(endpoint.clone());
    let heard: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.turns.iter().map(|t| t.reply_ms))
        .collect();
    let latency: Vec<f64> = heard.iter().map(|h| h - endpoint_ms.p50).collect();
    let mut gaps = Vec::new();
    for r in &reports {
        // Skip the first second: ICE and DTLS settling, not the engine's pacing.
        gaps.extend(r.inter_arrival_us.iter().skip(50));
    }
    let jitter = timing_errors_ms(&gaps);
    let call_seconds: f64 = reports.iter().filter_map(|r| r.talk_ms).sum::<f64>() / 1000.0;
    let peer_up = (peer.calls - peer.failed).max(1) as f64;
    let report = Report {
        calls: args.calls,
        seconds: wall,
        calls_completed: reports.len(),
        turns: heard.len(),
        turn_latency_ms: Dist::of(latency),
        endpoint_silence_ms: endpoint_ms,
        turn_heard_ms: Dist::of(heard),
        engine_respond_ms: Dist::of(engine_turns.iter().map(|t| t.1).collect()),
        asr_queue_ms: Dist::of(asr_queue),
        asr_decode_ms: Dist::of(asr_decode),
        setup_ms: Dist::of(reports.iter().filter_map(|r| r.ring_to_media_ms).collect()),
        jitter_p99_ratio: percentile(&jitter, 0.99)
            / percentile(&peer.timing_error_ms, 0.99).max(1e-3),
        jitter_ms: Dist::of(jitter),
        peer_jitter_ms: Dist::of(peer.timing_error_ms.clone()),
        peer_setup_ms: Dist::of(peer.setup_ms.clone()),
        cpu_per_call_pct: 100.0 * engine_cpu / call_seconds.max(1e-9),
        peer_cpu_per_call_pct: 100.0 * peer.cpu_s / peer.wall_s.max(1e-9) / peer_up,
        engine_cpu_s: engine_cpu,
        call_seconds,
        codec: format!("{codec:?}"),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    let d = |x: &Dist| format!("{:.0} / {:.0} / {:.0} ms", x.p50, x.p95, x.max);
    let j = |x: &Dist| format!("{:.2} / {:.2} / {:.2} ms", x.p50, x.p99, x.max);
    println!(
        "voicecare bench calls: {} concurrent calls for {:.0} s ({} calls, {} turns, {})",
        r.calls, r.seconds, r.calls_completed, r.turns, r.codec
    );
    println!("                                         p50 / p95 / max");
    println!(
        "turn latency (endpointing excluded)  {}",
        d(&r.turn_latency_ms)
    );
    println!(
        "  endpointing silence                {}",
        d(&r.endpoint_silence_ms)
    );
    println!(
        "  as heard at the phone              {}",
        d(&r.turn_heard_ms)
    );
    println!(
        "  engine: endpointer → prompt        {}",
        d(&r.engine_respond_ms)
    );
    println!(
        "  whisper queue                      {}",
        d(&r.asr_queue_ms)
    );
    println!(
        "  whisper decode                     {}",
        d(&r.asr_decode_ms)
    );
    println!(
        "call setup, ring → media             {}   (bare legs: {})",
        d(&r.setup_ms),
        d(&r.peer_setup_ms)
    );
    println!("                                         p50 / p99 / max");
    println!(
        "packet timing error at the phones    {}   (bare legs: {}; p99 ratio {:.2})",
        j(&r.jitter_ms),
        j(&r.peer_jitter_ms),
        r.jitter_p99_ratio
    );
    println!(
        "CPU per call (engine process)        {:.1} % of one core   (bare legs, both ends: {:.2} %)",
        r.cpu_per_call_pct, r.peer_cpu_per_call_pct
    );
}

async fn community(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    let city = org::create(pool, None, UnitLevel::City, "Bench City")
        .await?
        .id;
    let county = org::create(pool, Some(city), UnitLevel::County, "Bench County")
        .await?
        .id;
    let street = org::create(pool, Some(county), UnitLevel::Street, "Bench Street")
        .await?
        .id;
    Ok(
        org::create(pool, Some(street), UnitLevel::Community, "Bench Court")
            .await?
            .id,
    )
}

/// `voicecare serve` as a child process, its `turn` log lines collected.
struct Engine {
    child: Child,
    addr: String,
    /// (endpoint_ms, respond_ms) per turn.
    turns: Arc<Mutex<Vec<(f64, f64)>>>,
}

impl Engine {
    fn start(url: &str, tmp: &std::path::Path, args: &CallsBenchArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the voicecare binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--data-dir")
            .arg(tmp.join("data"))
            .arg("--database-url")
            .arg(url)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
            .arg("--flows-dir")
            .arg(&args.flows_dir)
            .args(["--node-id", "bench", "--dialer-tick-ms", "100"])
            .args(["--max-calls-per-node", &args.calls.to_string()])
            .args(["--asr-workers", &args.asr_workers.to_string()])
            .args(["--service-name", "Riverside Care"]);
        if let Some(m) = &args.asr_model {
            cmd.args(["--asr-model", m]);
        }
        let mut child = cmd
            .env("VOICECARE_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,voicecare_server::runner::session=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start voicecare serve")?;
        let stdout = child.stdout.take().context("engine stdout")?;
        let stderr = child.stderr.take().context("engine stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("voicecare listening on http://") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let turns = Arc::new(Mutex::new(Vec::new()));
        let sink = turns.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("{line}");
                    continue;
                };
                let f = &v["fields"];
                if f["message"] == "turn" {
                    if let (Some(e), Some(r)) =
                        (f["endpoint_ms"].as_f64(), f["respond_ms"].as_f64())
                    {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push((e, r));
                    }
                } else if v["level"] != "INFO" {
                    eprintln!("engine: {line}");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("voicecare serve did not start listening within 180 s");
            }
        };
        Ok(Self { child, addr, turns })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn turns(&self) -> Vec<(f64, f64)> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
