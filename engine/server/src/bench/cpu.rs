//! Where a bench's CPU goes, read from Linux's /proc: this process's threads
//! grouped by name, its reaped children, and the embedded PostgreSQL.
//!
//! * threads: `/proc/self/task/<tid>/stat` (utime + stime), grouped by the
//!   thread's name: `phone` (the simulated phones' own runtime, see
//!   [`PhoneRuntime`]), `asr-*` (whisper workers; whisper's helper threads
//!   inherit the name), `cpu-sampler` (this sampler). A thread is read every
//!   [`PERIOD`] and keeps its last reading when it exits, so a thread that
//!   exits loses at most its last period. Everything else in the process is
//!   the engine: the whole process's utime + stime (exact, exited threads
//!   included) less the groups above.
//! * children: the process's cutime + cstime, which counts a child only once
//!   it has been reaped. The engine's children during a check-in are
//!   espeak-ng renderings of prompts (waited for as they finish).
//! * database: the embedded PostgreSQL, the processes called `postgres`
//!   descended from this one (postmaster and backends, each with its own
//!   reaped children). `None` with an external server (DATABASE_URL).
//!
//! Clock ticks are taken as 100 a second (USER_HZ on Linux).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use voicecare_speech::DecodeCpu;

/// How often the threads are read.
pub(crate) const PERIOD: Duration = Duration::from_millis(250);
const TICKS_PER_S: f64 = 100.0;
/// The name of the phones' runtime threads.
pub(crate) const PHONE_THREAD: &str = "phone";
const SAMPLER_THREAD: &str = "cpu-sampler";

/// What one `/proc/<pid>/stat` (or task stat) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub comm: String,
    pub ppid: u32,
    /// utime + stime, ticks.
    pub own: u64,
    /// cutime + cstime (reaped children), ticks.
    pub children: u64,
}

/// Parse a stat line: `pid (comm) state ppid … utime stime cutime cstime …`.
/// The name may hold spaces and parentheses, so it ends at the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        comm,
        ppid: u32::try_from(n(1)?).ok()?,
        own: n(11)? + n(12)?,
        children: n(13)? + n(14)?,
    })
}

/// Which share a thread's CPU is counted in, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Group {
    Phones,
    Asr,
    Sampler,
    Engine,
}

pub(crate) fn group(comm: &str) -> Group {
    if comm == PHONE_THREAD {
        Group::Phones
    } else if comm.starts_with("asr-") {
        Group::Asr
    } else if comm == SAMPLER_THREAD {
        Group::Sampler
    } else {
        Group::Engine
    }
}

/// The ticks of the `postgres` processes descended from `root`, among
/// `procs` (pid, stat); `None` when there are none.
pub(crate) fn postgres_ticks(procs: &[(u32, ProcStat)], root: u32) -> Option<u64> {
    let mut kids: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (_, s)) in procs.iter().enumerate() {
        kids.entry(s.ppid).or_default().push(i);
    }
    let mut stack = vec![root];
    let mut sum = None;
    while let Some(pid) = stack.pop() {
        for &i in kids.get(&pid).into_iter().flatten() {
            let (child, s) = &procs[i];
            if s.comm == "postgres" {
                *sum.get_or_insert(0) += s.own + s.children;
            }
            stack.push(*child);
        }
    }
    sum
}

fn database_ticks() -> Option<u64> {
    let procs: Vec<(u32, ProcStat)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let s = parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
            Some((pid, s))
        })
        .collect();
    postgres_ticks(&procs, std::process::id())
}

/// CPU seconds this process has spent so far, by share.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    /// Every thread of the process, exited ones included.
    pub process: f64,
    pub phones: f64,
    pub asr: f64,
    pub sampler: f64,
    /// Reaped children: espeak-ng.
    pub children: f64,
    pub database: Option<f64>,
    pub decode: DecodeCpu,
    /// Every call's VAD and endpointing, timed per frame (in the engine's
    /// threads).
    pub endpointing: f64,
    /// The engine's encoding and decoding, timed per frame (the phones'
    /// are left out).
    pub codecs: f64,
}

impl Totals {
    /// What was spent from `self` to `later`.
    pub fn until(&self, later: &Totals) -> Totals {
        let d = |a: f64, b: f64| (b - a).max(0.0);
        let (a, b) = (&self.decode, &later.decode);
        Totals {
            process: d(self.process, later.process),
            phones: d(self.phones, later.phones),
            asr: d(self.asr, later.asr),
            sampler: d(self.sampler, later.sampler),
            children: d(self.children, later.children),
            endpointing: d(self.endpointing, later.endpointing),
            codecs: d(self.codecs, later.codecs),
            database: match (self.database, later.database) {
                (Some(x), Some(y)) => Some(d(x, y)),
                _ => None,
            },
            decode: DecodeCpu {
                final_s: d(a.final_s, b.final_s),
                final_n: b.final_n.saturating_sub(a.final_n),
                speculative_s: d(a.speculative_s, b.speculative_s),
                speculative_n: b.speculative_n.saturating_sub(a.speculative_n),
                partial_s: d(a.partial_s, b.partial_s),
                partial_n: b.partial_n.saturating_sub(a.partial_n),
            },
        }
    }

    /// The engine's own threads: the process less the phones and the sampler.
    pub fn engine_threads(&self) -> f64 {
        (self.process - self.phones - self.sampler).max(0.0)
    }
}

/// The last reading of every thread seen: tid → (share, ticks).
type Seen = HashMap<u32, (Group, u64)>;

/// Reads this process's threads every [`PERIOD`] on its own thread.
pub(crate) struct Sampler {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start() -> anyhow::Result<Sampler> {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        read_threads(&seen);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name(SAMPLER_THREAD.into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(PERIOD);
                        read_threads(&seen);
                    }
                })?
        };
        Ok(Sampler {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything spent so far, read now.
    pub fn totals(&self) -> Totals {
        read_threads(&self.seen);
        let mut t = Totals {
            database: database_ticks().map(|x| x as f64 / TICKS_PER_S),
            decode: voicecare_speech::decode_cpu(),
            endpointing: crate::runner::hearing::endpointing_cpu_s(),
            codecs: voicecare_telephony::codec::codec_cpu_s(),
            ..Totals::default()
        };
        if let Some(s) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            t.process = s.own as f64 / TICKS_PER_S;
            t.children = s.children as f64 / TICKS_PER_S;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (g, ticks) in seen.values() {
            let s = *ticks as f64 / TICKS_PER_S;
            match g {
                Group::Phones => t.phones += s,
                Group::Asr => t.asr += s,
                Group::Sampler => t.sampler += s,
                Group::Engine => {}
            }
        }
        t
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_threads(seen: &Mutex<Seen>) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let now: Vec<(u32, Group, u64)> = dir
        .flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let s = parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
            Some((tid, group(&s.comm), s.own))
        })
        .collect();
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for (tid, g, ticks) in now {
        seen.insert(tid, (g, ticks));
    }
}

/// The simulated phones' own runtime, on threads named [`PHONE_THREAD`], so
/// their work never runs on the engine's threads and is counted apart.
pub(crate) struct PhoneRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl PhoneRuntime {
    pub fn start() -> anyhow::Result<PhoneRuntime> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(PHONE_THREAD)
            .on_thread_start(voicecare_telephony::codec::leave_codec_cpu_uncounted)
            .enable_all()
            .build()?;
        Ok(PhoneRuntime { rt: Some(rt) })
    }

    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.rt {
            Some(rt) => rt.spawn(f),
            // Only after drop; never reached.
            None => tokio::spawn(f),
        }
    }
}

impl Drop for PhoneRuntime {
    fn drop(&mut self) {
        // Dropped from async code, so it may not block on its tasks.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREAD: &str = "4242 (asr-0) S 4100 4100 4100 0 -1 4194368 1234 0 0 0 \
                          731 42 0 0 30 10 12 0 5000 900000000 20000 18446744073709551615 \
                          1 1 0 0 0 0 0 4096 0 0 0 0 -1 1 0 0 0 0 0";

    #[test]
    fn a_stat_line_gives_name_parent_and_ticks() {
        let s = parse_stat(THREAD).unwrap();
        assert_eq!(s.comm, "asr-0");
        assert_eq!(s.ppid, 4100);
        assert_eq!(s.own, 773);
        assert_eq!(s.children, 0);
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_ends_at_the_last_one() {
        let s = parse_stat("77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 5 6 7 8 20 0 1 0").unwrap();
        assert_eq!(s.comm, "a (b) c");
        assert_eq!(s.ppid, 1);
        assert_eq!((s.own, s.children), (11, 15));
        assert!(parse_stat("77 (short) R 1 2").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn threads_are_grouped_by_name() {
        assert_eq!(group("phone"), Group::Phones);
        assert_eq!(group("asr-11"), Group::Asr);
        assert_eq!(group("cpu-sampler"), Group::Sampler);
        assert_eq!(group("tokio-runtime-w"), Group::Engine);
        assert_eq!(group("voicecare"), Group::Engine);
    }

    fn proc(comm: &str, ppid: u32, own: u64, children: u64) -> ProcStat {
        ProcStat {
            comm: comm.into(),
            ppid,
            own,
            children,
        }
    }

    #[test]
    fn the_database_is_the_postgres_processes_below_this_one() {
        let procs = vec![
            (10, proc("voicecare", 1, 500, 3)),
            (11, proc("sh", 10, 1, 0)),
            (12, proc("postgres", 11, 40, 7)),
            (13, proc("postgres", 12, 20, 0)),
            (14, proc("postgres", 12, 5, 0)),
            // Another cluster on the machine is not ours.
            (20, proc("postgres", 1, 900, 100)),
            (21, proc("postgres", 20, 90, 0)),
        ];
        assert_eq!(postgres_ticks(&procs, 10), Some(72));
        assert_eq!(postgres_ticks(&procs, 13), None);
    }

    #[test]
    fn spent_is_the_difference_and_the_engine_excludes_phones() {
        let a = Totals {
            process: 10.0,
            phones: 2.0,
            asr: 3.0,
            sampler: 0.1,
            children: 1.0,
            database: Some(4.0),
            ..Totals::default()
        };
        let b = Totals {
            process: 30.0,
            phones: 8.0,
            asr: 9.0,
            sampler: 0.2,
            children: 1.5,
            database: Some(5.0),
            ..Totals::default()
        };
        let d = a.until(&b);
        assert!((d.engine_threads() - 13.9).abs() < 1e-9);
        assert!((d.asr - 6.0).abs() < 1e-9);
        assert!((d.children - 0.5).abs() < 1e-9);
        assert_eq!(d.database, Some(1.0));
        let none = Totals {
            database: None,
            ..b
        };
        assert_eq!(a.until(&none).database, None);
    }
}
