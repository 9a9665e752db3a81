//! Measuring calls: the bare leg-to-leg peer that call benchmarks compare
//! against, percentiles, and a process's CPU time and memory from /proc.
//! Used by `examples/call_bench.rs` and `voicecare bench calls`.

use std::time::{Duration, Instant};

use crate::{CallLeg, Codec, LegConfig, LegControl, LegEvent, TelephonyError};

/// The `p` quantile (0..=1) of sorted values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// |inter-arrival − 20 ms| for each packet gap, in ms, sorted.
pub fn timing_errors_ms(inter_arrival_us: &[u32]) -> Vec<f64> {
    let mut e: Vec<f64> = inter_arrival_us
        .iter()
        .map(|&us| (us as f64 / 1000.0 - 20.0).abs())
        .collect();
    e.sort_by(f64::total_cmp);
    e
}

/// User + system CPU seconds of a process (`None`: this one), from /proc.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // Linux reports CPU time in USER_HZ, 100 per second to user space.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Resident memory of a process (`None`: this one), KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// What N bare calls (two legs each, both in this process, no application
/// work) measured.
#[derive(Debug, Clone, Default)]
pub struct BareRun {
    pub calls: usize,
    pub failed: usize,
    /// Offer → answer → both legs connected, ms, sorted.
    pub setup_ms: Vec<f64>,
    /// Wall time to set every call up.
    pub all_set_up_s: f64,
    /// |packet inter-arrival − 20 ms| at the offering leg, ms, sorted.
    pub timing_error_ms: Vec<f64>,
    /// Process CPU seconds over the measurement window, and its length.
    pub cpu_s: f64,
    pub wall_s: f64,
    pub packets_received: u64,
    pub rss_per_call_kib: u64,
}

impl BareRun {
    /// Share of expected packets that did not arrive.
    pub fn loss(&self) -> f64 {
        let up = self.calls - self.failed;
        let expected = up as f64 * self.wall_s * 50.0;
        (1.0 - self.packets_received as f64 / expected.max(1.0)).max(0.0)
    }
}

async fn setup(config: &LegConfig) -> Result<(CallLeg, CallLeg, Duration), TelephonyError> {
    let t0 = Instant::now();
    let outgoing = CallLeg::offer(config).await?;
    let (mut device, answer) = CallLeg::answer(config, outgoing.sdp()).await?;
    let mut engine = outgoing.accept_answer(&answer).await?;
    engine.wait_connected(Duration::from_secs(30)).await?;
    device.wait_connected(Duration::from_secs(30)).await?;
    Ok((engine, device, t0.elapsed()))
}

/// Consume events the way a call runner would, without doing work.
pub fn drain(mut leg: CallLeg) -> LegControl {
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

/// Set up `calls` bare calls on loopback (eight setups in flight), let them
/// settle for a second, then measure packet timing and CPU for `seconds`.
/// Both legs send 20 ms packets continuously (silence), as the engine does.
pub async fn bare_calls(calls: usize, seconds: f64, codec: Codec) -> BareRun {
    let config = LegConfig {
        codecs: vec![codec],
        record_timing: true,
        ..LegConfig::loopback()
    };
    let rss0 = rss_kib(None).unwrap_or(0);
    let t_setup = Instant::now();
    let mut run = BareRun {
        calls,
        ..BareRun::default()
    };
    let mut controls = Vec::new();
    for chunk in (0..calls).collect::<Vec<_>>().chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|_| {
                let c = config.clone();
                tokio::spawn(async move { setup(&c).await })
            })
            .collect();
        for h in handles {
            match h.await {
                Ok(Ok((engine, device, took))) => {
                    run.setup_ms.push(took.as_secs_f64() * 1000.0);
                    controls.push((drain(engine), drain(device)));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "bare call setup failed");
                    run.failed += 1;
                }
                Err(_) => run.failed += 1,
            }
        }
    }
    run.all_set_up_s = t_setup.elapsed().as_secs_f64();
    run.setup_ms.sort_by(f64::total_cmp);

    let measured: Vec<LegControl> = controls.iter().map(|(e, _)| e.clone()).collect();
    measure(&mut run, &measured, seconds, rss0).await;
    for (e, d) in &controls {
        e.hang_up();
        d.hang_up();
    }
    for (e, _) in &controls {
        e.ended().await;
    }
    run
}

/// Let set-up calls settle for a second, then measure over `seconds`: CPU,
/// packets received and their timing at `measured` legs, and memory per
/// call against `rss0` (the process's before set-up). Shared by every
/// transport's bare-call measurement so their figures compare.
pub async fn measure(run: &mut BareRun, measured: &[LegControl], seconds: f64, rss0: u64) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = || -> u64 {
        measured
            .iter()
            .map(|c| {
                c.stats()
                    .packets_received
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    };
    for c in measured {
        c.stats()
            .inter_arrival_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    let recv0 = received();
    let cpu0 = cpu_seconds(None).unwrap_or(0.0);
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    run.wall_s = w0.elapsed().as_secs_f64();
    run.cpu_s = cpu_seconds(None).unwrap_or(0.0) - cpu0;
    run.packets_received = received() - recv0;
    let mut gaps = Vec::new();
    for c in measured {
        gaps.extend(
            c.stats()
                .inter_arrival_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter(),
        );
    }
    run.timing_error_ms = timing_errors_ms(&gaps);
    run.rss_per_call_kib =
        rss_kib(None).unwrap_or(0).saturating_sub(rss0) / measured.len().max(1) as u64;
}
