use clap::{Parser, Subcommand};
#[cfg(feature = "bench")]
use voicecare_server::bench;
use voicecare_server::cmd;

/// voicecare: a self-hosted voice-care call-centre engine.
#[derive(Debug, Parser)]
#[command(name = "voicecare", version, about)]
struct Cli {
    #[command(flatten)]
    db: voicecare_server::config::DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: operator API, live events, maintenance loops.
    Serve(voicecare_server::config::ServeArgs),
    /// See the whole product work: simulated elders called by the real engine, a summary and a report.
    Demo(cmd::demo::DemoArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage operators.
    Operator {
        #[command(subcommand)]
        cmd: cmd::admin::OperatorCmd,
    },
    /// Manage the organisation tree (city / county / street / community).
    Units {
        #[command(subcommand)]
        cmd: cmd::admin::UnitsCmd,
    },
    /// Enrol elders.
    Elders {
        #[command(subcommand)]
        cmd: cmd::admin::EldersCmd,
    },
    /// Elders' devices: set the token a device registers with.
    Devices {
        #[command(subcommand)]
        cmd: voicecare_server::runner::devices::DevicesCmd,
    },
    /// Inspect the escalation queue.
    Queue {
        #[command(subcommand)]
        cmd: cmd::admin::QueueCmd,
    },
    /// Classify what elders said: JSON lines in, assessments out; or evaluate on a labelled set.
    Distress(cmd::distress::DistressArgs),
    /// Carrier announcements and answering machines: classify a transcript, or measure on fixtures.
    Carrier(cmd::carrier::CarrierArgs),
    /// Whisper models: install into the cache, convert CTranslate2 weights, verify.
    Model(cmd::model::ModelArgs),
    /// Transcribe audio files offline with whisper (WAV, FLAC, raw G.711).
    Transcribe(cmd::transcribe::TranscribeArgs),
    /// Benchmarks.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        which: bench::BenchCmd,
    },
    /// Be an elder's phone: a scripted simulated device (--sim), or you on the sound card or WAV files, over WebRTC or SIP (--sip-call, --sip-answer).
    Phone(cmd::phone::PhoneArgs),
    /// IVR flow files: check them before deploying.
    Flow {
        #[command(subcommand)]
        cmd: cmd::flow::FlowCmd,
    },
}

fn main() -> anyhow::Result<()> {
    // Flags left unset on the command line and in the environment come from
    // the `--config` file, if any.
    let cli: Cli = voicecare_server::config_file::parse()?;
    voicecare_server::telemetry::init();
    let db = cli.db.resolve()?;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("start the async runtime")
    };
    match cli.command {
        Command::Serve(args) => rt().block_on(cmd::serve::run(db, args)),
        Command::Demo(args) => rt().block_on(cmd::demo::run(db, args)),
        Command::Migrate => rt().block_on(cmd::admin::migrate(db)),
        Command::Operator { cmd } => rt().block_on(cmd::admin::operator(db, cmd)),
        Command::Units { cmd } => rt().block_on(cmd::admin::units(db, cmd)),
        Command::Elders { cmd } => rt().block_on(cmd::admin::elders(db, cmd)),
        Command::Devices { cmd } => rt().block_on(voicecare_server::runner::devices::run(db, cmd)),
        Command::Queue { cmd } => rt().block_on(cmd::admin::queue(db, cmd)),
        Command::Distress(args) => cmd::distress::run(args),
        Command::Carrier(args) => cmd::carrier::run(args),
        Command::Model(args) => cmd::model::run(args),
        Command::Transcribe(args) => cmd::transcribe::run(args),
        #[cfg(feature = "bench")]
        Command::Bench { which } => match which {
            bench::BenchCmd::Asr(args) => bench::asr::run(args),
            bench::BenchCmd::Queue(args) => rt().block_on(bench::queue::run(args)),
            bench::BenchCmd::Capacity(args) => rt().block_on(bench::capacity::run(db, args)),
            bench::BenchCmd::Consoles(args) => rt().block_on(bench::consoles::run(db, args)),
            bench::BenchCmd::Calls(args) => rt().block_on(bench::calls::run(args)),
            bench::BenchCmd::Flow(args) => bench::flow::run(args),
            bench::BenchCmd::Sip(args) => rt().block_on(bench::sip::run(args)),
        },
        Command::Phone(args) => cmd::phone::run(args),
        Command::Flow { cmd } => cmd::flow::run(cmd),
    }
}
