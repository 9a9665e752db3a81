//! `voicecare distress`: run the distress classifier over JSON lines or an evaluation set.

use clap::Args;

#[derive(Debug, Args)]
pub struct DistressArgs {
    /// Read `{"id","lang","text"}` JSON lines on stdin, write one assessment per line.
    #[arg(long)]
    pub jsonl: bool,
}

pub fn run(_args: DistressArgs) -> anyhow::Result<()> {
    anyhow::bail!("the distress classifier is not built into this binary yet")
}
