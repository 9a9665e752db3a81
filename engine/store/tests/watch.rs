//! The call carries its level (kept by a trigger on the assessments), and
//! the supervisors' watch list reads it, within their scope.

mod common;

use chrono::{Duration, Utc};
use voicecare_core::Level;
use voicecare_store::calls::{self, AssessmentRecord};
use voicecare_store::operators::Role;
use voicecare_store::reports;
use voicecare_store::testing::TestDb;

fn assessment(level: Level, category: &str) -> AssessmentRecord {
    AssessmentRecord {
        level,
        categories: vec![category.into()],
        reasons: serde_json::json!([{"category": category, "evidence": "words", "rule": "t"}]),
        score: 0.5,
    }
}

async fn level_of(pool: &sqlx::PgPool, call: i64) -> (Option<String>, serde_json::Value) {
    sqlx::query_as("SELECT level, level_reasons FROM calls WHERE id = $1")
        .bind(call)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_call_keeps_its_most_severe_level_and_the_watch_list_shows_it_in_scope() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let c = common::city(pool).await;
    let now = Utc::now();
    let a = common::elders_with_calls(pool, c.community_a, 3, "wa").await;
    let b = common::elders_with_calls(pool, c.community_b, 1, "wb").await;

    // A tired elder: ok, then watch; the watch stays when a later reply is ok.
    calls::insert_assessment(pool, a[0], None, &assessment(Level::Ok, "none"), now)
        .await
        .unwrap();
    assert_eq!(level_of(pool, a[0]).await.0.as_deref(), Some("ok"));
    calls::insert_assessment(pool, a[0], None, &assessment(Level::Watch, "fatigue"), now)
        .await
        .unwrap();
    calls::insert_assessment(pool, a[0], None, &assessment(Level::Ok, "none"), now)
        .await
        .unwrap();
    let (level, reasons) = level_of(pool, a[0]).await;
    assert_eq!(level.as_deref(), Some("watch"));
    assert_eq!(reasons[0]["category"], "fatigue");
    // Urgent over watch, with its own reasons.
    calls::insert_assessment(
        pool,
        a[1],
        None,
        &assessment(Level::Watch, "loneliness"),
        now,
    )
    .await
    .unwrap();
    calls::insert_assessment(
        pool,
        a[1],
        None,
        &assessment(Level::Urgent, "dizziness"),
        now,
    )
    .await
    .unwrap();
    assert_eq!(level_of(pool, a[1]).await.0.as_deref(), Some("urgent"));
    // Fine, and in the other street.
    calls::insert_assessment(pool, a[2], None, &assessment(Level::Ok, "none"), now)
        .await
        .unwrap();
    calls::insert_assessment(
        pool,
        b[0],
        None,
        &assessment(Level::Watch, "loneliness"),
        now,
    )
    .await
    .unwrap();

    let elm = common::operator(pool, "elm-sup", Role::Supervisor, c.street_a).await;
    let list = reports::watch_list(pool, &elm, now - Duration::days(14))
        .await
        .unwrap();
    let names: Vec<&str> = list.iter().map(|w| w.elder_name.as_str()).collect();
    assert_eq!(
        names,
        vec!["Elder wa2", "Elder wa1"],
        "urgent first, fine and other streets left out"
    );
    assert_eq!(list[0].recent_levels, vec!["urgent"]);
    assert_eq!(list[1].categories, vec!["fatigue"]);
    assert!(!format!("{list:?}").contains("Elder"), "Debug hides names");

    let city = common::operator(pool, "city-sup", Role::Supervisor, c.city).await;
    let all = reports::watch_list(pool, &city, now - Duration::days(14))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    // Outside the window nothing shows.
    let later = reports::watch_list(pool, &city, now + Duration::days(1))
        .await
        .unwrap();
    assert!(later.is_empty());
}
