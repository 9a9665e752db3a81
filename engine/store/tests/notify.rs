//! The escalation feed against a real PostgreSQL: typed notices at commit,
//! and a resync after the listening connection is lost.

mod common;

use std::time::Duration;

use chrono::Utc;
use voicecare_core::Level;
use voicecare_store::PgPool;
use voicecare_store::notify::{
    Change, EscalationEvent, EscalationListener, EscalationNotice, Status,
};
use voicecare_store::queue::{self, Flag, SlaPolicy};
use voicecare_store::testing::TestDb;

async fn flag(pool: &PgPool, call_id: i64, level: Level) -> queue::Escalation {
    let f = Flag {
        call_id,
        level,
        categories: vec!["fall".into()],
        reasons: serde_json::json!([]),
        elder_on_line: false,
    };
    queue::flag(pool, &f, &SlaPolicy::default(), Utc::now())
        .await
        .unwrap()
}

async fn next(listener: &mut EscalationListener) -> EscalationEvent {
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("an escalation event within 10 s")
}

#[tokio::test]
async fn inserts_and_updates_arrive_as_typed_notices() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "n").await;
    let mut listener = EscalationListener::connect(&db.pool).await.unwrap();

    let e = flag(&db.pool, calls[0], Level::Urgent).await;
    assert_eq!(
        next(&mut listener).await,
        EscalationEvent::Changed(EscalationNotice {
            id: e.id,
            level: Level::Urgent,
            op: Change::Insert,
            status: Status::Open,
            unit_path: vec![c.city, c.county, c.street_a, c.community_a],
            version: 1,
        })
    );
    // A second flag on the same call raises the level of the same item.
    flag(&db.pool, calls[0], Level::Emergency).await;
    let EscalationEvent::Changed(n) = next(&mut listener).await else {
        panic!("expected a notice");
    };
    assert_eq!(
        (n.id, n.level, n.op),
        (e.id, Level::Emergency, Change::Update)
    );
    assert!(n.version > 1);
    // The path decides scope without a query: this street's operators see
    // it, the other street's do not.
    assert_eq!(n.in_scope(c.street_a), Some(true));
    assert_eq!(n.in_scope(c.city), Some(true));
    assert_eq!(n.in_scope(c.street_b), Some(false));
    assert_eq!(n.in_scope(c.community_b), Some(false));
}

#[tokio::test]
async fn a_lost_connection_is_reported_as_resync_and_listening_resumes() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 2, "r").await;
    let mut listener = EscalationListener::new(db.pool.clone());
    // The first event says LISTEN is active: nothing before it was seen.
    assert_eq!(next(&mut listener).await, EscalationEvent::Resync);

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "exactly the listening connection is killed");
    assert_eq!(next(&mut listener).await, EscalationEvent::Resync);

    let e = flag(&db.pool, calls[1], Level::Emergency).await;
    match next(&mut listener).await {
        EscalationEvent::Changed(n) => assert_eq!((n.id, n.op), (e.id, Change::Insert)),
        other => panic!("expected the new escalation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lease_renewal_is_not_announced_but_claims_and_resolutions_are() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let op = common::operator(
        &db.pool,
        "renewer",
        voicecare_store::operators::Role::Operator,
        c.street_a,
    )
    .await;
    let calls = common::elders_with_calls(&db.pool, c.community_a, 1, "l").await;
    let mut listener = EscalationListener::connect(&db.pool).await.unwrap();
    let e = flag(&db.pool, calls[0], Level::Urgent).await;
    let lease = chrono::Duration::seconds(60);

    let insert = next(&mut listener).await;
    assert!(matches!(insert, EscalationEvent::Changed(ref n) if n.op == Change::Insert));
    queue::claim(&db.pool, &op, e.id, lease, Utc::now())
        .await
        .unwrap();
    let EscalationEvent::Changed(n) = next(&mut listener).await else {
        panic!("expected the claim's notice");
    };
    assert_eq!(n.status, Status::Claimed);
    for _ in 0..3 {
        queue::renew(&db.pool, &op, e.id, lease, Utc::now())
            .await
            .unwrap();
    }
    queue::resolve(
        &db.pool,
        &op,
        e.id,
        queue::Outcome::CalledBack,
        "",
        Utc::now(),
    )
    .await
    .unwrap();
    // The renewals said nothing: the next notice is the resolution.
    let EscalationEvent::Changed(n) = next(&mut listener).await else {
        panic!("expected the resolution's notice");
    };
    assert_eq!(n.status, Status::Resolved);
}
