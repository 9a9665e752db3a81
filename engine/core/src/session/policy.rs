//! Business rules around a call that are not the flow's: the pick-up
//! deadlines of the queue, an elder's own ladder settings, the compressed
//! ladder of drills, which flow answers which call, what a call back says.

use crate::flow::CallReport;
use crate::schedule::LadderPolicy;
use crate::{Lang, Level};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

/// The flow an elder's own call (help button, dial-in) is answered with.
pub const DIAL_IN_FLOW: &str = "help_line";
/// The flow a scheduled check-in runs when the schedule names none.
pub const CHECKIN_FLOW: &str = "daily_checkin";
/// The flow an emergency contact is rung with.
pub const CONTACT_FLOW: &str = "contact_confirm";

/// How soon an operator must pick up an item of each level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    pub emergency_secs: i64,
    pub urgent_secs: i64,
    pub watch_secs: i64,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        Self {
            emergency_secs: 60,
            urgent_secs: 4 * 3600,
            watch_secs: 24 * 3600,
        }
    }
}

impl SlaPolicy {
    pub fn for_level(&self, level: Level) -> Duration {
        Duration::seconds(match level {
            Level::Emergency => self.emergency_secs,
            Level::Urgent => self.urgent_secs,
            Level::Watch | Level::Ok => self.watch_secs,
        })
    }
}

/// The programme's ladder with an elder's own schedule settings applied,
/// kept within sane bounds (1–10 calls, retries at least a minute apart).
pub fn elder_ladder(
    programme: &LadderPolicy,
    max_attempts: Option<i16>,
    retry_minutes: Option<i16>,
) -> LadderPolicy {
    let mut policy = programme.clone();
    if let Some(a) = max_attempts {
        policy.attempts = a.clamp(1, 10) as u32;
    }
    if let Some(r) = retry_minutes {
        policy.retry_after_minutes = r.max(1) as u32;
    }
    policy
}

/// When a ladder wait falls due if a ladder "minute" lasts `minute_ms`
/// (60,000 in service; shorter for drills and tests).
pub fn scaled_due(at: DateTime<Utc>, now: DateTime<Utc>, minute_ms: u64) -> DateTime<Utc> {
    let wait_ms = (at - now).num_milliseconds().max(0);
    now + Duration::milliseconds(wait_ms.saturating_mul(minute_ms as i64) / 60_000)
}

/// Whether an emergency contact confirmed, by key, that they will check on the elder.
pub fn contact_confirmed(report: Option<&CallReport>) -> bool {
    report.is_some_and(|r| r.variables.get("contact_confirmed").map(String::as_str) == Some("yes"))
}

/// The values every flow can use in its prompts.
pub fn flow_inputs(elder_name: &str, service_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("elder_name".to_string(), elder_name.to_string()),
        ("service_name".to_string(), service_name.to_string()),
        ("callback_when".to_string(), "today".to_string()),
    ])
}

/// What the elder hears on answering a call back, before the operator: who
/// is calling, and that the call is recorded. `missed`: the operator had to
/// leave while it rang, so the elder is told rather than hung up on in silence.
pub fn callback_notice(lang: Lang, service: &str, missed: bool) -> String {
    match (lang, missed) {
        (Lang::Zh, false) => {
            format!("您好，这里是{service}。护理团队的工作人员给您回电话，通话会被录音。")
        }
        (Lang::Zh, true) => format!(
            "您好，这里是{service}。抱歉，刚才给您打电话的工作人员有事走开了，护理团队会很快再给您打电话。"
        ),
        (Lang::En, false) => format!(
            "Hello, this is {service}. Someone from your care team is calling you back. This call is recorded."
        ),
        (Lang::En, true) => format!(
            "Hello, this is {service}. Sorry, the person calling you had to step away. Someone from your care team will call you again soon."
        ),
    }
}

/// What a caller whose number is not enrolled hears: asked for the care
/// number on the keypad, in both languages (we do not know theirs yet).
pub fn identify_prompt(service: &str, again: bool) -> [(Lang, String); 2] {
    if again {
        [
            (
                Lang::Zh,
                "没有找到这个号码。请再输入一次您的护理编号，然后按井号键。".to_string(),
            ),
            (
                Lang::En,
                "That number was not found. Please key your care number again, then the hash key."
                    .to_string(),
            ),
        ]
    } else {
        [
            (
                Lang::Zh,
                format!(
                    "您好，这里是{service}。您的电话号码没有登记。请输入您的护理编号，然后按井号键。"
                ),
            ),
            (
                Lang::En,
                format!(
                    "Hello, this is {service}. This phone number is not enrolled. Please key your care number, then the hash key."
                ),
            ),
        ]
    }
}

/// The goodbye to a caller who could not be identified.
pub fn unidentified_goodbye() -> [(Lang, String); 2] {
    [
        (Lang::Zh, "抱歉，我们无法确认您的身份。如有紧急情况，请挂断后拨打120。".to_string()),
        (Lang::En, "Sorry, we could not identify you. In an emergency, hang up and call your local emergency number.".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_elders_ladder_is_clamped() {
        let base = LadderPolicy::default();
        let p = elder_ladder(&base, Some(99), Some(0));
        assert_eq!(p.attempts, 10);
        assert_eq!(p.retry_after_minutes, 1);
        let p = elder_ladder(&base, None, None);
        assert_eq!(p.attempts, base.attempts);
    }

    #[test]
    fn ladder_minutes_scale_for_drills() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = now + Duration::minutes(10);
        assert_eq!(scaled_due(at, now, 60_000), at);
        assert_eq!(scaled_due(at, now, 2_000), now + Duration::seconds(20));
        assert_eq!(scaled_due(now - Duration::minutes(1), now, 2_000), now);
    }

    #[test]
    fn deadlines_tighten_with_the_level() {
        let sla = SlaPolicy::default();
        assert!(sla.for_level(Level::Emergency) < sla.for_level(Level::Urgent));
        assert!(sla.for_level(Level::Urgent) < sla.for_level(Level::Watch));
    }

    #[test]
    fn the_call_back_notice_says_the_call_is_recorded_or_that_the_operator_left() {
        assert!(callback_notice(Lang::En, "Care", false).contains("recorded"));
        assert!(callback_notice(Lang::En, "Care", true).contains("step away"));
        assert!(callback_notice(Lang::Zh, "关爱", false).contains("录音"));
        assert!(callback_notice(Lang::Zh, "关爱", true).contains("关爱"));
    }
}
