//! The simulated cohort: who the elders are, what they say, and their truth.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use voicecare_store::cohort;
use voicecare_store::elders::Phone;

/// A clip from `audio-fixtures/manifest.json` with the level it should raise.
/// `Debug` leaves out what it says.
#[derive(Clone)]
pub struct Clip {
    pub file: String,
    /// What the clip says.
    pub text: String,
    pub lang: String,
    /// `ok`, `watch`, `urgent` or `emergency`.
    pub level: String,
    /// The clip as 16 kHz mono WAV, for the simulated phone.
    pub wav: PathBuf,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("file", &self.file)
            .field("lang", &self.lang)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers and says the clip.
    Speaks(Clip),
    /// Answers and says nothing.
    Silent,
    /// Lets it ring.
    NoAnswer,
}

/// A simulated elder with the personal data a real one's record holds. Made
/// up, but the engine must treat it as real: none of it may reach a log.
#[derive(Clone)]
pub struct Member {
    pub name: String,
    /// The demo's elders have them; a benchmark's need none.
    pub particulars: Option<Particulars>,
    pub device: String,
    pub token: String,
    pub lang: String,
    pub time_zone: String,
    pub behaviour: Behaviour,
}

/// What a real elder's record holds besides a name and a device.
#[derive(Clone)]
pub struct Particulars {
    pub phone: String,
    pub birth_date: NaiveDate,
    pub address: String,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = voicecare_core::redact::Personal::new(());
        f.debug_struct("Member")
            .field("name", &hidden)
            .field("particulars", &self.particulars.as_ref().map(|_| hidden))
            .field("device", &self.device)
            .field("lang", &self.lang)
            .field("time_zone", &self.time_zone)
            .field("behaviour", &self.behaviour)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// The truth: the level a person listening would expect.
    pub fn expected(&self) -> &str {
        match &self.behaviour {
            Behaviour::Speaks(c) => &c.level,
            Behaviour::Silent => "silent",
            Behaviour::NoAnswer => "no_answer",
        }
    }

    /// The phone's script: answer, wait for the question, say the clip, then
    /// answer the check-in's follow-up questions (meals, medication, sleep,
    /// anything else) plainly. An elder kept on the line for an operator hangs
    /// up after `max_call_ms`, as no operator works the demo's queue.
    pub fn script(&self, answers: &Answers) -> String {
        const WAIT: &str =
            "[[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 2500\ntimeout_ms = 30000\n";
        let say = |wav: &Path| {
            format!(
                "{WAIT}[[step]]\ndo = \"say\"\nwav = \"{}\"\n",
                wav.display()
            )
        };
        match &self.behaviour {
            Behaviour::Speaks(c) => {
                let a = if c.lang == "zh" {
                    &answers.zh
                } else {
                    &answers.en
                };
                let mut s = "answer_after_ms = 400\nmax_call_ms = 75000\n".to_string();
                s.push_str(&say(&c.wav));
                for wav in a {
                    s.push_str(&say(wav));
                }
                s
            }
            Behaviour::Silent => format!("answer_after_ms = 400\nmax_call_ms = 75000\n{WAIT}"),
            Behaviour::NoAnswer => "on_ring = \"ignore\"\n".to_string(),
        }
    }
}

/// Spoken answers to the follow-up questions, per language, as WAV files,
/// and what they say.
pub struct Answers {
    pub en: Vec<PathBuf>,
    pub zh: Vec<PathBuf>,
    pub en_text: Vec<String>,
    pub zh_text: Vec<String>,
}

/// The follow-up answers. English is rendered with espeak-ng (the engine's
/// own prompt voice), which whisper reads well. espeak-ng's Mandarin is
/// another matter: whisper hears its 吃了 as "车 车 车 …", so every Mandarin
/// follow-up would be a misunderstanding. Mandarin elders answer instead
/// with the fine replies recorded in a human voice among the fixtures
/// (`gcin/gcin_ok_*.flac`: 我挺好的，谢谢，刚吃完早饭 and 我睡得很好，药也吃了).
pub fn answers(fixtures: &Path, out: &Path) -> anyhow::Result<Answers> {
    use crate::runner::tts::{Espeak, Prompts};
    use voicecare_core::flow::Lang;
    let prompts = Prompts::new(
        Box::new(Espeak::default()),
        out.join("tts"),
        out.to_path_buf(),
    );
    let en_text = [
        "Yes, I have.",
        "Yes, I have.",
        "I slept well.",
        "No, thank you.",
    ];
    let en = en_text
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pcm = prompts.pcm(t, None, Lang::En, 1.0)?;
            let wav = out.join(format!("answer-en-{i}.wav"));
            voicecare_telephony::sim::write_wav(&wav, &pcm)?;
            Ok(wav)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let recorded = |file: &str| -> anyhow::Result<PathBuf> {
        let audio = voicecare_media::load(&fixtures.join(file), None)
            .map_err(|e| anyhow::anyhow!("fixture {file}: {e}"))?;
        let wav = out.join(file.replace('/', "_")).with_extension("wav");
        voicecare_media::write_wav(&wav, &audio).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(wav)
    };
    // Meals, medication, sleep, anything else.
    let (ate, slept) = (
        recorded("gcin/gcin_ok_1.flac")?,
        recorded("gcin/gcin_ok_2.flac")?,
    );
    let said = |file: &str| manifest_text(fixtures, file);
    let (ate_text, slept_text) = (said("gcin/gcin_ok_1.flac")?, said("gcin/gcin_ok_2.flac")?);
    Ok(Answers {
        en,
        zh: vec![ate.clone(), slept.clone(), slept, ate],
        en_text: en_text.iter().map(|t| t.to_string()).collect(),
        zh_text: vec![ate_text.clone(), slept_text.clone(), slept_text, ate_text],
    })
}

/// The text `audio-fixtures/manifest.json` gives for a clip.
fn manifest_text(fixtures: &Path, file: &str) -> anyhow::Result<String> {
    let path = fixtures.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    manifest["clips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["file"].as_str() == Some(file))
        .and_then(|c| c["text"].as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no text for {file}", path.display()))
}

const LEVELS: [&str; 4] = ["emergency", "ok", "urgent", "watch"];
const ZONES: [&str; 5] = [
    "Asia/Shanghai",
    "Europe/London",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Hong_Kong",
];

/// Speech clips with an expected level (wideband FLAC), converted to WAV in `out`.
pub fn clips(fixtures: &Path, out: &Path) -> anyhow::Result<Vec<Clip>> {
    let path = fixtures.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&text)?;
    let all = manifest["clips"].as_array().cloned().unwrap_or_default();
    // espeak-ng's Mandarin voice is too far from speech for whisper: it hears
    // 救命啊，我摔倒了，起不来了 as "Qmin,我帅到,其不来人" and 胸口疼得厉害，喘不上气 as
    // "顺口沉得了爱,善不善其", so the clip's label would describe words nobody
    // can make out. Where a recorded voice says the same text, the cohort
    // uses that recording instead.
    let recorded = |text: &str| {
        all.iter().any(|c| {
            c["text"].as_str() == Some(text)
                && c["voice"].as_str() != Some("espeak-ng")
                && c["format"].as_str() == Some("flac")
        })
    };
    let mut by_level: Vec<Vec<Clip>> = vec![Vec::new(); LEVELS.len()];
    for c in &all {
        let (Some(file), Some(lang), Some(level)) = (
            c["file"].as_str(),
            c["lang"].as_str(),
            c["distress"].as_str(),
        ) else {
            continue;
        };
        if c["format"].as_str() != Some("flac") || c["kind"].as_str() != Some("speech") {
            continue;
        }
        let Some(slot) = LEVELS.iter().position(|l| *l == level) else {
            continue;
        };
        if c["voice"].as_str() == Some("espeak-ng")
            && lang == "zh"
            && c["text"].as_str().is_some_and(recorded)
        {
            continue;
        }
        let audio = voicecare_media::load(&fixtures.join(file), None)
            .map_err(|e| anyhow::anyhow!("fixture {file}: {e}"))?;
        let wav = out.join(file.replace('/', "_")).with_extension("wav");
        voicecare_media::write_wav(&wav, &audio).map_err(|e| anyhow::anyhow!("{e}"))?;
        by_level[slot].push(Clip {
            file: file.to_string(),
            text: c["text"].as_str().unwrap_or_default().to_string(),
            lang: lang.to_string(),
            level: level.to_string(),
            wav,
        });
    }
    anyhow::ensure!(
        by_level.iter().all(|l| !l.is_empty()),
        "{} has no clip for some distress level",
        path.display()
    );
    // Alternate languages within each level.
    for l in &mut by_level {
        l.sort_by_key(|c| (c.file.clone(), c.lang.clone()));
        let (mut en, mut zh): (Vec<Clip>, Vec<Clip>) = l.drain(..).partition(|c| c.lang == "en");
        en.reverse();
        zh.reverse();
        while !en.is_empty() || !zh.is_empty() {
            l.extend(en.pop());
            l.extend(zh.pop());
        }
    }
    // Round robin over levels: emergency, ok, urgent, watch, emergency, …
    let mut out = Vec::new();
    let longest = by_level.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for l in &by_level {
            out.push(l[i % l.len()].clone());
        }
    }
    Ok(out)
}

/// Made-up names for the simulated elders.
const NAMES_EN: &[&str] = &[
    "Margaret Holloway",
    "Arthur Pennington",
    "Edith Marlowe",
    "Harold Whitcombe",
    "Dorothy Ashworth",
    "Walter Fairbrother",
];
const NAMES_ZH: &[&str] = &["王秀兰", "张国强", "李桂英", "刘建华", "陈淑珍", "杨德明"];

/// `n` elders: every fourth slot from the fourth is a non-answerer, every
/// eighth from the seventh a silent answerer, the rest speak clips in turn.
pub fn plan(n: usize, clips: &[Clip], tag: &str) -> Vec<Member> {
    let mut next_clip = 0;
    (0..n)
        .map(|i| {
            let behaviour = if i % 8 == 3 {
                Behaviour::NoAnswer
            } else if i % 8 == 6 {
                Behaviour::Silent
            } else {
                let c = clips[next_clip % clips.len()].clone();
                next_clip += 1;
                Behaviour::Speaks(c)
            };
            let lang = match &behaviour {
                Behaviour::Speaks(c) => c.lang.clone(),
                _ if i % 2 == 0 => "en".into(),
                _ => "zh".into(),
            };
            let device = format!("demo-{tag}-{i:03}");
            // Numbers unique per run (a shared database keeps earlier cohorts).
            let (names, prefix) = if lang == "zh" {
                (NAMES_ZH, "+86138")
            } else {
                (NAMES_EN, "+447700")
            };
            let second_of_day = &tag[tag.len().saturating_sub(6)..];
            Member {
                name: names[i % names.len()].to_string(),
                particulars: Some(Particulars {
                    phone: format!("{prefix}{second_of_day}{:03}", i % 1000),
                    birth_date: NaiveDate::from_ymd_opt(
                        1928 + (i * 7 % 25) as i32,
                        1 + (i % 12) as u32,
                        1 + (i * 11 % 28) as u32,
                    )
                    .unwrap_or_default(),
                    address: format!("Flat {}, {} Mulberry Lane", 10 + i, 3 + i % 40),
                }),
                token: format!("token-{device}-{}", rand::random::<u64>()),
                device,
                lang,
                time_zone: ZONES[i % ZONES.len()].to_string(),
                behaviour,
            }
        })
        .collect()
}

/// Enrol `m` in `community` with its device token.
pub async fn enrol(pool: &PgPool, community: i64, m: &Member) -> anyhow::Result<i64> {
    let hash = crate::runner::gateway::token_hash(&m.token);
    let elder = cohort::SimElder {
        full_name: &m.name,
        device_id: &m.device,
        language: &m.lang,
        time_zone: &m.time_zone,
        community_id: community,
    };
    let id = cohort::enrol(pool, &elder, &hash, Utc::now()).await?;
    if let Some(p) = &m.particulars {
        let phone =
            Phone::parse(&p.phone).map_err(|e| anyhow::anyhow!("demo phone number: {e}"))?;
        cohort::set_particulars(pool, id, &phone, p.birth_date, &p.address).await?;
    }
    Ok(id)
}

/// `cohort.json` beside the report: who the simulated elders are and what
/// each says, so the demo's log can be searched for any of it.
pub fn write(dir: &Path, elders: &[(i64, Member)], answers: &Answers) -> anyhow::Result<()> {
    let members: Vec<serde_json::Value> = elders
        .iter()
        .map(|(id, m)| {
            let mut says = match &m.behaviour {
                Behaviour::Speaks(c) => vec![c.text.clone()],
                _ => Vec::new(),
            };
            if matches!(m.behaviour, Behaviour::Speaks(_)) {
                says.extend(if m.lang == "zh" {
                    answers.zh_text.clone()
                } else {
                    answers.en_text.clone()
                });
            }
            let p = m.particulars.as_ref();
            serde_json::json!({
                "elder_id": id,
                "name": m.name,
                "phone": p.map(|p| p.phone.clone()),
                "birth_date": p.map(|p| p.birth_date.to_string()),
                "address": p.map(|p| p.address.clone()),
                "device": m.device,
                "language": m.lang,
                "says": says,
            })
        })
        .collect();
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("cohort.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "elders": members }))?,
    )?;
    Ok(())
}

/// A daily window opening `offset_secs` from now in the elder's zone; two
/// attempts one ladder minute apart.
pub async fn schedule(
    pool: &PgPool,
    elder: i64,
    zone: &str,
    offset_secs: u64,
) -> anyhow::Result<()> {
    cohort::open_window(pool, elder, zone, offset_secs, 2, 1, Utc::now()).await?;
    Ok(())
}

/// Remove the cohort's schedules (its calls and escalations stay).
pub async fn unschedule(pool: &PgPool, ids: &[i64]) -> anyhow::Result<()> {
    cohort::close_windows(pool, ids, Utc::now()).await?;
    Ok(())
}
