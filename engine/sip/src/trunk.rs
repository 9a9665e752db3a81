//! How to reach a SIP trunk: the carrier (or the PBX in front of one) that
//! turns our calls into ordinary phone calls.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// The signalling transport to the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// A password that never shows in logs: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The password itself, for the digest computation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Digest credentials the trunk challenges INVITEs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// One SIP trunk and how this node talks to it.
#[derive(Debug, Clone)]
pub struct Trunk {
    /// A name for logs and configuration.
    pub name: String,
    /// The trunk's host name or IP address.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Digest credentials, when the trunk authenticates by password rather
    /// than by our IP address.
    pub credentials: Option<Credentials>,
    /// Our number as the caller (the From user); carriers often replace it
    /// with the number they assigned to the trunk.
    pub from_number: String,
    /// Caller display name, if any.
    pub display_name: Option<String>,
    /// Local address for SIP signalling. Port 0 picks a free port; the IP is
    /// also the one RTP binds to and the SDP advertises.
    pub bind: SocketAddr,
    /// Local UDP ports for RTP, one per call.
    pub rtp_ports: RangeInclusive<u16>,
    /// Give up on a ringing phone after this long, counted from the first
    /// provisional response, with a CANCEL. Elders walk slowly: 45 s.
    pub ring_timeout: Duration,
    /// End an answered call when no RTP has arrived for this long.
    pub rtp_timeout: Duration,
    /// Addresses calls into the service may come from (IP authentication of
    /// the trunk or PBX). Empty: the trunk host's own addresses.
    pub accept_from: Vec<std::net::IpAddr>,
    /// Calls (out and in) the trunk carries at once, as the carrier sold
    /// it; more are refused before they reach the trunk. 0: no limit.
    pub max_channels: usize,
    /// New outbound calls per second the carrier accepts (CPS); calls
    /// beyond it wait their turn. 0: no limit.
    pub calls_per_second: f64,
    /// Register with the trunk for this many seconds, refreshed at half
    /// time (a trunk that knows us by a registered contact). `None`: the
    /// trunk authenticates our IP address and nothing is registered.
    pub register_expires: Option<u32>,
    /// Our address as the far end must see it, when this host is behind a
    /// one-to-one NAT (a cloud VM's public IP): the SDP and the Contact name
    /// it, while sockets stay bound to `bind`. `None`: the bound IP.
    pub public_ip: Option<std::net::IpAddr>,
    /// Send every request to this proxy (host, port) rather than to the
    /// trunk host, which stays in the Request-URI (RFC 3261 §8.1.2).
    pub outbound_proxy: Option<(String, u16)>,
}

impl Trunk {
    /// A trunk at `host:port` over UDP with the usual timers, bound to
    /// every interface.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            host: host.into(),
            port,
            transport: Transport::Udp,
            credentials: None,
            from_number: "voicecare".into(),
            display_name: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 5060)),
            rtp_ports: 20_000..=29_999,
            ring_timeout: Duration::from_secs(45),
            rtp_timeout: Duration::from_secs(30),
            accept_from: Vec::new(),
            max_channels: 0,
            calls_per_second: 0.0,
            register_expires: None,
            public_ip: None,
            outbound_proxy: None,
        }
    }

    /// The `Route` naming the outbound proxy as the first hop (loose
    /// routing), so the proxy knows the request is meant to pass through.
    pub(crate) fn preloaded_route(&self) -> Option<rsipstack::sip::Header> {
        let (host, port) = self.outbound_proxy.as_ref()?;
        let transport = match self.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
        };
        Some(rsipstack::sip::Header::Route(
            format!(
                "<sip:{};lr{transport}>",
                crate::dialer::host_port(host, *port)
            )
            .into(),
        ))
    }

    /// Where requests are sent when that is not simply the Request-URI's
    /// host over UDP: the outbound proxy, or the trunk over TCP.
    pub(crate) fn next_hop(&self) -> Option<rsipstack::transport::SipAddr> {
        let r#type = match self.transport {
            Transport::Udp => rsipstack::sip::Transport::Udp,
            Transport::Tcp => rsipstack::sip::Transport::Tcp,
        };
        let (host, port) = match &self.outbound_proxy {
            Some((h, p)) => (h.as_str(), *p),
            None if self.transport == Transport::Tcp => (self.host.as_str(), self.port),
            None => return None,
        };
        let addr =
            rsipstack::sip::HostWithPort::try_from(crate::dialer::host_port(host, port)).ok()?;
        Some(rsipstack::transport::SipAddr {
            r#type: Some(r#type),
            addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows_in_debug() {
        let mut t = Trunk::new("carrier", "sip.example.net", 5060);
        t.credentials = Some(Credentials {
            username: "care".into(),
            password: Secret::new("hunter2"),
        });
        let shown = format!("{t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(t.credentials.unwrap().password.expose(), "hunter2");
    }
}
