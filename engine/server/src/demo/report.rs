//! What the demo saw: progress while it runs, the summary at the end, and
//! `report.json` / `report.html` (charts drawn with plotters as inline SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use plotters::prelude::*;
use serde::Serialize;
use sqlx::PgPool;
use voicecare_store::cohort;
use voicecare_store::queue::SlaPolicy;

use super::cohort::Member;
use super::sampler::Sample;

/// Levels a reply can raise, most worrying first; `ok` is "nothing flagged".
pub const LEVELS: [&str; 4] = ["emergency", "urgent", "watch", "ok"];

pub use voicecare_store::cohort::Progress;

pub async fn progress(pool: &PgPool, ids: &[i64]) -> anyhow::Result<Progress> {
    Ok(cohort::progress(pool, ids).await?)
}

#[derive(Debug, Clone, Serialize)]
pub struct ElderResult {
    pub elder_id: i64,
    pub device: String,
    /// How the engine reached this elder: `webrtc` (a device) or `sip` (a phone).
    pub transport: &'static str,
    pub language: String,
    pub time_zone: String,
    /// `ok`/`watch`/`urgent`/`emergency` for speakers, `silent`, `no_answer`.
    pub expected: String,
    /// The highest level of this elder's calls and escalations, or `ok`.
    pub found: String,
    pub clip: Option<String>,
    pub outcomes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelScore {
    pub level: String,
    /// Speaking elders whose reply should raise this level.
    pub expected: i64,
    /// Of those, how many the engine put at this level.
    pub found: i64,
    pub recall: Option<f64>,
    /// Speaking elders put at this level whose reply was of another level.
    pub false_alarms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueWait {
    pub level: String,
    pub sla_secs: i64,
    pub escalations: i64,
    /// Seconds from flag to first claim, or to the end of the run if unclaimed.
    pub waits_secs: Vec<f64>,
    pub unclaimed: i64,
    pub longest_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub elders: usize,
    /// The transport of the cohort's calls: `webrtc` or `sip`.
    pub transport: &'static str,
    pub duration_secs: f64,
    pub calls: i64,
    pub attempts: i64,
    /// Check-in calls by final outcome (or status while unfinished).
    pub outcomes: BTreeMap<String, i64>,
    /// The elders' rings by what they came to (reached, busy, no answer,
    /// voicemail, invalid number, switched off, trunk failure…), per
    /// community: community → outcome → rings.
    pub attempts_by_outcome: BTreeMap<String, BTreeMap<String, i64>>,
    pub levels: Vec<LevelScore>,
    /// expected → found → elders.
    pub confusion: BTreeMap<String, BTreeMap<String, i64>>,
    pub emergencies_expected: i64,
    pub emergencies_in_queue: i64,
    pub fine_replies_flagged: i64,
    pub escalations: i64,
    pub queue: Vec<QueueWait>,
    /// Turns measured by the runner (end of the elder's speech to the first
    /// audio of the reply): how many, and quantiles in ms from `/metrics`.
    pub turns: u64,
    pub turn_respond_ms: Vec<(String, f64)>,
    /// Whisper decode time per utterance, ms (`utterances.asr_decode_ms`).
    pub asr_decode_ms: Vec<i64>,
    /// Time an utterance waited for a whisper worker, ms.
    pub asr_queue_ms: Vec<i64>,
    /// Per emergency escalation: from the end of the elder's reply (the
    /// simulated phone's clock) to the escalation's first event on an
    /// operator's console stream, ms. Sorted. Negative when the emergency
    /// reached the console while the elder was still speaking.
    pub emergency_to_console_ms: Vec<f64>,
    pub per_elder: Vec<ElderResult>,
}

/// What the demo saw from outside the engine: when each phone's replies
/// started and ended, and when each escalation reached the console's event stream.
#[derive(Debug, Default)]
pub struct Observed {
    pub speeches: BTreeMap<i64, Vec<(SystemTime, SystemTime)>>,
    pub console_seen: BTreeMap<i64, SystemTime>,
}

/// End of the elder's reply that was under way or last heard when the
/// escalation reached the console → that moment, for each emergency the
/// console saw (negative: before the reply ended).
fn emergency_to_console(flags: &[cohort::Flag], seen: &Observed) -> Vec<f64> {
    let ms = |from: SystemTime, to: SystemTime| match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    };
    let mut out: Vec<f64> = flags
        .iter()
        .filter(|f| f.level == "emergency")
        .filter_map(|f| {
            let at = *seen.console_seen.get(&f.id)?;
            let (_, end) = seen
                .speeches
                .get(&f.elder_id)?
                .iter()
                .filter(|(start, _)| *start <= at)
                .max_by_key(|(start, _)| *start)?;
            Some(ms(*end, at))
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

pub async fn summarise(
    pool: &PgPool,
    elders: &[(i64, Member)],
    sla: &SlaPolicy,
    elapsed: Duration,
    metrics: &str,
    observed: &Observed,
    transport: &'static str,
) -> anyhow::Result<Summary> {
    let (turns, turn_respond_ms) = turn_latency(metrics);
    let ids: Vec<i64> = elders.iter().map(|e| e.0).collect();
    let r = cohort::results(pool, &ids).await?;
    let (calls, attempts, found) = (&r.calls, r.attempts, &r.highest);
    let esc: Vec<(String, f64, bool)> = r
        .flags
        .iter()
        .map(|f| (f.level.clone(), f.wait_secs, !f.claimed))
        .collect();
    let asr = &r.asr;
    let mut outcomes = BTreeMap::new();
    for (_, o) in calls {
        *outcomes.entry(o.clone()).or_insert(0) += 1;
    }
    let per_elder: Vec<ElderResult> = elders
        .iter()
        .map(|(id, m)| ElderResult {
            elder_id: *id,
            device: m.device.clone(),
            transport,
            language: m.lang.clone(),
            time_zone: m.time_zone.clone(),
            expected: m.expected().to_string(),
            found: found.get(id).cloned().unwrap_or_else(|| "ok".into()),
            clip: match &m.behaviour {
                super::cohort::Behaviour::Speaks(c) => Some(c.file.clone()),
                _ => None,
            },
            outcomes: calls
                .iter()
                .filter(|c| c.0 == *id)
                .map(|c| c.1.clone())
                .collect(),
        })
        .collect();
    let mut confusion: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for e in &per_elder {
        *confusion
            .entry(e.expected.clone())
            .or_default()
            .entry(e.found.clone())
            .or_insert(0) += 1;
    }
    let speakers: Vec<&ElderResult> = per_elder
        .iter()
        .filter(|e| LEVELS.contains(&e.expected.as_str()))
        .collect();
    let levels = LEVELS
        .iter()
        .map(|l| {
            let expected = speakers.iter().filter(|e| e.expected == *l).count() as i64;
            let hit = speakers
                .iter()
                .filter(|e| e.expected == *l && e.found == *l)
                .count() as i64;
            LevelScore {
                level: l.to_string(),
                expected,
                found: hit,
                recall: (expected > 0).then(|| hit as f64 / expected as f64),
                false_alarms: speakers
                    .iter()
                    .filter(|e| e.expected != *l && e.found == *l)
                    .count() as i64,
            }
        })
        .collect();
    let queue = ["emergency", "urgent", "watch"]
        .iter()
        .map(|l| {
            let waits: Vec<f64> = esc.iter().filter(|e| e.0 == *l).map(|e| e.1).collect();
            QueueWait {
                level: l.to_string(),
                sla_secs: match *l {
                    "emergency" => sla.emergency_secs,
                    "urgent" => sla.urgent_secs,
                    _ => sla.watch_secs,
                },
                escalations: waits.len() as i64,
                unclaimed: esc.iter().filter(|e| e.0 == *l && e.2).count() as i64,
                longest_secs: waits.iter().cloned().fold(0.0, f64::max),
                waits_secs: waits,
            }
        })
        .collect();
    Ok(Summary {
        elders: elders.len(),
        transport,
        duration_secs: elapsed.as_secs_f64(),
        calls: calls.len() as i64,
        attempts,
        outcomes,
        attempts_by_outcome: r.attempts_by_outcome.clone(),
        levels,
        emergencies_expected: speakers
            .iter()
            .filter(|e| e.expected == "emergency")
            .count() as i64,
        emergencies_in_queue: speakers
            .iter()
            .filter(|e| e.expected == "emergency" && e.found == "emergency")
            .count() as i64,
        fine_replies_flagged: speakers
            .iter()
            .filter(|e| e.expected == "ok" && e.found != "ok")
            .count() as i64,
        escalations: esc.len() as i64,
        turns,
        turn_respond_ms,
        confusion,
        queue,
        asr_decode_ms: asr.iter().filter_map(|a| a.0.map(i64::from)).collect(),
        asr_queue_ms: asr.iter().filter_map(|a| a.1.map(i64::from)).collect(),
        emergency_to_console_ms: emergency_to_console(&r.flags, observed),
        per_elder,
    })
}

/// The runner's `voicecare_turn_respond_seconds` from Prometheus text:
/// (count, [(quantile, ms)]).
/// Turn count and quantiles (ms) from the `voicecare_turn_respond_seconds`
/// histogram: each quantile is the upper bound of the bucket it falls in.
fn turn_latency(metrics: &str) -> (u64, Vec<(String, f64)>) {
    let mut count = 0u64;
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("voicecare_turn_respond_seconds") else {
            continue;
        };
        let Some((key, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if key == "_count" {
            count = v as u64;
        } else if let Some(le) = key
            .strip_prefix("_bucket{le=\"")
            .and_then(|k| k.strip_suffix("\"}"))
            .and_then(|le| le.parse::<f64>().ok())
        {
            buckets.push((le, v as u64));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = ["0.5", "0.9", "0.95", "0.99"]
        .iter()
        .filter_map(|q| {
            let want = (q.parse::<f64>().ok()? * count as f64).ceil() as u64;
            let (le, _) = buckets.iter().find(|(_, n)| *n >= want.max(1))?;
            Some((q.to_string(), le * 1000.0))
        })
        .collect();
    (count, q)
}

/// `GET /metrics` from the engine this process serves.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        c.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut body = String::new();
        c.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(Duration::from_secs(10), fetch).await {
        Ok(Ok(body)) => body,
        _ => String::new(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

impl Summary {
    pub fn print(&self) {
        println!();
        println!(
            "Demo finished in {:.0} s: {} elders, {} check-in calls, {} rings (over {})",
            self.duration_secs, self.elders, self.calls, self.attempts, self.transport
        );
        let o: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("  calls by outcome: {}", o.join(", "));
        for (unit, by) in &self.attempts_by_outcome {
            let o: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  rings by outcome ({unit}): {}", o.join(", "));
        }
        println!("  distress found versus expected (speaking elders):");
        println!("    level       expected  found  recall  false alarms");
        for l in &self.levels {
            println!(
                "    {:<10} {:>9} {:>6} {:>7} {:>13}",
                l.level,
                l.expected,
                l.found,
                pct(l.recall),
                l.false_alarms
            );
        }
        for (exp, f) in &self.confusion {
            if exp == "silent" || exp == "no_answer" {
                let v: Vec<String> = f.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("  {exp} elders flagged as: {}", v.join(", "));
            }
        }
        println!(
            "  emergencies in the queue: {}/{}; fine replies flagged: {}",
            self.emergencies_in_queue, self.emergencies_expected, self.fine_replies_flagged
        );
        if self.turns > 0 {
            let q: Vec<String> = self
                .turn_respond_ms
                .iter()
                .map(|(q, ms)| format!("p{} ≤ {:.0} ms", q, ms))
                .collect();
            println!(
                "  turn latency, end of speech to reply ({} turns): {}",
                self.turns,
                q.join(", ")
            );
        }
        if let Some(max) = self.emergency_to_console_ms.last() {
            let e = &self.emergency_to_console_ms;
            println!(
                "  emergencies on the console after the elder stopped speaking: median {:.0} ms, max {:.0} ms; {}/{} within 1 s, {} before the reply ended",
                e[e.len() / 2],
                max,
                e.iter().filter(|&&ms| ms <= 1000.0).count(),
                e.len(),
                e.iter().filter(|&&ms| ms < 0.0).count()
            );
        }
        if !self.asr_decode_ms.is_empty() {
            let mut d = self.asr_decode_ms.clone();
            d.sort();
            println!(
                "  whisper decode per utterance: median {} ms, max {} ms ({} utterances)",
                d[d.len() / 2],
                d[d.len() - 1],
                d.len()
            );
        }
    }
}

pub fn write(dir: &Path, s: &Summary, samples: &[Sample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[derive(Serialize)]
    struct Report<'a> {
        #[serde(flatten)]
        summary: &'a Summary,
        resources: &'a [Sample],
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&Report {
            summary: s,
            resources: samples,
        })?,
    )?;
    std::fs::write(dir.join("report.html"), html(s, samples)?)?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
];

/// Grouped vertical bars: one group per label, one bar per series.
fn bars(title: &str, labels: &[String], series: &[(&str, Vec<f64>)]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let n = labels.len().max(1) as f64;
        let ymax = series
            .iter()
            .flat_map(|s| s.1.iter().cloned())
            .fold(4.0, f64::max)
            * 1.15;
        let below = ymax * 0.09;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .y_label_area_size(48)
            .x_label_area_size(8)
            .build_cartesian_2d(0.0..n, -below..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|y| {
                if *y < 0.0 {
                    String::new()
                } else {
                    format!("{y:.0}")
                }
            })
            .draw()
            .map_err(plot_err)?;
        let k = series.len().max(1) as f64;
        for (si, (name, vals)) in series.iter().enumerate() {
            let colour = COLOURS[si % COLOURS.len()];
            let w = 0.8 / k;
            chart
                .draw_series(vals.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + si as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w * 0.92, *v)], colour.filled())
                }))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
            chart
                .draw_series(vals.iter().enumerate().map(|(i, v)| {
                    let x = i as f64 + 0.1 + si as f64 * w + w * 0.3;
                    Text::new(format!("{v:.0}"), (x, *v + ymax * 0.06), ("sans-serif", 12))
                }))
                .map_err(plot_err)?;
        }
        chart
            .draw_series(labels.iter().enumerate().map(|(i, l)| {
                Text::new(
                    l.clone(),
                    (i as f64 + 0.3, -below * 0.3),
                    ("sans-serif", 13),
                )
            }))
            .map_err(plot_err)?;
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn line(title: &str, unit: &str, points: &[(f64, f64)]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
        let ymax = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(unit)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().cloned(),
                COLOURS[0].stroke_width(2),
            ))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Counts of `values` in `buckets` equal buckets of `width`.
fn histogram(values: &[i64], width: i64) -> (Vec<String>, Vec<f64>) {
    let max = values.iter().cloned().max().unwrap_or(0);
    let n = (max / width + 1).clamp(1, 40) as usize;
    let mut counts = vec![0.0; n];
    for v in values {
        counts[((v / width) as usize).min(n - 1)] += 1.0;
    }
    let labels = (0..n).map(|i| format!("{}", i as i64 * width)).collect();
    (labels, counts)
}

fn html(s: &Summary, samples: &[Sample]) -> anyhow::Result<String> {
    let mut h = String::new();
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>voicecare demo report</title><style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}th{background:#eee}td.l{text-align:left}svg{display:block;margin:1em 0}</style></head><body>\n");
    writeln!(h, "<h1>voicecare demo report</h1>")?;
    writeln!(
        h,
        "<p>{} simulated elders, <span id=\"calls\">{}</span> check-in calls, {} rings, in {:.0} s.</p>",
        s.elders, s.calls, s.attempts, s.duration_secs
    )?;
    writeln!(h, "<table><tr><th>key figure</th><th>value</th></tr>")?;
    let key = [
        ("elders", s.elders as i64),
        ("calls", s.calls),
        ("escalations", s.escalations),
        ("emergencies-expected", s.emergencies_expected),
        ("emergencies-in-queue", s.emergencies_in_queue),
        ("fine-replies-flagged", s.fine_replies_flagged),
    ];
    for (k, v) in key {
        writeln!(
            h,
            "<tr><td class=\"l\">{k}</td><td id=\"{k}\">{v}</td></tr>"
        )?;
    }
    writeln!(h, "</table>")?;

    writeln!(
        h,
        "<h2>Calls by outcome</h2><table><tr><th>outcome</th><th>calls</th></tr>"
    )?;
    for (k, v) in &s.outcomes {
        writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td id=\"outcome-{0}\">{v}</td></tr>",
            esc(k)
        )?;
    }
    writeln!(h, "</table>")?;
    let labels: Vec<String> = s.outcomes.keys().cloned().collect();
    h.push_str(&bars(
        "Check-in calls by outcome",
        &labels,
        &[("calls", s.outcomes.values().map(|v| *v as f64).collect())],
    )?);

    if !s.attempts_by_outcome.is_empty() {
        let outcomes: std::collections::BTreeSet<&String> = s
            .attempts_by_outcome
            .values()
            .flat_map(|b| b.keys())
            .collect();
        write!(
            h,
            "<h2>Rings by outcome, per community</h2><table><tr><th>community</th>"
        )?;
        for o in &outcomes {
            write!(h, "<th>{}</th>", esc(o))?;
        }
        writeln!(h, "</tr>")?;
        for (unit, by) in &s.attempts_by_outcome {
            write!(h, "<tr><td class=\"l\">{}</td>", esc(unit))?;
            for o in &outcomes {
                write!(
                    h,
                    "<td id=\"attempts-{}\">{}</td>",
                    esc(o),
                    by.get(*o).copied().unwrap_or(0)
                )?;
            }
            writeln!(h, "</tr>")?;
        }
        writeln!(h, "</table>")?;
    }

    writeln!(
        h,
        "<h2>Distress found versus expected</h2><table><tr><th>level</th><th>expected</th><th>found</th><th>recall</th><th>false alarms</th></tr>"
    )?;
    for l in &s.levels {
        writeln!(
            h,
            "<tr><td class=\"l\">{0}</td><td id=\"expected-{0}\">{1}</td><td id=\"found-{0}\">{2}</td><td id=\"recall-{0}\">{3}</td><td id=\"false-alarms-{0}\">{4}</td></tr>",
            l.level,
            l.expected,
            l.found,
            pct(l.recall),
            l.false_alarms
        )?;
    }
    writeln!(h, "</table>")?;
    let labels: Vec<String> = s.levels.iter().map(|l| l.level.clone()).collect();
    h.push_str(&bars(
        "Elders per distress level",
        &labels,
        &[
            (
                "expected",
                s.levels.iter().map(|l| l.expected as f64).collect(),
            ),
            ("found", s.levels.iter().map(|l| l.found as f64).collect()),
            (
                "false alarms",
                s.levels.iter().map(|l| l.false_alarms as f64).collect(),
            ),
        ],
    )?);
    writeln!(h, "<table><tr><th>expected \\ found</th>")?;
    let found_cols = ["emergency", "urgent", "watch", "ok"];
    for c in found_cols {
        write!(h, "<th>{c}</th>")?;
    }
    writeln!(h, "</tr>")?;
    for (exp, row) in &s.confusion {
        write!(h, "<tr><td class=\"l\">{}</td>", esc(exp))?;
        for c in found_cols {
            write!(h, "<td>{}</td>", row.get(c).copied().unwrap_or(0))?;
        }
        writeln!(h, "</tr>")?;
    }
    writeln!(h, "</table>")?;

    writeln!(
        h,
        "<h2>Turn latency</h2><p>From the end of the elder's speech (after the endpointer's silence) to the first audio of the reply, as the runner measures it (<code>voicecare_turn_respond_seconds</code>, a histogram: each quantile is at most the bound shown), <span id=\"turns\">{}</span> turns.</p><table><tr><th>quantile</th><th>at most, ms</th></tr>",
        s.turns
    )?;
    for (q, ms) in &s.turn_respond_ms {
        writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{ms:.0}</td></tr>",
            esc(q)
        )?;
    }
    writeln!(h, "</table>")?;
    if !s.turn_respond_ms.is_empty() {
        let labels: Vec<String> = s
            .turn_respond_ms
            .iter()
            .map(|q| format!("p{}", q.0))
            .collect();
        h.push_str(&bars(
            "Turn latency by quantile (ms)",
            &labels,
            &[("ms", s.turn_respond_ms.iter().map(|q| q.1).collect())],
        )?);
    }
    let e = &s.emergency_to_console_ms;
    writeln!(
        h,
        "<h2>Emergencies reaching operators</h2><p>From the end of the elder's speech (the simulated phone's clock) to the escalation's first event on an operator's console stream (<code>GET /api/v1/events</code>), for <span id=\"emergencies-timed\">{}</span> emergencies: median <span id=\"emergency-console-p50\">{:.0}</span> ms, max <span id=\"emergency-console-max\">{:.0}</span> ms, <span id=\"emergency-console-1s\">{}</span> within 1 s, <span id=\"emergency-console-before-end\">{}</span> before the elder finished (negative times: read from the words so far while the elder was still speaking).</p>",
        e.len(),
        e.get(e.len() / 2).copied().unwrap_or(0.0),
        e.last().copied().unwrap_or(0.0),
        e.iter().filter(|&&ms| ms <= 1000.0).count(),
        e.iter().filter(|&&ms| ms < 0.0).count()
    )?;
    writeln!(h, "<h2>Transcription time per utterance</h2>")?;
    writeln!(
        h,
        "<p>Whisper decode time of each elder utterance (<code>utterances.asr_decode_ms</code>), <span id=\"utterances\">{}</span> utterances.</p>",
        s.asr_decode_ms.len()
    )?;
    let (labels, counts) = histogram(&s.asr_decode_ms, 250);
    h.push_str(&bars(
        "Utterances by decode time (ms, bucket start)",
        &labels,
        &[("utterances", counts)],
    )?);

    writeln!(
        h,
        "<h2>Queue wait against SLA</h2><p>No operator takes calls in the demo, so most waits run to the end of the run.</p><table><tr><th>level</th><th>escalations</th><th>unclaimed</th><th>longest wait (s)</th><th>SLA (s)</th></tr>"
    )?;
    for q in &s.queue {
        writeln!(
            h,
            "<tr><td class=\"l\">{0}</td><td id=\"queue-{0}\">{1}</td><td>{2}</td><td>{3:.0}</td><td>{4}</td></tr>",
            q.level, q.escalations, q.unclaimed, q.longest_secs, q.sla_secs
        )?;
    }
    writeln!(h, "</table>")?;
    let labels: Vec<String> = s.queue.iter().map(|q| q.level.clone()).collect();
    h.push_str(&bars(
        "Longest queue wait, % of the level's SLA",
        &labels,
        &[(
            "% of SLA",
            s.queue
                .iter()
                .map(|q| q.longest_secs / q.sla_secs.max(1) as f64 * 100.0)
                .collect(),
        )],
    )?);

    writeln!(
        h,
        "<h2>CPU and memory of the voicecare process</h2><p>Sampled every second from /proc/self; the embedded PostgreSQL runs in its own processes and is not included.</p>"
    )?;
    let cpu: Vec<(f64, f64)> = samples.iter().map(|x| (x.t, x.cpu_pct)).collect();
    let mem: Vec<(f64, f64)> = samples.iter().map(|x| (x.t, x.rss_mib)).collect();
    h.push_str(&line("CPU (% of one core)", "%", &cpu)?);
    h.push_str(&line("Resident memory", "MiB", &mem)?);

    writeln!(
        h,
        "<h2>Elders</h2><table><tr><th>elder</th><th>language</th><th>time zone</th><th>clip</th><th>expected</th><th>found</th><th>calls</th></tr>"
    )?;
    for e in &s.per_elder {
        writeln!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            e.elder_id,
            esc(&e.language),
            esc(&e.time_zone),
            esc(e.clip.as_deref().unwrap_or("")),
            esc(&e.expected),
            esc(&e.found),
            esc(&e.outcomes.join(", "))
        )?;
    }
    writeln!(h, "</table></body></html>")?;
    Ok(h)
}
