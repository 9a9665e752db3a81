//! Authentication: argon2 passwords, server-side sessions (bearer token or
//! cookie + CSRF header), login rate limiting, role checks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
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
        let Some((operator, csrf, _expires)) = found else {
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
        })
    }
}

/// Failed-login counting per username and per client address.
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    max_failures: u32,
    window: Duration,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            max_failures,
            window,
        }
    }

    fn keys(username: &str, ip: Option<IpAddr>) -> Vec<String> {
        let mut k = vec![format!("u:{}", username.to_lowercase())];
        if let Some(ip) = ip {
            k.push(format!("ip:{ip}"));
        }
        k
    }

    /// Seconds to wait if locked out.
    pub fn check(&self, username: &str, ip: Option<IpAddr>) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(username, ip).iter().find_map(|k| {
            let (n, since) = map.get(k)?;
            let left = self.window.checked_sub(since.elapsed())?;
            (*n >= self.max_failures).then(|| left.as_secs().max(1))
        })
    }

    pub fn fail(&self, username: &str, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in Self::keys(username, ip) {
            let e = map.entry(k).or_insert((0, Instant::now()));
            if e.1.elapsed() > self.window {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
        // Bound memory under a credential-stuffing flood.
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() <= window);
        }
    }

    pub fn succeed(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("u:{}", username.to_lowercase()));
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

fn client_ip(headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Option<IpAddr> {
    let _ = headers; // Forwarded headers are only trusted behind a configured proxy; not yet.
    peer.map(|p| p.ip())
}

pub async fn login(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let ip = client_ip(&headers, Some(peer));
    if body.username.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::invalid("username or password is too long"));
    }
    if let Some(wait) = state.limiter.check(&body.username, ip) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many failed logins; try again in {wait} s"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(resp);
    }
    let Some(op) = operators::authenticate(&state.pool, &body.username, &body.password).await?
    else {
        state.limiter.fail(&body.username, ip);
        metrics::counter!("voicecare_login_failures_total").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong username or password",
        ));
    };
    state.limiter.succeed(&body.username);
    let session = operators::create_session(
        &state.pool,
        &op,
        Utc::now(),
        chrono::Duration::hours(state.session_hours),
    )
    .await?;
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        session.token,
        state.session_hours * 3600
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
    headers: HeaderMap,
    _auth: Authed,
) -> Result<Response, ApiError> {
    if let Some(t) = bearer(&headers).or_else(|| cookie(&headers, COOKIE)) {
        operators::revoke_session(&state.pool, t, Utc::now()).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("vc_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

pub async fn me(auth: Authed) -> Json<serde_json::Value> {
    Json(json!({"operator": auth.operator}))
}
