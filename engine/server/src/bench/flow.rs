//! `voicecare bench flow`: how the time to parse and check a flow grows with
//! its size, beside parsing the same text as plain TOML (the peer: what any
//! reader of the file must pay) in the same run.
//!
//! The flow is one chain of steps cycling through `say`, `ask`, `assess`,
//! `set` and `branch`, with variables in the prompts, ending in a hangup: the
//! shape that made checking quadratic. Doubling the steps should about double
//! both times.

use std::time::{Duration, Instant};

use clap::Args;
use voicecare_core::flow::parse_flow;
use voicecare_core::flow::synthetic::chain;

#[derive(Debug, Args)]
pub struct FlowBenchArgs {
    /// Flow sizes in steps, e.g. `--steps 10000,20000,40000`.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 20_000, 40_000, 80_000])]
    pub steps: Vec<usize>,
    /// Runs per size; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn run(args: FlowBenchArgs) -> anyhow::Result<()> {
    println!(
        "flow check: a chain of N steps, best of {} rounds",
        args.rounds
    );
    println!(
        "{:>8}  {:>10}  {:>12}  {:>7}  {:>14}",
        "steps", "check ms", "toml-only ms", "ratio", "x per doubling"
    );
    let mut last: Option<(usize, Duration)> = None;
    for &n in &args.steps {
        let src = chain(n.max(2));
        let (mut check, mut peer) = (Duration::MAX, Duration::MAX);
        for _ in 0..args.rounds.max(1) {
            let t = Instant::now();
            let flow = parse_flow("bench.toml", &src).map_err(|e| anyhow::anyhow!("{e}"))?;
            check = check.min(t.elapsed());
            std::hint::black_box(flow);
            let t = Instant::now();
            let table: toml::Table = toml::from_str(&src)?;
            peer = peer.min(t.elapsed());
            std::hint::black_box(table);
        }
        // Growth normalised to a doubling of the size: 2.0 is linear, 4.0 quadratic.
        let growth = last.map_or(String::from("-"), |(m, d)| {
            let per =
                (check.as_secs_f64() / d.as_secs_f64()).powf(1.0 / (n as f64 / m as f64).log2());
            format!("{per:.2}")
        });
        println!(
            "{n:>8}  {:>10.1}  {:>12.1}  {:>7.2}  {growth:>14}",
            check.as_secs_f64() * 1e3,
            peer.as_secs_f64() * 1e3,
            check.as_secs_f64() / peer.as_secs_f64().max(1e-9)
        );
        last = Some((n, check));
    }
    Ok(())
}
