//! Authentication: argon2 passwords, server-side sessions (bearer token or
//! cookie + CSRF header), login rate limiting, role checks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, SemaphorePermit, broadcast};
use voicecare_store::operators::{self, Operator, Role, Scope};

use super::AppState;
use super::error::{ApiError, JsonBody};

pub const COOKIE: &str = "vc_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated operator, extracted from the request.
#[derive(Debug, Clone)]
pub struct Authed {
    pub operator: Operator,
    pub scope: Scope,
    /// The session's CSRF token when it came by cookie: requests that cannot
    /// carry the header (a WebSocket upgrade) check it themselves.
    pub cookie_csrf: Option<String>,
    pub session: Session,
}

/// The session a request came with. Its token never appears in `Debug`.
#[derive(Clone)]
pub struct Session {
    token: Arc<str>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// How often a long-lived stream re-reads its session: a logout on another
/// node, a revocation or a deactivated operator ends it within this.
const SESSION_RECHECK: Duration = Duration::from_secs(5);

impl Session {
    /// Resolves when the session is over: logged out (at once on this node),
    /// expired, revoked or its operator deactivated. Event streams and talk
    /// sockets outlive the request that checked the session, so they wait
    /// on this.
    pub fn ended(&self, state: &AppState) -> impl Future<Output = ()> + Send + use<> {
        let pool = state.pool.clone();
        let mut logouts = state.logouts.subscribe();
        let token = self.token.clone();
        let left = (self.expires_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        async move {
            let expiry = tokio::time::sleep(left);
            tokio::pin!(expiry);
            let mut recheck = tokio::time::interval(SESSION_RECHECK);
            recheck.tick().await;
            let mut listening = true;
            loop {
                let check = tokio::select! {
                    _ = &mut expiry => return,
                    _ = recheck.tick() => true,
                    gone = logouts.recv(), if listening => match gone {
                        Ok(t) if t == token => return,
                        Ok(_) => false,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => {
                            listening = false;
                            false
                        }
                    },
                };
                // While the database is away the session stands: nothing
                // else can be checked either.
                if check
                    && let Ok(None) = operators::session_operator(&pool, &token, Utc::now()).await
                {
                    return;
                }
            }
        }
    }
}

impl Authed {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.scope.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(&format!(
                "this action needs the {} role",
                role.as_str()
            )))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, via_cookie) = match bearer(&parts.headers) {
            Some(t) => (t.to_string(), false),
            None => match cookie(&parts.headers, COOKIE) {
                Some(t) => (t.to_string(), true),
                None => return Err(ApiError::unauthenticated("log in first: no session token")),
            },
        };
        let found = operators::session_operator(&state.pool, &token, Utc::now()).await?;
        let Some((operator, csrf, expires_at)) = found else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_expired",
                "your session has expired or was ended; log in again",
            ));
        };
        // Cookies ride along on cross-site requests; a bearer token cannot.
        // So cookie-authenticated changes must echo the session's CSRF token.
        if via_cookie && !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if sent != Some(csrf.as_str()) {
                return Err(ApiError::forbidden("missing or wrong X-CSRF-Token header"));
            }
        }
        let scope = operator.scope();
        Ok(Authed {
            operator,
            scope,
            cookie_csrf: via_cookie.then_some(csrf),
            session: Session {
                token: token.into(),
                expires_at,
            },
        })
    }
}

/// Login attempts per (username, client address). Keys are per pair so that
/// guessing at one operator's password from one address never locks that
/// operator out elsewhere, nor other operators behind the same address.
/// Attempts are counted as they start, before the password is checked, so a
/// burst of concurrent guesses cannot slip past the count.
pub struct LoginLimiter {
    keys: Mutex<HashMap<(String, IpAddr), Attempts>>,
    policy: LoginPolicy,
}

/// How attempts from one key are slowed down.
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Attempts before any wait.
    pub free: u32,
    /// The wait after the last free attempt; it doubles with each further
    /// attempt, up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// A key with no attempt for this long starts afresh.
    pub forget_after: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            free: 5,
            first_wait: Duration::from_secs(5),
            max_wait: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(3600),
        }
    }
}

struct Attempts {
    count: u32,
    last: Instant,
    wait_until: Option<Instant>,
}

/// Keys kept before idle ones are dropped.
const LIMITER_PRUNE_AT: usize = 10_000;

impl LoginLimiter {
    pub fn new(policy: LoginPolicy) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            policy,
        }
    }

    fn key(username: &str, ip: IpAddr) -> (String, IpAddr) {
        (username.to_lowercase(), ip)
    }

    /// Count an attempt about to check a password, or say how long this key
    /// must wait first (such an early refusal does not count).
    pub fn begin(&self, username: &str, ip: IpAddr) -> Result<(), Duration> {
        self.begin_at(username, ip, Instant::now())
    }

    fn begin_at(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let p = self.policy;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= LIMITER_PRUNE_AT {
            keys.retain(|_, a| !a.forgotten(now, p.forget_after));
        }
        let a = keys.entry(Self::key(username, ip)).or_insert(Attempts {
            count: 0,
            last: now,
            wait_until: None,
        });
        if a.forgotten(now, p.forget_after) {
            a.count = 0;
            a.wait_until = None;
        }
        if let Some(until) = a.wait_until
            && until > now
        {
            return Err(until - now);
        }
        a.count += 1;
        a.last = now;
        if a.count >= p.free {
            let doublings = (a.count - p.free).min(20);
            let wait = p.first_wait.saturating_mul(1 << doublings).min(p.max_wait);
            a.wait_until = Some(now + wait);
        }
        Ok(())
    }

    /// The password was right: the key starts afresh.
    pub fn succeed(&self, username: &str, ip: IpAddr) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.remove(&Self::key(username, ip));
    }
}

impl Attempts {
    fn forgotten(&self, now: Instant, after: Duration) -> bool {
        self.wait_until.is_none_or(|u| u <= now) && now.duration_since(self.last) >= after
    }
}

/// Bounds the password checks in progress. Each holds argon2's working
/// memory (19 MiB) and a core for tens of milliseconds, so a flood of logins
/// would otherwise take all memory and make every login wait. A few may
/// wait for a turn; past that, logins are turned away at once.
pub struct PasswordChecks {
    admitted: Semaphore,
    running: Semaphore,
}

/// Logins that may wait for a turn, per check that may run.
const WAITING_PER_RUNNING: usize = 4;

impl PasswordChecks {
    pub fn new(running: usize) -> Self {
        let running = running.max(1);
        Self {
            admitted: Semaphore::new(running * (1 + WAITING_PER_RUNNING)),
            running: Semaphore::new(running),
        }
    }

    /// One check at a time per core, at least two.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
    }

    /// A turn to check a password, or `None` when too many are waiting.
    async fn turn(&self) -> Option<(SemaphorePermit<'_>, SemaphorePermit<'_>)> {
        let admitted = self.admitted.try_acquire().ok()?;
        let running = self.running.acquire().await.ok()?;
        Some((admitted, running))
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

pub async fn login(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    https: Option<axum::Extension<crate::tls::Https>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let ip = state.trusted_proxies.client_ip(peer.ip(), &headers);
    if body.username.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::invalid("username or password is too long"));
    }
    let Some(_turn) = state.password_checks.turn().await else {
        metrics::counter!("voicecare_login_refused_total", "reason" => "busy").increment(1);
        let mut resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many logins at once; try again in a moment",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        return Ok(resp);
    };
    if let Err(wait) = state.limiter.begin(&body.username, ip) {
        metrics::counter!("voicecare_login_refused_total", "reason" => "rate_limited").increment(1);
        let wait = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed logins for this user from your address; try again in {wait} s"
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(resp);
    }
    let Some(op) = operators::authenticate(&state.pool, &body.username, &body.password).await?
    else {
        metrics::counter!("voicecare_login_failures_total").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong username or password",
        ));
    };
    state.limiter.succeed(&body.username, ip);
    let session = operators::create_session(
        &state.pool,
        &op,
        Utc::now(),
        chrono::Duration::hours(state.session_hours),
    )
    .await?;
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.token,
        state.session_hours * 3600,
        secure(https)
    );
    let mut resp = Json(json!({
        "token": session.token,
        "csrf_token": session.csrf_token,
        "expires_at": session.expires_at,
        "operator": op,
    }))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub async fn logout(
    State(state): State<AppState>,
    https: Option<axum::Extension<crate::tls::Https>>,
    headers: HeaderMap,
    _auth: Authed,
) -> Result<Response, ApiError> {
    if let Some(t) = bearer(&headers).or_else(|| cookie(&headers, COOKIE)) {
        operators::revoke_session(&state.pool, t, Utc::now()).await?;
        // Open event streams and talk sockets of this session end now.
        let _ = state.logouts.send(t.into());
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let cleared = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(https)
    );
    if let Ok(v) = HeaderValue::from_str(&cleared) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `; Secure` for a request that came over HTTPS: the browser then never
/// sends the session cookie over plain HTTP.
fn secure(https: Option<axum::Extension<crate::tls::Https>>) -> &'static str {
    if https.is_some_and(|h| h.0.0) {
        "; Secure"
    } else {
        ""
    }
}

pub async fn me(auth: Authed) -> Json<serde_json::Value> {
    Json(json!({"operator": auth.operator}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LoginPolicy::default())
    }

    #[test]
    fn waits_grow_after_the_free_attempts_and_reset_on_success() {
        let l = limiter();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            l.begin_at("ann", ip, t0).unwrap();
        }
        assert_eq!(l.begin_at("Ann", ip, t0), Err(Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        l.begin_at("ann", ip, t1).unwrap();
        assert_eq!(l.begin_at("ann", ip, t1), Err(Duration::from_secs(10)));
        let t2 = t1 + Duration::from_secs(10);
        l.begin_at("ann", ip, t2).unwrap();
        assert_eq!(l.begin_at("ann", ip, t2), Err(Duration::from_secs(20)));
        // Other addresses and other users are untouched.
        l.begin_at("ann", "192.0.2.2".parse().unwrap(), t2).unwrap();
        l.begin_at("amy", ip, t2).unwrap();
        l.succeed("ann", ip);
        l.begin_at("ann", ip, t2).unwrap();
    }

    #[test]
    fn the_wait_is_capped_and_idle_keys_are_forgotten() {
        let l = limiter();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut t = Instant::now();
        for _ in 0..40 {
            if let Err(w) = l.begin_at("ann", ip, t) {
                assert!(w <= Duration::from_secs(15 * 60));
                t += w;
            }
        }
        let _ = l.begin_at("ann", ip, t);
        assert_eq!(l.begin_at("ann", ip, t), Err(Duration::from_secs(15 * 60)));
        t += Duration::from_secs(2 * 3600);
        for _ in 0..5 {
            l.begin_at("ann", ip, t).unwrap();
        }
    }
}
