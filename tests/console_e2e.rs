//! The operator console end to end: headless Chromium driven over WebDriver
//! (chromedriver) against the real server on a real PostgreSQL.
//!
//! Needs the Debian packages `chromium`, `chromium-driver` and
//! `fonts-noto-cjk` (installed by `scripts/prepare.sh`). `VOICECARE_CHROMIUM`
//! / `VOICECARE_CHROMEDRIVER` point at other binaries. Set
//! `VOICECARE_SCREENSHOTS=docs/img` to refresh the screenshots used by
//! docs/console.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use voicecare_core::Level;
use voicecare_server::api::{self, AppState};
use voicecare_store::calls::{self, AssessmentRecord, Direction, NewUtterance, Purpose};
use voicecare_store::operators::{self, NewOperator, Password, Role};
use voicecare_store::org::{self, UnitLevel};
use voicecare_store::queue::{self, Flag, Outcome, SlaPolicy};
use voicecare_store::testing::TestDb;
use voicecare_telephony::leg::LegConfig;
use voicecare_telephony::signalling::{ClientConfig, DeviceToken};
use voicecare_telephony::{SimPhone, SimScript};

const PW: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

// ───────────────────────── the server ─────────────────────────

struct App {
    base: String,
    db: TestDb,
    data_dir: TempDir,
    communities: Vec<i64>,
    ops: Vec<(String, i64)>,
    /// `voicecare serve` running calls, for the live-talk tests.
    _engine: Option<Child>,
}

/// Units Riverside > North/South > Elm/Oak Street > communities, and operators
/// ann, amy (Elm Street), bob (Oak Street), sue (supervisor of the city).
async fn seed(pool: &sqlx::PgPool) -> (Vec<i64>, Vec<(String, i64)>) {
    let pool = pool.clone();
    let city = org::create(&pool, None, UnitLevel::City, "Riverside")
        .await
        .unwrap()
        .id;
    let north = org::create(&pool, Some(city), UnitLevel::County, "North District")
        .await
        .unwrap()
        .id;
    let south = org::create(&pool, Some(city), UnitLevel::County, "South District")
        .await
        .unwrap()
        .id;
    let elm = org::create(&pool, Some(north), UnitLevel::Street, "Elm Street")
        .await
        .unwrap()
        .id;
    let oak = org::create(&pool, Some(south), UnitLevel::Street, "Oak Street")
        .await
        .unwrap()
        .id;
    let elm_court = org::create(&pool, Some(elm), UnitLevel::Community, "Elm Court")
        .await
        .unwrap()
        .id;
    let elm_gardens = org::create(&pool, Some(elm), UnitLevel::Community, "Elm Gardens")
        .await
        .unwrap()
        .id;
    let oak_court = org::create(&pool, Some(oak), UnitLevel::Community, "Oak Court")
        .await
        .unwrap()
        .id;
    let pw = Password::new(PW).unwrap();
    let mut ops = Vec::new();
    for (u, name, role, unit) in [
        ("ann", "Ann Lee", Role::Operator, elm),
        ("amy", "Amy Wu", Role::Operator, elm),
        ("bob", "Bob Chen", Role::Operator, oak),
        ("sue", "Sue Park", Role::Supervisor, city),
    ] {
        let op = operators::add(
            &pool,
            NewOperator {
                username: u,
                display_name: name,
                password: &pw,
                role,
                unit_id: unit,
            },
            Utc::now(),
        )
        .await
        .unwrap();
        ops.push((u.to_string(), op.id));
    }
    (vec![elm_court, elm_gardens, oak_court], ops)
}

async fn spawn_app() -> App {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let (communities, ops) = seed(&pool).await;
    let data_dir = TempDir::new("data");
    let state = AppState::new(
        pool.clone(),
        60,
        12,
        SlaPolicy::default(),
        data_dir.0.clone(),
    );
    api::spawn_notify_fanout(pool.clone(), &state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        base: format!("http://{addr}"),
        db,
        data_dir,
        communities,
        ops,
        _engine: None,
    }
}

/// The real `voicecare serve` binary with calls on (device signalling, the
/// dialer, whisper) on node `node-a`, on a seeded database.
async fn spawn_engine_app() -> App {
    let db = TestDb::new().await;
    let (communities, ops) = seed(&db.pool).await;
    let data_dir = TempDir::new("data");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voicecare"))
        .arg("--data-dir")
        .arg(&data_dir.0)
        .arg("--database-url")
        .arg(&db.url)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--media-bind", "127.0.0.1:0"])
        .arg("--flows-dir")
        .arg(repo.join("ivr-flows"))
        .args([
            "--node-id",
            "node-a",
            "--dialer-tick-ms",
            "200",
            "--asr-workers",
            "1",
        ])
        .args(["--service-name", "Riverside Care", "--ring-secs", "4"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start voicecare serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(a) = l.strip_prefix("voicecare listening on http://") {
                return a.to_string();
            }
        }
        panic!("voicecare serve exited before listening");
    })
    .await
    .expect("voicecare serve listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    App {
        base: format!("http://{addr}"),
        db,
        data_dir,
        communities,
        ops,
        _engine: Some(child),
    }
}

/// What to flag.
struct Case<'a> {
    community: usize,
    name: &'a str,
    level: Level,
    transcript: &'a str,
    evidence: &'a str,
    with_audio: bool,
    minutes_ago: i64,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            community: 0,
            name: "Mei Lin",
            level: Level::Emergency,
            transcript: "I fell in the kitchen and I cannot get up",
            evidence: "cannot get up",
            with_audio: false,
            minutes_ago: 0,
        }
    }
}

impl App {
    fn operator(&self, username: &str) -> i64 {
        self.ops.iter().find(|(u, _)| u == username).unwrap().1
    }

    /// An elder with a call, one assessed utterance (optionally recorded) and an escalation.
    async fn flag(&self, c: Case<'_>) -> (i64, i64) {
        let pool = &self.db.pool;
        let at = Utc::now() - chrono::Duration::minutes(c.minutes_ago);
        let elder: i64 = sqlx::query_scalar(
            "INSERT INTO elders (full_name, device_id, phone, language, time_zone, community_id, birth_date, address, notes)
             VALUES ($1, 'dev-' || floor(random()*1e9)::text, '+86138' || lpad(floor(random()*1e8)::text, 8, '0'),
                     'en', 'Asia/Shanghai', $2, '1941-03-02', '12 Elm Court, flat 3', 'Lives alone; hard of hearing')
             RETURNING id",
        )
        .bind(c.name)
        .bind(self.communities[c.community])
        .fetch_one(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO emergency_contacts (elder_id, position, name, relation, phone) VALUES ($1, 1, 'Wei Lin', 'son', '+8613900000001')",
        )
        .bind(elder)
        .execute(pool)
        .await
        .unwrap();
        let call = calls::create(
            pool,
            elder,
            Direction::Outbound,
            Purpose::Checkin,
            "daily-checkin",
            at,
        )
        .await
        .unwrap();
        let audio = if c.with_audio {
            let rel = format!("recordings/call-{call}-0.wav");
            let path = self.data_dir.0.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, wav_tone(1.0)).unwrap();
            Some(rel)
        } else {
            None
        };
        let start = c.transcript.find(c.evidence).unwrap_or(0);
        let reasons = json!([{
            "category": "fall", "level": c.level.as_str(), "evidence": c.evidence, "rule": "en.fall.cannot_get_up",
            "span": {"start": start, "end": start + c.evidence.len()}, "phonetic": false,
            "summary": format!("fall: \u{201c}{}\u{201d}", c.evidence),
        }]);
        calls::record_utterance(
            pool,
            &NewUtterance {
                call_id: call,
                attempt_id: None,
                seq: 0,
                flow_step: Some("how_are_you"),
                transcript: c.transcript,
                language: Some(voicecare_core::Lang::En),
                confidence: Some(0.9),
                audio_path: audio.as_deref(),
                audio_ms: Some(1000),
                asr_queue_ms: Some(0),
                asr_decode_ms: Some(300),
            },
            &AssessmentRecord {
                level: c.level,
                categories: vec!["fall".into()],
                reasons: reasons.clone(),
                score: 0.9,
            },
            at,
        )
        .await
        .unwrap();
        let e = queue::flag(
            pool,
            &Flag {
                call_id: call,
                level: c.level,
                categories: vec!["fall".into()],
                reasons,
                elder_on_line: false,
            },
            &SlaPolicy::default(),
            at,
        )
        .await
        .unwrap();
        (e.id, elder)
    }

    async fn status(&self, id: i64) -> (String, Option<String>, Option<String>) {
        sqlx::query_as("SELECT status, outcome, resolution_notes FROM escalations WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// A mono 16 kHz 16-bit WAV of a 440 Hz tone.
fn wav_tone(secs: f32) -> Vec<u8> {
    let rate = 16_000u32;
    let n = (rate as f32 * secs) as u32;
    let mut v = Vec::with_capacity(44 + 2 * n as usize);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + 2 * n).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(2 * n).to_le_bytes());
    for i in 0..n {
        let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 8000.0;
        v.extend_from_slice(&(s as i16).to_le_bytes());
    }
    v
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "voicecare-console-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ───────────────────────── the browser ─────────────────────────

/// For [`Browser::assert_han_glyphs`]: draws up to 12 distinct Han characters
/// of the element `arguments[0]` on a canvas in the element's font, next to
/// U+10FFFD (private use: no font has it, so it is drawn as the missing-glyph
/// box), and measures the text in the page against as many boxes.
const HAN_GLYPHS: &str = r#"
const el = document.querySelector(arguments[0]);
if (!el) return { error: 'no element' };
const cs = getComputedStyle(el);
const font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
const han = [...new Set(el.textContent.match(/\p{Script=Han}/gu) || [])].slice(0, 12);
const missing = '\u{10FFFD}';
const px = Math.ceil(parseFloat(cs.fontSize) * 2);
const canvas = document.createElement('canvas');
canvas.width = canvas.height = px;
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const draw = (s) => {
  ctx.clearRect(0, 0, px, px);
  ctx.font = font;
  ctx.textBaseline = 'top';
  ctx.fillStyle = '#000';
  ctx.fillText(s, 2, 2);
  const a = ctx.getImageData(0, 0, px, px).data;
  let ink = 0, bits = '';
  for (let i = 3; i < a.length; i += 4) {
    if (a[i] > 127) ink++;
    bits += a[i] > 127 ? '1' : '0';
  }
  return { width: ctx.measureText(s).width, ink, bits };
};
const box = draw(missing);
const glyphs = han.map((c) => ({ c, ...draw(c) }));
const range = document.createRange();
range.selectNodeContents(el);
const text = range.getBoundingClientRect().width;
const spanWidth = (s) => {
  const span = document.createElement('span');
  span.textContent = s;
  el.appendChild(span);
  try { return span.getBoundingClientRect().width; } finally { span.remove(); }
};
return {
  font,
  text,
  han: spanWidth(han.join('')),
  boxes: spanWidth(missing.repeat(han.length)),
  box: { width: box.width, ink: box.ink },
  glyphs: glyphs.map((g) => ({ c: g.c, width: g.width, ink: g.ink, tofu: g.bits === box.bits })),
  distinct: new Set(glyphs.map((g) => g.bits)).size,
};
"#;

struct Browser {
    c: Client,
    _driver: Child,
    profile: TempDir,
}

impl Browser {
    async fn start() -> Browser {
        Self::start_with(&[]).await
    }

    /// With extra Chromium switches (fake media devices, for live talk).
    async fn start_with(extra: &[String]) -> Browser {
        let driver_bin =
            std::env::var("VOICECARE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium =
            std::env::var("VOICECARE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut driver = Command::new(&driver_bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {driver_bin} ({e}); install chromium and chromium-driver (scripts/prepare.sh)")
            });
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port: u16 = tokio::time::timeout(WAIT, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(p) = l.split("started successfully on port ").nth(1) {
                    return p.trim().trim_end_matches('.').parse().unwrap();
                }
            }
            panic!("chromedriver exited before saying its port");
        })
        .await
        .expect("chromedriver announces its port");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = TempDir::new("profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1366,768",
            "--lang=en-GB",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        args.extend(extra.iter().cloned());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        Browser {
            c,
            _driver: driver,
            profile,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Poll `script` (returning a boolean) until it is true, or fail after `WAIT`.
    async fn wait(&self, what: &str, script: &str) {
        self.wait_up_to(what, script, WAIT).await
    }

    /// [`Browser::wait`] with its own deadline, for steps that include audio
    /// played in real time.
    async fn wait_up_to(&self, what: &str, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.c.execute(script, vec![]).await {
                Ok(Value::Bool(true)) => return,
                Ok(v) => last = v,
                Err(e) => last = Value::String(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.c.current_url().await.map(|u| u.to_string());
        let toasts = self
            .js("return document.getElementById('toasts')?.innerText")
            .await;
        panic!("timed out waiting for {what} (last: {last}; at {url:?}; toasts: {toasts})");
    }

    async fn click(&self, css: &str) {
        // The page re-renders on live events; an element found just before a
        // re-render goes stale, so find it again and retry a few times.
        let mut last = String::new();
        for _ in 0..5 {
            let el = self
                .c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match el.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => {
                    last = e.to_string();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
        panic!("click {css}: {last}");
    }

    async fn type_into(&self, css: &str, text: &str) {
        // Like `click`: a live re-render can swap the element mid-typing; find
        // it again and type the whole text anew.
        let mut last = String::new();
        for _ in 0..5 {
            let el = self
                .c
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            let typed = match el.clear().await {
                Ok(()) => el.send_keys(text).await,
                Err(e) => Err(e),
            };
            match typed {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") => {
                    last = e.to_string();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("type into {css}: {e}"),
            }
        }
        panic!("type into {css}: {last}");
    }

    async fn login(&self, base: &str, user: &str) {
        self.c.goto(&format!("{base}/")).await.unwrap();
        self.wait(
            "the login form",
            "return !document.getElementById('login').hidden",
        )
        .await;
        self.submit_login(user).await;
    }

    async fn submit_login(&self, user: &str) {
        self.type_into("#login-user", user).await;
        self.type_into("#login-pass", PW).await;
        self.click("#login-submit").await;
        self.wait(
            "the console after logging in",
            "return document.getElementById('login').hidden && !document.getElementById('nav').hidden",
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        if let Ok(dir) = std::env::var("VOICECARE_SCREENSHOTS") {
            let dir = Path::new(&dir);
            let dir = if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(dir)
            };
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Fail if the Han characters in `css` are drawn as missing-glyph boxes
    /// ("tofu", no CJK font installed): each one, drawn on a canvas in the
    /// element's own font, must have ink, look unlike the box drawn for a
    /// codepoint no font has, and look unlike the others; and the text in the
    /// page must not be as wide as the same number of boxes.
    async fn assert_han_glyphs(&self, css: &str) {
        let r = self.c.execute(HAN_GLYPHS, vec![json!(css)]).await.unwrap();
        let report = || format!("{css}: {r}");
        assert!(r["error"].is_null(), "{}", report());
        let glyphs = r["glyphs"].as_array().unwrap();
        assert!(!glyphs.is_empty(), "no Han characters in {}", report());
        for g in glyphs {
            assert!(
                g["ink"].as_u64().unwrap() > 0,
                "{} is blank in {}",
                g["c"],
                report()
            );
            assert_eq!(
                g["tofu"],
                false,
                "{} is drawn as tofu in {}",
                g["c"],
                report()
            );
        }
        assert_eq!(
            r["distinct"].as_u64().unwrap() as usize,
            glyphs.len(),
            "distinct Han characters look alike in {}",
            report()
        );
        let width = |k: &str| r[k].as_f64().unwrap();
        assert!(width("text") > 0.0, "{}", report());
        assert!(
            (width("han") - width("boxes")).abs() > 0.5,
            "the Han text is as wide as missing-glyph boxes in {}",
            report()
        );
    }

    async fn close(self) {
        let _ = self.c.clone().close().await;
        drop(self);
    }
}

impl Drop for Browser {
    /// Chromium outlives a killed chromedriver: end the processes started on our profile.
    fn drop(&mut self) {
        let marker = format!("--user-data-dir={}", self.profile.0.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(p.path().join("cmdline"))
                && String::from_utf8_lossy(&cmd).contains(&marker)
            {
                let _ = std::process::Command::new("kill")
                    .arg("-9")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

fn row(id: i64) -> String {
    format!("#queue-body tr[data-id=\"{id}\"]")
}

// ───────────────────────── tests ─────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_emergency_appears_live_is_claimed_heard_and_resolved() {
    let app = spawn_app().await;
    let b = Browser::start().await;
    b.login(&app.base, "ann").await;
    b.wait(
        "the empty queue",
        "return !document.getElementById('queue-empty').hidden",
    )
    .await;
    b.wait(
        "the live event stream",
        "return document.querySelector('.live:not(.off)') !== null",
    )
    .await;

    // Flagged while the page is open: it appears without a reload.
    let flagged_at = Instant::now();
    let (id, _) = app
        .flag(Case {
            with_audio: true,
            ..Case::default()
        })
        .await;
    b.wait(
        "the new emergency in the queue",
        &format!("return document.querySelector('{}') !== null", row(id)),
    )
    .await;
    let appeared = flagged_at.elapsed();
    eprintln!("emergency appeared in the console {appeared:?} after it was flagged");
    assert!(
        appeared < Duration::from_secs(3),
        "took {appeared:?} to appear"
    );
    // Loud: the row is marked emergency in words, and the alarm banner names it.
    let level_text = b
        .js(&format!(
            "return document.querySelector('{} .badge').textContent",
            row(id)
        ))
        .await;
    assert!(
        level_text.as_str().unwrap().contains("EMERGENCY"),
        "{level_text}"
    );
    b.wait(
        "the emergency alarm",
        "return !document.getElementById('alarm').hidden && /1 emergency waiting/.test(document.getElementById('alarm').textContent)",
    )
    .await;
    b.wait(
        "an SLA countdown",
        &format!(
            "return /left|BREACHED/.test(document.querySelector('{} .sla').textContent)",
            row(id)
        ),
    )
    .await;

    // Claim from the queue: the detail opens and says the item is ours.
    b.click(&format!("{} button.claim", row(id))).await;
    b.wait(
        "the detail page held by us",
        &format!(
            "return location.hash === '#/e/{id}' && /You hold/.test(document.getElementById('status-line')?.textContent)"
        ),
    )
    .await;
    assert_eq!(app.status(id).await.0, "claimed");
    // The evidence is highlighted in the transcript.
    let mark = b
        .js("return [...document.querySelectorAll('#transcript mark.evidence')].map(m => m.textContent)")
        .await;
    assert_eq!(mark, json!(["cannot get up"]));
    // The alarm is gone once nobody's emergency is waiting.
    b.wait(
        "the alarm to clear",
        "return document.getElementById('alarm').hidden",
    )
    .await;

    // The recording plays in the page.
    let played =
        b.c.execute_async(
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector('#transcript audio');
             if (!a) { done('no audio element'); return; }
             a.muted = true;
             a.play().then(() => done('playing'), (e) => done('play failed: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(played, json!("playing"));
    b.wait(
        "the recording to play",
        "const a = document.querySelector('#transcript audio'); return a.currentTime > 0.1 || a.ended",
    )
    .await;
    let duration = b
        .js("return document.querySelector('#transcript audio').duration")
        .await;
    assert!(
        (duration.as_f64().unwrap() - 1.0).abs() < 0.05,
        "{duration}"
    );
    let listened: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'utterance.listen' AND actor_id = $1",
    )
    .bind(app.operator("ann"))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(listened >= 1);

    // Resolve with an outcome and notes: back to the queue, and the item is gone.
    b.js("const s = document.getElementById('outcome'); s.value = 'called_back'; s.dispatchEvent(new Event('change')); return true")
        .await;
    b.type_into("#notes", "Spoke to Mei; son on the way.").await;
    b.click("#resolve").await;
    b.wait(
        "the queue without the resolved item",
        &format!(
            "return location.hash === '#/queue' && document.getElementById('queue-body') !== null && document.querySelector('{}') === null",
            row(id)
        ),
    )
    .await;
    assert_eq!(
        app.status(id).await,
        (
            "resolved".into(),
            Some("called_back".into()),
            Some("Spoke to Mei; son on the way.".into())
        )
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_operator_loses_the_claim_race_and_is_told() {
    let app = spawn_app().await;
    let (id, _) = app.flag(Case::default()).await;
    let (ann, amy) = tokio::join!(Browser::start(), Browser::start());
    tokio::join!(ann.login(&app.base, "ann"), amy.login(&app.base, "amy"));
    for b in [&ann, &amy] {
        b.c.goto(&format!("{}/#/e/{id}", app.base)).await.unwrap();
        b.wait(
            "the claim button",
            "return document.getElementById('claim') !== null",
        )
        .await;
        // Hold on to the button as the operator sees it, before any update arrives.
        b.js("window.claimButton = document.getElementById('claim'); return true")
            .await;
    }
    let click = "window.claimButton.click(); return true";
    tokio::join!(ann.js(click), amy.js(click));
    // The clicks only start the requests: wait for the database to record a holder.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let holder: i64 = loop {
        let h: Option<i64> = sqlx::query_scalar("SELECT claimed_by FROM escalations WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if let Some(h) = h {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody holds escalation {id} 15 s after both clicks"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (winner, loser, winner_name) = if holder == app.operator("ann") {
        (&ann, &amy, "Ann Lee")
    } else {
        (&amy, &ann, "Amy Wu")
    };
    winner
        .wait(
            "the winner to hold the item",
            "return /You hold/.test(document.getElementById('status-line')?.textContent)",
        )
        .await;
    loser
        .wait(
            "the loser to be told who has it",
            &format!(
                "return /Too late: {winner_name} has already claimed/.test(document.getElementById('toast-race')?.textContent)"
            ),
        )
        .await;
    loser
        .wait(
            "the loser's page to show the holder",
            &format!(
                "return /Held by {winner_name}/.test(document.getElementById('status-line')?.textContent)"
            ),
        )
        .await;
    ann.close().await;
    amy.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_keeps_the_typed_note() {
    let app = spawn_app().await;
    let (id, _) = app.flag(Case::default()).await;
    let b = Browser::start().await;
    b.login(&app.base, "ann").await;
    b.c.goto(&format!("{}/#/e/{id}", app.base)).await.unwrap();
    b.wait(
        "the claim button",
        "return document.getElementById('claim') !== null",
    )
    .await;
    b.click("#claim").await;
    b.wait(
        "the claim",
        "return /You hold/.test(document.getElementById('status-line')?.textContent)",
    )
    .await;

    // Over-long notes are refused before sending, with the reason in words.
    b.js("const n = document.getElementById('notes'); n.value = 'x'.repeat(4001); n.dispatchEvent(new Event('input')); return true")
        .await;
    b.wait(
        "the length warning",
        "return !document.getElementById('notes-error').hidden && /4001 characters; the limit is 4000/.test(document.getElementById('notes-error').textContent) && document.getElementById('resolve').disabled",
    )
    .await;

    let note = "Called the son; <b>he</b> will visit at 6 pm & call back.";
    b.type_into("#notes", note).await;
    b.js("const s = document.getElementById('outcome'); s.value = 'contacted_family'; s.dispatchEvent(new Event('change')); return true")
        .await;
    sqlx::query(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE operator_id = $1",
    )
    .bind(app.operator("ann"))
    .execute(&app.db.pool)
    .await
    .unwrap();

    // Sending now meets the expired session: the login form appears in place.
    b.click("#resolve").await;
    b.wait(
        "the login form over the page",
        "return !document.getElementById('login').hidden && !document.getElementById('login-why').hidden",
    )
    .await;
    let kept = b.js("return document.getElementById('notes').value").await;
    assert_eq!(kept, json!(note));
    assert_eq!(app.status(id).await.0, "claimed");

    // Log in again: the note is still there, and can be sent.
    b.type_into("#login-pass", PW).await;
    b.click("#login-submit").await;
    b.wait(
        "the console after logging in again",
        "return document.getElementById('login').hidden",
    )
    .await;
    b.wait(
        "the note restored",
        &format!(
            "return document.getElementById('notes')?.value === {} && document.getElementById('outcome').value === 'contacted_family'",
            json!(note)
        ),
    )
    .await;
    b.click("#resolve").await;
    b.wait(
        "the queue after resolving",
        "return location.hash === '#/queue'",
    )
    .await;
    assert_eq!(
        app.status(id).await,
        (
            "resolved".into(),
            Some("contacted_family".into()),
            Some(note.into())
        )
    );
    // The draft is gone once sent.
    assert_eq!(
        b.js(&format!("return localStorage.getItem('vc.draft.{id}')"))
            .await,
        Value::Null
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_with_markup_renders_as_text() {
    let app = spawn_app().await;
    let evil =
        "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> I cannot get up";
    let (id, _) = app
        .flag(Case {
            name: "<b>Mei</b><script>window.pwned = 3</script>",
            transcript: evil,
            evidence: "cannot get up",
            ..Case::default()
        })
        .await;
    let b = Browser::start().await;
    b.login(&app.base, "ann").await;
    b.wait(
        "the item in the queue",
        &format!("return document.querySelector('{}') !== null", row(id)),
    )
    .await;
    let name = b
        .js(&format!(
            "return document.querySelector('{} td.elder a').textContent",
            row(id)
        ))
        .await;
    assert_eq!(name, json!("<b>Mei</b><script>window.pwned = 3</script>"));
    b.c.goto(&format!("{}/#/e/{id}", app.base)).await.unwrap();
    b.wait(
        "the transcript",
        "return document.querySelector('#transcript .utt-text') !== null",
    )
    .await;
    let shown = b
        .js("return document.querySelector('#transcript .utt-text').textContent")
        .await;
    assert_eq!(shown, json!(evil));
    let injected = b
        .js("return document.querySelectorAll('#view script, #view img, #view b').length")
        .await;
    assert_eq!(injected, json!(0));
    assert_eq!(b.js("return window.pwned === undefined").await, json!(true));
    let mark = b
        .js("return [...document.querySelectorAll('#transcript mark.evidence')].map(m => m.textContent)")
        .await;
    assert_eq!(mark, json!(["cannot get up"]));
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_sees_rollups_and_the_audit_sample_and_screenshots_are_taken() {
    let app = spawn_app().await;
    let pool = &app.db.pool;
    // A morning's work: some waiting, one picked up in time and resolved.
    let (e1, _) = app
        .flag(Case {
            with_audio: true,
            minutes_ago: 2,
            ..Case::default()
        })
        .await;
    app.flag(Case {
        community: 1,
        name: "Zhang Hua",
        level: Level::Urgent,
        transcript: "my chest has been tight since this morning",
        evidence: "chest has been tight",
        minutes_ago: 25,
        ..Case::default()
    })
    .await;
    app.flag(Case {
        community: 2,
        name: "Zhao Min",
        level: Level::Urgent,
        transcript: "nobody has visited for two weeks, I feel so alone",
        evidence: "I feel so alone",
        minutes_ago: 40,
        ..Case::default()
    })
    .await;
    app.flag(Case {
        community: 1,
        name: "Wang Fang",
        level: Level::Watch,
        transcript: "I have not eaten much today, not hungry",
        evidence: "not eaten much",
        minutes_ago: 90,
        ..Case::default()
    })
    .await;
    let (done, _) = app
        .flag(Case {
            community: 1,
            name: "Li Qiang",
            minutes_ago: 3,
            ..Case::default()
        })
        .await;
    let ann = operators::authenticate(pool, "ann", PW)
        .await
        .unwrap()
        .unwrap()
        .scope();
    let lease = chrono::Duration::seconds(60);
    let claimed_at = Utc::now() - chrono::Duration::minutes(3) + chrono::Duration::seconds(20);
    queue::claim(pool, &ann, done, lease, claimed_at)
        .await
        .unwrap();
    queue::resolve(
        pool,
        &ann,
        done,
        Outcome::CalledBack,
        "Fine after a rest.",
        claimed_at + chrono::Duration::seconds(30),
    )
    .await
    .unwrap();

    // Operators cannot read reports; the server says so whatever the page shows.
    let http = reqwest::Client::new();
    let token = |user: &'static str| {
        let http = http.clone();
        let base = app.base.clone();
        async move {
            let v: Value = http
                .post(format!("{base}/api/v1/login"))
                .json(&json!({"username": user, "password": PW}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_string()
        }
    };
    let ann_token = token("ann").await;
    for path in ["/api/v1/reports/overview", "/api/v1/reports/audit-sample"] {
        let r = http
            .get(format!("{}{path}", app.base))
            .bearer_auth(&ann_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN, "{path}");
    }
    let sue_token = token("sue").await;
    let o: Value = http
        .get(format!(
            "{}/api/v1/reports/overview?by=street&tz=Asia/Shanghai",
            app.base
        ))
        .bearer_auth(&sue_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(o["totals"]["emergency"], 1, "{o}");
    assert_eq!(o["totals"]["urgent"], 2);
    assert_eq!(o["totals"]["watch"], 1);
    assert_eq!(o["totals"]["emergencies_in_sla"], 1);
    assert_eq!(o["totals"]["emergencies_today"], 2, "{o}");
    let elm = o["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit_name"] == "Elm Street")
        .unwrap();
    assert_eq!(
        (elm["emergency"].as_i64(), elm["urgent"].as_i64()),
        (Some(1), Some(1))
    );
    let ann_row = o["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["username"] == "ann")
        .unwrap();
    assert_eq!(ann_row["resolved_today"], 1);

    // The screens, as an operator and as the supervisor.
    let b = Browser::start().await;
    b.login(&app.base, "ann").await;
    b.wait(
        "three items in the queue",
        "return document.querySelectorAll('#queue-body tr').length === 3",
    )
    .await;
    b.screenshot("console-queue").await;
    b.click(&format!("{} button.claim", row(e1))).await;
    b.wait(
        "the detail",
        "return /You hold/.test(document.getElementById('status-line')?.textContent)",
    )
    .await;
    b.type_into("#notes", "Son is on his way; calling back in 10 minutes.")
        .await;
    b.screenshot("console-detail").await;
    b.click("#logout").await;
    b.wait(
        "the login form",
        "return !document.getElementById('login').hidden",
    )
    .await;
    b.submit_login("sue").await;
    b.c.goto(&format!("{}/#/supervisor", app.base))
        .await
        .unwrap();
    b.wait(
        "the supervisor roll-up",
        "return document.querySelectorAll('#sup-units tbody tr').length === 3",
    )
    .await;
    let names = b
        .js("return [...document.querySelectorAll('#sup-units tbody th')].map(t => t.textContent)")
        .await;
    assert_eq!(names, json!(["Elm Court", "Elm Gardens", "Oak Court"]));
    let sample = b
        .js("return document.getElementById('sup-sample').textContent")
        .await;
    assert!(
        sample.as_str().unwrap().contains(&format!("#{done}")),
        "{sample}"
    );
    let sla = b
        .js("return document.getElementById('sup-totals').textContent")
        .await;
    assert!(sla.as_str().unwrap().contains("50% (1 of 2)"), "{sla}");
    b.screenshot("console-supervisor").await;
    // The same screen in Mandarin.
    b.js("const l = document.getElementById('lang'); l.value = 'zh'; l.dispatchEvent(new Event('change')); return true")
        .await;
    b.wait(
        "the Mandarin supervisor view",
        "return document.querySelector('#view h1')?.textContent === '主管视图'",
    )
    .await;
    // The Mandarin is drawn in a CJK font, not as boxes (fonts-noto-cjk).
    b.assert_han_glyphs("#view h1").await;
    b.assert_han_glyphs("#view").await;
    b.screenshot("console-supervisor-zh").await;
    b.close().await;
}

#[tokio::test]
async fn the_console_is_served_with_csp_types_and_cache_validators() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    for (path, ty) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let r = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-cache");
        let etag = h["etag"].to_str().unwrap().to_string();
        let again = http
            .get(format!("{}{path}", app.base))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), reqwest::StatusCode::NOT_MODIFIED, "{path}");
    }
    let r = http
        .get(format!("{}/console/nope.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn recordings_are_scoped_audited_and_missing_ones_are_not_found() {
    let app = spawn_app().await;
    let (with, _) = app
        .flag(Case {
            with_audio: true,
            ..Case::default()
        })
        .await;
    app.flag(Case::default()).await;
    let utt = |esc: i64| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT u.id FROM utterances u JOIN escalations e ON e.call_id = u.call_id WHERE e.id = $1",
            )
            .bind(esc)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let recorded = utt(with).await;
    let silent = recorded + 1;
    let http = reqwest::Client::new();
    let login = |user: &'static str| {
        let http = http.clone();
        let base = app.base.clone();
        async move {
            let v: Value = http
                .post(format!("{base}/api/v1/login"))
                .json(&json!({"username": user, "password": PW}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_string()
        }
    };
    let ann = login("ann").await;
    let bob = login("bob").await;
    let get = |token: String, id: i64| {
        let http = http.clone();
        let base = app.base.clone();
        async move {
            http.get(format!("{base}/api/v1/utterances/{id}/audio"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let r = get(ann.clone(), recorded).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "audio/wav");
    assert_eq!(r.bytes().await.unwrap().to_vec(), wav_tone(1.0));
    // No recording, another street's elder, no such utterance: all 404.
    for (token, id) in [
        (ann.clone(), silent),
        (bob.clone(), recorded),
        (ann.clone(), 999_999),
    ] {
        assert_eq!(
            get(token, id).await.status(),
            reqwest::StatusCode::NOT_FOUND
        );
    }
    // A stored path that leaves the data directory is refused.
    sqlx::query("UPDATE utterances SET audio_path = '../../../etc/passwd' WHERE id = $1")
        .bind(silent)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        get(ann.clone(), silent).await.status(),
        reqwest::StatusCode::NOT_FOUND
    );
    let listens: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT entity_id, actor_id FROM audit_events WHERE action = 'utterance.listen' ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(listens[0], (recorded, Some(app.operator("ann"))));
    assert!(
        listens
            .iter()
            .all(|(_, who)| *who == Some(app.operator("ann")))
    );
}

// ───────────────────────── live talk ─────────────────────────

/// What Chromium plays as the operator's microphone: bursts of a tone (200 ms
/// on, 300 ms off), 48 kHz mono. Bursts rather than a steady tone, which the
/// browser's noise suppression would learn and remove.
fn write_bursts(path: &Path, hz: f32, secs: f32) {
    let rate = 48_000u32;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(rate as f32 * secs) as u32 {
        let t = i as f32 / rate as f32;
        let on = (t % 0.5) < 0.2;
        let s = if on {
            (t * hz * std::f32::consts::TAU).sin() * 12_000.0
        } else {
            0.0
        };
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// How many 20 ms frames (16 kHz) carry a tone at `hz`: audible, and with
/// most of the frame's energy at that frequency (Goertzel).
fn tone_frames(samples: &[i16], hz: f32) -> usize {
    const N: usize = 320;
    let k = (hz * N as f32 / 16_000.0).round();
    let coeff = 2.0 * (std::f64::consts::TAU * k as f64 / N as f64).cos();
    samples
        .chunks_exact(N)
        .filter(|f| {
            let energy: f64 = f.iter().map(|&x| (x as f64).powi(2)).sum();
            if (energy / N as f64).sqrt() < 200.0 {
                return false;
            }
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for &x in f.iter() {
                let s = x as f64 + coeff * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
            // A pure tone on the bin gives 1.0.
            2.0 * power / (N as f64 * energy) > 0.5
        })
        .count()
}

/// Poll a one-row, one-column query until it returns a row.
async fn poll_i64(
    pool: &sqlx::PgPool,
    what: &str,
    secs: u64,
    query: &'static str,
    bind: i64,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r: Option<i64> = sqlx::query_scalar(query)
            .bind(bind)
            .fetch_optional(pool)
            .await
            .unwrap();
        if let Some(v) = r {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An elder with a registered device, in Elm Court; returns (elder id, device token).
async fn enrol_device(app: &App, device: &str) -> (i64, String) {
    let pool = &app.db.pool;
    let elder: i64 = sqlx::query_scalar(
        "INSERT INTO elders (full_name, device_id, language, time_zone, community_id)
         VALUES ('Mei Lin', $1, 'en', 'Asia/Shanghai', $2) RETURNING id",
    )
    .bind(device)
    .bind(app.communities[0])
    .fetch_one(pool)
    .await
    .unwrap();
    let token = format!("secret-token-for-{device}");
    let hash = voicecare_server::runner::gateway::token_hash(&token);
    voicecare_store::dialer::set_device_token(pool, device, &hash, Utc::now())
        .await
        .unwrap();
    (elder, token)
}

/// A simulated elder device on the engine's signalling socket.
async fn sim_phone(app: &App, device: &str, token: &str, script: &str, dir: &Path) -> SimPhone {
    let ws = format!("{}/v1/devices/ws", app.base.replace("http://", "ws://"));
    let mut cfg = ClientConfig::new(ws, device, DeviceToken::new(token));
    cfg.leg = LegConfig::loopback();
    SimPhone::connect(cfg, SimScript::parse(script, dir).unwrap())
        .await
        .expect("the simulated elder registers")
}

/// Chromium whose microphone plays `mic` and whose permission prompts say yes.
async fn talking_browser(mic: &Path) -> Browser {
    Browser::start_with(&[
        "--use-fake-device-for-media-stream".into(),
        "--use-fake-ui-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", mic.display()),
        // The engine's media is bound to 127.0.0.1 in tests.
        "--allow-loopback-in-peer-connection".into(),
    ])
    .await
}

/// The elder presses 1 on the help line and is kept on the line; the operator
/// claims the emergency, clicks "talk" and is bridged in from the browser.
/// The elder hears the operator's microphone (1 kHz bursts), the page hears
/// the elder (a 600 Hz tone) and shows the call live; the operator hangs up,
/// and the conversation is recorded, audited and attached to the escalation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_joins_a_held_call_from_the_browser_and_the_elder_hears_them() {
    let app = spawn_engine_app().await;
    let pool = app.db.pool.clone();
    let tmp = TempDir::new("talk");
    let (elder, token) = enrol_device(&app, "tab-talk").await;
    let mut script = String::from(
        "call_in = true\nmax_call_ms = 150000\n\
         [[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 1200\ntimeout_ms = 60000\n\
         [[step]]\ndo = \"digits\"\nkeys = \"1\"\n",
    );
    // Then the elder's voice: a steady 600 Hz tone while holding and talking.
    script.push_str(
        "[[step]]\ndo = \"silence\"\nms = 300\n[[step]]\ndo = \"tone\"\nhz = 600\nms = 140000\n",
    );
    let mut sim = sim_phone(&app, "tab-talk", &token, &script, &tmp.0).await;
    let elder_call = tokio::spawn(async move { sim.run_call().await });
    let esc = poll_i64(
        &pool,
        "the help request to be queued with the elder on the line",
        90,
        "SELECT id FROM escalations WHERE elder_id = $1 AND elder_on_line",
        elder,
    )
    .await;

    let mic = tmp.0.join("operator-mic.wav");
    write_bursts(&mic, 1000.0, 2.0);
    let b = talking_browser(&mic).await;
    b.login(&app.base, "ann").await;
    b.c.goto(&format!("{}/#/e/{esc}", app.base)).await.unwrap();
    b.wait(
        "the claim button",
        "return document.getElementById('claim') !== null",
    )
    .await;
    b.click("#claim").await;
    b.wait(
        "the talk button, enabled once the item is ours",
        "const x = document.getElementById('talk-join'); return x !== null && !x.disabled",
    )
    .await;
    b.click("#talk-join").await;
    b.wait(
        "the call to be live",
        "return document.getElementById('talk')?.dataset.state === 'live' && /Live with the elder/.test(document.getElementById('talk-state')?.textContent)",
    )
    .await;
    b.wait(
        "the elder's voice in the browser",
        "return document.getElementById('talk')?.dataset.msHeard !== undefined",
    )
    .await;
    let timings = b
        .js("const d = document.getElementById('talk').dataset; return [Number(d.msLive), Number(d.msHeard)]")
        .await;
    eprintln!(
        "live talk: click to bridged {} ms, click to the elder heard in the browser {} ms",
        timings[0], timings[1]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.screenshot("console-talk").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.click("#talk-hangup").await;
    b.wait(
        "the call to end",
        "return document.getElementById('talk')?.dataset.state === 'ended' && /you hung up/.test(document.getElementById('talk-state')?.textContent)",
    )
    .await;
    let report = tokio::time::timeout(Duration::from_secs(30), elder_call)
        .await
        .expect("the elder's call ends with the operator's")
        .unwrap()
        .unwrap();
    let heard = tone_frames(&report.heard, 1000.0);
    assert!(
        heard >= 25,
        "the elder heard the operator's tone in only {heard} frames of {}",
        report.heard.len() / 320
    );

    // The conversation: ended by the operator, recorded in stereo.
    let (status, ended_by, path, ms): (String, Option<String>, Option<String>, Option<i32>) =
        sqlx::query_as(
            "SELECT status, ended_by, recording_path, recording_ms FROM operator_talks WHERE escalation_id = $1",
        )
        .bind(esc)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), ended_by.as_deref()),
        ("ended", Some("operator"))
    );
    let ms = ms.unwrap();
    assert!(ms >= 2000, "recorded {ms} ms");
    let path = path.expect("the conversation is recorded");
    assert!(path.contains("recordings"), "{path}");
    let mut wav = hound::WavReader::open(&path).unwrap();
    assert_eq!(wav.spec().channels, 2);
    let all: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = all.iter().step_by(2).copied().collect();
    let right: Vec<i16> = all.iter().skip(1).step_by(2).copied().collect();
    assert!(
        tone_frames(&right, 1000.0) >= 25,
        "the operator's channel lacks the operator"
    );
    assert!(
        tone_frames(&left, 600.0) >= 25,
        "the elder's channel lacks the elder"
    );

    // The call is closed once the session has wound up after the bridge.
    poll_i64(
        &pool,
        "the held call to be closed and the elder marked as gone",
        30,
        "SELECT e.id FROM escalations e JOIN calls c ON c.id = e.call_id
         WHERE e.id = $1 AND c.status = 'completed' AND e.elder_left_at IS NOT NULL",
        esc,
    )
    .await;
    // Audited, and the escalation records that the elder has left the line.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE entity = 'escalation' AND entity_id = $1 AND action LIKE 'talk.%' ORDER BY id",
    )
    .bind(esc)
    .fetch_all(&pool)
    .await
    .unwrap();
    // The page's player may already have fetched the recording: that is a listen.
    assert_eq!(actions[..2], ["talk.join", "talk.end"], "{actions:?}");
    assert!(
        actions[2..].iter().all(|a| a == "talk.listen"),
        "{actions:?}"
    );
    let (on_line, left): (bool, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT elder_on_line, elder_left_at FROM escalations WHERE id = $1")
            .bind(esc)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        on_line && left.is_some(),
        "held, then left: {on_line} {left:?}"
    );
    let (call_status, outcome): (String, Option<String>) = sqlx::query_as(
        "SELECT c.status, c.outcome FROM calls c JOIN escalations e ON e.call_id = c.id WHERE e.id = $1",
    )
    .bind(esc)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (call_status.as_str(), outcome.as_deref()),
        ("completed", Some("escalated"))
    );

    // The page lists the conversation with a player for its recording.
    b.wait(
        "the recorded conversation on the page",
        "return document.querySelector('#talks audio[data-talk]') !== null",
    )
    .await;
    b.close().await;
    drop(app);
}

/// A call row as the engine leaves it, flagged: `live_on` names the node that
/// holds the call with the elder on the line, `None` is a call that ended.
async fn flag_call(app: &App, elder: i64, live_on: Option<&str>) -> i64 {
    let pool = &app.db.pool;
    let call: i64 = match live_on {
        Some(node) => sqlx::query_scalar(
            "INSERT INTO calls (elder_id, direction, purpose, status, flow, due_at, started_at, node_id, lease_expires_at)
             VALUES ($1, 'inbound', 'help', 'in_progress', 'help_line', now(), now(), $2, now() + interval '1 hour') RETURNING id",
        )
        .bind(elder)
        .bind(node)
        .fetch_one(pool)
        .await
        .unwrap(),
        None => sqlx::query_scalar(
            "INSERT INTO calls (elder_id, direction, purpose, status, outcome, flow, due_at, started_at, ended_at)
             VALUES ($1, 'inbound', 'help', 'completed', 'hung_up', 'help_line', now(), now(), now()) RETURNING id",
        )
        .bind(elder)
        .fetch_one(pool)
        .await
        .unwrap(),
    };
    queue::flag(
        pool,
        &Flag {
            call_id: call,
            level: Level::Emergency,
            categories: vec!["help_request".into()],
            reasons: json!([{"category": "help_request", "evidence": "help", "rule": "test"}]),
            elder_on_line: live_on.is_some(),
        },
        &SlaPolicy::default(),
        Utc::now(),
    )
    .await
    .unwrap()
    .id
}

async fn open_and_claim(b: &Browser, app: &App, esc: i64) {
    b.c.goto(&format!("{}/#/e/{esc}", app.base)).await.unwrap();
    b.wait(
        "the claim button",
        "return document.getElementById('claim') !== null",
    )
    .await;
    b.click("#claim").await;
    b.wait(
        "the claim",
        "return /You hold/.test(document.getElementById('status-line')?.textContent)",
    )
    .await;
}

/// A call held on another engine node is refused in words naming that node;
/// an elder who has hung up is called back from the page: their device rings,
/// they hear the recording notice, then the operator; they hang up, and the
/// call back is recorded, audited and attached like a joined call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_calls_back_from_the_browser_and_other_nodes_calls_are_refused_in_words() {
    let app = spawn_engine_app().await;
    let pool = app.db.pool.clone();
    let tmp = TempDir::new("callback");
    let mic = tmp.0.join("operator-mic.wav");
    write_bursts(&mic, 1000.0, 2.0);
    let b = talking_browser(&mic).await;
    b.login(&app.base, "ann").await;

    // An elder who gives up waiting: the open page turns "talk" into "call
    // back" by itself (the engine records that the elder left the line).
    let (gone, token) = enrol_device(&app, "tab-gone").await;
    let script = "call_in = true\nmax_call_ms = 60000\n\
         [[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 1200\ntimeout_ms = 60000\n\
         [[step]]\ndo = \"digits\"\nkeys = \"1\"\n\
         [[step]]\ndo = \"silence\"\nms = 8000\n\
         [[step]]\ndo = \"hang_up\"\n";
    let mut sim = sim_phone(&app, "tab-gone", &token, script, &tmp.0).await;
    let gave_up = tokio::spawn(async move { sim.run_call().await });
    let esc = poll_i64(
        &pool,
        "the help request with the elder on the line",
        90,
        "SELECT id FROM escalations WHERE elder_id = $1 AND elder_on_line",
        gone,
    )
    .await;
    open_and_claim(&b, &app, esc).await;
    b.wait(
        "talk offered while the elder waits",
        "const j = document.getElementById('talk-join'); return j !== null && !j.disabled",
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), gave_up)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    b.wait(
        "call back offered once the elder has left, without a reload",
        "const j = document.getElementById('talk-join'), c = document.getElementById('talk-callback'); return j !== null && j.disabled && c !== null && !c.disabled && !/waiting on the line/.test(document.querySelector('.detail-head').textContent)",
    )
    .await;

    // Held by node-b: this node (node-a) cannot join it, and says which can.
    let (far, _) = enrol_device(&app, "tab-far").await;
    let esc = flag_call(&app, far, Some("node-b")).await;
    open_and_claim(&b, &app, esc).await;
    b.wait(
        "the talk button",
        "const x = document.getElementById('talk-join'); return x !== null && !x.disabled",
    )
    .await;
    b.click("#talk-join").await;
    b.wait(
        "the refusal naming the other node",
        "return document.getElementById('talk')?.dataset.state === 'failed' && /another engine node.*node-b/.test(document.getElementById('talk-error')?.textContent)",
    )
    .await;

    // The elder hung up: call back. Their phone answers, hears the notice
    // begin, speaks (600 Hz) through the rest of it and on into the
    // conversation, and hangs up.
    let (elder, token) = enrol_device(&app, "tab-back").await;
    let script = "answer_after_ms = 200\nmax_call_ms = 60000\n\
         [[step]]\ndo = \"wait_for_prompt\"\nquiet_ms = 250\ntimeout_ms = 30000\n\
         [[step]]\ndo = \"tone\"\nhz = 600\nms = 12000\n\
         [[step]]\ndo = \"hang_up\"\n";
    let mut sim = sim_phone(&app, "tab-back", &token, script, &tmp.0).await;
    let elder_call = tokio::spawn(async move { sim.run_call().await });
    let esc = flag_call(&app, elder, None).await;
    open_and_claim(&b, &app, esc).await;
    b.wait(
        "call back enabled and talk disabled",
        "const j = document.getElementById('talk-join'), c = document.getElementById('talk-callback'); return j !== null && j.disabled && c !== null && !c.disabled",
    )
    .await;
    b.click("#talk-callback").await;
    // Ringing, answering, then the whole recording notice (about 7 s of
    // speech played in real time) before the bridge.
    b.wait_up_to(
        "the call back to be live",
        "return document.getElementById('talk')?.dataset.state === 'live'",
        Duration::from_secs(30),
    )
    .await;
    b.wait(
        "the elder hanging up",
        "return document.getElementById('talk')?.dataset.state === 'ended' && /the elder hung up/.test(document.getElementById('talk-state')?.textContent)",
    )
    .await;
    let report = tokio::time::timeout(Duration::from_secs(30), elder_call)
        .await
        .expect("the elder's phone finished the call")
        .unwrap()
        .unwrap();
    assert!(report.answered);
    assert!(
        report.prompts_heard >= 1,
        "the elder heard the notice: {report:?}"
    );
    let heard = tone_frames(&report.heard, 1000.0);
    assert!(
        heard >= 25,
        "the elder heard the operator in only {heard} frames"
    );

    let (kind, status, ended_by, path, call): (String, String, Option<String>, Option<String>, i64) =
        sqlx::query_as(
            "SELECT kind, status, ended_by, recording_path, call_id FROM operator_talks WHERE escalation_id = $1",
        )
        .bind(esc)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (kind.as_str(), status.as_str(), ended_by.as_deref()),
        ("callback", "ended", Some("elder"))
    );
    let mut wav = hound::WavReader::open(path.expect("the call back is recorded")).unwrap();
    let all: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let left: Vec<i16> = all.iter().step_by(2).copied().collect();
    assert!(
        tone_frames(&left, 600.0) >= 25,
        "the elder's channel lacks the elder"
    );
    // The call back is a call of its own, closed by the node that placed it.
    poll_i64(
        &pool,
        "the call back to be closed",
        30,
        "SELECT id FROM calls WHERE id = $1 AND status <> 'in_progress'",
        call,
    )
    .await;
    let (purpose, call_status, outcome, node): (String, String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT purpose, status, outcome, node_id FROM calls WHERE id = $1")
            .bind(call)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (
            purpose.as_str(),
            call_status.as_str(),
            outcome.as_deref(),
            node
        ),
        ("callback", "completed", Some("ok"), None)
    );
    let attempts: Vec<String> =
        sqlx::query_scalar("SELECT status FROM call_attempts WHERE call_id = $1")
            .bind(call)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, ["ended"]);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE entity = 'escalation' AND entity_id = $1 AND action LIKE 'talk.%' ORDER BY id",
    )
    .bind(esc)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        actions[..3],
        ["talk.call_back", "talk.connected", "talk.end"],
        "{actions:?}"
    );
    b.wait(
        "the call back listed with its recording",
        "return document.querySelector('#talks audio[data-talk]') !== null && /Called back/.test(document.getElementById('talks').textContent)",
    )
    .await;

    // Nobody answers: the page says so, and the call back ends unreachable.
    let (away, token) = enrol_device(&app, "tab-away").await;
    let mut sim = sim_phone(&app, "tab-away", &token, "on_ring = \"ignore\"\n", &tmp.0).await;
    let rang = tokio::spawn(async move { sim.run_call().await });
    let esc = flag_call(&app, away, None).await;
    open_and_claim(&b, &app, esc).await;
    b.wait(
        "call back enabled",
        "const c = document.getElementById('talk-callback'); return c !== null && !c.disabled",
    )
    .await;
    b.click("#talk-callback").await;
    b.wait(
        "ringing",
        "return document.getElementById('talk')?.dataset.state === 'ringing'",
    )
    .await;
    b.wait(
        "no answer, in words",
        "return document.getElementById('talk')?.dataset.state === 'failed' && /did not answer/.test(document.getElementById('talk-error')?.textContent)",
    )
    .await;
    let report = tokio::time::timeout(Duration::from_secs(20), rang)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!report.answered);
    let (status, call_status): (String, String) = sqlx::query_as(
        "SELECT t.status, c.status FROM operator_talks t JOIN calls c ON c.id = t.call_id WHERE t.escalation_id = $1",
    )
    .bind(esc)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), call_status.as_str()),
        ("failed", "unreachable")
    );
    b.close().await;
}

/// A browser that refuses the microphone gets the reason in words, and
/// nothing is started on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_microphone_is_explained_in_words() {
    let app = spawn_app().await;
    let (elder, _) = enrol_device(&app, "tab-nomic").await;
    let esc = flag_call(&app, elder, Some("node-a")).await;
    let b = Browser::start_with(&[
        "--use-fake-device-for-media-stream".into(),
        "--deny-permission-prompts".into(),
    ])
    .await;
    b.login(&app.base, "ann").await;
    open_and_claim(&b, &app, esc).await;
    b.wait(
        "the talk button",
        "const x = document.getElementById('talk-join'); return x !== null && !x.disabled",
    )
    .await;
    // The keyboard way: `t` talks.
    b.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 't'})); return true")
        .await;
    b.wait(
        "the microphone refusal in words",
        "return document.getElementById('talk')?.dataset.state === 'failed' && /did not allow the microphone/.test(document.getElementById('talk-error')?.textContent)",
    )
    .await;
    let talks: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_talks")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(talks, 0);
    b.close().await;
}
