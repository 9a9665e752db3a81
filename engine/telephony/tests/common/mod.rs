//! A signalling server with an in-memory device table, for tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use voicecare_telephony::signalling::{
    AuthError, ClientConfig, DeviceGateway, DeviceKind, DeviceProfile, DeviceToken, HubConfig,
    IncomingCall, SignallingHub,
};
use voicecare_telephony::{CallLeg, EndReason, LegConfig, LegEvent};

pub const T: Duration = Duration::from_secs(15);

pub struct Gateway {
    pub incoming: mpsc::UnboundedSender<IncomingCall>,
}

#[async_trait::async_trait]
impl DeviceGateway for Gateway {
    async fn authenticate(
        &self,
        device_id: &str,
        token: &DeviceToken,
    ) -> Result<DeviceProfile, AuthError> {
        // Every device's token is "secret-" + its id.
        if token.expose() != format!("secret-{device_id}") {
            return Err(AuthError::BadToken);
        }
        let kind = if device_id.starts_with("op") {
            DeviceKind::Operator
        } else {
            DeviceKind::Elder
        };
        Ok(DeviceProfile {
            device_id: device_id.to_string(),
            kind,
        })
    }

    async fn incoming_call(&self, call: IncomingCall) -> Result<(), String> {
        self.incoming.send(call).map_err(|_| "shutting down".into())
    }
}

pub struct Server {
    pub hub: Arc<SignallingHub<Gateway>>,
    pub url: String,
    pub incoming: Mutex<mpsc::UnboundedReceiver<IncomingCall>>,
}

impl Server {
    pub async fn start(config: HubConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let hub = SignallingHub::new(Gateway { incoming: tx }, config);
        let app = axum::Router::new().nest("/v1/devices", hub.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            hub,
            url: format!("ws://{addr}/v1/devices/ws"),
            incoming: Mutex::new(rx),
        }
    }

    pub async fn loopback() -> Self {
        Self::start(HubConfig {
            leg: LegConfig::loopback(),
            ..HubConfig::default()
        })
        .await
    }

    pub fn client(&self, device_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new(
            &self.url,
            device_id,
            DeviceToken::new(format!("secret-{device_id}")),
        );
        c.leg = LegConfig::loopback();
        c
    }

    pub async fn wait_registered(&self, id: &str) {
        tokio::time::timeout(T, async {
            while !self.hub.is_registered(id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("registered in time");
    }

    pub async fn next_incoming(&self) -> IncomingCall {
        tokio::time::timeout(T, async { self.incoming.lock().await.recv().await })
            .await
            .expect("incoming call in time")
            .expect("incoming call")
    }
}

/// Drain events until the leg ends; returns loud audio heard, digits and the reason.
pub async fn drain_until_end(leg: &mut CallLeg) -> (Vec<i16>, String, EndReason) {
    let mut audio = Vec::new();
    let mut digits = String::new();
    let reason = tokio::time::timeout(T, async {
        loop {
            match leg.next_event().await {
                Some(LegEvent::Audio(f)) => audio.extend(f),
                Some(LegEvent::Digit(d)) => digits.push(d),
                Some(LegEvent::Ended(r)) => return r,
                Some(_) => {}
                None => panic!("closed without Ended"),
            }
        }
    })
    .await
    .expect("end in time");
    (audio, digits, reason)
}
