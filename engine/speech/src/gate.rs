//! Hallucination gates: whisper invents fluent text on silence, line noise,
//! tones and music ("Thank you for watching", "字幕由…提供"), and sometimes
//! repeats its initial prompt back. These checks decide, from the decoder's
//! own statistics and the text, when a transcript must be thrown away.
//!
//! The thresholds start from the ones openai-whisper uses to judge a segment
//! (no-speech probability 0.6 together with average log-probability -1.0;
//! compression ratio 2.4).

use crate::recognizer::Lang;
use crate::text;

/// Thresholds for [`check`].
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Drop when the no-speech probability is above this...
    pub no_speech_prob: f32,
    /// ...and the average token log-probability is below this.
    pub logprob_with_no_speech: f32,
    /// Drop whatever the no-speech probability when the average log-probability is below this.
    pub min_avg_logprob: f32,
    /// Drop looping output whose compression ratio is above this.
    pub max_compression_ratio: f32,
    /// Mark (not drop) a transcript as low confidence below this average log-probability...
    pub low_confidence_logprob: f32,
    /// ...or above this no-speech probability.
    pub low_confidence_no_speech: f32,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            no_speech_prob: 0.6,
            logprob_with_no_speech: -1.0,
            min_avg_logprob: -1.6,
            max_compression_ratio: 2.4,
            low_confidence_logprob: -0.7,
            low_confidence_no_speech: 0.35,
        }
    }
}

/// Why a transcript was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateReason {
    /// Voice activity detection found no speech; whisper was not run.
    NoSpeechDetected,
    /// The decoder itself judged the audio to be non-speech.
    NoSpeechProbability,
    /// The decoder was too unsure of every word.
    LowLogProb,
    /// The output loops.
    Repetitive,
    /// A phrase whisper is known to invent on non-speech audio.
    KnownHallucination,
    /// The output repeats the initial prompt.
    PromptEcho,
}

impl GateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GateReason::NoSpeechDetected => "no_speech_detected",
            GateReason::NoSpeechProbability => "no_speech_probability",
            GateReason::LowLogProb => "low_logprob",
            GateReason::Repetitive => "repetitive",
            GateReason::KnownHallucination => "known_hallucination",
            GateReason::PromptEcho => "prompt_echo",
        }
    }
}

/// Phrases from subtitle credits and video outros in whisper's training data:
/// any transcript containing one of these is discarded.
const ALWAYS: &[&str] = &[
    "thanks for watching",
    "thank you for watching",
    "please subscribe",
    "subscribe to",
    "like and subscribe",
    "see you in the next video",
    "amara.org",
    "www.",
    ".com",
    "subtitles by",
    "captions by",
    "transcribed by",
    "字幕",
    "订阅",
    "訂閱",
    "点赞",
    "點贊",
    "打赏",
    "支持明镜",
    "明镜与点点",
    "感谢观看",
    "谢谢观看",
    "謝謝觀看",
    "谢谢收看",
    "优优独播剧场",
    "by bwd6",
];

/// Short outputs that are real replies when spoken but also common inventions on
/// noise: discarded only when the decoder or the VAD has doubts.
const WHEN_DOUBTFUL: &[&str] = &[
    "thank you",
    "thanks",
    "you",
    "bye",
    "bye bye",
    "okay",
    "oh",
    "谢谢",
    "谢谢大家",
    "嗯",
    "好",
    "拜拜",
    "music",
];

/// Inputs to [`check`]. `Debug` shows the text's length only.
#[derive(Clone)]
pub struct Evidence<'a> {
    pub text: &'a str,
    pub lang: Option<Lang>,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub compression_ratio: f32,
    /// Speech the VAD found in the audio (ms).
    pub speech_ms: u32,
    pub prompt: Option<&'a str>,
}

impl std::fmt::Debug for Evidence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use voicecare_core::redact::redacted_words;
        f.debug_struct("Evidence")
            .field("text", &redacted_words(self.text))
            .field("lang", &self.lang)
            .field("avg_logprob", &self.avg_logprob)
            .field("no_speech_prob", &self.no_speech_prob)
            .field("compression_ratio", &self.compression_ratio)
            .field("speech_ms", &self.speech_ms)
            .field("prompt", &self.prompt.map(redacted_words))
            .finish()
    }
}

fn squash(s: &str) -> String {
    text::to_simplified(s)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '.' || *c == '\'')
        .collect::<String>()
        .trim_matches('.')
        .to_string()
}

fn words(s: &str) -> String {
    let lower = text::to_simplified(s).to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Does the text repeat the initial prompt? True when the text contains the
/// prompt's leading sentence (for example 以下是普通话的句子), or when it is a long
/// stretch copied out of the prompt. A short reply that happens to be one of the
/// prompt's keywords ("救命", "help") is *not* an echo.
pub fn is_prompt_echo(text: &str, prompt: &str) -> bool {
    let t = squash(text).replace('.', "");
    let p = squash(prompt).replace('.', "");
    if t.is_empty() || p.is_empty() {
        return false;
    }
    let lead: String = squash(
        prompt
            .split(['。', '.', '，', ',', '：', ':'])
            .next()
            .unwrap_or(prompt),
    )
    .replace('.', "");
    if lead.chars().count() >= 6 && t.contains(&lead) {
        return true;
    }
    let tn = t.chars().count();
    tn >= 8 && tn * 2 >= p.chars().count() && p.contains(&t)
}

/// Decide whether to keep a transcript. `None` keeps it.
pub fn check(ev: &Evidence, cfg: &GateConfig) -> Option<GateReason> {
    if ev.speech_ms == 0 {
        return Some(GateReason::NoSpeechDetected);
    }
    if ev.text.trim().is_empty() {
        return None;
    }
    if ev.no_speech_prob > cfg.no_speech_prob && ev.avg_logprob < cfg.logprob_with_no_speech {
        return Some(GateReason::NoSpeechProbability);
    }
    if ev.avg_logprob < cfg.min_avg_logprob {
        return Some(GateReason::LowLogProb);
    }
    if ev.compression_ratio > cfg.max_compression_ratio || text::is_looping(ev.text) {
        return Some(GateReason::Repetitive);
    }
    if let Some(p) = ev.prompt
        && is_prompt_echo(ev.text, p)
    {
        return Some(GateReason::PromptEcho);
    }
    let w = words(ev.text);
    let flat = squash(ev.text);
    if ALWAYS
        .iter()
        .any(|d| w.contains(d) || flat.contains(&d.replace(' ', "")))
    {
        return Some(GateReason::KnownHallucination);
    }
    let doubtful = ev.no_speech_prob > 0.2
        || ev.speech_ms < 400
        || ev.avg_logprob < cfg.low_confidence_logprob;
    if doubtful
        && WHEN_DOUBTFUL
            .iter()
            .any(|d| w == *d || flat == d.replace(' ', ""))
    {
        return Some(GateReason::KnownHallucination);
    }
    None
}

/// Should the call flow confirm what it heard (e.g. "Did you say you fell?")?
pub fn is_low_confidence(avg_logprob: f32, no_speech_prob: f32, cfg: &GateConfig) -> bool {
    avg_logprob < cfg.low_confidence_logprob || no_speech_prob > cfg.low_confidence_no_speech
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str) -> Evidence<'_> {
        Evidence {
            text,
            lang: Some(Lang::En),
            avg_logprob: -0.3,
            no_speech_prob: 0.05,
            compression_ratio: text::compression_ratio(text),
            speech_ms: 2000,
            prompt: None,
        }
    }

    #[test]
    fn real_replies_pass() {
        let cfg = GateConfig::default();
        for t in [
            "I'm fine, thank you. I had breakfast.",
            "Thank you.",
            "I fell down.",
            "救命",
            "我很好，谢谢。",
        ] {
            assert_eq!(check(&ev(t), &cfg), None, "{t}");
        }
    }

    #[test]
    fn credits_and_outros_are_dropped() {
        let cfg = GateConfig::default();
        for t in [
            "Thanks for watching!",
            "字幕由Amara.org社区提供",
            "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目",
        ] {
            assert_eq!(
                check(&ev(t), &cfg),
                Some(GateReason::KnownHallucination),
                "{t}"
            );
        }
    }

    #[test]
    fn doubtful_short_thanks_is_dropped() {
        let cfg = GateConfig::default();
        let e = Evidence {
            no_speech_prob: 0.5,
            ..ev("Thank you.")
        };
        assert_eq!(check(&e, &cfg), Some(GateReason::KnownHallucination));
    }

    #[test]
    fn decoder_statistics_gate() {
        let cfg = GateConfig::default();
        let e = Evidence {
            no_speech_prob: 0.9,
            avg_logprob: -1.2,
            ..ev("So.")
        };
        assert_eq!(check(&e, &cfg), Some(GateReason::NoSpeechProbability));
        let e = Evidence {
            avg_logprob: -2.0,
            ..ev("ha ha")
        };
        assert_eq!(check(&e, &cfg), Some(GateReason::LowLogProb));
        let looped = "I'm fine. ".repeat(15);
        assert_eq!(check(&ev(&looped), &cfg), Some(GateReason::Repetitive));
        let e = Evidence {
            speech_ms: 0,
            ..ev("Hello")
        };
        assert_eq!(check(&e, &cfg), Some(GateReason::NoSpeechDetected));
    }

    #[test]
    fn prompt_echo_is_dropped_but_keywords_are_not() {
        let prompt = "以下是普通话的句子。摔倒，救命，胸口疼，喘不上气。";
        assert!(is_prompt_echo("以下是普通话的句子。", prompt));
        assert!(is_prompt_echo("摔倒，救命，胸口疼，喘不上气", prompt));
        assert!(!is_prompt_echo("救命", prompt));
        assert!(!is_prompt_echo("我摔倒了，起不来", prompt));
        let e = Evidence {
            prompt: Some(prompt),
            lang: Some(Lang::Zh),
            ..ev("以下是普通话的句子")
        };
        assert_eq!(
            check(&e, &GateConfig::default()),
            Some(GateReason::PromptEcho)
        );
    }
}
