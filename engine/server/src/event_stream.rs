//! A client of the operators' live event stream (`GET /api/v1/events`):
//! what a console does, minus the browser. The queue benchmark and the demo
//! use it to time escalations reaching operators.

use std::time::SystemTime;

use anyhow::Context as _;

/// A logged-in subscription to the event stream.
pub struct EventStream {
    response: reqwest::Response,
    partial: String,
    /// `resync` events read so far: the server's word that events may have
    /// been missed and the queue should be reloaded.
    pub resyncs: u64,
}

/// One escalation event as it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// The escalation's id.
    pub id: i64,
    /// Wall-clock time the event was read off the stream.
    pub at: SystemTime,
}

impl EventStream {
    /// Log in at `base` (`http://host:port`) and open the stream.
    pub async fn connect(base: &str, username: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let login: serde_json::Value = http
            .post(format!("{base}/api/v1/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("logging in as {username}"))?
            .json()
            .await?;
        let token = login["token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("login answered without a token: {login}"))?
            .to_string();
        Self::open(&http, base, &token).await
    }

    /// Open the stream with a session token already held.
    pub async fn open(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Self> {
        let response = http
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()
            .context("opening the event stream")?;
        Ok(Self {
            response,
            partial: String::new(),
            resyncs: 0,
        })
    }

    /// Wait for the next chunk of the stream; the escalation events in it.
    /// An error when the stream ends.
    pub async fn next(&mut self) -> anyhow::Result<Vec<Seen>> {
        let chunk = self
            .response
            .chunk()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the event stream ended"))?;
        let at = SystemTime::now();
        Ok(self.push(&chunk, at))
    }

    /// Parse `data:` lines; a line may span chunks.
    fn push(&mut self, chunk: &[u8], at: SystemTime) -> Vec<Seen> {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        let mut seen = Vec::new();
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if let Some(id) = v.get("id").and_then(|i| i.as_i64()) {
                seen.push(Seen { id, at });
            } else if v.get("op").and_then(|o| o.as_str()) == Some("resync") {
                self.resyncs += 1;
            }
        }
        seen
    }
}
