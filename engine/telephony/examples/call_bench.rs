//! Benchmark: call setup time, packet timing under many concurrent calls,
//! and CPU per call. Both ends of every call live in this process (so each
//! call is two legs) on 127.0.0.1.
//!
//!     cargo run --release -p voicecare-telephony --example call_bench -- 50 100 200
//!
//! Options (after `--`): call counts, then optionally `--seconds S`
//! (measurement window, default 10) and `--opus`.

use std::time::{Duration, Instant};

use voicecare_telephony::{CallLeg, Codec, LegConfig, LegEvent};

fn cpu_seconds() -> f64 {
    // utime + stime in clock ticks (fields 14 and 15 of /proc/self/stat).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

async fn setup(
    config: &LegConfig,
) -> Result<(CallLeg, CallLeg, Duration), voicecare_telephony::TelephonyError> {
    let t0 = Instant::now();
    let outgoing = CallLeg::offer(config).await?;
    let (mut device, answer) = CallLeg::answer(config, outgoing.sdp()).await?;
    let mut engine = outgoing.accept_answer(&answer).await?;
    engine.wait_connected(Duration::from_secs(30)).await?;
    device.wait_connected(Duration::from_secs(30)).await?;
    Ok((engine, device, t0.elapsed()))
}

/// Consume events the way a call runner would, without doing work.
fn drain(mut leg: CallLeg) -> voicecare_telephony::LegControl {
    let control = leg.control();
    tokio::spawn(async move {
        while let Some(ev) = leg.next_event().await {
            if matches!(ev, LegEvent::Ended(_)) {
                break;
            }
        }
    });
    control
}

async fn run(calls: usize, seconds: u64, codec: Codec) {
    let config = LegConfig {
        codecs: vec![codec],
        record_timing: true,
        ..LegConfig::loopback()
    };
    let rss0 = rss_kib();
    let t_setup = Instant::now();
    let mut setups = Vec::new();
    let mut controls = Vec::new();
    let mut failed = 0;
    // Eight setups in flight at a time.
    for chunk in (0..calls).collect::<Vec<_>>().chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|_| {
                let c = config.clone();
                tokio::spawn(async move { setup(&c).await })
            })
            .collect();
        for h in handles {
            match h.await.expect("setup task") {
                Ok((engine, device, took)) => {
                    setups.push(took.as_secs_f64() * 1000.0);
                    controls.push((drain(engine), drain(device)));
                }
                Err(e) => {
                    eprintln!("call setup failed: {e}");
                    failed += 1;
                }
            }
        }
    }
    let setup_total = t_setup.elapsed();
    setups.sort_by(|a, b| a.total_cmp(b));

    // Let start-up settle, then measure a clean window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (e, _) in &controls {
        e.stats().inter_arrival_us.lock().unwrap().clear();
    }
    let recv0: u64 = controls
        .iter()
        .map(|(e, _)| {
            e.stats()
                .packets_received
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let cpu0 = cpu_seconds();
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let recv: u64 = controls
        .iter()
        .map(|(e, _)| {
            e.stats()
                .packets_received
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum::<u64>()
        - recv0;
    let mut errors: Vec<f64> = Vec::new();
    for (e, _) in &controls {
        let v = e.stats().inter_arrival_us.lock().unwrap().clone();
        errors.extend(v.iter().map(|&us| (us as f64 / 1000.0 - 20.0).abs()));
    }
    errors.sort_by(|a, b| a.total_cmp(b));
    let late = errors.iter().filter(|&&e| e > 20.0).count();
    let up = controls.len();
    let expected = (up as f64 * wall * 50.0) as u64;
    let rss = rss_kib();
    println!(
        "| {calls} ({failed} failed) | {:?} | {:.1} / {:.1} / {:.1} ms | {:.2} s | {:.1} % | {:.3} % | {:.2} / {:.2} / {:.2} ms | {:.3} % | {:.2} % | {} KiB |",
        codec,
        pct(&setups, 0.5),
        pct(&setups, 0.95),
        pct(&setups, 1.0),
        setup_total.as_secs_f64(),
        100.0 * cpu / wall,
        100.0 * cpu / wall / up.max(1) as f64,
        pct(&errors, 0.5),
        pct(&errors, 0.99),
        pct(&errors, 0.999),
        100.0 * late as f64 / errors.len().max(1) as f64,
        100.0 * (1.0 - recv as f64 / expected.max(1) as f64).max(0.0),
        rss.saturating_sub(rss0) / up.max(1) as u64,
    );
    for (e, d) in &controls {
        e.hang_up();
        d.hang_up();
    }
    for (e, _) in &controls {
        e.ended().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn main() {
    let mut counts = Vec::new();
    let mut seconds = 10;
    #[cfg_attr(not(feature = "opus"), allow(unused_mut))]
    let mut codec = Codec::Pcmu;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(10),
            #[cfg(feature = "opus")]
            "--opus" => codec = Codec::Opus,
            n => counts.push(n.parse::<usize>().expect("a call count")),
        }
    }
    if counts.is_empty() {
        counts = vec![10, 50, 100];
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    println!(
        "| calls | codec | setup p50 / p95 / max | all set up in | CPU (of one core) | CPU per call | timing error p50 / p99 / p99.9 | >20 ms late | loss | RSS per call |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        rt.block_on(run(n, seconds, codec));
    }
}
