//! The engine's end of device signalling: an axum WebSocket endpoint that
//! keeps registered devices reachable, rings them, and accepts their calls.
//!
//! Database-free: authentication and the routing of incoming calls are the
//! [`DeviceGateway`] the server implements.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::outbox::Outbox;
use super::protocol::{
    ClientMessage, DeviceToken, ErrorCode, HangupReason, PROTOCOL_VERSION, ServerMessage,
    parse_client,
};
use crate::error::TelephonyError;
use crate::leg::{CallLeg, EndReason, LegConfig, LegControl};

/// What kind of endpoint a registered device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A tablet, SOS button or browser page in an elder's home.
    Elder,
    /// An operator's browser, joining calls as the human on the other end.
    Operator,
    /// An elder's emergency contact (a relative's care app): rung by the
    /// no-answer ladder; does not call in.
    Contact,
}

/// A device that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProfile {
    pub device_id: String,
    pub kind: DeviceKind,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("unknown device")]
    UnknownDevice,
    #[error("wrong token for this device")]
    BadToken,
    #[error("cannot check credentials right now: {0}")]
    Unavailable(String),
}

/// A call a device placed to the engine, already answered.
pub struct IncomingCall {
    pub device: DeviceProfile,
    pub call_id: String,
    /// What the device asked to join, if anything (see `offer.target`).
    pub target: Option<String>,
    pub leg: CallLeg,
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCall")
            .field("device", &self.device)
            .field("call_id", &self.call_id)
            .field("target", &self.target)
            .finish()
    }
}

/// What the server provides: credential checks and where incoming calls go.
#[async_trait::async_trait]
pub trait DeviceGateway: Send + Sync + 'static {
    async fn authenticate(
        &self,
        device_id: &str,
        token: &DeviceToken,
    ) -> Result<DeviceProfile, AuthError>;

    /// A device called in. Take the leg and return quickly (spawn the call's
    /// work); an `Err` refuses the call and its text is sent to the device.
    async fn incoming_call(&self, call: IncomingCall) -> Result<(), String>;
}

/// Timeouts and limits of the signalling endpoint.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub leg: LegConfig,
    /// Close sockets that do not register within this time.
    pub register_timeout: Duration,
    /// Advertised keep-alive; the server also sends WebSocket pings this often.
    pub keepalive: Duration,
    /// Close sockets silent for this long (missed keep-alives).
    pub idle_timeout: Duration,
    /// How long an engine-initiated call rings before giving up.
    pub ring_timeout: Duration,
    pub max_message_bytes: usize,
    /// Messages waiting to be written to one socket. A client that stops
    /// reading lets them pile up; when they reach this, it is disconnected.
    pub outbound_queue: usize,
    /// Malformed messages one socket may send before it is closed.
    pub max_bad_messages: u32,
    /// Sockets from one client address that have not registered yet.
    pub max_pending_per_ip: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            leg: LegConfig::default(),
            register_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            ring_timeout: Duration::from_secs(45),
            max_message_bytes: 64 * 1024,
            outbound_queue: 64,
            max_bad_messages: 20,
            max_pending_per_ip: 20,
        }
    }
}

enum RingReply {
    Answer(String),
    Hangup(HangupReason),
}

enum CallSlot {
    /// Offer sent; the reply goes to the waiting `call_device`.
    Ringing(Option<oneshot::Sender<RingReply>>),
    /// The device's own call, being answered.
    Answering,
    /// Answered but not yet connected, and the device hung up meanwhile.
    Cancelled,
    Active(LegControl),
}

enum Outbound {
    Msg(ServerMessage),
    Close,
}

struct Conn {
    serial: u64,
    device: DeviceProfile,
    out: Outbox<Outbound>,
    calls: Mutex<HashMap<String, CallSlot>>,
}

impl Conn {
    fn send(&self, msg: ServerMessage) {
        self.out.send(Outbound::Msg(msg));
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallSlot>> {
        // A panic while holding this lock would be a bug in this file; keep serving.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Registered devices and the calls on their connections.
pub struct SignallingHub<G> {
    gateway: G,
    config: HubConfig,
    devices: Mutex<HashMap<String, Arc<Conn>>>,
    serial: AtomicU64,
    /// Sockets not registered yet, per client address.
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl<G: DeviceGateway> SignallingHub<G> {
    pub fn new(gateway: G, config: HubConfig) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            config,
            devices: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(1),
            pending: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The WebSocket endpoint, at `/ws`; `.nest()` it where the server wants it.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ws", get(upgrade::<G>))
            .with_state(self.clone())
    }

    fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Conn>>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_registered(&self, device_id: &str) -> bool {
        self.devices().contains_key(device_id)
    }

    pub fn registered_devices(&self) -> Vec<String> {
        self.devices().keys().cloned().collect()
    }

    /// Ring a registered device and return the connected leg once it answers.
    pub async fn call_device(&self, device_id: &str) -> Result<CallLeg, TelephonyError> {
        let conn = self
            .devices()
            .get(device_id)
            .cloned()
            .ok_or(TelephonyError::NotRegistered)?;
        let outgoing = CallLeg::offer(&self.config.leg).await?;
        let call_id = uuid::Uuid::new_v4().to_string();
        let (reply_tx, reply_rx) = oneshot::channel();
        conn.calls()
            .insert(call_id.clone(), CallSlot::Ringing(Some(reply_tx)));
        conn.send(ServerMessage::Offer {
            call_id: call_id.clone(),
            sdp: outgoing.sdp().to_string(),
        });
        info!(device = %device_id, %call_id, "ringing device");

        let reply = tokio::time::timeout(self.config.ring_timeout, reply_rx).await;
        let answer_sdp = match reply {
            Ok(Ok(RingReply::Answer(sdp))) => sdp,
            Ok(Ok(RingReply::Hangup(reason))) => {
                conn.calls().remove(&call_id);
                outgoing.cancel().await;
                return Err(TelephonyError::Declined(reason));
            }
            Ok(Err(_)) => {
                conn.calls().remove(&call_id);
                outgoing.cancel().await;
                return Err(TelephonyError::NotRegistered);
            }
            Err(_) => {
                conn.calls().remove(&call_id);
                conn.send(ServerMessage::Hangup {
                    call_id,
                    reason: HangupReason::NoAnswer,
                });
                outgoing.cancel().await;
                return Err(TelephonyError::NoAnswer);
            }
        };
        let leg = match outgoing.accept_answer(&answer_sdp).await {
            Ok(leg) => leg,
            Err(e) => {
                warn!(device = %device_id, %call_id, error = %e, "device answer rejected");
                conn.calls().remove(&call_id);
                conn.send(ServerMessage::error(
                    Some(&call_id),
                    error_code(&e),
                    e.to_string(),
                ));
                conn.send(ServerMessage::Hangup {
                    call_id,
                    reason: HangupReason::MediaFailed,
                });
                return Err(e);
            }
        };
        activate(&conn, &call_id, leg.control());
        Ok(leg)
    }
}

fn error_code(e: &TelephonyError) -> ErrorCode {
    match e {
        TelephonyError::BadSdp(_) => ErrorCode::BadSdp,
        TelephonyError::NoCommonCodec => ErrorCode::NoCommonCodec,
        _ => ErrorCode::MediaFailed,
    }
}

fn hangup_reason(r: EndReason) -> HangupReason {
    match r {
        EndReason::ConnectionFailed => HangupReason::MediaFailed,
        _ => HangupReason::Normal,
    }
}

/// Track an answered call on its connection and tell the device when it ends
/// on our side.
fn activate(conn: &Arc<Conn>, call_id: &str, control: LegControl) {
    let cancelled = {
        let mut calls = conn.calls();
        let cancelled = matches!(calls.get(call_id), Some(CallSlot::Cancelled));
        calls.insert(call_id.to_string(), CallSlot::Active(control.clone()));
        cancelled
    };
    if cancelled {
        control.remote_hung_up();
    }
    let conn = conn.clone();
    let call_id = call_id.to_string();
    tokio::spawn(async move {
        let reason = control.ended().await;
        conn.calls().remove(&call_id);
        info!(device = %conn.device.device_id, %call_id, ?reason, "call ended");
        if reason != EndReason::RemoteHangup {
            conn.send(ServerMessage::Hangup {
                call_id,
                reason: hangup_reason(reason),
            });
        }
    });
}

/// The client's address as the server in front of the hub determined it
/// (from a trusted proxy's header, say), set as a request extension. Without
/// it the TCP peer's address is used, when the server provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        Ok(Peer(ext.get::<ClientAddr>().map(|c| c.0).or_else(|| {
            ext.get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip())
        })))
    }
}

/// A place among the unregistered sockets of one address, given back when
/// the socket registers or closes.
struct Pending {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Pending {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Pending {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn upgrade<G: DeviceGateway>(
    State(hub): State<Arc<SignallingHub<G>>>,
    Peer(ip): Peer,
    ws: WebSocketUpgrade,
) -> Response {
    let pending = match ip {
        Some(ip) => match Pending::take(&hub.pending, ip, hub.config.max_pending_per_ip) {
            Some(p) => Some(p),
            None => {
                warn!(%ip, "too many unregistered signalling sockets from one address");
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from your address have not registered yet",
                )
                    .into_response();
            }
        },
        None => None,
    };
    ws.max_message_size(hub.config.max_message_bytes)
        .on_upgrade(move |socket| serve_socket(hub, socket, pending))
}

fn to_text(msg: &ServerMessage) -> Message {
    // Serialising our own enum cannot fail; fall back to a fixed error anyway.
    let text = serde_json::to_string(msg).unwrap_or_else(|_| {
        r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_string()
    });
    Message::Text(text.into())
}

/// How long a closing socket may take to flush what is queued for it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Write queued messages and keep-alive pings until the queue ends, a
/// `Close` is written, or the client is dropped for not reading.
async fn write_socket(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    out: Outbox<Outbound>,
    keepalive: Duration,
) {
    let mut ping = tokio::time::interval(keepalive);
    ping.tick().await;
    let dropped = out.dropped();
    tokio::pin!(dropped);
    drop(out);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut dropped => return,
            next = rx.recv() => match next {
                Some(Outbound::Msg(m)) => to_text(&m),
                Some(Outbound::Close) | None => Message::Close(None),
            },
            _ = ping.tick() => Message::Ping(Vec::new().into()),
        };
        let last = matches!(frame, Message::Close(_));
        // A client that stops reading blocks this write: the drop signal
        // still gets through.
        tokio::select! {
            biased;
            _ = &mut dropped => return,
            sent = sink.send(frame) => if sent.is_err() || last { return },
        }
    }
}

/// Let the writer flush and close, for a moment at most.
async fn finish(mut writer: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Counts malformed messages; past the limit the socket is closed.
struct BadMessages {
    seen: u32,
    max: u32,
}

impl BadMessages {
    /// Answer a malformed message; `false` when the socket is to close.
    fn answer(&mut self, out: &Outbox<Outbound>, code: ErrorCode, message: String) -> bool {
        self.seen += 1;
        out.send(Outbound::Msg(ServerMessage::error(None, code, message)));
        if self.seen < self.max {
            return true;
        }
        out.send(Outbound::Msg(ServerMessage::error(
            None,
            ErrorCode::BadMessage,
            "too many malformed messages; closing the connection",
        )));
        out.send(Outbound::Close);
        false
    }
}

async fn serve_socket<G: DeviceGateway>(
    hub: Arc<SignallingHub<G>>,
    socket: WebSocket,
    pending: Option<Pending>,
) {
    let (sink, mut stream) = socket.split();
    let (out, rx) = Outbox::new(hub.config.outbound_queue);
    let writer = tokio::spawn(write_socket(sink, rx, out.clone(), hub.config.keepalive));
    let dropped = out.dropped();
    tokio::pin!(dropped);
    let mut bad = BadMessages {
        seen: 0,
        max: hub.config.max_bad_messages,
    };
    let send = |m: ServerMessage| out.send(Outbound::Msg(m));

    // Registration phase.
    let deadline = tokio::time::sleep(hub.config.register_timeout);
    tokio::pin!(deadline);
    let device = loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut dropped => {
                writer.abort();
                return;
            }
            _ = &mut deadline => {
                send(ServerMessage::error(None, ErrorCode::RegisterTimeout, "no register message in time"));
                out.send(Outbound::Close);
                finish(writer).await;
                return;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                out.send(Outbound::Close);
                finish(writer).await;
                return;
            }
            Some(Ok(_)) => continue,
        };
        match parse_client(text.as_str()) {
            Err((code, message)) => {
                debug!(%message, "bad message before registration");
                if !bad.answer(&out, code, message) {
                    finish(writer).await;
                    return;
                }
            }
            Ok(ClientMessage::Register {
                device_id,
                token,
                client,
            }) => match hub.gateway.authenticate(&device_id, &token).await {
                Ok(profile) => {
                    info!(device = %device_id, client = client.as_deref().unwrap_or("-"), "device registered");
                    break profile;
                }
                Err(e) => {
                    let code = match e {
                        AuthError::UnknownDevice => ErrorCode::UnknownDevice,
                        AuthError::BadToken => ErrorCode::BadToken,
                        AuthError::Unavailable(_) => ErrorCode::Internal,
                    };
                    info!(device = %device_id, error = %e, "registration refused");
                    send(ServerMessage::error(None, code, e.to_string()));
                    out.send(Outbound::Close);
                    finish(writer).await;
                    return;
                }
            },
            Ok(ClientMessage::Ping) => send(ServerMessage::Pong),
            Ok(_) => send(ServerMessage::error(
                None,
                ErrorCode::NotRegistered,
                "send register first",
            )),
        }
    };
    drop(pending);

    let conn = Arc::new(Conn {
        serial: hub.serial.fetch_add(1, Ordering::Relaxed),
        device: device.clone(),
        out: out.clone(),
        calls: Mutex::new(HashMap::new()),
    });
    if let Some(old) = hub.devices().insert(device.device_id.clone(), conn.clone()) {
        info!(device = %device.device_id, "device re-registered; closing its previous connection");
        old.send(ServerMessage::error(
            None,
            ErrorCode::Replaced,
            "this device registered again on another connection",
        ));
        old.out.send(Outbound::Close);
    }
    conn.send(ServerMessage::Registered {
        device_id: device.device_id.clone(),
        protocol: PROTOCOL_VERSION,
        keepalive_secs: hub.config.keepalive.as_secs(),
    });

    let mut was_dropped = false;
    loop {
        let next = tokio::select! {
            m = tokio::time::timeout(hub.config.idle_timeout, stream.next()) => m,
            _ = &mut dropped => {
                warn!(device = %device.device_id, "device does not read its messages; dropping it");
                was_dropped = true;
                break;
            }
        };
        let msg = match next {
            Err(_) => {
                info!(device = %device.device_id, "signalling idle timeout");
                break;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue, // pings, pongs, binary: keep-alive only
        };
        match parse_client(text_of(&msg)) {
            Err((code, message)) => {
                warn!(device = %device.device_id, %message, "bad signalling message");
                if !bad.answer(&conn.out, code, message) {
                    break;
                }
            }
            Ok(m) => handle(&hub, &conn, m),
        }
    }

    // Connection gone: forget it (unless already replaced) and end its calls.
    {
        let mut devices = hub.devices();
        if devices
            .get(&device.device_id)
            .is_some_and(|c| c.serial == conn.serial)
        {
            devices.remove(&device.device_id);
        }
    }
    let calls: Vec<CallSlot> = conn.calls().drain().map(|(_, s)| s).collect();
    for slot in calls {
        if let CallSlot::Active(control) = slot {
            control.remote_hung_up();
        }
    }
    info!(device = %device.device_id, "device disconnected");
    if was_dropped {
        writer.abort();
    } else {
        out.send(Outbound::Close);
        finish(writer).await;
    }
}

fn text_of(t: &axum::extract::ws::Utf8Bytes) -> &str {
    t.as_str()
}

fn handle<G: DeviceGateway>(hub: &Arc<SignallingHub<G>>, conn: &Arc<Conn>, msg: ClientMessage) {
    match msg {
        ClientMessage::Ping => conn.send(ServerMessage::Pong),
        ClientMessage::Register { .. } => conn.send(ServerMessage::error(
            None,
            ErrorCode::BadMessage,
            "already registered on this connection",
        )),
        ClientMessage::Ringing { call_id } => {
            if !conn.calls().contains_key(&call_id) {
                conn.send(unknown_call(&call_id));
            }
        }
        ClientMessage::Answer { call_id, sdp } => {
            let reply = match conn.calls().get_mut(&call_id) {
                Some(CallSlot::Ringing(reply)) => reply.take(),
                _ => None,
            };
            match reply {
                Some(tx) => {
                    let _ = tx.send(RingReply::Answer(sdp));
                }
                None => conn.send(unknown_call(&call_id)),
            }
        }
        ClientMessage::Hangup { call_id, reason } => {
            let mut calls = conn.calls();
            match calls.get_mut(&call_id) {
                Some(CallSlot::Ringing(reply)) => match reply.take() {
                    Some(tx) => {
                        let _ = tx.send(RingReply::Hangup(reason));
                    }
                    None => {
                        calls.insert(call_id, CallSlot::Cancelled);
                    }
                },
                Some(CallSlot::Answering) => {
                    calls.insert(call_id, CallSlot::Cancelled);
                }
                Some(CallSlot::Active(control)) => control.remote_hung_up(),
                Some(CallSlot::Cancelled) => {}
                None => {
                    drop(calls);
                    conn.send(unknown_call(&call_id));
                }
            }
        }
        ClientMessage::Candidate {
            call_id,
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => {
            let control = match conn.calls().get(&call_id) {
                Some(CallSlot::Active(c)) => Some(c.clone()),
                _ => None,
            };
            let Some(control) = control else {
                conn.send(unknown_call(&call_id));
                return;
            };
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Err(e) = control
                    .add_remote_candidate(candidate, sdp_mid, sdp_mline_index)
                    .await
                {
                    conn.send(ServerMessage::error(
                        Some(&call_id),
                        ErrorCode::BadSdp,
                        e.to_string(),
                    ));
                }
            });
        }
        ClientMessage::Offer {
            call_id,
            sdp,
            target,
        } => {
            let refusal = {
                let mut calls = conn.calls();
                if calls.contains_key(&call_id) {
                    Some((
                        ErrorCode::BadMessage,
                        "call_id already in use on this connection".to_string(),
                    ))
                } else if let Some(other) = calls.keys().next() {
                    // One call per device: a stuck button or a buggy app
                    // must not fill the node with calls from one home.
                    Some((
                        ErrorCode::Rejected,
                        format!(
                            "this device is already in a call ({other}); hang it up before calling again"
                        ),
                    ))
                } else {
                    calls.insert(call_id.clone(), CallSlot::Answering);
                    None
                }
            };
            if let Some((code, message)) = refusal {
                conn.send(ServerMessage::error(Some(&call_id), code, message));
                return;
            }
            let hub = hub.clone();
            let conn = conn.clone();
            tokio::spawn(async move { accept_call(hub, conn, call_id, sdp, target).await });
        }
    }
}

fn unknown_call(call_id: &str) -> ServerMessage {
    ServerMessage::error(
        Some(call_id),
        ErrorCode::UnknownCall,
        "no such call on this connection",
    )
}

async fn accept_call<G: DeviceGateway>(
    hub: Arc<SignallingHub<G>>,
    conn: Arc<Conn>,
    call_id: String,
    sdp: String,
    target: Option<String>,
) {
    let (leg, answer) = match CallLeg::answer(&hub.config.leg, &sdp).await {
        Ok(x) => x,
        Err(e) => {
            warn!(device = %conn.device.device_id, %call_id, error = %e, "cannot answer device call");
            conn.calls().remove(&call_id);
            conn.send(ServerMessage::error(
                Some(&call_id),
                error_code(&e),
                e.to_string(),
            ));
            return;
        }
    };
    let control = leg.control();
    activate(&conn, &call_id, control.clone());
    conn.send(ServerMessage::Answer {
        call_id: call_id.clone(),
        sdp: answer,
    });
    info!(device = %conn.device.device_id, %call_id, "device called in");
    let call = IncomingCall {
        device: conn.device.clone(),
        call_id: call_id.clone(),
        target,
        leg,
    };
    if let Err(reason) = hub.gateway.incoming_call(call).await {
        conn.send(ServerMessage::error(
            Some(&call_id),
            ErrorCode::Rejected,
            reason,
        ));
        control.hang_up();
    }
}
