//! `voicecare flow check FILES`: validate IVR flow files before they are deployed.

use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use voicecare_core::flow::parse_flow;

#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Parse and check flow files (or every `*.toml` in the given folders).
    /// Errors are printed as `file:line:col: message`; exits non-zero on any error.
    Check {
        /// Flow files or folders of flow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(cmd: FlowCmd) -> anyhow::Result<()> {
    match cmd {
        FlowCmd::Check { files } => check(&files),
    }
}

fn check(inputs: &[PathBuf]) -> anyhow::Result<()> {
    let files = expand(inputs)?;
    let mut broken = 0usize;
    for path in &files {
        let shown = path.display().to_string();
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                broken += 1;
                continue;
            }
        };
        match parse_flow(&shown, &source) {
            Ok(flow) => println!("ok {shown}: flow {:?}, {} steps", flow.id, flow.steps.len()),
            Err(errors) => {
                broken += 1;
                for d in &errors.0 {
                    eprintln!("{d}");
                }
            }
        }
    }
    if broken > 0 {
        // The diagnostics above are the report; exit without an error chain.
        eprintln!("{broken} of {} flow files have errors", files.len());
        std::process::exit(1);
    }
    Ok(())
}

/// Files as given; folders contribute their `*.toml` files in name order.
fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            out.extend(toml_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn toml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    Ok(v)
}
