//! Calls into the service: the trunk (or the PBX in front of it) delivers a
//! call to our number, and the engine decides whether to answer it.
//!
//! The gateway checks what SIP alone can check (who sent the INVITE, whether
//! its SDP offers a codec we speak) and answers those failures itself with the
//! status SIP prescribes. Everything else becomes an [`IncomingCall`] on the
//! gateway's queue: the caller's number, the number dialled, and `answer` or
//! `reject`. An answered call is the same [`CallLeg`] an outbound call gives.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipConnection;
use tracing::{debug, info, warn};
use voicecare_telephony::CallLeg;
use voicecare_telephony::LegConfig;
use voicecare_telephony::port::rtp_leg;

use crate::dialer::{allows_update, header_value};
use crate::failure::CallFailure;
use crate::indialog::{Refresher, Role, SessionExpires, SessionTimer};
use crate::rtp;
use crate::sdp;
use crate::supervise::{Call, supervise};
use crate::trunk::Trunk;

/// A call the trunk delivered, waiting for the engine to answer or refuse
/// it. Dropping it unanswered refuses it with 480 (temporarily unavailable).
pub struct IncomingCall {
    /// The caller's number as the trunk gave it (P-Asserted-Identity when the
    /// trunk sent one, else the From user). Not yet normalised.
    caller: String,
    /// The number dialled (the Request-URI user): which service line.
    called: String,
    offer: sdp::Answer,
    /// The session timer the caller asked for, and our 2xx's value of it.
    session: Option<(SessionTimer, SessionExpires)>,
    update_allowed: bool,
    dialog: Option<InviteDialog>,
    states: Option<DialogStateReceiver>,
    ctx: Arc<Context>,
}

/// What answering needs from the gateway.
pub(crate) struct Context {
    pub trunk: Trunk,
    pub leg: LegConfig,
    pub dialogs: Arc<DialogLayer>,
    pub media_ip: IpAddr,
    /// What our SDP names (the public IP behind a one-to-one NAT).
    pub advertised_ip: IpAddr,
    pub limits: Arc<crate::gateway::Limits>,
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Phone numbers are personal data: only their length shows.
        f.debug_struct("IncomingCall")
            .field("caller_digits", &self.caller.len())
            .field("called_digits", &self.called.len())
            .field("codec", &self.offer.media.codec)
            .finish()
    }
}

impl IncomingCall {
    /// The caller's number as signalled (digits, perhaps a `+`).
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The number the caller dialled.
    pub fn called(&self) -> &str {
        &self.called
    }

    /// Answer (200 OK with our SDP) and return the call's leg.
    pub async fn answer(mut self) -> Result<CallLeg, CallFailure> {
        let dialog = self
            .dialog
            .take()
            .expect("an unanswered call has its dialog");
        let states = self.states.take().expect("and its states");
        let ctx = self.ctx.clone();
        let Some(channel) = ctx.limits.channel() else {
            warn!("every channel of the trunk is in use: refusing an incoming call");
            let _ = dialog.reject(Some(StatusCode::ServiceUnavailable), None);
            return Err(CallFailure::NoChannel(ctx.limits.max_channels()));
        };
        let sock = match rtp::bind(ctx.media_ip, &ctx.trunk.rtp_ports).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "no RTP port for an incoming call: refusing it");
                let _ = dialog.reject(Some(StatusCode::ServiceUnavailable), None);
                return Err(CallFailure::NoRtpPort(e.to_string()));
            }
        };
        let port = sock
            .local_addr()
            .map_err(|e| CallFailure::NoRtpPort(e.to_string()))?
            .port();
        let answer = sdp::answer(
            ctx.advertised_ip,
            port,
            rand::random::<u32>().into(),
            &self.offer.media,
        );
        let mut headers = vec![Header::ContentType("application/sdp".into())];
        if let Some((_, se)) = self.session {
            headers.push(Header::SessionExpires(se.header_value().into()));
            if se.refresher == Some(Refresher::Uac) {
                headers.push(Header::Require("timer".into()));
            }
        }
        dialog
            .accept(Some(headers), Some(answer.clone().into_bytes()))
            .map_err(|e| CallFailure::Signalling(e.to_string()))?;
        info!(codec = ?self.offer.media.codec, "answered an incoming call");
        let sock = Arc::new(sock);
        let peer = rtp::Peer::new(self.offer.remote);
        let sink = rtp::Sink {
            sock: sock.clone(),
            peer: peer.clone(),
        };
        let peer_for_call = peer.clone();
        let (leg, handle) = rtp_leg(self.offer.media, Arc::new(sink), &ctx.leg);
        handle.receive(rtp::Source {
            sock,
            peer,
            media: self.offer.media,
            timeout: ctx.trunk.rtp_timeout,
            handle: handle.clone(),
            latched: None,
        });
        let id = dialog.id();
        tokio::spawn(supervise(Call {
            dialog,
            id,
            states,
            handle: handle.clone(),
            dialogs: ctx.dialogs.clone(),
            sdp: answer,
            role: Role::Callee,
            channel,
            peer: peer_for_call,
            timer: self.session.map(|(t, _)| t),
            update_allowed: self.update_allowed,
            audio_pt: self.offer.media.audio_pt,
        }));
        handle.connected().await;
        Ok(leg)
    }

    /// Wait until the caller gives up (CANCEL) or the call otherwise ends
    /// before it is answered.
    pub async fn cancelled(&mut self) {
        let Some(states) = self.states.as_mut() else {
            return;
        };
        while let Some(state) = states.recv().await {
            if matches!(state, DialogState::Terminated(..)) {
                return;
            }
        }
    }

    /// Refuse the call with `code` (e.g. 486 busy, 503 at capacity).
    pub fn reject(mut self, code: u16, reason: &str) {
        if let Some(d) = self.dialog.take() {
            refuse(&d, code, reason);
        }
    }
}

impl Drop for IncomingCall {
    fn drop(&mut self) {
        if let Some(d) = self.dialog.take() {
            refuse(&d, 480, "not answered");
        }
    }
}

fn refuse(dialog: &InviteDialog, code: u16, reason: &str) {
    // No Reason header: its grammar (RFC 3326) is protocol causes, not prose.
    if let Err(e) = dialog.reject(Some(StatusCode::from(code)), None) {
        debug!(error = %e, "refusing an incoming call");
    }
    info!(code, reason, "refused an incoming call");
}

/// Why an INVITE outside any dialog is refused before the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not from the trunk: IP authentication (403).
    Forbidden(IpAddr),
    /// The SDP offers nothing we can use (488), or is missing or unreadable.
    NotAcceptable(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Forbidden(_) => StatusCode::Forbidden,
            Refusal::NotAcceptable(_) => StatusCode::NotAcceptableHere,
        }
    }
}

/// Accept a new INVITE: checks, then a server dialog whose transaction runs
/// on its own task (100 Trying, 180 Ringing, then our answer and its ACK, or
/// the caller's CANCEL). A refused INVITE is answered here.
pub(crate) fn take(
    mut tx: Transaction,
    ctx: &Arc<Context>,
    allowed: &[IpAddr],
) -> Result<IncomingCall, Refusal> {
    let refuse = |mut tx: Transaction, why: Refusal| {
        let status = why.status();
        warn!(?why, %status, "refused a call into the service");
        tokio::spawn(async move {
            if let Err(e) = tx.reply(status).await {
                debug!(error = %e, "refusing an INVITE");
            }
        });
        why
    };
    if let Some(from) = source_ip(&tx)
        && !allowed.contains(&from)
    {
        return Err(refuse(tx, Refusal::Forbidden(from)));
    }
    let offer = match sdp::parse_answer(&String::from_utf8_lossy(&tx.original.body)) {
        Ok(o) => o,
        Err(e) => return Err(refuse(tx, Refusal::NotAcceptable(e.to_string()))),
    };
    let caller = caller_number(&tx);
    let supports_timer = tx.original.headers.iter().any(|h| match h {
        Header::Supported(v) => v
            .value()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("timer")),
        _ => false,
    });
    let session = SessionTimer::for_offer(
        header_value(&tx.original.headers, "Session-Expires"),
        supports_timer,
    );
    let update_allowed = allows_update(&tx.original.headers);
    let called = tx.original.uri.user().unwrap_or_default().to_string();
    let (state_tx, states) = ctx.dialogs.new_dialog_state_channel();
    let dialog = match ctx
        .dialogs
        .get_or_create_server_invite(&tx, state_tx, None, None)
    {
        Ok(d) => d,
        Err(e) => {
            let why = Refusal::NotAcceptable(format!("cannot open a dialog: {e}"));
            return Err(refuse(tx, why));
        }
    };
    let mut handler = dialog.clone();
    tokio::spawn(async move {
        if let Err(e) = handler.handle(&mut tx).await {
            debug!(error = %e, "incoming INVITE transaction");
        }
    });
    if let Err(e) = dialog.ringing(None, None) {
        debug!(error = %e, "180 Ringing");
    }
    Ok(IncomingCall {
        caller,
        called,
        offer,
        session,
        update_allowed,
        dialog: Some(dialog),
        states: Some(states),
        ctx: ctx.clone(),
    })
}

/// Where the INVITE came from: the Via's `received` (the packet's real
/// source, set by the transport layer) or its sent-by host.
fn source_ip(tx: &Transaction) -> Option<IpAddr> {
    let via = tx.original.via_header().ok()?;
    let (_, host) = SipConnection::parse_target_from_via(via).ok()?;
    let addr: SocketAddr = host.try_into().ok()?;
    Some(addr.ip())
}

/// The caller's number: a trunk's P-Asserted-Identity (RFC 3325) is the
/// network-verified identity; From is what the caller claims.
fn caller_number(tx: &Transaction) -> String {
    let asserted = tx
        .original
        .p_asserted_identity_header()
        .and_then(|h| user_of(h.value()));
    asserted
        .or_else(|| {
            tx.original
                .from_header()
                .ok()
                .and_then(|h| user_of(h.value()))
        })
        .unwrap_or_default()
}

/// The user part of a name-addr such as `"Li" <sip:+8613800138000@host>` or
/// `<tel:+86-138-0013-8000>`, without URI parameters.
pub(crate) fn user_of(value: &str) -> Option<String> {
    let inner = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let inner = inner.trim();
    let rest = inner
        .strip_prefix("sips:")
        .or_else(|| inner.strip_prefix("sip:"))
        .or_else(|| inner.strip_prefix("tel:"))?;
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if inner.starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split(';').next().unwrap_or(user).trim();
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_read_from_name_addrs() {
        let cases = [
            (
                "<sip:+8613800138000@10.0.0.1>;tag=abc",
                Some("+8613800138000"),
            ),
            (
                "\"Li Wei\" <sip:013800138000@trunk.example.net;user=phone>",
                Some("013800138000"),
            ),
            ("<tel:+86-138-0013-8000>", Some("+86-138-0013-8000")),
            ("sip:elder@127.0.0.1:5060;tag=1", Some("elder")),
            ("<sip:10.0.0.1>", None),
            ("garbage", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(user_of(value).as_deref(), want, "{value}");
        }
    }
}
