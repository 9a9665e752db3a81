//! Benchmark: call setup time, packet timing under many concurrent calls,
//! and CPU per call. Both ends of every call live in this process (so each
//! call is two legs) on 127.0.0.1. The measurement itself is
//! `voicecare_telephony::bench::bare_calls`, which `voicecare bench calls`
//! also runs as its peer.
//!
//!     cargo run --release -p voicecare-telephony --example call_bench -- 50 100 200
//!
//! Options (after `--`): call counts, then optionally `--seconds S`
//! (measurement window, default 10) and `--opus`.

use std::time::Duration;

use voicecare_telephony::Codec;
use voicecare_telephony::bench::{bare_calls, percentile as pct};

async fn run(calls: usize, seconds: u64, codec: Codec) {
    let r = bare_calls(calls, seconds as f64, codec).await;
    let errors = &r.timing_error_ms;
    let late = errors.iter().filter(|&&e| e > 20.0).count();
    let up = calls - r.failed;
    println!(
        "| {calls} ({} failed) | {:?} | {:.1} / {:.1} / {:.1} ms | {:.2} s | {:.1} % | {:.3} % | {:.2} / {:.2} / {:.2} ms | {:.3} % | {:.2} % | {} KiB |",
        r.failed,
        codec,
        pct(&r.setup_ms, 0.5),
        pct(&r.setup_ms, 0.95),
        pct(&r.setup_ms, 1.0),
        r.all_set_up_s,
        100.0 * r.cpu_s / r.wall_s,
        100.0 * r.cpu_s / r.wall_s / up.max(1) as f64,
        pct(errors, 0.5),
        pct(errors, 0.99),
        pct(errors, 0.999),
        100.0 * late as f64 / errors.len().max(1) as f64,
        100.0 * r.loss(),
        r.rss_per_call_kib,
    );
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
