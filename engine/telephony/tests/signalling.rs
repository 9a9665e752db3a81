//! Signalling over a real WebSocket server with real WebRTC legs on loopback.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use voicecare_telephony::audio::{SAMPLE_RATE, rms, sine, tone_power_ratio};
use voicecare_telephony::signalling::{
    AuthError, ClientConfig, DeviceClient, DeviceGateway, DeviceKind, DeviceProfile, DeviceToken,
    HangupReason, HubConfig, IncomingCall, SignallingHub,
};
use voicecare_telephony::{CallLeg, EndReason, LegConfig, LegEvent, TelephonyError};

const T: Duration = Duration::from_secs(10);

struct Gateway {
    tokens: HashMap<String, String>,
    incoming: mpsc::UnboundedSender<IncomingCall>,
}

#[async_trait::async_trait]
impl DeviceGateway for Gateway {
    async fn authenticate(
        &self,
        device_id: &str,
        token: &DeviceToken,
    ) -> Result<DeviceProfile, AuthError> {
        match self.tokens.get(device_id) {
            None => Err(AuthError::UnknownDevice),
            Some(t) if t != token.expose() => Err(AuthError::BadToken),
            Some(_) => Ok(DeviceProfile {
                device_id: device_id.to_string(),
                kind: DeviceKind::Elder,
            }),
        }
    }

    async fn incoming_call(&self, call: IncomingCall) -> Result<(), String> {
        if call.target.as_deref() == Some("nowhere") {
            return Err("no such call to join".into());
        }
        self.incoming
            .send(call)
            .map_err(|_| "shutting down".to_string())
    }
}

struct Server {
    hub: std::sync::Arc<SignallingHub<Gateway>>,
    url: String,
    incoming: Mutex<mpsc::UnboundedReceiver<IncomingCall>>,
}

async fn start(config: HubConfig) -> Server {
    let (tx, rx) = mpsc::unbounded_channel();
    let tokens = (1..=5)
        .map(|i| (format!("elder-{i}"), format!("token-{i}")))
        .collect();
    let hub = SignallingHub::new(
        Gateway {
            tokens,
            incoming: tx,
        },
        config,
    );
    let app = axum::Router::new().nest("/v1/devices", hub.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        hub,
        url: format!("ws://{addr}/v1/devices/ws"),
        incoming: Mutex::new(rx),
    }
}

fn hub_config() -> HubConfig {
    HubConfig {
        leg: LegConfig::loopback(),
        ..HubConfig::default()
    }
}

fn client(server: &Server, n: u32, token: &str) -> ClientConfig {
    let mut c = ClientConfig::new(&server.url, format!("elder-{n}"), DeviceToken::new(token));
    c.leg = LegConfig::loopback();
    c
}

async fn hear_tone(leg: &mut CallLeg, freq: f32) {
    let mut heard = Vec::new();
    tokio::time::timeout(T, async {
        while heard.len() < 16_00 * 10 {
            match leg.next_event().await {
                Some(LegEvent::Audio(f)) if rms(&f) > 500.0 => heard.extend(f),
                Some(LegEvent::Ended(r)) => panic!("ended: {r:?}"),
                None => panic!("closed"),
                _ => {}
            }
        }
    })
    .await
    .expect("tone in time");
    assert!(tone_power_ratio(&heard[1600..], SAMPLE_RATE, freq) > 0.8);
}

async fn wait_end(leg: &mut CallLeg) -> EndReason {
    tokio::time::timeout(T, async {
        loop {
            match leg.next_event().await {
                Some(LegEvent::Ended(r)) => return r,
                Some(_) => {}
                None => panic!("closed without Ended"),
            }
        }
    })
    .await
    .expect("end in time")
}

async fn wait_registered(server: &Server, id: &str) {
    tokio::time::timeout(T, async {
        while !server.hub.is_registered(id) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_rings_a_registered_device_which_answers() {
    let server = start(hub_config()).await;
    let (_device, mut rings) = DeviceClient::connect(client(&server, 1, "token-1"))
        .await
        .unwrap();
    wait_registered(&server, "elder-1").await;

    let phone = tokio::spawn(async move {
        let ring = rings.recv().await.expect("a ring");
        ring.ringing();
        let mut leg = ring.answer().await.expect("answer");
        leg.wait_connected(T).await.unwrap();
        hear_tone(&mut leg, 440.0).await;
        // The elder hangs up.
        let t0 = std::time::Instant::now();
        leg.control().hang_up();
        (leg, t0)
    });
    let mut engine = server.hub.call_device("elder-1").await.expect("call");
    engine.wait_connected(T).await.unwrap();
    engine
        .control()
        .play(sine(440.0, 8000, SAMPLE_RATE as usize * 3));
    let (mut phone_leg, t0) = phone.await.unwrap();
    assert_eq!(wait_end(&mut engine).await, EndReason::RemoteHangup);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "hang-up seen via signalling"
    );
    assert_eq!(wait_end(&mut phone_leg).await, EndReason::LocalHangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_calls_in_and_the_engine_hangs_up() {
    let server = start(hub_config()).await;
    let (device, _rings) = DeviceClient::connect(client(&server, 2, "token-2"))
        .await
        .unwrap();
    let mut leg = device.call(None).await.expect("call in");
    let call = tokio::time::timeout(T, async { server.incoming.lock().await.recv().await })
        .await
        .unwrap()
        .expect("incoming call");
    assert_eq!(call.device.device_id, "elder-2");
    let mut engine = call.leg;
    engine.wait_connected(T).await.unwrap();
    leg.wait_connected(T).await.unwrap();
    leg.control()
        .play(sine(1000.0, 8000, SAMPLE_RATE as usize * 3));
    hear_tone(&mut engine, 1000.0).await;
    engine.control().hang_up();
    assert_eq!(wait_end(&mut leg).await, EndReason::RemoteHangup);

    // A call-in the router refuses ends with the router's reason.
    let err = match device.call(Some("nowhere".into())).await {
        Ok(mut leg) => wait_end(&mut leg).await,
        Err(e) => panic!("answered before refusal is expected: {e}"),
    };
    assert_eq!(err, EndReason::RemoteHangup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_others_keep_working() {
    let server = start(hub_config()).await;
    let err = DeviceClient::connect(client(&server, 3, "wrong"))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("bad_token"), "{err}");
    let mut unknown = client(&server, 3, "token-3");
    unknown.device_id = "stranger".into();
    let err = DeviceClient::connect(unknown).await.err().expect("refused");
    assert!(err.to_string().contains("unknown_device"), "{err}");

    let (_device, mut rings) = DeviceClient::connect(client(&server, 3, "token-3"))
        .await
        .unwrap();
    wait_registered(&server, "elder-3").await;
    let answer = tokio::spawn(async move { rings.recv().await.unwrap().answer().await });
    let mut engine = server.hub.call_device("elder-3").await.unwrap();
    engine.wait_connected(T).await.unwrap();
    let _device_leg = answer.await.unwrap().unwrap();
    engine.control().hang_up();
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_clear_errors_and_the_socket_survives() {
    let server = start(hub_config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .unwrap();
    ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "bad_json");
    ws.send(Message::Text(
        r#"{"type":"offer","call_id":"c1","sdp":"x"}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "not_registered");
    ws.send(Message::Text(
        r#"{"type":"register","device_id":"elder-4","token":"token-4"}"#.into(),
    ))
    .await
    .unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(r["type"], "registered");
    assert_eq!(r["protocol"], 1);

    ws.send(Message::Text(r#"{"type":"jump","call_id":"c1"}"#.into()))
        .await
        .unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "bad_message");
    assert!(e["message"].as_str().unwrap().contains("jump"));

    ws.send(Message::Text(
        r#"{"type":"offer","call_id":"c2","sdp":"v=0 this is not SDP"}"#.into(),
    ))
    .await
    .unwrap();
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "bad_sdp", "{e}");
    assert_eq!(e["call_id"], "c2");

    ws.send(Message::Text(
        r#"{"type":"hangup","call_id":"nope"}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "unknown_call");

    ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");

    // An engine call with a malformed answer fails cleanly for the engine.
    let hub = server.hub.clone();
    let call = tokio::spawn(async move { hub.call_device("elder-4").await });
    let offer = next_json(&mut ws).await;
    assert_eq!(offer["type"], "offer");
    let call_id = offer["call_id"].as_str().unwrap().to_string();
    let bad = serde_json::json!({"type":"answer","call_id":call_id,"sdp":"garbage"});
    ws.send(Message::Text(bad.to_string().into()))
        .await
        .unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, TelephonyError::BadSdp(_)), "{err}");
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "bad_sdp");
    assert_eq!(next_json(&mut ws).await["type"], "hangup");

    // Unregistered devices cannot be rung.
    let err = server.hub.call_device("elder-5").await.unwrap_err();
    assert!(matches!(err, TelephonyError::NotRegistered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_and_unanswered_calls() {
    let server = start(HubConfig {
        ring_timeout: Duration::from_millis(300),
        ..hub_config()
    })
    .await;
    let (_device, mut rings) = DeviceClient::connect(client(&server, 5, "token-5"))
        .await
        .unwrap();
    wait_registered(&server, "elder-5").await;
    let hub = server.hub.clone();
    let call = tokio::spawn(async move { hub.call_device("elder-5").await });
    rings.recv().await.unwrap().decline(HangupReason::Busy);
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(err, TelephonyError::Declined(HangupReason::Busy)),
        "{err}"
    );

    let hub = server.hub.clone();
    let call = tokio::spawn(async move { hub.call_device("elder-5").await });
    let mut ring = rings.recv().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, TelephonyError::NoAnswer), "{err}");
    assert_eq!(ring.cancelled().await, HangupReason::NoAnswer);
    assert!(ring.answer().await.is_err(), "too late to answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_only_that_connection() {
    let server = start(hub_config()).await;
    let (_device, _rings) = DeviceClient::connect(client(&server, 1, "token-1"))
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .unwrap();
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    let _ = ws.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed);
    // The registered device is unaffected.
    assert!(server.hub.is_registered("elder-1"));
}
