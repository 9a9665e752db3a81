//! The organisation tree (city > county > street > community) and scopes.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::error::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitLevel {
    City,
    County,
    Street,
    Community,
}

impl UnitLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitLevel::City => "city",
            UnitLevel::County => "county",
            UnitLevel::Street => "street",
            UnitLevel::Community => "community",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "city" => UnitLevel::City,
            "county" => UnitLevel::County,
            "street" => UnitLevel::Street,
            "community" => UnitLevel::Community,
            _ => return None,
        })
    }
    /// Index into `org_units.path` of the ancestor at this level (1-based for SQL).
    pub fn path_index(self) -> i32 {
        self as i32 + 1
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrgUnit {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub level: String,
    pub name: String,
    pub path: Vec<i64>,
}

pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    parent_id: Option<i64>,
    level: UnitLevel,
    name: &str,
) -> Result<OrgUnit> {
    Ok(sqlx::query_as(
        "INSERT INTO org_units (parent_id, level, name) VALUES ($1, $2, $3)
         RETURNING id, parent_id, level, name, path",
    )
    .bind(parent_id)
    .bind(level.as_str())
    .bind(name)
    .fetch_one(db)
    .await?)
}

/// Find a unit by its slash-separated path of names, e.g. `Shanghai/Huangpu/Nanjing Rd/Hexing`.
pub async fn find_by_path<'e>(db: impl PgExecutor<'e>, names: &str) -> Result<Option<OrgUnit>> {
    let parts: Vec<&str> = names.split('/').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 4 {
        return Err(StoreError::invalid(
            "community",
            "expected a path like City/County/Street/Community",
        ));
    }
    Ok(sqlx::query_as(
        "WITH RECURSIVE walk AS (
             SELECT u.*, 1 AS depth FROM org_units u WHERE u.parent_id IS NULL AND u.name = $1[1]
             UNION ALL
             SELECT c.*, w.depth + 1 FROM org_units c JOIN walk w ON c.parent_id = w.id
             WHERE c.name = $1[w.depth + 1]
         )
         SELECT id, parent_id, level, name, path FROM walk WHERE depth = cardinality($1::text[])",
    )
    .bind(&parts)
    .fetch_optional(db)
    .await?)
}

/// Create (or find) every unit along a path of names, one per level from the city down.
pub async fn ensure_path(conn: &mut sqlx::PgConnection, names: &[&str]) -> Result<OrgUnit> {
    let mut parent: Option<OrgUnit> = None;
    for (i, name) in names.iter().enumerate() {
        let level = [
            UnitLevel::City,
            UnitLevel::County,
            UnitLevel::Street,
            UnitLevel::Community,
        ]
        .get(i)
        .copied()
        .ok_or_else(|| StoreError::invalid("unit", "at most four levels"))?;
        let existing: Option<OrgUnit> = sqlx::query_as(
            "SELECT id, parent_id, level, name, path FROM org_units
             WHERE parent_id IS NOT DISTINCT FROM $1 AND name = $2",
        )
        .bind(parent.as_ref().map(|p| p.id))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        parent = Some(match existing {
            Some(u) => u,
            None => create(&mut *conn, parent.as_ref().map(|p| p.id), level, name).await?,
        });
    }
    parent.ok_or_else(|| StoreError::invalid("unit", "empty path"))
}

/// The top of every tree (the cities), oldest first.
pub async fn roots<'e>(db: impl PgExecutor<'e>) -> Result<Vec<OrgUnit>> {
    Ok(sqlx::query_as(
        "SELECT id, parent_id, level, name, path FROM org_units WHERE parent_id IS NULL ORDER BY id",
    )
    .fetch_all(db)
    .await?)
}

pub async fn get<'e>(db: impl PgExecutor<'e>, id: i64) -> Result<OrgUnit> {
    sqlx::query_as("SELECT id, parent_id, level, name, path FROM org_units WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(StoreError::NotFound { entity: "unit", id })
}
