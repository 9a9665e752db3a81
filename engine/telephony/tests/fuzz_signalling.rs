//! Fuzz target: signalling messages, as the hub parses them from devices
//! (`parse_client`) and devices parse the hub's, then sent over a real
//! WebSocket to a running hub. See docs/fuzzing.md.
//!
//! Asserts: no panic, in the parser or in any task of the hub; a message is
//! a known message or an error saying whether it was bad JSON or a bad
//! shape, and a known one survives a round trip through JSON; parsing
//! holds at most `BYTES_PER_INPUT_BYTE` × the message's length + `SLACK` at
//! once; after any message the hub still answers a ping on that socket or
//! has closed it, and a new device still registers.

#[path = "../../../tests/fuzz/mod.rs"]
mod fuzz;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use voicecare_telephony::LegConfig;
use voicecare_telephony::signalling::protocol::parse_client;
use voicecare_telephony::signalling::{
    AuthError, DeviceGateway, DeviceKind, DeviceProfile, DeviceToken, ErrorCode, HubConfig,
    IncomingCall, ServerMessage, SignallingHub,
};

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

const SLACK: usize = 64 << 10;
const BYTES_PER_INPUT_BYTE: usize = 48;
const T: Duration = Duration::from_secs(10);

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"\"type\":",
    b"\"register\"",
    b"\"offer\"",
    b"\"answer\"",
    b"\"candidate\"",
    b"\"hangup\"",
    b"\"ringing\"",
    b"\"ping\"",
    b"\"call_id\":",
    b"\"device_id\":",
    b"\"token\":",
    b"\"sdp\":",
    b"\"reason\":",
    b"\"sdp_mline_index\":",
    b"65536",
    b"-1",
    b"1e400",
    b"null",
    b"true",
];

fn check_parse(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    let text = String::from_utf8_lossy(input);
    let (parsed, peak) = fuzz::measure(|| {
        let device = parse_client(&text);
        let _ = serde_json::from_str::<ServerMessage>(&text);
        device
    });
    if peak > BYTES_PER_INPUT_BYTE * text.len() + SLACK {
        return Err(fuzz::fail(format!(
            "{peak} bytes held to parse {} bytes",
            text.len()
        )));
    }
    match parsed {
        Ok(message) => {
            let json = serde_json::to_string(&message).map_err(|e| fuzz::fail(e.to_string()))?;
            let again = parse_client(&json).map_err(|(_, e)| fuzz::fail(e))?;
            if again != message {
                return Err(fuzz::fail(format!("{message:?} came back as {again:?}")));
            }
        }
        Err((code, why)) => {
            if !matches!(code, ErrorCode::BadJson | ErrorCode::BadMessage) || why.is_empty() {
                return Err(fuzz::fail(format!("{code:?}: {why:?}")));
            }
        }
    }
    Ok(())
}

#[test]
fn messages_never_panic_and_errors_say_why() {
    fuzz::run("signalling", TOKENS, check_parse);
}

struct Gateway;

#[async_trait::async_trait]
impl DeviceGateway for Gateway {
    async fn authenticate(
        &self,
        device_id: &str,
        token: &DeviceToken,
    ) -> Result<DeviceProfile, AuthError> {
        match (device_id, token.expose()) {
            ("tab-17", "s3cret") => Ok(DeviceProfile {
                device_id: device_id.to_string(),
                kind: DeviceKind::Elder,
            }),
            ("tab-17", _) => Err(AuthError::BadToken),
            _ => Err(AuthError::UnknownDevice),
        }
    }

    async fn incoming_call(&self, call: IncomingCall) -> Result<(), String> {
        // Taken and put down at once: the device hears a hang-up.
        drop(call);
        Ok(())
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Sends a ping and reads until the pong; false when the hub closed the socket.
async fn answers_ping(ws: &mut Socket) -> Result<bool, String> {
    if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
        return Ok(false);
    }
    loop {
        match tokio::time::timeout(T, ws.next()).await {
            Err(_) => return Err("neither a pong nor a close in time".into()),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Ok(false),
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""type":"pong""#) => return Ok(true),
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[test]
fn the_hub_survives_any_message_from_a_device() {
    let panics = Arc::new(AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    {
        let panics = panics.clone();
        std::panic::set_hook(Box::new(move |info| {
            panics.fetch_add(1, Ordering::SeqCst);
            default_hook(info);
        }));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(async {
        let hub = SignallingHub::new(
            Gateway,
            HubConfig {
                leg: LegConfig::loopback(),
                ..HubConfig::default()
            },
        );
        let app = axum::Router::new().nest("/v1/devices", hub.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("ws://{addr}/v1/devices/ws")
    });
    let budget = fuzz::Budget { secs: 2, cases: 32 };
    fuzz::run_for("signalling", TOKENS, budget, |input| {
        rt.block_on(async {
            let mut ws = connect(&url).await;
            // Half the inputs arrive from a registered device.
            if input.first().is_some_and(|b| b.is_multiple_of(2)) {
                let register = r#"{"type":"register","device_id":"tab-17","token":"s3cret"}"#;
                ws.send(Message::text(register)).await.unwrap();
            }
            let message = if input.last().is_some_and(|b| b.is_multiple_of(8)) {
                Message::binary(input.to_vec())
            } else {
                Message::text(String::from_utf8_lossy(input).into_owned())
            };
            let _ = ws.send(message).await;
            answers_ping(&mut ws).await.map_err(fuzz::fail)?;
            let _ = ws.close(None).await;
            // Whatever that socket did, a device still gets in.
            let mut fresh = connect(&url).await;
            let register = r#"{"type":"register","device_id":"tab-17","token":"s3cret"}"#;
            fresh.send(Message::text(register)).await.unwrap();
            if !answers_ping(&mut fresh).await.map_err(fuzz::fail)? {
                return Err(fuzz::fail("a registered device's socket was closed"));
            }
            let _ = fresh.close(None).await;
            Ok(())
        })
    });
    // Panics inside the hub's tasks do not reach the check above.
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the hub panicked");
}
