//! Logging. Human-readable lines on stderr (stdout is for command output),
//! filtered by `RUST_LOG` (default `info`). Transcripts and phone numbers are
//! never logged at info level; see docs/operations.md.

pub fn init() {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,webrtc=warn,rtc=warn,whisper_rs=warn"));
    // The SIP stack logs whole messages at info, phone numbers included: it
    // speaks only when `RUST_LOG` names it.
    let sip_named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rsipstack"));
    if !sip_named && let Ok(quiet) = "rsipstack=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    let json = std::env::var("VOICECARE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
