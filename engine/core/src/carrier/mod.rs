//! What the phone network and the callee's equipment say before (or instead
//! of) the elder: carrier announcements and answering machines.
//!
//! Both are pure and fed what the call's hearing already produces:
//! - [`announcement::classify`] reads a transcript of early media or of the
//!   first seconds after the answer and names the announcement (switched off,
//!   unreachable, busy, vacant number, please hold, suspended, no answer),
//!   with the phrases that show it;
//! - [`amd::Amd`] is fed speech start/stop times, beeps (from
//!   `voicecare_media::tone`) and transcripts after the answer, and decides
//!   person, machine or uncertain (treated as a person).
//!
//! Run the announcement classifier first on every transcript of the first
//! seconds: a carrier's recording is not an answering machine, and it must
//! never reach the check-in flow or the distress classifier as the elder's
//! words. Figures on the fixtures: docs/telephony.md, "Carrier announcements
//! and answering machines".

pub mod amd;
pub mod announcement;
mod phrase;

pub use amd::{Amd, AmdConfig, AmdEvent, Cause, Decision, Verdict, machine_words};
pub use announcement::{Announcement, AnnouncementKind, Evidence, Role, classify};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply of the distress evaluation sets is an elder speaking.
    const ELDER_SETS: [&str; 4] = [
        include_str!("../../../../tests/distress/eval-en.jsonl"),
        include_str!("../../../../tests/distress/eval-zh.jsonl"),
        include_str!("../../../../tests/distress/heldout-en.jsonl"),
        include_str!("../../../../tests/distress/heldout-zh.jsonl"),
    ];

    fn elder_replies() -> Vec<String> {
        ELDER_SETS
            .iter()
            .flat_map(|set| set.lines())
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("jsonl");
                v["text"].as_str().expect("text").to_string()
            })
            .collect()
    }

    #[test]
    fn no_elder_reply_is_taken_for_an_announcement_or_a_machine() {
        let replies = elder_replies();
        assert!(replies.len() > 300, "{}", replies.len());
        let announced: Vec<_> = replies
            .iter()
            .filter_map(|t| classify(t).map(|a| (t, a.kind)))
            .collect();
        assert!(announced.is_empty(), "{announced:?}");
        let machine: Vec<_> = replies
            .iter()
            .filter_map(|t| machine_words(t).map(|p| (t, p)))
            .collect();
        assert!(machine.is_empty(), "{machine:?}");
    }
}
