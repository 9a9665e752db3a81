//! The one place that decides whether a call goes to the operator queue,
//! at what level and why.
//!
//! Every escalation of every call is built here, from a [`Trigger`]: words
//! heard before the reply ended, the flow's decision after a judged reply,
//! words read after the call ended, a flow that broke down, a help call
//! that could not be answered, a fault in the engine, an elder nobody could
//! reach. The session and the dialer only name what happened.

use crate::Level;
use crate::distress::{self, Assessment};
use serde::Serialize;

/// Rule ids of escalations raised before the end of a reply.
pub const EARLY_RULE: &str = "runner.early_transcript";
/// Rule of a finding in what a callee said on picking up the phone.
pub const ON_ANSWER_RULE: &str = "session.on_answer";
pub const PARTIAL_RULE: &str = "runner.partial_transcript";

/// One reason an operator reads. Findings of the classifier keep all their
/// detail (span, summary, whether matched by sound); the others say what
/// happened in a sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reason {
    Finding(distress::Reason),
    Note {
        category: String,
        evidence: String,
        rule: String,
    },
}

impl Reason {
    pub fn note(category: &str, evidence: impl Into<String>, rule: impl Into<String>) -> Self {
        Reason::Note {
            category: category.to_string(),
            evidence: evidence.into(),
            rule: rule.into(),
        }
    }

    pub fn rule(&self) -> &str {
        match self {
            Reason::Finding(r) => &r.rule,
            Reason::Note { rule, .. } => rule,
        }
    }
}

/// An item for the operator queue. Raising one for a call that already has
/// an open item raises that item (level only goes up, reasons accumulate).
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub level: Level,
    pub categories: Vec<String>,
    pub reasons: Vec<Reason>,
    /// The elder is being kept on the line for an operator to join.
    pub elder_on_line: bool,
}

/// What happened that may need a person.
#[derive(Debug, Clone, Copy)]
pub enum Trigger<'a> {
    /// A clear emergency read before the elder finished the reply.
    HeardEarly {
        assessment: &'a Assessment,
        /// Read while still speaking (else during a pause).
        while_speaking: bool,
    },
    /// The flow decided to escalate (after a judged reply, a confirmation,
    /// silence); `categories` are those of the last reply heard.
    Flow {
        level: Level,
        reasons: &'a [String],
        step: &'a str,
        categories: &'a [String],
        keep_on_line: bool,
    },
    /// Words read after the call had ended.
    HeardAfterEnd { assessment: &'a Assessment },
    /// Words said on picking up a telephone, before the check-in began
    /// (while the answer was screened, `session::screen`).
    HeardOnAnswer { assessment: &'a Assessment },
    /// The flow could not continue.
    FlowAborted { reason: &'a str },
    /// An elder called in and there is no help flow to answer with.
    HelpCallWithoutFlow,
    /// An elder called in (pressed help) and the call's media never connected.
    HelpCallFailed,
    /// The call stopped on a fault of the engine.
    EngineFault,
    /// Nobody could be reached after the whole ladder.
    Unreachable { level: Level, reason: &'a str },
    /// An open concern got worse, or stayed the same call after call
    /// (`memory::after_answer`); `reason` is its history.
    ConcernTrend {
        level: Level,
        category: &'a str,
        reason: &'a str,
    },
}

/// Whether and how to escalate. `None`: nothing for a person to do.
pub fn decide(trigger: Trigger<'_>) -> Option<Escalation> {
    match trigger {
        Trigger::HeardEarly {
            assessment,
            while_speaking,
        } => {
            let (rule, evidence) = if while_speaking {
                (PARTIAL_RULE, "heard while the elder was still speaking")
            } else {
                (
                    EARLY_RULE,
                    "heard during the elder's pause, before the end of the turn",
                )
            };
            let mut e = from_assessment(assessment)?;
            e.reasons.push(Reason::note("early", evidence, rule));
            Some(e)
        }
        Trigger::Flow {
            level,
            reasons,
            step,
            categories,
            keep_on_line,
        } => {
            if !level.escalates() {
                return None;
            }
            let categories = if categories.is_empty() {
                vec!["flow".to_string()]
            } else {
                categories.to_vec()
            };
            Some(Escalation {
                level,
                categories,
                reasons: reasons
                    .iter()
                    .map(|r| Reason::note("flow", r.clone(), format!("flow.{step}")))
                    .collect(),
                elder_on_line: keep_on_line,
            })
        }
        Trigger::HeardOnAnswer { assessment } => {
            let mut e = from_assessment(assessment)?;
            e.reasons.push(Reason::note(
                "on_answer",
                "said on picking up the phone, before the check-in began",
                ON_ANSWER_RULE,
            ));
            Some(e)
        }
        Trigger::HeardAfterEnd { assessment } => {
            let mut e = from_assessment(assessment)?;
            // The last thing an elder says matters most, but the operator
            // must know the engine did not hear it while talking.
            e.reasons = vec![Reason::note(
                "late_utterance",
                "heard after the call ended",
                "runner.late_utterance",
            )];
            Some(e)
        }
        Trigger::FlowAborted { reason } => Some(note(
            Level::Urgent,
            "flow_fault",
            reason,
            "runner.flow_aborted",
        )),
        Trigger::HelpCallWithoutFlow => Some(note(
            Level::Emergency,
            "help_request",
            "the elder called in and no help flow is loaded",
            "runner.no_flow",
        )),
        Trigger::HelpCallFailed => Some(note(
            Level::Urgent,
            "help_request",
            "help pressed, call failed: the elder's call never connected",
            "runner.help_call_failed",
        )),
        Trigger::EngineFault => Some(note(
            Level::Urgent,
            "engine_fault",
            "the call stopped because of a fault in the engine",
            "runner.fault",
        )),
        Trigger::Unreachable { level, reason } => Some(note(
            if level.escalates() {
                level
            } else {
                Level::Urgent
            },
            "unreachable",
            reason,
            "ladder.unreachable",
        )),
        Trigger::ConcernTrend {
            level,
            category,
            reason,
        } => level
            .escalates()
            .then(|| note(level, category, reason, "memory.trend")),
    }
}

/// A finding heard in a reply that cannot wait for the end of the turn: a
/// clear, confidently heard emergency (anything less waits for the flow).
pub fn is_clear_emergency(a: &Assessment) -> bool {
    a.level == Level::Emergency && !a.needs_confirmation
}

fn from_assessment(a: &Assessment) -> Option<Escalation> {
    if !a.level.escalates() {
        return None;
    }
    Some(Escalation {
        level: a.level,
        categories: a
            .categories
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        reasons: a.reasons.iter().cloned().map(Reason::Finding).collect(),
        elder_on_line: false,
    })
}

fn note(level: Level, category: &str, evidence: &str, rule: &str) -> Escalation {
    Escalation {
        level,
        categories: vec![category.to_string()],
        reasons: vec![Reason::note(category, evidence, rule)],
        elder_on_line: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lang;
    use crate::distress::{Classifier, Utterance};

    fn assess(text: &str, lang: Lang) -> Assessment {
        Classifier::shared().assess(&Utterance::new(text).lang(lang).asr_confidence(0.9))
    }

    #[test]
    fn an_early_emergency_keeps_the_findings_and_says_when_it_was_heard() {
        let a = assess("Help, I fell down and I can't get up", Lang::En);
        let e = decide(Trigger::HeardEarly {
            assessment: &a,
            while_speaking: true,
        })
        .unwrap();
        assert_eq!(e.level, Level::Emergency);
        assert!(
            e.categories.iter().any(|c| c == "fall"),
            "{:?}",
            e.categories
        );
        assert_eq!(e.reasons.last().unwrap().rule(), PARTIAL_RULE);
        assert!(matches!(e.reasons[0], Reason::Finding(_)));
    }

    #[test]
    fn nothing_to_escalate_gives_none() {
        let fine = assess("I'm fine thank you", Lang::En);
        assert!(decide(Trigger::HeardAfterEnd { assessment: &fine }).is_none());
        assert!(
            decide(Trigger::Flow {
                level: Level::Ok,
                reasons: &[],
                step: "s",
                categories: &[],
                keep_on_line: false
            })
            .is_none()
        );
    }

    #[test]
    fn flow_escalations_name_their_step_and_fall_back_to_the_flow_category() {
        let e = decide(Trigger::Flow {
            level: Level::Urgent,
            reasons: &["no answer to the confirmation".to_string()],
            step: "confirm",
            categories: &[],
            keep_on_line: true,
        })
        .unwrap();
        assert_eq!(e.categories, ["flow"]);
        assert_eq!(e.reasons[0].rule(), "flow.confirm");
        assert!(e.elder_on_line);
    }

    #[test]
    fn a_failed_help_call_is_urgent_and_says_so() {
        let e = decide(Trigger::HelpCallFailed).unwrap();
        assert!(e.level >= Level::Urgent);
        assert_eq!(e.categories, ["help_request"]);
        let e = decide(Trigger::HelpCallWithoutFlow).unwrap();
        assert_eq!(e.level, Level::Emergency);
        let e = decide(Trigger::Unreachable {
            level: Level::Ok,
            reason: "x",
        })
        .unwrap();
        assert_eq!(
            e.level,
            Level::Urgent,
            "an unreachable elder is never left off the queue"
        );
    }

    #[test]
    fn reasons_serialise_as_the_console_reads_them() {
        let r = Reason::note("early", "heard", "runner.x");
        let json = serde_json_like(&r);
        assert!(json.contains("\"rule\":\"runner.x\""), "{json}");
    }

    /// serde's own JSON is not a dependency of the core; TOML's serialiser
    /// shows the same field names.
    fn serde_json_like(r: &Reason) -> String {
        let t = toml::to_string(r).unwrap();
        t.lines()
            .map(|l| {
                let (k, v) = l.split_once(" = ").unwrap();
                format!("\"{k}\":{v}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}
