//! Store errors. Messages name the field or rule at fault but never echo
//! personal data (names, phone numbers, transcripts).

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: i64 },
    /// The row exists but the caller's organisational unit does not cover it.
    /// Reported as not-found to the API so other units' items cannot be probed.
    #[error("{entity} {id} is outside your unit")]
    OutOfScope { entity: &'static str, id: i64 },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database constraint {constraint} rejected the change: {message}")]
    Constraint { constraint: String, message: String },
    #[error(transparent)]
    Embedded(#[from] crate::embedded::EmbeddedError),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(c) = db.constraint()
        {
            return StoreError::Constraint {
                constraint: c.to_string(),
                message: db.message().to_string(),
            };
        }
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("23514")
        {
            // check_violation raised by a trigger: the message is ours and safe.
            return StoreError::Constraint {
                constraint: "trigger".into(),
                message: db.message().to_string(),
            };
        }
        StoreError::Sql(e)
    }
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
