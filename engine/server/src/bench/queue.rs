//! `voicecare bench queue`: how fast operators can claim, against a plain
//! `SKIP LOCKED` loop on the same server in the same run, and how quickly a
//! new escalation reaches a LISTEN connection and a console's event stream
//! (`GET /api/v1/events` over HTTP, through the same router `serve` runs).
//!
//! Runs in a throwaway database (on `DATABASE_URL`'s server, or a private
//! cluster when it is unset) so it never touches real data.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use sqlx::PgPool;
use voicecare_core::Level;
use voicecare_store::bench;
use voicecare_store::notify::{EscalationEvent, EscalationListener};
use voicecare_store::operators::{Role, Scope};
use voicecare_store::org::{self, UnitLevel};
use voicecare_store::queue::{self, Flag, SlaPolicy};
use voicecare_store::testing::TestDb;

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Concurrent operators to measure (repeatable).
    #[arg(long, default_values_t = [1usize, 4, 16])]
    pub concurrency: Vec<usize>,
    /// Escalations in the queue.
    #[arg(long, default_value_t = 50_000)]
    pub items: i64,
    /// Rounds (raw and store alternate; the best of each is reported).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// NOTIFY latency samples.
    #[arg(long, default_value_t = 300)]
    pub notify_samples: usize,
}

const BENCH_PASSWORD: &str = "bench-password-1";

pub async fn run(args: QueueBenchArgs) -> anyhow::Result<()> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1) as u32;
    let db = TestDb::with_pool_size(max_c + 4).await;
    let pool = db.pool.clone();
    let (community, street) = seed_units(&pool).await?;
    // One operator per concurrent claimer, as on a real floor.
    let mut ops = Vec::new();
    for i in 0..max_c {
        ops.push(seed_operator(&pool, street, i).await?);
    }
    bench::seed_queue(&pool, community, args.items).await?;
    println!(
        "queue claim throughput: {} items, {:.0} s per run, best of {} rounds",
        args.items, args.secs, args.rounds
    );
    println!(
        "{:>11}  {:>14}  {:>16}  {:>7}",
        "operators", "raw claims/s", "voicecare/s", "ratio"
    );
    let window = Duration::from_secs_f64(args.secs);
    for &c in &args.concurrency {
        let (mut best_raw, mut best_store) = (0.0f64, 0.0f64);
        for _ in 0..args.rounds {
            bench::reopen_claimed(&pool).await?;
            best_raw = best_raw.max(measure(&pool, c, window, Mode::Raw, &ops).await?);
            bench::reopen_claimed(&pool).await?;
            best_store = best_store.max(measure(&pool, c, window, Mode::Store, &ops).await?);
        }
        println!(
            "{c:>11}  {best_raw:>14.0}  {best_store:>16.0}  {:>7.2}",
            best_store / best_raw.max(1e-9)
        );
    }
    bench::reopen_claimed(&pool).await?;
    notify_latency(&pool, community, args.notify_samples).await?;
    seed_operator(&pool, street, max_c).await?;
    sse_latency(
        &pool,
        community,
        &format!("bench{max_c}"),
        args.notify_samples,
    )
    .await?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    Raw,
    Store,
}

async fn measure(
    pool: &PgPool,
    concurrency: usize,
    window: Duration,
    mode: Mode,
    ops: &[Scope],
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for &scope in ops.iter().take(concurrency) {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < window {
                let got = match mode {
                    Mode::Raw => bench::raw_claim(&pool, scope.operator_id).await?.is_some(),
                    Mode::Store => queue::claim_next(
                        &pool,
                        &scope,
                        &[],
                        chrono::Duration::seconds(60),
                        Utc::now(),
                    )
                    .await?
                    .is_some(),
                };
                if !got {
                    anyhow::bail!("the queue ran dry; use more --items");
                }
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn seed_units(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    let city = org::create(pool, None, UnitLevel::City, "Bench City")
        .await?
        .id;
    let county = org::create(pool, Some(city), UnitLevel::County, "Bench County")
        .await?
        .id;
    let street = org::create(pool, Some(county), UnitLevel::Street, "Bench Street")
        .await?
        .id;
    let community = org::create(pool, Some(street), UnitLevel::Community, "Bench Court")
        .await?
        .id;
    Ok((community, street))
}

async fn seed_operator(pool: &PgPool, unit: i64, n: u32) -> anyhow::Result<Scope> {
    let pw = voicecare_store::operators::Password::new(BENCH_PASSWORD)?;
    let op = voicecare_store::operators::add(
        pool,
        voicecare_store::operators::NewOperator {
            username: &format!("bench{n}"),
            display_name: &format!("Bench {n}"),
            password: &pw,
            role: Role::Operator,
            unit_id: unit,
        },
        Utc::now(),
    )
    .await?;
    Ok(op.scope())
}

/// The sample both latency measurements time: an emergency on `call`.
async fn flag_emergency(pool: &PgPool, call: i64) -> anyhow::Result<queue::Escalation> {
    let f = Flag {
        call_id: call,
        level: Level::Emergency,
        categories: vec!["fall".into()],
        reasons: serde_json::json!([]),
        elder_on_line: true,
    };
    Ok(queue::flag(pool, &f, &SlaPolicy::default(), Utc::now()).await?)
}

async fn notify_latency(pool: &PgPool, community: i64, samples: usize) -> anyhow::Result<()> {
    let calls = bench::seed_calls(pool, community, "notify", samples as i64).await?;
    let mut listener = EscalationListener::connect(pool).await?;
    let mut lat = Vec::with_capacity(samples);
    for call in calls {
        let t0 = Instant::now();
        let e = flag_emergency(pool, call).await?;
        // Measured from before the insert, so it includes the commit.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match listener.recv().await {
                    EscalationEvent::Changed(n) if n.id == e.id => return anyhow::Ok(()),
                    EscalationEvent::Changed(_) => {}
                    EscalationEvent::Resync => anyhow::bail!("the LISTEN connection was lost"),
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("escalation {} was never announced", e.id))??;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    report("escalation insert → NOTIFY received", &mut lat);
    Ok(())
}

/// Flag → the event read off `GET /api/v1/events` by an HTTP client logged in
/// as an operator: the path a console's live queue takes, minus the browser.
async fn sse_latency(
    pool: &PgPool,
    community: i64,
    username: &str,
    samples: usize,
) -> anyhow::Result<()> {
    let calls = bench::seed_calls(pool, community, "console", samples as i64).await?;
    let state = crate::api::AppState::new(
        pool.clone(),
        60,
        1,
        SlaPolicy::default(),
        std::env::temp_dir(),
    );
    let fanout = crate::api::spawn_notify_fanout(pool.clone(), &state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app =
        crate::api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream =
        crate::event_stream::EventStream::connect(&base, username, BENCH_PASSWORD).await?;
    // The fan-out announces itself with a resync once it is listening.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut lat = Vec::with_capacity(samples);
    for call in calls {
        let t0 = Instant::now();
        let e = flag_emergency(pool, call).await?;
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if stream.next().await?.iter().any(|s| s.id == e.id) {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("escalation {} never reached the event stream", e.id))??;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    server.abort();
    fanout.abort();
    report(
        "escalation insert → console event stream (HTTP SSE)",
        &mut lat,
    );
    Ok(())
}

fn report(what: &str, lat: &mut [f64]) {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what} ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
