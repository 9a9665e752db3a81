//! Several trunks in priority order, with failover and OPTIONS health checks.
//!
//! A [`TrunkGroup`] holds one [`SipGateway`] per trunk, the first the most
//! preferred. [`TrunkGroup::call`] rings through the first trunk that is up;
//! when that trunk fails the call itself (a 5xx, a 403, no response at all:
//! [`SetupFailure::TrunkFailure`]) the same call is placed through the next
//! one, and only when every trunk has failed does the attempt fail as a
//! trunk failure. What the far end decided (busy, no answer, declined, a
//! wrong number) is returned at once: another trunk would reach the same
//! phone. Trunks that are down are tried last, in their order, rather than
//! not at all, so a trunk that never answers OPTIONS still carries calls
//! when nothing better is left.
//!
//! Each trunk is pinged with an out-of-dialog OPTIONS every
//! [`HealthPolicy::ping_interval`]; the rules that turn pings and calls into
//! up and down are in [`crate::health`]. Calls into the service arrive on
//! any trunk and are merged into one queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rsipstack::sip::{Method, Param, Request, Uri};
use rsipstack::transaction::{make_call_id, make_tag};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use voicecare_core::session::SetupFailure;
use voicecare_telephony::{CallLeg, LegConfig};

use crate::dialer::{Attempt, CHANNEL_WAIT};
use crate::failure::CallFailure;
use crate::gateway::{GatewayError, SipGateway};
use crate::health::{Health, HealthPolicy, Transition};
use crate::inbound::IncomingCall;
use crate::register::{RegistrationState, transact, trunk_uri};
use crate::trunk::Trunk;

/// Calls from all trunks not yet taken by the engine.
const INCOMING_QUEUE: usize = 32;

/// How often a trunk marked down without pings is looked at again.
const TICK: Duration = Duration::from_secs(1);

/// Where one trunk of a group stands, for metrics and the supervisor view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkStatus {
    /// The trunk's name (`Trunk::name`).
    pub name: String,
    /// 1 for the most preferred trunk, then 2, 3 …
    pub priority: usize,
    /// Whether the trunk is up: calls go to trunks that are up first.
    pub up: bool,
    /// Why the trunk is down.
    pub reason: Option<String>,
    /// When the trunk last went up or down (the group's start at first).
    pub since: SystemTime,
    /// Calls this trunk failed that were then placed through the next one.
    pub failovers: u64,
    /// Where registration with this trunk stands.
    pub registration: RegistrationState,
}

/// Several trunks, the first preferred, behind the API of one gateway.
/// Dropping it stops the health checks and the trunks' endpoints.
pub struct TrunkGroup {
    shared: Arc<Shared>,
    incoming_taken: Mutex<bool>,
}

struct Shared {
    members: Vec<Member>,
    status: watch::Sender<Vec<TrunkStatus>>,
    token: CancellationToken,
}

struct Member {
    gateway: SipGateway,
    state: Mutex<MemberState>,
    failovers: AtomicU64,
}

struct MemberState {
    health: Health,
    since: SystemTime,
}

impl std::fmt::Debug for TrunkGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkGroup")
            .field(
                "trunks",
                &self
                    .shared
                    .members
                    .iter()
                    .map(|m| m.gateway.trunk().name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TrunkGroup {
    /// Start a gateway for each trunk, most preferred first, and watch them.
    pub async fn start(
        trunks: Vec<Trunk>,
        leg: LegConfig,
        policy: HealthPolicy,
    ) -> Result<Self, GatewayError> {
        let mut gateways = Vec::with_capacity(trunks.len());
        for trunk in trunks {
            gateways.push(SipGateway::start(trunk, leg.clone()).await?);
        }
        Self::new(gateways, policy)
    }

    /// A group of gateways already started, most preferred first. Needs a
    /// tokio runtime: the health checks run as tasks.
    pub fn new(gateways: Vec<SipGateway>, policy: HealthPolicy) -> Result<Self, GatewayError> {
        if gateways.is_empty() {
            return Err(GatewayError::NoTrunk);
        }
        let started = SystemTime::now();
        let members = gateways
            .into_iter()
            .map(|gateway| Member {
                gateway,
                state: Mutex::new(MemberState {
                    health: Health::new(policy.clone()),
                    since: started,
                }),
                failovers: AtomicU64::new(0),
            })
            .collect();
        let (status, _) = watch::channel(Vec::new());
        let shared = Arc::new(Shared {
            members,
            status,
            token: CancellationToken::new(),
        });
        shared.publish();
        for i in 0..shared.members.len() {
            tokio::spawn(watch_trunk(shared.clone(), i, policy.clone()));
            // Registration changes show in the status too.
            let mut registration = shared.members[i].gateway.registration();
            let (sh, token) = (Arc::downgrade(&shared), shared.token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        changed = registration.changed() => if changed.is_err() { return },
                    }
                    match sh.upgrade() {
                        Some(sh) => sh.publish(),
                        None => return,
                    }
                }
            });
        }
        Ok(Self {
            shared,
            incoming_taken: Mutex::new(false),
        })
    }

    /// Ring `number` through the first trunk that is up, and through the
    /// next ones while trunks fail the call. Dropping the future while it
    /// rings cancels the call.
    pub async fn call(&self, number: &str) -> Result<CallLeg, CallFailure> {
        self.call_with_early_media(number).await.result
    }

    /// [`TrunkGroup::call`], keeping the early media of the last trunk
    /// tried: the one whose answer or failure is returned.
    pub async fn call_with_early_media(&self, number: &str) -> Attempt {
        let order = self.shared.order();
        // Every trunk's channels are tried at once first: a full trunk is
        // passed over for one with room. Only when all are full does the
        // call queue, on the trunk it would have used first.
        let first = self.pass(number, &order, std::time::Duration::ZERO).await;
        match first.result {
            Err(CallFailure::NoChannel(_)) => self.pass(number, &order[..1], CHANNEL_WAIT).await,
            _ => first,
        }
    }

    /// One try down `order`, each trunk waiting up to `wait` for a channel.
    async fn pass(&self, number: &str, order: &[usize], wait: std::time::Duration) -> Attempt {
        let sh = &self.shared;
        let mut last: Option<Attempt> = None;
        let mut all_full = true;
        for (pos, &i) in order.iter().enumerate() {
            let member = &sh.members[i];
            let attempt = member.gateway.attempt(number, wait).await;
            let failure = match &attempt.result {
                Ok(_) => {
                    sh.got_through(i);
                    return attempt;
                }
                Err(f) => f,
            };
            if failure.setup_failure() != SetupFailure::TrunkFailure {
                // The far end's answer came through this trunk.
                if matches!(
                    failure,
                    CallFailure::Refused { .. } | CallFailure::RingTimeout
                ) {
                    sh.got_through(i);
                }
                return attempt;
            }
            if faults_the_trunk(failure) {
                sh.call_failed(i, failure);
            }
            all_full &= matches!(failure, CallFailure::NoChannel(_));
            if let Some(&next) = order.get(pos + 1) {
                member.failovers.fetch_add(1, Ordering::Relaxed);
                info!(
                    trunk = %member.gateway.trunk().name,
                    next = %sh.members[next].gateway.trunk().name,
                    sip_status = failure.status_code(),
                    failure = kind(failure),
                    "the trunk failed the call: trying the next trunk"
                );
                sh.publish();
            }
            last = Some(attempt);
        }
        let last = last.expect("a group has at least one trunk");
        if all_full {
            // Report the first trunk's refusal: it is the one to wait on.
            return Attempt {
                result: Err(CallFailure::NoChannel(
                    sh.members[order[0]].gateway.limits.max_channels(),
                )),
                early_media: last.early_media,
            };
        }
        last
    }

    /// Calls any trunk delivers to the service, in one queue, once:
    /// whoever takes this answers them.
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingCall>> {
        let mut taken = self.incoming_taken.lock().ok()?;
        if *taken {
            return None;
        }
        *taken = true;
        let members = &self.shared.members;
        if members.len() == 1 {
            return members[0].gateway.take_incoming();
        }
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        for member in members {
            let Some(mut calls) = member.gateway.take_incoming() else {
                continue;
            };
            let (tx, token) = (tx.clone(), self.shared.token.clone());
            tokio::spawn(async move {
                loop {
                    let call = tokio::select! {
                        _ = token.cancelled() => return,
                        call = calls.recv() => call,
                    };
                    let Some(call) = call else { return };
                    // A call nobody takes any more is refused as it drops.
                    if tx.send(call).await.is_err() {
                        return;
                    }
                }
            });
        }
        Some(rx)
    }

    /// Every trunk's state now, most preferred first.
    pub fn trunks(&self) -> Vec<TrunkStatus> {
        self.shared.status.borrow().clone()
    }

    /// Every trunk's state and its changes: a trunk going up or down, a
    /// failover, a change of registration.
    pub fn status(&self) -> watch::Receiver<Vec<TrunkStatus>> {
        self.shared.status.subscribe()
    }

    /// The gateways, most preferred first.
    pub fn gateways(&self) -> impl Iterator<Item = &SipGateway> {
        self.shared.members.iter().map(|m| &m.gateway)
    }

    /// Stop the health checks and every trunk's endpoint.
    pub fn shutdown(&self) {
        self.shared.token.cancel();
        for m in &self.shared.members {
            m.gateway.shutdown();
        }
    }
}

impl Drop for TrunkGroup {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

impl Shared {
    /// The trunks to try, in order: those up by priority, then those down.
    fn order(&self) -> Vec<usize> {
        let up: Vec<bool> = self
            .members
            .iter()
            .map(|m| m.state.lock().map(|s| s.health.is_up()).unwrap_or(true))
            .collect();
        let (mut first, then): (Vec<usize>, Vec<usize>) =
            (0..self.members.len()).partition(|&i| up[i]);
        first.extend(then);
        first
    }

    fn got_through(&self, i: usize) {
        self.apply(i, |h| h.call_got_through());
    }

    fn call_failed(&self, i: usize, failure: &CallFailure) {
        let why = match failure.status_code() {
            Some(code) => format!("{code}"),
            None => kind(failure).to_string(),
        };
        let now = tokio::time::Instant::now().into_std();
        self.apply(i, |h| h.call_failed(now, &why));
    }

    /// Feed one trunk's health and report what changed.
    fn apply(&self, i: usize, f: impl FnOnce(&mut Health) -> Option<Transition>) {
        let member = &self.members[i];
        let change = {
            let Ok(mut state) = member.state.lock() else {
                return;
            };
            let change = f(&mut state.health);
            if change.is_some() {
                state.since = SystemTime::now();
            }
            change
        };
        let name = &member.gateway.trunk().name;
        match change {
            None => return,
            Some(Transition::WentDown(reason)) => {
                warn!(trunk = %name, %reason, "SIP trunk down: calls go to the other trunks first");
            }
            Some(Transition::CameUp) => info!(trunk = %name, "SIP trunk up"),
        }
        self.publish();
    }

    fn publish(&self) {
        let status = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (up, reason, since) = match m.state.lock() {
                    Ok(s) => (
                        s.health.is_up(),
                        s.health.reason().map(str::to_string),
                        s.since,
                    ),
                    Err(_) => (false, Some("internal error".into()), SystemTime::now()),
                };
                TrunkStatus {
                    name: m.gateway.trunk().name.clone(),
                    priority: i + 1,
                    up,
                    reason,
                    since,
                    failovers: m.failovers.load(Ordering::Relaxed),
                    registration: m.gateway.registration().borrow().clone(),
                }
            })
            .collect();
        self.status.send_replace(status);
    }
}

/// Whether a failure says the trunk itself is in trouble, rather than that
/// it is full (all channels busy) or that this node failed.
fn faults_the_trunk(failure: &CallFailure) -> bool {
    matches!(
        failure,
        CallFailure::Refused { .. } | CallFailure::NoResponse
    )
}

/// A failure's kind for the log, without the stack's message (which may
/// quote the number).
fn kind(failure: &CallFailure) -> &'static str {
    match failure {
        CallFailure::Refused { .. } => "refused",
        CallFailure::RingTimeout => "ring_timeout",
        CallFailure::NoResponse => "no_response",
        CallFailure::BadNumber(_) => "bad_number",
        CallFailure::BadAnswer(_) => "bad_answer",
        CallFailure::NoChannel(_) => "no_channel",
        CallFailure::NoRtpPort(_) => "no_rtp_port",
        CallFailure::Signalling(_) => "signalling",
    }
}

/// Ping one trunk every interval (or, without pings, let time bring back
/// a trunk that failed a call) until the group stops.
async fn watch_trunk(shared: Arc<Shared>, i: usize, policy: HealthPolicy) {
    let token = shared.token.clone();
    loop {
        let wait = policy.ping_interval.unwrap_or(TICK);
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if policy.ping_interval.is_some() {
            let result = tokio::select! {
                _ = token.cancelled() => return,
                r = ping(&shared.members[i].gateway, policy.ping_timeout) => r,
            };
            let now = tokio::time::Instant::now().into_std();
            shared.apply(i, |h| h.ping(now, result));
        } else {
            let now = tokio::time::Instant::now().into_std();
            shared.apply(i, |h| h.tick(now));
        }
    }
}

/// One OPTIONS to the trunk: `Ok` when it answered with anything below
/// 500 (a 404 or 405 still shows a live trunk), else why not.
async fn ping(gateway: &SipGateway, timeout: Duration) -> Result<(), String> {
    let request = options(gateway)?;
    let sent = transact(&gateway.endpoint, request, gateway.trunk().next_hop());
    match tokio::time::timeout(timeout, sent).await {
        Err(_) | Ok(Ok(None)) => Err("no answer".into()),
        Ok(Err(e)) => Err(format!("signalling failed: {e}")),
        Ok(Ok(Some(resp))) if resp.status_code.code() >= 500 => Err(format!(
            "{} {}",
            resp.status_code.code(),
            resp.wire_reason
                .clone()
                .unwrap_or_else(|| resp.status_code.text().to_string())
        )),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

/// `OPTIONS sip:host:port` from our number, a fresh Call-ID each time.
fn options(gateway: &SipGateway) -> Result<Request, String> {
    let trunk = gateway.trunk();
    let target = trunk_uri(trunk);
    let host = crate::dialer::host_port(&trunk.host, trunk.port);
    let from_uri =
        Uri::try_from(format!("sip:{}@{host}", trunk.from_number)).map_err(|e| e.to_string())?;
    let from = rsipstack::sip::typed::From {
        display_name: None,
        uri: from_uri,
        params: vec![Param::Tag(make_tag())],
    };
    let to = rsipstack::sip::typed::To {
        display_name: None,
        uri: target.clone(),
        params: vec![],
    };
    let via = gateway
        .endpoint
        .get_via(None, None)
        .map_err(|e| e.to_string())?;
    let mut request = gateway.endpoint.make_request(
        Method::Options,
        target,
        via,
        from,
        to,
        1,
        Some(make_call_id(None, Default::default())),
    );
    if let Some(route) = trunk.preloaded_route() {
        request.headers.push(route);
    }
    Ok(request)
}
