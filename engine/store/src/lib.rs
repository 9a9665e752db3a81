//! The only voicecare crate that speaks SQL.
//!
//! Repositories for elders, calls, operators and the escalation queue; the
//! LISTEN/NOTIFY feed; and the embedded PostgreSQL launcher used when no
//! `DATABASE_URL` is configured. Every state change writes its audit event in
//! the same transaction (usually the same statement).

pub mod audit;
// Bulk fixtures without audit events: only for throwaway benchmark databases.
#[cfg(feature = "testing")]
pub mod bench;
pub mod calls;
pub mod cohort;
pub mod concerns;
pub mod db;
pub mod dialer;
pub mod elders;
pub mod embedded;
pub mod error;
pub mod import;
pub mod notify;
pub mod operators;
pub mod org;
pub mod queue;
pub mod reports;
pub mod talks;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Database, DbSource};
pub use error::StoreError;
pub use sqlx::PgPool;
