//! The telephony crate's [`DeviceGateway`]: elders' devices authenticate with
//! the token whose SHA-256 is `elders.device_token_hash` (emergency contacts'
//! care apps with `emergency_contacts.device_token_hash`), and calls elders
//! place run the inbound help flow.

use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};
use voicecare_telephony::signalling::{
    AuthError, DeviceGateway, DeviceKind, DeviceProfile, DeviceToken, IncomingCall,
};

use super::engine::Engine;

#[derive(Clone)]
pub struct Gateway {
    pool: sqlx::PgPool,
    /// Set once the engine exists (the engine holds the hub that holds this).
    engine: Arc<std::sync::OnceLock<Weak<Engine>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

impl Gateway {
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            engine: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Connect the gateway to the engine that runs incoming calls.
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }
}

/// SHA-256 of a device token, as stored in `elders.device_token_hash`.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the content: the hash length is public.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait::async_trait]
impl DeviceGateway for Gateway {
    async fn authenticate(
        &self,
        device_id: &str,
        token: &DeviceToken,
    ) -> Result<DeviceProfile, AuthError> {
        let cred = voicecare_store::dialer::device_credential(&self.pool, device_id)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let Some(cred) = cred else {
            return Err(AuthError::UnknownDevice);
        };
        if !cred.active {
            return Err(AuthError::UnknownDevice);
        }
        let Some(hash) = cred.token_hash else {
            // Enrolled but never given a token: nobody can speak for it.
            return Err(AuthError::BadToken);
        };
        if !same(&hash, &token_hash(token.expose())) {
            return Err(AuthError::BadToken);
        }
        Ok(DeviceProfile {
            device_id: device_id.to_string(),
            kind: if cred.contact_position.is_some() {
                DeviceKind::Contact
            } else {
                DeviceKind::Elder
            },
        })
    }

    async fn incoming_call(&self, call: IncomingCall) -> Result<(), String> {
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            return Err("this node does not take calls".into());
        };
        if call.target.is_some() {
            return Err("joining calls from a device is not supported".into());
        }
        if call.device.kind != DeviceKind::Elder {
            return Err("only elders' devices call in".into());
        }
        // Dial-in counts against the node's cap like the calls it places.
        let cap = engine.cfg.caps.per_node;
        if engine.running_calls() as i64 >= cap {
            let calls = if cap == 1 { "call" } else { "calls" };
            return Err(format!(
                "this node is at its limit of {cap} {calls} in progress; try again in a moment"
            ));
        }
        let cred = voicecare_store::dialer::device_credential(&self.pool, &call.device.device_id)
            .await
            .map_err(|_| "cannot look the device up right now".to_string())?
            .ok_or_else(|| "unknown device".to_string())?;
        super::call::spawn_inbound(engine, cred.elder_id, call.leg);
        Ok(())
    }
}
