//! Prompt audio: recorded files where a flow names one, otherwise text
//! synthesised once and cached as WAV under the data directory.
//!
//! The default synthesiser is espeak-ng (`en-us` for English; Mandarin is
//! converted to tone-numbered pinyin and spoken with `cmn-latn-pinyin`, which
//! pronounces tones far better than espeak's own character reading). The
//! cache key is a SHA-256 of (engine, voice, rate, text), so a changed prompt
//! text or rate renders anew and old files are simply never read again.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use voicecare_core::flow::Lang;

/// Prompt audio is 16 kHz mono, the call legs' format.
pub const RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("speech synthesis failed: {0}")]
    Synth(String),
    #[error("prompt audio {}: {what}", path.display())]
    Audio { path: PathBuf, what: String },
}

/// Something that turns text into speech.
pub trait Synthesizer: Send + Sync + 'static {
    /// Identifies the engine and its version in cache keys.
    fn name(&self) -> &str;
    /// Render `text` in `lang` at `rate` (1.0 = normal) into a WAV file.
    fn render(&self, text: &str, lang: Lang, rate: f32, out: &Path) -> Result<(), TtsError>;
}

/// espeak-ng, run as a process.
#[derive(Debug, Clone)]
pub struct Espeak {
    pub program: PathBuf,
    /// Words per minute at rate 1.0.
    pub wpm: f32,
}

impl Default for Espeak {
    fn default() -> Self {
        Self {
            program: PathBuf::from("espeak-ng"),
            wpm: 165.0,
        }
    }
}

impl Espeak {
    fn voice(lang: Lang) -> &'static str {
        match lang {
            Lang::En => "en-us",
            Lang::Zh => "cmn-latn-pinyin",
        }
    }
}

impl Synthesizer for Espeak {
    fn name(&self) -> &str {
        "espeak-ng/1"
    }

    fn render(&self, text: &str, lang: Lang, rate: f32, out: &Path) -> Result<(), TtsError> {
        let spoken = match lang {
            Lang::Zh => to_tone_pinyin(text),
            Lang::En => text.to_string(),
        };
        let wpm = (self.wpm * rate.clamp(0.5, 2.0)).round() as u32;
        let output = Command::new(&self.program)
            .arg("-v")
            .arg(Self::voice(lang))
            .arg("-s")
            .arg(wpm.to_string())
            .arg("-w")
            .arg(out)
            .arg("--")
            .arg(&spoken)
            .output()
            .map_err(|e| TtsError::Synth(format!("cannot run {}: {e}", self.program.display())))?;
        if !output.status.success() {
            return Err(TtsError::Synth(format!(
                "{} exited with {}: {}",
                self.program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Mandarin text as tone-numbered pinyin syllables (`ni3 hao3`); characters
/// without a reading (digits, Latin letters) are kept, punctuation becomes a
/// pause.
pub fn to_tone_pinyin(text: &str) -> String {
    use pinyin::ToPinyin;
    let mut out = String::new();
    let mut after_syllable = false;
    for c in text.chars() {
        if let Some(p) = c.to_pinyin() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            out.push_str(p.with_tone_num_end());
            after_syllable = true;
            continue;
        }
        let was_syllable = std::mem::replace(&mut after_syllable, false);
        if "，。！？；：、,.!?;:“”\"（）()".contains(c) {
            let p = if "。！？.!?".contains(c) {
                ". "
            } else {
                ", "
            };
            out.truncate(out.trim_end().len());
            out.push_str(p);
        } else if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            if was_syllable {
                out.push(' ');
            }
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// Renders and caches prompts.
pub struct Prompts {
    synth: Box<dyn Synthesizer>,
    cache_dir: PathBuf,
    /// Recorded prompt files named by flows are relative to this directory.
    audio_dir: PathBuf,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts")
            .field("synth", &self.synth.name())
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl Prompts {
    pub fn new(synth: Box<dyn Synthesizer>, cache_dir: PathBuf, audio_dir: PathBuf) -> Self {
        Self {
            synth,
            cache_dir,
            audio_dir,
        }
    }

    /// The cache file for a text prompt.
    pub fn cache_path(&self, text: &str, lang: Lang, rate: f32) -> PathBuf {
        let mut h = Sha256::new();
        for part in [
            self.synth.name(),
            Espeak::voice(lang),
            &format!("{rate:.3}"),
            text,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        self.cache_dir
            .join(format!("{}.wav", &hex::encode(h.finalize())[..32]))
    }

    /// 16 kHz mono PCM for a prompt: the recorded file if one is named and
    /// readable, else synthesised text (rendered once, then read from the cache).
    /// Blocking: call from a blocking thread.
    pub fn pcm(
        &self,
        text: &str,
        audio: Option<&str>,
        lang: Lang,
        rate: f32,
    ) -> Result<Vec<i16>, TtsError> {
        if let Some(file) = audio {
            let path = self.audio_dir.join(file);
            match read_pcm(&path) {
                Ok(pcm) => return Ok(pcm),
                Err(e) => {
                    tracing::warn!(error = %e, "recorded prompt unusable; synthesising its text")
                }
            }
        }
        let path = self.cache_path(text, lang, rate);
        if let Ok(pcm) = read_pcm(&path) {
            return Ok(pcm);
        }
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| TtsError::Audio {
            path: self.cache_dir.clone(),
            what: e.to_string(),
        })?;
        // Render to a temporary name and rename, so a crash never leaves a
        // truncated file under the real key. The name is unique per render:
        // concurrent calls asking for the same prompt must not share it.
        static RENDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        self.synth.render(text, lang, rate, &tmp)?;
        let audio = voicecare_media::audio::read_wav(&tmp)
            .and_then(|a| a.to_rate(RATE))
            .map_err(|e| TtsError::Audio {
                path: tmp.clone(),
                what: e.to_string(),
            })?;
        voicecare_media::audio::write_wav(&tmp, &audio).map_err(|e| TtsError::Audio {
            path: tmp.clone(),
            what: e.to_string(),
        })?;
        std::fs::rename(&tmp, &path).map_err(|e| TtsError::Audio {
            path: path.clone(),
            what: e.to_string(),
        })?;
        Ok(to_i16(&audio.samples))
    }
}

fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| voicecare_media::audio::f32_to_i16(s))
        .collect()
}

fn read_pcm(path: &Path) -> Result<Vec<i16>, TtsError> {
    let audio = voicecare_media::load(path, None)
        .and_then(|a| a.to_rate(RATE))
        .map_err(|e| TtsError::Audio {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if audio.samples.is_empty() {
        return Err(TtsError::Audio {
            path: path.to_path_buf(),
            what: "no audio".into(),
        });
    }
    Ok(to_i16(&audio.samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mandarin_becomes_tone_numbered_pinyin() {
        assert_eq!(to_tone_pinyin("您好，再见。"), "nin2 hao3, zai4 jian4.");
        assert_eq!(to_tone_pinyin("请按1"), "qing3 an4 1");
    }
}
