//! `voicecare phone` over SIP: dial a SIP address as an elder's landline
//! would (`--sip-call`), or answer calls as the elder's phone that the
//! service rings through its trunk (`--sip-answer`). The SIP side is the
//! engine's own gateway (`voicecare-sip`), so the phone speaks exactly what
//! the engine speaks: G.711 A-law or μ-law and RFC 4733 keypad events.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use voicecare_sip::{Credentials, Secret, SipGateway, Transport, Trunk};
use voicecare_telephony::LegConfig;

use super::phone::{Ends, PhoneArgs, talk};
use crate::config::PortRange;

/// Port a phone answering calls listens on unless `--sip-bind` says otherwise.
const ANSWER_PORT: u16 = 5060;

#[derive(Debug, Clone, Args)]
pub struct PhoneSipArgs {
    /// Place a SIP call to URI (sip:NUMBER@HOST[:PORT], port 5060 unless
    /// given) instead of registering with the engine.
    #[arg(long, value_name = "URI", conflicts_with_all = ["sim", "call", "sip_answer"])]
    pub sip_call: Option<String>,
    /// Answer SIP calls arriving at --sip-bind instead of registering with
    /// the engine.
    #[arg(long, conflicts_with_all = ["sim", "call"])]
    pub sip_answer: bool,
    /// Local SIP address; its IP is also the one RTP uses and the SDP
    /// advertises. Default: port 5060 when answering, any free port when
    /// calling. An unspecified IP (0.0.0.0) becomes the local address that
    /// routes to the peer (calling) or to the first --sip-accept-from address.
    #[arg(long, value_name = "ADDR")]
    pub sip_bind: Option<SocketAddr>,
    /// Local UDP ports for the call's media (FIRST-LAST).
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-29999")]
    pub sip_rtp_ports: PortRange,
    /// Our number as the caller (the From user) on calls we place.
    #[arg(long, value_name = "NUMBER", default_value = "phone")]
    pub sip_from: String,
    /// User name for digest authentication of calls we place.
    #[arg(long)]
    pub sip_username: Option<String>,
    /// File holding the digest password.
    #[arg(long, value_name = "FILE")]
    pub sip_password_file: Option<PathBuf>,
    /// Signalling transport for calls we place: udp or tcp.
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp"])]
    pub sip_transport: String,
    /// Addresses calls may come from, comma-separated (--sip-answer).
    #[arg(
        long,
        value_name = "ADDR,…",
        value_delimiter = ',',
        default_value = "127.0.0.1"
    )]
    pub sip_accept_from: Vec<IpAddr>,
    /// Give up on a call we place after it has rung this long.
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pub ring_secs: u64,
}

impl PhoneSipArgs {
    /// Whether the phone speaks SIP rather than WebRTC.
    pub fn active(&self) -> bool {
        self.sip_call.is_some() || self.sip_answer
    }
}

/// A SIP address to dial: the Request-URI user and where to send the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    user: String,
    host: String,
    port: u16,
}

/// `sip:USER@HOST[:PORT][;params]`, or the same without `sip:`.
fn parse_target(uri: &str) -> anyhow::Result<Target> {
    let bad = || anyhow::anyhow!("--sip-call {uri:?}: expected sip:NUMBER@HOST[:PORT]");
    let rest = uri.trim();
    let rest = rest.strip_prefix("sip:").unwrap_or(rest);
    if rest.starts_with("sips:") {
        anyhow::bail!("--sip-call {uri:?}: TLS (sips:) is not supported");
    }
    let rest = rest.split([';', '?']).next().unwrap_or(rest);
    let (user, hostport) = rest.split_once('@').ok_or_else(bad)?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().map_err(|_| bad())?),
            None if after.is_empty() => (host, 5060),
            None => return Err(bad()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (hostport, 5060),
        }
    };
    if user.is_empty() || host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Target {
        user: user.to_string(),
        host: host.to_string(),
        port,
    })
}

/// The local address that routes to `to` (no packet is sent).
fn local_ip_towards(to: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let sock = std::net::UdpSocket::bind(any)?;
    sock.connect(to)
        .with_context(|| format!("no route to {to}"))?;
    Ok(sock.local_addr()?.ip())
}

/// `bind`, with an unspecified IP replaced by the one routing to `peer`:
/// the SDP must carry an address the peer can send RTP to.
fn concrete_bind(bind: SocketAddr, peer: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    Ok(SocketAddr::new(local_ip_towards(peer)?, bind.port()))
}

fn trunk(args: &PhoneSipArgs, host: &str, port: u16) -> anyhow::Result<Trunk> {
    let mut t = Trunk::new("phone", host, port);
    t.rtp_ports = args.sip_rtp_ports.0.clone();
    t.from_number = args.sip_from.clone();
    t.ring_timeout = Duration::from_secs(args.ring_secs);
    t.transport = match args.sip_transport.as_str() {
        "tcp" => Transport::Tcp,
        _ => Transport::Udp,
    };
    t.credentials = match (&args.sip_username, &args.sip_password_file) {
        (Some(username), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .with_context(|| format!("--sip-password-file {}", file.display()))?;
            Some(Credentials {
                username: username.clone(),
                password: Secret::new(password.trim()),
            })
        }
        (None, None) => None,
        _ => anyhow::bail!("--sip-username and --sip-password-file go together"),
    };
    Ok(t)
}

pub async fn run(args: &PhoneArgs) -> anyhow::Result<()> {
    let ends = Ends::from_args(args)?;
    match &args.sip.sip_call {
        Some(uri) => place_calls(args, &ends, uri).await,
        None => answer_calls(args, &ends).await,
    }
}

async fn place_calls(args: &PhoneArgs, ends: &Ends, uri: &str) -> anyhow::Result<()> {
    let target = parse_target(uri)?;
    let peer = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} has no address", target.host))?;
    let mut t = trunk(&args.sip, &target.host, target.port)?;
    let bind = args
        .sip
        .sip_bind
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    t.bind = concrete_bind(bind, peer)?;
    let gateway = SipGateway::start(t, LegConfig::default()).await?;
    eprintln!("SIP phone at {}", gateway.local_addr());
    let mut handled = 0u32;
    while args.calls == 0 || handled < args.calls {
        eprintln!("calling {}:{}…", target.host, target.port);
        handled += 1;
        let leg = match gateway.call(&target.user).await {
            Ok(leg) => leg,
            Err(failure) => {
                let line = serde_json::json!({
                    "call": handled,
                    "transport": "sip",
                    "answered": false,
                    "status": failure.status_code(),
                    "failure": failure.to_string(),
                });
                println!("{line}");
                anyhow::bail!("the call failed: {failure}");
            }
        };
        eprintln!("answered");
        let report = talk(leg, ends, handled).await?;
        println!("{}", report.json(handled, "sip"));
    }
    gateway.shutdown();
    Ok(())
}

async fn answer_calls(args: &PhoneArgs, ends: &Ends) -> anyhow::Result<()> {
    let sip = &args.sip;
    let first = *sip
        .sip_accept_from
        .first()
        .context("--sip-accept-from names no address")?;
    // The trunk's host only matters for calls we place, which this phone does not.
    let mut t = trunk(sip, &first.to_string(), ANSWER_PORT)?;
    t.accept_from = sip.sip_accept_from.clone();
    let bind = sip
        .sip_bind
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], ANSWER_PORT)));
    t.bind = concrete_bind(bind, SocketAddr::new(first, ANSWER_PORT))?;
    let gateway = SipGateway::start(t, LegConfig::default()).await?;
    let mut incoming = gateway
        .take_incoming()
        .context("the gateway's incoming calls were already taken")?;
    eprintln!("answering SIP calls at {}", gateway.local_addr());
    let mut handled = 0u32;
    while args.calls == 0 || handled < args.calls {
        let call = incoming.recv().await.context("the SIP endpoint stopped")?;
        handled += 1;
        eprintln!("incoming call: answering");
        let leg = call
            .answer()
            .await
            .map_err(|f| anyhow::anyhow!("answering: {f}"))?;
        // One call at a time, as a phone: another caller meanwhile hears busy.
        let call = talk(leg, ends, handled);
        tokio::pin!(call);
        let report = loop {
            tokio::select! {
                report = &mut call => break report?,
                Some(other) = incoming.recv() => other.reject(486, "busy on another call"),
            }
        };
        println!("{}", report.json(handled, "sip"));
    }
    gateway.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: &str, host: &str, port: u16) -> Target {
        Target {
            user: user.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn targets_are_read_from_sip_uris() {
        let ok = [
            (
                "sip:+8610000@127.0.0.1:5070",
                t("+8610000", "127.0.0.1", 5070),
            ),
            (
                "sip:95100@pbx.example.net",
                t("95100", "pbx.example.net", 5060),
            ),
            ("95100@10.0.0.2:5080", t("95100", "10.0.0.2", 5080)),
            ("sip:1@[::1]:5062;transport=udp", t("1", "::1", 5062)),
            ("sip:1@[2001:db8::1]", t("1", "2001:db8::1", 5060)),
            ("sip:1@host;user=phone", t("1", "host", 5060)),
        ];
        for (uri, want) in ok {
            assert_eq!(parse_target(uri).unwrap(), want, "{uri}");
        }
        for bad in [
            "",
            "sip:host",
            "sip:@host",
            "sip:1@",
            "sip:1@host:x",
            "sips:1@host",
            "sip:1@host:0",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unspecified_bind_takes_the_address_towards_the_peer() {
        let peer: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(
            concrete_bind(any, peer).unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        let given: SocketAddr = "127.0.0.2:5080".parse().unwrap();
        assert_eq!(concrete_bind(given, peer).unwrap(), given);
    }
}
