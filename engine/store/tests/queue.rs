//! The escalation queue against a real PostgreSQL: concurrency, leases,
//! guarded completion, one open item per call, organisational scope.

mod common;

use std::collections::HashSet;

use chrono::{Duration, Utc};
use voicecare_core::Level;
use voicecare_store::StoreError;
use voicecare_store::operators::Role;
use voicecare_store::queue::{self, Flag, ListFilter, Outcome, SlaPolicy};
use voicecare_store::testing::TestDb;

/// PostgreSQL keeps microseconds; compare like with like.
fn now() -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

fn flag(call_id: i64, level: Level, category: &str) -> Flag {
    Flag {
        call_id,
        level,
        categories: vec![category.into()],
        reasons: serde_json::json!([{"category": category, "evidence": "test", "rule": "test"}]),
        elder_on_line: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_over_ten_thousand_items_claim_each_exactly_once() {
    let db = TestDb::with_pool_size(16).await;
    let c = common::city(&db.pool).await;
    let now = now();
    let calls = common::elders_with_calls(&db.pool, c.community_a, 10_000, "q").await;
    common::seed_escalations(&db.pool, &calls, "urgent", now).await;

    let mut handles = Vec::new();
    for i in 0..8 {
        let pool = db.pool.clone();
        let scope = common::operator(&db.pool, &format!("op{i}"), Role::Operator, c.street_a).await;
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(e) = queue::claim_next(&pool, &scope, &[], Duration::minutes(5), now)
                .await
                .unwrap()
            {
                mine.push(e.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 10_000, "every item claimed once, none lost");
    assert_eq!(unique.len(), 10_000, "no item claimed twice");
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'escalation.claim'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(claims, 10_000, "one audit event per claim");
}

#[tokio::test]
async fn queue_orders_by_level_then_age() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let op = common::operator(&db.pool, "ann", Role::Operator, c.street_a).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 3, "o").await;
    let sla = SlaPolicy::default();
    let t0 = now();
    let watch = queue::flag(
        &db.pool,
        &flag(calls[0], Level::Watch, "loneliness"),
        &sla,
        t0,
    )
    .await
    .unwrap();
    let urgent = queue::flag(
        &db.pool,
        &flag(calls[1], Level::Urgent, "dizziness"),
        &sla,
        t0 + Duration::seconds(1),
    )
    .await
    .unwrap();
    let emerg = queue::flag(
        &db.pool,
        &flag(calls[2], Level::Emergency, "fall"),
        &sla,
        t0 + Duration::seconds(2),
    )
    .await
    .unwrap();
    let items = queue::list(
        &db.pool,
        &op,
        &ListFilter::default(),
        t0 + Duration::seconds(3),
    )
    .await
    .unwrap();
    let ids: Vec<i64> = items.iter().map(|i| i.escalation.id).collect();
    assert_eq!(ids, vec![emerg.id, urgent.id, watch.id]);
    assert_eq!(
        emerg.sla_deadline,
        t0 + Duration::seconds(2) + Duration::seconds(60)
    );
    // The emergency breaches its 60 s SLA if nobody claims it.
    let later = queue::list(
        &db.pool,
        &op,
        &ListFilter::default(),
        t0 + Duration::seconds(90),
    )
    .await
    .unwrap();
    assert!(later[0].breached && !later[1].breached);
    let next = queue::claim_next(&db.pool, &op, &[], Duration::seconds(30), t0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, emerg.id);
}

#[tokio::test]
async fn expired_lease_returns_item_with_its_age_and_late_resolve_is_refused() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let ann = common::operator(&db.pool, "ann", Role::Operator, c.street_a).await;
    let bob = common::operator(&db.pool, "bob", Role::Operator, c.street_a).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "l").await;
    let t0 = now();
    let e = queue::flag(
        &db.pool,
        &flag(calls[0], Level::Urgent, "fever"),
        &SlaPolicy::default(),
        t0,
    )
    .await
    .unwrap();

    let claimed = queue::claim(&db.pool, &ann, e.id, Duration::seconds(30), t0)
        .await
        .unwrap();
    assert_eq!(claimed.status, "claimed");
    // Renewal inside the lease works and extends it.
    let renewed = queue::renew(
        &db.pool,
        &ann,
        e.id,
        Duration::seconds(30),
        t0 + Duration::seconds(20),
    )
    .await
    .unwrap();
    assert_eq!(renewed.lease_expires_at, Some(t0 + Duration::seconds(50)));
    // Bob cannot take it while Ann holds it, and is told who holds it.
    let err = queue::claim(
        &db.pool,
        &bob,
        e.id,
        Duration::seconds(30),
        t0 + Duration::seconds(21),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("held by ann")),
        "{err}"
    );

    // Ann vanishes; the rescuer puts the item back with its original age.
    let t1 = t0 + Duration::seconds(51);
    assert_eq!(queue::rescue_expired(&db.pool, t1).await.unwrap(), 1);
    let items = queue::list(&db.pool, &bob, &ListFilter::default(), t1)
        .await
        .unwrap();
    assert_eq!(items[0].escalation.status, "open");
    assert_eq!(items[0].escalation.created_at, e.created_at);
    assert_eq!(
        items[0].escalation.first_claimed_at,
        Some(t0),
        "SLA keeps the first claim time"
    );

    // Ann comes back and tries to resolve: refused, nothing applied.
    let late = queue::resolve(&db.pool, &ann, e.id, Outcome::NoAction, "", t1)
        .await
        .unwrap_err();
    assert!(matches!(late, StoreError::Conflict(_)), "{late}");
    let still = queue::get(&db.pool, &ann, e.id).await.unwrap();
    assert_eq!(still.status, "open");
    assert!(still.outcome.is_none());

    // Bob claims and resolves properly; it leaves the open queue but is never deleted.
    queue::claim(&db.pool, &bob, e.id, Duration::seconds(30), t1)
        .await
        .unwrap();
    let done = queue::resolve(
        &db.pool,
        &bob,
        e.id,
        Outcome::CalledBack,
        "spoke to her, fine",
        t1 + Duration::seconds(5),
    )
    .await
    .unwrap();
    assert_eq!(done.outcome.as_deref(), Some("called_back"));
    assert!(
        queue::list(&db.pool, &bob, &ListFilter::default(), t1)
            .await
            .unwrap()
            .is_empty()
    );
    let del = sqlx::query("DELETE FROM escalations WHERE id = $1")
        .bind(e.id)
        .execute(&db.pool)
        .await;
    assert!(del.is_err(), "escalations are never deleted");

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE entity = 'escalation' AND entity_id = $1 ORDER BY id",
    )
    .bind(e.id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "escalation.open",
            "escalation.claim",
            "escalation.lease_expired",
            "escalation.claim",
            "escalation.resolve"
        ]
    );
}

#[tokio::test]
async fn release_note_and_supervisor_reopen() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let ann = common::operator(&db.pool, "ann", Role::Operator, c.street_a).await;
    let sup = common::operator(&db.pool, "sue", Role::Supervisor, c.county).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "r").await;
    let t = now();
    let e = queue::flag(
        &db.pool,
        &flag(calls[0], Level::Watch, "sleep"),
        &SlaPolicy::default(),
        t,
    )
    .await
    .unwrap();
    queue::claim(&db.pool, &ann, e.id, Duration::seconds(60), t)
        .await
        .unwrap();
    let released = queue::release(&db.pool, &ann, e.id, t).await.unwrap();
    assert_eq!(released.status, "open");
    let note = queue::add_note(&db.pool, &ann, e.id, "tried twice, line busy", t)
        .await
        .unwrap();
    assert_eq!(note.operator_name, "ann");
    let long = "x".repeat(queue::MAX_NOTE_CHARS + 1);
    let err = queue::add_note(&db.pool, &ann, e.id, &long, t)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit is 4000"), "{err}");

    queue::claim(&db.pool, &ann, e.id, Duration::seconds(60), t)
        .await
        .unwrap();
    queue::resolve(&db.pool, &ann, e.id, Outcome::FalseAlarm, "", t)
        .await
        .unwrap();
    let denied = queue::reopen(&db.pool, &ann, e.id, "second look", t)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("supervisor"), "{denied}");
    let reopened = queue::reopen(&db.pool, &sup, e.id, "second look", t)
        .await
        .unwrap();
    assert_eq!(reopened.status, "open");
    assert!(reopened.outcome.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_flags_on_one_call_make_one_escalation_at_the_highest_level() {
    let db = TestDb::with_pool_size(16).await;
    let c = common::city(&db.pool).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "f").await;
    let call = calls[0];
    let t = now();
    let levels = [
        Level::Watch,
        Level::Urgent,
        Level::Emergency,
        Level::Watch,
        Level::Urgent,
        Level::Watch,
    ];
    let mut handles = Vec::new();
    for round in 0..4 {
        for (i, level) in levels.iter().enumerate() {
            let pool = db.pool.clone();
            let level = *level;
            handles.push(tokio::spawn(async move {
                let f = flag(call, level, &format!("cat{round}{i}"));
                // Concurrent upserts on a unique index can hit a serialization
                // conflict only as a unique violation, which ON CONFLICT absorbs.
                queue::flag(&pool, &f, &SlaPolicy::default(), t)
                    .await
                    .unwrap()
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT level, jsonb_array_length(reasons)::bigint FROM escalations WHERE call_id = $1",
    )
    .bind(call)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "exactly one open escalation for the call");
    assert_eq!(rows[0].0, "emergency", "the most severe level wins");
    assert_eq!(rows[0].1, 24, "every reason is kept");
    let deadline: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT sla_deadline FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let created: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT created_at FROM escalations WHERE call_id = $1")
            .bind(call)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        deadline - created,
        Duration::seconds(60),
        "raised to emergency, the emergency SLA applies"
    );
}

#[tokio::test]
async fn an_operator_cannot_read_claim_or_count_another_streets_items() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let ann = common::operator(&db.pool, "ann", Role::Operator, c.street_a).await;
    let bob = common::operator(&db.pool, "bob", Role::Operator, c.street_b).await;
    let chief = common::operator(&db.pool, "chief", Role::Supervisor, c.city).await;
    let a_calls = common::elders_with_calls(&db.pool, c.community_a, 2, "a").await;
    let b_calls = common::elders_with_calls(&db.pool, c.community_b, 3, "b").await;
    let t = now();
    let sla = SlaPolicy::default();
    for call in &a_calls {
        queue::flag(&db.pool, &flag(*call, Level::Emergency, "fall"), &sla, t)
            .await
            .unwrap();
    }
    let mut b_ids = Vec::new();
    for call in &b_calls {
        b_ids.push(
            queue::flag(&db.pool, &flag(*call, Level::Urgent, "fever"), &sla, t)
                .await
                .unwrap()
                .id,
        );
    }

    let seen: Vec<i64> = queue::list(&db.pool, &ann, &ListFilter::default(), t)
        .await
        .unwrap()
        .iter()
        .map(|i| i.escalation.id)
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|id| !b_ids.contains(id)));
    // Read, claim, renew, note: all look like "not found", never "forbidden".
    assert!(matches!(
        queue::get(&db.pool, &ann, b_ids[0]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        queue::claim(&db.pool, &ann, b_ids[0], Duration::seconds(30), t).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        queue::add_note(&db.pool, &ann, b_ids[0], "x", t).await,
        Err(StoreError::NotFound { .. })
    ));
    // Take-next never reaches across.
    let mut took = Vec::new();
    while let Some(e) = queue::claim_next(&db.pool, &ann, &[], Duration::seconds(30), t)
        .await
        .unwrap()
    {
        took.push(e.id);
    }
    assert_eq!(took.len(), 2);
    // Counts are scoped too.
    let counts = queue::counts(&db.pool, &ann, t).await.unwrap();
    let total: i64 = counts.iter().map(|c| c.open + c.claimed).sum();
    assert_eq!(total, 2);
    let bob_counts = queue::counts(&db.pool, &bob, t).await.unwrap();
    assert_eq!(
        bob_counts
            .iter()
            .find(|c| c.level == "urgent")
            .unwrap()
            .open,
        3
    );
    assert_eq!(
        bob_counts
            .iter()
            .find(|c| c.level == "emergency")
            .unwrap()
            .claimed,
        0
    );
    // The city supervisor sees everything, rolled up by street.
    let all = queue::counts(&db.pool, &chief, t).await.unwrap();
    assert_eq!(all.iter().map(|c| c.open + c.claimed).sum::<i64>(), 5);
    let by_street = queue::rollup(&db.pool, &chief, voicecare_store::org::UnitLevel::Street, t)
        .await
        .unwrap();
    let elm = by_street
        .iter()
        .find(|r| r.unit_name == "Elm Street")
        .unwrap();
    let oak = by_street
        .iter()
        .find(|r| r.unit_name == "Oak Street")
        .unwrap();
    assert_eq!((elm.emergency, elm.urgent), (2, 0));
    assert_eq!((oak.emergency, oak.urgent), (0, 3));
    // A street operator's roll-up only contains their own street.
    let anns = queue::rollup(&db.pool, &ann, voicecare_store::org::UnitLevel::Street, t)
        .await
        .unwrap();
    assert_eq!(anns.len(), 1);
    assert_eq!(anns[0].unit_name, "Elm Street");
}

#[tokio::test]
async fn notify_announces_new_escalations_at_commit() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "n").await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener.listen(queue::CHANNEL).await.unwrap();
    let e = queue::flag(
        &db.pool,
        &flag(calls[0], Level::Emergency, "fall"),
        &SlaPolicy::default(),
        now(),
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
    assert_eq!(v["id"], e.id);
    assert_eq!(v["level"], "emergency");
    assert_eq!(v["op"], "insert");
}

#[tokio::test]
async fn an_elder_who_moves_takes_their_open_items_to_the_new_units_operators() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let ann = common::operator(&db.pool, "ann", Role::Operator, c.street_a).await;
    let bob = common::operator(&db.pool, "bob", Role::Operator, c.street_b).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "m").await;
    let e = queue::flag(
        &db.pool,
        &flag(calls[0], Level::Urgent, "fever"),
        &SlaPolicy::default(),
        now(),
    )
    .await
    .unwrap();
    assert!(queue::get(&db.pool, &ann, e.id).await.is_ok());
    sqlx::query("UPDATE elders SET community_id = $1 WHERE id = $2")
        .bind(c.community_b)
        .bind(e.elder_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(matches!(
        queue::get(&db.pool, &ann, e.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(queue::get(&db.pool, &bob, e.id).await.is_ok());
}
