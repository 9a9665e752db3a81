//! How calls and attempts end, as stored: `calls.outcome`,
//! `call_attempts.status` and `call_attempts.end_reason`.

use crate::flow::{CallReport, Outcome as FlowOutcome};
use crate::schedule::AttemptOutcome;
use std::fmt;

/// The outcome of a whole call (`calls.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The elder answered and all was well.
    Ok,
    /// Someone on staff must look at it.
    Escalated,
    /// Picked up but never said anything.
    AnsweredSilent,
    /// The elder kept saying they did not understand.
    NotUnderstood,
    /// The elder hung up before the flow finished.
    HungUp,
    /// Nobody could be reached after the whole ladder.
    Unreachable,
    /// The elder was not reached but an emergency contact confirmed they would check.
    ContactConfirmed,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 7] = [
        CallOutcome::Ok,
        CallOutcome::Escalated,
        CallOutcome::AnsweredSilent,
        CallOutcome::NotUnderstood,
        CallOutcome::HungUp,
        CallOutcome::Unreachable,
        CallOutcome::ContactConfirmed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Escalated => "escalated",
            CallOutcome::AnsweredSilent => "answered_silent",
            CallOutcome::NotUnderstood => "not_understood",
            CallOutcome::HungUp => "hung_up",
            CallOutcome::Unreachable => "unreachable",
            CallOutcome::ContactConfirmed => "contact_confirmed",
        }
    }

    /// The outcome of an answered call from its flow's report; a call that
    /// ended without one (the line dropped, no flow) counts as hung up.
    pub fn of_answered(report: Option<&CallReport>) -> Self {
        let Some(report) = report else {
            return CallOutcome::HungUp;
        };
        match &report.outcome {
            FlowOutcome::CompletedOk => CallOutcome::Ok,
            FlowOutcome::Escalated { .. } => CallOutcome::Escalated,
            FlowOutcome::AnsweredSilent => CallOutcome::AnsweredSilent,
            FlowOutcome::NotUnderstood => CallOutcome::NotUnderstood,
            FlowOutcome::ElderHungUp { .. } if report.escalated.is_some() => CallOutcome::Escalated,
            FlowOutcome::ElderHungUp { .. } => CallOutcome::HungUp,
            // A flow that broke down is escalated for a person to follow up.
            FlowOutcome::Aborted { .. } => CallOutcome::Escalated,
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one attempt got to (`call_attempts.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    Ringing,
    Answered,
    Ended,
    NoAnswer,
    Busy,
    Failed,
    Interrupted,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Ringing => "ringing",
            AttemptStatus::Answered => "answered",
            AttemptStatus::Ended => "ended",
            AttemptStatus::NoAnswer => "no_answer",
            AttemptStatus::Busy => "busy",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Interrupted => "interrupted",
        }
    }
}

/// Why an attempt ended (`call_attempts.end_reason`), in words an operator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The flow ran to its end.
    Normal,
    ElderHungUp,
    MediaNeverConnected,
    LeaseLost,
    NoFlow,
    ElderHungUpOnOperator,
    OperatorHungUp,
    OperatorConversationEndedByEngine,
    ContactConfirmed,
    ContactNotConfirmed,
    /// Not reached: see [`SetupFailure`].
    NotReached(SetupFailure),
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Normal => "normal",
            EndReason::ElderHungUp => "elder hung up",
            EndReason::MediaNeverConnected => "media never connected",
            EndReason::LeaseLost => "lease lost",
            EndReason::NoFlow => "no flow",
            EndReason::ElderHungUpOnOperator => "elder hung up on the operator",
            EndReason::OperatorHungUp => "operator hung up",
            EndReason::OperatorConversationEndedByEngine => {
                "operator conversation ended by the engine"
            }
            EndReason::ContactConfirmed => "confirmed",
            EndReason::ContactNotConfirmed => "not confirmed",
            EndReason::NotReached(f) => f.as_str(),
        }
    }
}

impl EndReason {
    /// How a call handed to an operator ended, by who left first.
    pub fn after_operator(by: TalkEndedBy) -> Self {
        match by {
            TalkEndedBy::Elder => EndReason::ElderHungUpOnOperator,
            TalkEndedBy::Operator => EndReason::OperatorHungUp,
            TalkEndedBy::Engine => EndReason::OperatorConversationEndedByEngine,
        }
    }
}

/// Who ended an operator's conversation with an elder (`talks.ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TalkEndedBy {
    Elder,
    Operator,
    Engine,
}

impl TalkEndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            TalkEndedBy::Elder => "elder",
            TalkEndedBy::Operator => "operator",
            TalkEndedBy::Engine => "engine",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a callee was not reached, whatever the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupFailure {
    /// The elder has no device and no number a transport can reach.
    NoDevice,
    /// The transport that reaches the device is not running on this node.
    TransportDown,
    /// The device is enrolled but not connected now.
    DeviceNotConnected,
    /// The device went away while being rung.
    DeviceDisconnected,
    NoAnswer,
    Busy,
    Declined,
    /// The number does not exist or cannot be dialled (SIP 404, 484, 604).
    InvalidNumber,
    /// The phone is switched off or out of coverage (Q.850 cause 20; later
    /// also the carrier's announcement).
    SwitchedOff,
    /// No codec in common with the far end (SIP 488, 415, 606).
    CodecMismatch,
    /// An answering machine or voicemail box took the call (heard in the
    /// first seconds after the answer): no check-in is left on a machine.
    Voicemail,
    /// Our trunk or the carrier failed, or refused us (SIP 403, 5xx, no
    /// response): nothing to do with the callee.
    TrunkFailure,
    /// Anything else that stopped the call being set up.
    SetupFailed,
    ContactRemoved,
    ContactHasNoDevice,
    ContactDeviceNotConnected,
}

impl SetupFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SetupFailure::NoDevice => {
                "the elder has no registered device; telephone numbers need a telephone gateway"
            }
            SetupFailure::TransportDown => "device signalling is not running on this node",
            SetupFailure::DeviceNotConnected => "device not connected",
            SetupFailure::DeviceDisconnected => "device disconnected",
            SetupFailure::NoAnswer => "no answer",
            SetupFailure::Busy => "busy",
            SetupFailure::Declined => "declined",
            SetupFailure::InvalidNumber => "the number does not exist",
            SetupFailure::SwitchedOff => "the phone is switched off or unreachable",
            SetupFailure::CodecMismatch => "no common codec with the far end",
            SetupFailure::Voicemail => "an answering machine took the call",
            SetupFailure::TrunkFailure => "the telephone trunk failed",
            SetupFailure::SetupFailed => "call setup failed",
            SetupFailure::ContactRemoved => "the emergency contact was removed",
            SetupFailure::ContactHasNoDevice => {
                "the contact has only a telephone number and no telephone gateway is configured"
            }
            SetupFailure::ContactDeviceNotConnected => "contact's device not connected",
        }
    }

    /// What an operator calling the elder back is told: a code for the
    /// console and a sentence.
    pub fn for_operator(self) -> (&'static str, &'static str) {
        match self {
            SetupFailure::NoAnswer => ("no_answer", "the elder did not answer"),
            SetupFailure::Busy => ("busy", "the elder's line is busy"),
            SetupFailure::Declined => ("declined", "the elder declined the call"),
            SetupFailure::DeviceDisconnected | SetupFailure::DeviceNotConnected => {
                ("device_offline", "the elder's device disconnected")
            }
            SetupFailure::NoDevice | SetupFailure::TransportDown => (
                "no_device",
                "the elder has no device or telephone number this engine can ring",
            ),
            SetupFailure::InvalidNumber => (
                "invalid_number",
                "the elder's telephone number does not exist; the enrolment needs correcting",
            ),
            SetupFailure::SwitchedOff => (
                "switched_off",
                "the elder's phone is switched off or out of reach",
            ),
            SetupFailure::Voicemail => (
                "voicemail",
                "an answering machine took the call, not the elder",
            ),
            SetupFailure::TrunkFailure => (
                "trunk_failure",
                "the telephone line could not place the call; try again shortly",
            ),
            _ => ("media_failed", "the call to the elder could not be set up"),
        }
    }

    /// The attempt's stored status.
    pub fn status(self) -> AttemptStatus {
        match self {
            SetupFailure::NoAnswer
            | SetupFailure::Declined
            | SetupFailure::SwitchedOff
            | SetupFailure::Voicemail => AttemptStatus::NoAnswer,
            SetupFailure::Busy => AttemptStatus::Busy,
            _ => AttemptStatus::Failed,
        }
    }

    /// The attempt's stored outcome code.
    pub fn dial_outcome(self) -> DialOutcome {
        match self {
            SetupFailure::NoAnswer => DialOutcome::NoAnswer,
            SetupFailure::Busy => DialOutcome::Busy,
            SetupFailure::Declined => DialOutcome::Declined,
            SetupFailure::InvalidNumber => DialOutcome::InvalidNumber,
            SetupFailure::SwitchedOff => DialOutcome::SwitchedOff,
            SetupFailure::CodecMismatch => DialOutcome::CodecMismatch,
            SetupFailure::Voicemail => DialOutcome::Voicemail,
            SetupFailure::TrunkFailure => DialOutcome::TrunkFailure,
            SetupFailure::DeviceNotConnected
            | SetupFailure::DeviceDisconnected
            | SetupFailure::ContactDeviceNotConnected => DialOutcome::DeviceOffline,
            SetupFailure::NoDevice
            | SetupFailure::TransportDown
            | SetupFailure::SetupFailed
            | SetupFailure::ContactRemoved
            | SetupFailure::ContactHasNoDevice => DialOutcome::Failed,
        }
    }

    /// What the no-answer ladder makes of it for the elder (see
    /// [`DialOutcome::ladder`]).
    pub fn elder_outcome(self) -> AttemptOutcome {
        self.dial_outcome().ladder()
    }
}

/// What one attempt came to, as stored in `call_attempts.outcome` and
/// counted in the reports: from the SIP final response (and its Q.850
/// cause), the device signalling, or, later, what was heard on answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DialOutcome {
    /// A person answered.
    Answered,
    /// A voicemail box or answering machine answered (heard in the first
    /// seconds after the answer, `session::screen`).
    Voicemail,
    Busy,
    NoAnswer,
    /// The callee rejected the call (SIP 603, Q.850 cause 21).
    Declined,
    /// The number does not exist: the enrolment must be corrected.
    InvalidNumber,
    /// Switched off or out of coverage.
    SwitchedOff,
    /// No codec in common: a configuration problem.
    CodecMismatch,
    /// Our trunk or the carrier failed; not the callee's doing.
    TrunkFailure,
    /// The callee's care-app device was not connected.
    DeviceOffline,
    /// Anything else that kept the call from being set up.
    Failed,
}

impl DialOutcome {
    pub const ALL: [DialOutcome; 11] = [
        DialOutcome::Answered,
        DialOutcome::Voicemail,
        DialOutcome::Busy,
        DialOutcome::NoAnswer,
        DialOutcome::Declined,
        DialOutcome::InvalidNumber,
        DialOutcome::SwitchedOff,
        DialOutcome::CodecMismatch,
        DialOutcome::TrunkFailure,
        DialOutcome::DeviceOffline,
        DialOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DialOutcome::Answered => "answered",
            DialOutcome::Voicemail => "voicemail",
            DialOutcome::Busy => "busy",
            DialOutcome::NoAnswer => "no_answer",
            DialOutcome::Declined => "declined",
            DialOutcome::InvalidNumber => "invalid_number",
            DialOutcome::SwitchedOff => "switched_off",
            DialOutcome::CodecMismatch => "codec_mismatch",
            DialOutcome::TrunkFailure => "trunk_failure",
            DialOutcome::DeviceOffline => "device_offline",
            DialOutcome::Failed => "failed",
        }
    }

    /// What the no-answer ladder is told about the elder's attempt. Each
    /// outcome's rule is the ladder's ([`crate::schedule::Ladder::record`]):
    /// busy retries sooner; no answer and a switched-off phone follow the
    /// ladder; voicemail counts as not reached; a decline follows the
    /// ladder until the elder has declined twice; an invalid number is not
    /// rung again; a trunk failure retries soon without counting.
    pub fn ladder(self) -> AttemptOutcome {
        match self {
            DialOutcome::Answered => AttemptOutcome::Answered,
            DialOutcome::Voicemail => AttemptOutcome::Voicemail,
            DialOutcome::Busy => AttemptOutcome::Busy,
            DialOutcome::NoAnswer | DialOutcome::SwitchedOff => AttemptOutcome::NoAnswer,
            DialOutcome::Declined => AttemptOutcome::Declined,
            DialOutcome::InvalidNumber => AttemptOutcome::InvalidNumber,
            DialOutcome::TrunkFailure => AttemptOutcome::TrunkFailure,
            DialOutcome::CodecMismatch | DialOutcome::DeviceOffline | DialOutcome::Failed => {
                AttemptOutcome::Failed
            }
        }
    }

    /// Whether the outcome opens a task for an administrator to correct
    /// the elder's enrolment (their telephone number).
    pub fn needs_number_fix(self) -> bool {
        self == DialOutcome::InvalidNumber
    }
}

impl fmt::Display for DialOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn report(outcome: FlowOutcome, escalated: Option<crate::Level>) -> CallReport {
        CallReport {
            flow_id: "f".into(),
            outcome,
            escalated,
            answers: 0,
            variables: BTreeMap::new(),
            path: Vec::new(),
        }
    }

    #[test]
    fn a_hang_up_after_an_escalation_is_escalated() {
        let hung = report(
            FlowOutcome::ElderHungUp {
                after_distress: true,
            },
            Some(crate::Level::Urgent),
        );
        assert_eq!(
            CallOutcome::of_answered(Some(&hung)),
            CallOutcome::Escalated
        );
        let hung = report(
            FlowOutcome::ElderHungUp {
                after_distress: false,
            },
            None,
        );
        assert_eq!(CallOutcome::of_answered(Some(&hung)), CallOutcome::HungUp);
        assert_eq!(CallOutcome::of_answered(None), CallOutcome::HungUp);
        let broken = report(FlowOutcome::Aborted { reason: "x".into() }, None);
        assert_eq!(
            CallOutcome::of_answered(Some(&broken)),
            CallOutcome::Escalated
        );
    }

    #[test]
    fn codes_are_distinct() {
        let codes: std::collections::HashSet<_> =
            CallOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(codes.len(), CallOutcome::ALL.len());
    }

    #[test]
    fn dial_outcome_codes_are_distinct() {
        let codes: std::collections::HashSet<_> =
            DialOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(codes.len(), DialOutcome::ALL.len());
    }

    #[test]
    fn each_setup_failure_has_a_stored_outcome_and_a_ladder_outcome() {
        for (f, code, ladder, status) in [
            (
                SetupFailure::Busy,
                "busy",
                AttemptOutcome::Busy,
                AttemptStatus::Busy,
            ),
            (
                SetupFailure::NoAnswer,
                "no_answer",
                AttemptOutcome::NoAnswer,
                AttemptStatus::NoAnswer,
            ),
            (
                SetupFailure::SwitchedOff,
                "switched_off",
                AttemptOutcome::NoAnswer,
                AttemptStatus::NoAnswer,
            ),
            (
                SetupFailure::Declined,
                "declined",
                AttemptOutcome::Declined,
                AttemptStatus::NoAnswer,
            ),
            (
                SetupFailure::InvalidNumber,
                "invalid_number",
                AttemptOutcome::InvalidNumber,
                AttemptStatus::Failed,
            ),
            (
                SetupFailure::TrunkFailure,
                "trunk_failure",
                AttemptOutcome::TrunkFailure,
                AttemptStatus::Failed,
            ),
            (
                SetupFailure::CodecMismatch,
                "codec_mismatch",
                AttemptOutcome::Failed,
                AttemptStatus::Failed,
            ),
            (
                SetupFailure::DeviceNotConnected,
                "device_offline",
                AttemptOutcome::Failed,
                AttemptStatus::Failed,
            ),
            (
                SetupFailure::SetupFailed,
                "failed",
                AttemptOutcome::Failed,
                AttemptStatus::Failed,
            ),
        ] {
            assert_eq!(f.dial_outcome().as_str(), code, "{f:?}");
            assert_eq!(f.elder_outcome(), ladder, "{f:?}");
            assert_eq!(f.status(), status, "{f:?}");
        }
        assert_eq!(DialOutcome::Voicemail.ladder(), AttemptOutcome::Voicemail);
        assert_eq!(DialOutcome::Answered.ladder(), AttemptOutcome::Answered);
        let fixes: Vec<_> = DialOutcome::ALL
            .into_iter()
            .filter(|o| o.needs_number_fix())
            .collect();
        assert_eq!(fixes, vec![DialOutcome::InvalidNumber]);
        assert_eq!(
            SetupFailure::InvalidNumber.for_operator().0,
            "invalid_number"
        );
    }

    #[test]
    fn busy_retries_sooner_and_declined_is_not_reached() {
        assert_eq!(SetupFailure::Busy.elder_outcome(), AttemptOutcome::Busy);
        assert_eq!(SetupFailure::Busy.status(), AttemptStatus::Busy);
        assert_eq!(
            SetupFailure::Declined.elder_outcome(),
            AttemptOutcome::Declined
        );
        assert_eq!(SetupFailure::Declined.status(), AttemptStatus::NoAnswer);
        assert_eq!(
            SetupFailure::DeviceNotConnected.elder_outcome(),
            AttemptOutcome::Failed
        );
        assert_eq!(EndReason::NotReached(SetupFailure::Busy).as_str(), "busy");
    }
}
