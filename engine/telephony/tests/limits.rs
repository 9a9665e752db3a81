//! One misbehaving client cannot take the signalling endpoint down: clients
//! that never read, spam garbage or hold sockets open unregistered are cut
//! off, and everyone else keeps working.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gateway, T};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use voicecare_telephony::LegConfig;
use voicecare_telephony::signalling::{ClientAddr, DeviceClient, HubConfig, SignallingHub};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The common test server, but told each client's address, as `voicecare
/// serve` is.
async fn start(config: HubConfig) -> common::Server {
    start_with(config, |r| r).await
}

async fn start_with(
    config: HubConfig,
    front: impl FnOnce(axum::Router) -> axum::Router,
) -> common::Server {
    let (tx, rx) = mpsc::unbounded_channel();
    let hub = SignallingHub::new(Gateway { incoming: tx }, config);
    let app = front(axum::Router::new().nest("/v1/devices", hub.router()))
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    common::Server {
        hub,
        url: format!("ws://{addr}/v1/devices/ws"),
        incoming: Mutex::new(rx),
    }
}

fn config() -> HubConfig {
    HubConfig {
        leg: LegConfig::loopback(),
        ..HubConfig::default()
    }
}

async fn open(server: &common::Server) -> Ws {
    tokio_tungstenite::connect_async(server.url.as_str())
        .await
        .unwrap()
        .0
}

async fn register(ws: &mut Ws, device: &str) {
    let m = serde_json::json!({"type": "register", "device_id": device, "token": format!("secret-{device}")});
    ws.send(Message::Text(m.to_string().into())).await.unwrap();
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "registered", "{v}");
            return;
        }
    }
}

/// Read what is left on the socket until it closes: (text messages, bytes).
/// Panics if it stays open.
async fn drain_until_closed(ws: &mut Ws) -> (usize, usize) {
    let (mut messages, mut bytes) = (0, 0);
    tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) => {
                    messages += 1;
                    bytes += t.len();
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still open after {messages} messages ({bytes} bytes)"));
    (messages, bytes)
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_reads_is_dropped_and_the_others_keep_working() {
    let server = start(config()).await;
    let (_good, _rings) = DeviceClient::connect(server.client("elder-1"))
        .await
        .unwrap();
    server.wait_registered("elder-1").await;

    // A registered device asks about calls it does not have; each answer
    // repeats its 60 kB call id, and it never reads one.
    let mut ws = open(&server).await;
    register(&mut ws, "elder-2").await;
    let hangup = serde_json::json!({"type": "hangup", "call_id": "x".repeat(60_000)}).to_string();
    let before = rss_kib();
    let mut cut_off_after = None;
    for i in 0..2000 {
        if ws.send(Message::Text(hangup.clone().into())).await.is_err() {
            cut_off_after = Some(i);
            break;
        }
    }
    let grew_mib = rss_kib().saturating_sub(before) / 1024;
    let sent = cut_off_after.expect("the server kept a socket that never reads (120 MB sent)");
    assert!(grew_mib < 64, "memory grew by {grew_mib} MiB");
    assert!(sent < 2000, "{sent}");
    assert!(!server.hub.is_registered("elder-2"));

    // The other device is still there, and new ones get in.
    assert!(server.hub.is_registered("elder-1"));
    let (_new, _rings) = DeviceClient::connect(server.client("elder-3"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_socket_after_a_few_messages() {
    let server = start(config()).await;
    // Before registering: unknown message types, echoed back in the errors.
    let mut ws = open(&server).await;
    let junk = serde_json::json!({"type": "y".repeat(30_000)}).to_string();
    for _ in 0..200 {
        if ws.send(Message::Text(junk.clone().into())).await.is_err() {
            break;
        }
    }
    let (messages, _) = drain_until_closed(&mut ws).await;
    assert!(messages <= 21, "{messages} answers to garbage");

    // After registering: not JSON at all.
    let mut ws = open(&server).await;
    register(&mut ws, "elder-4").await;
    for _ in 0..200 {
        if ws.send(Message::Text("{nope".into())).await.is_err() {
            break;
        }
    }
    let (messages, _) = drain_until_closed(&mut ws).await;
    assert!(messages <= 21, "{messages} answers to garbage");
    assert!(!server.hub.is_registered("elder-4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_sockets_per_address_are_capped() {
    let server = start(HubConfig {
        max_pending_per_ip: 5,
        ..config()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(open(&server).await);
    }
    let refused = tokio_tungstenite::connect_async(server.url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 429)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a sixth unregistered socket from one address was accepted"),
    }
    // Registering frees the place.
    register(&mut idle[0], "elder-1").await;
    let mut ws = open(&server).await;
    register(&mut ws, "elder-2").await;
    // So does leaving.
    drop(idle.pop());
    let ok = tokio::time::timeout(T, async {
        loop {
            if tokio_tungstenite::connect_async(server.url.as_str())
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "a place freed by a closed socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_counts_the_address_the_front_server_names() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    // A front server that, like a trusted proxy's, names the client.
    let server = start_with(
        HubConfig {
            max_pending_per_ip: 2,
            ..config()
        },
        |r| {
            r.layer(axum::middleware::from_fn(
                |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
                    let client = req
                        .headers()
                        .get("x-client")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    if let Some(ip) = client {
                        req.extensions_mut().insert(ClientAddr(ip));
                    }
                    next.run(req).await
                },
            ))
        },
    )
    .await;
    let from = |ip: &str| {
        let mut req = server.url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("x-client", ip.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let _a1 = from("192.0.2.1").await.unwrap();
    let _a2 = from("192.0.2.1").await.unwrap();
    assert!(from("192.0.2.1").await.is_err(), "a third from one client");
    let _b = from("192.0.2.2")
        .await
        .expect("another client behind the same proxy");
}

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_places_one_call_at_a_time() {
    let server = start(config()).await;
    let mut ws = open(&server).await;
    register(&mut ws, "elder-1").await;
    let offer = voicecare_telephony::CallLeg::offer(&LegConfig::loopback())
        .await
        .unwrap();
    let offer_msg = |call_id: &str| {
        let m = serde_json::json!({"type": "offer", "call_id": call_id, "sdp": offer.sdp()});
        Message::Text(m.to_string().into())
    };
    for i in 0..60 {
        ws.send(offer_msg(&format!("c{i}"))).await.unwrap();
    }
    let (mut answered, mut refused) = (Vec::new(), 0);
    while answered.len() + refused < 60 {
        let m = next_json(&mut ws).await;
        match m["type"].as_str() {
            Some("answer") => answered.push(m["call_id"].as_str().unwrap().to_string()),
            Some("error") => {
                assert_eq!(m["code"], "rejected", "{m}");
                assert!(
                    m["message"].as_str().unwrap().contains("already in a call"),
                    "{m}"
                );
                refused += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(answered.len(), 1, "answered {answered:?}");
    let mut call = server.next_incoming().await;
    let more = tokio::time::timeout(Duration::from_millis(300), server.next_incoming()).await;
    assert!(more.is_err(), "a second call reached the engine");

    // Once that call is over, the device may call again.
    let hangup = serde_json::json!({"type": "hangup", "call_id": answered[0]});
    ws.send(Message::Text(hangup.to_string().into()))
        .await
        .unwrap();
    common::drain_until_end(&mut call.leg).await;
    let again = tokio::time::timeout(T, async {
        for i in 0.. {
            ws.send(offer_msg(&format!("again-{i}"))).await.unwrap();
            if next_json(&mut ws).await["type"] == "answer" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(again.is_ok(), "a new call after the first ended");
}
