//! The languages voicecare speaks and hears: one type for flows, the
//! classifier, speech recognition and the store.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A language an elder is called in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Mandarin Chinese, written in Simplified characters.
    Zh,
    /// English.
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    /// The code stored in the database and written in flow files.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// Same as [`Lang::as_str`]; whisper's language code.
    pub fn code(self) -> &'static str {
        self.as_str()
    }

    /// A code as stored or as whisper reports it (`cmn`, `zh-cn` are Mandarin).
    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim().to_ascii_lowercase().as_str() {
            "zh" | "cmn" | "zh-cn" | "zh-hans" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lang::from_code(s).ok_or_else(|| format!("unknown language {s:?}: expected en or zh"))
    }
}

#[cfg(test)]
mod tests {
    use super::Lang;

    #[test]
    fn codes_round_trip_and_aliases_are_mandarin() {
        for l in Lang::ALL {
            assert_eq!(l.as_str().parse::<Lang>(), Ok(l));
        }
        assert_eq!(Lang::from_code("cmn"), Some(Lang::Zh));
        assert_eq!(Lang::from_code("ZH-CN"), Some(Lang::Zh));
        assert!("fr".parse::<Lang>().unwrap_err().contains("fr"));
    }
}
