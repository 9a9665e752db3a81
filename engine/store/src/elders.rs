//! Elders: who we call, how, when, and whom to call if they do not answer.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use voicecare_core::redact::{Personal, redacted_opt};

use crate::audit::{self, Actor, NewEvent};
use crate::error::{Result, StoreError};
use crate::operators::Scope;

/// A phone number in E.164 form. Its `Debug` hides all but the last two digits
/// so numbers never reach the logs. Read from the database as it is: the
/// column's CHECK holds the same rule as [`Phone::parse`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let cleaned: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = cleaned
            .strip_prefix('+')
            .ok_or("must start with + and a country code (E.164)")?;
        if !(7..=15).contains(&digits.len())
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err("must be + followed by 7–15 digits (E.164)".into());
        }
        Ok(Phone(cleaned))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = &self.0[self.0.len().saturating_sub(2)..];
        write!(f, "Phone(…{tail})")
    }
}

/// A validated IANA time zone name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        raw.trim()
            .parse::<chrono_tz::Tz>()
            .map(|tz| TimeZoneName(tz.name().to_string()))
            .map_err(|_| {
                format!("unknown time zone {raw:?} (expected an IANA name such as Asia/Shanghai)")
            })
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Serialize)]
pub struct Contact {
    pub name: String,
    pub relation: Option<String>,
    pub phone: Phone,
    /// The contact's care-app device (`voicecare devices set-token` gives it a token).
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub window_start: NaiveTime,
    pub window_end: NaiveTime,
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub days_of_week: i16,
    pub max_attempts: i16,
    pub retry_minutes: i16,
}

/// An elder ready to be stored: every field already validated.
#[derive(Clone)]
pub struct NewElder {
    pub external_ref: Option<String>,
    pub full_name: String,
    pub birth_date: Option<NaiveDate>,
    pub address: Option<String>,
    pub phone: Option<Phone>,
    pub device_id: Option<String>,
    pub language: String,
    pub time_zone: TimeZoneName,
    pub community_id: i64,
    pub notes: Option<String>,
    pub contacts: Vec<Contact>,
    pub schedule: Option<Schedule>,
}

// Hand-written `Debug` for records holding personal data: names, phone
// numbers, birth dates, addresses and notes print as redacted, so a record
// in a log line or a panic message shows its shape and nothing else.

impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("name", &Personal::new(()))
            .field("relation", &self.relation)
            .field("phone", &self.phone)
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl std::fmt::Debug for NewElder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewElder")
            .field("external_ref", &self.external_ref)
            .field("full_name", &Personal::new(()))
            .field("birth_date", &redacted_opt(&self.birth_date))
            .field("address", &redacted_opt(&self.address))
            .field("phone", &self.phone)
            .field("device_id", &self.device_id)
            .field("language", &self.language)
            .field("time_zone", &self.time_zone)
            .field("community_id", &self.community_id)
            .field("notes", &redacted_opt(&self.notes))
            .field("contacts", &self.contacts)
            .field("schedule", &self.schedule)
            .finish()
    }
}

impl std::fmt::Debug for ElderView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElderView")
            .field("id", &self.id)
            .field("external_ref", &self.external_ref)
            .field("full_name", &Personal::new(()))
            .field("birth_date", &redacted_opt(&self.birth_date))
            .field("age", &redacted_opt(&self.age))
            .field("address", &redacted_opt(&self.address))
            .field("phone", &redacted_opt(&self.phone))
            .field("device_id", &self.device_id)
            .field("language", &self.language)
            .field("time_zone", &self.time_zone)
            .field("community_id", &self.community_id)
            .field("community", &self.community)
            .field("notes", &redacted_opt(&self.notes))
            .field("contacts", &Personal::new(()))
            .finish()
    }
}

pub async fn insert(conn: &mut PgConnection, e: &NewElder, now: DateTime<Utc>) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO elders (external_ref, full_name, birth_date, address, phone, device_id, language, time_zone, community_id, notes, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&e.external_ref)
    .bind(&e.full_name)
    .bind(e.birth_date)
    .bind(&e.address)
    .bind(e.phone.as_ref().map(Phone::as_str))
    .bind(&e.device_id)
    .bind(&e.language)
    .bind(e.time_zone.as_str())
    .bind(e.community_id)
    .bind(&e.notes)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(|err| match StoreError::from(err) {
        StoreError::Constraint { constraint, .. } if constraint == "elders_phone_key" => {
            StoreError::Conflict("phone: another elder already has this phone number".into())
        }
        StoreError::Constraint { constraint, .. } if constraint == "elders_device_id_key" => {
            StoreError::Conflict("device_id: another elder already has this device".into())
        }
        StoreError::Constraint { constraint, .. } if constraint == "elders_external_ref_key" => {
            StoreError::Conflict("external_ref: already enrolled".into())
        }
        other => other,
    })?;
    for (i, c) in e.contacts.iter().enumerate() {
        sqlx::query("INSERT INTO emergency_contacts (elder_id, position, name, relation, phone, device_id) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind((i + 1) as i16)
            .bind(&c.name)
            .bind(&c.relation)
            .bind(c.phone.as_str())
            .bind(&c.device_id)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(s) = &e.schedule {
        sqlx::query(
            "INSERT INTO checkin_schedules (elder_id, window_start, window_end, days_of_week, max_attempts, retry_minutes)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(s.window_start)
        .bind(s.window_end)
        .bind(s.days_of_week)
        .bind(s.max_attempts)
        .bind(s.retry_minutes)
        .execute(&mut *conn)
        .await?;
    }
    audit::record(
        &mut *conn,
        now,
        NewEvent {
            actor: Actor::System,
            action: "elder.enrol",
            entity: "elder",
            entity_id: Some(id),
            elder_id: Some(id),
            details: serde_json::json!({"community_id": e.community_id}),
        },
    )
    .await?;
    Ok(id)
}

/// An elder's record as an operator sees it.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct ElderView {
    pub id: i64,
    pub external_ref: Option<String>,
    pub full_name: String,
    pub birth_date: Option<NaiveDate>,
    pub age: Option<i32>,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub device_id: Option<String>,
    pub language: String,
    pub time_zone: String,
    pub community_id: i64,
    pub community: String,
    pub notes: Option<String>,
    pub contacts: serde_json::Value,
}

const ELDER_VIEW: &str = "SELECT el.id, el.external_ref, el.full_name, el.birth_date,
        EXTRACT(YEAR FROM age($2::timestamptz, el.birth_date::timestamptz))::int AS age,
        el.address, el.phone, el.device_id, el.language, el.time_zone, el.community_id, u.name AS community, el.notes,
        COALESCE((SELECT jsonb_agg(jsonb_build_object('position', c.position, 'name', c.name, 'relation', c.relation, 'phone', c.phone) ORDER BY c.position)
                  FROM emergency_contacts c WHERE c.elder_id = el.id), '[]'::jsonb) AS contacts
     FROM elders el JOIN org_units u ON u.id = el.community_id";

/// Read one elder in scope; the read is audited (it is health-adjacent data).
pub async fn view(
    pool: &PgPool,
    scope: &Scope,
    id: i64,
    purpose: &str,
    now: DateTime<Utc>,
) -> Result<ElderView> {
    let mut tx = pool.begin().await?;
    let e: Option<ElderView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ELDER_VIEW} WHERE el.id = $3 AND $1::bigint = ANY(u.path)"
    )))
    .bind(scope.unit_id)
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let e = e.ok_or(StoreError::NotFound {
        entity: "elder",
        id,
    })?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "elder.view",
            entity: "elder",
            entity_id: Some(id),
            elder_id: Some(id),
            details: serde_json::json!({"purpose": purpose}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(e)
}

/// Search elders in scope by name, reference or phone; audited with the query's shape, not its text.
pub async fn search(
    pool: &PgPool,
    scope: &Scope,
    query: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ElderView>> {
    let q = query.trim();
    if q.chars().count() < 2 || q.chars().count() > 100 {
        return Err(StoreError::invalid("q", "search for 2–100 characters"));
    }
    let mut tx = pool.begin().await?;
    let rows: Vec<ElderView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ELDER_VIEW} WHERE $1::bigint = ANY(u.path)
           AND (el.full_name ILIKE '%' || $3 || '%' OR el.external_ref = $3 OR el.phone = $3)
         ORDER BY el.full_name LIMIT 50"
    )))
    .bind(scope.unit_id)
    .bind(now)
    .bind(q)
    .fetch_all(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor: Actor::Operator(scope.operator_id),
            action: "elder.search",
            entity: "elder",
            entity_id: None,
            elder_id: None,
            details: serde_json::json!({"results": rows.iter().map(|r| r.id).collect::<Vec<_>>()}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// An elder whose telephone number an administrator must correct: the
/// network said it does not exist. `Debug` prints the name as redacted.
#[derive(Clone, Serialize, sqlx::FromRow)]
pub struct NumberToFix {
    pub task_id: i64,
    pub elder_id: i64,
    pub external_ref: Option<String>,
    pub full_name: String,
    pub community: String,
    /// The attempt outcome that raised it (`invalid_number`).
    pub outcome: String,
    /// Attempts that failed this way since the task was opened.
    pub occurrences: i32,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl std::fmt::Debug for NumberToFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumberToFix")
            .field("task_id", &self.task_id)
            .field("elder_id", &self.elder_id)
            .field("full_name", &voicecare_core::redact::Personal::new(()))
            .field("community", &self.community)
            .field("outcome", &self.outcome)
            .field("occurrences", &self.occurrences)
            .finish()
    }
}

/// The open `fix_phone` tasks of elders under `unit_id`, oldest first; the
/// read is audited like any read of elders' records.
pub async fn numbers_to_fix(
    pool: &PgPool,
    actor: Actor,
    unit_id: i64,
    now: DateTime<Utc>,
) -> Result<Vec<NumberToFix>> {
    let mut tx = pool.begin().await?;
    let rows: Vec<NumberToFix> = sqlx::query_as(
        "SELECT t.id AS task_id, el.id AS elder_id, el.external_ref, el.full_name, u.name AS community,
                t.outcome, t.occurrences, t.created_at, t.last_seen_at
         FROM enrolment_tasks t JOIN elders el ON el.id = t.elder_id JOIN org_units u ON u.id = el.community_id
         WHERE t.kind = 'fix_phone' AND t.resolved_at IS NULL AND el.active AND $1::bigint = ANY(u.path)
         ORDER BY t.created_at, t.id LIMIT 1000",
    )
    .bind(unit_id)
    .fetch_all(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor,
            action: "elder.numbers_to_fix",
            entity: "elder",
            entity_id: None,
            elder_id: None,
            details: serde_json::json!({
                "unit_id": unit_id,
                "results": rows.iter().map(|r| r.elder_id).collect::<Vec<_>>(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Correct an elder's telephone number; the open `fix_phone` task closes
/// with it (a database trigger, with its own audit event). The number stays
/// out of the audit details.
pub async fn set_phone(
    pool: &PgPool,
    actor: Actor,
    elder_id: i64,
    phone: &Phone,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let found: Option<i64> =
        sqlx::query_scalar("UPDATE elders SET phone = $2 WHERE id = $1 RETURNING id")
            .bind(elder_id)
            .bind(phone.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    found.ok_or(StoreError::NotFound {
        entity: "elder",
        id: elder_id,
    })?;
    audit::record(
        &mut *tx,
        now,
        NewEvent {
            actor,
            action: "elder.set_phone",
            entity: "elder",
            entity_id: Some(elder_id),
            elder_id: Some(elder_id),
            details: serde_json::json!({"field": "phone"}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
