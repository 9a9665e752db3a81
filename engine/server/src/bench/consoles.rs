//! `voicecare bench consoles`: a whole call-centre floor on one node.
//!
//! `--consoles` operators (200 by default) log in and work the queue as the
//! console in `console/assets/app.js` does: an open event stream each, the
//! queue reloaded 50 ms after every event and every 15 s, claims of what is
//! waiting, the detail read, leases renewed every 5 s while the operator
//! handles an item, and a resolution. Meanwhile escalations arrive at
//! `--escalations-per-min` (as the engine raises them, through the store) and
//! `--calls` check-in calls run end to end through the same node, step after
//! step, exactly as `voicecare bench capacity` places them.
//!
//! The peer, in the same run on the same node: one console alone, with the
//! same arrivals and no calls. Every request kind is reported with its p50
//! and p99 under both, and the ratio of the p99s; the event stream's latency
//! is from the escalation's insert to the event read by each console.
//!
//! Nothing may be lost: after the arrivals stop the consoles drain the queue,
//! and the run fails unless every escalation raised was resolved exactly once
//! (its audit trail says so), none is left open, the server answered no
//! request with a 5xx, and every check-in call placed was completed.
//! Memory is the process's resident set, which holds the engine and the
//! consoles' HTTP clients alike.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use voicecare_core::Level;
use voicecare_store::operators::{self, NewOperator, Password, Role};
use voicecare_store::queue::{self, Flag, SlaPolicy};

use super::capacity::{self, CapacityBenchArgs, Step, Transports, quantile};
use crate::cmd::demo::Via;
use crate::config::DbArgs;
use crate::demo::sampler::Sampler;
use crate::event_stream::EventStream;

#[derive(Debug, Args)]
pub struct ConsolesBenchArgs {
    /// Operators' consoles open at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub consoles: u32,
    /// Seconds escalations keep arriving once every console is open.
    #[arg(long, default_value_t = 60.0)]
    pub secs: f64,
    /// Seconds of the peer run (one console, no calls).
    #[arg(long, default_value_t = 20.0)]
    pub peer_secs: f64,
    /// Escalations raised per minute, as a Poisson process.
    #[arg(long, default_value_t = 40.0)]
    pub escalations_per_min: f64,
    /// Check-in calls kept running through the load, as `bench capacity`
    /// places them (0: none).
    #[arg(long, default_value_t = 4)]
    pub calls: u32,
    /// Whisper workers on the node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub asr_workers: u32,
    /// Seconds the consoles get to drain the queue after arrivals stop.
    #[arg(long, default_value_t = 120.0)]
    pub drain_secs: f64,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "ivr-flows")]
    pub flows_dir: PathBuf,
    /// Clips and their manifest (`manifest.json`), for the calls.
    #[arg(long, default_value = "audio-fixtures")]
    pub fixtures: PathBuf,
}

const PASSWORD: &str = "console-bench-password";
/// The console reloads the queue this long after an event (app.js).
const REFETCH_DEBOUNCE: Duration = Duration::from_millis(50);
/// ... and at least this often.
const POLL_EVERY: Duration = Duration::from_secs(15);
/// How fast an operator works.
#[derive(Clone, Copy)]
struct Pace {
    /// From seeing something wait to pressing "take next", ms.
    think: (u64, u64),
    /// Handling an item, ms.
    handle: (u64, u64),
    /// A held item's lease is renewed this often (app.js: 5 s).
    renew_every: Duration,
}

/// A person on the floor.
const FLOOR: Pace = Pace {
    think: (500, 2500),
    handle: (2000, 8000),
    renew_every: Duration::from_secs(5),
};
/// The peer's lone console keeps up with every arrival, and renews as often
/// as it handles, so each request kind has samples on both sides.
const PEER: Pace = Pace {
    think: (50, 200),
    handle: (400, 900),
    renew_every: Duration::from_millis(300),
};
/// An event stream that ends is reopened after this long (app.js).
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// Request kinds, in the order they are reported.
const KINDS: &[&str] = &["login", "queue", "claim-next", "detail", "renew", "resolve"];

#[derive(Debug, Serialize)]
pub struct Report {
    pub consoles: u32,
    pub secs: f64,
    pub escalations_per_min: f64,
    pub calls: u32,
    pub cores: usize,
    /// Per request kind, the peer (one console) and the load.
    pub requests: Vec<RequestRow>,
    /// Escalation insert → the event read by a console.
    pub events: RequestRow,
    pub rss_mib_before: f64,
    pub rss_mib_peak: f64,
    pub rss_mib_after: f64,
    pub cpu_pct_mean: f64,
    pub escalations_raised: usize,
    pub escalations_resolved_once: usize,
    pub escalations_resolved_more_than_once: usize,
    pub escalations_left_open: i64,
    /// Answers with a 5xx other than the login's documented 503 `busy`.
    pub server_errors: u64,
    /// Refusals and failures by request kind and status.
    pub errors: BTreeMap<String, u64>,
    /// Logins answered 503 `busy` or 429, then retried.
    pub login_retries: u64,
    /// Events a console never saw on its stream (it reloads the queue on a
    /// resync or a reopened stream, so a missed event is late, not lost).
    pub stream_events_missed: u64,
    pub stream_resyncs: u64,
    pub stream_reopens: u64,
    /// Queue reloads answered from a read another console of the unit had
    /// just made (the node's `voicecare_queue_reads_shared_total`).
    pub queue_reads_shared: u64,
    pub call_steps: Vec<Step>,
    pub calls_placed: u32,
    pub calls_completed: u32,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct RequestRow {
    pub kind: String,
    pub peer_n: usize,
    pub peer_p50_ms: f64,
    pub peer_p99_ms: f64,
    pub load_n: usize,
    pub load_p50_ms: f64,
    pub load_p99_ms: f64,
    /// load p99 / peer p99.
    pub p99_ratio: f64,
}

/// What one phase measured, shared by its consoles.
#[derive(Default)]
struct Recorder {
    latency: Mutex<HashMap<&'static str, Vec<f64>>>,
    event_ms: Mutex<Vec<f64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    server_errors: AtomicU64,
    login_retries: AtomicU64,
    /// Escalation id → when it was inserted.
    flagged: Mutex<HashMap<i64, SystemTime>>,
    /// Escalation id → resolutions a console was told succeeded.
    resolved: Mutex<HashMap<i64, u32>>,
    /// Per console, the escalations its stream announced.
    seen: Vec<Mutex<HashSet<i64>>>,
    resyncs: AtomicU64,
    reopens: AtomicU64,
    /// Consoles logged in with their stream open.
    ready: AtomicUsize,
}

impl Recorder {
    fn new(consoles: usize) -> Self {
        Self {
            seen: (0..consoles).map(|_| Mutex::default()).collect(),
            ..Self::default()
        }
    }

    fn time(&self, kind: &'static str, ms: f64) {
        lock(&self.latency).entry(kind).or_default().push(ms);
    }

    fn error(&self, kind: &str, what: impl std::fmt::Display) {
        *lock(&self.errors)
            .entry(format!("{kind} {what}"))
            .or_default() += 1;
    }

    fn open(&self) -> usize {
        let flagged = lock(&self.flagged);
        let resolved = lock(&self.resolved);
        flagged
            .keys()
            .filter(|id| !resolved.contains_key(id))
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One HTTP request, timed from send to the whole body read. `None` when it
/// failed; the failure is counted under its kind.
async fn request(
    rec: &Recorder,
    kind: &'static str,
    req: reqwest::RequestBuilder,
) -> Option<Value> {
    let t0 = Instant::now();
    let out = async {
        let resp = req.timeout(Duration::from_secs(30)).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    match out {
        Ok((status, body)) if status.is_success() => {
            rec.time(kind, ms);
            serde_json::from_slice(&body).ok().or(Some(Value::Null))
        }
        Ok((status, _)) => {
            if status.is_server_error() {
                rec.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            rec.error(kind, status.as_u16());
            None
        }
        Err(e) => {
            rec.error(kind, if e.is_timeout() { "timeout" } else { "network" });
            None
        }
    }
}

pub async fn run(mut db_args: DbArgs, args: ConsolesBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.escalations_per_min > 0.0 && args.secs > 0.0 && args.peer_secs > 0.0,
        "--secs, --peer-secs and --escalations-per-min must be positive"
    );
    let flow_path = args.flows_dir.join(format!("{}.toml", capacity::FLOW));
    let flow_text = std::fs::read_to_string(&flow_path)
        .with_context(|| format!("cannot read {}", flow_path.display()))?;
    let eou_ms = capacity::end_of_utterance_ms(&flow_text)
        .with_context(|| format!("{}: no end_of_utterance_ms", flow_path.display()))?;

    db_args.use_fresh_subdir("bench-consoles")?;
    let db = crate::db::open(&db_args, 10).await?;
    let pool = db.pool.clone();
    let sampler = Sampler::start();

    let tag = Utc::now().format("%H%M%S").to_string();
    let (_, community) = crate::demo::community(&pool, &format!("consoles {tag}")).await?;
    let names = seed_operators(&pool, community, args.consoles, &tag).await?;
    let expected =
        (args.escalations_per_min / 60.0 * (args.secs + args.peer_secs) * 2.0) as i64 + 50;
    let mut calls =
        voicecare_store::bench::seed_calls(&pool, community, &format!("esc{tag}"), expected)
            .await?
            .into_iter();

    let engine = crate::demo::start_engine(crate::demo::EngineOpts {
        db_url: db.url.clone(),
        data_dir: db_args.data_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        flows_dir: args.flows_dir.clone(),
        node_id: "consoles".into(),
        max_calls: args.calls.max(1) as i64,
        asr_workers: args.asr_workers,
        extra: Vec::new(),
    })
    .await?;
    let base = format!("http://{}", engine.listen);
    let sla = engine.sla;
    if !args.json {
        println!(
            "console load: {} consoles, {:.0} s of arrivals at {:.0} escalations/min, {} check-in calls at a time; peer: 1 console for {:.0} s",
            args.consoles, args.secs, args.escalations_per_min, args.calls, args.peer_secs
        );
    }

    // The peer: one console, no calls.
    let peer = Arc::new(Recorder::new(1));
    phase(
        &pool,
        &base,
        &names[..1],
        &peer,
        &mut calls,
        &sla,
        args.escalations_per_min,
        args.peer_secs,
        args.drain_secs,
        PEER,
        None,
    )
    .await?;
    let rss_before = sampler.samples().last().map_or(0.0, |s| s.rss_mib);
    let t_load = sampler.samples().last().map_or(0.0, |s| s.t);

    // The floor: every console, and the calls.
    let load = Arc::new(Recorder::new(names.len()));
    let callers = if args.calls > 0 {
        let bench = capacity::Bench::prepare(
            pool.clone(),
            &db_args.data_dir,
            &args.fixtures,
            eou_ms,
            engine.listen,
            super::cpu::PhoneRuntime::start()?,
            None,
        )
        .await?;
        Some(CallLoad {
            bench,
            calls: args.calls,
            targets: CapacityBenchArgs {
                steps: vec![args.calls],
                keep_going: true,
                asr_workers: args.asr_workers,
                jitter_p99_ms: 5.0,
                turn_p95_ms: 800.0,
                via: Transports::Webrtc,
                json: false,
                flows_dir: args.flows_dir.clone(),
                fixtures: args.fixtures.clone(),
            },
        })
    } else {
        None
    };
    let steps = phase(
        &pool,
        &base,
        &names,
        &load,
        &mut calls,
        &sla,
        args.escalations_per_min,
        args.secs,
        args.drain_secs,
        FLOOR,
        callers,
    )
    .await?;
    let samples = sampler.samples();
    let during: Vec<_> = samples.iter().filter(|s| s.t > t_load).collect();
    let rss_peak = during.iter().map(|s| s.rss_mib).fold(rss_before, f64::max);
    let rss_after = samples.last().map_or(0.0, |s| s.rss_mib);
    let cpu_pct_mean = if during.is_empty() {
        0.0
    } else {
        during.iter().map(|s| s.cpu_pct).sum::<f64>() / during.len() as f64
    };

    let mut report = score(
        &args,
        &pool,
        &peer,
        &load,
        steps,
        (rss_before, rss_peak, rss_after),
        cpu_pct_mean,
    )
    .await?;
    report.queue_reads_shared = shared_reads(&base).await;
    engine.server.abort();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    drop(pool);
    db.close().await?;
    anyhow::ensure!(
        report.passed,
        "the floor lost work: {} escalations raised, {} resolved once, {} more than once, {} left open, {} server errors, {} of {} calls completed",
        report.escalations_raised,
        report.escalations_resolved_once,
        report.escalations_resolved_more_than_once,
        report.escalations_left_open,
        report.server_errors,
        report.calls_completed,
        report.calls_placed
    );
    Ok(())
}

async fn seed_operators(
    pool: &PgPool,
    unit: i64,
    n: u32,
    tag: &str,
) -> anyhow::Result<Vec<String>> {
    // One hash serves every operator: hashing 200 passwords would time argon2,
    // not the floor.
    let pw = Password::new(PASSWORD)?;
    let mut names = Vec::new();
    for i in 0..n {
        let username = format!("floor{tag}-{i}");
        operators::add(
            pool,
            NewOperator {
                username: &username,
                display_name: &format!("Floor {i}"),
                password: &pw,
                role: Role::Operator,
                unit_id: unit,
            },
            Utc::now(),
        )
        .await?;
        names.push(username);
    }
    Ok(names)
}

/// Check-in calls run through the load, step after step.
struct CallLoad {
    bench: capacity::Bench,
    calls: u32,
    targets: CapacityBenchArgs,
}

/// Open `names`' consoles, raise escalations for `secs`, let the consoles
/// drain the queue, then close them. The calls' steps, when there were calls.
#[allow(clippy::too_many_arguments)]
async fn phase(
    pool: &PgPool,
    base: &str,
    names: &[String],
    rec: &Arc<Recorder>,
    calls: &mut impl Iterator<Item = i64>,
    sla: &SlaPolicy,
    per_min: f64,
    secs: f64,
    drain_secs: f64,
    pace: Pace,
    callers: Option<CallLoad>,
) -> anyhow::Result<Vec<Step>> {
    let (stop_tx, stop) = watch::channel(false);
    let mut consoles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        consoles.push(tokio::spawn(console(
            i,
            base.to_string(),
            name.clone(),
            rec.clone(),
            pace,
            stop.clone(),
        )));
    }
    // Arrivals start once the floor is open.
    let deadline = Instant::now() + Duration::from_secs(300);
    while rec.ready.load(Ordering::Relaxed) < names.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} consoles logged in within 300 s",
            rec.ready.load(Ordering::Relaxed),
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (calls_stop_tx, calls_stop) = watch::channel(false);
    let call_task = callers.map(|c| tokio::spawn(run_calls(c, calls_stop)));

    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mean_gap = 60.0 / per_min;
    loop {
        // Exponential gaps: a Poisson process at `per_min`.
        let u: f64 = rand::random::<f64>().max(1e-9);
        let gap = Duration::from_secs_f64(-u.ln() * mean_gap);
        if Instant::now() + gap >= end {
            tokio::time::sleep_until(end.into()).await;
            break;
        }
        tokio::time::sleep(gap).await;
        let call = calls
            .next()
            .context("the seeded calls ran out; raise fewer escalations")?;
        let n = lock(&rec.flagged).len();
        let f = Flag {
            call_id: call,
            level: if n.is_multiple_of(3) {
                Level::Emergency
            } else {
                Level::Urgent
            },
            categories: vec!["fall".into()],
            reasons: json!([]),
            elder_on_line: false,
        };
        let at = SystemTime::now();
        let e = queue::flag(pool, &f, sla, Utc::now()).await?;
        lock(&rec.flagged).insert(e.id, at);
    }

    let drain_end = Instant::now() + Duration::from_secs_f64(drain_secs);
    while rec.open() > 0 && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = calls_stop_tx.send(true);
    let steps = match call_task {
        Some(t) => t.await.context("the calls panicked")??,
        None => Vec::new(),
    };
    let _ = stop_tx.send(true);
    for c in consoles {
        if let Err(e) = c.await.context("a console panicked")? {
            rec.error("console", format!("{e:#}"));
        }
    }
    Ok(steps)
}

async fn run_calls(c: CallLoad, mut stop: watch::Receiver<bool>) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for si in 0.. {
        if *stop.borrow_and_update() {
            break;
        }
        steps.push(c.bench.step(si, c.calls, Via::Webrtc, &c.targets).await?);
    }
    Ok(steps)
}

/// One operator at a console, as app.js behaves.
async fn console(
    i: usize,
    base: String,
    username: String,
    rec: Arc<Recorder>,
    pace: Pace,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // No overall timeout: it would cut the event stream; requests set theirs.
    let http = reqwest::Client::new();
    let token = login(&http, &base, &username, &rec).await?;
    let auth = format!("Bearer {token}");

    let refetch = Arc::new(Notify::new());
    let (open_tx, open_rx) = watch::channel(0usize);
    let stream = tokio::spawn(watch_events(
        i,
        http.clone(),
        base.clone(),
        token.clone(),
        rec.clone(),
        refetch.clone(),
        stop.clone(),
    ));
    let refresher = tokio::spawn(refresh(
        http.clone(),
        base.clone(),
        auth.clone(),
        rec.clone(),
        refetch,
        open_tx,
        stop.clone(),
    ));
    work(&http, &base, &auth, &rec, pace, open_rx, stop).await;
    stream.await?;
    refresher.await?;
    Ok(())
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    rec: &Recorder,
) -> anyhow::Result<String> {
    let t0 = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let resp = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "username": username, "password": PASSWORD }))
            .send()
            .await
            .context("logging in")?;
        let status = resp.status();
        if status.is_success() {
            let v: Value = resp.json().await?;
            rec.time("login", t0.elapsed().as_secs_f64() * 1000.0);
            return v["token"]
                .as_str()
                .map(str::to_string)
                .context("login answered without a token");
        }
        // 503 `busy` and 429 say "try again shortly": a person would.
        if status.as_u16() == 503 || status.as_u16() == 429 {
            rec.login_retries.fetch_add(1, Ordering::Relaxed);
            let jitter = Duration::from_millis(rand::random::<u64>() % 200);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(240),
                "{username} could not log in for 240 s"
            );
            continue;
        }
        anyhow::bail!("logging in as {username}: {status}");
    }
}

/// The console's event stream: note when each escalation was first
/// announced and ask for a queue reload; reopen the stream when it ends.
async fn watch_events(
    i: usize,
    http: reqwest::Client,
    base: String,
    token: String,
    rec: Arc<Recorder>,
    refetch: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    while !*stop.borrow() {
        let mut s = match EventStream::open(&http, &base, &token).await {
            Ok(s) => s,
            Err(e) => {
                rec.error("events", format!("{e:#}"));
                tokio::select! {
                    _ = tokio::time::sleep(REOPEN_AFTER) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        if first {
            first = false;
            rec.ready.fetch_add(1, Ordering::Relaxed);
        } else {
            rec.reopens.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            let next = tokio::select! {
                n = s.next() => n,
                _ = stopped(&mut stop) => break,
            };
            let Ok(seen) = next else { break };
            for e in seen {
                if lock(&rec.seen[i]).insert(e.id)
                    && let Some(at) = lock(&rec.flagged).get(&e.id).copied()
                    && let Ok(d) = e.at.duration_since(at)
                {
                    lock(&rec.event_ms).push(d.as_secs_f64() * 1000.0);
                }
            }
            refetch.notify_one();
        }
        rec.resyncs.fetch_add(s.resyncs, Ordering::Relaxed);
        if *stop.borrow() {
            return;
        }
        refetch.notify_one();
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}

/// Reload the queue after events and every 15 s; publish how many items
/// wait to be claimed.
async fn refresh(
    http: reqwest::Client,
    base: String,
    auth: String,
    rec: Arc<Recorder>,
    refetch: Arc<Notify>,
    open: watch::Sender<usize>,
    mut stop: watch::Receiver<bool>,
) {
    let url = format!("{base}/api/v1/queue?status=open&status=claimed");
    loop {
        tokio::select! {
            _ = refetch.notified() => tokio::time::sleep(REFETCH_DEBOUNCE).await,
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stopped(&mut stop) => return,
        }
        let got = request(&rec, "queue", http.get(&url).header("authorization", &auth)).await;
        if let Some(items) = got.as_ref().and_then(|v| v["items"].as_array()) {
            let waiting = items.iter().filter(|i| i["status"] == "open").count();
            let _ = open.send(waiting);
        }
    }
}

/// The operator: when something waits, take the next item, read it, handle
/// it for a few seconds (renewing the lease), resolve it.
async fn work(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    rec: &Recorder,
    pace: Pace,
    mut open: watch::Receiver<usize>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *open.borrow_and_update() == 0 {
            // Wait for a reload to say something waits.
            tokio::select! {
                r = open.changed() => if r.is_err() { return },
                _ = stopped(&mut stop) => return,
            }
            continue;
        }
        // A person notices and reaches for the button.
        think(pace.think).await;
        let claimed = request(
            rec,
            "claim-next",
            http.post(format!("{base}/api/v1/queue/claim-next"))
                .header("authorization", auth),
        )
        .await;
        let Some(id) = claimed.and_then(|v| v["escalation"]["id"].as_i64()) else {
            // Someone else took it: wait for the next reload.
            tokio::select! {
                r = open.changed() => if r.is_err() { return },
                _ = stopped(&mut stop) => return,
            }
            continue;
        };
        request(
            rec,
            "detail",
            http.get(format!("{base}/api/v1/escalations/{id}"))
                .header("authorization", auth),
        )
        .await;
        let until = Instant::now() + between(pace.handle);
        while Instant::now() + pace.renew_every < until {
            tokio::time::sleep(pace.renew_every).await;
            request(
                rec,
                "renew",
                http.post(format!("{base}/api/v1/escalations/{id}/renew"))
                    .header("authorization", auth),
            )
            .await;
        }
        tokio::time::sleep_until(until.into()).await;
        let done = request(
            rec,
            "resolve",
            http.post(format!("{base}/api/v1/escalations/{id}/resolve"))
                .header("authorization", auth)
                .json(&json!({ "outcome": "called_back", "notes": "" })),
        )
        .await;
        if done.is_some() {
            *lock(&rec.resolved).entry(id).or_default() += 1;
        }
    }
}

/// Resolves once the phase is over (at once if it already is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

async fn think(range: (u64, u64)) {
    tokio::time::sleep(between(range)).await;
}

fn between((min_ms, max_ms): (u64, u64)) -> Duration {
    Duration::from_millis(min_ms + rand::random::<u64>() % (max_ms - min_ms).max(1))
}

async fn score(
    args: &ConsolesBenchArgs,
    pool: &PgPool,
    peer: &Recorder,
    load: &Recorder,
    call_steps: Vec<Step>,
    rss: (f64, f64, f64),
    cpu_pct_mean: f64,
) -> anyhow::Result<Report> {
    let row = |kind: &str, p: &mut Vec<f64>, l: &mut Vec<f64>| {
        let (p50, p99) = (quantile(p, 0.5), quantile(p, 0.99));
        let (l50, l99) = (quantile(l, 0.5), quantile(l, 0.99));
        RequestRow {
            kind: kind.to_string(),
            peer_n: p.len(),
            peer_p50_ms: p50,
            peer_p99_ms: p99,
            load_n: l.len(),
            load_p50_ms: l50,
            load_p99_ms: l99,
            p99_ratio: l99 / p99.max(1e-9),
        }
    };
    let mut requests = Vec::new();
    {
        let mut p = lock(&peer.latency);
        let mut l = lock(&load.latency);
        for kind in KINDS {
            requests.push(row(
                kind,
                p.entry(kind).or_default(),
                l.entry(kind).or_default(),
            ));
        }
    }
    let events = row(
        "event (insert → console)",
        &mut lock(&peer.event_ms),
        &mut lock(&load.event_ms),
    );

    let mut flagged: Vec<i64> = lock(&peer.flagged).keys().copied().collect();
    flagged.extend(lock(&load.flagged).keys().copied());
    // The audit trail, not the consoles' word, says how often each was resolved.
    let (once, more, left_open) = voicecare_store::bench::resolution_counts(pool, &flagged).await?;
    let (once, more) = (once as usize, more as usize);
    let mut errors = lock(&peer.errors).clone();
    for (k, v) in lock(&load.errors).iter() {
        *errors.entry(k.clone()).or_default() += v;
    }
    let server_errors =
        peer.server_errors.load(Ordering::Relaxed) + load.server_errors.load(Ordering::Relaxed);
    let mut missed = 0u64;
    for (rec, flagged) in [(peer, &peer.flagged), (load, &load.flagged)] {
        let flagged = lock(flagged);
        for seen in &rec.seen {
            let seen = lock(seen);
            missed += flagged.keys().filter(|id| !seen.contains(id)).count() as u64;
        }
    }
    let calls_placed = call_steps.iter().map(|s| s.calls).sum();
    let calls_completed = call_steps.iter().map(|s| s.completed).sum();
    let passed = once == flagged.len()
        && more == 0
        && left_open == 0
        && server_errors == 0
        && calls_completed == calls_placed;
    Ok(Report {
        consoles: args.consoles,
        secs: args.secs,
        escalations_per_min: args.escalations_per_min,
        calls: args.calls,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        requests,
        events,
        rss_mib_before: rss.0,
        rss_mib_peak: rss.1,
        rss_mib_after: rss.2,
        cpu_pct_mean,
        escalations_raised: flagged.len(),
        escalations_resolved_once: once,
        escalations_resolved_more_than_once: more,
        escalations_left_open: left_open,
        server_errors,
        errors,
        login_retries: peer.login_retries.load(Ordering::Relaxed)
            + load.login_retries.load(Ordering::Relaxed),
        stream_events_missed: missed,
        stream_resyncs: peer.resyncs.load(Ordering::Relaxed) + load.resyncs.load(Ordering::Relaxed),
        stream_reopens: peer.reopens.load(Ordering::Relaxed) + load.reopens.load(Ordering::Relaxed),
        queue_reads_shared: 0,
        call_steps,
        calls_placed,
        calls_completed,
        passed,
    })
}

/// The node's count of queue reloads served from a shared read.
async fn shared_reads(base: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("{base}/metrics")).await else {
        return 0;
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("voicecare_queue_reads_shared_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn print(r: &Report) {
    println!();
    println!(
        "{:<26} {:>7} {:>9} {:>9}   {:>7} {:>9} {:>9}   {:>9}",
        "request", "peer n", "p50 ms", "p99 ms", "load n", "p50 ms", "p99 ms", "p99 ratio"
    );
    for row in r.requests.iter().chain(std::iter::once(&r.events)) {
        println!(
            "{:<26} {:>7} {:>9.1} {:>9.1}   {:>7} {:>9.1} {:>9.1}   {:>9.2}",
            row.kind,
            row.peer_n,
            row.peer_p50_ms,
            row.peer_p99_ms,
            row.load_n,
            row.load_p50_ms,
            row.load_p99_ms,
            row.p99_ratio
        );
    }
    println!();
    println!(
        "memory (engine and consoles' clients): {:.0} MiB before the floor opened, peak {:.0} MiB, {:.0} MiB after; CPU {:.0} % of a core on average under load ({} cores)",
        r.rss_mib_before, r.rss_mib_peak, r.rss_mib_after, r.cpu_pct_mean, r.cores
    );
    if !r.call_steps.is_empty() {
        let worst_turn = r
            .call_steps
            .iter()
            .map(|s| s.turn_p95_ms)
            .fold(0.0, f64::max);
        let worst_jitter = r
            .call_steps
            .iter()
            .map(|s| s.jitter_p99_ms)
            .fold(0.0, f64::max);
        let idle_jitter = r
            .call_steps
            .iter()
            .map(|s| s.idle_jitter_p99_ms)
            .fold(0.0, f64::max);
        println!(
            "calls: {} of {} check-ins completed over {} steps; worst step turn latency p95 {:.0} ms, packet jitter p99 {:.1} ms (idle legs {:.1} ms)",
            r.calls_completed,
            r.calls_placed,
            r.call_steps.len(),
            worst_turn,
            worst_jitter,
            idle_jitter
        );
    }
    println!(
        "escalations: {} raised, {} resolved once, {} more than once, {} left open; {} server errors; {} logins retried after 503/429",
        r.escalations_raised,
        r.escalations_resolved_once,
        r.escalations_resolved_more_than_once,
        r.escalations_left_open,
        r.server_errors,
        r.login_retries
    );
    println!(
        "event streams: {} events not seen by a console, {} resyncs, {} streams reopened; {} queue reloads served from a shared read",
        r.stream_events_missed, r.stream_resyncs, r.stream_reopens, r.queue_reads_shared
    );
    if !r.errors.is_empty() {
        println!("refused or failed requests: {:?}", r.errors);
    }
    println!(
        "{}",
        if r.passed {
            "nothing lost"
        } else {
            "WORK WAS LOST"
        }
    );
}
