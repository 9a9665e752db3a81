//! `voicecare bench sip`: what a phone call over the SIP trunk costs in
//! media, against a WebRTC call measured in the same run.
//!
//! Two SIP endpoints on loopback, one placing calls and one answering them,
//! carry N concurrent G.711 calls with 20 ms packets both ways (as the engine
//! sends); then N bare WebRTC leg-to-leg calls
//! (`voicecare_telephony::bench::bare_calls`) run as long. Reported for each:
//! call setups per second, CPU per call, packet timing and loss. Media only:
//! hearing costs the same whichever transport brought the audio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use voicecare_sip::{SipGateway, Trunk};
use voicecare_telephony::Codec;
use voicecare_telephony::bench::{BareRun, bare_calls, drain, measure, percentile, rss_kib};
use voicecare_telephony::leg::{LegConfig, LegControl};

#[derive(Debug, Args)]
pub struct SipBenchArgs {
    /// Concurrent calls of each kind.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// Seconds of media measured, for each kind.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Side {
    transport: &'static str,
    calls: usize,
    failed: usize,
    setups_per_s: f64,
    setup_p50_ms: f64,
    cpu_ms_per_call_s: f64,
    timing_error_p99_ms: f64,
    loss: f64,
    rss_per_call_kib: u64,
}

impl Side {
    fn of(transport: &'static str, r: &BareRun) -> Side {
        let up = (r.calls - r.failed).max(1) as f64;
        Side {
            transport,
            calls: r.calls,
            failed: r.failed,
            setups_per_s: up / r.all_set_up_s.max(1e-9),
            setup_p50_ms: percentile(&r.setup_ms, 0.5),
            cpu_ms_per_call_s: r.cpu_s * 1000.0 / (up * r.wall_s.max(1e-9)),
            timing_error_p99_ms: percentile(&r.timing_error_ms, 0.99),
            loss: r.loss(),
            rss_per_call_kib: r.rss_per_call_kib,
        }
    }
}

pub async fn run(args: SipBenchArgs) -> anyhow::Result<()> {
    let sip = sip_calls(args.calls, args.seconds).await?;
    let webrtc = bare_calls(args.calls, args.seconds, Codec::Pcmu).await;
    let sides = [Side::of("sip", &sip), Side::of("webrtc", &webrtc)];
    let cpu_ratio = sides[0].cpu_ms_per_call_s / sides[1].cpu_ms_per_call_s;
    let setup_ratio = sides[0].setups_per_s / sides[1].setups_per_s;
    if args.json {
        let out = serde_json::json!({
            "sides": sides,
            "cpu_per_call_sip_over_webrtc": cpu_ratio,
            "setups_per_s_sip_over_webrtc": setup_ratio,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} concurrent calls of each kind, {:.0} s of 20 ms G.711 packets both ways, on {} cores",
        args.calls,
        args.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<8} {:>7} {:>11} {:>13} {:>18} {:>15} {:>7} {:>13}",
        "",
        "failed",
        "setups/s",
        "setup p50 ms",
        "CPU ms per call·s",
        "timing p99 ms",
        "loss",
        "KiB per call"
    );
    for s in &sides {
        println!(
            "{:<8} {:>7} {:>11.1} {:>13.1} {:>18.2} {:>15.2} {:>6.2}% {:>13}",
            s.transport,
            s.failed,
            s.setups_per_s,
            s.setup_p50_ms,
            s.cpu_ms_per_call_s,
            s.timing_error_p99_ms,
            s.loss * 100.0,
            s.rss_per_call_kib
        );
    }
    println!("SIP / WebRTC: CPU per call {cpu_ratio:.2}x, setups per second {setup_ratio:.2}x");
    Ok(())
}

/// N SIP calls between two endpoints on loopback, eight set up at a time,
/// measured like [`bare_calls`].
async fn sip_calls(calls: usize, seconds: f64) -> anyhow::Result<BareRun> {
    let legs = LegConfig {
        record_timing: true,
        ..LegConfig::loopback()
    };
    let mut callee_trunk = Trunk::new("bench-callee", "127.0.0.1", 9);
    callee_trunk.bind = "127.0.0.1:0".parse()?;
    callee_trunk.rtp_ports = 30_000..=34_999;
    callee_trunk.accept_from = vec!["127.0.0.1".parse()?];
    let callee = SipGateway::start(callee_trunk, legs.clone()).await?;
    let mut incoming = callee
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("incoming calls taken"))?;
    let answered = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(call) = incoming.recv().await {
            if let Ok(leg) = call.answer().await {
                out.push(drain(leg));
            }
        }
        out
    });
    let mut caller_trunk = Trunk::new("bench-caller", "127.0.0.1", callee.local_addr().port());
    caller_trunk.bind = "127.0.0.1:0".parse()?;
    caller_trunk.rtp_ports = 35_000..=39_999;
    let caller = Arc::new(SipGateway::start(caller_trunk, legs).await?);

    let rss0 = rss_kib(None).unwrap_or(0);
    let mut run = BareRun {
        calls,
        ..BareRun::default()
    };
    let t_setup = Instant::now();
    let mut controls: Vec<LegControl> = Vec::new();
    for chunk in (0..calls).collect::<Vec<_>>().chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|i| {
                let caller = caller.clone();
                let number = format!("+8613{:09}", i);
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let mut leg = caller.call(&number).await?;
                    leg.wait_connected(Duration::from_secs(30))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok::<_, anyhow::Error>((leg, t0.elapsed()))
                })
            })
            .collect();
        for h in handles {
            match h.await {
                Ok(Ok((leg, took))) => {
                    run.setup_ms.push(took.as_secs_f64() * 1000.0);
                    controls.push(drain(leg));
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "SIP call setup failed");
                    run.failed += 1;
                }
                Err(_) => run.failed += 1,
            }
        }
    }
    run.all_set_up_s = t_setup.elapsed().as_secs_f64();
    run.setup_ms.sort_by(f64::total_cmp);

    measure(&mut run, &controls, seconds, rss0).await;
    for c in &controls {
        c.hang_up();
    }
    for c in &controls {
        c.ended().await;
    }
    caller.shutdown();
    callee.shutdown();
    answered.abort();
    Ok(run)
}
