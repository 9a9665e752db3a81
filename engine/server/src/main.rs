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
        Command::Flow { cmd } => cmd::flow::run(cmd),
    }
}
