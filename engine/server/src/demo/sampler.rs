//! CPU and memory of this process, sampled every second from /proc.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the demo started.
    pub t: f64,
    /// CPU used over the last interval, in percent of one core.
    pub cpu_pct: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    pub fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        std::thread::Builder::new()
            .name("demo-sampler".into())
            .spawn(move || {
                let start = Instant::now();
                let mut prev = (start, cpu_ticks());
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = Instant::now();
                    let ticks = cpu_ticks();
                    let (Some(a), Some(b)) = (prev.1, ticks) else {
                        prev = (now, ticks);
                        continue;
                    };
                    let wall = now.duration_since(prev.0).as_secs_f64();
                    // Linux reports CPU time in USER_HZ, 100 per second on every
                    // architecture the kernel exposes to user space.
                    let cpu_pct = (b.saturating_sub(a)) as f64 / 100.0 / wall * 100.0;
                    let s = Sample {
                        t: now.duration_since(start).as_secs_f64(),
                        cpu_pct,
                        rss_mib: rss_kib().unwrap_or(0) as f64 / 1024.0,
                    };
                    out.lock().unwrap().push(s);
                    prev = (now, ticks);
                }
            })
            .expect("start the sampler thread");
        Self { samples }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
