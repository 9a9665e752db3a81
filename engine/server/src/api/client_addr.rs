//! The client's address: the peer of the TCP connection, or, when that peer
//! is a configured reverse proxy, the address the proxies recorded in
//! `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use voicecare_telephony::signalling::ClientAddr;

/// An address or a network in CIDR notation (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpNetError {
    #[error("not an IP address or network (like 10.0.0.1 or 10.0.0.0/8)")]
    Address,
    #[error("the prefix length must be at most {max}")]
    Prefix { max: u8 },
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Address)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse().map_err(|_| IpNetError::Address)?,
        };
        if prefix > max {
            return Err(IpNetError::Prefix { max });
        }
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let shift = bits - prefix;
    shift >= bits || (a >> shift) == (b >> shift)
}

/// An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client behind `peer`. Walking `X-Forwarded-For` from the right,
    /// each trusted hop vouches for the entry before it; the first entry not
    /// added by a trusted proxy is the client. Entries further left were
    /// written by the client itself and could say anything.
    /// A trusted proxy received the request over HTTPS: its last
    /// `X-Forwarded-Proto` says `https`.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusts(canonical(peer))
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    }

    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage from the proxy's side: believe no further.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// Middleware: tell the handlers behind it (device signalling) the client's
/// address, as the trusted proxies give it.
pub async fn resolve(
    State(proxies): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    if let Some(peer) = peer {
        let client = proxies.client_ip(peer, req.headers());
        req.extensions_mut().insert(ClientAddr(client));
        // TLS ended here, or at a trusted proxy that says so.
        let ours = req
            .extensions()
            .get::<crate::tls::Https>()
            .is_some_and(|h| h.0);
        let https = ours || proxies.forwarded_https(peer, req.headers());
        req.extensions_mut().insert(crate::tls::Https(https));
    }
    next.run(req).await
}

/// One `X-Forwarded-For` entry: an address, maybe with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

impl FromStr for TrustedProxies {
    type Err = IpNetError;

    /// A comma-separated list, as `--trusted-proxy` takes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn https_is_believed_only_from_a_trusted_proxy() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(proxies.forwarded_https(ip("10.1.2.3"), &h));
        assert!(
            !proxies.forwarded_https(ip("203.0.113.9"), &h),
            "anyone can send the header"
        );
        // The last proxy's word counts.
        h.insert("x-forwarded-proto", "https, http".parse().unwrap());
        assert!(!proxies.forwarded_https(ip("10.1.2.3"), &h));
        assert!(!proxies.forwarded_https(ip("10.1.2.3"), &HeaderMap::new()));
    }

    #[test]
    fn networks_parse_and_match() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::Prefix { max: 32 })
        );
        assert_eq!("proxy".parse::<IpNet>(), Err(IpNetError::Address));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let lb = ip("127.0.0.1");
        assert_eq!(t.client_ip(lb, &xff("203.0.113.7")), ip("203.0.113.7"));
        // A made-up entry on the left changes nothing.
        assert_eq!(
            t.client_ip(lb, &xff("6.6.6.6, 203.0.113.7, 10.0.0.5")),
            ip("203.0.113.7")
        );
        assert_eq!(
            t.client_ip(lb, &xff("198.51.100.1:5060")),
            ip("198.51.100.1")
        );
        // Only trusted hops: the leftmost of them.
        assert_eq!(t.client_ip(lb, &xff("10.0.0.9")), ip("10.0.0.9"));
        // No header, or a garbled one: the proxy itself.
        assert_eq!(t.client_ip(lb, &HeaderMap::new()), lb);
        assert_eq!(t.client_ip(lb, &xff("unknown")), lb);
        // From an untrusted peer the header is ignored.
        assert_eq!(
            t.client_ip(ip("192.0.2.4"), &xff("203.0.113.7")),
            ip("192.0.2.4")
        );
        // No proxies configured: always the peer.
        assert_eq!(
            TrustedProxies::default().client_ip(lb, &xff("203.0.113.7")),
            lb
        );
    }
}
