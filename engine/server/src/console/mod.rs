//! The operator console: a plain HTML + CSS + JavaScript-module page, embedded
//! in the binary and served at `/`. No build step and no front-end server:
//! the files under `console/assets/` are what the browser gets.
//!
//! Every response carries a strict Content-Security-Policy (scripts only from
//! this origin, no inline script or style, no framing) and an ETag so browsers
//! revalidate cheaply and never run a stale console after an upgrade.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy for every console response. `media-src 'self'` lets the page
/// play recordings from the API; `connect-src 'self'` covers fetch, the
/// event stream and the talk WebSocket (same origin, ws: or wss:).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     media-src 'self'; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/dom.js"),
    },
    Asset {
        name: "highlight.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/highlight.js"),
    },
    Asset {
        name: "talk.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/talk.js"),
    },
    Asset {
        name: "i18n.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/i18n.js"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/icon.svg"),
    },
];

/// ETags of the assets, computed once from their bytes.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut h);
                format!("\"{:016x}\"", h.finish())
            })
            .collect()
    })
}

/// Routes of the console (merged into the API router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve(i, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such console file",
        )
            .into_response(),
    }
}

fn serve(i: usize, req: &HeaderMap) -> Response {
    let a = &ASSETS[i];
    let tag = &etags()[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = a.body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a 304 costs little, a stale console after an upgrade costs a lot.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_no_inline_script_and_every_module_is_served() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        // Only external scripts: the CSP would block anything inline.
        for tag in html.split("<script").skip(1) {
            assert!(
                tag.contains("src=\"/console/"),
                "inline script in index.html: {tag}"
            );
        }
        assert!(!html.contains(" style=\""), "inline style in index.html");
        let handlers = html.match_indices(" on").filter(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "inline event handler in index.html");
        // Every module imported anywhere is one we serve.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let js = std::str::from_utf8(a.body).unwrap();
            assert!(!js.contains("innerHTML"), "{} uses innerHTML", a.name);
            assert!(!js.contains("insertAdjacentHTML"), "{} builds HTML", a.name);
            for imp in js.split("from './").skip(1) {
                let name = imp.split('\'').next().unwrap();
                assert!(
                    ASSETS.iter().any(|x| x.name == name),
                    "{} imports {name}, which is not served",
                    a.name
                );
            }
        }
    }
}
