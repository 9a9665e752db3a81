//! The operator API over real HTTP against a real PostgreSQL: authentication,
//! roles, scope, the claim race, bad input, audit of transcript reads.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use voicecare_core::Level;
use voicecare_server::api::{self, AppState, TrustedProxies};
use voicecare_store::operators::{self, NewOperator, Password, Role};
use voicecare_store::org::{self, UnitLevel};
use voicecare_store::queue::{self, Flag, SlaPolicy};
use voicecare_store::testing::TestDb;

const PW: &str = "correct horse battery";

struct App {
    base: String,
    db: TestDb,
    http: reqwest::Client,
    community_a: i64,
    community_b: i64,
}

async fn spawn_app() -> App {
    spawn_app_with(|s| s).await
}

/// The app behind a reverse proxy on loopback: client addresses come from
/// `X-Forwarded-For`.
async fn spawn_app_behind_proxy() -> App {
    spawn_app_with(|s| s.with_trusted_proxies("127.0.0.1/32".parse::<TrustedProxies>().unwrap()))
        .await
}

async fn spawn_app_with(configure: impl FnOnce(AppState) -> AppState) -> App {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let city = org::create(&pool, None, UnitLevel::City, "Riverside")
        .await
        .unwrap()
        .id;
    let county = org::create(&pool, Some(city), UnitLevel::County, "North")
        .await
        .unwrap()
        .id;
    let sa = org::create(&pool, Some(county), UnitLevel::Street, "Elm Street")
        .await
        .unwrap()
        .id;
    let sb = org::create(&pool, Some(county), UnitLevel::Street, "Oak Street")
        .await
        .unwrap()
        .id;
    let community_a = org::create(&pool, Some(sa), UnitLevel::Community, "Elm Court")
        .await
        .unwrap()
        .id;
    let community_b = org::create(&pool, Some(sb), UnitLevel::Community, "Oak Court")
        .await
        .unwrap()
        .id;
    let pw = Password::new(PW).unwrap();
    for (u, role, unit) in [
        ("ann", Role::Operator, sa),
        ("amy", Role::Operator, sa),
        ("bob", Role::Operator, sb),
        ("sue", Role::Supervisor, city),
    ] {
        operators::add(
            &pool,
            NewOperator {
                username: u,
                display_name: u,
                password: &pw,
                role,
                unit_id: unit,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    }
    let state = AppState::new(
        pool.clone(),
        60,
        12,
        SlaPolicy::default(),
        std::env::temp_dir(),
    );
    let state = configure(state);
    api::spawn_notify_fanout(pool.clone(), &state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        base: format!("http://{addr}"),
        db,
        http: reqwest::Client::new(),
        community_a,
        community_b,
    }
}

impl App {
    async fn login(&self, user: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"username": user, "password": PW}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }
    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    /// An elder with a call and an escalation in `community`.
    async fn flagged(&self, community: i64, level: Level, transcript: &str) -> i64 {
        let elder: i64 = sqlx::query_scalar(
            "INSERT INTO elders (full_name, device_id, language, time_zone, community_id, birth_date)
             VALUES ('Mei Lin', 'dev-' || floor(random()*1e9)::text, 'zh', 'Asia/Shanghai', $1, '1941-03-02') RETURNING id",
        )
        .bind(community)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        let call = voicecare_store::calls::create(
            &self.db.pool,
            elder,
            voicecare_store::calls::Direction::Outbound,
            voicecare_store::calls::Purpose::Checkin,
            "daily-checkin",
            Utc::now(),
        )
        .await
        .unwrap();
        let reasons =
            json!([{"category": "fall", "evidence": "fell", "rule": "fall.cannot_get_up"}]);
        voicecare_store::calls::record_utterance(
            &self.db.pool,
            &voicecare_store::calls::NewUtterance {
                call_id: call,
                attempt_id: None,
                seq: 0,
                flow_step: Some("how_are_you"),
                transcript,
                language: Some(voicecare_core::Lang::En),
                confidence: Some(0.9),
                audio_path: None,
                audio_ms: Some(2000),
                asr_queue_ms: Some(0),
                asr_decode_ms: Some(300),
            },
            &voicecare_store::calls::AssessmentRecord {
                level,
                categories: vec!["fall".into()],
                reasons: reasons.clone(),
                score: 0.9,
            },
            Utc::now(),
        )
        .await
        .unwrap();
        queue::flag(
            &self.db.pool,
            &Flag {
                call_id: call,
                level,
                categories: vec!["fall".into()],
                reasons,
                elder_on_line: true,
            },
            &SlaPolicy::default(),
            Utc::now(),
        )
        .await
        .unwrap()
        .id
    }
}

#[tokio::test]
async fn everything_but_login_health_and_metrics_needs_a_session() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/queue",
        "/api/v1/me",
        "/api/v1/escalations/1",
        "/api/v1/elders?q=mei",
        "/api/v1/events",
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthenticated", "{path}");
    }
    let r = app
        .http
        .post(format!("{}/api/v1/escalations/1/claim", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/metrics", "/api/openapi.json"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // A made-up token and an expired session are both refused, with a code the console can act on.
    let (s, v) = app.get("deadbeef", "/api/v1/queue").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_expired"))
    );
    let ann = operators::authenticate(&app.db.pool, "ann", PW)
        .await
        .unwrap()
        .unwrap();
    let old = operators::create_session(
        &app.db.pool,
        &ann,
        Utc::now() - Duration::hours(13),
        Duration::hours(12),
    )
    .await
    .unwrap();
    let (s, v) = app.get(&old.token, "/api/v1/queue").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("session_expired"))
    );
    // Logging out ends the session.
    let t = app.login("ann").await;
    assert_eq!(app.get(&t, "/api/v1/me").await.0, StatusCode::OK);
    let r = app
        .http
        .post(format!("{}/api/v1/logout", app.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&t, "/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn roles_are_enforced_per_route() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let sue = app.login("sue").await;
    let (s, v) = app.get(&ann, "/api/v1/queue/rollup?by=street").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, v) = app.get(&sue, "/api/v1/queue/rollup?by=street").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["units"].as_array().unwrap().len(), 2);
    let id = app
        .flagged(app.community_a, Level::Urgent, "I feel dizzy")
        .await;
    app.post(&ann, &format!("/api/v1/escalations/{id}/claim"), json!({}))
        .await;
    let (s, _) = app
        .post(
            &ann,
            &format!("/api/v1/escalations/{id}/resolve"),
            json!({"outcome": "no_action"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(
            &ann,
            &format!("/api/v1/escalations/{id}/reopen"),
            json!({"reason": "check"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .post(
            &sue,
            &format!("/api/v1/escalations/{id}/reopen"),
            json!({"reason": "check"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["escalation"]["status"], "open");
}

#[tokio::test]
async fn two_operators_race_to_claim_one_wins_the_other_is_told() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let amy = app.login("amy").await;
    let id = app
        .flagged(app.community_a, Level::Emergency, "I fell and can't get up")
        .await;
    let path = format!("/api/v1/escalations/{id}/claim");
    let (a, b) = tokio::join!(
        app.post(&ann, &path, json!({})),
        app.post(&amy, &path, json!({}))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["error"]["code"], "conflict");
    assert!(
        loser["error"]["message"]
            .as_str()
            .unwrap()
            .contains("held by"),
        "{loser}"
    );
}

#[tokio::test]
async fn other_streets_items_are_invisible_through_the_api() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let bob = app.login("bob").await;
    let id = app.flagged(app.community_a, Level::Emergency, "help").await;
    app.flagged(app.community_b, Level::Urgent, "no food").await;
    let (s, v) = app.get(&bob, &format!("/api/v1/escalations/{id}")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert_eq!(
        app.post(&bob, &format!("/api/v1/escalations/{id}/claim"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, q) = app.get(&bob, "/api/v1/queue").await;
    assert_eq!(q["items"].as_array().unwrap().len(), 1);
    let (_, c) = app.get(&bob, "/api/v1/queue/counts").await;
    let total: i64 = c["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["open"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 1);
    let (_, q) = app.get(&ann, "/api/v1/queue").await;
    assert_eq!(q["items"][0]["id"], id);
    assert_eq!(q["items"][0]["level"], "emergency");
}

#[tokio::test]
async fn reading_a_transcript_is_audited_and_detail_has_what_an_operator_needs() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let id = app
        .flagged(
            app.community_a,
            Level::Emergency,
            "I fell in the bathroom <script>alert(1)</script>",
        )
        .await;
    let (s, v) = app.get(&ann, &format!("/api/v1/escalations/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["elder"]["full_name"], "Mei Lin");
    assert!(v["elder"]["age"].as_i64().unwrap() >= 85);
    assert_eq!(
        v["transcript"][0]["transcript"],
        "I fell in the bathroom <script>alert(1)</script>"
    );
    assert_eq!(v["transcript"][0]["level"], "emergency");
    assert_eq!(v["escalation"]["reasons"][0]["evidence"], "fell");
    assert_eq!(v["audit"][0]["action"], "escalation.open");
    let reads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events a JOIN operators o ON o.id = a.actor_id
         WHERE a.action = 'call.read_transcript' AND o.username = 'ann'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(reads, 1);
}

#[tokio::test]
async fn an_elders_record_shows_what_they_said_was_wrong_to_their_unit_only() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let bob = app.login("bob").await;
    let elder: i64 = sqlx::query_scalar(
        "INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
         VALUES ('Mei Lin', 'dev-knee', 'en', 'Europe/London', $1) RETURNING id",
    )
    .bind(app.community_a)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let call = voicecare_store::calls::create(
        &app.db.pool,
        elder,
        voicecare_store::calls::Direction::Outbound,
        voicecare_store::calls::Purpose::Checkin,
        "daily-checkin",
        Utc::now(),
    )
    .await
    .unwrap();
    let text = "My knee has been hurting since Sunday";
    let a = voicecare_core::distress::Classifier::shared()
        .assess(&voicecare_core::distress::Utterance::new(text));
    voicecare_store::calls::record_utterance(
        &app.db.pool,
        &voicecare_store::calls::NewUtterance {
            call_id: call,
            attempt_id: None,
            seq: 0,
            flow_step: Some("how_are_you"),
            transcript: text,
            language: Some(voicecare_core::Lang::En),
            confidence: Some(0.9),
            audio_path: None,
            audio_ms: None,
            asr_queue_ms: None,
            asr_decode_ms: None,
        },
        &voicecare_store::calls::AssessmentRecord::from_assessment(&a),
        Utc::now(),
    )
    .await
    .unwrap();

    let (s, v) = app.get(&ann, &format!("/api/v1/elders/{elder}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pain = v["concerns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "pain")
        .unwrap_or_else(|| panic!("no pain concern: {v}"));
    assert_eq!(pain["slot"], "knee");
    assert_eq!(pain["level"], "watch");
    assert_eq!(pain["history"][0]["change"], "new");
    // An item raised on the elder's call shows the same on its page.
    let esc = queue::flag(
        &app.db.pool,
        &Flag {
            call_id: call,
            level: Level::Urgent,
            categories: vec!["pain".into()],
            reasons: json!([]),
            elder_on_line: false,
        },
        &SlaPolicy::default(),
        Utc::now(),
    )
    .await
    .unwrap();
    let (s, d) = app
        .get(&ann, &format!("/api/v1/escalations/{}", esc.id))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["concerns"][0]["slot"], "knee", "{d}");
    // Another street's operator sees neither the elder nor the concern.
    let (s, v) = app.get(&bob, &format!("/api/v1/elders/{elder}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let id = app.flagged(app.community_a, Level::Watch, "lonely").await;
    // Malformed JSON.
    let r = app
        .http
        .post(format!("{}/api/v1/escalations/{id}/notes", app.base))
        .bearer_auth(&ann)
        .header("content-type", "application/json")
        .body("{\"body\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    // Unknown outcome code names the field.
    app.post(&ann, &format!("/api/v1/escalations/{id}/claim"), json!({}))
        .await;
    let (s, v) = app
        .post(
            &ann,
            &format!("/api/v1/escalations/{id}/resolve"),
            json!({"outcome": "went_home"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("outcome"),
        "{v}"
    );
    // Over-long note.
    let (s, v) = app
        .post(
            &ann,
            &format!("/api/v1/escalations/{id}/notes"),
            json!({"body": "x".repeat(4001)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 4000"),
        "{v}"
    );
    // Unknown filter value.
    let (s, v) = app.get(&ann, "/api/v1/queue?level=critical").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["message"].as_str().unwrap().contains("critical"));
    // Nothing was lost: the item is still there and still claimed by ann.
    let (_, q) = app.get(&ann, "/api/v1/queue").await;
    assert_eq!(q["items"][0]["status"], "claimed");
}

#[tokio::test]
async fn login_is_rate_limited() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let r = app
            .http
            .post(format!("{}/api/v1/login", app.base))
            .json(&json!({"username": "ann", "password": "wrong password!"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = app
        .http
        .post(format!("{}/api/v1/login", app.base))
        .json(&json!({"username": "ann", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
}

impl App {
    /// A login as `user` from `client` (sent as `X-Forwarded-For`).
    async fn login_from(&self, user: &str, password: &str, client: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/login", self.base))
            .header("x-forwarded-for", client)
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_correct_password_from_another_address_always_works() {
    let app = spawn_app_behind_proxy().await;
    let attacker = "203.0.113.7";
    for _ in 0..5 {
        let r = app.login_from("ann", "wrong password!", attacker).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // That address is held off for ann, even with the right password...
    let r = app.login_from("ann", PW, attacker).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "retry-after {wait}");
    // ... also when it hides behind a made-up address on the left: the
    // rightmost address the trusted proxy did not add is the client.
    let r = app
        .login_from("ann", PW, &format!("198.51.100.9, {attacker}"))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // ann from her own address, and amy behind the attacker's, get in.
    let r = app.login_from("ann", PW, "198.51.100.9").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.login_from("amy", PW, attacker).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let app = spawn_app().await;
    for i in 0..5 {
        let r = app
            .login_from("ann", "wrong password!", &format!("192.0.2.{i}"))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Without a trusted proxy the header is ignored: the peer is the client.
    let r = app.login_from("ann", PW, "192.0.2.200").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_turned_away_fast_and_memory_stays_bounded() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let app = spawn_app().await;
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let http = reqwest::Client::new();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), format!("{}/api/v1/login", app.base));
        flood.spawn(async move {
            let t0 = std::time::Instant::now();
            let r = http
                .post(url)
                .json(&json!({"username": format!("nobody-{i}"), "password": "guess guess guess"}))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (body["error"]["code"].clone(), retry, t0.elapsed())
        });
    }
    let (mut busy, mut refused) = (0, 0);
    let mut slowest_busy = std::time::Duration::ZERO;
    while let Some(r) = flood.join_next().await {
        let (code, retry, took) = r.unwrap();
        if code == "busy" {
            busy += 1;
            assert!(retry, "a busy answer says when to retry");
            slowest_busy = slowest_busy.max(took);
        } else {
            assert_eq!(code, "bad_credentials");
            refused += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grew_mib = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    assert!(busy > 0 && refused > 0, "busy {busy}, checked {refused}");
    assert!(
        slowest_busy < std::time::Duration::from_secs(5),
        "busy answers took up to {slowest_busy:?}"
    );
    // Unbounded, every login in flight holds argon2's 19 MiB (3.8 GB here);
    // bounded, what remains is the allocator keeping freed blocks per thread.
    assert!(
        grew_mib < 1024,
        "memory grew by {grew_mib} MiB under the flood"
    );
    // The flood is over: a real operator gets in at once.
    app.login("ann").await;
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_header_for_changes() {
    let app = spawn_app().await;
    let id = app.flagged(app.community_a, Level::Urgent, "fever").await;
    let jar = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let r = jar
        .post(format!("{}/api/v1/login", app.base))
        .json(&json!({"username": "ann", "password": PW}))
        .send()
        .await
        .unwrap();
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jar.get(format!("{}/api/v1/queue", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let no = jar
        .post(format!("{}/api/v1/escalations/{id}/claim", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no.status(), StatusCode::FORBIDDEN);
    let yes = jar
        .post(format!("{}/api/v1/escalations/{id}/claim", app.base))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(yes.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_and_openapi_describe_the_server() {
    let app = spawn_app().await;
    app.flagged(app.community_a, Level::Emergency, "chest pain")
        .await;
    let m = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(r#"voicecare_queue_depth{level="emergency",status="open"} 1"#),
        "{m}"
    );
    assert!(m.contains("voicecare_queue_oldest_open_seconds"));
    let spec: Value = app
        .http
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes = include_str!("../engine/server/src/api/mod.rs");
    for line in routes
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let path = line.split('"').nth(1).unwrap();
        assert!(
            spec["paths"].get(path).is_some(),
            "route {path} is missing from the OpenAPI description"
        );
    }
}

#[tokio::test]
async fn live_events_arrive_for_new_escalations() {
    let app = spawn_app().await;
    let ann = app.login("ann").await;
    let mut resp = app
        .http
        .get(format!("{}/api/v1/events", app.base))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Give the fan-out listener time to subscribe, then flag.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = app
        .flagged(app.community_a, Level::Emergency, "help me")
        .await;
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !buf.contains(&format!("\"id\":{id}")) {
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(c) => c.unwrap().unwrap(),
            Err(_) => panic!("no event for escalation {id} within 5 s; stream so far: {buf:?}"),
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(buf.contains("event: escalation"));
}

/// Read an SSE response until it ends; panics if it is still open after
/// `secs`. Returns what it carried.
async fn sse_until_end(resp: &mut reqwest::Response, secs: u64) -> String {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => panic!("the stream is still open after {secs} s: {buf:?}"),
            Ok(Ok(Some(c))) => buf.push_str(&String::from_utf8_lossy(&c)),
            Ok(Ok(None)) | Ok(Err(_)) => return buf,
        }
    }
}

#[tokio::test]
async fn event_streams_end_with_their_session() {
    let app = spawn_app().await;
    let open = |token: String| {
        let req = app
            .http
            .get(format!("{}/api/v1/events", app.base))
            .bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r
        }
    };
    // Logging out ends the stream at once.
    let ann = app.login("ann").await;
    let mut stream = open(ann.clone()).await;
    let mut other = open(app.login("ann").await).await;
    let (s, _) = app.post(&ann, "/api/v1/logout", json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let said = sse_until_end(&mut stream, 3).await;
    assert!(said.contains("event: session_ended"), "{said:?}");
    // ann's other session is untouched.
    let still = tokio::time::timeout(std::time::Duration::from_millis(500), other.chunk()).await;
    assert!(still.is_err(), "another session's stream ended: {still:?}");

    // A deactivated operator's stream ends too, within the re-check interval.
    let amy = app.login("amy").await;
    let mut stream = open(amy).await;
    sqlx::query("UPDATE operators SET active = false WHERE username = 'amy'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sse_until_end(&mut stream, 10).await;
}

// ───────────────────────── live talk ─────────────────────────

mod talk {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Log in for a cookie session: (cookie header, CSRF token).
    async fn cookie_login(app: &App, user: &str) -> (String, String) {
        let r: Value = app
            .http
            .post(format!("{}/api/v1/login", app.base))
            .json(&json!({"username": user, "password": PW}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            format!("vc_session={}", r["token"].as_str().unwrap()),
            r["csrf_token"].as_str().unwrap().to_string(),
        )
    }

    async fn open(
        app: &App,
        id: i64,
        cookie: &str,
        csrf: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Ws, tungstenite::Error> {
        let mut url = format!(
            "{}/api/v1/escalations/{id}/talk",
            app.base.replace("http://", "ws://")
        );
        if let Some(c) = csrf {
            url.push_str(&format!("?csrf={c}"));
        }
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }

    fn refused_with(r: Result<Ws, tungstenite::Error>) -> u16 {
        match r {
            Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("the upgrade was accepted"),
        }
    }

    /// Next JSON message from the server, within 5 s.
    async fn next(ws: &mut Ws) -> Value {
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                .await
                .expect("a message within 5 s")
                .expect("the socket is open")
                .unwrap();
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    async fn offer(ws: &mut Ws) {
        let m = json!({"type": "offer", "sdp": "v=0\r\n", "mode": "join"});
        ws.send(Message::Text(m.to_string().into())).await.unwrap();
    }

    #[tokio::test]
    async fn the_talk_socket_checks_csrf_origin_claim_and_scope_and_says_why_in_words() {
        let app = spawn_app().await;
        let id = app.flagged(app.community_a, Level::Emergency, "help").await;
        let (cookie, csrf) = cookie_login(&app, "ann").await;

        // A cookie session without its CSRF token, or from another site, is
        // refused before the upgrade; so is no session at all.
        assert_eq!(refused_with(open(&app, id, &cookie, None, None).await), 403);
        assert_eq!(
            refused_with(open(&app, id, &cookie, Some("wrong"), None).await),
            403
        );
        assert_eq!(
            refused_with(open(&app, id, &cookie, Some(&csrf), Some("http://evil.example")).await),
            403
        );
        assert_eq!(
            refused_with(open(&app, id, "", Some(&csrf), None).await),
            401
        );

        // Bad input is answered, not fatal; the offer is then checked.
        let mut ws = open(&app, id, &cookie, Some(&csrf), None).await.unwrap();
        ws.send(Message::Text("{nope".into())).await.unwrap();
        let m = next(&mut ws).await;
        assert_eq!(
            (m["code"].as_str(), m["fatal"].as_bool()),
            (Some("bad_json"), Some(false))
        );
        ws.send(Message::Text(r#"{"type":"dance"}"#.into()))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await["code"], "bad_message");
        offer(&mut ws).await;
        assert_eq!(next(&mut ws).await["state"], "connecting");
        let m = next(&mut ws).await;
        assert_eq!(m["code"], "not_claimed", "{m}");
        assert!(
            m["message"].as_str().unwrap().contains("claim escalation"),
            "{m}"
        );

        // Held by another operator: the message names them.
        let amy = app.login("amy").await;
        let (s, _) = app
            .post(&amy, &format!("/api/v1/escalations/{id}/claim"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK);
        let mut ws = open(&app, id, &cookie, Some(&csrf), None).await.unwrap();
        offer(&mut ws).await;
        let _ = next(&mut ws).await;
        let m = next(&mut ws).await;
        assert_eq!(m["code"], "not_claimed");
        assert!(
            m["message"].as_str().unwrap().contains("held by amy"),
            "{m}"
        );

        // Another unit's item answers like a missing one.
        let (bob_cookie, bob_csrf) = cookie_login(&app, "bob").await;
        let mut ws = open(&app, id, &bob_cookie, Some(&bob_csrf), None)
            .await
            .unwrap();
        offer(&mut ws).await;
        let _ = next(&mut ws).await;
        assert_eq!(next(&mut ws).await["code"], "not_found");

        // The claim holder on a node that runs no calls is told so.
        let (amy_cookie, amy_csrf) = cookie_login(&app, "amy").await;
        let mut ws = open(&app, id, &amy_cookie, Some(&amy_csrf), Some(&app.base))
            .await
            .unwrap();
        offer(&mut ws).await;
        let _ = next(&mut ws).await;
        let m = next(&mut ws).await;
        assert_eq!(m["code"], "calls_unavailable", "{m}");
        // The socket is closed after a refusal.
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(
            matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_page_spamming_garbage_is_cut_off_and_others_keep_working() {
        let app = spawn_app().await;
        let id = app.flagged(app.community_a, Level::Emergency, "help").await;
        let (cookie, csrf) = cookie_login(&app, "ann").await;
        let mut ws = open(&app, id, &cookie, Some(&csrf), None).await.unwrap();
        // Unknown message types are echoed in the errors; nothing is read.
        let junk = json!({"type": "z".repeat(30_000)}).to_string();
        for _ in 0..300 {
            if ws.send(Message::Text(junk.clone().into())).await.is_err() {
                break;
            }
        }
        let mut answers = 0;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(_))) => answers += 1,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "still open after {answers} answers");
        assert!(answers <= 21, "{answers} answers to garbage");
        // Another page of the same operator is served as usual.
        let mut other = open(&app, id, &cookie, Some(&csrf), None).await.unwrap();
        other
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .unwrap();
        assert_eq!(next(&mut other).await["type"], "pong");
    }

    #[tokio::test]
    async fn the_talk_socket_closes_when_the_session_ends() {
        let app = spawn_app().await;
        let id = app.flagged(app.community_a, Level::Emergency, "help").await;
        let (cookie, csrf) = cookie_login(&app, "ann").await;
        let mut ws = open(&app, id, &cookie, Some(&csrf), None).await.unwrap();
        ws.send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await["type"], "pong");
        let r = app
            .http
            .post(format!("{}/api/v1/logout", app.base))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let t0 = std::time::Instant::now();
        let m = next(&mut ws).await;
        assert_eq!(m["code"], "session_ended", "{m}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(3));
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .unwrap();
        assert!(
            matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn conversation_recordings_are_scoped_and_audited() {
        let app = spawn_app().await;
        let id = app.flagged(app.community_a, Level::Emergency, "help").await;
        let ann = app.login("ann").await;
        let bob = app.login("bob").await;
        let (ann_id, call): (i64, i64) = sqlx::query_as(
            "SELECT o.id, e.call_id FROM operators o, escalations e WHERE o.username = 'ann' AND e.id = $1",
        )
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        // The app's data directory is the system temp directory.
        let rel = format!(
            "voicecare-api-talk-{}-{}.wav",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = std::env::temp_dir().join(&rel);
        std::fs::write(&path, b"RIFF....WAVE").unwrap();
        let talk: i64 = sqlx::query_scalar(
            "INSERT INTO operator_talks (escalation_id, call_id, operator_id, kind, node_id, status, started_at, bridged_at, ended_at, ended_by, recording_path, recording_ms)
             VALUES ($1, $2, $3, 'join', 'node-a', 'ended', now(), now(), now(), 'operator', $4, 1000) RETURNING id",
        )
        .bind(id)
        .bind(call)
        .bind(ann_id)
        .bind(&rel)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let r = app
            .http
            .get(format!("{}/api/v1/talks/{talk}/audio", app.base))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .http
            .get(format!("{}/api/v1/talks/{talk}/audio", app.base))
            .bearer_auth(&ann)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "audio/wav");
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"RIFF....WAVE");
        let listens: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_events WHERE action = 'talk.listen' AND entity_id = $1 AND actor_id = $2",
        )
        .bind(id)
        .bind(ann_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(listens, 1);
        // The detail lists the conversation.
        let (s, d) = app.get(&ann, &format!("/api/v1/escalations/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(d["talks"][0]["id"], talk);
        assert_eq!(d["talks"][0]["has_recording"], true);
        assert_eq!(d["live"]["calls_here"], false);
        // A conversation cannot jump from ended back to live.
        let e = sqlx::query("UPDATE operator_talks SET status = 'live' WHERE id = $1")
            .bind(talk)
            .execute(&app.db.pool)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot go from ended to live"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }
}
