//! Elders' concerns against a real PostgreSQL: opened by the reply that
//! raises them, in its transaction, mentioned again by later calls, once per
//! call, and never opened twice by two calls of one elder at once.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use voicecare_core::Lang;
use voicecare_core::distress::{Classifier, Utterance};
use voicecare_core::memory::Change;
use voicecare_store::PgPool;
use voicecare_store::calls::{self, AssessmentRecord, NewUtterance};
use voicecare_store::concerns;
use voicecare_store::testing::TestDb;

/// Store `text` as a reply on `call`, assessed by the real classifier.
async fn reply(pool: &PgPool, call: i64, seq: i32, text: &str, at: DateTime<Utc>) {
    let a = Classifier::shared().assess(&Utterance::new(text));
    let row = NewUtterance {
        call_id: call,
        attempt_id: None,
        seq,
        flow_step: Some("how_are_you"),
        transcript: text,
        language: Some(Lang::Zh),
        confidence: Some(0.9),
        audio_path: None,
        audio_ms: None,
        asr_queue_ms: None,
        asr_decode_ms: None,
    };
    calls::record_utterance(pool, &row, &AssessmentRecord::from_assessment(&a), at)
        .await
        .unwrap();
}

/// Another call of the same elder (over already: an elder has one
/// check-in waiting at a time).
async fn next_call(pool: &PgPool, call: i64) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO calls (elder_id, direction, purpose, status, ended_at)
         SELECT elder_id, 'outbound', 'checkin', 'completed', now() FROM calls WHERE id = $1 RETURNING id",
    )
    .bind(call)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn elder_of(pool: &PgPool, call: i64) -> i64 {
    sqlx::query_scalar("SELECT elder_id FROM calls WHERE id = $1")
        .bind(call)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn morning(day: u32) -> DateTime<Utc> {
    // 09:00 in Shanghai, the elders' time zone.
    Utc.with_ymd_and_hms(2026, 12, day, 1, 0, 0).unwrap()
}

#[tokio::test]
async fn a_complaint_opens_a_concern_and_the_next_days_mention_it() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let day1 = common::elders_with_calls(&db.pool, c.community_a, 1, "k").await[0];
    let elder = elder_of(&db.pool, day1).await;

    reply(&db.pool, day1, 1, "我膝盖疼，走路不方便", morning(12)).await;
    // Said twice in one call: still one word on it that day.
    reply(
        &db.pool,
        day1,
        2,
        "就是膝盖疼",
        morning(12) + Duration::minutes(1),
    )
    .await;
    let day2 = next_call(&db.pool, day1).await;
    reply(&db.pool, day2, 1, "膝盖还是疼", morning(13)).await;

    let open = concerns::open(&db.pool, elder).await.unwrap();
    let knee = open
        .iter()
        .find(|s| s.concern.slot.as_deref() == Some("膝盖"))
        .expect("the knee is remembered");
    let history: Vec<(String, Change)> = knee
        .concern
        .history
        .iter()
        .map(|m| (m.date.to_string(), m.change))
        .collect();
    assert_eq!(
        history,
        [
            ("2026-12-12".to_string(), Change::New),
            ("2026-12-13".to_string(), Change::Same)
        ]
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events
          WHERE elder_id = $1 AND action IN ('concern.open', 'concern.mention')
            AND details->>'concern_id' = $2::text",
    )
    .bind(elder)
    .bind(knee.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2, "every change has its audit event");
}

#[tokio::test]
async fn a_fine_reply_remembers_nothing() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let call = common::elders_with_calls(&db.pool, c.community_a, 1, "f").await[0];
    let elder = elder_of(&db.pool, call).await;
    reply(&db.pool, call, 1, "我挺好的，今天吃了饺子", morning(12)).await;
    assert!(concerns::open(&db.pool, elder).await.unwrap().is_empty());
}

#[tokio::test]
async fn two_calls_of_one_elder_at_once_open_one_concern() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let a = common::elders_with_calls(&db.pool, c.community_a, 1, "x").await[0];
    let elder = elder_of(&db.pool, a).await;
    for round in 0..5 {
        // Two calls on two nodes, stored at the same moment.
        let b = next_call(&db.pool, a).await;
        let d = next_call(&db.pool, a).await;
        let at = morning(12) + Duration::hours(round);
        tokio::join!(
            reply(&db.pool, b, 1, "我腰疼", at),
            reply(&db.pool, d, 1, "我腰疼得很", at),
        );
    }
    let open = concerns::open(&db.pool, elder).await.unwrap();
    let backs: Vec<_> = open
        .iter()
        .filter(|s| s.concern.slot.as_deref() == Some("腰"))
        .collect();
    assert_eq!(backs.len(), 1, "one concern, however the calls raced");
    assert_eq!(backs[0].concern.history.len(), 10, "each call's word kept");
}

#[tokio::test]
async fn an_answer_of_better_closes_the_concern_and_worse_raises_it() {
    let db = TestDb::new().await;
    let c = common::city(&db.pool).await;
    let day1 = common::elders_with_calls(&db.pool, c.community_a, 1, "a").await[0];
    let elder = elder_of(&db.pool, day1).await;
    reply(&db.pool, day1, 1, "我膝盖疼", morning(12)).await;
    reply(&db.pool, day1, 2, "晚上睡不好", morning(12)).await;
    let open = concerns::open(&db.pool, elder).await.unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    let knee = open.iter().find(|s| s.concern.slot.is_some()).unwrap().id;
    let sleep = open.iter().find(|s| s.concern.slot.is_none()).unwrap().id;

    let day2 = next_call(&db.pool, day1).await;
    // The reply to the question said "the same" in words; the key said better.
    reply(&db.pool, day2, 1, "膝盖还是疼", morning(13)).await;
    concerns::answer(
        &db.pool,
        knee,
        day2,
        Change::Better,
        true,
        None,
        morning(13),
    )
    .await
    .unwrap();
    concerns::answer(
        &db.pool,
        sleep,
        day2,
        Change::Worse,
        false,
        Some(voicecare_core::Level::Urgent),
        morning(13),
    )
    .await
    .unwrap();
    let open = concerns::open(&db.pool, elder).await.unwrap();
    assert_eq!(open.len(), 1, "the knee is closed: {open:?}");
    assert_eq!(open[0].id, sleep);
    assert_eq!(open[0].concern.level, voicecare_core::Level::Urgent);
    assert_eq!(
        open[0].concern.history.last().unwrap().change,
        Change::Worse
    );
    let knee_day2: String = sqlx::query_scalar(
        "SELECT change FROM concern_mentions WHERE concern_id = $1 AND call_id = $2",
    )
    .bind(knee)
    .bind(day2)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(knee_day2, "better", "the answer is the call's word on it");
    let closed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'concern.close' AND elder_id = $1",
    )
    .bind(elder)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(closed, 1);
}
