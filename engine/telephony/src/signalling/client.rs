//! The device's end of signalling: register, get rung, answer or decline,
//! call in. Used by the simulated phone, the sound-card phone and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use super::protocol::{ClientMessage, DeviceToken, ErrorCode, HangupReason, ServerMessage};
use crate::error::TelephonyError;
use crate::leg::{CallLeg, EndReason, LegConfig, LegControl};

/// Where and as whom a device connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/path/ws`
    pub server_url: String,
    pub device_id: String,
    pub token: DeviceToken,
    pub leg: LegConfig,
    /// Software name sent at registration, for the server's logs.
    pub client_name: String,
    pub connect_timeout: Duration,
    /// How long to wait for the engine to answer a call-in.
    pub answer_timeout: Duration,
}

impl ClientConfig {
    pub fn new(
        server_url: impl Into<String>,
        device_id: impl Into<String>,
        token: DeviceToken,
    ) -> Self {
        Self {
            server_url: server_url.into(),
            device_id: device_id.into(),
            token,
            leg: LegConfig::default(),
            client_name: concat!("voicecare-telephony/", env!("CARGO_PKG_VERSION")).to_string(),
            connect_timeout: Duration::from_secs(10),
            answer_timeout: Duration::from_secs(15),
        }
    }
}

enum Slot {
    /// We offered; waiting for the engine's answer (or refusal).
    Outgoing(Option<oneshot::Sender<Result<String, TelephonyError>>>),
    /// The engine offered; the user has not answered yet.
    Incoming(Option<oneshot::Sender<HangupReason>>),
    Active(LegControl),
}

struct Inner {
    tx: mpsc::UnboundedSender<Message>,
    slots: Mutex<HashMap<String, Slot>>,
    leg: LegConfig,
}

impl Inner {
    fn send(&self, msg: &ClientMessage) {
        if let Ok(text) = serde_json::to_string(msg) {
            let _ = self.tx.send(Message::Text(text.into()));
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watch an answered call; tell the engine when it ends on our side.
    fn activate(self: &Arc<Self>, call_id: &str, control: LegControl) {
        self.slots()
            .insert(call_id.to_string(), Slot::Active(control.clone()));
        let inner = self.clone();
        let call_id = call_id.to_string();
        tokio::spawn(async move {
            let reason = control.ended().await;
            inner.slots().remove(&call_id);
            if reason != EndReason::RemoteHangup {
                let reason = match reason {
                    EndReason::ConnectionFailed => HangupReason::MediaFailed,
                    _ => HangupReason::Normal,
                };
                inner.send(&ClientMessage::Hangup { call_id, reason });
            }
        });
    }
}

/// A registered device connection.
pub struct DeviceClient {
    inner: Arc<Inner>,
    device_id: String,
}

/// An incoming call from the engine, not yet answered.
pub struct RingingCall {
    pub call_id: String,
    offer_sdp: String,
    cancelled: oneshot::Receiver<HangupReason>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RingingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingingCall")
            .field("call_id", &self.call_id)
            .finish()
    }
}

impl RingingCall {
    /// Tell the engine the device is alerting its user.
    pub fn ringing(&self) {
        self.inner.send(&ClientMessage::Ringing {
            call_id: self.call_id.clone(),
        });
    }

    /// Resolves if the engine gives up ringing (no answer, or it hung up).
    pub async fn cancelled(&mut self) -> HangupReason {
        (&mut self.cancelled).await.unwrap_or(HangupReason::Normal)
    }

    /// Answer; returns once the answer is sent (media connects shortly after).
    pub async fn answer(self) -> Result<CallLeg, TelephonyError> {
        if !matches!(
            self.inner.slots().get(&self.call_id),
            Some(Slot::Incoming(_))
        ) {
            return Err(TelephonyError::CallEnded);
        }
        match CallLeg::answer(&self.inner.leg, &self.offer_sdp).await {
            Ok((leg, sdp)) => {
                self.inner.activate(&self.call_id, leg.control());
                self.inner.send(&ClientMessage::Answer {
                    call_id: self.call_id.clone(),
                    sdp,
                });
                Ok(leg)
            }
            Err(e) => {
                self.inner.slots().remove(&self.call_id);
                self.inner.send(&ClientMessage::Hangup {
                    call_id: self.call_id.clone(),
                    reason: HangupReason::MediaFailed,
                });
                Err(e)
            }
        }
    }

    pub fn decline(self, reason: HangupReason) {
        self.inner.slots().remove(&self.call_id);
        self.inner.send(&ClientMessage::Hangup {
            call_id: self.call_id.clone(),
            reason,
        });
    }
}

impl DeviceClient {
    /// Connect and register. Returns the client and the stream of incoming
    /// calls; registration errors (unknown device, wrong token) come back as
    /// `TelephonyError::Signalling` with the server's message.
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(DeviceClient, mpsc::Receiver<RingingCall>), TelephonyError> {
        let (ws, _) = tokio::time::timeout(
            config.connect_timeout,
            tokio_tungstenite::connect_async(config.server_url.as_str()),
        )
        .await
        .map_err(|_| TelephonyError::Timeout("connecting to the signalling server"))?
        .map_err(|e| TelephonyError::Signalling(format!("cannot connect: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let inner = Arc::new(Inner {
            tx,
            slots: Mutex::new(HashMap::new()),
            leg: config.leg.clone(),
        });
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        inner.send(&ClientMessage::Register {
            device_id: config.device_id.clone(),
            token: config.token.clone(),
            client: Some(config.client_name.clone()),
        });

        // Wait for `registered` (or the refusal).
        let keepalive = tokio::time::timeout(config.connect_timeout, async {
            while let Some(msg) = stream.next().await {
                let Ok(Message::Text(text)) = msg else {
                    if matches!(msg, Err(_) | Ok(Message::Close(_))) {
                        break;
                    }
                    continue;
                };
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(ServerMessage::Registered { keepalive_secs, .. }) => {
                        return Ok(keepalive_secs);
                    }
                    Ok(ServerMessage::Error { code, message, .. }) => {
                        return Err(TelephonyError::Signalling(format!(
                            "registration refused ({}): {message}",
                            code_name(code)
                        )));
                    }
                    _ => continue,
                }
            }
            Err(TelephonyError::Signalling(
                "server closed the connection during registration".into(),
            ))
        })
        .await
        .map_err(|_| TelephonyError::Timeout("registering"))??;

        let (ring_tx, ring_rx) = mpsc::channel(8);
        let reader_inner = inner.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs(keepalive.clamp(1, 300));
            let mut ping = tokio::time::interval(period);
            ping.tick().await;
            loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    _ = ping.tick() => {
                        reader_inner.send(&ClientMessage::Ping);
                        continue;
                    }
                };
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(m) => dispatch(&reader_inner, &ring_tx, m).await,
                    Err(e) => warn!(error = %e, "unreadable message from server"),
                }
            }
            // The server is gone: so are our calls.
            let slots: Vec<Slot> = reader_inner.slots().drain().map(|(_, s)| s).collect();
            for s in slots {
                match s {
                    Slot::Active(c) => c.remote_hung_up(),
                    Slot::Outgoing(Some(tx)) => {
                        let _ = tx.send(Err(TelephonyError::Signalling(
                            "signalling connection lost".into(),
                        )));
                    }
                    _ => {}
                }
            }
        });
        Ok((
            DeviceClient {
                inner,
                device_id: config.device_id,
            },
            ring_rx,
        ))
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Call the engine (an elder pressing the help button). `target` is passed
    /// to the engine's router, e.g. the call an operator wants to join.
    pub async fn call(&self, target: Option<String>) -> Result<CallLeg, TelephonyError> {
        let outgoing = CallLeg::offer(&self.inner.leg).await?;
        let call_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.inner
            .slots()
            .insert(call_id.clone(), Slot::Outgoing(Some(tx)));
        self.inner.send(&ClientMessage::Offer {
            call_id: call_id.clone(),
            sdp: outgoing.sdp().to_string(),
            target,
        });
        let answer = match tokio::time::timeout(self.inner.leg.connect_timeout, rx).await {
            Ok(Ok(Ok(sdp))) => sdp,
            Ok(Ok(Err(e))) => {
                self.inner.slots().remove(&call_id);
                outgoing.cancel().await;
                return Err(e);
            }
            Ok(Err(_)) | Err(_) => {
                self.inner.slots().remove(&call_id);
                self.inner.send(&ClientMessage::Hangup {
                    call_id,
                    reason: HangupReason::NoAnswer,
                });
                outgoing.cancel().await;
                return Err(TelephonyError::NoAnswer);
            }
        };
        let leg = outgoing.accept_answer(&answer).await?;
        self.inner.activate(&call_id, leg.control());
        Ok(leg)
    }

    /// Close the signalling connection; active calls end.
    pub fn close(&self) {
        let _ = self.inner.tx.send(Message::Close(None));
    }
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn dispatch(inner: &Arc<Inner>, rings: &mpsc::Sender<RingingCall>, msg: ServerMessage) {
    match msg {
        ServerMessage::Offer { call_id, sdp } => {
            let (cancel_tx, cancel_rx) = oneshot::channel();
            inner
                .slots()
                .insert(call_id.clone(), Slot::Incoming(Some(cancel_tx)));
            let ring = RingingCall {
                call_id: call_id.clone(),
                offer_sdp: sdp,
                cancelled: cancel_rx,
                inner: inner.clone(),
            };
            if rings.try_send(ring).is_err() {
                inner.slots().remove(&call_id);
                inner.send(&ClientMessage::Hangup {
                    call_id,
                    reason: HangupReason::Busy,
                });
            }
        }
        ServerMessage::Answer { call_id, sdp } => {
            if let Some(Slot::Outgoing(tx)) = inner.slots().get_mut(&call_id)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(sdp));
            }
        }
        ServerMessage::Hangup { call_id, reason } => {
            let slot = inner.slots().remove(&call_id);
            match slot {
                Some(Slot::Active(c)) => c.remote_hung_up(),
                Some(Slot::Incoming(Some(tx))) => {
                    let _ = tx.send(reason);
                }
                Some(Slot::Outgoing(Some(tx))) => {
                    let _ = tx.send(Err(TelephonyError::Declined(reason)));
                }
                _ => {}
            }
        }
        ServerMessage::Error {
            call_id,
            code,
            message,
        } => {
            warn!(code = %code_name(code), %message, "signalling error from server");
            if let Some(call_id) = call_id {
                let slot = inner.slots().remove(&call_id);
                match slot {
                    Some(Slot::Outgoing(Some(tx))) => {
                        let _ = tx.send(Err(TelephonyError::Signalling(format!(
                            "{}: {message}",
                            code_name(code)
                        ))));
                    }
                    Some(other) => {
                        inner.slots().insert(call_id, other);
                    }
                    None => {}
                }
            }
        }
        ServerMessage::Candidate {
            call_id,
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => {
            let control = match inner.slots().get(&call_id) {
                Some(Slot::Active(c)) => Some(c.clone()),
                _ => None,
            };
            if let Some(c) = control
                && let Err(e) = c
                    .add_remote_candidate(candidate, sdp_mid, sdp_mline_index)
                    .await
            {
                debug!(error = %e, "remote candidate rejected");
            }
        }
        ServerMessage::Registered { .. } | ServerMessage::Pong => {}
    }
}
