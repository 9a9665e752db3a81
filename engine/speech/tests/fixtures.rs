//! End-to-end checks on the real audio fixtures with the real multilingual
//! base model. The model must be installed first (`scripts/install-model.sh`,
//! or `voicecare model install base`); the test fails, naming that command,
//! when it is not.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voicecare_media::{RawFormat, vad};
use voicecare_speech::text::{edit_distance, normalize_en, normalize_zh};
use voicecare_speech::{AsrPool, DecodeOptions, Lang, Model, TranscribeRequest};

#[derive(Debug, Clone, serde::Deserialize)]
struct Clip {
    file: String,
    lang: Option<String>,
    rate: u32,
    format: String,
    text: String,
    kind: String,
    voice: Option<String>,
    keywords: Vec<String>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../audio-fixtures")
}

fn clips() -> Vec<Clip> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        clips: Vec<Clip>,
    }
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json"))
        .expect("audio-fixtures/manifest.json");
    serde_json::from_str::<Manifest>(&text)
        .expect("valid manifest")
        .clips
}

fn load_16k(clip: &Clip) -> Vec<f32> {
    let path = fixtures_dir().join(&clip.file);
    let raw = (clip.format == "mulaw").then_some((RawFormat::Mulaw, clip.rate));
    let audio = voicecare_media::load(&path, raw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(audio.rate, clip.rate, "{}", clip.file);
    audio.to_rate(16000).unwrap().samples
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load_named("base").unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn manifest_lists_every_clip_and_every_clip_loads() {
    let clips = clips();
    assert!(clips.len() >= 60, "{} clips", clips.len());
    let mut on_disk = Vec::new();
    for group in std::fs::read_dir(fixtures_dir()).unwrap() {
        let group = group.unwrap().path();
        // A folder with its own manifest (carrier/) is checked against it below.
        if group.is_dir() && !group.join("manifest.json").exists() {
            for f in std::fs::read_dir(&group).unwrap() {
                let f = f.unwrap().path();
                on_disk.push(
                    f.strip_prefix(fixtures_dir())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = clips.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "manifest.json and the clip folders disagree"
    );
    for c in &clips {
        let s = load_16k(c);
        assert!(s.len() > 8000, "{} is too short", c.file);
    }
    // carrier/ lists its own clips, all telephone-band mu-law.
    let carrier = fixtures_dir().join("carrier");
    #[derive(serde::Deserialize)]
    struct Manifest {
        clips: Vec<Clip>,
    }
    let own: Manifest = serde_json::from_str(
        &std::fs::read_to_string(carrier.join("manifest.json")).expect("carrier/manifest.json"),
    )
    .expect("valid carrier manifest");
    let mut listed: Vec<String> = own.clips.iter().map(|c| c.file.clone()).collect();
    listed.push("manifest.json".into());
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&carrier)
        .unwrap()
        .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(
        listed, on_disk,
        "carrier/manifest.json and carrier/ disagree"
    );
    for c in &own.clips {
        assert_eq!((c.format.as_str(), c.rate), ("mulaw", 8000), "{}", c.file);
        let n = std::fs::metadata(carrier.join(&c.file)).unwrap().len();
        assert!(n > 8000, "{} is too short", c.file);
    }
    // Every distress level is covered in both languages, in both bands.
    for lang in ["en", "zh"] {
        for level in ["ok", "watch", "urgent", "emergency"] {
            let stem = format!("{lang}_{level}");
            assert!(
                clips
                    .iter()
                    .any(|c| c.file.contains(&stem) && c.format == "flac"),
                "{stem}"
            );
            assert!(
                clips
                    .iter()
                    .any(|c| c.file.contains(&stem) && c.format == "mulaw"),
                "{stem} 8k"
            );
        }
    }
}

#[test]
fn nothing_is_invented_on_silence_noise_tones_music_or_breathing() {
    let mut rec = model().recognizer().unwrap();
    let opts = DecodeOptions::default();
    let mut checked = 0;
    for c in clips().iter().filter(|c| c.kind != "speech") {
        let samples = load_16k(c);
        for l in [Some(Lang::En), Some(Lang::Zh)] {
            let t = rec.transcribe(&samples, l, None, &opts).unwrap();
            assert_eq!(t.text, "", "{} ({l:?}) gave words", c.file);
            checked += 1;
        }
    }
    assert!(checked >= 28, "{checked}");
}

#[test]
fn english_real_and_synthetic_speech_is_transcribed() {
    let mut rec = model().recognizer().unwrap();
    let opts = DecodeOptions::default();
    let (mut errors, mut words) = (0, 0);
    for c in clips()
        .iter()
        .filter(|c| c.kind == "speech" && c.lang.as_deref() == Some("en") && c.format == "flac")
    {
        let t = rec
            .transcribe(&load_16k(c), Some(Lang::En), None, &opts)
            .unwrap();
        let (r, h) = (normalize_en(&c.text), normalize_en(&t.text));
        errors += edit_distance(&r, &h);
        words += r.len();
        assert!(!h.is_empty(), "{}: empty transcript", c.file);
        assert!(t.audio_s > 0.5 && t.decode_s > 0.0);
    }
    let wer = errors as f64 / words as f64;
    assert!(words > 200, "{words}");
    assert!(
        wer < 0.10,
        "English WER {:.1}% over {words} words",
        wer * 100.0
    );
}

#[test]
fn telephone_band_mulaw_english_is_transcribed() {
    let mut rec = model().recognizer().unwrap();
    let opts = DecodeOptions::default();
    let (mut errors, mut words) = (0, 0);
    for c in clips()
        .iter()
        .filter(|c| c.kind == "speech" && c.lang.as_deref() == Some("en") && c.format == "mulaw")
    {
        let t = rec
            .transcribe(&load_16k(c), Some(Lang::En), None, &opts)
            .unwrap();
        let r = normalize_en(&c.text);
        errors += edit_distance(&r, &normalize_en(&t.text));
        words += r.len();
    }
    let wer = errors as f64 / words as f64;
    assert!(
        wer < 0.20,
        "8 kHz mu-law English WER {:.1}% over {words} words",
        wer * 100.0
    );
}

#[test]
fn real_voice_mandarin_comes_out_simplified_and_mostly_right() {
    let mut rec = model().recognizer().unwrap();
    let opts = DecodeOptions::default();
    let (mut errors, mut chars) = (0, 0);
    let mut heard = String::new();
    for c in clips()
        .iter()
        .filter(|c| c.voice.as_deref() == Some("gcin-voice") && c.format == "flac")
    {
        let t = rec
            .transcribe(&load_16k(c), Some(Lang::Zh), None, &opts)
            .unwrap();
        assert_eq!(t.lang, Some(Lang::Zh));
        let r = normalize_zh(&c.text);
        errors += edit_distance(&r, &normalize_zh(&t.text));
        chars += r.len();
        // Simplified output: none of the Traditional forms of these words.
        for trad in ['謝', '們', '沒', '來', '頭', '暈', '喫', '藥', '醫'] {
            assert!(
                !t.text.contains(trad),
                "{}: Traditional character {trad}",
                c.file
            );
        }
        if !c.keywords.is_empty() {
            heard.push_str(&t.text);
        }
    }
    let cer = errors as f64 / chars as f64;
    assert!(
        cer < 0.40,
        "gcin Mandarin CER {:.1}% over {chars} characters",
        cer * 100.0
    );
    assert!(
        heard.contains("救命") || heard.contains("摔倒"),
        "no alarm word heard in the emergency clips"
    );
}

#[test]
fn endpointer_splits_a_long_pause_only_when_it_exceeds_the_end_silence() {
    let clip = clips()
        .into_iter()
        .find(|c| c.file == "espeak/en_pause_urgent.flac")
        .expect("pause clip");
    let samples = load_16k(&clip);
    let default = vad::utterances(&samples, &vad::EndpointConfig::for_rate(16000));
    assert_eq!(
        default.len(),
        2,
        "a 1.6 s pause ends the utterance at the default 1.1 s"
    );
    let patient = vad::EndpointConfig {
        end_silence_ms: 3500,
        ..vad::EndpointConfig::for_rate(16000)
    };
    let one = vad::utterances(&samples, &patient);
    assert_eq!(one.len(), 1);
    // The utterances cut by the endpointer transcribe to the two halves.
    let mut rec = model().recognizer().unwrap();
    let opts = DecodeOptions::default();
    let first = rec
        .transcribe(&default[0].samples, Some(Lang::En), None, &opts)
        .unwrap();
    let second = rec
        .transcribe(&default[1].samples, Some(Lang::En), None, &opts)
        .unwrap();
    assert!(
        normalize_en(&first.text).contains(&"okay".to_string())
            || first.text.to_lowercase().contains("ok"),
        "{}",
        first.text
    );
    assert!(
        normalize_en(&second.text).contains(&"fell".to_string()),
        "{}",
        second.text
    );
}

/// The clip the pool tests decode: an English reply about chest pain.
fn chest_pain_reply() -> Vec<f32> {
    let clip = clips()
        .into_iter()
        .find(|c| c.file == "espeak/en_emergency_2.flac")
        .unwrap();
    load_16k(&clip)
}

fn hears_chest(text: &str) -> bool {
    normalize_en(text).contains(&"chest".to_string())
}

/// A request to transcribe English speech.
fn english(samples: &[f32]) -> TranscribeRequest {
    TranscribeRequest {
        samples_16k: samples.to_vec(),
        lang: Some(Lang::En),
        prompt: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pool_queues_when_busy_and_reports_the_wait() {
    let rt = runtime();
    let samples = chest_pain_reply();
    let pool = std::sync::Arc::new(AsrPool::new(model(), 1, 1).unwrap());
    assert_eq!(pool.workers(), 1);
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let pool = std::sync::Arc::clone(&pool);
                let req = english(&samples);
                tokio::spawn(async move { pool.transcribe(req).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    assert_eq!(results.len(), 3);
    let mut waits = Vec::new();
    for r in results {
        let t = r.unwrap();
        assert!(hears_chest(&t.text), "{}", t.text);
        waits.push(t.queue_wait_s);
    }
    waits.sort_by(f64::total_cmp);
    // One worker, three requests: the last one waited for the other two.
    assert!(waits[2] > waits[0] + 0.05, "{waits:?}");
    assert_eq!(pool.queue_len(), 0);
}

#[test]
fn optional_work_uses_idle_workers_only_and_gives_way_to_needed_work() {
    let rt = runtime();
    let samples = chest_pain_reply();
    let req = || english(&samples);
    let pool = AsrPool::new(model(), 1, 1).unwrap();
    rt.block_on(async {
        // An idle worker: the optional decode runs and hears the words.
        assert_eq!(pool.idle(), 1);
        let spec = pool
            .speculate_if_idle(req())
            .expect("an idle worker takes optional work");
        let t = spec.await.unwrap();
        assert!(hears_chest(&t.text), "{}", t.text);

        // The worker is taken: no optional work is queued behind it.
        let optional = pool.speculate_if_idle(req()).expect("idle again");
        assert!(
            pool.speculate_if_idle(req()).is_none(),
            "the only worker is taken"
        );
        // Needed work arrives: the optional decode gives way to it.
        let needed = pool.transcribe(req());
        let (optional, needed) = tokio::join!(optional, needed);
        assert!(
            matches!(optional, Err(voicecare_speech::SpeechError::Cancelled)),
            "{optional:?}"
        );
        assert!(hears_chest(&needed.unwrap().text));
    });
    assert_eq!(pool.idle(), 1);
}

#[test]
fn a_speculation_queues_like_an_utterance_and_is_skipped_once_dropped() {
    let rt = runtime();
    let samples = chest_pain_reply();
    let req = || english(&samples);
    let pool = AsrPool::new(model(), 1, 1).unwrap();
    rt.block_on(async {
        // Queued behind needed work, never refused, and never cancelled by it.
        let first = pool.speculate(req()).unwrap();
        let second = pool.speculate(req()).unwrap();
        let needed = pool.transcribe(req());
        let (first, second, needed) = tokio::join!(first, second, needed);
        assert!(hears_chest(&first.unwrap().text));
        assert!(hears_chest(&second.unwrap().text));
        assert!(hears_chest(&needed.unwrap().text));

        // Dropped while it waits: the worker skips it, serves the next, and
        // the pool's counts come back to idle.
        let running = pool.speculate(req()).unwrap();
        let waiting = pool.speculate(req()).unwrap();
        drop(waiting);
        let t = running.await.unwrap();
        assert!(hears_chest(&t.text));
        let after = pool.transcribe(req()).await.unwrap();
        assert!(hears_chest(&after.text));
    });
    assert_eq!(pool.idle(), 1);
    assert_eq!(pool.queue_len(), 0);
}

#[test]
fn a_cancelled_decode_says_so_and_the_decoder_works_after_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let samples = chest_pain_reply();
    let opts = DecodeOptions::default();
    let mut rec = model().recognizer().unwrap();

    // Cancelled before it starts: whisper is not run at all.
    rec.set_cancel(Some(Arc::new(AtomicBool::new(true))));
    let r = rec.transcribe(&samples, Some(Lang::En), None, &opts);
    assert!(
        matches!(r, Err(voicecare_speech::SpeechError::Cancelled)),
        "{r:?}"
    );

    // Cancelled while it runs (from another thread): whisper.cpp stops at
    // its next check, and the result is a cancellation, never a transcript.
    let flag = Arc::new(AtomicBool::new(false));
    rec.set_cancel(Some(flag.clone()));
    let setter = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        flag.store(true, Ordering::Relaxed);
    });
    let r = rec.transcribe(&samples, Some(Lang::En), None, &opts);
    setter.join().unwrap();
    assert!(
        matches!(r, Err(voicecare_speech::SpeechError::Cancelled)),
        "{r:?}"
    );

    // The same decoder, no longer cancelled, hears the clip.
    rec.set_cancel(None);
    let t = rec
        .transcribe(&samples, Some(Lang::En), None, &opts)
        .unwrap();
    assert!(hears_chest(&t.text), "{}", t.text);
}

#[test]
fn a_truncated_fixture_copy_is_a_clear_error() {
    let src = fixtures_dir().join("real/librivox_0880.flac");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.flac");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = voicecare_media::load(&cut, None).unwrap_err().to_string();
    assert!(e.contains("cut.flac") && e.contains("truncated"), "{e}");
}

#[test]
fn missing_model_error_names_the_install_command() {
    let dir = tempfile::tempdir().unwrap();
    let e = voicecare_speech::models::find_model_in("base", dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("voicecare model install base"), "{e}");
}
