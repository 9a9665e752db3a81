//! `voicecare phone`: be an elder's device. With `--sim SCRIPT` a scripted
//! simulated elder (tests, demos, load); without it, a person on the
//! microphone and speaker.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{LegConfig, SimPhone, SimScript};

#[derive(Args)]
pub struct PhoneArgs {
    /// The engine's device signalling endpoint.
    #[arg(
        long,
        env = "VOICECARE_SERVER",
        default_value = "ws://127.0.0.1:8080/v1/devices/ws"
    )]
    pub server: String,
    /// Device id to register as.
    #[arg(long, env = "VOICECARE_DEVICE_ID")]
    pub device: String,
    /// Device token; prefer the environment variable to keep it out of shell history.
    #[arg(long, env = "VOICECARE_DEVICE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Run a scripted simulated elder (TOML script, see the telephony crate's `sim` module).
    #[arg(long, value_name = "SCRIPT")]
    pub sim: Option<PathBuf>,
    /// Calls to handle before exiting; 0 keeps going.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// Local UDP address(es) for media. 0.0.0.0 skips loopback: name
    /// 127.0.0.1:0 when the engine runs on the same host.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub bind: Vec<SocketAddr>,
    /// Call the engine (like pressing the help button) instead of waiting to be rung.
    #[arg(long)]
    pub call: bool,
}

impl std::fmt::Debug for PhoneArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneArgs")
            .field("server", &self.server)
            .field("device", &self.device)
            .field("token", &"<redacted>")
            .field("sim", &self.sim)
            .field("calls", &self.calls)
            .field("bind", &self.bind)
            .field("call", &self.call)
            .finish()
    }
}

pub fn run(args: PhoneArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match &args.sim {
            Some(path) => run_sim(&args, path).await,
            None => run_person(&args).await,
        }
    })
}

fn client_config(args: &PhoneArgs) -> ClientConfig {
    let mut c = ClientConfig::new(
        &args.server,
        &args.device,
        DeviceToken::new(args.token.clone()),
    );
    c.leg = LegConfig {
        bind: args.bind.clone(),
        ..LegConfig::default()
    };
    c
}

async fn run_sim(args: &PhoneArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let mut script = SimScript::load(path)?;
    if args.call {
        script.call_in = true;
    }
    let mut phone = SimPhone::connect(client_config(args), script)
        .await
        .context("registering with the engine")?;
    eprintln!("registered as {}; waiting for calls", phone.device_id());
    let mut handled = 0u32;
    while args.calls == 0 || handled < args.calls {
        let report = phone.run_call().await?;
        handled += 1;
        // One JSON line per call, for scripts and demos.
        let line = serde_json::json!({
            "call": handled,
            "answered": report.answered,
            "ended": report.ended,
            "ring_ended": report.ring_ended,
            "prompts_heard": report.prompts_heard,
            "digits_heard": report.digits_heard,
            "heard_seconds": report.heard.len() as f64 / 16_000.0,
        });
        println!("{line}");
    }
    Ok(())
}

async fn run_person(args: &PhoneArgs) -> anyhow::Result<()> {
    voicecare_telephony::device::run_person_phone(client_config(args), args.call)
        .await
        .map_err(anyhow::Error::from)
}
