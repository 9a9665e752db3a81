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

    /// What the call session records, hence the attempt's stored outcome
    /// and the ladder's rule (docs/telephony.md, "Failures"). A Q.850 cause
    /// in the `Reason` header wins over the status code when it says more
    /// (RFC 3326, RFC 3398); otherwise the status code decides.
    pub fn setup_failure(&self) -> SetupFailure {
        match self {
            CallFailure::RingTimeout => SetupFailure::NoAnswer,
            CallFailure::Refused {
                code, cause, rang, ..
            } => cause
                .as_deref()
                .and_then(q850_cause)
                .and_then(cause_failure)
                .unwrap_or_else(|| status_failure(*code, *rang)),
            CallFailure::BadNumber(_) => SetupFailure::InvalidNumber,
            CallFailure::BadAnswer(_) => SetupFailure::CodecMismatch,
            // Our side or the carrier's: never the elder's doing.
            CallFailure::NoResponse
            | CallFailure::NoChannel(_)
            | CallFailure::NoRtpPort(_)
            | CallFailure::Signalling(_) => SetupFailure::TrunkFailure,
        }
    }
}

/// The failure a final status code means without a Q.850 cause.
fn status_failure(code: u16, rang: bool) -> SetupFailure {
    match code {
        486 | 600 => SetupFailure::Busy,
        480 => SetupFailure::NoAnswer,
        // A 408 or 487 after ringing is the far end giving up; without
        // ringing it is the route that failed.
        408 | 487 if rang => SetupFailure::NoAnswer,
        408 | 487 => SetupFailure::TrunkFailure,
        603 => SetupFailure::Declined,
        404 | 410 | 484 | 604 => SetupFailure::InvalidNumber,
        415 | 488 | 606 => SetupFailure::CodecMismatch,
        // The trunk refuses us: credentials, caller id, a barred route.
        401 | 403 | 407 => SetupFailure::TrunkFailure,
        500..=599 => SetupFailure::TrunkFailure,
        _ => SetupFailure::SetupFailed,
    }
}

/// The failure a Q.850 cause names, when it is more specific than the
/// status code; `None` leaves the decision to the status code.
fn cause_failure(cause: u16) -> Option<SetupFailure> {
    Some(match cause {
        // Unallocated number, no route to destination, number changed,
        // invalid number format.
        1 | 3 | 22 | 28 => SetupFailure::InvalidNumber,
        17 => SetupFailure::Busy,
        // No user responding, no answer.
        18 | 19 => SetupFailure::NoAnswer,
        // Subscriber absent: switched off or out of coverage.
        20 => SetupFailure::SwitchedOff,
        21 => SetupFailure::Declined,
        // No circuit, network out of order, temporary failure, switching
        // equipment congestion, resource unavailable.
        34 | 38 | 41 | 42 | 47 => SetupFailure::TrunkFailure,
        // Bearer capability not available / not implemented, incompatible
        // destination.
        58 | 65 | 88 => SetupFailure::CodecMismatch,
        _ => return None,
    })
}

/// The cause of a `Reason` header value in the Q.850 protocol, e.g.
/// `Q.850;cause=17;text="User busy"`. Several reasons may be listed,
/// comma-separated (RFC 3326); the first Q.850 one counts.
pub fn q850_cause(reason: &str) -> Option<u16> {
    reason.split(',').find_map(|one| {
        let mut parts = one.split(';').map(str::trim);
        if !parts.next()?.eq_ignore_ascii_case("Q.850") {
            return None;
        }
        parts.find_map(|p| {
            let (key, value) = p.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case("cause") {
                return None;
            }
            value.trim().trim_matches('"').parse().ok()
        })
    })
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

    fn with_cause(code: u16, cause: &str) -> CallFailure {
        CallFailure::Refused {
            code,
            reason: String::new(),
            cause: Some(cause.to_string()),
            rang: true,
        }
    }

    #[test]
    fn final_responses_map_to_setup_failures() {
        use SetupFailure as F;
        for (code, want) in [
            (486, F::Busy),
            (600, F::Busy),
            (480, F::NoAnswer),
            (603, F::Declined),
            (404, F::InvalidNumber),
            (484, F::InvalidNumber),
            (604, F::InvalidNumber),
            (410, F::InvalidNumber),
            (488, F::CodecMismatch),
            (415, F::CodecMismatch),
            (606, F::CodecMismatch),
            (403, F::TrunkFailure),
            (407, F::TrunkFailure),
            (500, F::TrunkFailure),
            (502, F::TrunkFailure),
            (503, F::TrunkFailure),
            (504, F::TrunkFailure),
            (487, F::NoAnswer),
            (400, F::SetupFailed),
            (420, F::SetupFailed),
        ] {
            assert_eq!(refused(code, true).setup_failure(), want, "{code}");
        }
        assert_eq!(refused(408, true).setup_failure(), F::NoAnswer);
        assert_eq!(refused(408, false).setup_failure(), F::TrunkFailure);
        assert_eq!(refused(487, false).setup_failure(), F::TrunkFailure);
        assert_eq!(CallFailure::RingTimeout.setup_failure(), F::NoAnswer);
        assert_eq!(CallFailure::NoResponse.setup_failure(), F::TrunkFailure);
        assert_eq!(CallFailure::NoChannel(4).setup_failure(), F::TrunkFailure);
        assert_eq!(
            CallFailure::Signalling("x".into()).setup_failure(),
            F::TrunkFailure
        );
        assert_eq!(
            CallFailure::BadNumber("x".into()).setup_failure(),
            F::InvalidNumber
        );
        assert_eq!(
            CallFailure::BadAnswer("x".into()).setup_failure(),
            F::CodecMismatch
        );
        assert_eq!(refused(486, true).status_code(), Some(486));
        assert_eq!(CallFailure::RingTimeout.status_code(), None);
    }

    #[test]
    fn a_q850_cause_is_more_specific_than_the_status_code() {
        use SetupFailure as F;
        for (code, cause, want) in [
            (404, "Q.850;cause=1", F::InvalidNumber),
            (
                480,
                "Q.850;cause=1;text=\"Unallocated number\"",
                F::InvalidNumber,
            ),
            (480, "Q.850;cause=17", F::Busy),
            (486, "Q.850;cause=17", F::Busy),
            (408, "Q.850;cause=18", F::NoAnswer),
            (480, "Q.850;cause=19", F::NoAnswer),
            (480, "Q.850;cause=20", F::SwitchedOff),
            // RFC 3398 maps cause 21 to 403: a person rejecting, not the trunk.
            (403, "Q.850;cause=21", F::Declined),
            (603, "Q.850;cause=21", F::Declined),
            (404, "Q.850;cause=22", F::InvalidNumber),
            (484, "Q.850;cause=28", F::InvalidNumber),
            (503, "Q.850;cause=34", F::TrunkFailure),
            (480, "Q.850;cause=38", F::TrunkFailure),
            (503, "Q.850;cause=41", F::TrunkFailure),
            (503, "Q.850;cause=42", F::TrunkFailure),
            (488, "Q.850;cause=88", F::CodecMismatch),
            // Causes that say nothing more leave it to the status code.
            (486, "Q.850;cause=16", F::Busy),
            (480, "Q.850;cause=31", F::NoAnswer),
            (404, "SIP;cause=200", F::InvalidNumber),
            (503, "Q.850;cause=banana", F::TrunkFailure),
            (486, "SIP;cause=486, Q.850;cause=17", F::Busy),
            (480, "q.850 ; CAUSE = 20", F::SwitchedOff),
        ] {
            assert_eq!(
                with_cause(code, cause).setup_failure(),
                want,
                "{code} {cause}"
            );
        }
        assert_eq!(q850_cause("Q.850;cause=17;text=\"User busy\""), Some(17));
        assert_eq!(q850_cause("SIP;cause=480"), None);
        assert_eq!(q850_cause(""), None);
    }
}
