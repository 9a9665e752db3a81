//! Operators, their passwords (argon2id) and their sessions.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

use crate::audit::{self, Actor, NewEvent};
use crate::error::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "operator" => Role::Operator,
            "supervisor" => Role::Supervisor,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// What an authenticated operator may see: everything under `unit_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub operator_id: i64,
    pub unit_id: i64,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Operator {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    pub role: RoleText,
    pub unit_id: i64,
    pub active: bool,
}

/// `Role` as stored; a separate type so `FromRow` can parse the text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RoleText(pub Role);

impl TryFrom<String> for RoleText {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Role::parse(&s)
            .map(RoleText)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

impl Operator {
    pub fn scope(&self) -> Scope {
        Scope {
            operator_id: self.id,
            unit_id: self.unit_id,
            role: self.role.0,
        }
    }
}

/// A password that is never printed.
pub struct Password(String);
impl Password {
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.chars().count() < 10 {
            return Err(StoreError::invalid(
                "password",
                "must be at least 10 characters",
            ));
        }
        if s.len() > 1024 {
            return Err(StoreError::invalid(
                "password",
                "must be at most 1024 bytes",
            ));
        }
        Ok(Password(s))
    }
}
impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

pub fn hash_password(password: &Password) -> String {
    let salt =
        SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.0.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

pub struct NewOperator<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password: &'a Password,
    pub role: Role,
    pub unit_id: i64,
}

pub async fn add(pool: &PgPool, new: NewOperator<'_>, now: DateTime<Utc>) -> Result<Operator> {
    let hash = hash_password(new.password);
    let mut tx = pool.begin().await?;
    let op: Operator = sqlx::query_as(
        "INSERT INTO operators (username, display_name, password_hash, role, unit_id)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, username, display_name, role, unit_id, active",
    )
    .bind(new.username)
    .bind(new.display_name)
    .bind(&hash)
    .bind(new.role.as_str())
    .bind(new.unit_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Constraint { constraint, .. } if constraint == "operators_username_key" => {
            StoreError::Conflict(format!("username {:?} is taken", new.username))
        }
        StoreError::Constraint { constraint, .. } if constraint == "operators_username_check" => {
            StoreError::invalid(
                "username",
                "2–64 characters of a-z, 0-9, dot, dash, underscore",
            )
        }
        other => other,
    })?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::System,
            action: "operator.create",
            entity: "operator",
            entity_id: Some(op.id),
            elder_id: None,
            details: serde_json::json!({"username": op.username, "role": new.role.as_str(), "unit_id": new.unit_id}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(op)
}

/// Check a username and password. `None` for any failure: unknown user,
/// wrong password or disabled account look the same from outside.
pub async fn authenticate(
    pool: &PgPool,
    username: &str,
    password: &str,
) -> Result<Option<Operator>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        op: Operator,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, username, display_name, role, unit_id, active, password_hash
         FROM operators WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    // Verify against a fixed dummy hash for unknown users so timing does not
    // reveal which usernames exist.
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password(&Password("not-a-real-password".into())));
    let hash = row
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| DUMMY.clone());
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    Ok(match row {
        Some(r) if ok && r.op.active => Some(r.op),
        _ => None,
    })
}

/// A new session's secrets, returned once to the client.
pub struct NewSession {
    pub token: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub async fn create_session(
    pool: &PgPool,
    operator: &Operator,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<NewSession> {
    let token = random_token();
    let csrf_token = random_token();
    let expires_at = now + ttl;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sessions (token_hash, operator_id, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash(&token))
    .bind(operator.id)
    .bind(&csrf_token)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Operator(operator.id),
            action: "session.login",
            entity: "session",
            entity_id: None,
            elder_id: None,
            details: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(NewSession {
        token,
        csrf_token,
        expires_at,
    })
}

/// The operator behind a live session, with the session's CSRF token.
pub async fn session_operator<'e>(
    db: impl PgExecutor<'e>,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<(Operator, String, DateTime<Utc>)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        op: Operator,
        csrf_token: String,
        expires_at: DateTime<Utc>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT o.id, o.username, o.display_name, o.role, o.unit_id, o.active, s.csrf_token, s.expires_at
         FROM sessions s JOIN operators o ON o.id = s.operator_id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND o.active",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.op, r.csrf_token, r.expires_at)))
}

pub async fn revoke_session(pool: &PgPool, token: &str, now: DateTime<Utc>) -> Result<()> {
    let mut tx = pool.begin().await?;
    let op: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL RETURNING operator_id",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(op) = op {
        audit::record(
            &mut *tx,
            now,
            NewEvent {
                actor: Actor::Operator(op),
                action: "session.logout",
                entity: "session",
                entity_id: None,
                elder_id: None,
                details: serde_json::json!({}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Operator> {
    sqlx::query_as(
        "SELECT id, username, display_name, role, unit_id, active FROM operators WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound {
        entity: "operator",
        id,
    })
}
