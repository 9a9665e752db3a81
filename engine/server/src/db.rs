//! Opening the database for a command, saying which one is used.

use voicecare_store::{Database, DbSource};

use crate::config::DbArgs;

pub async fn open(args: &DbArgs, max_connections: u32) -> anyhow::Result<Database> {
    let source = args.source();
    match &source {
        DbSource::Url(url) => {
            tracing::info!(server = %redact_url(url), "using PostgreSQL from DATABASE_URL")
        }
        DbSource::Embedded(dir) => tracing::info!(
            dir = %dir.display(),
            "DATABASE_URL is not set: starting the embedded PostgreSQL cluster"
        ),
    }
    let db = Database::open(&source, max_connections).await?;
    if db.is_embedded() {
        tracing::info!(url = %db.url, "embedded PostgreSQL is ready (psql \"{}\")", db.url);
    }
    Ok(db)
}

/// The URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => "<unparseable DATABASE_URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            super::redact_url("postgres://vc:s3cret@db:5432/voicecare"),
            "postgres://vc@db:5432/voicecare"
        );
        assert_eq!(
            super::redact_url("postgres://db/voicecare"),
            "postgres://db/voicecare"
        );
    }
}
