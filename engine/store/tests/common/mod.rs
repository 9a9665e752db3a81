#![allow(dead_code)]
//! Shared fixtures: a small city with two streets, elders, calls, operators.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use voicecare_store::operators::{self, NewOperator, Password, Role, Scope};
use voicecare_store::org::{self, UnitLevel};

pub struct City {
    pub city: i64,
    pub county: i64,
    pub street_a: i64,
    pub street_b: i64,
    pub community_a: i64,
    pub community_b: i64,
}

pub async fn city(pool: &PgPool) -> City {
    let city = org::create(pool, None, UnitLevel::City, "Riverside")
        .await
        .unwrap()
        .id;
    let county = org::create(pool, Some(city), UnitLevel::County, "North")
        .await
        .unwrap()
        .id;
    let street_a = org::create(pool, Some(county), UnitLevel::Street, "Elm Street")
        .await
        .unwrap()
        .id;
    let street_b = org::create(pool, Some(county), UnitLevel::Street, "Oak Street")
        .await
        .unwrap()
        .id;
    let community_a = org::create(pool, Some(street_a), UnitLevel::Community, "Elm Court")
        .await
        .unwrap()
        .id;
    let community_b = org::create(pool, Some(street_b), UnitLevel::Community, "Oak Court")
        .await
        .unwrap()
        .id;
    City {
        city,
        county,
        street_a,
        street_b,
        community_a,
        community_b,
    }
}

pub async fn operator(pool: &PgPool, name: &str, role: Role, unit: i64) -> Scope {
    let pw = Password::new("correct horse battery").unwrap();
    operators::add(
        pool,
        NewOperator {
            username: name,
            display_name: name,
            password: &pw,
            role,
            unit_id: unit,
        },
        Utc::now(),
    )
    .await
    .unwrap()
    .scope()
}

/// Insert `n` elders in a community, each with one call; returns the call ids.
pub async fn elders_with_calls(pool: &PgPool, community: i64, n: i64, tag: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "WITH el AS (
             INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
             SELECT 'Elder ' || $3 || g, 'dev-' || $3 || '-' || g, 'en', 'Asia/Shanghai', $1
             FROM generate_series(1, $2) g RETURNING id
         )
         INSERT INTO calls (elder_id, direction, purpose) SELECT id, 'outbound', 'checkin' FROM el RETURNING id",
    )
    .bind(community)
    .bind(n)
    .bind(tag)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Open one escalation per call directly (bulk seeding for load tests).
pub async fn seed_escalations(pool: &PgPool, calls: &[i64], level: &str, now: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO escalations (call_id, elder_id, level, created_at, sla_deadline)
         SELECT c.id, c.elder_id, $2, $3 - (random() * interval '10 minutes'), $3 + interval '1 hour'
         FROM calls c WHERE c.id = ANY($1)",
    )
    .bind(calls)
    .bind(level)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
}
