//! Why an outbound call was not answered, as the trunk told us.

use voicecare_core::session::SetupFailure;

/// An outbound call that did not become a conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The far end (or a proxy on the way) answered with a final non-2xx.
    #[error("the call was refused: {code} {reason}")]
    Refused {
        code: u16,
        reason: String,
        /// The `Reason` header (RFC 3326), e.g. `Q.850;cause=17`, when sent.
        cause: Option<String>,
        /// Whether the phone had rung (a provisional response came first).
        rang: bool,
    },
    /// Nobody answered within the ring timeout; we cancelled the call.
    #[error("no answer before the ring timeout")]
    RingTimeout,
    /// The trunk never responded at all (SIP timer B, 32 s).
    #[error("the trunk did not respond")]
    NoResponse,
    /// The number cannot be dialled.
    #[error("not a dialable number: {0:?}")]
    BadNumber(String),
    /// The call was answered with media we cannot use; we hung up.
    #[error("unusable media in the answer: {0}")]
    BadAnswer(String),
    /// Every channel the trunk has is in use; the call was not placed.
    #[error("all {0} channels of the trunk are in use")]
    NoChannel(usize),
    /// No local RTP port was free.
    #[error("no RTP port free: {0}")]
    NoRtpPort(String),
    /// The SIP stack or the network failed.
    #[error("signalling failed: {0}")]
    Signalling(String),
}

impl CallFailure {
    /// The final SIP status code, when there was one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            CallFailure::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What the call session records. A coarse first mapping: invalid
    /// numbers, trunk trouble and Q.850 causes get their own outcomes later.
    pub fn setup_failure(&self) -> SetupFailure {
        match self {
            CallFailure::RingTimeout => SetupFailure::NoAnswer,
            CallFailure::Refused { code, rang, .. } => match code {
                486 | 600 => SetupFailure::Busy,
                480 => SetupFailure::NoAnswer,
                // A 408 after ringing is the far end giving up; without
                // ringing it is the route that failed.
                408 if *rang => SetupFailure::NoAnswer,
                603 => SetupFailure::Declined,
                _ => SetupFailure::SetupFailed,
            },
            _ => SetupFailure::SetupFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16, rang: bool) -> CallFailure {
        CallFailure::Refused {
            code,
            reason: String::new(),
            cause: None,
            rang,
        }
    }

    #[test]
    fn final_responses_map_to_setup_failures() {
        for (code, want) in [
            (486, SetupFailure::Busy),
            (600, SetupFailure::Busy),
            (480, SetupFailure::NoAnswer),
            (603, SetupFailure::Declined),
            (404, SetupFailure::SetupFailed),
            (503, SetupFailure::SetupFailed),
            (487, SetupFailure::SetupFailed),
        ] {
            assert_eq!(refused(code, true).setup_failure(), want, "{code}");
        }
        assert_eq!(refused(408, true).setup_failure(), SetupFailure::NoAnswer);
        assert_eq!(
            refused(408, false).setup_failure(),
            SetupFailure::SetupFailed
        );
        assert_eq!(
            CallFailure::RingTimeout.setup_failure(),
            SetupFailure::NoAnswer
        );
        assert_eq!(
            CallFailure::NoResponse.setup_failure(),
            SetupFailure::SetupFailed
        );
        assert_eq!(refused(486, true).status_code(), Some(486));
        assert_eq!(CallFailure::RingTimeout.status_code(), None);
    }
}
