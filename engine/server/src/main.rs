use clap::{Parser, Subcommand};
use voicecare_server::cmd;

/// voicecare: a self-hosted voice-care call-centre engine.
#[derive(Debug, Parser)]
#[command(name = "voicecare", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify what elders said: JSON lines in, assessments out; or evaluate on a labelled set.
    Distress(cmd::distress::DistressArgs),
    /// Whisper models: install into the cache, convert CTranslate2 weights, verify.
    Model(cmd::model::ModelArgs),
    /// Transcribe audio files offline with whisper (WAV, FLAC, raw G.711).
    Transcribe(cmd::transcribe::TranscribeArgs),
    /// Be an elder's device: a scripted simulated phone (--sim), or you on the sound card.
    Phone(cmd::phone::PhoneArgs),
    /// IVR flow files: check them before deploying.
    Flow {
        #[command(subcommand)]
        cmd: cmd::flow::FlowCmd,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Distress(args) => cmd::distress::run(args),
        Command::Model(args) => cmd::model::run(args),
        Command::Transcribe(args) => cmd::transcribe::run(args),
        Command::Phone(args) => cmd::phone::run(args),
        Command::Flow { cmd } => cmd::flow::run(cmd),
    }
}
