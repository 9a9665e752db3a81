//! Operators' conversations with elders against a real PostgreSQL: only the
//! claim holder starts one, one live conversation per call, every step
//! audited, call backs are calls of their own.

mod common;

use chrono::{Duration, Utc};
use voicecare_core::Level;
use voicecare_store::StoreError;
use voicecare_store::operators::Role;
use voicecare_store::queue::{self, Flag, SlaPolicy};
use voicecare_store::talks::{self, EndedBy, TalkEnd};
use voicecare_store::testing::TestDb;

async fn actions(pool: &sqlx::PgPool, escalation: i64) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE entity = 'escalation' AND entity_id = $1 ORDER BY id",
    )
    .bind(escalation)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// An elder who asked for help and is held on the line for an operator.
async fn help_on_the_line(
    pool: &sqlx::PgPool,
    call: i64,
    now: chrono::DateTime<Utc>,
) -> queue::Escalation {
    queue::flag(
        pool,
        &Flag {
            call_id: call,
            level: Level::Emergency,
            categories: vec!["help_request".into()],
            reasons: serde_json::json!([{"category": "help_request", "evidence": "help", "rule": "t"}]),
            elder_on_line: true,
        },
        &SlaPolicy::default(),
        now,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn only_the_claim_holder_talks_one_conversation_at_a_time_and_each_step_is_audited() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let c = common::city(pool).await;
    let ann = common::operator(pool, "ann", Role::Operator, c.street_a).await;
    let amy = common::operator(pool, "amy", Role::Operator, c.street_a).await;
    let bob = common::operator(pool, "bob", Role::Operator, c.street_b).await;
    let call = common::elders_with_calls(pool, c.community_a, 1, "t").await[0];
    let now = Utc::now();
    let esc = help_on_the_line(pool, call, now).await;

    // Unclaimed, another unit's, someone else's: refused, and nothing written.
    let e = talks::start_join(pool, &ann, esc.id, call, "node-a", now)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("claim escalation")),
        "{e}"
    );
    let e = talks::target(pool, &bob, esc.id, now).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    queue::claim(pool, &amy, esc.id, Duration::seconds(60), now)
        .await
        .unwrap();
    let e = talks::start_join(pool, &ann, esc.id, call, "node-a", now)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("held by amy")),
        "{e}"
    );
    assert!(
        talks::for_escalation(pool, esc.id)
            .await
            .unwrap()
            .is_empty()
    );

    // The holder joins; a second conversation on the same call cannot start.
    let t = talks::target(pool, &amy, esc.id, now).await.unwrap();
    assert_eq!((t.call_id, t.elder_on_line), (call, true));
    let talk = talks::start_join(pool, &amy, esc.id, call, "node-a", now)
        .await
        .unwrap();
    assert!(
        talks::start_join(pool, &amy, esc.id, call, "node-a", now)
            .await
            .is_err()
    );
    let end = TalkEnd {
        ended_by: EndedBy::Elder,
        reason: "elder hung up",
        recording_path: Some("recordings/x/talk.wav"),
        recording_ms: Some(61_000),
    };
    talks::end(pool, talk, &end, now + Duration::seconds(61))
        .await
        .unwrap();
    assert!(matches!(
        talks::end(pool, talk, &end, now).await,
        Err(StoreError::Conflict(_))
    ));
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'talk.end' AND entity_id = $1",
    )
    .bind(esc.id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(details["talk_ms"], 61_000);
    assert_eq!(details["ended_by"], "elder");
    assert_eq!(details["recorded"], true);

    // The elder is off the line once; a second notice changes nothing.
    assert!(talks::elder_left(pool, call, now).await.unwrap());
    assert!(!talks::elder_left(pool, call, now).await.unwrap());

    // Call back: a new outbound call held by the node, ringing, then live.
    let (cb_call, cb) =
        talks::start_callback(pool, &amy, esc.id, "node-a", Duration::seconds(30), now)
            .await
            .unwrap();
    let (purpose, status, node): (String, String, Option<String>) =
        sqlx::query_as("SELECT purpose, status, node_id FROM calls WHERE id = $1")
            .bind(cb_call)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (purpose.as_str(), status.as_str(), node.as_deref()),
        ("callback", "in_progress", Some("node-a"))
    );
    talks::connected(pool, cb, now).await.unwrap();
    assert!(talks::connected(pool, cb, now).await.is_err());
    let end = TalkEnd {
        ended_by: EndedBy::Operator,
        reason: "operator hung up",
        recording_path: None,
        recording_ms: None,
    };
    talks::end(pool, cb, &end, now).await.unwrap();
    let list = talks::for_escalation(pool, esc.id).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|t| (t.kind.as_str(), t.status.as_str(), t.has_recording))
            .collect::<Vec<_>>(),
        [("join", "ended", true), ("callback", "ended", false)]
    );
    let a = actions(pool, esc.id).await;
    let talk_actions: Vec<&str> = a
        .iter()
        .map(String::as_str)
        .filter(|x| x.starts_with("talk.") || *x == "escalation.elder_left")
        .collect();
    assert_eq!(
        talk_actions,
        [
            "talk.join",
            "talk.end",
            "escalation.elder_left",
            "talk.call_back",
            "talk.connected",
            "talk.end"
        ]
    );

    // Recordings: out of scope is not found; in scope is audited.
    assert!(matches!(
        talks::recording_path(pool, &bob, talk, now).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        talks::recording_path(pool, &amy, cb, now).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        talks::recording_path(pool, &amy, talk, now).await.unwrap(),
        "recordings/x/talk.wav"
    );
    assert_eq!(actions(pool, esc.id).await.last().unwrap(), "talk.listen");
}

/// A node dies with an elder held for an operator and a conversation live:
/// the rescuer closes the call, the escalation stops saying the elder is on
/// the line, and the conversation is closed as ended by the engine.
#[tokio::test]
async fn the_rescuer_takes_a_dead_nodes_elder_off_the_line_and_closes_its_talks() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let c = common::city(pool).await;
    let ann = common::operator(pool, "ann", Role::Operator, c.street_a).await;
    let call = common::elders_with_calls(pool, c.community_a, 1, "dead").await[0];
    let now = Utc::now();
    let esc = help_on_the_line(pool, call, now).await;
    queue::claim(pool, &ann, esc.id, Duration::seconds(600), now)
        .await
        .unwrap();
    // The call runs on node-a, which then stops renewing its lease.
    sqlx::query(
        "UPDATE calls SET status = 'in_progress', node_id = 'node-a', started_at = $2,
                lease_expires_at = $2 + interval '30 seconds' WHERE id = $1",
    )
    .bind(call)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    let talk = talks::start_join(pool, &ann, esc.id, call, "node-a", now)
        .await
        .unwrap();
    let rescued = voicecare_store::dialer::rescue_expired(pool, now + Duration::seconds(31))
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    let (on_line, left): (bool, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT elder_on_line, elder_left_at FROM escalations WHERE id = $1")
            .bind(esc.id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(
        on_line && left.is_some(),
        "the console no longer offers to join a line that is gone"
    );
    let (status, by): (String, Option<String>) =
        sqlx::query_as("SELECT status, ended_by FROM operator_talks WHERE id = $1")
            .bind(talk)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), by.as_deref()), ("ended", Some("engine")));
    assert!(
        actions(pool, esc.id)
            .await
            .contains(&"escalation.elder_left".to_string())
    );
}
