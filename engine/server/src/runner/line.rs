//! The line of a running call, whatever transport carries it, and ringing
//! a telephone number through the SIP trunk for the ladder and call-backs.

use std::sync::{Arc, Mutex};

use voicecare_core::session::SetupFailure;
use voicecare_sip::{CallFailure, TrunkGroup};
use voicecare_store::elders::Phone;
use voicecare_telephony::TelephonyError;
use voicecare_telephony::leg::{CallLeg, LegControl};
use voicecare_telephony::signalling::HangupReason;

/// The line of a running call, so the supervisor can hang it up after a fault.
pub type LineSlot = Arc<Mutex<Option<LegControl>>>;

/// Why a callee could not be reached, in the core's terms.
pub fn setup_failure(e: &TelephonyError) -> SetupFailure {
    match e {
        TelephonyError::NotRegistered => SetupFailure::DeviceDisconnected,
        TelephonyError::NoAnswer => SetupFailure::NoAnswer,
        TelephonyError::Declined(HangupReason::Busy) => SetupFailure::Busy,
        TelephonyError::Declined(_) => SetupFailure::Declined,
        _ => SetupFailure::SetupFailed,
    }
}

/// Call a phone number through the SIP trunks (the next one when a trunk
/// fails the call). The number stays out of the log: only the SIP status
/// and what the session makes of it are written.
pub async fn ring_phone(sip: &TrunkGroup, number: &Phone) -> Result<CallLeg, SetupFailure> {
    sip.call(number.as_str()).await.map_err(|failure| {
        let outcome = failure.setup_failure();
        // The stack's own errors may quote a SIP URI, number included.
        let detail = match &failure {
            CallFailure::BadNumber(_) => "not a dialable number".to_string(),
            CallFailure::Signalling(e) => {
                // Digits hidden: the stack's message may hold the number.
                let e: String = e
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                tracing::debug!(error = %e, "SIP signalling failed");
                "signalling failed".to_string()
            }
            other => other.to_string(),
        };
        tracing::info!(
            sip_status = failure.status_code(),
            outcome = outcome.as_str(),
            %detail,
            "telephone call not answered"
        );
        outcome
    })
}
