//! `voicecare demo`: enrol a cohort of simulated elders, compress a day of
//! check-ins into minutes, and let the real engine (the same `serve` code:
//! device signalling, the dialer, WebRTC legs over loopback, whisper, the
//! distress classifier, the escalation queue) call them. Each elder is a
//! [`SimPhone`] speaking a clip from `audio-fixtures/` whose manifest gives the
//! distress level a person would expect, so the summary can score what the
//! engine found against the truth.

pub mod cohort;
pub mod report;
pub mod sampler;
pub mod sip_phones;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use sqlx::PgPool;
use voicecare_store::operators::{self, NewOperator, Password, Role};
use voicecare_store::org::{self, UnitLevel};
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{SimPhone, SimScript};

use crate::cmd::demo::{DemoArgs, Via};
use crate::config::{DbArgs, ServeArgs};

/// The demo operator's credentials, printed at start.
pub const OPERATOR_USER: &str = "demo-supervisor";
pub const OPERATOR_PASSWORD: &str = "voicecare-demo";

/// Ladder and ring timing of the compressed day.
const LADDER_MINUTE_MS: u64 = 2000;
const RING_SECS: u64 = 8;

#[derive(Parser)]
struct ServeOnly {
    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn run(mut db_args: DbArgs, args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let sampler = sampler::Sampler::start();
    // The default data dir belongs to `serve`; the demo gets a fresh one.
    db_args.use_fresh_subdir("demo")?;
    let db = crate::db::open(&db_args, 10).await?;
    let pool = db.pool.clone();

    // The cohort: clips with their expected level, turned into 16 kHz WAVs.
    let run_tag = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let wav_dir = db_args.data_dir.join("demo-clips");
    std::fs::create_dir_all(&wav_dir)?;
    let clips = cohort::clips(&args.fixtures, &wav_dir)?;
    let members = cohort::plan(args.elders as usize, &clips, &run_tag);
    let answers = cohort::answers(&args.fixtures, &wav_dir)?;

    let unit = community(&pool, &run_tag).await?;
    let password = Password::new(OPERATOR_PASSWORD)?;
    // A fresh database gets the plain name; a shared one a name per run.
    let mut username = OPERATOR_USER.to_string();
    for attempt in 0..2 {
        let added = operators::add(
            &pool,
            NewOperator {
                username: &username,
                display_name: "Demo Supervisor",
                password: &password,
                role: Role::Supervisor,
                unit_id: unit.0,
            },
            Utc::now(),
        )
        .await;
        match added {
            Ok(_) => break,
            Err(e) if attempt == 1 => return Err(e.into()),
            Err(_) => username = format!("{OPERATOR_USER}-{run_tag}"),
        }
    }
    let mut elders = Vec::new();
    for m in &members {
        let id = cohort::enrol(&pool, unit.1, m).await?;
        if args.via == Via::Sip {
            // Reached at their phone number, as an elder without a device is.
            voicecare_store::dialer::phone_only(&pool, id).await?;
        }
        elders.push((id, m.clone()));
    }
    // Over SIP the phones stand behind one endpoint playing the carrier;
    // their reports come back on a channel.
    let (sip_reports, mut sip_done) = tokio::sync::mpsc::unbounded_channel();
    let bank = match args.via {
        Via::Sip => {
            let mut scripts = std::collections::HashMap::new();
            for (id, m) in &elders {
                let number = m
                    .particulars
                    .as_ref()
                    .map(|p| p.phone.clone())
                    .context("a demo elder without a phone number")?;
                let script = SimScript::parse(&m.script(&answers), &wav_dir)?;
                scripts.insert(number, (*id, script));
            }
            Some(sip_phones::PhoneBank::start(scripts, sip_reports).await?)
        }
        Via::Webrtc => None,
    };
    let sip_args = bank
        .as_ref()
        .map(sip_phones::PhoneBank::engine_args)
        .unwrap_or_default();

    // The engine: exactly `voicecare serve`, in this process.
    let engine = start_engine(EngineOpts {
        db_url: db.url.clone(),
        data_dir: db_args.data_dir.clone(),
        listen: args.listen,
        flows_dir: args.flows_dir.clone(),
        node_id: "demo".into(),
        max_calls: args.max_calls,
        asr_workers: args.asr_workers,
        extra: sip_args,
    })
    .await?;
    let (listen, sla, server) = (engine.listen, engine.sla, engine.server);

    println!();
    println!("  voicecare demo: {} simulated elders", members.len());
    println!("  Operator API: http://{listen}/api/openapi.json   console: http://{listen}/");
    println!("  Log in as '{username}' with password '{OPERATOR_PASSWORD}'.");
    println!("  Data dir: {}", db_args.data_dir.display());
    println!();

    // The demo watches its own console: when each escalation reaches an
    // operator's event stream, against when the phone stopped speaking.
    let observed = Arc::new(std::sync::Mutex::new(report::Observed::default()));
    let mut events = crate::event_stream::EventStream::connect(
        &format!("http://{listen}"),
        &username,
        OPERATOR_PASSWORD,
    )
    .await
    .context("the demo's console watcher cannot subscribe to the event stream")?;
    let watcher = {
        let observed = observed.clone();
        tokio::spawn(async move {
            while let Ok(seen) = events.next().await {
                if let Ok(mut o) = observed.lock() {
                    for s in seen {
                        o.console_seen.entry(s.id).or_insert(s.at);
                    }
                }
            }
        })
    };

    // Phones first, then schedules: every device is registered before its window opens.
    let ws = format!("ws://{listen}/v1/devices/ws");
    let stats: Stats = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let mut phones = Vec::new();
    if bank.is_some() {
        let (stats, observed) = (stats.clone(), observed.clone());
        phones.push(tokio::spawn(async move {
            while let Some((id, r)) = sip_done.recv().await {
                tally(&stats, &observed, id, &r);
            }
        }));
    }
    for (id, m) in elders.iter().filter(|_| bank.is_none()) {
        let mut cfg = ClientConfig::new(ws.clone(), &m.device, DeviceToken::new(&m.token));
        cfg.leg = LegConfig::loopback();
        let script = SimScript::parse(&m.script(&answers), &wav_dir)?;
        let mut phone = SimPhone::connect(cfg, script)
            .await
            .with_context(|| format!("simulated phone {} did not register", m.device))?;
        let (id, stats, observed) = (*id, stats.clone(), observed.clone());
        phones.push(tokio::spawn(async move {
            loop {
                match phone.run_call().await {
                    Ok(r) => tally(&stats, &observed, id, &r),
                    Err(e) => {
                        tracing::warn!(error = %e, "simulated phone stopped");
                        break;
                    }
                }
            }
        }));
    }
    for (i, (id, m)) in elders.iter().enumerate() {
        let offset = 5 + (i as u64 * args.spread_secs) / members.len().max(1) as u64;
        cohort::schedule(&pool, *id, &m.time_zone, offset).await?;
    }

    let ids: Vec<i64> = elders.iter().map(|e| e.0).collect();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut last = Instant::now() - Duration::from_secs(10);
    let finished = loop {
        let p = report::progress(&pool, &ids).await?;
        if last.elapsed() >= Duration::from_secs(3) {
            println!(
                "[{:>4}s] calls placed {:>3}  answered {:>3}  done {:>3}/{}  flagged {:>3}  queue {:>3}",
                started.elapsed().as_secs(),
                p.placed,
                p.answered,
                p.done,
                ids.len(),
                p.flagged,
                p.queue
            );
            last = Instant::now();
        }
        if p.done >= ids.len() as i64 && p.live == 0 {
            break true;
        }
        if Instant::now() > deadline || server.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !finished {
        eprintln!("the cohort's calls did not all finish in time; summarising what happened");
    }

    let metrics = report::scrape_metrics(listen).await;
    watcher.abort();
    let seen = std::mem::take(&mut *observed.lock().unwrap_or_else(|p| p.into_inner()));
    let summary = report::summarise(
        &pool,
        &elders,
        &sla,
        started.elapsed(),
        &metrics,
        &seen,
        args.via.as_str(),
    )
    .await?;
    summary.print();
    // The cohort's day is over: no more check-ins for it, whoever keeps this database.
    cohort::unschedule(&pool, &ids).await?;
    let samples = sampler.samples();
    if let Some(dir) = &args.report {
        report::write(dir, &summary, &samples)?;
        cohort::write(dir, &elders, &answers)?;
        println!("  report: {}", dir.join("report.html").display());
    }
    println!(
        "  The database is kept in {} for inspection.",
        db_args.data_dir.display()
    );

    if args.keep_running {
        println!("  Still serving on http://{listen}/ (Ctrl-C to stop).");
        let _ = server.await;
    } else {
        server.abort();
    }
    for p in phones {
        p.abort();
    }
    drop(bank);
    drop(pool);
    db.close().await?;
    if !finished {
        anyhow::bail!("demo did not finish within --timeout-secs");
    }
    Ok(())
}

/// Per elder: calls rung and answered.
type Stats = Arc<std::sync::Mutex<BTreeMap<i64, (u32, u32)>>>;

/// What one simulated call tells the summary, whatever its transport.
fn tally(
    stats: &Stats,
    observed: &std::sync::Mutex<report::Observed>,
    id: i64,
    r: &voicecare_telephony::SimReport,
) {
    if let Ok(mut o) = observed.lock() {
        o.speeches.entry(id).or_default().extend(&r.speeches);
    }
    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
    let e = s.entry(id).or_default();
    e.0 += 1;
    e.1 += r.answered as u32;
}

/// How to run the in-process engine.
pub(crate) struct EngineOpts {
    pub db_url: String,
    pub data_dir: std::path::PathBuf,
    pub listen: SocketAddr,
    pub flows_dir: std::path::PathBuf,
    pub node_id: String,
    pub max_calls: i64,
    pub asr_workers: u32,
    /// More `serve` flags (the SIP trunk of `--via sip`).
    pub extra: Vec<String>,
}

pub(crate) struct Engine {
    pub listen: SocketAddr,
    pub sla: voicecare_store::queue::SlaPolicy,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Start `voicecare serve` in this process with the compressed day's timing
/// and wait until it listens.
pub(crate) async fn start_engine(o: EngineOpts) -> anyhow::Result<Engine> {
    let listen = if o.listen.port() == 0 {
        let l = std::net::TcpListener::bind(o.listen)?;
        l.local_addr()?
    } else {
        o.listen
    };
    let serve_db = DbArgs {
        data_dir: o.data_dir.clone(),
        database_url: Some(o.db_url.clone()),
    };
    let serve_args = ServeOnly::try_parse_from(
        [
            "serve".to_string(),
            "--listen".into(),
            listen.to_string(),
            "--media-bind".into(),
            "127.0.0.1:0".into(),
            "--flows-dir".into(),
            o.flows_dir.display().to_string(),
            "--node-id".into(),
            o.node_id.clone(),
            "--dialer-tick-ms".into(),
            "250".into(),
            "--ladder-minute-ms".into(),
            LADDER_MINUTE_MS.to_string(),
            "--ring-secs".into(),
            RING_SECS.to_string(),
            "--max-calls".into(),
            o.max_calls.max(200).to_string(),
            "--max-calls-per-node".into(),
            o.max_calls.to_string(),
            "--asr-workers".into(),
            o.asr_workers.to_string(),
            "--service-name".into(),
            "Riverside Care".into(),
        ]
        .into_iter()
        .chain(o.extra),
    )?
    .serve;
    let sla = serve_args.sla();
    let server = tokio::spawn(crate::cmd::serve::run(serve_db, serve_args));
    wait_listening(listen, &server).await?;
    Ok(Engine {
        listen,
        sla,
        server,
    })
}

async fn wait_listening(
    addr: SocketAddr,
    server: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if server.is_finished() {
            anyhow::bail!("the engine stopped before it listened on {addr}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("the engine did not listen on {addr} within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (city id, community id) of a fresh demo organisation.
pub(crate) async fn community(pool: &PgPool, tag: &str) -> anyhow::Result<(i64, i64)> {
    let city = org::create(pool, None, UnitLevel::City, &format!("Demo City {tag}"))
        .await?
        .id;
    let county = org::create(pool, Some(city), UnitLevel::County, "North")
        .await?
        .id;
    let street = org::create(pool, Some(county), UnitLevel::Street, "Elm Street")
        .await?
        .id;
    let c = org::create(pool, Some(street), UnitLevel::Community, "Elm Court")
        .await?
        .id;
    Ok((city, c))
}
