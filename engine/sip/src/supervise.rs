//! An answered call from answer to hang-up: the engine hanging up sends BYE,
//! the far end's BYE ends the leg, and requests inside the call are answered:
//! keypad digits in INFO, hold and resume in a re-INVITE or UPDATE, and
//! session refreshes (RFC 4028) sent or expected.

use std::sync::Arc;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Request, StatusCode};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use voicecare_telephony::EndReason;
use voicecare_telephony::port::TransportHandle;

use crate::gateway::Channel;
use crate::indialog::{Direction, Role, SessionTimer, info_digit};
use crate::rtp::Peer;

/// Everything `supervise` needs of one answered call.
pub(crate) struct Call {
    pub dialog: InviteDialog,
    pub id: DialogId,
    pub states: DialogStateReceiver,
    pub handle: TransportHandle,
    pub dialogs: Arc<DialogLayer>,
    /// Our SDP as answered or offered; refreshes and hold answers reuse it.
    pub sdp: String,
    pub role: Role,
    /// The trunk channel the call holds until it ends.
    pub channel: Channel,
    pub peer: Arc<Peer>,
    pub timer: Option<SessionTimer>,
    /// The far end allows UPDATE (its `Allow`): refreshes use it rather than
    /// a re-INVITE, as RFC 4028 recommends.
    pub update_allowed: bool,
    /// The payload type of the codec the call was agreed on.
    pub audio_pt: u8,
}

pub(crate) async fn supervise(call: Call) {
    let Call {
        dialog,
        id,
        mut states,
        handle,
        dialogs,
        sdp,
        role,
        channel: _channel,
        peer,
        mut timer,
        update_allowed,
        audio_pt,
    } = call;
    let mut direction = Direction::SendRecv;
    let mut refreshed = Instant::now();
    loop {
        let session_due = async {
            match timer {
                Some(t) => tokio::time::sleep_until(refreshed + t.due()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            reason = handle.ended() => {
                if reason != EndReason::RemoteHangup {
                    info!(?reason, "hanging up: BYE");
                    if let Err(e) = dialog.hangup().await {
                        debug!(error = %e, "BYE");
                    }
                }
                break;
            }
            _ = session_due => {
                let Some(t) = timer else { continue };
                if !t.we_refresh {
                    warn!(interval = ?t.interval, "the far end stopped refreshing the session: hanging up");
                    timer = None;
                    handle.end(EndReason::ConnectionFailed);
                    continue;
                }
                refreshed = Instant::now();
                if !refresh(&dialog, role, update_allowed, &direction.answer().apply(&sdp), t).await {
                    warn!("the session refresh was refused: the call is over");
                    timer = None;
                    handle.end(EndReason::ConnectionFailed);
                }
            }
            state = states.recv() => match state {
                Some(DialogState::Terminated(_, why)) => {
                    info!(?why, "the call ended");
                    handle.end(match (why, role) {
                        (TerminatedReason::UasBye, Role::Caller)
                        | (TerminatedReason::UacBye | TerminatedReason::UacCancel, Role::Callee) => EndReason::RemoteHangup,
                        (TerminatedReason::UacBye | TerminatedReason::UacCancel, Role::Caller)
                        | (TerminatedReason::UasBye, Role::Callee) => EndReason::LocalHangup,
                        _ => EndReason::ConnectionFailed,
                    });
                    break;
                }
                // A re-INVITE or UPDATE: a session refresh, hold or resume.
                Some(DialogState::Updated(_, req, tx)) => {
                    refreshed = Instant::now();
                    let mut headers = Vec::new();
                    if let Some(t) = timer {
                        headers.push(session_expires(t, role));
                    }
                    let offer = String::from_utf8_lossy(&req.body);
                    if !req.body.is_empty() && !crate::sdp::offers_payload(&offer, audio_pt) {
                        // A new codec: the call's media runs one codec from
                        // answer to hang-up, so the offer is refused and the
                        // session goes on unchanged (RFC 3261 §14.2).
                        info!(audio_pt, "the far end offered a codec change; refused, the call goes on as it was");
                        let _ = tx.respond(StatusCode::NotAcceptableHere, None, None).await;
                        continue;
                    }
                    let body = if req.body.is_empty() {
                        // An UPDATE without SDP only refreshes the session.
                        None
                    } else {
                        direction = on_new_offer(&req, &peer, direction);
                        headers.push(Header::ContentType("application/sdp".into()));
                        Some(direction.answer().apply(&sdp).into_bytes())
                    };
                    let _ = tx.respond(StatusCode::OK, Some(headers), body).await;
                }
                Some(DialogState::Info(_, req, tx)) => {
                    let _ = tx.reply(StatusCode::OK).await;
                    let ct = req.headers.iter().find_map(|h| match h {
                        Header::ContentType(c) => Some(c.value().to_string()),
                        _ => None,
                    });
                    if let Some(d) = info_digit(ct.as_deref(), &String::from_utf8_lossy(&req.body)) {
                        debug!("keypad digit in SIP INFO");
                        handle.digit(d).await;
                    }
                }
                Some(DialogState::Options(_, _, tx)) => {
                    let _ = tx.reply(StatusCode::OK).await;
                }
                Some(_) => {}
                None => {
                    handle.end(EndReason::ConnectionFailed);
                    break;
                }
            },
        }
    }
    dialogs.remove_dialog(&id);
}

/// A new offer from the far end: where its media now goes and whether it
/// holds the call. Returns the far end's direction.
fn on_new_offer(req: &Request, peer: &Peer, was: Direction) -> Direction {
    let offer = String::from_utf8_lossy(&req.body);
    let now = Direction::of(&offer);
    if now != was {
        info!(direction = ?now, "the far end changed the call's direction (hold or resume)");
    }
    peer.set_direction(now);
    if let Ok(a) = crate::sdp::parse_answer(&offer)
        && !a.remote.ip().is_unspecified()
    {
        peer.moved(a.remote);
    }
    now
}

/// The `Session-Expires` of our answers and refreshes: the interval and who
/// refreshes, as agreed.
fn session_expires(t: SessionTimer, us: Role) -> Header {
    let refresher = match (t.we_refresh, us) {
        (true, Role::Caller) | (false, Role::Callee) => "uac",
        (true, Role::Callee) | (false, Role::Caller) => "uas",
    };
    Header::SessionExpires(format!("{};refresher={refresher}", t.interval.as_secs()).into())
}

/// Send one session refresh. `false` when the far end refused it with a
/// status that ends the session (RFC 4028 §10: 408 or 481).
async fn refresh(
    dialog: &InviteDialog,
    us: Role,
    update: bool,
    sdp: &str,
    t: SessionTimer,
) -> bool {
    let mut headers = vec![session_expires(t, us)];
    let result = if update {
        dialog.update(Some(headers), None).await
    } else {
        headers.push(Header::ContentType("application/sdp".into()));
        dialog
            .reinvite(Some(headers), Some(sdp.as_bytes().to_vec()))
            .await
    };
    match result {
        Ok(Some(resp)) => {
            debug!(status = %resp.status_code, update, "session refreshed");
            !matches!(resp.status_code.code(), 408 | 481)
        }
        Ok(None) => true,
        Err(e) => {
            debug!(error = %e, "session refresh");
            true
        }
    }
}
