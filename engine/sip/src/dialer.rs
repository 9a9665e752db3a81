//! Outbound calls: INVITE, ringing with a timeout, and on answer a
//! [`CallLeg`] whose hang-up, in either direction, is a BYE.

use std::sync::Arc;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, Response, StatusCode, StatusCodeKind, Uri};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use voicecare_telephony::CallLeg;
use voicecare_telephony::port::rtp_leg;

use crate::digest::authorization;
use crate::early::EarlyCapture;
use crate::failure::CallFailure;
use crate::gateway::SipGateway;
use crate::indialog::{REQUESTED_SESSION_EXPIRES, Role, SessionTimer};
use crate::rtp;
use crate::sdp;
use crate::supervise::{Call, supervise};
use crate::trunk::Transport;

/// One call attempt and what the far end played before it answered or
/// failed (early media, 16 kHz PCM, at most 20 s): a carrier's announcement
/// is worth hearing to know why the phone was not reached.
pub struct Attempt {
    pub result: Result<CallLeg, CallFailure>,
    pub early_media: Vec<i16>,
}

/// Longest a call waits for one of the trunk's channels to free up before
/// it fails as `NoChannel` (a trunk failure: the ladder tries again later).
/// Calls over the trunk's size are queued, not dropped.
pub const CHANNEL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl SipGateway {
    /// Ring `number` through the trunk. Resolves when the call is answered
    /// (a connected leg) or has failed; dropping the future while it rings
    /// cancels the call. With every channel of the trunk in use, the call
    /// waits up to [`CHANNEL_WAIT`] for one.
    pub async fn call(&self, number: &str) -> Result<CallLeg, CallFailure> {
        self.call_with_early_media(number).await.result
    }

    /// [`SipGateway::call`], keeping the early media.
    pub async fn call_with_early_media(&self, number: &str) -> Attempt {
        self.attempt(number, CHANNEL_WAIT).await
    }

    /// A call that waits at most `wait` for a free channel.
    pub(crate) async fn attempt(&self, number: &str, wait: std::time::Duration) -> Attempt {
        let mut early = Early::default();
        let result = self.place(number, wait, &mut early).await;
        early.finish();
        Attempt {
            result,
            early_media: early.pcm,
        }
    }

    async fn place(
        &self,
        number: &str,
        wait: std::time::Duration,
        early: &mut Early,
    ) -> Result<CallLeg, CallFailure> {
        let number = dialable(number)?;
        let channel = self
            .limits
            .channel_within(wait)
            .await
            .ok_or(CallFailure::NoChannel(self.limits.max_channels()))?;
        let sock = rtp::bind(self.media_ip(), &self.trunk.rtp_ports)
            .await
            .map_err(|e| CallFailure::NoRtpPort(e.to_string()))?;
        let rtp_port = sock
            .local_addr()
            .map_err(|e| CallFailure::NoRtpPort(e.to_string()))?;
        let sock = Arc::new(sock);
        let offer = sdp::offer(
            self.advertised_ip(),
            rtp_port.port(),
            rand::random::<u32>().into(),
        );
        let mut option = self.invite_option(&number, offer.clone())?;
        // Our turn under the call rate comes last, right before the INVITE
        // leaves: the time the trunk counts is the INVITE's, not the RTP
        // socket's.
        self.limits.pace().await;
        let mut challenged = false;
        let (dialog, id, resp, states) = loop {
            let (state_tx, mut states) = self.dialogs.new_dialog_state_channel();
            let (dialog, invite) = self
                .dialogs
                .do_invite_async(option.clone(), state_tx)
                .map_err(|e| CallFailure::Signalling(e.to_string()))?;
            info!(trunk = %self.trunk.name, call_id = %dialog.id().call_id, "calling");
            let mut pending = CancelOnDrop(Some(dialog.clone()));
            let rung = self.ring(&dialog, invite, &mut states, &sock, early).await;
            pending.0 = None;
            match rung {
                Ringing::Final { id, resp } => break (dialog, id, resp, states),
                // Answered once: a second challenge means the password is wrong.
                Ringing::Challenged(resp) if !challenged => {
                    challenged = true;
                    let creds = self.trunk.credentials.as_ref();
                    let uri = option.callee.to_string();
                    let Some(auth) = creds.and_then(|c| authorization(&resp, c, "INVITE", &uri))
                    else {
                        return Err(refused(&resp, false));
                    };
                    let mut headers = option.headers.take().unwrap_or_default();
                    headers.push(auth);
                    option.headers = Some(headers);
                    option.call_id = Some(dialog.id().call_id.clone());
                }
                Ringing::Challenged(resp) => return Err(refused(&resp, false)),
                Ringing::Failed(f) => return Err(f),
            }
        };
        let answer = match sdp::parse_answer(&String::from_utf8_lossy(&resp.body)) {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "answered with unusable SDP: hanging up");
                let _ = dialog.hangup().await;
                self.dialogs.remove_dialog(&id);
                return Err(CallFailure::BadAnswer(e.to_string()));
            }
        };
        info!(remote = %answer.remote, codec = ?answer.media.codec, "answered");
        // The call's media takes the socket over from the early media.
        early.finish();
        let peer = rtp::Peer::new(answer.remote);
        let sink = rtp::Sink {
            sock: sock.clone(),
            peer: peer.clone(),
        };
        let peer_for_calls = peer.clone();
        let (leg, handle) = rtp_leg(answer.media, Arc::new(sink), &self.leg);
        handle.receive(rtp::Source {
            sock,
            peer,
            media: answer.media,
            timeout: self.trunk.rtp_timeout,
            handle: handle.clone(),
            latched: None,
        });
        tokio::spawn(supervise(Call {
            dialog,
            id,
            states,
            handle: handle.clone(),
            dialogs: self.dialogs.clone(),
            sdp: offer,
            role: Role::Caller,
            channel,
            peer: peer_for_calls,
            timer: SessionTimer::from_answer(header_value(&resp.headers, "Session-Expires")),
            update_allowed: allows_update(&resp.headers),
            audio_pt: answer.media.audio_pt,
        }));
        handle.connected().await;
        Ok(leg)
    }

    fn invite_option(&self, number: &str, offer: String) -> Result<InviteOption, CallFailure> {
        let t = &self.trunk;
        let bad = |e: rsipstack::sip::Error| CallFailure::Signalling(e.to_string());
        let host = host_port(&t.host, t.port);
        let transport = match t.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        let callee = Uri::try_from(format!("sip:{number}@{host}{transport}")).map_err(bad)?;
        let caller = Uri::try_from(format!("sip:{}@{host}", t.from_number)).map_err(bad)?;
        let contact = Uri::try_from(format!(
            "sip:{}@{}",
            t.from_number,
            host_port(&self.advertised_ip().to_string(), self.local.port())
        ))
        .map_err(bad)?;
        let destination = t.next_hop();
        Ok(InviteOption {
            caller_display_name: t.display_name.clone(),
            caller,
            callee,
            destination,
            contact,
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            // Session timers (RFC 4028): a trunk that wants them gets them.
            headers: Some(
                [
                    Header::Supported("timer".into()),
                    Header::SessionExpires(REQUESTED_SESSION_EXPIRES.to_string().into()),
                ]
                .into_iter()
                .chain(t.preloaded_route())
                .collect(),
            ),
            // Challenges are answered here (digest.rs), not by the stack.
            credential: None,
            ..Default::default()
        })
    }

    /// Wait for the final response, cancelling when the phone has rung for
    /// the ring timeout.
    async fn ring(
        &self,
        dialog: &InviteDialog,
        mut invite: tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>,
        states: &mut DialogStateReceiver,
        sock: &Arc<tokio::net::UdpSocket>,
        early: &mut Early,
    ) -> Ringing {
        let mut deadline: Option<Instant> = None;
        let mut cancelled = false;
        let mut states_open = true;
        let result = loop {
            let ring_timer = async {
                match deadline {
                    Some(d) if !cancelled => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut invite => break r,
                state = states.recv(), if states_open => match state {
                    Some(state @ (DialogState::Trying(_) | DialogState::Early(..))) => {
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + self.trunk.ring_timeout);
                        }
                        if let DialogState::Early(_, progress) = &state {
                            early.start(sock, progress);
                        }
                    }
                    Some(_) => {}
                    None => states_open = false,
                },
                _ = ring_timer => {
                    info!(timeout = ?self.trunk.ring_timeout, "no answer: cancelling");
                    cancelled = true;
                    let d = dialog.clone();
                    tokio::spawn(async move {
                        if let Err(e) = d.cancel().await {
                            debug!(error = %e, "CANCEL");
                        }
                    });
                }
            }
        };
        let (id, resp) = match result {
            Ok(Ok((id, Some(resp)))) => (id, resp),
            Ok(Ok((_, None))) => {
                return Ringing::Failed(CallFailure::Signalling("no final response".into()));
            }
            Ok(Err(e)) => return Ringing::Failed(CallFailure::Signalling(e.to_string())),
            Err(e) => return Ringing::Failed(CallFailure::Signalling(e.to_string())),
        };
        // A 2xx crossing our CANCEL is ACKed and ended with a BYE by the stack.
        if cancelled {
            return Ringing::Failed(CallFailure::RingTimeout);
        }
        if resp.status_code == StatusCode::OK {
            return Ringing::Final { id, resp };
        }
        if matches!(resp.status_code.code(), 401 | 407) {
            return Ringing::Challenged(resp);
        }
        if resp.status_code.kind() == StatusCodeKind::Successful {
            // Another 2xx to an INVITE is not in the standard; the stack does
            // not confirm it, so there is no dialog to carry media.
            return Ringing::Failed(CallFailure::Signalling(format!(
                "unexpected {}",
                resp.status_code
            )));
        }
        Ringing::Failed(refused(&resp, deadline.is_some()))
    }
}

/// Early media of an attempt: received from the first 183 with SDP until
/// the answer or the end.
#[derive(Default)]
struct Early {
    capture: Option<EarlyCapture>,
    pcm: Vec<i16>,
}

impl Early {
    fn start(&mut self, sock: &Arc<tokio::net::UdpSocket>, progress: &Response) {
        if self.capture.is_some() || progress.body.is_empty() {
            return;
        }
        match sdp::parse_answer(&String::from_utf8_lossy(&progress.body)) {
            Ok(p) => {
                debug!(codec = ?p.media.codec, "early media");
                self.capture = EarlyCapture::start(sock.clone(), &p);
            }
            Err(e) => debug!(error = %e, "unusable SDP in a provisional response"),
        }
    }

    fn finish(&mut self) {
        if let Some(mut c) = self.capture.take() {
            self.pcm = c.stop();
        }
    }
}

enum Ringing {
    Final {
        id: DialogId,
        resp: Response,
    },
    /// 401 or 407: the trunk wants our digest.
    Challenged(Response),
    Failed(CallFailure),
}

fn refused(resp: &Response, rang: bool) -> CallFailure {
    let code = resp.status_code.code();
    // The stack answers its own 408 when nothing came back at all.
    if code == 408 && !rang {
        return CallFailure::NoResponse;
    }
    CallFailure::Refused {
        code,
        reason: resp
            .wire_reason
            .clone()
            .unwrap_or_else(|| resp.status_code.text().to_string()),
        cause: resp.headers.iter().find_map(|h| match h {
            Header::Reason(r) => Some(r.value().to_string()),
            _ => None,
        }),
        rang,
    }
}

/// Ends a call that was abandoned while it rang: CANCEL (or BYE, had it
/// just been answered).
struct CancelOnDrop(Option<InviteDialog>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            tokio::spawn(async move {
                let _ = d.hangup().await;
            });
        }
    }
}

/// The value of the first header named `name` (case-insensitive).
pub(crate) fn header_value<'a>(
    headers: &'a rsipstack::sip::Headers,
    name: &str,
) -> Option<&'a str> {
    headers.iter().find_map(|h| match h {
        Header::SessionExpires(v) if name.eq_ignore_ascii_case("Session-Expires") => {
            Some(v.value())
        }
        Header::Supported(v) if name.eq_ignore_ascii_case("Supported") => Some(v.value()),
        Header::Allow(v) if name.eq_ignore_ascii_case("Allow") => Some(v.value()),
        Header::Other(k, v) if k.eq_ignore_ascii_case(name) => Some(v.as_str()),
        _ => None,
    })
}

/// Whether an `Allow` header lists UPDATE.
pub(crate) fn allows_update(headers: &rsipstack::sip::Headers) -> bool {
    header_value(headers, "Allow").is_some_and(|v| {
        v.split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
    })
}

/// A phone number as the Request-URI user: digits with an optional leading
/// `+`, and `*` for service codes. Spaces, dashes and dots are dropped.
fn dialable(number: &str) -> Result<String, CallFailure> {
    let n: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = n.strip_prefix('+').unwrap_or(&n);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '*') {
        return Err(CallFailure::BadNumber(number.to_string()));
    }
    Ok(n)
}

pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_cleaned_or_refused() {
        assert_eq!(dialable("+86 138-0013-8000").unwrap(), "+8613800138000");
        assert_eq!(dialable("(010) 6552.9988").unwrap(), "01065529988");
        assert_eq!(dialable("*99").unwrap(), "*99");
        for bad in ["", "+", "elder@example.org", "123;transport=tcp", "12#"] {
            assert!(
                matches!(dialable(bad), Err(CallFailure::BadNumber(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("2001:db8::1", 5060), "[2001:db8::1]:5060");
        assert_eq!(host_port("sip.example.net", 5080), "sip.example.net:5080");
    }
}
