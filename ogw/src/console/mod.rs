//! The web console on the gateway's admin listener (`/console`): the cluster's health,
//! metanodes, datanodes and their capacity, extents, repair, rebalance and GC, tenants
//! and buckets with their objects and bytes, and plots of the last hour (capacity,
//! requests, throughput, latency). Read-only. Everything it draws comes from
//! `/console/api/*` as JSON; the page and its script are compiled in, with no other
//! origin (it works offline; the CSP says `'self'` only).
//!
//! **Access**: the admin token (the one `/metrics` asks for: `STRATA_METRICS_TOKEN`; a
//! standalone's `DATA/metrics-token`). The login form trades it for a session cookie
//! (random, `HttpOnly`, `SameSite=Strict`, 12 h, kept in memory: a restart logs
//! everyone out); scripts may send `Authorization: Bearer TOKEN` instead. Without a
//! token configured the console is off (503 saying why), never open.

pub mod history;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use client::MetaClient;
use parking_lot::Mutex;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};

use crate::catalog::{BucketUsage, Catalog};
use history::History;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const SESSIONS_MAX: usize = 1024;
/// How long per-bucket usage (a scan of the catalog's rows) is reused.
const USAGE_TTL: Duration = Duration::from_secs(30);
const COOKIE: &str = "strata_console";

const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

pub struct Console {
    token: Option<String>,
    sessions: Mutex<HashMap<String, Instant>>,
    history: Arc<History>,
    catalog: Catalog,
    meta: Vec<String>,
    usage: tokio::sync::Mutex<Option<(Instant, Vec<BucketUsage>)>>,
}

impl Console {
    /// The console of a gateway whose metrics are `metrics`, asking for `token`;
    /// starts sampling the plots' figures (until the console is dropped).
    pub fn start(
        token: Option<String>,
        metrics: Arc<telemetry::Metrics>,
        catalog: Catalog,
        meta: Vec<String>,
    ) -> Arc<Console> {
        let history = Arc::new(History::default());
        tokio::spawn(history::sample(Arc::downgrade(&history), metrics, MetaClient::new(meta.clone())));
        Arc::new(Console {
            token,
            sessions: Mutex::default(),
            history,
            catalog,
            meta,
            usage: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether the request carries the token or a live session.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        if telemetry::bearer_matches(headers, token) {
            return true;
        }
        let Some(id) = session_cookie(headers) else { return false };
        let mut sessions = self.sessions.lock();
        match sessions.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                sessions.remove(id);
                false
            }
            None => false,
        }
    }

    fn new_session(&self) -> String {
        let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 40);
        let mut sessions = self.sessions.lock();
        let now = Instant::now();
        sessions.retain(|_, until| *until > now);
        while sessions.len() >= SESSIONS_MAX {
            let oldest = sessions.iter().min_by_key(|(_, until)| **until).map(|(k, _)| k.clone());
            sessions.remove(&oldest.expect("not empty"));
        }
        sessions.insert(id.clone(), now + SESSION_TTL);
        id
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

pub fn routes(c: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/", get(page))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/console/api/overview", get(overview))
        .route("/console/api/series", get(series))
        .with_state(c)
        .layer(axum::middleware::map_response(guard_headers))
}

/// Every console answer: not cached, not framed, no other origin.
async fn guard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn off() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the console is off: it needs an admin token (set STRATA_METRICS_TOKEN; a standalone makes one)\n",
    )
        .into_response()
}

fn see(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

async fn page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.token.is_none() {
        return off();
    }
    if !c.allows(&headers) {
        return see("/console/login");
    }
    html(PAGE.to_string())
}

async fn login_page(State(c): State<Arc<Console>>) -> Response {
    if c.token.is_none() {
        return off();
    }
    html(LOGIN.replace("{error}", ""))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(c): State<Arc<Console>>, Form(f): Form<Login>) -> Response {
    let Some(token) = &c.token else { return off() };
    if !telemetry::same_secret(f.token.trim(), token) {
        tracing::warn!("console: a login with a wrong token");
        let page = LOGIN.replace("{error}", r#"<p class="error" id="error">That is not the admin token.</p>"#);
        return (StatusCode::UNAUTHORIZED, html(page)).into_response();
    }
    let id = c.new_session();
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs());
    let mut r = see("/console");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    r
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        c.sessions.lock().remove(id);
    }
    let mut r = see("/console/login");
    let gone = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&gone).expect("ASCII"));
    r
}

fn refused(c: &Console) -> Response {
    if c.token.is_none() {
        return off();
    }
    (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": "log in first" }))).into_response()
}

#[derive(Serialize)]
struct Overview {
    /// The cluster's status as `strata status` reports it (none, and `error` says
    /// why, when no metanode answered).
    report: Option<client::status::Report>,
    error: Option<String>,
    /// The last GC pass, as `gc status` prints it.
    gc: Option<gc::Status>,
    buckets: Vec<BucketUsage>,
    /// This gateway's figures over the last sample period.
    s3: Option<history::Point>,
    sample_period_seconds: f64,
}

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !c.allows(&headers) {
        return refused(&c);
    }
    let target = client::status::Target { meta: c.meta.clone(), admin: Vec::new(), metrics_token: None };
    let (report, mut error) = match client::status::report(&target).await {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let gc = c.catalog.gc_status().await.ok().flatten();
    let buckets = {
        let mut cached = c.usage.lock().await;
        match &*cached {
            Some((at, u)) if at.elapsed() < USAGE_TTL => u.clone(),
            _ => match c.catalog.bucket_usage().await {
                Ok(u) => {
                    *cached = Some((Instant::now(), u.clone()));
                    u
                }
                Err(e) => {
                    error.get_or_insert(format!("catalog: {e}"));
                    Vec::new()
                }
            },
        }
    };
    Json(Overview {
        report,
        error,
        gc,
        buckets,
        s3: c.history.last(),
        sample_period_seconds: history::SAMPLE_PERIOD.as_secs_f64(),
    })
    .into_response()
}

async fn series(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !c.allows(&headers) {
        return refused(&c);
    }
    Json(serde_json::json!({
        "sample_period_seconds": history::SAMPLE_PERIOD.as_secs_f64(),
        "points": c.history.points(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; strata_console=abc; b=2"));
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("strata_consolex=abc"));
        assert_eq!(session_cookie(&h), None, "another cookie's name");
    }
}
