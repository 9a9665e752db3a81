//! The SIP endpoint of one trunk: the stack's transport, transaction and
//! dialog layers, and the loop answering requests the trunk sends us.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transport::{TransportLayer, udp::UdpConnection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use voicecare_telephony::LegConfig;

use crate::inbound::{self, Context, IncomingCall};
use crate::register::RegistrationState;
use crate::trunk::Trunk;

/// Calls delivered and not yet taken by the engine. Beyond this the trunk
/// hears 503 and may route the call elsewhere.
const INCOMING_QUEUE: usize = 32;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot bind SIP to {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    /// A trunk group was given no trunk.
    #[error("no SIP trunk given")]
    NoTrunk,
}

/// Places calls through one SIP trunk. Cheap to share behind an `Arc`;
/// dropping it stops the endpoint.
pub struct SipGateway {
    pub(crate) trunk: Trunk,
    pub(crate) leg: LegConfig,
    pub(crate) dialogs: Arc<DialogLayer>,
    /// The transaction layer, for requests outside any call (OPTIONS pings).
    pub(crate) endpoint: EndpointInnerRef,
    /// Our SIP address as the far end sees it (Contact, Via).
    pub(crate) local: SocketAddr,
    token: CancellationToken,
    incoming: std::sync::Mutex<Option<mpsc::Receiver<IncomingCall>>>,
    pub(crate) limits: Arc<Limits>,
    registration: tokio::sync::watch::Receiver<RegistrationState>,
    advertised: IpAddr,
}

/// The trunk's channels and call rate, shared by calls out and in.
pub(crate) struct Limits {
    channels: Option<Arc<tokio::sync::Semaphore>>,
    max_channels: usize,
    /// Earliest time the next outbound call may start.
    next_call: tokio::sync::Mutex<tokio::time::Instant>,
    spacing: Option<std::time::Duration>,
}

/// How much wider than `1 / calls_per_second` outbound calls are spaced.
/// Each INVITE leaves a little after its turn (a new transaction, a task
/// woken late), the first of a burst the latest: spaced exactly, N + 1
/// INVITEs reached a SIPp trunk sold at N per second within 0.998 s, and a
/// carrier counting any sliding second refuses the last one. 5 % leaves
/// 50 ms of such delay in every second.
const CPS_MARGIN: f64 = 1.05;

/// A channel of the trunk, held for the life of a call.
pub(crate) type Channel = Option<tokio::sync::OwnedSemaphorePermit>;

impl Limits {
    fn new(trunk: &Trunk) -> Self {
        Limits {
            channels: (trunk.max_channels > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(trunk.max_channels))),
            max_channels: trunk.max_channels,
            next_call: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            spacing: (trunk.calls_per_second > 0.0)
                .then(|| std::time::Duration::from_secs_f64(CPS_MARGIN / trunk.calls_per_second)),
        }
    }

    /// A free channel, or `None` when all are in use.
    pub(crate) fn channel(&self) -> Option<Channel> {
        match &self.channels {
            None => Some(None),
            Some(s) => s.clone().try_acquire_owned().ok().map(Some),
        }
    }

    /// A channel, waiting up to `wait` for one to free up; calls waiting
    /// get them in the order they asked (the semaphore is fair).
    pub(crate) async fn channel_within(&self, wait: std::time::Duration) -> Option<Channel> {
        if let Some(c) = self.channel() {
            return Some(c);
        }
        let s = self.channels.as_ref()?.clone();
        if wait.is_zero() {
            return None;
        }
        tracing::debug!(
            channels = self.max_channels,
            "every channel in use: the call waits for one"
        );
        match tokio::time::timeout(wait, s.acquire_owned()).await {
            Ok(Ok(permit)) => Some(Some(permit)),
            _ => None,
        }
    }

    pub(crate) fn max_channels(&self) -> usize {
        self.max_channels
    }

    /// Wait for this call's turn under the calls-per-second limit.
    pub(crate) async fn pace(&self) {
        let Some(spacing) = self.spacing else { return };
        let at = {
            let mut next = self.next_call.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + spacing;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

impl std::fmt::Debug for SipGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipGateway")
            .field("trunk", &self.trunk)
            .field("local", &self.local)
            .finish()
    }
}

impl SipGateway {
    /// Bind the signalling socket and start the endpoint. `leg` shapes the
    /// call legs (buffers, connect timeout); its WebRTC fields are unused.
    pub async fn start(trunk: Trunk, leg: LegConfig) -> Result<Self, GatewayError> {
        let token = CancellationToken::new();
        let transports = TransportLayer::new(token.clone());
        let bind_error = |e: rsipstack::Error| GatewayError::Bind {
            addr: trunk.bind,
            reason: e.to_string(),
        };
        // UDP is always listened on; a TCP trunk gets its connection on
        // first use, and replies come back on it.
        let udp = UdpConnection::create_connection(trunk.bind, None, Some(token.child_token()))
            .await
            .map_err(bind_error)?;
        let local = udp.get_addr().get_socketaddr().map_err(bind_error)?;
        transports.add_transport(udp.into());
        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("voicecare/", env!("CARGO_PKG_VERSION")))
            .with_transport_layer(transports)
            .with_cancel_token(token.clone())
            .build();
        let incoming = endpoint.incoming_transactions().map_err(bind_error)?;
        let advertised = match trunk.public_ip {
            Some(ip) => ip,
            // The configured address: the stack reports its own pick for
            // 0.0.0.0, the first interface, which need not reach the trunk.
            None => reachable_ip(trunk.bind.ip(), &trunk).await,
        };
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let endpoint_inner = endpoint.inner.clone();
        let (reg_tx, registration) = tokio::sync::watch::channel(match trunk.register_expires {
            Some(_) => RegistrationState::Pending,
            None => RegistrationState::NotUsed,
        });
        if let Some(expires) = trunk.register_expires {
            tokio::spawn(crate::register::keep_registered(
                endpoint.inner.clone(),
                trunk.clone(),
                expires,
                SocketAddr::new(advertised, local.port()),
                reg_tx,
                token.child_token(),
            ));
        }
        tokio::spawn(async move { endpoint.serve().await });
        let allowed = allowed_sources(&trunk).await;
        let (calls_tx, calls) = mpsc::channel(INCOMING_QUEUE);
        let limits = Arc::new(Limits::new(&trunk));
        let ctx = Arc::new(Context {
            trunk: trunk.clone(),
            leg: leg.clone(),
            dialogs: dialogs.clone(),
            media_ip: trunk.bind.ip(),
            advertised_ip: advertised,
            limits: limits.clone(),
        });
        tokio::spawn(serve_incoming(incoming, ctx, allowed, calls_tx));
        info!(trunk = %trunk.name, %local, "SIP gateway started");
        Ok(Self {
            trunk,
            leg,
            dialogs,
            endpoint: endpoint_inner,
            local,
            token,
            incoming: std::sync::Mutex::new(Some(calls)),
            limits,
            registration,
            advertised,
        })
    }

    /// Calls the trunk delivers to the service, once: whoever takes this
    /// answers them. Not taken, they are refused with 480.
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingCall>> {
        self.incoming.lock().ok()?.take()
    }

    /// Where registration with the trunk stands, and its changes.
    pub fn registration(&self) -> tokio::sync::watch::Receiver<RegistrationState> {
        self.registration.clone()
    }

    /// Our SIP address (useful when the configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The IP RTP binds to: the configured one, so `0.0.0.0` takes media
    /// on every interface.
    pub(crate) fn media_ip(&self) -> IpAddr {
        self.trunk.bind.ip()
    }

    /// The IP our SDP advertises and our Contact names: the public one
    /// behind a one-to-one NAT, else the one we are reached at.
    pub(crate) fn advertised_ip(&self) -> IpAddr {
        self.advertised
    }

    pub fn trunk(&self) -> &Trunk {
        &self.trunk
    }

    /// Stop the endpoint: no new calls, and calls in progress lose signalling.
    pub fn shutdown(&self) {
        self.token.cancel();
    }
}

impl Drop for SipGateway {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The address the trunk reaches us at. Bound to every interface
/// (`0.0.0.0`), an SDP or Contact must still name one: the interface the
/// system routes to the trunk through (a UDP "connect" sends nothing). An
/// SDP with `c=0.0.0.0` would mean "send me nothing".
async fn reachable_ip(bound: IpAddr, trunk: &Trunk) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let (host, port) = match &trunk.outbound_proxy {
        Some((h, p)) => (h.clone(), *p),
        None => (trunk.host.clone(), trunk.port),
    };
    let route = async {
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()?
            .find(|a| a.is_ipv4() == bound.is_ipv4())?;
        let probe = std::net::UdpSocket::bind(SocketAddr::new(bound, 0)).ok()?;
        probe.connect(target).ok()?;
        Some(probe.local_addr().ok()?.ip())
    };
    match route.await {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => {
            warn!(host = %host, "cannot tell which local address reaches the trunk; set --sip-bind to a concrete address or --sip-public-ip");
            bound
        }
    }
}

/// Where calls into the service may come from: the configured addresses,
/// else whatever the trunk's host name resolves to.
async fn allowed_sources(trunk: &Trunk) -> Vec<IpAddr> {
    if !trunk.accept_from.is_empty() {
        return trunk.accept_from.clone();
    }
    match tokio::net::lookup_host((trunk.host.as_str(), trunk.port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            // Nobody is let in rather than everybody.
            warn!(error = %e, host = %trunk.host, "cannot resolve the trunk: calls into the service are refused until it resolves");
            vec![IpAddr::from([0, 0, 0, 0])]
        }
    }
}

/// Requests from the trunk: in-dialog ones (BYE, re-INVITE, INFO) go to
/// their call; new calls go to the engine's queue; the rest are answered here.
async fn serve_incoming(
    mut incoming: TransactionReceiver,
    ctx: Arc<Context>,
    allowed: Vec<IpAddr>,
    calls: mpsc::Sender<IncomingCall>,
) {
    let dialogs = ctx.dialogs.clone();
    while let Some(mut tx) = incoming.recv().await {
        if tx.original.method == Method::Invite && dialogs.match_dialog(&tx).is_none() {
            deliver(tx, &ctx, &allowed, &calls);
            continue;
        }
        if let Some(mut dialog) = dialogs.match_dialog(&tx) {
            tokio::spawn(async move {
                if let Err(e) = dialog.handle(&mut tx).await {
                    debug!(error = %e, "in-dialog request");
                }
            });
            continue;
        }
        let status = match tx.original.method {
            Method::Ack => continue,
            // Keepalive pings from the trunk.
            Method::Options => StatusCode::OK,
            _ => StatusCode::CallTransactionDoesNotExist,
        };
        tokio::spawn(async move {
            if let Err(e) = tx.reply(status).await {
                debug!(error = %e, "replying to a request outside any call");
            }
        });
    }
}

/// A new call: checked, then queued for the engine (503 when the queue is
/// full, 480 when nobody takes calls on this node).
fn deliver(
    tx: rsipstack::transaction::transaction::Transaction,
    ctx: &Arc<Context>,
    allowed: &[IpAddr],
    calls: &mpsc::Sender<IncomingCall>,
) {
    // A refused INVITE was answered with its status already.
    let Ok(call) = inbound::take(tx, ctx, allowed) else {
        return;
    };
    match calls.try_send(call) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(call)) => call.reject(503, "too many calls waiting"),
        Err(mpsc::error::TrySendError::Closed(call)) => {
            call.reject(480, "this node takes no calls")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_run_out_and_come_back() {
        let mut t = Trunk::new("t", "127.0.0.1", 5060);
        t.max_channels = 2;
        let limits = Limits::new(&t);
        let a = limits.channel().expect("first");
        let _b = limits.channel().expect("second");
        assert!(limits.channel().is_none(), "both channels are in use");
        drop(a);
        assert!(limits.channel().is_some(), "a call ended frees its channel");
        t.max_channels = 0;
        let unlimited = Limits::new(&t);
        let held: Vec<_> = (0..100).map(|_| unlimited.channel().unwrap()).collect();
        assert_eq!(held.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_call_rate() {
        let mut t = Trunk::new("t", "127.0.0.1", 5060);
        t.calls_per_second = 4.0;
        let limits = Arc::new(Limits::new(&t));
        let t0 = tokio::time::Instant::now();
        let mut waits = Vec::new();
        for _ in 0..5 {
            limits.pace().await;
            waits.push((tokio::time::Instant::now() - t0).as_millis());
        }
        // 250 ms apart and the margin, on the timer's whole milliseconds.
        assert_eq!(waits, vec![0, 263, 525, 788, 1050]);
        // After a quiet spell the next call goes at once.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let t1 = tokio::time::Instant::now();
        limits.pace().await;
        assert_eq!((tokio::time::Instant::now() - t1).as_millis(), 0);
    }
}
