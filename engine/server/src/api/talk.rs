//! Live talk from the console: `GET /api/v1/escalations/{id}/talk` upgrades
//! to a WebSocket carrying the operator browser's WebRTC signalling (offer,
//! answer, candidates, hang-up; docs/signalling.md). The operator must hold
//! the escalation's claim. `join` takes over the call that keeps the elder on
//! the line; `call_back` rings the elder's device, or their telephone
//! through the SIP trunk. Either way the two legs are bridged and recorded
//! (runner/live.rs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use voicecare_core::session::SetupFailure;
use voicecare_store::StoreError;
use voicecare_store::operators::{Role, Scope};
use voicecare_store::talks::{self, TalkTarget};
use voicecare_telephony::TelephonyError;
use voicecare_telephony::leg::{CallLeg, LegControl};
use voicecare_telephony::signalling::Outbox;

use super::AppState;
use super::auth::Authed;
use super::error::ApiError;
use crate::runner::Engine;
use crate::runner::hold::{JoinRequest, TalkState};

/// The offer must arrive this soon after the socket opens.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// The browser's media must connect this soon after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages waiting to be written to the page. A page that stops reading
/// lets them pile up; when they reach this, it is disconnected.
const OUTBOUND_QUEUE: usize = 64;
/// Malformed messages a page may send before the socket is closed.
const MAX_BAD_MESSAGES: u32 = 20;
/// How long a closing socket may take to flush what is queued for it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
pub struct TalkQuery {
    /// The session's CSRF token: browsers cannot set headers on a WebSocket.
    csrf: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// Take over the call that keeps the elder on the line.
    #[default]
    Join,
    /// Ring the elder's device and bridge when they answer.
    CallBack,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Offer {
        sdp: String,
        #[serde(default)]
        mode: Mode,
    },
    Candidate {
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
    Hangup,
    Ping,
}

/// What the talk socket makes of one text message from a console: `Ok` for
/// a message it acts on, else the error code and reason it answers with.
/// Public so that tests/fuzz_talk.rs can feed it any text.
pub fn read_message(text: &str) -> Result<(), (&'static str, String)> {
    parse(text).map(|_| ())
}

fn parse(text: &str) -> Result<ClientMsg, (&'static str, String)> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| ("bad_json", format!("not valid JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| ("bad_message", e.to_string()))
}

fn error(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "code": code, "message": message.into()})
}

fn not_fatal(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "code": code, "message": message.into(), "fatal": false})
}

/// Answers the page's mistakes; past the limit, the answer ends the socket.
struct BadMessages(u32);

impl BadMessages {
    /// `false` once the socket is to close.
    fn answer(&mut self, out: &Outbox<Value>, code: &str, message: impl Into<String>) -> bool {
        self.0 += 1;
        if self.0 < MAX_BAD_MESSAGES {
            out.send(not_fatal(code, message));
            return true;
        }
        out.send(error(
            "too_many_bad_messages",
            "too many malformed messages; closing the connection",
        ));
        false
    }
}

/// Write queued messages until the queue ends, a refusal or the end has
/// been written, or the page is dropped for not reading.
async fn write_page(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Value>,
    dropped: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(dropped);
    loop {
        let v = tokio::select! {
            biased;
            _ = &mut dropped => return,
            v = rx.recv() => match v {
                Some(v) => v,
                None => break,
            },
        };
        // A refusal or the end closes the socket; a bad message does not.
        let last = (v["type"] == "error" && v["fatal"] != false) || v["state"] == "ended";
        // A page that stops reading blocks this write: the drop still gets
        // through.
        tokio::select! {
            biased;
            _ = &mut dropped => return,
            sent = sink.send(Message::Text(v.to_string().into())) => {
                if sent.is_err() || last {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
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

/// `GET /api/v1/escalations/{id}/talk`: authenticate, then upgrade. Every
/// other refusal is sent over the socket, where the page can read it.
pub async fn talk(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
    Query(q): Query<TalkQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    auth.require(Role::Operator)?;
    if let Some(expected) = &auth.cookie_csrf
        && q.csrf.as_deref() != Some(expected.as_str())
    {
        return Err(ApiError::forbidden(
            "missing or wrong csrf query parameter (the session's CSRF token)",
        ));
    }
    // A cross-site page cannot know the CSRF token; refusing foreign origins
    // as well costs nothing.
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) && origin.split_once("://").map(|(_, h)| h) != Some(host)
    {
        return Err(ApiError::forbidden("WebSocket from another origin refused"));
    }
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, auth, id, socket)))
}

type Slot = Arc<Mutex<Option<LegControl>>>;

async fn serve(app: AppState, auth: Authed, id: i64, socket: WebSocket) {
    let scope = auth.scope;
    // The operator's session ending (logout, expiry, deactivation) ends the
    // conversation too.
    let ended = auth.session.ended(&app);
    tokio::pin!(ended);
    let session_ended = || {
        error(
            "session_ended",
            "your session has ended; log in again to talk",
        )
    };
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = Outbox::new(OUTBOUND_QUEUE);
    let writer = tokio::spawn(write_page(sink, out_rx, out.dropped()));
    let dropped = out.dropped();
    tokio::pin!(dropped);
    let mut bad = BadMessages(0);

    // The first message is the offer.
    let deadline = tokio::time::Instant::now() + OFFER_TIMEOUT;
    let (sdp, mode) = loop {
        let next = tokio::select! {
            m = tokio::time::timeout_at(deadline, stream.next()) => m,
            _ = &mut dropped => {
                writer.abort();
                return;
            }
            _ = &mut ended => {
                out.send(session_ended());
                drop(out);
                finish(writer).await;
                return;
            }
        };
        let msg = match next {
            Err(_) => {
                out.send(error(
                    "offer_timeout",
                    "no offer within 10 s of opening the socket",
                ));
                drop(out);
                finish(writer).await;
                return;
            }
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(m))) => m,
        };
        let Message::Text(text) = msg else { continue };
        let understood = match parse(&text) {
            Ok(ClientMsg::Offer { sdp, mode }) => break (sdp, mode),
            Ok(ClientMsg::Ping) => {
                out.send(json!({"type": "pong"}));
                true
            }
            Ok(ClientMsg::Hangup) => return,
            Ok(ClientMsg::Candidate { .. }) => {
                bad.answer(&out, "bad_message", "send the offer before candidates")
            }
            Err((code, message)) => bad.answer(&out, code, message),
        };
        if !understood {
            drop(out);
            finish(writer).await;
            return;
        }
    };

    let (state_tx, mut state_rx) = watch::channel(TalkState::Connecting);
    let slot: Slot = Arc::new(Mutex::new(None));
    let driver = tokio::spawn(drive(
        app,
        scope,
        id,
        mode,
        sdp,
        state_tx,
        out.clone(),
        slot.clone(),
    ));
    out.send(json!({"type": "state", "state": "connecting"}));
    let leg = |slot: &Slot| slot.lock().ok().and_then(|s| s.clone());
    // Once the page has gone, only the final state is awaited (to let the
    // set-up or the bridge close things in order).
    let mut page_open = true;
    let mut session_open = true;
    loop {
        tokio::select! {
            msg = stream.next(), if page_open => match msg {
                Some(Ok(Message::Text(text))) => {
                    let understood = match parse(&text) {
                        Ok(ClientMsg::Candidate { candidate, sdp_mid, sdp_mline_index }) => {
                            if let Some(ctl) = leg(&slot)
                                && let Err(e) = ctl.add_remote_candidate(candidate, sdp_mid, sdp_mline_index).await
                            {
                                out.send(not_fatal("bad_sdp", e.to_string()));
                            }
                            true
                        }
                        Ok(ClientMsg::Hangup) => {
                            if !operator_left(&slot, &driver) {
                                break;
                            }
                            true
                        }
                        Ok(ClientMsg::Ping) => {
                            out.send(json!({"type": "pong"}));
                            true
                        }
                        Ok(ClientMsg::Offer { .. }) => bad.answer(&out, "bad_message", "one offer per socket"),
                        Err((code, message)) => bad.answer(&out, code, message),
                    };
                    // Past the limit the page is treated as gone.
                    if !understood {
                        page_open = false;
                        if !operator_left(&slot, &driver) {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The page went away: the operator has left the conversation.
                    page_open = false;
                    if !operator_left(&slot, &driver) {
                        break;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = &mut ended, if session_open && page_open => {
                session_open = false;
                out.send(session_ended());
                page_open = false;
                if !operator_left(&slot, &driver) {
                    break;
                }
            }
            _ = &mut dropped, if page_open => {
                // The page does not read what it is sent: as good as gone.
                page_open = false;
                if !operator_left(&slot, &driver) {
                    break;
                }
            }
            changed = state_rx.changed() => {
                if changed.is_err() {
                    break; // the driver and the session are gone
                }
                let s = state_rx.borrow_and_update().clone();
                let msg = match &s {
                    TalkState::Connecting => json!({"type": "state", "state": "connecting"}),
                    TalkState::Ringing { talk_id } => json!({"type": "state", "state": "ringing", "talk_id": talk_id}),
                    TalkState::Answered { talk_id } => json!({"type": "state", "state": "answered", "talk_id": talk_id}),
                    TalkState::Live { talk_id } => json!({"type": "state", "state": "live", "talk_id": talk_id}),
                    TalkState::Ended { talk_id, ended_by, reason } => json!({"type": "state", "state": "ended", "talk_id": talk_id, "ended_by": ended_by, "reason": reason}),
                    TalkState::Failed { code, message } => error(code, message.clone()),
                };
                out.send(msg);
                if matches!(s, TalkState::Ended { .. } | TalkState::Failed { .. }) {
                    break;
                }
            }
        }
    }
    // The operator's leg never outlives the page's socket.
    if let Some(ctl) = leg(&slot) {
        ctl.remote_hung_up();
    }
    drop(out);
    finish(writer).await;
}

/// The operator hung up or closed the page. With a leg, end it and let the
/// bridge (or the set-up) report the end; before one exists, stop the set-up.
/// Returns whether to keep waiting for the final state.
fn operator_left(slot: &Slot, driver: &tokio::task::JoinHandle<()>) -> bool {
    match slot.lock().ok().and_then(|s| s.clone()) {
        Some(ctl) => {
            ctl.remote_hung_up();
            true
        }
        None => {
            driver.abort();
            false
        }
    }
}

fn store_failure(e: StoreError) -> TalkState {
    match e {
        StoreError::NotFound { .. } | StoreError::OutOfScope { .. } => TalkState::Failed {
            code: "not_found",
            message: "escalation not found".into(),
        },
        StoreError::Conflict(m) => TalkState::Failed {
            code: "not_claimed",
            message: m,
        },
        other => {
            tracing::error!(error = %other, "live talk: database error");
            TalkState::Failed {
                code: "internal",
                message: "internal error; see the server log".into(),
            }
        }
    }
}

fn media_failure(e: &TelephonyError) -> TalkState {
    let code = match e {
        TelephonyError::NoCommonCodec => "no_common_codec",
        TelephonyError::BadSdp(_) => "bad_sdp",
        _ => "media_failed",
    };
    TalkState::Failed {
        code,
        message: format!("your browser's audio could not be connected: {e}"),
    }
}

/// Everything between the offer and the bridge, reported through `state`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    app: AppState,
    scope: Scope,
    id: i64,
    mode: Mode,
    sdp: String,
    state: watch::Sender<TalkState>,
    out: Outbox<Value>,
    slot: Slot,
) {
    let fail = |s: TalkState| {
        let _ = state.send(s);
    };
    // The claim first: it is what the operator can do something about.
    let target = match talks::target(&app.pool, &scope, id, Utc::now()).await {
        Ok(t) => t,
        Err(e) => return fail(store_failure(e)),
    };
    let Some(engine) = app.engine.clone() else {
        return fail(TalkState::Failed {
            code: "calls_unavailable",
            message: "this server does not run calls, so it cannot connect you to the elder; use the console of a node that runs calls".into(),
        });
    };
    if let Err(refused) = check(&engine, &target, mode) {
        return fail(refused);
    }
    let Some(hub) = engine.hub() else {
        return fail(TalkState::Failed {
            code: "calls_unavailable",
            message: "device signalling is not running on this node".into(),
        });
    };
    let (mut leg, answer) = match CallLeg::answer(&hub.config().leg, &sdp).await {
        Ok(x) => x,
        Err(e) => return fail(media_failure(&e)),
    };
    if let Ok(mut s) = slot.lock() {
        *s = Some(leg.control());
    }
    out.send(json!({"type": "answer", "sdp": answer}));
    if let Err(e) = leg.wait_connected(CONNECT_TIMEOUT).await {
        leg.control().hang_up();
        return fail(media_failure(&e));
    }
    match mode {
        Mode::Join => join(&engine, &target, scope, leg, &state).await,
        Mode::CallBack => {
            crate::runner::live::call_back(&engine, &target, scope, leg, &state).await
        }
    }
}

/// Refuse early, in words the operator can act on.
fn check(engine: &Engine, t: &TalkTarget, mode: Mode) -> Result<(), TalkState> {
    let here = &engine.cfg.node_id;
    let live = t.call_status == "in_progress" && t.elder_on_line;
    match mode {
        Mode::Join => {
            if !live {
                return Err(TalkState::Failed {
                    code: "elder_gone",
                    message: "the elder is no longer on the line; use Call back to ring them"
                        .into(),
                });
            }
            if let Some(node) = t.call_node.as_deref().filter(|n| *n != here) {
                return Err(TalkState::Failed {
                    code: "call_on_other_node",
                    message: format!(
                        "the call is on engine node {node:?}, not on this one ({here:?}); open the console served by node {node:?} to join it"
                    ),
                });
            }
            if !engine.holds.is_holding(t.call_id) {
                return Err(TalkState::Failed {
                    code: "not_waiting",
                    message: "the call is not waiting for an operator (someone may have joined it already)".into(),
                });
            }
        }
        Mode::CallBack => {
            if live {
                return Err(TalkState::Failed {
                    code: "elder_on_line",
                    message:
                        "the elder is still on the line waiting for you; use Talk to join the call"
                            .into(),
                });
            }
            match crate::runner::live::callback_route(engine, t) {
                Ok(_) => {}
                Err(SetupFailure::DeviceNotConnected) => {
                    return Err(TalkState::Failed {
                        code: "device_offline",
                        message: format!(
                            "the elder's device is not connected to this engine node ({here:?}), and this node cannot ring their telephone; call their telephone number instead"
                        ),
                    });
                }
                Err(_) if t.phone.is_some() => {
                    return Err(TalkState::Failed {
                        code: "no_device",
                        message: "the elder has no device this engine can ring, and this engine has no telephone trunk for their number; call their telephone number instead".into(),
                    });
                }
                Err(_) => {
                    return Err(TalkState::Failed {
                        code: "no_device",
                        message: "the elder has no device or telephone number this engine can ring"
                            .into(),
                    });
                }
            }
        }
    }
    Ok(())
}

async fn join(
    engine: &Arc<Engine>,
    t: &TalkTarget,
    scope: Scope,
    leg: CallLeg,
    state: &watch::Sender<TalkState>,
) {
    let gone = || TalkState::Failed {
        code: "elder_gone",
        message: "the elder hung up before you joined; use Call back to ring them".into(),
    };
    let Some(tx) = engine.holds.holding(t.call_id) else {
        leg.control().hang_up();
        let _ = state.send(gone());
        return;
    };
    let (accepted, reply) = oneshot::channel();
    let req = JoinRequest {
        escalation_id: t.escalation_id,
        scope,
        operator: leg,
        state: state.clone(),
        accepted,
    };
    if let Err(mpsc::error::SendError(req)) = tx.send(req).await {
        req.operator.control().hang_up();
        let _ = state.send(gone());
        return;
    }
    // From here the session reports `live` and `ended`.
    match reply.await {
        Ok(Ok(talk_id)) => tracing::info!(talk_id, "operator joined the call"),
        Ok(Err(e)) => {
            let _ = state.send(store_failure(e));
        }
        Err(_) => {
            let _ = state.send(gone());
        }
    }
}

/// `GET /api/v1/talks/{id}/audio`: a conversation's recording (stereo WAV:
/// left the elder, right the operator). In scope only; audited.
pub async fn talk_audio(
    State(state): State<AppState>,
    auth: Authed,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let stored = talks::recording_path(&state.pool, &auth.scope, id, Utc::now()).await?;
    super::handlers::recording(&state, &stored, id).await
}
