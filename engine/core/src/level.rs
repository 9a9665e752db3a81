//! Distress levels shared by the classifier, the flows and the escalation queue.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How badly an elder needs a human, in increasing order of severity.
///
/// The derived `Ord` follows declaration order, so `Level::Emergency > Level::Urgent`
/// and `max()` picks the most severe of several findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Nothing of concern.
    Ok,
    /// Note it and watch the trend.
    Watch,
    /// A human should act today.
    Urgent,
    /// Life or safety at risk now: a live operator, now.
    Emergency,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Ok, Level::Watch, Level::Urgent, Level::Emergency];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Watch => "watch",
            Level::Urgent => "urgent",
            Level::Emergency => "emergency",
        }
    }

    /// Whether this level goes to the operator queue at all.
    pub fn escalates(self) -> bool {
        self > Level::Ok
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?}: expected one of ok, watch, urgent, emergency")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Level::Ok),
            "watch" => Ok(Level::Watch),
            "urgent" => Ok(Level::Urgent),
            "emergency" => Ok(Level::Emergency),
            other => Err(UnknownLevel(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_severity() {
        assert!(Level::Emergency > Level::Urgent);
        assert!(Level::Urgent > Level::Watch);
        assert!(Level::Watch > Level::Ok);
        assert_eq!(
            [Level::Watch, Level::Emergency, Level::Ok]
                .into_iter()
                .max(),
            Some(Level::Emergency)
        );
    }

    #[test]
    fn parses_round_trip_and_rejects_unknown() {
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>().unwrap(), l);
        }
        let err = "critical".parse::<Level>().unwrap_err();
        assert!(err.to_string().contains("critical"));
    }
}
