//! The line of a running call, whatever transport carries it.

use std::sync::{Arc, Mutex};

use voicecare_core::session::SetupFailure;
use voicecare_telephony::TelephonyError;
use voicecare_telephony::leg::LegControl;
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
