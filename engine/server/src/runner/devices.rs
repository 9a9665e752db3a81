//! `voicecare devices set-token`: give an elder's device, or an emergency
//! contact's care app, its secret.

use std::io::Read;

use chrono::Utc;

use crate::config::DbArgs;

#[derive(Debug, clap::Subcommand)]
pub enum DevicesCmd {
    /// Set the token a device registers with. The token is read from
    /// VOICECARE_DEVICE_TOKEN, or else from standard input; only its SHA-256 is stored.
    SetToken {
        /// The device id enrolled for the elder (`elders.device_id`) or for one
        /// of their emergency contacts (`emergency_contacts.device_id`).
        #[arg(long)]
        device: String,
    },
}

pub async fn run(db_args: DbArgs, cmd: DevicesCmd) -> anyhow::Result<()> {
    let DevicesCmd::SetToken { device } = cmd;
    let token = match std::env::var("VOICECARE_DEVICE_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if token.len() < 16 {
        anyhow::bail!("a device token must be at least 16 characters");
    }
    let db = crate::db::open(&db_args, 2).await?;
    let hash = super::gateway::token_hash(&token);
    let elder =
        voicecare_store::dialer::set_device_token(&db.pool, &device, &hash, Utc::now()).await?;
    println!("device {device} of elder {elder}: token set");
    db.close().await?;
    Ok(())
}
