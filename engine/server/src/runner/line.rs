//! The line of a running call, whatever transport carries it, and ringing
//! a telephone number through the SIP trunk for the ladder and call-backs.

use std::sync::{Arc, Mutex};

use voicecare_core::Lang;
use voicecare_core::carrier::announcement::{self, AnnouncementKind};
use voicecare_core::session::{SetupFailure, screen};
use voicecare_sip::{CallFailure, TrunkGroup};
use voicecare_speech::{AsrPool, TranscribeRequest};
use voicecare_store::elders::Phone;
use voicecare_telephony::TelephonyError;
use voicecare_telephony::audio::{FRAME_SAMPLES, rms};
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

/// A telephone not reached: what the session makes of it, and the SIP final
/// status that refused the call, when one did (stored with the attempt).
#[derive(Debug, Clone, Copy)]
pub struct PhoneUnreached {
    pub failure: SetupFailure,
    pub sip_status: Option<u16>,
}

/// Call a phone number through the SIP trunks (the next one when a trunk
/// fails the call). The number stays out of the log: only the SIP status
/// and what the session makes of it are written.
/// With `hear`, what the carrier played before failing the call (early
/// media) is read: its recorded announcement says why better than the
/// status code does ("switched off" behind a plain 480).
pub async fn ring_phone(
    sip: &TrunkGroup,
    number: &Phone,
    hear: Option<(&AsrPool, Lang)>,
) -> Result<CallLeg, PhoneUnreached> {
    let attempt = sip.call_with_early_media(number.as_str()).await;
    let failure = match attempt.result {
        Ok(leg) => return Ok(leg),
        Err(f) => f,
    };
    let mut outcome = failure.setup_failure();
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
    if let Some((asr, lang)) = hear
        && let Some(kind) = announcement_in(asr, lang, &attempt.early_media).await
    {
        metrics::counter!("voicecare_sip_announcements_total", "kind" => kind.as_str())
            .increment(1);
        if let Some(f) = screen::failure_of(kind) {
            outcome = f;
        }
        tracing::info!(
            announcement = kind.as_str(),
            "the carrier played an announcement"
        );
    }
    tracing::info!(
        sip_status = failure.status_code(),
        outcome = outcome.as_str(),
        %detail,
        "telephone call not answered"
    );
    Err(PhoneUnreached {
        failure: outcome,
        sip_status: failure.status_code(),
    })
}

/// Speech-level audio below this many 20 ms frames is no announcement.
const MIN_ANNOUNCEMENT_FRAMES: usize = 50;

/// The carrier's announcement in early media, if one was played. What is
/// read is a recording, never the elder, and is not kept.
async fn announcement_in(asr: &AsrPool, lang: Lang, pcm: &[i16]) -> Option<AnnouncementKind> {
    let loud = pcm
        .chunks(FRAME_SAMPLES)
        .filter(|f| rms(f) > SPEECH_RMS)
        .count();
    if loud < MIN_ANNOUNCEMENT_FRAMES {
        return None;
    }
    let req = TranscribeRequest {
        samples_16k: pcm.iter().map(|&s| f32::from(s) / 32768.0).collect(),
        lang: Some(lang),
        prompt: None,
    };
    match asr.transcribe(req).await {
        Ok(t) => announcement::classify(&t.text).map(|a| a.kind),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the early media");
            None
        }
    }
}

/// About -40 dBFS: quieter frames are line noise, not a voice.
const SPEECH_RMS: f32 = 300.0;
