//! Registration to the trunk (RFC 3261 §10), for trunks that know us by a
//! registered contact and a password rather than by our IP address: a host
//! behind NAT or with a dynamic address.
//!
//! REGISTER goes out at start, its digest challenge is answered with the
//! trunk's credentials (MD5 or SHA-256, `digest.rs`), and the binding is
//! refreshed at half the granted time. When the registrar reports our
//! address as it sees it (Via `received`/`rport`, RFC 3581) and that differs
//! from our Contact, we register again at once with the public address, so
//! calls into the service find their way through the NAT. A failed attempt
//! is retried with a growing pause, up to five minutes.

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, Response, SipMessage, StatusCode, Uri};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{make_call_id, make_tag};
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::digest::authorization;
use crate::trunk::{Transport, Trunk};

/// Where registration stands, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// The trunk authenticates us by IP address: nothing to register.
    NotUsed,
    /// The first REGISTER has not been answered yet.
    Pending,
    /// Bound for this long from the last refresh.
    Registered { expires: Duration },
    /// The last attempt failed; it is retried.
    Failed { reason: String },
}

/// Why one registration attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the registrar refused: {code} {reason}")]
    Refused { code: u16, reason: String },
    #[error("the registrar challenged again: the username or password is wrong")]
    BadCredentials,
    #[error("the registrar's challenge offers no digest we can answer, or no credentials are set")]
    CannotAuthenticate,
    #[error("no answer from the registrar")]
    NoResponse,
    #[error("{0}")]
    Signalling(String),
}

/// Pause before retrying after `failures` failed attempts in a row.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.min(6)).min(300))
}

/// When to refresh a binding granted for `expires`: at half of it, never
/// sooner than a second.
pub fn refresh_after(expires: Duration) -> Duration {
    (expires / 2).max(Duration::from_secs(1))
}

/// The time a 200 to REGISTER granted: our Contact's `expires` parameter, else
/// the `Expires` header, else what we asked for.
pub fn granted(resp: &Response, requested: u32) -> u32 {
    let from_contact = resp.headers.iter().find_map(|h| match h {
        Header::Contact(c) => c.value().split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| v.trim().parse().ok())?
        }),
        _ => None,
    });
    let from_header = resp.headers.iter().find_map(|h| match h {
        Header::Expires(e) => e.value().trim().parse().ok(),
        _ => None,
    });
    from_contact.or(from_header).unwrap_or(requested)
}

/// Keeps this node registered with the trunk until `token` is cancelled.
pub(crate) async fn keep_registered(
    endpoint: EndpointInnerRef,
    trunk: Trunk,
    expires: u32,
    local: SocketAddr,
    state: watch::Sender<RegistrationState>,
    token: CancellationToken,
) {
    let mut reg = Registration::new(endpoint, trunk, expires, local);
    let mut failures = 0;
    loop {
        let wait = match reg.register().await {
            Ok(granted) => {
                if failures > 0 || !matches!(*state.borrow(), RegistrationState::Registered { .. })
                {
                    info!(trunk = %reg.trunk.name, expires = ?granted, "registered with the trunk");
                }
                failures = 0;
                state.send_replace(RegistrationState::Registered { expires: granted });
                refresh_after(granted)
            }
            Err(e) => {
                warn!(trunk = %reg.trunk.name, error = %e, "registration with the trunk failed; retrying");
                let pause = backoff(failures);
                failures += 1;
                state.send_replace(RegistrationState::Failed {
                    reason: e.to_string(),
                });
                pause
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

struct Registration {
    endpoint: EndpointInnerRef,
    trunk: Trunk,
    expires: u32,
    /// One Call-ID and From tag for every refresh (RFC 3261 §10.2.4).
    call_id: String,
    tag: String,
    seq: u32,
    /// Our address for the Contact: the advertised one, then the one the
    /// registrar saw.
    contact: SocketAddr,
}

impl Registration {
    fn new(endpoint: EndpointInnerRef, trunk: Trunk, expires: u32, local: SocketAddr) -> Self {
        Self {
            endpoint,
            trunk,
            expires,
            call_id: make_call_id(None, Default::default()).to_string(),
            tag: make_tag().to_string(),
            seq: 0,
            contact: local,
        }
    }

    /// One registration, with its digest answer and, when the registrar
    /// saw another address than ours, a second one from that address.
    async fn register(&mut self) -> Result<Duration, RegisterError> {
        let resp = self.attempt().await?;
        if let Some(public) = seen_as(&resp)
            && public != self.contact
        {
            info!(%public, "the registrar sees us at another address (NAT): registering that one");
            self.contact = public;
            let resp = self.attempt().await?;
            return Ok(Duration::from_secs(granted(&resp, self.expires).into()));
        }
        Ok(Duration::from_secs(granted(&resp, self.expires).into()))
    }

    /// REGISTER, answering one challenge.
    async fn attempt(&mut self) -> Result<Response, RegisterError> {
        let mut auth = None;
        loop {
            let resp = self.send(auth.clone()).await?;
            match resp.status_code.code() {
                200..=299 => return Ok(resp),
                401 | 407 if auth.is_none() => {
                    let creds = self
                        .trunk
                        .credentials
                        .as_ref()
                        .ok_or(RegisterError::CannotAuthenticate)?;
                    let uri = self.registrar_uri().to_string();
                    auth = Some(
                        authorization(&resp, creds, "REGISTER", &uri)
                            .ok_or(RegisterError::CannotAuthenticate)?,
                    );
                }
                401 | 407 => return Err(RegisterError::BadCredentials),
                code => {
                    return Err(RegisterError::Refused {
                        code,
                        reason: resp
                            .wire_reason
                            .clone()
                            .unwrap_or_else(|| resp.status_code.text().to_string()),
                    });
                }
            }
        }
    }

    fn registrar_uri(&self) -> Uri {
        trunk_uri(&self.trunk)
    }

    async fn send(&mut self, auth: Option<Header>) -> Result<Response, RegisterError> {
        let bad = |e: rsipstack::Error| RegisterError::Signalling(e.to_string());
        let bad_uri = |e: rsipstack::sip::Error| RegisterError::Signalling(e.to_string());
        let user = self
            .trunk
            .credentials
            .as_ref()
            .map_or(self.trunk.from_number.as_str(), |c| c.username.as_str());
        let host = crate::dialer::host_port(&self.trunk.host, self.trunk.port);
        let aor = Uri::try_from(format!("sip:{user}@{host}")).map_err(bad_uri)?;
        let server = self.registrar_uri();
        let to = rsipstack::sip::typed::To {
            display_name: None,
            uri: aor.clone(),
            params: vec![],
        };
        let from = rsipstack::sip::typed::From {
            display_name: None,
            uri: aor,
            params: vec![rsipstack::sip::Param::Tag(self.tag.clone().into())],
        };
        let destination = self.trunk.next_hop();
        let via = self.endpoint.get_via(None, None).map_err(bad)?;
        self.seq += 1;
        let mut request = self.endpoint.make_request(
            Method::Register,
            server,
            via,
            from,
            to,
            self.seq,
            Some(self.call_id.clone().into()),
        );
        let contact_host =
            crate::dialer::host_port(&self.contact.ip().to_string(), self.contact.port());
        let transport = match self.trunk.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        request.headers.push(Header::Contact(
            format!("<sip:{user}@{contact_host}{transport}>").into(),
        ));
        request
            .headers
            .push(Header::Expires(self.expires.to_string().into()));
        if let Some(route) = self.trunk.preloaded_route() {
            request.headers.push(route);
        }
        if let Some(a) = auth {
            request.headers.push(a);
        }
        transact(&self.endpoint, request, destination)
            .await
            .map_err(bad)?
            .ok_or(RegisterError::NoResponse)
    }
}

/// The trunk itself as a Request-URI, `sip:host:port`: where REGISTER and
/// OPTIONS pings go.
pub(crate) fn trunk_uri(trunk: &Trunk) -> Uri {
    let host = crate::dialer::host_port(&trunk.host, trunk.port);
    let transport = match trunk.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    Uri::try_from(format!("sip:{host}{transport}")).expect("a host and port make a URI")
}

/// Send a request outside any call as a client transaction and wait for its
/// final response; `None` when none came (the stack's own 408 included).
pub(crate) async fn transact(
    endpoint: &EndpointInnerRef,
    request: rsipstack::sip::Request,
    destination: Option<SipAddr>,
) -> Result<Option<Response>, rsipstack::Error> {
    let key = TransactionKey::from_request(&request, TransactionRole::Client)?;
    let mut tx = Transaction::new_client(key, request, endpoint.clone(), None);
    tx.destination = destination;
    tx.send().await?;
    while let Some(msg) = tx.receive().await {
        if let SipMessage::Response(resp) = msg {
            if resp.status_code == StatusCode::Trying || resp.status_code.code() < 200 {
                continue;
            }
            if resp.status_code.code() == 408 {
                return Ok(None);
            }
            return Ok(Some(resp));
        }
    }
    Ok(None)
}

/// Our address as the registrar saw it: the Via's `received` and `rport`.
fn seen_as(resp: &Response) -> Option<SocketAddr> {
    let via = resp.via_header().ok()?;
    let raw = via.value();
    let has = |name: &str| {
        raw.split(';').skip(1).any(|p| {
            p.split('=')
                .next()
                .is_some_and(|k| k.trim().eq_ignore_ascii_case(name))
        })
    };
    // Without a `received` or a filled-in `rport` the sent-by is ours, not news.
    if !has("received") && !raw.to_ascii_lowercase().contains("rport=") {
        return None;
    }
    let (_, host) = SipConnection::parse_target_from_via(via).ok()?;
    SipAddr::from(host).addr.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[&str]) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n",
            headers.join("\r\n")
        );
        match SipMessage::try_from(text.as_str()).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_granted_time_comes_from_the_contact_then_the_header() {
        let base = [
            "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            "From: <sip:care@trunk>;tag=1",
            "To: <sip:care@trunk>;tag=2",
            "Call-ID: x",
            "CSeq: 2 REGISTER",
        ];
        let with = |extra: &[&str]| {
            let mut h = base.to_vec();
            h.extend_from_slice(extra);
            response(&h)
        };
        assert_eq!(
            granted(
                &with(&["Contact: <sip:care@10.0.0.5:5060>;expires=120"]),
                600
            ),
            120
        );
        assert_eq!(granted(&with(&["Expires: 300"]), 600), 300);
        assert_eq!(granted(&with(&[]), 600), 600);
    }

    #[test]
    fn the_address_the_registrar_saw_is_read_from_received_and_rport() {
        let seen = |via: &str| {
            seen_as(&response(&[
                via,
                "From: <sip:care@trunk>;tag=1",
                "To: <sip:care@trunk>",
                "Call-ID: x",
                "CSeq: 1 REGISTER",
            ]))
        };
        assert_eq!(
            seen("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.7;rport=40123"),
            Some("203.0.113.7:40123".parse().unwrap())
        );
        assert_eq!(seen("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1"), None);
    }

    #[test]
    fn retries_back_off_to_five_minutes_and_refreshes_come_at_half_time() {
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(
            refresh_after(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
