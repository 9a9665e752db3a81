//! Wire format of the device signalling protocol: one JSON object per
//! WebSocket text message, tagged by `type`. See docs/signalling.md.

use serde::{Deserialize, Serialize};

/// Protocol version announced in `registered`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A device's secret token. Never printed: Debug and Display redact it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceToken(String);

impl DeviceToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for comparing against a stored hash.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceToken(<redacted>)")
    }
}

/// Machine-readable error codes sent in `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON.
    BadJson,
    /// Valid JSON, but not a message this protocol knows, or a field is missing.
    BadMessage,
    /// The first message must be `register`.
    NotRegistered,
    /// No `register` arrived in time after the socket opened.
    RegisterTimeout,
    UnknownDevice,
    BadToken,
    /// Another connection registered as the same device; this one is closed.
    Replaced,
    /// The SDP could not be parsed or applied.
    BadSdp,
    /// The offer has no codec we speak (PCMU or Opus).
    NoCommonCodec,
    /// A message named a call this connection does not have.
    UnknownCall,
    /// The device's own call-in was refused (for example, too many calls).
    Rejected,
    /// The media connection could not be set up.
    MediaFailed,
    /// Something went wrong on the server; the connection stays usable.
    Internal,
}

/// Why a call was hung up; informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// Normal end of call by the sender.
    Normal,
    /// The callee refused the call.
    Declined,
    /// The callee is already in a call.
    Busy,
    /// Nobody answered before the ring timeout.
    NoAnswer,
    /// The media path failed or could not be set up.
    MediaFailed,
}

/// Messages a device (or operator browser) sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Must be the first message. `client` is a free-form software name for logs.
    Register {
        device_id: String,
        token: DeviceToken,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Start a call to the engine. `call_id` is chosen by the device (a UUID
    /// is recommended); `target` optionally names what to join (an operator
    /// joining a call in progress).
    Offer {
        call_id: String,
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// The device is alerting its user about an incoming call.
    Ringing { call_id: String },
    /// The device accepts an incoming call.
    Answer { call_id: String, sdp: String },
    /// A trickled ICE candidate (optional: full SDPs may carry all candidates).
    Candidate {
        call_id: String,
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
    /// End or decline a call.
    Hangup {
        call_id: String,
        #[serde(default = "normal")]
        reason: HangupReason,
    },
    /// Application keep-alive; answered with `pong`.
    Ping,
}

fn normal() -> HangupReason {
    HangupReason::Normal
}

/// Messages the engine sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Registration accepted.
    Registered {
        device_id: String,
        protocol: u32,
        /// Send something (a `ping` will do) at least this often.
        keepalive_secs: u64,
    },
    /// An incoming call for the device: the engine's SDP offer.
    Offer {
        call_id: String,
        sdp: String,
    },
    /// The engine accepted the device's call.
    Answer {
        call_id: String,
        sdp: String,
    },
    Candidate {
        call_id: String,
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
    Hangup {
        call_id: String,
        reason: HangupReason,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        code: ErrorCode,
        message: String,
    },
    Pong,
}

impl ServerMessage {
    pub fn error(call_id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            call_id: call_id.map(str::to_string),
            code,
            message: message.into(),
        }
    }
}

/// Parse a client message, telling invalid JSON apart from a wrong shape.
pub fn parse_client(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadJson, format!("not valid JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| (ErrorCode::BadMessage, format!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_redacted_in_debug() {
        let m = ClientMessage::Register {
            device_id: "tab-7".into(),
            token: DeviceToken::new("s3cret"),
            client: None,
        };
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(serde_json::to_string(&m).unwrap().contains("s3cret"));
    }

    #[test]
    fn parses_documented_shapes() {
        let m = parse_client(r#"{"type":"register","device_id":"d1","token":"t"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Register { .. }));
        let m = parse_client(r#"{"type":"hangup","call_id":"c"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Hangup {
                call_id: "c".into(),
                reason: HangupReason::Normal
            }
        );
        let s =
            serde_json::to_string(&ServerMessage::error(None, ErrorCode::BadToken, "x")).unwrap();
        assert_eq!(s, r#"{"type":"error","code":"bad_token","message":"x"}"#);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse_client("{nope").unwrap_err().0, ErrorCode::BadJson);
        let (code, msg) = parse_client(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(code, ErrorCode::BadMessage);
        assert!(msg.contains("dance"), "{msg}");
        let (code, msg) = parse_client(r#"{"type":"answer","call_id":"c"}"#).unwrap_err();
        assert_eq!(code, ErrorCode::BadMessage);
        assert!(msg.contains("sdp"), "{msg}");
    }
}
