//! `voicecare bench queue`: how fast operators can claim, against a plain
//! `SKIP LOCKED` loop on the same server in the same run, and how quickly a
//! new escalation's NOTIFY reaches a listener.
//!
//! Runs in a throwaway database (on `DATABASE_URL`'s server, or a private
//! cluster when it is unset) so it never touches real data.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use voicecare_core::Level;
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

const RAW_CLAIM: &str =
    "UPDATE escalations SET status = 'claimed', claimed_by = $1, claimed_at = now(),
        lease_expires_at = now() + interval '60 seconds'
    WHERE id = (SELECT id FROM escalations WHERE status = 'open'
                ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id";

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
    seed_items(&pool, community, args.items).await?;
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
            reset(&pool).await?;
            best_raw = best_raw.max(measure(&pool, c, window, Mode::Raw, &ops).await?);
            reset(&pool).await?;
            best_store = best_store.max(measure(&pool, c, window, Mode::Store, &ops).await?);
        }
        println!(
            "{c:>11}  {best_raw:>14.0}  {best_store:>16.0}  {:>7.2}",
            best_store / best_raw.max(1e-9)
        );
    }
    reset(&pool).await?;
    notify_latency(&pool, community, args.notify_samples).await?;
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
                    Mode::Raw => sqlx::query_scalar::<_, i64>(RAW_CLAIM)
                        .bind(scope.operator_id)
                        .fetch_optional(&pool)
                        .await?
                        .is_some(),
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

async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE escalations SET status = 'open', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL
         WHERE status = 'claimed'",
    )
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE escalations")
        .execute(pool)
        .await?;
    Ok(())
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
    let pw = voicecare_store::operators::Password::new("bench-password-1")?;
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

async fn seed_items(pool: &PgPool, community: i64, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "WITH el AS (
             INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
             SELECT 'Bench ' || g, 'bench-' || g, 'en', 'UTC', $1 FROM generate_series(1, $2) g RETURNING id
         ), c AS (
             INSERT INTO calls (elder_id, direction, purpose) SELECT id, 'outbound', 'checkin' FROM el RETURNING id, elder_id
         )
         INSERT INTO escalations (call_id, elder_id, level, created_at, sla_deadline)
         SELECT c.id, c.elder_id, (ARRAY['emergency','urgent','watch'])[1 + (c.id % 3)],
                now() - (random() * interval '1 hour'), now() + interval '1 hour' FROM c",
    )
    .bind(community)
    .bind(n)
    .execute(pool)
    .await?;
    Ok(())
}

async fn notify_latency(pool: &PgPool, community: i64, samples: usize) -> anyhow::Result<()> {
    let calls: Vec<i64> = sqlx::query_scalar(
        "WITH el AS (
             INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
             SELECT 'Notify ' || g, 'notify-' || g, 'en', 'UTC', $1 FROM generate_series(1, $2) g RETURNING id
         )
         INSERT INTO calls (elder_id, direction, purpose) SELECT id, 'outbound', 'checkin' FROM el RETURNING id",
    )
    .bind(community)
    .bind(samples as i64)
    .fetch_all(pool)
    .await?;
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(queue::CHANNEL).await?;
    let mut lat = Vec::with_capacity(samples);
    for call in calls {
        let f = Flag {
            call_id: call,
            level: Level::Emergency,
            categories: vec!["fall".into()],
            reasons: serde_json::json!([]),
            elder_on_line: true,
        };
        let t0 = Instant::now();
        queue::flag(pool, &f, &SlaPolicy::default(), Utc::now()).await?;
        // Measured from before the insert, so it includes the commit.
        tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "escalation insert → NOTIFY received ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}
