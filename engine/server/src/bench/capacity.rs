//! `voicecare bench capacity`: how many concurrent check-in calls one node
//! sustains with packet timing clean and turns answered in time.
//!
//! The engine is `voicecare serve` in this process (as in `voicecare demo`);
//! each step enrols N simulated elders whose windows open together, so the
//! dialer rings N simulated phones on loopback at once: real WebRTC devices,
//! or with `--via sip` telephones at the elders' numbers behind a loopback
//! SIP trunk (G.711), or with `--via both` each in turn at every step. Every
//! phone answers the whole daily check-in with a fine reply and plain
//! follow-ups, and times, from its side of the line, whatever the transport:
//!
//! * packet timing: the gap between consecutive 20 ms frames it receives;
//!   jitter is |gap − 20 ms|. The peer is an idle pair of legs in the same
//!   process sending silence through the same step, so the ratio separates
//!   what the engine's load does to media from what the machine does anyway.
//! * turn latency: from the end of its speech to the first audio of the
//!   engine's reply, minus the flow's end-of-utterance silence (the
//!   endpointer must hear that much quiet before it may take the turn).
//!
//! The phones run on their own runtime, on threads of their own, so the
//! engine's CPU is measured apart from theirs (see [`super::cpu`]): per step,
//! core-seconds per check-in for the engine, by stage (whisper final,
//! speculative and partial readings, espeak-ng prompts, the embedded
//! database, and the rest: media, codecs, VAD and endpointing, signalling),
//! and the phones' own.
//!
//! A step passes when p99 jitter < 5 ms and p95 turn latency <= 800 ms. The
//! largest passing step, over the mean call length, gives calls per hour per
//! core. With `--via both` the two transports' results are also given as
//! ratios, SIP over WebRTC: check-ins per core-hour and CPU per call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::Args;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::oneshot;
use voicecare_sip::IncomingCall;
use voicecare_telephony::audio::rms;
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceClient, DeviceToken, RingingCall};
use voicecare_telephony::{CallLeg, LegEvent};

use crate::cmd::demo::Via;
use crate::config::DbArgs;
use crate::demo::cohort::{self, Behaviour, Clip, Member, Particulars};
use crate::demo::sip_phones::PhoneBank;

use super::cpu::{PhoneRuntime, Sampler, Totals};

#[derive(Debug, Clone, Args)]
pub struct CapacityBenchArgs {
    /// Concurrent calls to try, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,6,8,12,16")]
    pub steps: Vec<u32>,
    /// Keep stepping after a step misses a target.
    #[arg(long)]
    pub keep_going: bool,
    /// Whisper workers on the node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub asr_workers: u32,
    /// Target: p99 packet jitter below this many ms.
    #[arg(long, default_value_t = 5.0)]
    pub jitter_p99_ms: f64,
    /// Target: p95 turn latency (endpointing silence excluded) at most this many ms.
    #[arg(long, default_value_t = 800.0)]
    pub turn_p95_ms: f64,
    /// How the elders are reached: their WebRTC devices, their phone numbers
    /// through a loopback SIP trunk (G.711), or both, in turn at every step.
    #[arg(long, value_enum, default_value_t = Transports::Webrtc)]
    pub via: Transports,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "ivr-flows")]
    pub flows_dir: PathBuf,
    /// Clips and their manifest (`manifest.json`).
    #[arg(long, default_value = "audio-fixtures")]
    pub fixtures: PathBuf,
}

/// The transports a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transports {
    Webrtc,
    Sip,
    /// WebRTC then SIP at every step, compared.
    Both,
}

impl Transports {
    fn each(self) -> &'static [Via] {
        match self {
            Transports::Webrtc => &[Via::Webrtc],
            Transports::Sip => &[Via::Sip],
            Transports::Both => &[Via::Webrtc, Via::Sip],
        }
    }
}

/// The daily check-in's end-of-utterance silence (ivr-flows/daily_checkin.toml).
pub(crate) const FLOW: &str = "daily_checkin";

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub calls: u32,
    /// Most calls answered at the same moment.
    pub concurrent: u32,
    pub completed: u32,
    pub turns: usize,
    pub turn_p50_ms: f64,
    pub turn_p95_ms: f64,
    pub jitter_p50_ms: f64,
    pub jitter_p99_ms: f64,
    /// The idle legs' p99 jitter through the same step, and the ratio.
    pub idle_jitter_p99_ms: f64,
    pub jitter_ratio: f64,
    /// Mean answered call length, seconds.
    pub call_secs: f64,
    /// The whole process (engine and phones), % of one core over the step.
    pub cpu_pct: f64,
    /// The engine alone (its threads, TTS children and embedded database),
    /// % of one core over the step.
    pub engine_cpu_pct: f64,
    /// Core-seconds per completed check-in, by stage.
    pub cpu_per_call: CpuPerCall,
    pub passed: bool,
}

/// Core-seconds per completed check-in; NaN (null) when none completed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerCall {
    /// The engine: the sum of the stages below (phones excluded).
    pub engine_s: f64,
    /// whisper worker threads, all kinds of reading.
    pub asr_s: f64,
    /// Of which, timed per decode: the turn's final reading, the
    /// speculative reading of the words before a pause, and partial
    /// readings while the elder still speaks.
    pub asr_final_s: f64,
    pub asr_speculative_s: f64,
    pub asr_partial_s: f64,
    /// espeak-ng rendering prompts (cached prompts cost nothing here).
    pub tts_s: f64,
    /// The embedded PostgreSQL; null with an external server (DATABASE_URL).
    pub database_s: Option<f64>,
    /// VAD and endpointing of the elder's audio, timed per frame.
    pub endpointing_s: f64,
    /// The engine's encoding and decoding of frames (Opus, G.711 and its
    /// resampling), timed per frame.
    pub codecs_s: f64,
    /// The engine's other threads: media transport (RTP, SRTP, jitter
    /// buffers), prompt playback, signalling, database client, the runtime.
    pub rest_s: f64,
    /// The simulated phones and the idle peer legs (not the engine).
    pub phones_s: f64,
}

impl CpuPerCall {
    fn of(spent: &Totals, calls: u32) -> CpuPerCall {
        let per = |x: f64| {
            if calls > 0 {
                x / f64::from(calls)
            } else {
                f64::NAN
            }
        };
        let rest = (spent.engine_threads() - spent.asr - spent.endpointing - spent.codecs).max(0.0);
        let db = spent.database.unwrap_or(0.0);
        CpuPerCall {
            engine_s: per(spent.engine_threads() + spent.children + db),
            asr_s: per(spent.asr),
            asr_final_s: per(spent.decode.final_s),
            asr_speculative_s: per(spent.decode.speculative_s),
            asr_partial_s: per(spent.decode.partial_s),
            tts_s: per(spent.children),
            database_s: spent.database.map(per),
            endpointing_s: per(spent.endpointing),
            codecs_s: per(spent.codecs),
            rest_s: per(rest),
            phones_s: per(spent.phones),
        }
    }

    /// The mean over steps, weighted by their completed check-ins.
    fn mean(steps: &[Step]) -> CpuPerCall {
        let done: u32 = steps.iter().map(|s| s.completed).sum();
        let sum = |f: fn(&CpuPerCall) -> f64| {
            let total: f64 = steps
                .iter()
                .filter(|s| s.completed > 0)
                .map(|s| f(&s.cpu_per_call) * f64::from(s.completed))
                .sum();
            if done > 0 {
                total / f64::from(done)
            } else {
                f64::NAN
            }
        };
        let db = steps
            .iter()
            .filter(|s| s.completed > 0)
            .all(|s| s.cpu_per_call.database_s.is_some());
        CpuPerCall {
            engine_s: sum(|c| c.engine_s),
            asr_s: sum(|c| c.asr_s),
            asr_final_s: sum(|c| c.asr_final_s),
            asr_speculative_s: sum(|c| c.asr_speculative_s),
            asr_partial_s: sum(|c| c.asr_partial_s),
            tts_s: sum(|c| c.tts_s),
            database_s: db.then(|| sum(|c| c.database_s.unwrap_or(0.0))),
            endpointing_s: sum(|c| c.endpointing_s),
            codecs_s: sum(|c| c.codecs_s),
            rest_s: sum(|c| c.rest_s),
            phones_s: sum(|c| c.phones_s),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Capacity {
    /// How the elders were reached: `webrtc` or `sip`.
    pub transport: Via,
    pub cores: usize,
    pub asr_workers: u32,
    pub target_jitter_p99_ms: f64,
    pub target_turn_p95_ms: f64,
    pub steps: Vec<Step>,
    /// The largest step that passed, and what it means per hour.
    pub sustained_calls: u32,
    pub calls_per_hour: f64,
    pub calls_per_hour_per_core: f64,
    /// Core-seconds per check-in over every step, weighted by check-ins.
    pub cpu_per_call: CpuPerCall,
}

/// `--via both`: each transport's result, and SIP's over WebRTC's.
#[derive(Debug, Serialize)]
pub struct Compared {
    pub transport: &'static str,
    pub runs: Vec<Capacity>,
    pub sip_over_webrtc: Ratios,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Check-ins per core-hour at each one's largest passing step; NaN
    /// (null) when WebRTC passed none.
    pub calls_per_hour_per_core: f64,
    /// CPU per call over the steps both ran (their CPU summed, then divided).
    pub cpu_pct_per_call: f64,
    pub steps: Vec<StepRatio>,
}

#[derive(Debug, Serialize)]
pub struct StepRatio {
    pub calls: u32,
    pub webrtc_cpu_pct_per_call: f64,
    pub sip_cpu_pct_per_call: f64,
    pub cpu_ratio: f64,
}

/// What one simulated phone measured on one call.
#[derive(Default)]
struct CallTiming {
    answered: Option<Instant>,
    ended: Option<Instant>,
    gaps_ms: Vec<f64>,
    turns_ms: Vec<f64>,
}

/// What every step needs: the database, the cohort's community and clip,
/// where the phones register or stand.
pub(crate) struct Bench {
    pool: PgPool,
    community: i64,
    tag: String,
    fine: Clip,
    /// The fine reply, then the follow-ups' answers, 16 kHz.
    replies: Vec<Vec<i16>>,
    eou_ms: f64,
    /// The engine's device signalling.
    ws: String,
    /// The telephones behind the loopback trunk, when SIP is measured.
    sip: Option<SipPhones>,
    /// Where the CPU goes.
    cpu: Sampler,
    /// The phones' own runtime; last, so it stops after the phones.
    phones: PhoneRuntime,
}

type PhoneTask = tokio::task::JoinHandle<anyhow::Result<CallTiming>>;

pub async fn run(mut db_args: DbArgs, args: CapacityBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.steps.is_empty() && args.steps.iter().all(|&n| n > 0),
        "--steps: give one or more positive call counts, e.g. 1,2,4,8"
    );
    let flow_path = args.flows_dir.join(format!("{FLOW}.toml"));
    let flow_text = std::fs::read_to_string(&flow_path)
        .with_context(|| format!("cannot read {}", flow_path.display()))?;
    let eou_ms = end_of_utterance_ms(&flow_text)
        .with_context(|| format!("{}: no end_of_utterance_ms", flow_path.display()))?;

    db_args.use_fresh_subdir("bench-capacity")?;
    let db = crate::db::open(&db_args, 10).await?;
    let pool = db.pool.clone();

    let phones = PhoneRuntime::start()?;
    let sip = match args.via {
        Transports::Webrtc => None,
        Transports::Sip | Transports::Both => Some(phones.spawn(SipPhones::start()).await??),
    };
    let max = *args.steps.iter().max().unwrap_or(&1);
    let engine = crate::demo::start_engine(crate::demo::EngineOpts {
        db_url: db.url.clone(),
        data_dir: db_args.data_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        flows_dir: args.flows_dir.clone(),
        node_id: "capacity".into(),
        max_calls: max as i64,
        asr_workers: args.asr_workers,
        extra: sip
            .as_ref()
            .map(|s| s.bank.engine_args())
            .unwrap_or_default(),
    })
    .await?;
    let bench = Bench::prepare(
        pool.clone(),
        &db_args.data_dir,
        &args.fixtures,
        eou_ms,
        engine.listen,
        phones,
        sip,
    )
    .await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let transports = args.via.each();
    let label = transports.len() > 1;
    let mut runs: Vec<Vec<Step>> = vec![Vec::new(); transports.len()];
    let mut stopped = vec![false; transports.len()];
    let mut printed = false;
    for (si, &n) in args.steps.iter().enumerate() {
        for (ti, &via) in transports.iter().enumerate() {
            if stopped[ti] {
                continue;
            }
            let step = bench.step(si, n, via, &args).await?;
            if !args.json {
                if !printed {
                    print_header(label);
                    printed = true;
                }
                print_row(label.then_some(via), &step);
            }
            stopped[ti] = !step.passed && !args.keep_going;
            runs[ti].push(step);
        }
        if stopped.iter().all(|&s| s) {
            break;
        }
    }

    let results: Vec<Capacity> = transports
        .iter()
        .zip(runs)
        .map(|(&via, steps)| summary(via, cores, &args, steps))
        .collect();
    if !args.json {
        println!();
        for r in &results {
            println!(
                "sustained ({}): {} concurrent calls on {} cores ({} whisper workers): {:.0} calls/hour, {:.0} calls/hour/core",
                r.transport.as_str(),
                r.sustained_calls,
                cores,
                args.asr_workers,
                r.calls_per_hour,
                r.calls_per_hour_per_core
            );
            println!("  over all steps, {}", cpu_line(&r.cpu_per_call));
        }
    }
    match <[Capacity; 2]>::try_from(results) {
        Ok([webrtc, sip]) => {
            let ratios = compare(&webrtc, &sip);
            if args.json {
                let out = Compared {
                    transport: "both",
                    runs: vec![webrtc, sip],
                    sip_over_webrtc: ratios,
                };
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_ratios(&ratios);
            }
        }
        Err(results) => {
            if args.json {
                for r in &results {
                    println!("{}", serde_json::to_string_pretty(r)?);
                }
            }
        }
    }
    engine.server.abort();
    drop(bench);
    drop(pool);
    db.close().await?;
    Ok(())
}

impl Bench {
    /// The clips, the cohort's community and where phones register, for an
    /// engine already listening at `listen`.
    pub(crate) async fn prepare(
        pool: PgPool,
        data_dir: &std::path::Path,
        fixtures: &std::path::Path,
        eou_ms: f64,
        listen: std::net::SocketAddr,
        phones: PhoneRuntime,
        sip: Option<SipPhones>,
    ) -> anyhow::Result<Bench> {
        let wav_dir = data_dir.join("demo-clips");
        std::fs::create_dir_all(&wav_dir)?;
        let clips = cohort::clips(fixtures, &wav_dir)?;
        let fine = clips
            .iter()
            .find(|c| c.level == "ok" && c.lang == "en")
            .context("no fine English clip in the fixtures")?
            .clone();
        let answers = cohort::answers(fixtures, &wav_dir)?;
        let mut replies = vec![read_wav(&fine.wav)?];
        for a in &answers.en {
            replies.push(read_wav(a)?);
        }
        let tag = Utc::now().format("%Y%m%d%H%M%S").to_string();
        let unit = crate::demo::community(&pool, &format!("capacity {tag}")).await?;
        Ok(Bench {
            pool,
            community: unit.1,
            tag,
            fine,
            replies,
            eou_ms,
            ws: format!("ws://{listen}/v1/devices/ws"),
            sip,
            cpu: Sampler::start()?,
            phones,
        })
    }

    /// One step: enrol `n` elders reached `via` a transport, ready their
    /// phones, open their windows together and measure the calls.
    pub(crate) async fn step(
        &self,
        si: usize,
        n: u32,
        via: Via,
        args: &CapacityBenchArgs,
    ) -> anyhow::Result<Step> {
        let mut ids = Vec::new();
        let mut phones = Vec::new();
        for i in 0..n {
            let (id, phone) = match via {
                Via::Webrtc => self.webrtc_phone(si, i).await?,
                Via::Sip => self.sip_phone(si, i).await?,
            };
            ids.push(id);
            phones.push(phone);
        }
        let cpu0 = self.cpu.totals();
        let t0 = Instant::now();
        for id in &ids {
            cohort::schedule(&self.pool, *id, "Europe/London", 2).await?;
        }
        let idle = self.phones.spawn(idle_legs());
        let mut timings = Vec::new();
        for p in phones {
            match tokio::time::timeout(Duration::from_secs(300), p).await {
                Ok(Ok(Ok(t))) => timings.push(t),
                Ok(Ok(Err(e))) => eprintln!("a simulated phone failed: {e:#}"),
                Ok(Err(e)) => eprintln!("a simulated phone panicked: {e}"),
                Err(_) => eprintln!("a call did not finish within 300 s"),
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let spent = cpu0.until(&self.cpu.totals());
        idle.abort();
        let idle_gaps = match idle.await {
            Ok(g) => g,
            Err(_) => IDLE
                .lock()
                .map(|mut g| std::mem::take(&mut *g))
                .unwrap_or_default(),
        };
        cohort::unschedule(&self.pool, &ids).await?;
        Ok(score(n, &timings, &idle_gaps, &spent, wall, args))
    }

    fn member(&self, device: String, particulars: Option<Particulars>, i: u32) -> Member {
        Member {
            name: format!("Capacity Elder {}", i + 1),
            particulars,
            token: format!("token-{device}-{}", rand::random::<u64>()),
            device,
            lang: "en".into(),
            time_zone: "Europe/London".into(),
            behaviour: Behaviour::Speaks(self.fine.clone()),
        }
    }

    /// An elder with a WebRTC device, and the device registered.
    async fn webrtc_phone(&self, si: usize, i: u32) -> anyhow::Result<(i64, PhoneTask)> {
        let m = self.member(format!("cap-{}-{si}-{i:03}", self.tag), None, i);
        let id = cohort::enrol(&self.pool, self.community, &m).await?;
        let mut cfg = ClientConfig::new(self.ws.clone(), &m.device, DeviceToken::new(&m.token));
        cfg.leg = LegConfig::loopback();
        // Registered from the phones' runtime, so its connection lives there.
        let (client, rings) = self
            .phones
            .spawn(DeviceClient::connect(cfg))
            .await?
            .with_context(|| format!("simulated phone {} did not register", m.device))?;
        let task = self.phones.spawn(webrtc_call(
            client,
            rings,
            self.replies.clone(),
            self.eou_ms,
        ));
        Ok((id, task))
    }

    /// An elder with a phone number and no device, and the telephone at
    /// that number behind the loopback trunk.
    async fn sip_phone(&self, si: usize, i: u32) -> anyhow::Result<(i64, PhoneTask)> {
        let sip = self.sip.as_ref().context("no SIP phones started")?;
        let number = phone_number(&self.tag, si, i);
        let particulars = Particulars {
            phone: number.clone(),
            birth_date: NaiveDate::from_ymd_opt(1940, 1, 1).unwrap_or_default(),
            address: format!("Flat {}, Capacity Lane", i + 1),
        };
        let device = format!("cap-{}-{si}-sip-{i:03}", self.tag);
        let m = self.member(device, Some(particulars), i);
        let id = cohort::enrol(&self.pool, self.community, &m).await?;
        // Reached at the number, as an elder without a device is.
        voicecare_store::dialer::phone_only(&self.pool, id).await?;
        let call = sip.expect(number);
        let task = self
            .phones
            .spawn(sip_call(call, self.replies.clone(), self.eou_ms));
        Ok((id, task))
    }
}

/// A number unique to this run's step and elder: +44 77, the run's time of
/// day, the step and the elder (15 digits, E.164's longest).
fn phone_number(tag: &str, step: usize, elder: u32) -> String {
    let time_of_day = &tag[tag.len().saturating_sub(6)..];
    format!("+4477{time_of_day}{:02}{:03}", step % 100, elder % 1000)
}

/// The telephones behind the loopback trunk: each waits for the engine to
/// dial its number; calls to any other number are refused.
pub(crate) struct SipPhones {
    bank: PhoneBank,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<IncomingCall>>>>,
}

impl SipPhones {
    async fn start() -> anyhow::Result<SipPhones> {
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<IncomingCall>>>> = Arc::default();
        let lines = waiting.clone();
        let bank = PhoneBank::serve(move |call: IncomingCall| {
            let phone = lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(call.called());
            async move {
                match phone {
                    // A phone that gave up refuses by dropping the call.
                    Some(phone) => drop(phone.send(call)),
                    None => call.reject(404, "no such phone"),
                }
            }
        })
        .await?;
        Ok(SipPhones { bank, waiting })
    }

    /// The next call to `number`.
    fn expect(&self, number: String) -> oneshot::Receiver<IncomingCall> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(number, tx);
        rx
    }
}

fn summary(via: Via, cores: usize, args: &CapacityBenchArgs, steps: Vec<Step>) -> Capacity {
    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by_key(|s| s.calls)
        .cloned();
    let (sustained, per_hour) = match &best {
        Some(s) if s.call_secs > 0.0 => (s.calls, s.calls as f64 * 3600.0 / s.call_secs),
        _ => (0, 0.0),
    };
    Capacity {
        transport: via,
        cores,
        asr_workers: args.asr_workers,
        target_jitter_p99_ms: args.jitter_p99_ms,
        target_turn_p95_ms: args.turn_p95_ms,
        sustained_calls: sustained,
        calls_per_hour: per_hour,
        calls_per_hour_per_core: per_hour / cores as f64,
        cpu_per_call: CpuPerCall::mean(&steps),
        steps,
    }
}

/// SIP's figures over WebRTC's, at the steps both ran.
fn compare(webrtc: &Capacity, sip: &Capacity) -> Ratios {
    let per_call = |s: &Step| s.cpu_pct / f64::from(s.calls.max(1));
    let steps: Vec<StepRatio> = webrtc
        .steps
        .iter()
        .filter_map(|w| {
            let s = sip.steps.iter().find(|s| s.calls == w.calls)?;
            Some(StepRatio {
                calls: w.calls,
                webrtc_cpu_pct_per_call: per_call(w),
                sip_cpu_pct_per_call: per_call(s),
                cpu_ratio: ratio(per_call(s), per_call(w)),
            })
        })
        .collect();
    let sum = |f: fn(&StepRatio) -> f64| steps.iter().map(f).sum::<f64>();
    Ratios {
        calls_per_hour_per_core: ratio(sip.calls_per_hour_per_core, webrtc.calls_per_hour_per_core),
        cpu_pct_per_call: ratio(
            sum(|r| r.sip_cpu_pct_per_call),
            sum(|r| r.webrtc_cpu_pct_per_call),
        ),
        steps,
    }
}

/// a / b, NaN when b is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn print_ratios(r: &Ratios) {
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} calls {:.1}% vs {:.1}% = {:.2}x",
                s.calls, s.sip_cpu_pct_per_call, s.webrtc_cpu_pct_per_call, s.cpu_ratio
            )
        })
        .collect();
    println!(
        "SIP / WebRTC: check-ins per core-hour {}; CPU % of a core per call {} ({})",
        times(r.calls_per_hour_per_core),
        times(r.cpu_pct_per_call),
        steps.join(", ")
    );
}

/// A ratio as `1.23x`, or `n/a` when there is none.
fn times(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "n/a".into()
    }
}

fn print_header(label: bool) {
    if label {
        print!("{:<7}", "via");
    }
    println!(
        "{:>5} {:>5} {:>5} {:>6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6}  result",
        "calls",
        "conc",
        "done",
        "turns",
        "turn p50",
        "turn p95",
        "jit p99",
        "idle p99",
        "jit ratio",
        "call s",
        "cpu %",
        "eng %"
    );
}

fn print_row(via: Option<Via>, s: &Step) {
    if let Some(v) = via {
        print!("{:<7}", v.as_str());
    }
    println!(
        "{:>5} {:>5} {:>5} {:>6} {:>8.0} {:>8.0} {:>9.2} {:>9.2} {:>9.2} {:>7.1} {:>7.0} {:>6.0}  {}",
        s.calls,
        s.concurrent,
        s.completed,
        s.turns,
        s.turn_p50_ms,
        s.turn_p95_ms,
        s.jitter_p99_ms,
        s.idle_jitter_p99_ms,
        s.jitter_ratio,
        s.call_secs,
        s.cpu_pct,
        s.engine_cpu_pct,
        if s.passed { "pass" } else { "MISS" }
    );
    println!("      {}", cpu_line(&s.cpu_per_call));
}

/// Core-seconds per check-in, by stage, on one line.
fn cpu_line(c: &CpuPerCall) -> String {
    let db = c
        .database_s
        .map_or_else(|| "n/a (external)".to_string(), |d| format!("{d:.2}"));
    format!(
        "core-s per check-in: engine {:.2} = asr {:.2} (final {:.2}, speculative {:.2}, partial {:.2}) + tts {:.2} + database {db} + vad {:.3} + codecs {:.2} + media/rest {:.2}; phones {:.2} apart",
        c.engine_s,
        c.asr_s,
        c.asr_final_s,
        c.asr_speculative_s,
        c.asr_partial_s,
        c.tts_s,
        c.endpointing_s,
        c.codecs_s,
        c.rest_s,
        c.phones_s
    )
}

fn score(
    n: u32,
    t: &[CallTiming],
    idle_gaps: &[f64],
    spent: &Totals,
    wall: f64,
    args: &CapacityBenchArgs,
) -> Step {
    let mut jit: Vec<f64> = t
        .iter()
        .flat_map(|c| c.gaps_ms.iter().map(|g| (g - 20.0).abs()))
        .collect();
    let mut idle: Vec<f64> = idle_gaps.iter().map(|g| (g - 20.0).abs()).collect();
    let mut turns: Vec<f64> = t.iter().flat_map(|c| c.turns_ms.iter().copied()).collect();
    // Most calls answered at once: sweep over answer (+1) and end (-1) instants.
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for c in t {
        if let (Some(a), Some(e)) = (c.answered, c.ended) {
            edges.push((a, 1));
            edges.push((e, -1));
        }
    }
    edges.sort();
    let (mut live, mut concurrent) = (0, 0);
    for (_, d) in edges {
        live += d;
        concurrent = concurrent.max(live);
    }
    let lens: Vec<f64> = t
        .iter()
        .filter_map(|c| Some(c.ended?.duration_since(c.answered?).as_secs_f64()))
        .collect();
    let completed = lens.len() as u32;
    let jitter_p99 = quantile(&mut jit, 0.99);
    let idle_p99 = quantile(&mut idle, 0.99);
    let turn_p95 = quantile(&mut turns, 0.95);
    Step {
        calls: n,
        concurrent: concurrent as u32,
        completed,
        turns: turns.len(),
        turn_p50_ms: quantile(&mut turns, 0.5),
        turn_p95_ms: turn_p95,
        jitter_p50_ms: quantile(&mut jit, 0.5),
        jitter_p99_ms: jitter_p99,
        idle_jitter_p99_ms: idle_p99,
        jitter_ratio: if idle_p99 > 0.0 {
            jitter_p99 / idle_p99
        } else {
            f64::NAN
        },
        call_secs: if lens.is_empty() {
            0.0
        } else {
            lens.iter().sum::<f64>() / lens.len() as f64
        },
        cpu_pct: pct(spent.process, wall),
        engine_cpu_pct: pct(
            spent.engine_threads() + spent.children + spent.database.unwrap_or(0.0),
            wall,
        ),
        cpu_per_call: CpuPerCall::of(spent, completed),
        // Every call must have happened, all at once, and been measured.
        passed: completed == n
            && concurrent as u32 == n
            && !turns.is_empty()
            && jitter_p99 < args.jitter_p99_ms
            && turn_p95 <= args.turn_p95_ms,
    }
}

/// Core-seconds over `wall` seconds, as % of one core.
fn pct(core_s: f64, wall: f64) -> f64 {
    if wall > 0.0 {
        core_s / wall * 100.0
    } else {
        0.0
    }
}

/// Nearest-rank quantile; NaN for no data.
pub(crate) fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn read_wav(path: &std::path::Path) -> anyhow::Result<Vec<i16>> {
    voicecare_telephony::sim::read_wav_16k(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The call-wide end-of-utterance silence of a flow file.
pub(crate) fn end_of_utterance_ms(flow: &str) -> Option<f64> {
    let f = voicecare_core::flow::parse_flow(FLOW, flow).ok()?;
    Some(f.settings.end_of_utterance_ms as f64)
}

/// Loud enough to be a prompt rather than comfort noise or silence.
const LOUD_RMS: f32 = 500.0;
const FRAME_MS: u64 = 20;
/// How long a phone rings before it is picked up.
const RING: Duration = Duration::from_millis(300);

/// A WebRTC device's check-in: wait for the ring, answer, then
/// [`on_the_line`].
async fn webrtc_call(
    // Held for the call: dropping it would unregister the device.
    _client: DeviceClient,
    mut rings: tokio::sync::mpsc::Receiver<RingingCall>,
    replies: Vec<Vec<i16>>,
    eou_ms: f64,
) -> anyhow::Result<CallTiming> {
    let ring = rings.recv().await.context("signalling connection lost")?;
    ring.ringing();
    tokio::time::sleep(RING).await;
    let mut leg = ring.answer().await?;
    leg.wait_connected(Duration::from_secs(10)).await?;
    on_the_line(leg, &replies, eou_ms).await
}

/// A telephone's check-in over the trunk: wait for the engine's INVITE,
/// ring, answer (G.711), then [`on_the_line`].
async fn sip_call(
    call: oneshot::Receiver<IncomingCall>,
    replies: Vec<Vec<i16>>,
    eou_ms: f64,
) -> anyhow::Result<CallTiming> {
    let call = call.await.context("the phone bank stopped")?;
    tokio::time::sleep(RING).await;
    let mut leg = call
        .answer()
        .await
        .map_err(|e| anyhow::anyhow!("the phone could not answer: {e}"))?;
    leg.wait_connected(Duration::from_secs(10)).await?;
    on_the_line(leg, &replies, eou_ms).await
}

/// One check-in from the phone's side of an answered line, whatever its
/// transport: wait for each question, say the next reply, and time the gaps
/// between frames and each turn.
async fn on_the_line(
    leg: CallLeg,
    replies: &[Vec<i16>],
    eou_ms: f64,
) -> anyhow::Result<CallTiming> {
    let answered = Instant::now();
    let control = leg.control();
    let (_, mut events) = leg.split();
    let heard = Arc::new(Mutex::new(Heard::default()));
    let (tick_tx, mut tick) = tokio::sync::watch::channel(0u64);
    let listener = {
        let heard = heard.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(ev) = events.recv().await {
                let now = Instant::now();
                match ev {
                    LegEvent::Audio(frame) => {
                        let loud = rms(&frame) > LOUD_RMS;
                        let mut h = heard.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(prev) = h.last {
                            h.gaps_ms
                                .push(now.duration_since(prev).as_secs_f64() * 1000.0);
                        }
                        h.last = Some(now);
                        h.frames.push((now, loud));
                        if loud {
                            h.quiet_ms = 0;
                        } else {
                            h.quiet_ms += FRAME_MS;
                        }
                        n += 1;
                        let _ = tick_tx.send(n);
                    }
                    LegEvent::Ended(_) => break,
                    _ => {}
                }
            }
        })
    };
    let mut timing = CallTiming {
        answered: Some(answered),
        ..CallTiming::default()
    };
    let mut since = answered;
    for reply in replies {
        if !wait_prompt(&heard, &mut tick, since).await {
            break;
        }
        let trailing_ms = trailing_quiet_ms(reply);
        control.play(reply.clone()).finished().await;
        // The last loud sample left the phone this long before playback ended.
        let spoke_until = Instant::now() - Duration::from_millis(trailing_ms);
        since = Instant::now();
        // The reply: the first loud frame after our speech.
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                {
                    let h = heard.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some((t, _)) = h.frames.iter().find(|(t, l)| *l && *t > spoke_until) {
                        return *t;
                    }
                }
                if tick.changed().await.is_err() {
                    return Instant::now();
                }
            }
        })
        .await;
        if let Ok(t) = first {
            let ms = t.duration_since(spoke_until).as_secs_f64() * 1000.0 - eou_ms;
            timing.turns_ms.push(ms);
        }
    }
    // Stay on the line until the engine says goodbye and hangs up.
    let _ = tokio::time::timeout(Duration::from_secs(60), control.ended()).await;
    control.hang_up();
    timing.ended = Some(Instant::now());
    let _ = listener.await;
    timing.gaps_ms = std::mem::take(&mut heard.lock().unwrap_or_else(|p| p.into_inner()).gaps_ms);
    Ok(timing)
}

/// What a phone has heard so far.
#[derive(Default)]
struct Heard {
    last: Option<Instant>,
    quiet_ms: u64,
    /// (arrival, loud) of every frame.
    frames: Vec<(Instant, bool)>,
    /// Time between consecutive frames, ms.
    gaps_ms: Vec<f64>,
}

/// Wait for a prompt to play and end: loud audio after `since`, then 1.5 s
/// of quiet. False when none comes within 30 s or the call ends.
async fn wait_prompt(
    heard: &Mutex<Heard>,
    tick: &mut tokio::sync::watch::Receiver<u64>,
    since: Instant,
) -> bool {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        {
            let h = heard.lock().unwrap_or_else(|p| p.into_inner());
            let loud_after = h.frames.iter().rev().any(|(t, l)| *l && *t > since);
            if loud_after && h.quiet_ms >= 1500 {
                return true;
            }
        }
        if Instant::now() > until {
            return false;
        }
        let r = tokio::time::timeout(Duration::from_millis(200), tick.changed()).await;
        if matches!(r, Ok(Err(_))) {
            return false;
        }
    }
}

/// Milliseconds of quiet at the end of a clip.
fn trailing_quiet_ms(pcm: &[i16]) -> u64 {
    let frame = 320;
    let loud_frames = pcm
        .chunks(frame)
        .rposition(|f| rms(f) > LOUD_RMS)
        .map_or(0, |i| i + 1);
    let quiet_frames = pcm.len().div_ceil(frame) - loud_frames;
    quiet_frames as u64 * FRAME_MS
}

/// Frame gaps heard by the idle pair, kept here when the step aborts it.
static IDLE: Mutex<Vec<f64>> = Mutex::new(Vec::new());

/// The peer: two legs in this process connected over loopback, one sending
/// silence to the other until aborted; the receiver's frame gaps.
async fn idle_legs() -> Vec<f64> {
    if let Ok(mut g) = IDLE.lock() {
        g.clear();
    }
    let cfg = LegConfig::loopback();
    let run = async {
        let out = CallLeg::offer(&cfg).await?;
        let (mut rx, sdp) = CallLeg::answer(&cfg, out.sdp()).await?;
        let mut tx = out.accept_answer(&sdp).await?;
        tx.wait_connected(Duration::from_secs(10)).await?;
        rx.wait_connected(Duration::from_secs(10)).await?;
        let _keep = tx;
        let mut last: Option<Instant> = None;
        while let Some(ev) = rx.next_event().await {
            if let LegEvent::Audio(_) = ev {
                let now = Instant::now();
                if let (Some(p), Ok(mut g)) = (last, IDLE.lock()) {
                    g.push(now.duration_since(p).as_secs_f64() * 1000.0);
                }
                last = Some(now);
            }
        }
        Ok::<_, voicecare_telephony::TelephonyError>(())
    };
    if let Err(e) = run.await {
        eprintln!("the idle peer legs failed: {e}");
    }
    IDLE.lock()
        .map(|mut g| std::mem::take(&mut *g))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn the_flows_end_of_utterance_silence_is_read() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../ivr-flows/daily_checkin.toml"),
        )
        .unwrap();
        assert_eq!(end_of_utterance_ms(&text), Some(1200.0));
    }

    #[test]
    fn phone_numbers_are_e164_and_unique_per_step_and_elder() {
        let tag = "20261207213045";
        let a = phone_number(tag, 0, 0);
        assert_eq!(a, "+447721304500000");
        assert!(voicecare_store::elders::Phone::parse(&a).is_ok());
        let b = phone_number(tag, 1, 0);
        let c = phone_number(tag, 0, 1);
        assert!(a != b && a != c && b != c);
        assert!(voicecare_store::elders::Phone::parse(&phone_number(tag, 12, 999)).is_ok());
    }

    #[test]
    fn both_runs_webrtc_then_sip() {
        assert_eq!(Transports::Webrtc.each(), &[Via::Webrtc]);
        assert_eq!(Transports::Sip.each(), &[Via::Sip]);
        assert_eq!(Transports::Both.each(), &[Via::Webrtc, Via::Sip]);
    }

    fn step(calls: u32, cpu_pct: f64, passed: bool) -> Step {
        Step {
            calls,
            concurrent: calls,
            completed: calls,
            turns: 5 * calls as usize,
            turn_p50_ms: 140.0,
            turn_p95_ms: 300.0,
            jitter_p50_ms: 0.2,
            jitter_p99_ms: 1.5,
            idle_jitter_p99_ms: 1.5,
            jitter_ratio: 1.0,
            call_secs: 50.0,
            cpu_pct,
            engine_cpu_pct: cpu_pct * 0.8,
            cpu_per_call: CpuPerCall::default(),
            passed,
        }
    }

    fn args() -> CapacityBenchArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: CapacityBenchArgs,
        }
        Cli::parse_from(["capacity"]).a
    }

    #[test]
    fn the_default_transport_is_webrtc() {
        assert_eq!(args().via, Transports::Webrtc);
    }

    #[test]
    fn sip_is_compared_with_webrtc_at_the_steps_both_ran() {
        let a = args();
        let webrtc = summary(
            Via::Webrtc,
            2,
            &a,
            vec![
                step(1, 20.0, true),
                step(2, 40.0, true),
                step(4, 80.0, false),
            ],
        );
        // SIP stopped at its first miss, at 2 calls.
        let sip = summary(
            Via::Sip,
            2,
            &a,
            vec![step(1, 15.0, true), step(2, 30.0, false)],
        );
        assert_eq!(webrtc.sustained_calls, 2);
        assert_eq!(sip.sustained_calls, 1);
        let r = compare(&webrtc, &sip);
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.steps[1].calls, 2);
        assert!((r.steps[1].webrtc_cpu_pct_per_call - 20.0).abs() < 1e-9);
        assert!((r.steps[1].sip_cpu_pct_per_call - 15.0).abs() < 1e-9);
        assert!((r.cpu_pct_per_call - 0.75).abs() < 1e-9);
        // 1 × 3600 / 50 against 2 × 3600 / 50.
        assert!((r.calls_per_hour_per_core - 0.5).abs() < 1e-9);
        let none = summary(Via::Webrtc, 2, &a, vec![step(1, 20.0, false)]);
        assert!(compare(&none, &sip).calls_per_hour_per_core.is_nan());
    }

    #[test]
    fn trailing_quiet_counts_whole_frames_after_the_last_loud_one() {
        let mut pcm = vec![8000i16; 320 * 3];
        pcm.extend(vec![0i16; 320 * 5]);
        assert_eq!(trailing_quiet_ms(&pcm), 100);
        assert_eq!(trailing_quiet_ms(&[0; 640]), 40);
    }
}
